//! The session token: what the client must find on a server before it reads there after a
//! switch, so that it reads its own writes across failover and failback.
//!
//! After each write the client learns, in the same pipeline (`DUPLEX.TOKEN` sent right
//! behind the write, both replies read together: no extra round trip), the writing
//! server's node id and the replication position of its last local batch. [`Tokens`] keeps
//! the highest position per origin. On a new connection after a switch the client sends
//! `DUPLEX.WAIT origin position timeout_ms` for each origin before anything else.

use duplex_proto::Reply;

/// At most this many origins are remembered (a cluster has a handful of nodes; a bound
/// keeps a misbehaving server from growing the client).
pub(crate) const MAX_ORIGINS: usize = 64;

/// The highest position the client wrote at, per origin node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tokens {
    /// (origin, position), sorted by origin.
    marks: Vec<(u64, u64)>,
    /// A switch happened: the marks must be waited for on the new connection.
    pub(crate) unsettled: bool,
}

impl Tokens {
    /// Records the reply to `DUPLEX.TOKEN` (`[node_id, position]`); anything else (an older
    /// server that does not know the command) is ignored.
    pub(crate) fn record(&mut self, reply: &Reply) {
        let Some((origin, pos)) = parse(reply) else {
            return;
        };
        if pos == 0 {
            return;
        }
        match self.marks.binary_search_by_key(&origin, |m| m.0) {
            Ok(i) => self.marks[i].1 = self.marks[i].1.max(pos),
            Err(i) if self.marks.len() < MAX_ORIGINS => self.marks.insert(i, (origin, pos)),
            Err(_) => {}
        }
    }

    /// Every (origin, position) to wait for.
    pub(crate) fn marks(&self) -> &[(u64, u64)] {
        &self.marks
    }
}

/// `[node_id, position]` as two non-negative integers.
fn parse(reply: &Reply) -> Option<(u64, u64)> {
    match reply {
        Reply::Array(items) => match items.as_slice() {
            [Reply::Integer(o), Reply::Integer(p)] => {
                Some((u64::try_from(*o).ok()?, u64::try_from(*p).ok()?))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether a command (upper-case name) gets a `DUPLEX.TOKEN` behind it: the data writes,
/// outside MULTI (inside, the token request would be refused and abort the transaction;
/// EXEC, which closes it, carries one).
pub(crate) fn wants_token(name: &str) -> bool {
    matches!(name, "SET" | "MSET" | "DEL" | "EXEC")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(o: i64, p: i64) -> Reply {
        Reply::Array(vec![Reply::Integer(o), Reply::Integer(p)])
    }

    #[test]
    fn keeps_the_highest_position_per_origin() {
        let mut t = Tokens::default();
        t.record(&tok(2, 50));
        t.record(&tok(1, 10));
        t.record(&tok(2, 40));
        t.record(&tok(1, 0));
        t.record(&Reply::Error("ERR unknown command".into()));
        t.record(&tok(-1, 5));
        assert_eq!(t.marks(), &[(1, 10), (2, 50)]);
        t.record(&tok(1, 11));
        assert_eq!(t.marks(), &[(1, 11), (2, 50)]);
    }

    #[test]
    fn the_origins_are_bounded() {
        let mut t = Tokens::default();
        for o in 0..1000 {
            t.record(&tok(o, 1));
        }
        assert_eq!(t.marks().len(), MAX_ORIGINS);
    }

    #[test]
    fn only_data_writes_carry_a_token() {
        assert!(wants_token("SET") && wants_token("EXEC") && wants_token("DEL"));
        assert!(!wants_token("GET") && !wants_token("MULTI") && !wants_token("DUPLEX.FENCE"));
    }
}
