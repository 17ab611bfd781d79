//! Every bound the daemon keeps on its own work, in one place: how many requests run
//! together, how many bytes one commit or one reply buffer may hold, how often blocked
//! threads look up. A new limit goes here, named with its unit.
//!
//! The protocol limits that come from the configuration (argument sizes and counts) are
//! not here: they are [`duplex_proto::Limits`], built by [`crate::config::ServerConfig::limits`].

use std::time::Duration;

/// Most non-write requests executed together by one connection before their replies are
/// looked at (written out, or held back when the client is slow to read them).
pub const GROUP_MAX: usize = 1024;
/// Most write requests of one connection in one commit (one `write_many`).
pub const RUN_MAX: usize = 1024;
/// Most argument bytes of one connection's writes in one commit.
pub const RUN_BYTES_MAX: usize = 8 << 20;
/// Most reply bytes a connection gathers before they are written out (the low mark of
/// back-pressure): above it no further request of the connection starts, even within a
/// group of reads, and the connection is neither read nor run until its client has read
/// its replies. What one connection holds is so about this plus one reply; the hard limit
/// past which a client is disconnected is `client_output_limit_bytes`
/// ([`crate::config::ServerConfig`]).
pub const OUT_BYTES_MAX: usize = 1 << 20;
/// Bytes asked of the socket in one read.
pub const CHUNK_BYTES: usize = 16 << 10;
/// Most bytes read from one connection in one event-loop turn; the rest waits a turn. A
/// connection holding this many bytes of complete requests not yet run is not read.
pub const READ_PER_TURN_BYTES: usize = 256 << 10;
/// How often blocked threads (connections, event loops, the scheduler, the shutdown wait)
/// look at the shutdown flag.
pub const POLL: Duration = Duration::from_millis(100);
/// How long a stopping event loop keeps trying to send replies before it closes anyway.
pub const DRAIN: Duration = Duration::from_secs(5);
/// How long the shutdown sequence waits for connections to finish their requests.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Most event-loop threads (`io_threads`).
pub const IO_THREADS_MAX: usize = 64;
/// Stack of a connection thread (`io = "threads"`).
pub const CONN_STACK_BYTES: usize = 256 << 10;
/// Number of key stripes for conditional writes (see [`crate::shared::Stripes`]).
pub const STRIPES: usize = 1024;
/// Most live SCAN cursors; the oldest is dropped beyond this.
pub const CURSORS_MAX: usize = 10_000;
/// How long an unused SCAN cursor lives.
pub const CURSOR_TTL: Duration = Duration::from_secs(600);
/// Most keys one SCAN call examines (its COUNT is capped here).
pub const SCAN_COUNT_MAX: usize = 100_000;
/// SCANs with a COUNT above this (and every DBSIZE, DUPLEX.BACKUP and DUPLEX.CHECKPOINT)
/// are slow work: an event loop hands them to a worker thread instead of running them.
pub const SCAN_INLINE_MAX: usize = 1000;
/// Worker threads that run the event loops' slow work. Each connection has at most one slow
/// request in flight (it waits for that reply before its next request runs), so the queue
/// holds at most `max_clients` requests.
pub const SLOW_WORKERS: usize = 4;
/// Most commands one MULTI may queue; the next one is refused and EXEC then aborts
/// (`EXECABORT`), as Redis does when a queued command is refused.
pub const MULTI_QUEUE_MAX: usize = 10_000;
/// Most argument bytes one MULTI may queue (the default request byte limit), likewise.
pub const MULTI_QUEUE_BYTES_MAX: usize = 64 << 20;
/// When the backup directory holds no backup at start, the first scheduled one comes this
/// long after start (or one interval, if shorter): soon, but not in the start-up's rush.
pub const FIRST_BACKUP_DELAY: Duration = Duration::from_secs(600);
/// How often the background reclaim ([`crate::reclaim`]) takes its next step.
pub const RECLAIM_EVERY: Duration = Duration::from_millis(200);
/// Most stored versions one reclaim step examines (a walk over the whole database goes on
/// from where the last step stopped).
pub const RECLAIM_STEP_KEYS: usize = 2000;
/// Most keys one connection may WATCH at once; a WATCH past it is refused.
pub const WATCH_KEYS_MAX: usize = 10_000;
/// Most key bytes one connection may WATCH at once, likewise.
pub const WATCH_BYTES_MAX: usize = 16 << 20;
