//! The backup schedule: a backup every `backup_interval_secs`, counted from the end of the
//! previous one. [`BackupSchedule::tick`] is one step at a given time, so a test drives it
//! with a [`duplex_wal::ManualClock`] and no thread; [`spawn`] is the daemon's thread that
//! ticks it every [`POLL`] against the real clock.

use std::sync::Arc;
use std::time::Duration;

use duplex_wal::Clock;

use crate::limits::POLL;
use crate::shared::Shared;
use crate::Error;

/// When the next scheduled backup is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSchedule {
    every_ms: u64,
    next_ms: u64,
}

impl BackupSchedule {
    /// A backup every `every`, the first one `every` after `now_ms`.
    pub fn new(every: Duration, now_ms: u64) -> BackupSchedule {
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        BackupSchedule {
            every_ms,
            next_ms: now_ms.saturating_add(every_ms),
        }
    }

    /// When the next backup is due, Unix ms.
    pub fn next_ms(&self) -> u64 {
        self.next_ms
    }

    /// One step: if a backup is due by `clock`, runs `backup` and schedules the next one
    /// `every` after it finished. Returns whether it ran.
    pub fn tick(&mut self, clock: &dyn Clock, backup: impl FnOnce()) -> bool {
        if clock.now_ms() < self.next_ms {
            return false;
        }
        backup();
        self.next_ms = clock.now_ms().saturating_add(self.every_ms);
        true
    }
}

/// Starts the scheduler thread (when `backup_interval_secs` > 0); it stops with the daemon.
pub fn spawn(sh: &Arc<Shared>) -> Result<(), Error> {
    let secs = sh.cfg().backup_interval_secs;
    if secs == 0 {
        return Ok(());
    }
    let every = Duration::from_secs(secs);
    let s = sh.clone();
    std::thread::Builder::new()
        .name("backup-scheduler".into())
        .spawn(move || {
            let mut sched = BackupSchedule::new(every, s.clock().now_ms());
            while !s.stopping() {
                // A failed backup is logged and counted in INFO by the backup itself.
                sched.tick(s.clock(), || {
                    let _ = s.backup(None);
                });
                std::thread::sleep(POLL.min(every));
            }
        })
        .map_err(Error::Net)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_wal::ManualClock;

    #[test]
    fn ticks_when_due_and_counts_from_the_end_of_a_backup() {
        let clock = ManualClock::new(1_000);
        let mut s = BackupSchedule::new(Duration::from_secs(10), clock.now_ms());
        assert_eq!(s.next_ms(), 11_000);
        let mut runs = 0;
        assert!(!s.tick(&clock, || runs += 1));
        clock.set(10_999);
        assert!(!s.tick(&clock, || runs += 1));
        clock.set(11_000);
        // The backup takes 3 s of clock time: the next is due 10 s after it ends.
        assert!(s.tick(&clock, || {
            runs += 1;
            clock.advance(3_000);
        }));
        assert_eq!(runs, 1);
        assert_eq!(s.next_ms(), 24_000);
        clock.set(23_999);
        assert!(!s.tick(&clock, || runs += 1));
        clock.set(50_000);
        assert!(s.tick(&clock, || runs += 1));
        assert_eq!(runs, 2);
        assert_eq!(s.next_ms(), 60_000);
    }
}
