//! The pace of a backup's store copy ([`BackupRate`]): how long each slice of the copy is
//! and how long the copy rests after one, so that a backup does not take the disk from the
//! WAL's fsyncs.
//!
//! The adaptive default watches the writers: while nothing is being committed it copies in
//! large slices without resting (as fast as `cp`); once a slice sees a commit, the copy
//! drops to small slices and rests for [`ADAPTIVE_REST`] times as long as each slice took,
//! so it takes at most about a tenth of the disk's time while writers wait on fsyncs. The
//! slices are written with direct I/O where the file system allows
//! ([`duplex_wal::Storage::copy_synced`]): no dirty pages pile up and no fsync per slice
//! forces a journal commit ahead of the WAL's, so a WAL fsync waits for at most one small
//! slice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use duplex_wal::CopyPace;

use super::BackupRate;
use crate::ratelimit::RateLimit;

/// Slice of an unpaced copy, and of an adaptive copy while no writer commits.
pub(super) const FAST_SLICE: u64 = 16 << 20;
/// Slice of an adaptive copy while writers commit, and of a copy with a fixed rate: a WAL
/// fsync that lands meanwhile waits for at most one.
pub(super) const PACED_SLICE: u64 = 256 << 10;
/// The adaptive pace rests this many times as long as each slice took while writers commit.
pub(super) const ADAPTIVE_REST: u32 = 9;

/// What the adaptive pace watches: a value that changes whenever a writer committed
/// (`None`: cannot tell, taken as a commit).
pub(crate) type Activity<'a> = &'a (dyn Fn() -> Option<u64> + Sync);

/// A [`BackupRate`] as a [`CopyPace`].
pub(super) struct BackupPace<'a> {
    rate: BackupRate,
    limit: RateLimit,
    activity: Activity<'a>,
    seen: Option<u64>,
    busy: bool,
    slice_started: Instant,
    /// Time spent resting, for the report.
    pub(super) rested: Duration,
}

impl<'a> BackupPace<'a> {
    /// The pace of `rate`, watching `activity` (only the adaptive pace looks at it).
    pub(super) fn new(rate: BackupRate, activity: Activity<'a>) -> BackupPace<'a> {
        BackupPace {
            rate,
            limit: RateLimit::new(match rate {
                BackupRate::BytesPerSec(r) => Some(r),
                _ => None,
            }),
            activity,
            seen: activity(),
            // Small slices until a first one shows that nobody commits.
            busy: true,
            slice_started: Instant::now(),
            rested: Duration::ZERO,
        }
    }
}

impl CopyPace for BackupPace<'_> {
    fn next_slice(&mut self) -> u64 {
        self.slice_started = Instant::now();
        match self.rate {
            BackupRate::Unlimited | BackupRate::BytesPerSec(0) => FAST_SLICE,
            BackupRate::BytesPerSec(_) => PACED_SLICE,
            BackupRate::Adaptive if self.busy => PACED_SLICE,
            BackupRate::Adaptive => FAST_SLICE,
        }
    }

    fn after_slice(&mut self, n: u64) {
        match self.rate {
            BackupRate::Unlimited | BackupRate::BytesPerSec(0) => {}
            BackupRate::BytesPerSec(_) => {
                let t = Instant::now();
                self.limit.take(n);
                self.rested += t.elapsed();
            }
            BackupRate::Adaptive => {
                let now = (self.activity)();
                self.busy = now.is_none() || now != self.seen;
                self.seen = now;
                if self.busy {
                    let rest = self.slice_started.elapsed() * ADAPTIVE_REST;
                    std::thread::sleep(rest);
                    self.rested += rest;
                }
            }
        }
    }
}

/// Activity of a WAL directory that another process writes (a running `duplexd`'s, read
/// by `duplex-recover backup`): the modification time of its newest segment file, which
/// every write moves. `None` where it cannot be read (the copy then rests as if writers
/// committed).
pub(crate) fn wal_dir_activity(dir: &Path) -> Option<u64> {
    let newest: PathBuf = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .max()?;
    let modified = std::fs::metadata(&newest).ok()?.modified().ok()?;
    let since = modified.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn the_adaptive_pace_copies_fast_while_idle_and_slow_while_writers_commit() {
        let commits = AtomicU64::new(0);
        let activity = || Some(commits.load(Ordering::Relaxed));
        let mut pace = BackupPace::new(BackupRate::Adaptive, &activity);
        // The first slice is small: nothing is known yet.
        assert_eq!(pace.next_slice(), PACED_SLICE);
        pace.after_slice(PACED_SLICE);
        // Nobody committed during it: large slices, no rest.
        assert_eq!(pace.next_slice(), FAST_SLICE);
        pace.after_slice(FAST_SLICE);
        assert_eq!(pace.rested, Duration::ZERO);
        // A commit during the next slice: small slices and a rest after each.
        assert_eq!(pace.next_slice(), FAST_SLICE);
        std::thread::sleep(Duration::from_millis(2));
        commits.fetch_add(1, Ordering::Relaxed);
        pace.after_slice(FAST_SLICE);
        assert!(pace.rested >= Duration::from_millis(2 * u64::from(ADAPTIVE_REST)));
        assert_eq!(pace.next_slice(), PACED_SLICE);
        // Unknown activity counts as commits.
        let unknown = || None;
        let mut pace = BackupPace::new(BackupRate::Adaptive, &unknown);
        pace.next_slice();
        pace.after_slice(1);
        assert_eq!(pace.next_slice(), PACED_SLICE);
    }

    #[test]
    fn fixed_rates_ignore_the_writers() {
        let activity = || None;
        let mut fast = BackupPace::new(BackupRate::Unlimited, &activity);
        assert_eq!(fast.next_slice(), FAST_SLICE);
        fast.after_slice(FAST_SLICE);
        assert_eq!(fast.rested, Duration::ZERO);
        let mut zero = BackupPace::new(BackupRate::BytesPerSec(0), &activity);
        assert_eq!(zero.next_slice(), FAST_SLICE);
        let mut fixed = BackupPace::new(BackupRate::BytesPerSec(10 << 20), &activity);
        assert_eq!(fixed.next_slice(), PACED_SLICE);
        for _ in 0..8 {
            fixed.after_slice(PACED_SLICE);
        }
        // 2 MiB at 10 MiB/s: about 0.2 s of rest.
        assert!(
            fixed.rested >= Duration::from_millis(150),
            "{:?}",
            fixed.rested
        );
    }

    #[test]
    fn a_wal_directory_shows_activity_when_its_newest_segment_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(wal_dir_activity(dir.path()), None);
        let seg = dir.path().join("00000000000000000001.wal");
        std::fs::write(&seg, b"a").expect("write");
        let before = wal_dir_activity(dir.path()).expect("activity");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&seg, b"b").expect("write");
        assert_ne!(wal_dir_activity(dir.path()), Some(before));
    }
}
