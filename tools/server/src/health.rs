//! The WAL's two alarms, made loud: a failing archive and writes refused for want of space
//! or descriptors. Both are read from the WAL ([`duplex_wal::Wal::archive_status`],
//! [`duplex_wal::Wal::space_status`]); this module names their states for INFO and
//! `DUPLEX.STATE` and runs the watcher thread that logs them: once when an alarm starts,
//! then at most once per [`REPEAT`] while it lasts, and once when it clears.
//!
//! [`Alarm::observe`] is one step at a given time, so a test drives it without a thread.

use std::sync::Arc;
use std::time::Duration;

use duplex_wal::{ArchiveStatus, SpaceStatus};

use crate::shared::Shared;
use crate::Error;

/// How often a lasting alarm is logged again.
pub const REPEAT: Duration = Duration::from_secs(60);

/// How often the watcher reads the WAL's status.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The archive's health in one word: `off` (no archive directory), `failing` (its last copy
/// failed; local writes go on unless `archive_lag_ms` is 0) or `ok`.
pub fn archive_state(configured: bool, s: &ArchiveStatus) -> &'static str {
    if !configured {
        "off"
    } else if s.last_error.is_some() {
        "failing"
    } else {
        "ok"
    }
}

/// What [`Alarm::observe`] says to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Nothing new.
    Quiet,
    /// The alarm started.
    Started,
    /// The alarm still lasts, [`REPEAT`] after it was last logged.
    Still,
    /// The alarm cleared.
    Cleared,
}

/// One alarm's memory: whether it is on and when it was last logged.
#[derive(Debug, Default)]
pub struct Alarm {
    logged_ms: Option<u64>,
}

impl Alarm {
    /// One observation at `now_ms`: `on` is whether the condition holds now.
    pub fn observe(&mut self, on: bool, now_ms: u64) -> Report {
        let repeat_ms = u64::try_from(REPEAT.as_millis()).unwrap_or(u64::MAX);
        match (self.logged_ms, on) {
            (None, false) => Report::Quiet,
            (None, true) => {
                self.logged_ms = Some(now_ms);
                Report::Started
            }
            (Some(_), false) => {
                self.logged_ms = None;
                Report::Cleared
            }
            (Some(t), true) if now_ms.saturating_sub(t) >= repeat_ms => {
                self.logged_ms = Some(now_ms);
                Report::Still
            }
            (Some(_), true) => Report::Quiet,
        }
    }
}

/// The watcher's two alarms.
#[derive(Debug, Default)]
pub struct Watcher {
    archive: Alarm,
    space: Alarm,
    scrub_reported: bool,
}

impl Watcher {
    /// Logs damage found by the background scrub, once: the store holds a block whose
    /// checksum fails, which reads of it will refuse; the operator should restore.
    pub fn scrub(&mut self, damage: Option<&duplex_engine::ScrubDamage>) {
        if let (Some(d), false) = (damage, self.scrub_reported) {
            self.scrub_reported = true;
            tracing::error!(event = "scrub_damage", file = %d.file.display(), offset = d.offset, problem = %d.problem,
                "the store scrub found a damaged block: reads of the keys in it fail; verify with `duplex-recover verify` and restore with `duplex-recover restore` from a backup plus the archive");
        }
    }

    /// One look at the WAL's status at `now_ms`, logging what changed.
    pub fn step(&mut self, a: &ArchiveStatus, s: &SpaceStatus, now_ms: u64) {
        let secs = |since: Option<u64>| since.map_or(0, |t| now_ms.saturating_sub(t) / 1000);
        let err = a.last_error.as_deref().unwrap_or("");
        match self.archive.observe(a.last_error.is_some(), now_ms) {
            Report::Started => tracing::error!(event = "archive_failing", error = err, archived_lsn = a.archived_lsn, durable_lsn = a.durable_lsn,
                "the WAL archive is failing: new writes are not yet in the archive (local writes go on unless archive_lag_ms is 0); fix the archive directory (space, permissions), the archiver retries by itself"),
            Report::Still => tracing::error!(event = "archive_failing", error = err, failing_secs = secs(a.failing_since_ms), lag_ms = a.lag_ms,
                "the WAL archive is still failing"),
            Report::Cleared => tracing::warn!(event = "archive_recovered", archived_lsn = a.archived_lsn, "the WAL archive works again"),
            Report::Quiet => {}
        }
        let why = s.refused.as_deref().unwrap_or("");
        match self.space.observe(s.refused.is_some(), now_ms) {
            Report::Started => {
                tracing::error!(event = "writes_refused", cause = why, free_bytes = ?s.available_bytes, reserve_bytes = s.reserve_bytes,
                "writes are refused (-NORESOURCE): the WAL cannot create its next segment; reads go on, writes resume by themselves once space or descriptors are back")
            }
            Report::Still => {
                tracing::error!(event = "writes_refused", cause = why, refused_secs = secs(s.refused_since_ms), free_bytes = ?s.available_bytes,
                "writes are still refused (-NORESOURCE)")
            }
            Report::Cleared => {
                tracing::warn!(event = "writes_resumed", "writes are accepted again")
            }
            Report::Quiet => {}
        }
    }
}

/// Starts the watcher thread; it stops with the daemon.
pub fn spawn(sh: &Arc<Shared>) -> Result<(), Error> {
    let s = sh.clone();
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            let mut w = Watcher::default();
            while !s.stopping() {
                w.scrub(s.db().scrub_status().damage.as_ref());
                let wal = s.db().wal();
                w.step(
                    &wal.archive_status(),
                    &wal.space_status(),
                    s.clock().now_ms(),
                );
                std::thread::sleep(WATCH_EVERY);
            }
        })
        .map_err(Error::Net)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_is_logged_at_start_once_a_minute_and_at_its_end() {
        let mut a = Alarm::default();
        assert_eq!(a.observe(false, 0), Report::Quiet);
        assert_eq!(a.observe(true, 1_000), Report::Started);
        assert_eq!(a.observe(true, 2_000), Report::Quiet);
        assert_eq!(a.observe(true, 60_999), Report::Quiet);
        assert_eq!(a.observe(true, 61_000), Report::Still);
        assert_eq!(a.observe(true, 62_000), Report::Quiet);
        assert_eq!(a.observe(false, 63_000), Report::Cleared);
        assert_eq!(a.observe(false, 64_000), Report::Quiet);
        assert_eq!(a.observe(true, 65_000), Report::Started);
    }

    #[test]
    fn archive_states() {
        let mut s = ArchiveStatus::default();
        assert_eq!(archive_state(false, &s), "off");
        assert_eq!(archive_state(true, &s), "ok");
        s.last_error = Some("disk full".into());
        assert_eq!(archive_state(true, &s), "failing");
    }
}
