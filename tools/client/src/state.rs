//! What the client knows about a server: its operation state as `DUPLEX.STATE` reports it
//! ([`StateInfo`]), why a server cannot be used right now ([`Unavailable`]), and the view of
//! every configured server that [`crate::Client::server_states`] returns ([`ServerStatus`]).

use std::fmt;

use duplex_proto::Reply;

/// A server's operation state (the `state` field of `DUPLEX.STATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerState {
    /// Opening its database (WAL replay); writes refused with `-LOADING`.
    Starting,
    /// Serving reads and writes.
    Running,
    /// Serving reads and writes while an online backup runs.
    BackingUp,
    /// Catching up from a backup or a peer; writes refused with `-LOADING`.
    Recovering,
    /// Writes refused (`-FENCED`) by an operator or the cluster; its epoch was raised.
    Fenced,
    /// Shutting down.
    Stopping,
    /// Cleanly stopped.
    Stopped,
    /// A write or fsync failed; writes refused (`-FAILED`) until it is restarted.
    Failed,
    /// A state this client does not know (a newer server); treated as not serving.
    Other(String),
}

impl ServerState {
    /// The state named `s` as the server spells it.
    pub fn parse(s: &str) -> ServerState {
        match s {
            "starting" => ServerState::Starting,
            "running" => ServerState::Running,
            "backing-up" => ServerState::BackingUp,
            "recovering" => ServerState::Recovering,
            "fenced" => ServerState::Fenced,
            "stopping" => ServerState::Stopping,
            "stopped" => ServerState::Stopped,
            "failed" => ServerState::Failed,
            other => ServerState::Other(other.to_owned()),
        }
    }

    /// The state's name as the server spells it.
    pub fn name(&self) -> &str {
        match self {
            ServerState::Starting => "starting",
            ServerState::Running => "running",
            ServerState::BackingUp => "backing-up",
            ServerState::Recovering => "recovering",
            ServerState::Fenced => "fenced",
            ServerState::Stopping => "stopping",
            ServerState::Stopped => "stopped",
            ServerState::Failed => "failed",
            ServerState::Other(s) => s,
        }
    }

    /// Whether the client may use a server in this state: `running`, and also `backing-up`
    /// (the online backup is a plain file copy taken while clients keep writing; the server
    /// accepts writes throughout, so moving clients away would only interrupt production).
    /// `stopping` is *not* serving: the server still finishes requests it has read, but the
    /// client stops sending new ones to it.
    pub fn is_serving(&self) -> bool {
        matches!(self, ServerState::Running | ServerState::BackingUp)
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `DUPLEX.STATE` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    /// The operation state.
    pub state: ServerState,
    /// The fencing epoch: grows when the server is fenced or rebuilt.
    pub epoch: u64,
    /// The server's node id.
    pub node_id: u64,
    /// The last LSN in its WAL.
    pub last_lsn: u64,
}

impl StateInfo {
    /// Decodes the reply to `DUPLEX.STATE`: an array of field-name / value pairs
    /// (`state` bulk string, `epoch`, `node_id`, `last_lsn` integers; unknown fields are
    /// ignored so that a newer server can add some).
    pub fn from_reply(r: &Reply) -> Result<StateInfo, String> {
        let Reply::Array(items) = r else {
            return Err(format!("DUPLEX.STATE answered {}", describe(r)));
        };
        if items.len() % 2 != 0 {
            return Err("DUPLEX.STATE answered an odd number of fields".into());
        }
        let (mut state, mut epoch, mut node_id, mut last_lsn) = (None, None, None, None);
        for pair in items.chunks(2) {
            let Reply::Bulk(name) = &pair[0] else {
                return Err("DUPLEX.STATE field name is not a bulk string".into());
            };
            let int = |r: &Reply| match r {
                Reply::Integer(n) if *n >= 0 => Ok(*n as u64),
                other => Err(format!(
                    "DUPLEX.STATE field {} is {}",
                    String::from_utf8_lossy(name),
                    describe(other)
                )),
            };
            match name.as_slice() {
                b"state" => match &pair[1] {
                    Reply::Bulk(s) => {
                        state = Some(ServerState::parse(&String::from_utf8_lossy(s)));
                    }
                    other => return Err(format!("DUPLEX.STATE state is {}", describe(other))),
                },
                b"epoch" => epoch = Some(int(&pair[1])?),
                b"node_id" => node_id = Some(int(&pair[1])?),
                b"last_lsn" => last_lsn = Some(int(&pair[1])?),
                _ => {}
            }
        }
        match (state, epoch) {
            (Some(state), Some(epoch)) => Ok(StateInfo {
                state,
                epoch,
                node_id: node_id.unwrap_or(0),
                last_lsn: last_lsn.unwrap_or(0),
            }),
            _ => Err("DUPLEX.STATE lacks the state or epoch field".into()),
        }
    }
}

/// A short description of a reply, for error messages.
pub(crate) fn describe(r: &Reply) -> String {
    match r {
        Reply::Simple(s) => format!("+{s}"),
        Reply::Error(s) => format!("error '{s}'"),
        Reply::Integer(n) => format!("integer {n}"),
        Reply::Bulk(b) => format!("a bulk string of {} bytes", b.len()),
        Reply::Null => "nil".into(),
        Reply::Array(a) => format!("an array of {} elements", a.len()),
        Reply::NullArray => "a nil array".into(),
    }
}

/// Why a server cannot be used right now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// No connection, or the connection broke (refused, timed out, reset, closed).
    Unreachable(String),
    /// It answered, but its state is not serving (see [`ServerState::is_serving`]).
    NotServing(ServerState),
    /// It refused a write (`-FENCED`, `-FAILED`, `-LOADING`): the write was not applied.
    Refused(String),
    /// It reports an epoch older than one this client already saw from the same address:
    /// an old copy of the server came back (restored from an old disk or backup without
    /// being rebuilt). The client never writes to it.
    StaleEpoch {
        /// The highest epoch seen from this address before.
        seen: u64,
        /// The epoch it reports now.
        reported: u64,
    },
    /// AUTH failed.
    AuthFailed(String),
    /// It answered something this client does not understand.
    BadReply(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Unreachable(why) => write!(f, "unreachable ({why})"),
            Unavailable::NotServing(s) => write!(f, "state {s}"),
            Unavailable::Refused(msg) => write!(f, "refused the write ({msg})"),
            Unavailable::StaleEpoch { seen, reported } => write!(
                f,
                "stale: reports epoch {reported}, older than epoch {seen} already seen from this \
                 address (an old copy of the server came back; rebuild it from its peer before \
                 clients may write to it)"
            ),
            Unavailable::AuthFailed(msg) => write!(
                f,
                "authentication failed ({msg}; check the client password against the server's \
                 requirepass)"
            ),
            Unavailable::BadReply(msg) => write!(f, "unexpected answer ({msg})"),
        }
    }
}

/// One configured server as [`crate::Client::server_states`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// Its address (`host:port`) as configured.
    pub addr: String,
    /// Its position in the list: 0 is the default server.
    pub index: usize,
    /// What `DUPLEX.STATE` answered, if it was reachable.
    pub info: Option<StateInfo>,
    /// The highest epoch this client has seen from this address.
    pub highest_epoch_seen: Option<u64>,
    /// Why the client would not use it now; `None` when it is usable.
    pub unavailable: Option<Unavailable>,
    /// Whether the client is connected to it now.
    pub current: bool,
}

impl ServerStatus {
    /// Whether the client would use this server now.
    pub fn is_usable(&self) -> bool {
        self.unavailable.is_none()
    }
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = if self.index == 0 { "default" } else { "backup" };
        write!(f, "{} ({role})", self.addr)?;
        match (&self.info, &self.unavailable) {
            (Some(i), None) => write!(f, ": {} epoch {}", i.state, i.epoch)?,
            (Some(i), Some(u)) => write!(f, ": epoch {}, not usable: {u}", i.epoch)?,
            (None, Some(u)) => write!(f, ": {u}")?,
            (None, None) => {}
        }
        if self.current {
            write!(f, " [current]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_the_server_reply() {
        let r = Reply::Array(vec![
            b("state"),
            b("backing-up"),
            b("epoch"),
            Reply::Integer(3),
            b("node_id"),
            Reply::Integer(2),
            b("last_lsn"),
            Reply::Integer(99),
            b("future_field"),
            b("x"),
        ]);
        let i = StateInfo::from_reply(&r).unwrap();
        assert_eq!(i.state, ServerState::BackingUp);
        assert!(i.state.is_serving());
        assert_eq!((i.epoch, i.node_id, i.last_lsn), (3, 2, 99));
        assert!(StateInfo::from_reply(&Reply::Error("ERR x".into())).is_err());
        assert!(StateInfo::from_reply(&Reply::Array(vec![b("state"), b("running")])).is_err());
        assert!(
            StateInfo::from_reply(&Reply::Array(vec![b("epoch"), Reply::Integer(-1)])).is_err()
        );
    }

    #[test]
    fn serving_states() {
        for (s, serving) in [
            ("starting", false),
            ("running", true),
            ("backing-up", true),
            ("recovering", false),
            ("fenced", false),
            ("stopping", false),
            ("stopped", false),
            ("failed", false),
            ("martian", false),
        ] {
            let st = ServerState::parse(s);
            assert_eq!(st.name(), s);
            assert_eq!(st.is_serving(), serving, "{s}");
        }
    }
}
