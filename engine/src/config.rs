//! [`Config`]: every setting of a [`Database`](crate::Database), its default and its
//! bounds, and the limits no configuration can exceed ([`MAX_KEY_SIZE`],
//! [`MAX_VALUE_SIZE`], [`MAX_RECORD_SIZE`]), which the tools read logs with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duplex_wal::{Clock, SyncPolicy, WalOptions};

use crate::error::{Error, Result};

/// Longest key any configuration allows (`Config::max_key_size`): key lengths are `u16` on
/// disk.
pub const MAX_KEY_SIZE: usize = u16::MAX as usize;
/// Longest value any configuration allows (`Config::max_value_size`).
pub const MAX_VALUE_SIZE: usize = 256 << 20;
/// Room in one WAL record beyond its largest key and value, for the batch's headers.
const RECORD_HEADROOM: usize = 1 << 20;
/// Largest WAL record any configuration lets the engine write (the largest key and value
/// plus headers): reading a log with this limit accepts every valid log.
pub const MAX_RECORD_SIZE: u32 = (MAX_VALUE_SIZE + (64 << 10) + RECORD_HEADROOM) as u32;

/// Configuration of a [`Database`](crate::Database); every field has a default.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id, stamped on every local write. Default 1.
    pub node_id: u64,
    /// When writes are acknowledged. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// WAL segment size in bytes. Default 64 MiB.
    pub segment_size: u64,
    /// Longest key in bytes (1..=65535). Default 4 KiB.
    pub max_key_size: usize,
    /// Longest value in bytes (at most 256 MiB). Default 16 MiB.
    pub max_value_size: usize,
    /// Checkpoint once this many bytes were logged since the last one. Default 64 MiB.
    pub checkpoint_wal_bytes: u64,
    /// Checkpoint at least this often when anything changed; `None` for never by time.
    /// Default 5 minutes.
    pub checkpoint_interval: Option<Duration>,
    /// Compact (rewrite into a new generation) when dead bytes exceed this share of the
    /// store file. Default 0.5.
    pub compaction_dead_ratio: f64,
    /// Never compact a store file smaller than this. Default 64 MiB.
    pub compaction_min_bytes: u64,
    /// Copy every closed WAL segment here (see the WAL). Default none.
    pub archive_dir: Option<PathBuf>,
    /// How far the archive may fall behind the durable log, in milliseconds; 0 makes it
    /// synchronous (a write is acknowledged only once the archive holds it too). See
    /// [`WalOptions::archive_lag_ms`]. Default 1000.
    pub archive_lag_ms: u64,
    /// While replaying a long WAL at open, merge into the tree once the operations gathered
    /// take this much memory (about 100 bytes per operation plus its key and value; the
    /// records themselves are read in place from the page cache), so memory stays bounded.
    /// Default 256 MiB.
    pub replay_chunk_bytes: u64,
    /// Run checkpoints on a background thread, which wakes every 200 ms (or when
    /// `checkpoint_wal_bytes` were logged) and does what
    /// [`Database::run_maintenance`](crate::Database::run_maintenance) does. Default true.
    /// Turned off, the engine starts no thread of its own: checkpoints happen only when the
    /// caller runs maintenance, checkpoints or closes (tests and simulations step it), and
    /// the WAL starts none either (its interval sync and archive copies are stepped by
    /// `run_maintenance` too).
    pub background: bool,
    /// Bytes a second the scrub checks after open (every block of the store file, for
    /// damage no read touches; see [`Database::scrub_status`]); 0 turns it off. Default
    /// 8 MiB/s. With `background` off, each `run_maintenance` step checks 200 ms' worth.
    ///
    /// [`Database::scrub_status`]: crate::Database::scrub_status
    pub scrub_bytes_per_sec: u64,
    /// Wall time for the hybrid logical clock that stamps writes, for the time-based
    /// checkpoint schedule and for the creation times in store headers and backups.
    /// Default the system clock; a simulation gives a
    /// [`ManualClock`](duplex_wal::ManualClock).
    pub clock: Arc<dyn Clock>,
    /// Bytes of recent local batches kept in memory for replication links that keep up
    /// (the backlog; older batches are read from the WAL or the archive); 0 turns it off.
    /// Default 0: an embedded database with no peers keeps nothing.
    pub replication_backlog_bytes: u64,
    /// Largest amount a peer's clock may run ahead of this one's, in milliseconds: a
    /// batch or heartbeat stamped further ahead is refused (not applied) until the clocks
    /// agree, so a fast clock cannot win every concurrent write. 0 turns the check off.
    /// Default 500 (as CockroachDB).
    pub max_clock_offset_ms: u64,
    /// Entries the conflict journal keeps (the oldest are dropped and counted past it).
    /// Default 10 000.
    pub conflict_journal_entries: usize,
    /// Bytes of WAL a checkpoint keeps beyond what recovery needs, for peers that have not
    /// acknowledged this node's batches yet ([`Database::set_peer_floor`]) and for peers
    /// that lack other origins' batches this node holds ([`Database::set_forward_floors`]);
    /// past it the WAL is released anyway and such a peer reads from the archive, or needs
    /// a rebuild. Default 1 GiB.
    ///
    /// [`Database::set_peer_floor`]: crate::Database::set_peer_floor
    /// [`Database::set_forward_floors`]: crate::Database::set_forward_floors
    pub peer_wal_retention_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            sync: SyncPolicy::Always,
            segment_size: 64 << 20,
            max_key_size: 4096,
            max_value_size: 16 << 20,
            checkpoint_wal_bytes: 64 << 20,
            checkpoint_interval: Some(Duration::from_secs(300)),
            compaction_dead_ratio: 0.5,
            compaction_min_bytes: 64 << 20,
            archive_dir: None,
            archive_lag_ms: 1000,
            replay_chunk_bytes: 256 << 20,
            background: true,
            scrub_bytes_per_sec: 8 << 20,
            clock: Arc::new(duplex_wal::SystemClock),
            replication_backlog_bytes: 0,
            max_clock_offset_ms: 500,
            conflict_journal_entries: 10_000,
            peer_wal_retention_bytes: 1 << 30,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_key_size == 0 || self.max_key_size > MAX_KEY_SIZE {
            return Err(Error::Config(format!(
                "max_key_size {} must be between 1 and 65535",
                self.max_key_size
            )));
        }
        if self.max_value_size > MAX_VALUE_SIZE {
            return Err(Error::Config(format!(
                "max_value_size {} exceeds 256 MiB",
                self.max_value_size
            )));
        }
        if self.node_id == 0 {
            return Err(Error::Config("node_id must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.compaction_dead_ratio) {
            return Err(Error::Config(
                "compaction_dead_ratio must be in [0, 1)".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn wal_options(&self, initial_lsn: u64) -> WalOptions {
        WalOptions {
            node_id: self.node_id,
            segment_size: self.segment_size,
            // One batch is one record: room for the largest key and value plus headers.
            max_record_size: (self.max_value_size + self.max_key_size + RECORD_HEADROOM) as u32,
            sync: self.sync,
            archive_dir: self.archive_dir.clone(),
            archive_lag_ms: self.archive_lag_ms,
            initial_lsn,
            clock: self.clock.clone(),
            // No hidden threads when the engine has none: `run_maintenance` steps the log.
            background_threads: self.background,
            ..WalOptions::default()
        }
    }
}
