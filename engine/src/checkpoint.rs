//! Checkpoints and when to take them.
//!
//! A checkpoint freezes the active memtable (the `gate` lock makes sure every WAL record up
//! to the frozen LSN has been applied), merges it into the tree by appending blocks and a
//! checkpoint record, fsyncs, switches the manifest, then drops WAL segments below the
//! checkpoint. Writers keep going into a new active memtable meanwhile.
//!
//! One maintenance step ([`Inner::run_maintenance`], public as
//! [`Database::run_maintenance`](crate::Database::run_maintenance)) checkpoints when
//! `checkpoint_wal_bytes` were logged since the last one, or when `checkpoint_interval`
//! passed by the configured clock and anything was logged. The background thread (unless
//! `Config::background` is off) runs that step at every wake-up: every 200 ms, or as soon
//! as a writer has logged enough. With the thread off nothing runs unless the caller steps
//! it, so a test can drive the engine on simulated time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::db::Inner;
use crate::error::Result;
use crate::memtable::MemTable;
use crate::store::{write_checkpoint, CheckpointJob, StoreDir};
use crate::tree::{TreeView, Update};

/// How long the background thread sleeps between looks when nobody wakes it.
const WAKE_EVERY: Duration = Duration::from_millis(200);
/// The background thread's first wait before retrying a maintenance step that failed
/// without poisoning (space or descriptors ran out), and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// When the next checkpoint is due, and the background thread's stop and wake flags.
#[derive(Debug)]
pub(crate) struct Schedule {
    state: Mutex<ScheduleState>,
    cond: Condvar,
}

#[derive(Debug)]
struct ScheduleState {
    stop: bool,
    wake: bool,
    /// Clock time (ms) of the last checkpoint a maintenance step took, or of the open.
    last_ms: u64,
}

impl Schedule {
    /// A schedule whose interval starts at `now_ms`.
    pub(crate) fn new(now_ms: u64) -> Self {
        Schedule {
            state: Mutex::new(ScheduleState {
                stop: false,
                wake: false,
                last_ms: now_ms,
            }),
            cond: Condvar::new(),
        }
    }

    /// Wakes the background thread now (enough was logged).
    pub(crate) fn wake(&self) {
        let mut st = self.state.lock();
        st.wake = true;
        self.cond.notify_all();
    }

    /// Tells the background thread to stop at its next look.
    pub(crate) fn stop(&self) {
        let mut st = self.state.lock();
        st.stop = true;
        self.cond.notify_all();
    }

    /// Sleeps until woken or [`WAKE_EVERY`] passed; false once told to stop.
    fn wait(&self) -> bool {
        let mut st = self.state.lock();
        if st.stop {
            return false;
        }
        if !st.wake {
            self.cond.wait_for(&mut st, WAKE_EVERY);
        }
        st.wake = false;
        !st.stop
    }

    /// True when `interval` has passed since the last scheduled checkpoint at `now_ms`. A
    /// clock that stepped back restarts the interval, so a step back delays the next
    /// time-based checkpoint by at most one interval.
    fn interval_passed(&self, interval: Option<Duration>, now_ms: u64) -> bool {
        let mut st = self.state.lock();
        if now_ms < st.last_ms {
            st.last_ms = now_ms;
        }
        let due_ms = interval.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        due_ms.is_some_and(|d| now_ms - st.last_ms >= d)
    }

    /// Starts the interval again at `now_ms`.
    pub(crate) fn restart(&self, now_ms: u64) {
        self.state.lock().last_ms = now_ms;
    }
}

impl Inner {
    /// The background thread's loop: one maintenance step per wake-up, until told to stop
    /// or the database or its log is poisoned (writers report why). A checkpoint refused
    /// for want of space or descriptors is retried after a pause (1 s, doubling to 30 s).
    pub(crate) fn background(&self) {
        // After a refusal for want of space or descriptors, the next attempt waits (a
        // second, doubling up to half a minute) rather than rewrite a partial tree at every
        // wake-up.
        let mut backoff = RETRY_FIRST;
        let mut retry_at: Option<Instant> = None;
        while self.schedule.wait() {
            if retry_at.is_none_or(|t| Instant::now() >= t) {
                match self.run_maintenance() {
                    Ok(_) => {
                        retry_at = None;
                        backoff = RETRY_FIRST;
                    }
                    Err(_) if self.poisoned.lock().is_some() || self.wal.is_poisoned() => return,
                    Err(_) => {
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
            let tree = self.mem.read().tree.clone();
            self.scrub.tick(&tree);
        }
    }

    /// One maintenance step: checkpoints if enough was logged or the interval passed (see
    /// the module docs). Returns whether it took a checkpoint. A failure to archive is
    /// reported (`Inner::maintenance_error`), never returned: the archive never stops the
    /// local database.
    pub(crate) fn run_maintenance(&self) -> Result<bool> {
        let res = self.maintenance_step();
        match &res {
            Ok(true) => *self.maintenance_error.lock() = None,
            Ok(false) => {}
            Err(e) => *self.maintenance_error.lock() = Some(e.to_string()),
        }
        res
    }

    fn maintenance_step(&self) -> Result<bool> {
        if !self.cfg.background {
            // The log's own threads are off too: one wake-up of each, first.
            self.wal.sync_due()?;
            if let Err(e) = self.wal.archive_pending() {
                *self.maintenance_error.lock() = Some(format!("archiving failed: {e}"));
            }
            let tree = self.mem.read().tree.clone();
            self.scrub.step(&tree, crate::scrub::STEP_PERIOD);
        }
        let now_ms = self.cfg.clock.now_ms();
        let logged = self.wal_bytes.load(Ordering::Relaxed);
        let due_bytes = logged >= self.cfg.checkpoint_wal_bytes;
        let due_time = self
            .schedule
            .interval_passed(self.cfg.checkpoint_interval, now_ms)
            && logged > 0;
        if !(due_bytes || due_time) {
            return Ok(false);
        }
        self.schedule.restart(now_ms);
        self.checkpoint(false)?;
        Ok(true)
    }

    /// Takes a checkpoint now: freezes the active memtable and merges it into the tree
    /// (compacting if forced or due). Nothing to merge and nothing logged: no checkpoint.
    pub(crate) fn checkpoint(&self, force_compact: bool) -> Result<()> {
        let _one = self.ckpt_lock.lock();
        self.check_poisoned()?;
        let (frozen, appended, tree, origins) = {
            let _g = self.gate.write();
            let mut m = self.mem.write();
            let f = std::mem::replace(&mut m.active, Arc::new(MemTable::new()));
            m.frozen = Some(f.clone());
            // The marks of exactly the remote batches applied up to `appended`: remote
            // applies hold the gate from their append to their mark's advance.
            (f, self.wal.last_lsn(), m.tree.clone(), self.repl.hwms())
        };
        let logged = self.wal_bytes.swap(0, Ordering::Relaxed);
        let lsn = self.durable_bound(appended).max(tree.ckpt.lsn);
        if frozen.is_empty() && lsn == tree.ckpt.lsn && !force_compact {
            self.mem.write().frozen = None;
            return Ok(());
        }
        let newest = frozen.newest();
        let mut updates: Vec<Update<'_>> = newest
            .iter()
            .map(|(k, v)| (k.as_slice(), v.stamp, v.value.as_deref()))
            .collect();
        if crate::testing::mutated(crate::testing::Mutation::DropTombstones) {
            updates.retain(|u| u.2.is_some());
        }
        // A fact about the log whatever becomes of this checkpoint: the batches of each
        // origin after these marks were logged after `appended`.
        self.repl.anchor(appended, origins.clone());
        let origins = if crate::testing::mutated(crate::testing::Mutation::ForgetMarks) {
            Vec::new()
        } else {
            origins
        };
        let res = self.write_tree(&tree, &updates, lsn, force_compact, origins);
        if res.is_err() && self.poisoned.lock().is_none() {
            // Not poisoned (space or descriptors ran out): the next checkpoint retries.
            self.thaw(&frozen);
            self.wal_bytes.fetch_add(logged, Ordering::Relaxed);
        }
        res
    }

    /// The LSN a checkpoint of everything applied up to `appended` may record: never past
    /// the WAL's durable end, so that a restart finds the log reaching the checkpoint.
    /// Every applied write had its WAL append succeed (a failed append is never applied),
    /// so a checkpoint at the durable end holds every write up to it (and perhaps later
    /// acknowledged ones, which the replay applies again harmlessly: last writer wins).
    fn durable_bound(&self, appended: u64) -> u64 {
        match self.wal.sync() {
            Ok(_) => appended,
            Err(_) => self.wal.durable_lsn().min(appended),
        }
    }

    /// Puts a frozen memtable's versions back into the active one after a checkpoint that
    /// failed without poisoning. A key the active table holds already has a version that won
    /// over the frozen one when it was applied; the others are put back visible to every
    /// snapshot (sequence 0).
    fn thaw(&self, frozen: &Arc<MemTable>) {
        let _g = self.gate.write();
        let mut m = self.mem.write();
        for (k, v) in frozen.newest() {
            if m.active.latest_stamp(&k).is_none() {
                m.active.insert(k, 0, v);
            }
        }
        m.frozen = None;
    }

    /// Merges `updates` (sorted, one version per key) into `tree` as a checkpoint at `lsn`
    /// (compacting into a new generation if forced or due), installs the new tree, drops
    /// the frozen memtable and releases WAL segments below the checkpoint. A failure
    /// poisons the database, unless disk space or descriptors ran out: then
    /// [`write_checkpoint`] cut the store back and left the manifest as it was.
    pub(crate) fn write_tree(
        &self,
        tree: &Arc<TreeView>,
        updates: &[Update<'_>],
        lsn: u64,
        force_compact: bool,
        origins: Vec<(u64, u64)>,
    ) -> Result<()> {
        let compact = force_compact || self.should_compact(tree);
        let at = StoreDir {
            storage: &self.storage,
            dir: &self.dir,
            node_id: self.cfg.node_id,
            clock: &*self.cfg.clock,
        };
        let job = CheckpointJob {
            tree,
            updates,
            lsn,
            max_ts: self.hlc.last().0,
            max_epoch: self.max_epoch.load(Ordering::Acquire),
            origins,
            new_generation: compact,
        };
        let view = match write_checkpoint(&at, &job) {
            Ok(v) => v,
            Err(e) if e.is_resource() => {
                // Cut back, manifest unchanged, nothing acknowledged at risk (the WAL holds
                // it): not poisoned, retried later.
                return Err(e);
            }
            Err(e) => {
                // The store may hold a half-written checkpoint and its fsync state is
                // unknown: stop writes. Reads keep working from the frozen memtable.
                *self.poisoned.lock() = Some(format!("checkpoint failed: {e}"));
                return Err(e);
            }
        };
        {
            let mut m = self.mem.write();
            m.tree = Arc::new(view);
            m.frozen = None;
        }
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        if compact {
            self.compactions.fetch_add(1, Ordering::Relaxed);
            tree.file.retire();
        }
        self.wal
            .remove_segments_below(self.release_below(lsn + 1))?;
        Ok(())
    }

    /// Where a checkpoint at `below - 1` may release the WAL: below it, unless a peer
    /// still needs records after its floor (this node's batches it has not acknowledged,
    /// or another origin's batches after the least mark a peer other than that origin
    /// holds: `Database::set_forward_floors`) and keeping them costs at most
    /// `peer_wal_retention_bytes`. Past the bound, the own floor alone if it fits.
    fn release_below(&self, below: u64) -> u64 {
        let own = (*self.repl.peer_floor.lock()).map(|f| f + 1);
        let others = self.repl.keep_for_peers_from();
        let kept_bytes = |keep_from: u64| -> u64 {
            self.wal
                .segments()
                .iter()
                .filter(|s| {
                    s.last_lsn
                        .is_some_and(|l| l >= keep_from && s.first_lsn < below)
                })
                .map(|s| s.end_offset)
                .sum()
        };
        let mut released = below;
        for keep_from in [own.into_iter().chain(others).min(), own]
            .into_iter()
            .flatten()
        {
            if keep_from >= below {
                break;
            }
            if kept_bytes(keep_from) <= self.cfg.peer_wal_retention_bytes {
                released = keep_from;
                break;
            }
            self.repl.floor_dropped.store(true, Ordering::Relaxed);
        }
        if let Some(first) = self
            .wal
            .segments()
            .iter()
            .find(|s| s.last_lsn.is_some_and(|l| l >= released))
        {
            self.repl.forget_anchors_below(first.first_lsn);
        }
        released
    }

    fn should_compact(&self, tree: &TreeView) -> bool {
        let size = tree.committed;
        size >= self.cfg.compaction_min_bytes
            && (tree.ckpt.live_bytes as f64) < size as f64 * (1.0 - self.cfg.compaction_dead_ratio)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use duplex_wal::sim::SimStorage;
    use duplex_wal::ManualClock;

    use crate::{Config, Database, Timestamp};

    /// A database without the background thread, on a manual clock: 1 KiB logged or a
    /// minute passed makes a checkpoint due.
    fn stepped(clock: &Arc<ManualClock>) -> Database {
        let cfg = Config {
            background: false,
            checkpoint_wal_bytes: 1024,
            checkpoint_interval: Some(Duration::from_secs(60)),
            clock: clock.clone(),
            ..Config::default()
        };
        Database::open_with(Arc::new(SimStorage::new()), "/db", cfg).expect("open")
    }

    /// With the thread off, nothing checkpoints however much is logged or however long it
    /// waits, until a maintenance step runs; the step checkpoints only when one is due.
    #[test]
    fn without_the_thread_checkpoints_happen_only_when_stepped() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let db = stepped(&clock);
        assert!(!db.run_maintenance().expect("step"), "nothing is due yet");
        for i in 0..64u32 {
            db.put(format!("key{i}").as_bytes(), &[7u8; 64])
                .expect("put");
        }
        assert!(db.stats().wal_bytes_since_checkpoint >= 1024);
        // Longer than the thread's wake-up period: a hidden thread would have checkpointed.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(db.stats().checkpoints, 0);
        assert!(db.run_maintenance().expect("step"), "1 KiB logged: due");
        assert_eq!(db.stats().checkpoints, 1);
        assert_eq!(db.stats().checkpoint_lsn, db.stats().last_lsn);

        // Below the byte threshold, the interval decides, by the manual clock.
        db.put(b"small", b"v").expect("put");
        assert!(!db.run_maintenance().expect("step"));
        clock.advance(59_999);
        assert!(!db.run_maintenance().expect("step"));
        clock.advance(1);
        assert!(db.run_maintenance().expect("step"), "a minute passed");
        assert_eq!(db.stats().checkpoints, 2);
        // Nothing logged since: time alone does not checkpoint.
        clock.advance(120_000);
        assert!(!db.run_maintenance().expect("step"));
        assert_eq!(db.stats().checkpoints, 2);
    }

    /// A clock stepping back restarts the interval instead of stalling checkpoints until
    /// it catches up.
    #[test]
    fn a_clock_stepping_back_restarts_the_interval() {
        let clock = Arc::new(ManualClock::new(10_000_000));
        let db = stepped(&clock);
        db.put(b"k", b"v").expect("put");
        clock.set(5_000_000);
        assert!(!db.run_maintenance().expect("step"));
        clock.advance(60_000);
        assert!(db.run_maintenance().expect("step"));
    }

    /// Writes are stamped with the configured clock's time.
    #[test]
    fn writes_are_stamped_by_the_configured_clock() {
        let clock = Arc::new(ManualClock::new(1_234_567));
        let db = stepped(&clock);
        db.put(b"a", b"1").expect("put");
        let v = db.version(b"a").expect("version").expect("present");
        assert_eq!(v.stamp.ts, Timestamp::from_parts(1_234_567, 0));
        clock.advance(10);
        db.put(b"b", b"2").expect("put");
        let v = db.version(b"b").expect("version").expect("present");
        assert_eq!(v.stamp.ts, Timestamp::from_parts(1_234_577, 0));
    }
}
