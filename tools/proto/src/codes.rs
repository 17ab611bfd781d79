//! The error codes `duplexd` opens its error replies with, written once for the server that
//! sends them and the clients that act on them.
//!
//! A RESP error reply is one line, `-CODE message`; the code is its first word. Clients
//! branch on the code, never on the message: [`classify`] tells what a reply means for a
//! request that got it (was it applied, may it be sent elsewhere).

/// A generic error: wrong arguments, an unknown command, a refused option. Not applied.
pub const ERR: &str = "ERR";
/// The server is fenced: a write was refused and not applied; reads are served.
pub const FENCED: &str = "FENCED";
/// The server's write path failed (fsync error, full disk): a write was refused and not
/// applied; the server refuses writes until it is restarted.
pub const FAILED: &str = "FAILED";
/// The server is not serving writes yet or any more (starting, recovering, stopped): a
/// write was refused and not applied.
pub const LOADING: &str = "LOADING";
/// The disk failed while this write was being made durable: it may or may not survive a
/// restart. Never resend it blindly.
pub const IOERR: &str = "IOERR";
/// A resource the log needs ran out (disk space on the WAL's file system, free space below
/// the reserve, or file descriptors): the write was refused whole and not applied; the server
/// keeps serving reads and accepts writes again by itself once the resource is back (no
/// restart). Like [`FENCED`], a refusal: the write may go to another server.
pub const NORESOURCE: &str = "NORESOURCE";
/// With a synchronous archive (`archive_lag_ms` = 0) the archive could not take this write:
/// it is durable in the server's own log but not acknowledged. The server keeps running;
/// every later write tries the archive again.
pub const NOARCHIVE: &str = "NOARCHIVE";
/// The connection has not authenticated and the command needs it.
pub const NOAUTH: &str = "NOAUTH";
/// AUTH (or HELLO ... AUTH) gave a wrong user or password.
pub const WRONGPASS: &str = "WRONGPASS";
/// EXEC did not apply the transaction (a queued command was refused, or the commit failed).
pub const EXECABORT: &str = "EXECABORT";
/// HELLO asked for a protocol version the server does not speak.
pub const NOPROTO: &str = "NOPROTO";
/// `DUPLEX.WAIT`: the session token's writes did not reach this server within the
/// timeout (the client's own writes are not yet visible here). Nothing was changed.
pub const TIMEOUT: &str = "TIMEOUT";
/// `DUPLEX.WAIT`: this server is the token's origin and no longer holds the position it
/// acknowledged (a lost tail): the writes will not arrive. Nothing was changed.
pub const TOKENLOST: &str = "TOKENLOST";
/// `DUPLEX.WAIT`: this server does not replicate (no `--peer`) and never received a batch
/// of the token's origin: its writes cannot arrive here, so there is nothing to wait for.
pub const NOREPL: &str = "NOREPL";

/// The codes of a write refused because of the server's operation state or a resource it
/// lacks for now (the write was not applied, so a client may send it to another server).
pub const REFUSALS: [&str; 4] = [FENCED, FAILED, LOADING, NORESOURCE];

/// What an error reply means for the request that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// [`FENCED`], [`FAILED`], [`LOADING`] or [`NORESOURCE`]: refused because of the
    /// server's state or a resource it lacks for now, and not applied; the request may go
    /// to another server.
    Refused,
    /// [`IOERR`]: the outcome is unknown; the request must not be resent.
    OutcomeUnknown,
    /// [`NOAUTH`] or [`WRONGPASS`]: the connection is not (or could not be) authenticated.
    Auth,
    /// Any other code: the request itself was refused; the server is fine.
    Other,
}

/// The code of an error reply's text (its first word; the whole text if it has one word).
pub fn code_of(msg: &str) -> &str {
    msg.split(' ').next().unwrap_or(msg)
}

/// What an error reply's text means (see [`ErrorClass`]).
pub fn classify(msg: &str) -> ErrorClass {
    match code_of(msg) {
        FENCED | FAILED | LOADING | NORESOURCE => ErrorClass::Refused,
        IOERR => ErrorClass::OutcomeUnknown,
        NOAUTH | WRONGPASS => ErrorClass::Auth,
        _ => ErrorClass::Other,
    }
}

/// An error reply's text: `code`, a space, `message`.
pub fn line(code: &str, message: &str) -> String {
    format!("{code} {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_first_word_only() {
        assert_eq!(
            classify("FENCED this server is fenced"),
            ErrorClass::Refused
        );
        assert_eq!(
            classify("LOADING this server is starting"),
            ErrorClass::Refused
        );
        assert_eq!(classify("FAILED x"), ErrorClass::Refused);
        assert_eq!(classify("FAILED"), ErrorClass::Refused);
        assert_eq!(
            classify("NORESOURCE out of disk space"),
            ErrorClass::Refused
        );
        assert_eq!(classify("NOARCHIVE archive failed"), ErrorClass::Other);
        assert_eq!(
            classify("IOERR write outcome unknown"),
            ErrorClass::OutcomeUnknown
        );
        assert_eq!(
            classify("NOAUTH Authentication required."),
            ErrorClass::Auth
        );
        assert_eq!(classify("WRONGPASS invalid"), ErrorClass::Auth);
        assert_eq!(classify("FENCEDX"), ErrorClass::Other);
        assert_eq!(classify("ERR FENCED"), ErrorClass::Other);
        assert_eq!(classify(""), ErrorClass::Other);
        for c in REFUSALS {
            assert_eq!(classify(&line(c, "m")), ErrorClass::Refused);
        }
        assert_eq!(line(IOERR, "disk"), "IOERR disk");
    }
}
