//! Session tokens: a client reads its own writes across a switch of server.
//!
//! - `DUPLEX.TOKEN` answers `[node_id, position]`: this server's node id and the replication
//!   position (`incarnation << 48 | lsn`) of its last local batch
//!   ([`duplex_engine::Database::last_local_position`]). A client sends it in the same
//!   pipeline as a write (no extra round trip), so it runs after the write was acknowledged
//!   and names a position at or above it.
//! - `DUPLEX.WAIT origin position timeout_ms` answers `+OK` once this server holds
//!   everything `origin` wrote up to `position` (it is `origin` and the position is its own
//!   durable one or below, or `origin_hwm(origin)` covers it), `-TIMEOUT ...` when that did
//!   not happen within the timeout, or `-TOKENLOST ...` at once when this server is the
//!   origin and never made that position durable, or `-NOREPL ...` at once when this
//!   server has no `--peer` and never received a batch of `origin` (the writes cannot
//!   arrive: the client treats it as nothing to wait for). It waits on a worker thread
//!   (slow work, [`super::is_slow`]), never on an event loop.

use std::time::{Duration, Instant};

use duplex_proto::{array_len, codes, error, integer, parse_i64, simple};

use super::ErrLine;
use crate::shared::Shared;

/// The longest wait a `DUPLEX.WAIT` may ask for: a worker thread is held meanwhile.
pub const WAIT_MAX_MS: u64 = 60_000;

/// How often a waiting `DUPLEX.WAIT` looks again when no commit wakes it.
const RECHECK: Duration = Duration::from_millis(20);

/// Whether this server holds a token's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything up to the position is here.
    Covered,
    /// Not yet: the origin's batches have not all arrived.
    Pending,
    /// This server is the origin and its durable position is below the token's, in the
    /// same incarnation: the writes are gone from here (a lost tail) and will not arrive.
    Lost,
}

/// What this server knows when it judges a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// This server's node id.
    pub node_id: u64,
    /// Its durable local position ([`duplex_engine::Database::durable_position`]).
    pub durable: u64,
    /// Its high-water mark of the token's origin (0 when it is the origin).
    pub hwm: u64,
    /// When this server was rebuilt (since its start): how far the rebuild recovered its
    /// own updates of its earlier incarnation ([`crate::rebuild::RebuildGap`]).
    pub recovered_own: Option<u64>,
}

/// Judges the token `(origin, position)` against `local` (see [`Verdict`]).
pub fn judge(local: Local, origin: u64, position: u64) -> Verdict {
    if origin == local.node_id {
        let (inc, _) = duplex_engine::split_position(position);
        let (own_inc, _) = duplex_engine::split_position(local.durable);
        let covered = if inc < own_inc {
            local.recovered_own.is_none_or(|m| position <= m)
        } else {
            position <= local.durable
        };
        return if covered {
            Verdict::Covered
        } else {
            Verdict::Lost
        };
    }
    if position <= local.hwm {
        Verdict::Covered
    } else {
        Verdict::Pending
    }
}

fn local(sh: &Shared, origin: u64) -> Local {
    let db = sh.db();
    Local {
        node_id: db.node_id(),
        durable: db.durable_position(),
        hwm: if origin == db.node_id() {
            0
        } else {
            db.origin_hwm(origin)
        },
        recovered_own: sh.rebuild_gap().map(|g| g.recovered_mark),
    }
}

/// `DUPLEX.TOKEN`: `[node_id, position of the last local batch]`.
pub fn token(sh: &Shared, out: &mut Vec<u8>) {
    let db = sh.db();
    array_len(out, 2);
    integer(out, i64::try_from(db.node_id()).unwrap_or(i64::MAX));
    integer(
        out,
        i64::try_from(db.last_local_position()).unwrap_or(i64::MAX),
    );
}

/// The arguments of `DUPLEX.WAIT origin position timeout_ms`.
fn parse_wait(args: &[&[u8]]) -> Result<(u64, u64, u64), ErrLine> {
    let num = |i: usize, what: &str| {
        args.get(i)
            .and_then(|a| parse_i64(a))
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| ErrLine::err(format!("{what} must be a non-negative integer")))
    };
    Ok((
        num(1, "origin")?,
        num(2, "position")?,
        num(3, "timeout_ms")?.min(WAIT_MAX_MS),
    ))
}

/// `DUPLEX.WAIT origin position timeout_ms`: waits (on the calling thread: a worker) until
/// the token is covered or the timeout passes. `timeout_ms` 0 checks once.
pub fn wait(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    let (origin, position, timeout_ms) = match parse_wait(args) {
        Ok(a) => a,
        Err(e) => return e.send(out),
    };
    let db = sh.db();
    if origin != db.node_id() && sh.cfg().peers.is_empty() && db.origin_hwm(origin) == 0 {
        return error(
            out,
            &codes::line(
                codes::NOREPL,
                &format!(
                    "this server has no --peer and never received node {origin}'s writes: \
                     they cannot arrive here"
                ),
            ),
        );
    }
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let l = local(sh, origin);
        match judge(l, origin, position) {
            Verdict::Covered => return simple(out, "OK"),
            Verdict::Lost => {
                let (inc, lsn) = duplex_engine::split_position(position);
                let (own_inc, have) = duplex_engine::split_position(
                    l.recovered_own
                        .filter(|_| inc < duplex_engine::split_position(l.durable).0)
                        .unwrap_or(l.durable),
                );
                return error(
                    out,
                    &codes::line(
                        codes::TOKENLOST,
                        &format!(
                            "this server (node {origin}) acknowledged LSN {lsn} of incarnation \
                             {inc} but holds its own writes only up to LSN {have} of \
                             incarnation {own_inc} (a lost tail, or what its rebuild did not \
                             recover): those writes are lost here and will not arrive; read \
                             the affected keys back"
                        ),
                    ),
                );
            }
            Verdict::Pending => {}
        }
        let now = Instant::now();
        if now >= deadline {
            let (inc, lsn) = duplex_engine::split_position(position);
            let (hinc, hlsn) = duplex_engine::split_position(l.hwm);
            return error(
                out,
                &codes::line(
                    codes::TIMEOUT,
                    &format!(
                        "node {origin}'s writes up to incarnation {inc} LSN {lsn} have not \
                         reached this server within {timeout_ms} ms (it holds node {origin} up \
                         to incarnation {hinc} LSN {hlsn}): the client's own writes are not \
                         yet visible here; check the peer link (DUPLEX.PEERS) or wait longer"
                    ),
                ),
            );
        }
        sh.db().wait_for_commit((deadline - now).min(RECHECK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_engine::position;

    #[test]
    fn tokens_are_judged_by_origin_and_mark() {
        let b = Local {
            node_id: 2,
            durable: position(1, 100),
            hwm: position(1, 40),
            recovered_own: None,
        };
        // Another origin: the mark decides.
        assert_eq!(judge(b, 1, position(1, 40)), Verdict::Covered);
        assert_eq!(judge(b, 1, position(1, 39)), Verdict::Covered);
        assert_eq!(judge(b, 1, position(1, 41)), Verdict::Pending);
        assert_eq!(judge(b, 1, 0), Verdict::Covered, "no write yet");
        // A later incarnation of the origin sorts above every mark of an earlier one.
        assert_eq!(judge(b, 1, position(2, 1)), Verdict::Pending);
        // Its own writes: held up to its durable position.
        assert_eq!(judge(b, 2, position(1, 100)), Verdict::Covered);
        assert_eq!(judge(b, 2, position(1, 101)), Verdict::Lost);
        // An earlier incarnation of itself, after a restore (or a restart since the
        // rebuild): nothing tells what was recovered; taken as held.
        let restored = Local {
            durable: position(2, 5),
            ..b
        };
        assert_eq!(judge(restored, 2, position(1, 900)), Verdict::Covered);
        // Rebuilt since its start: held up to what the rebuild recovered.
        let rebuilt = Local {
            recovered_own: Some(position(1, 500)),
            ..restored
        };
        assert_eq!(judge(rebuilt, 2, position(1, 500)), Verdict::Covered);
        assert_eq!(judge(rebuilt, 2, position(1, 501)), Verdict::Lost);
        assert_eq!(judge(rebuilt, 2, position(2, 5)), Verdict::Covered);
        assert_eq!(judge(rebuilt, 2, position(2, 6)), Verdict::Lost);
    }

    #[test]
    fn wait_arguments() {
        assert_eq!(
            parse_wait(&[b"DUPLEX.WAIT", b"1", b"2", b"3"]),
            Ok((1, 2, 3))
        );
        assert_eq!(
            parse_wait(&[b"DUPLEX.WAIT", b"1", b"2", b"999999999"]),
            Ok((1, 2, WAIT_MAX_MS))
        );
        assert!(parse_wait(&[b"DUPLEX.WAIT", b"-1", b"2", b"3"]).is_err());
        assert!(parse_wait(&[b"DUPLEX.WAIT", b"x", b"2", b"3"]).is_err());
    }
}
