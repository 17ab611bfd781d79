//! The log's background work, one step at a time: the interval sync (write, and under
//! [`SyncPolicy::Interval`] fsync, what appends left pending) and the archiver (complete
//! closed segments in the archive and follow the segment being written; module `follow`).
//!
//! Each is a step function on the shared state, [`Shared::sync_due`] and
//! [`Shared::archive_pending`], that does one wake-up's work. With
//! [`WalOptions::background_threads`](crate::WalOptions::background_threads) on (the
//! default) a thread per job calls its step on a timer or a queue; with it off no thread is
//! started and the owner calls the steps ([`crate::Wal::sync_due`],
//! [`crate::Wal::archive_pending`]) when it chooses, so a test or a simulation runs the log
//! with no hidden threads.
//!
//! Invariants: a segment is completed in the archive only once it is closed (complete and
//! fsynced); the archiver never copies twice at once (`Shared::follower`); it wakes when a
//! segment closes and at least every half `archive_lag_ms` (so the archive is never more
//! than that far behind the durable log while it works), and a failed copy is retried at
//! the next wake-up.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::options::SyncPolicy;
use crate::writer::Shared;

/// Under [`SyncPolicy::Never`], the buffered bytes go to the OS at the latest after this
/// long.
const NEVER_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

impl Shared {
    /// One wake-up of the sync thread: under [`SyncPolicy::Interval`] writes and fsyncs
    /// everything appended so far, under [`SyncPolicy::Never`] hands it to the operating
    /// system; under [`SyncPolicy::Always`] every append did that already. Fails if the log
    /// is closed or poisoned, or the write or fsync fails (which poisons it).
    pub(crate) fn sync_due(&self) -> Result<()> {
        let st = self.state.lock();
        st.check_open()?;
        let fsync = match self.opts.sync {
            SyncPolicy::Interval(_) => true,
            SyncPolicy::Never => false,
            SyncPolicy::Always => return Ok(()),
        };
        let last = st.next_lsn - 1;
        let behind = if fsync {
            st.durable_lsn < last
        } else {
            st.written_lsn < last
        };
        if behind {
            self.wait_for(st, last, fsync)?;
        }
        Ok(())
    }
}

/// The background threads of one open log (none when
/// [`WalOptions::background_threads`](crate::WalOptions::background_threads) is off).
#[derive(Debug)]
pub(crate) struct Background {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Background {
    /// Starts the threads the options ask for: the sync thread under
    /// [`SyncPolicy::Interval`] and [`SyncPolicy::Never`], the archiver with an archive
    /// directory.
    pub(crate) fn start(shared: &Arc<Shared>) -> Result<Background> {
        let mut bg = Background {
            threads: Vec::new(),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
        };
        if !shared.opts.background_threads {
            return Ok(bg);
        }
        let every = match shared.opts.sync {
            SyncPolicy::Interval(every) => Some(every),
            SyncPolicy::Never => Some(NEVER_FLUSH_INTERVAL),
            SyncPolicy::Always => None,
        };
        if let Some(every) = every {
            let sh = shared.clone();
            let stop = bg.stop.clone();
            let h = std::thread::Builder::new()
                .name("duplex-wal-sync".into())
                .spawn(move || sync_loop(&sh, &stop, every))
                .map_err(|e| Error::io("spawn sync thread", &shared.dir, e))?;
            bg.threads.push(h);
        }
        if shared.opts.archive_dir.is_some() {
            let sh = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("duplex-wal-archive".into())
                .spawn(move || archive_loop(&sh));
            match spawned {
                Ok(h) => bg.threads.push(h),
                Err(e) => {
                    // The log will not open: the sync thread started above must not outlive it.
                    bg.stop(shared);
                    return Err(Error::io("spawn archive thread", &shared.dir, e));
                }
            }
        }
        Ok(bg)
    }

    /// True while threads are running.
    pub(crate) fn is_running(&self) -> bool {
        !self.threads.is_empty()
    }

    /// Stops the threads, the archiver once its queue is drained; without threads, drains
    /// the archive queue here, so that closing finishes archiving either way.
    pub(crate) fn stop(&mut self, shared: &Shared) {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock() = true;
            cv.notify_all();
        }
        {
            let mut segs = shared.segs.lock();
            segs.archiver_stopping = true;
            shared.segs_cond.notify_all();
        }
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        if !shared.opts.background_threads {
            // A failure is kept in the archive status; the copy is retried at next open.
            let _ = shared.archive_pending();
        }
    }
}

/// Every `every`, one [`Shared::sync_due`] step, until stopped or the log fails or closes.
fn sync_loop(shared: &Shared, stop: &(Mutex<bool>, Condvar), every: Duration) {
    let (lock, cv) = stop;
    loop {
        {
            let mut stopped = lock.lock();
            if *stopped {
                return;
            }
            cv.wait_for(&mut stopped, every);
            if *stopped {
                return;
            }
        }
        if shared.sync_due().is_err() {
            return;
        }
    }
}

/// How long the archiver sleeps between steps: half the allowed lag, so that a record
/// waits at most about one lag for the copy; with a synchronous archive (lag 0) commits
/// copy their own groups and the thread only retries closed segments, once a second.
fn archive_period(lag_ms: u64) -> Duration {
    match lag_ms {
        0 => Duration::from_secs(1),
        ms => Duration::from_millis((ms / 2).max(1)),
    }
}

/// One [`Shared::archive_pending`] step when a segment closes and at least every
/// [`archive_period`]; at shutdown, one last step (the archive then holds everything
/// durable), then it ends.
fn archive_loop(shared: &Shared) {
    let period = archive_period(shared.opts.archive_lag_ms);
    loop {
        let stopping = {
            let mut segs = shared.segs.lock();
            if segs.archive_queue.is_empty() && !segs.archiver_stopping {
                shared.segs_cond.wait_for(&mut segs, period);
            }
            segs.archiver_stopping
        };
        // A failure is kept in the archive status; the next wake-up retries.
        let _ = shared.archive_pending();
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::sim::{CrashMode, SimStorage};
    use crate::{Record, Storage, SyncPolicy, Wal, WalOptions};

    /// A log with no background threads: every step is the test's.
    fn stepped(sync: SyncPolicy, archive_dir: Option<&str>) -> WalOptions {
        WalOptions {
            segment_size: 8192,
            sync,
            archive_dir: archive_dir.map(PathBuf::from),
            background_threads: false,
            ..WalOptions::default()
        }
    }

    fn open(sim: &SimStorage, opts: WalOptions) -> Wal {
        Wal::open_with(Arc::new(sim.clone()), "/wal", opts).expect("open")
    }

    /// Long enough for many sync intervals and an archive copy, had a thread been there.
    fn idle() {
        std::thread::sleep(Duration::from_millis(30));
    }

    #[test]
    fn with_threads_off_an_interval_append_is_durable_only_after_the_sync_step() {
        let sim = SimStorage::new();
        let opts = stepped(SyncPolicy::Interval(Duration::from_millis(1)), None);
        let wal = open(&sim, opts.clone());
        let a = wal.append(1, b"first").expect("append");
        idle();
        assert_eq!(
            wal.written_lsn(),
            a,
            "an Interval append is handed to the OS"
        );
        assert!(wal.durable_lsn() < a, "fsynced with no sync step");
        wal.sync_due().expect("sync step");
        assert_eq!(wal.durable_lsn(), a);

        // Power lost before the next step: the record appended since is gone, the one the
        // step fsynced is not.
        let b = wal.append(1, b"second").expect("append");
        assert!(wal.durable_lsn() < b);
        sim.crash(CrashMode::LoseUnsynced);
        drop(wal);
        let wal = open(&sim, opts);
        assert_eq!(wal.last_lsn(), a);
        let recs: Vec<Record> = wal
            .read_from(1)
            .expect("reader")
            .collect::<crate::Result<_>>()
            .expect("read");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].payload, b"first");
    }

    #[test]
    fn with_threads_off_a_never_append_reaches_the_os_only_after_the_sync_step() {
        let sim = SimStorage::new();
        let wal = open(&sim, stepped(SyncPolicy::Never, None));
        let a = wal.append(1, b"buffered").expect("append");
        idle();
        assert!(wal.written_lsn() < a, "written with no sync step");
        wal.sync_due().expect("sync step");
        assert_eq!(wal.written_lsn(), a);
        assert!(
            wal.durable_lsn() < a,
            "Never fsyncs only on rotation, sync and close"
        );
    }

    #[test]
    fn with_threads_off_a_closed_segment_reaches_the_archive_only_after_the_archive_step() {
        let sim = SimStorage::new();
        let wal = open(&sim, stepped(SyncPolicy::Always, Some("/archive")));
        wal.append(1, b"to archive").expect("append");
        wal.rotate().expect("rotate").expect("a segment was closed");
        let closed = wal.segments()[0].clone();
        assert!(closed.closed && !closed.archived, "{closed:?}");
        let name = closed.path.file_name().expect("file name");
        let copy = Path::new("/archive/n1-t1").join(name);
        idle();
        assert!(!sim.exists(&copy), "archived with no archive step");

        assert_eq!(wal.archive_pending().expect("archive step"), 1);
        assert!(wal.segments()[0].archived);
        assert!(sim.exists(&copy));
        assert_eq!(
            sim.contents(&copy).expect("copy").len() as u64,
            closed.end_offset
        );
        assert_eq!(
            wal.archive_pending().expect("archive step"),
            0,
            "queue drained"
        );
        // Under Always the sync step has nothing to do.
        wal.sync_due().expect("sync step");
        wal.close().expect("close");
    }

    #[test]
    fn with_threads_off_close_still_finishes_archiving() {
        let sim = SimStorage::new();
        let wal = open(&sim, stepped(SyncPolicy::Always, Some("/archive")));
        wal.append(1, b"x").expect("append");
        wal.rotate().expect("rotate");
        let name = wal.segments()[0].path.file_name().map(ToOwned::to_owned);
        wal.close().expect("close");
        let copy = Path::new("/archive/n1-t1").join(name.expect("file name"));
        assert!(sim.exists(&copy));
    }
}
