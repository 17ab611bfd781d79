//! The one error type of the client. Every message says what happened and what the operator
//! or the application should do about it.

use std::fmt;

use crate::state::Unavailable;

/// Everything a [`crate::Client`] call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`crate::ClientConfig`] is unusable (no servers, a zero interval, ...).
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// No configured server is usable: each is listed with the reason.
    #[error(
        "no Duplex server is running: {}. Start (or restart) one of them, or DUPLEX.UNFENCE \
         a fenced one, then retry",
        ServerList(.servers)
    )]
    NoServer {
        /// Every configured server (in order) and why it cannot be used.
        servers: Vec<(String, Unavailable)>,
    },

    /// Manual switch mode: the current server stopped, fenced, failed or became unreachable;
    /// the client stopped sending to it. Nothing of this call was sent.
    #[error(
        "server {server} is down ({reason}); the client stopped sending to it and this \
         request was not sent. Call switch() to move to the next running server"
    )]
    ServerDown {
        /// The server's address.
        server: String,
        /// What the client saw.
        reason: Unavailable,
    },

    /// A write was sent, then the connection was lost (the server stopped, crashed or became
    /// unreachable) before its reply arrived. It may or may not have been applied; it was
    /// *not* resent anywhere.
    #[error(
        "the outcome of {command} sent to {server} is unknown: {cause} before the reply \
         arrived, so it may or may not have been applied. It was not resent. Read the affected \
         keys back (the client has moved on to a running server if one exists) and decide \
         whether to write again"
    )]
    OutcomeUnknown {
        /// The server the write was sent to.
        server: String,
        /// The command name (e.g. `SET`).
        command: String,
        /// What went wrong.
        cause: String,
    },

    /// A read failed on one server and again after the client switched (reads are retried
    /// once across a switch).
    #[error(
        "{command} failed on {server} ({cause}) after one retry across a switch; check the \
         servers (server_states()) and retry"
    )]
    ConnectionLost {
        /// The last server tried.
        server: String,
        /// The command name.
        command: String,
        /// What went wrong.
        cause: String,
    },

    /// The server answered with an error reply (wrong arguments, wrong type, ...). The
    /// connection is fine; the request was not applied.
    #[error("server {server} answered with an error: {message}")]
    Server {
        /// The server's address.
        server: String,
        /// The error line (starts with a code such as `ERR`).
        message: String,
    },

    /// After a switch, the new server does not hold the client's own earlier writes (made
    /// on another server) within [`crate::ClientConfig::token_wait`]: reading there could
    /// go back in time. Nothing of this call was sent; the next call waits again. Set
    /// [`crate::ClientConfig::token_timeout_proceeds`] to go on regardless.
    #[error(
        "the client's own writes are not yet visible on {server} after the switch: {message}. \
         This call was not sent; retry (the next call waits again), call \
         clear_session_token() to go on without them, or configure token_timeout_proceeds"
    )]
    OwnWritesNotVisible {
        /// The server switched to.
        server: String,
        /// The server's `DUPLEX.WAIT` reply (`TIMEOUT ...` or `TOKENLOST ...`).
        message: String,
    },

    /// The server answered with a reply of an unexpected shape for the command.
    #[error("server {server} answered {command} with {reply}, which this client does not expect; is it really duplexd?")]
    UnexpectedReply {
        /// The server's address.
        server: String,
        /// The command name.
        command: String,
        /// A description of the reply.
        reply: String,
    },
}

/// Formats `a:1 unreachable (...); b:2 state stopped`.
struct ServerList<'a>(&'a [(String, Unavailable)]);

impl fmt::Display for ServerList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (addr, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let role = if i == 0 { "default" } else { "backup" };
            write!(f, "{addr} ({role}) {why}")?;
        }
        Ok(())
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ServerState;

    #[test]
    fn no_server_lists_every_server() {
        let e = Error::NoServer {
            servers: vec![
                (
                    "a:1".into(),
                    Unavailable::Unreachable("connection refused".into()),
                ),
                ("b:2".into(), Unavailable::NotServing(ServerState::Stopped)),
            ],
        };
        let m = e.to_string();
        assert!(
            m.contains("a:1 (default) unreachable (connection refused)"),
            "{m}"
        );
        assert!(m.contains("b:2 (backup) state stopped"), "{m}");
    }
}
