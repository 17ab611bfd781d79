//! File descriptors at start-up: raise the soft `RLIMIT_NOFILE` as far as the hard limit
//! allows, and lower `max_clients` to what the limit leaves once the engine's share is set
//! aside, so that client connections can never take the descriptors the engine needs to
//! create its next WAL segment, write a checkpoint or take a backup.
//!
//! The engine's share is [`FDS_RESERVED`] plus two per event-loop thread (its epoll
//! descriptor and its waker); see [`reserve`] for what it covers.

use crate::config::{IoMode, ServerConfig};
use crate::Error;

/// Descriptors kept for everything but client connections, whatever the configuration:
/// stdin, stdout and stderr; the listener and the spare descriptor the accept loop keeps
/// to refuse a connection when the process is out of descriptors; the signal thread's pipe;
/// the WAL (the live segment, the next one being created, the one being archived and its
/// copy); the page store and a checkpoint's new file; a backup's source and copy for each
/// slow worker and the scheduler; the data directory's lock. Counted generously, as Redis
/// keeps 32: the engine opening one file too many is a refused write.
pub const FDS_RESERVED: u64 = 32;

/// What start-up found and decided about descriptors ([`fit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// The soft descriptor limit in force (after raising it).
    pub limit: u64,
    /// The hard limit.
    pub hard: u64,
    /// `max_clients` as configured.
    pub requested: usize,
    /// `max_clients` in force: the request, or what fits under `limit`.
    pub effective: usize,
    /// Descriptors kept for the engine and the daemon's own threads.
    pub reserved: u64,
}

/// Descriptors the daemon keeps for itself under `cfg`: [`FDS_RESERVED`], plus an epoll
/// descriptor and a waker for each event-loop thread.
pub fn reserve(cfg: &ServerConfig) -> u64 {
    let loops = match cfg.io {
        IoMode::Events => cfg.io_threads as u64,
        IoMode::Threads => 0,
    };
    FDS_RESERVED + 2 * loops
}

/// Raises the soft descriptor limit toward `max_clients` + the reserve (up to the hard
/// limit) and returns the configuration with `max_clients` lowered to fit, warning when it
/// had to be lowered. Fails when the limit leaves no descriptor for a single client.
pub fn raise_and_fit(mut cfg: ServerConfig) -> Result<ServerConfig, Error> {
    use rlimit::Resource;
    let reserved = reserve(&cfg);
    let need = (cfg.max_clients as u64).saturating_add(reserved);
    let (soft, hard) = Resource::NOFILE
        .get()
        .map_err(|e| Error::Config(format!("cannot read the descriptor limit: {e}")))?;
    let mut limit = soft;
    if soft < need {
        let want = need.min(hard);
        match Resource::NOFILE.set(want, hard) {
            Ok(()) => limit = want,
            Err(e) => tracing::warn!(
                event = "fd_limit",
                soft,
                hard,
                want,
                error = %e,
                "cannot raise the descriptor limit"
            ),
        }
    }
    let plan = fit(cfg.max_clients, limit, hard, reserved)?;
    if plan.effective < plan.requested {
        tracing::warn!(
            event = "max_clients_lowered",
            requested = plan.requested,
            need,
            limit,
            hard,
            effective = plan.effective,
            "You requested max_clients of {} requiring at least {need} max file descriptors ({reserved} kept for the engine); the descriptor limit is {limit} (hard limit {hard}), so max_clients is set to {}; raise the limit (ulimit -n, LimitNOFILE= in a systemd unit) to serve more clients",
            plan.requested,
            plan.effective
        );
    } else if limit != soft {
        tracing::info!(
            event = "fd_limit",
            from = soft,
            to = limit,
            "raised the descriptor limit"
        );
    }
    tracing::debug!(
        event = "fds",
        limit,
        hard,
        reserved,
        max_clients = plan.effective,
        "descriptors"
    );
    cfg.max_clients = plan.effective;
    Ok(cfg)
}

/// The plan for `requested` clients under a soft `limit` (hard `hard`) with `reserved`
/// descriptors kept: `max_clients` lowered to `limit - reserved` when needed.
pub fn fit(requested: usize, limit: u64, hard: u64, reserved: u64) -> Result<FdPlan, Error> {
    let room = limit.saturating_sub(reserved);
    if room == 0 {
        return Err(Error::Config(format!(
            "the descriptor limit is {limit} (hard limit {hard}) and duplexd keeps {reserved} for the engine, leaving none for clients: raise it (ulimit -n, LimitNOFILE= in a systemd unit) to at least {}",
            reserved + 1
        )));
    }
    let effective = usize::try_from(room).map_or(requested, |r| requested.min(r));
    Ok(FdPlan {
        limit,
        hard,
        requested,
        effective,
        reserved,
    })
}

/// The soft descriptor limit in force now (INFO), 0 when it cannot be read.
pub fn current_limit() -> u64 {
    rlimit::Resource::NOFILE.get().map_or(0, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_clients_is_lowered_to_fit_the_limit() {
        let p = fit(1000, 64, 64, 34).unwrap();
        assert_eq!((p.requested, p.effective, p.reserved), (1000, 30, 34));
        let p = fit(10, 1024, 4096, 34).unwrap();
        assert_eq!(p.effective, 10, "a limit with room keeps the request");
        let e = fit(10, 34, 34, 34).unwrap_err().to_string();
        assert!(e.contains("at least 35"), "{e}");
        let cfg = ServerConfig {
            io_threads: 3,
            ..ServerConfig::default()
        };
        assert_eq!(reserve(&cfg), FDS_RESERVED + 6);
        let cfg = ServerConfig {
            io: IoMode::Threads,
            ..cfg
        };
        assert_eq!(reserve(&cfg), FDS_RESERVED);
    }
}
