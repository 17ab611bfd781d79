//! Accepting connections: admission at `max_clients`, refusals with an error reply, and
//! what to do when the process is out of descriptors.
//!
//! A client past `max_clients` is accepted, answered `-ERR max number of clients reached`
//! and closed, rather than left waiting in the listen backlog. When `accept` itself fails
//! for want of descriptors (EMFILE, ENFILE), the acceptor frees the spare descriptor it keeps
//! for that moment, accepts the waiting connection, refuses it the same way and opens the
//! spare again; then it backs off (from [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`]) instead
//! of trying again at once. Accept failures are logged once per [`LOG_EVERY`] with how many
//! happened since the last line, never once per attempt.

use std::fs::File;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::shared::Shared;

/// The refusal sent to a client past `max_clients` (the words Redis uses).
pub const REFUSAL: &[u8] = b"-ERR max number of clients reached\r\n";
/// At most one log line per this long about failing accepts.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// The first wait after an accept failed.
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between failing accepts.
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Logs an event at most once per interval, counting the occurrences in between.
#[derive(Debug)]
pub struct Every {
    interval: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Every {
    /// At most once per `interval`.
    pub fn new(interval: Duration) -> Every {
        Every {
            interval,
            last: None,
            count: 0,
        }
    }

    /// Counts one occurrence at `now`; returns how many occurred since the last line (this
    /// one included) when a line is due.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        let due = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// The accept side of the listener: admission, refusals, and out-of-descriptor handling.
#[derive(Debug)]
pub struct Acceptor {
    /// A descriptor held in reserve, freed to accept (and refuse) one connection when the
    /// process has no other.
    spare: Option<File>,
    log: Every,
    backoff: Duration,
}

impl Default for Acceptor {
    fn default() -> Self {
        Acceptor::new()
    }
}

impl Acceptor {
    /// An acceptor holding its spare descriptor.
    pub fn new() -> Acceptor {
        Acceptor {
            spare: open_spare(),
            log: Every::new(LOG_EVERY),
            backoff: BACKOFF_MIN,
        }
    }

    /// Waits for the next connection; returns it when admitted (counted in `clients`), or
    /// `None` when it was refused or `accept` failed (the caller looks at the shutdown flag
    /// and calls again).
    pub fn next(&mut self, sh: &Shared, listener: &TcpListener) -> Option<TcpStream> {
        match listener.accept() {
            Ok((stream, _)) => {
                self.backoff = BACKOFF_MIN;
                if sh.admit() {
                    return Some(stream);
                }
                refuse(stream);
                None
            }
            Err(e) => {
                self.failed(sh, listener, &e);
                None
            }
        }
    }

    /// An accept failed: refuse the waiting connection with the spare descriptor when the
    /// cause is a lack of descriptors, log (once per interval), and back off.
    fn failed(&mut self, sh: &Shared, listener: &TcpListener, e: &io::Error) {
        if e.kind() == io::ErrorKind::Interrupted {
            return;
        }
        let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        let mut refused = false;
        if out_of_fds && self.spare.take().is_some() {
            if let Ok((stream, _)) = listener.accept() {
                sh.count_refused();
                refuse(stream);
                refused = true;
            }
            self.spare = open_spare();
        }
        if let Some(n) = self.log.hit(Instant::now()) {
            if out_of_fds {
                tracing::warn!(
                    event = "accept_failed",
                    error = %e,
                    failures = n,
                    limit = crate::fds::current_limit(),
                    clients = sh.stats().clients,
                    "accept failed: the process is out of file descriptors ({n} time(s) since the last such line; at most one line per {}s); waiting clients are refused; raise the descriptor limit or lower max_clients",
                    LOG_EVERY.as_secs()
                );
            } else {
                tracing::warn!(
                    event = "accept_failed",
                    error = %e,
                    failures = n,
                    "accept failed ({n} time(s) since the last such line; at most one line per {}s)",
                    LOG_EVERY.as_secs()
                );
            }
        }
        if !refused {
            std::thread::sleep(self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Answers a connection that is not admitted, and closes it. The socket is non-blocking: a
/// refusal never waits on its client.
fn refuse(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write(REFUSAL);
}

/// The spare descriptor (`/dev/null`), or none when even that cannot be opened now.
fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_logs_once_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut e = Every::new(Duration::from_secs(10));
        assert_eq!(e.hit(t0), Some(1), "the first occurrence is logged");
        for i in 1..100 {
            assert_eq!(e.hit(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(e.hit(t0 + Duration::from_secs(10)), Some(100));
        assert_eq!(e.hit(t0 + Duration::from_secs(11)), None);
    }
}
