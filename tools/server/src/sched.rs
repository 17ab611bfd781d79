//! The backup schedule: a backup every `backup_interval_secs`, counted from the last
//! completed one, or on the slots of a UTC time of day (`backup_at`: that time, then every
//! interval after it). At start the schedule resumes from the newest complete backup in
//! `backup_dir` ([`BackupSchedule::resume`]), so a server restarted more often than the
//! interval still takes its backups, and one that was down over a slot takes it at once.
//!
//! [`BackupSchedule::tick`] is one step at a given time, so a test drives it with a
//! [`duplex_wal::ManualClock`] and no thread; [`spawn`] is the daemon's thread that ticks it
//! every [`POLL`] against the real clock and publishes when the next backup is due (INFO).

use std::sync::Arc;
use std::time::Duration;

use duplex_wal::Clock;

use crate::config::TimeOfDay;
use crate::limits::{FIRST_BACKUP_DELAY, POLL};
use crate::shared::Shared;
use crate::Error;

/// When the next scheduled backup is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSchedule {
    every_ms: u64,
    /// The time of day the slots fall on, ms after midnight UTC.
    at_ms: Option<u64>,
    next_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl BackupSchedule {
    /// A backup every `every`, the first one `every` after `now_ms`.
    pub fn new(every: Duration, now_ms: u64) -> BackupSchedule {
        let every_ms = millis(every).max(1);
        BackupSchedule {
            every_ms,
            at_ms: None,
            next_ms: now_ms.saturating_add(every_ms),
        }
    }

    /// The schedule of a server starting at `now_ms` whose newest complete backup was taken
    /// at `last_ms` (`None`: there is none):
    /// - every `every` (no `at`): due `every` after the last backup (at once if that is
    ///   past); with no backup, [`FIRST_BACKUP_DELAY`] (or `every`, if shorter) after start;
    /// - on the slots of `at` (that time of day UTC, then every `every`): due at the first
    ///   slot after the last backup (at once if that is past: a slot missed while down);
    ///   with no backup, at the next slot.
    pub fn resume(
        every: Duration,
        at: Option<TimeOfDay>,
        last_ms: Option<u64>,
        now_ms: u64,
    ) -> BackupSchedule {
        let mut s = BackupSchedule::new(every, now_ms);
        s.at_ms = at.map(TimeOfDay::ms_of_day);
        s.next_ms = match (s.at_ms, last_ms) {
            (None, Some(last)) => last.saturating_add(s.every_ms),
            (None, None) => now_ms.saturating_add(s.every_ms.min(millis(FIRST_BACKUP_DELAY))),
            (Some(_), Some(last)) => s.slot_after(last),
            (Some(_), None) => s.slot_after(now_ms),
        };
        s
    }

    /// The first slot strictly after `t` (for an `at` schedule).
    fn slot_after(&self, t: u64) -> u64 {
        let base = self.at_ms.unwrap_or(0);
        if t < base {
            return base;
        }
        let k = (t - base) / self.every_ms + 1;
        base.saturating_add(k.saturating_mul(self.every_ms))
    }

    /// When the next backup is due, Unix ms.
    pub fn next_ms(&self) -> u64 {
        self.next_ms
    }

    /// One step: if a backup is due by `clock`, runs `backup` and schedules the next one
    /// `every` after it finished (or at the first slot after that). Returns whether it ran.
    pub fn tick(&mut self, clock: &dyn Clock, backup: impl FnOnce()) -> bool {
        if clock.now_ms() < self.next_ms {
            return false;
        }
        backup();
        let now = clock.now_ms();
        self.next_ms = match self.at_ms {
            None => now.saturating_add(self.every_ms),
            Some(_) => self.slot_after(now),
        };
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
            let last = s.backup_info().last_ms;
            let mut sched = BackupSchedule::resume(
                every,
                s.cfg().backup_at,
                (last > 0).then_some(last),
                s.clock().now_ms(),
            );
            tracing::info!(
                event = "backup_schedule",
                next_in_secs = sched.next_ms().saturating_sub(s.clock().now_ms()) / 1000,
                "next scheduled backup"
            );
            while !s.stopping() {
                s.set_next_backup_ms(sched.next_ms());
                // A failed backup is logged and counted in INFO by the backup itself.
                sched.tick(s.clock(), || {
                    let _ = s.backup(None, crate::shared::BackupBase::None);
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

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    #[test]
    fn resumes_from_the_last_backup() {
        let every = Duration::from_secs(86_400);
        let now = 100 * DAY + 9 * HOUR;
        let clock = ManualClock::new(now);
        // The last backup 20 h ago: the next one 4 h from now, not 24.
        let mut s = BackupSchedule::resume(every, None, Some(now - 20 * HOUR), now);
        assert_eq!(s.next_ms(), now + 4 * HOUR);
        assert!(!s.tick(&clock, || panic!("not due")));
        clock.set(now + 4 * HOUR);
        assert!(s.tick(&clock, || {}));
        assert_eq!(s.next_ms(), now + 4 * HOUR + DAY);
        // Overdue (30 h ago): at once.
        let mut s = BackupSchedule::resume(every, None, Some(now - 30 * HOUR), now);
        let clock = ManualClock::new(now);
        assert!(s.tick(&clock, || {}));
        // None yet: soon after start, not a day later.
        let s = BackupSchedule::resume(every, None, None, now);
        assert_eq!(s.next_ms(), now + 600_000);
        let s = BackupSchedule::resume(Duration::from_secs(60), None, None, now);
        assert_eq!(s.next_ms(), now + 60_000);
    }

    #[test]
    fn a_server_restarted_daily_still_takes_daily_backups() {
        let every = Duration::from_secs(86_400);
        let clock = ManualClock::new(DAY);
        let mut last = None;
        let mut taken = 0;
        // Ten days, restarted every 23 h; each run ticks every minute until its restart.
        for _ in 0..10 {
            let start = clock.now_ms();
            let mut s = BackupSchedule::resume(every, None, last, start);
            while clock.now_ms() < start + 23 * HOUR {
                s.tick(&clock, || {
                    taken += 1;
                    last = Some(clock.now_ms());
                });
                clock.advance(60_000);
            }
        }
        assert!(taken >= 9, "{taken} backups in 230 h");
    }

    #[test]
    fn backup_at_a_time_of_day() {
        let every = Duration::from_secs(86_400);
        let at: Option<TimeOfDay> = Some("02:30".parse().unwrap());
        let slot = 2 * HOUR + 30 * 60_000;
        // Started at 09:00; the last backup was yesterday at 02:30: today's slot was missed
        // while down, so it is due at once, then tomorrow at 02:30.
        let now = 100 * DAY + 9 * HOUR;
        let clock = ManualClock::new(now);
        let mut s = BackupSchedule::resume(every, at, Some(99 * DAY + slot), now);
        assert_eq!(s.next_ms(), 100 * DAY + slot);
        assert!(s.tick(&clock, || clock.advance(60_000)));
        assert_eq!(s.next_ms(), 101 * DAY + slot);
        // The last backup today at 02:30: tomorrow's slot.
        let s = BackupSchedule::resume(every, at, Some(100 * DAY + slot), now);
        assert_eq!(s.next_ms(), 101 * DAY + slot);
        // None: the next slot.
        let s = BackupSchedule::resume(every, at, None, 100 * DAY + HOUR);
        assert_eq!(s.next_ms(), 100 * DAY + slot);
    }
}
