//! The operation state table: what this server is doing (starting, running, backing-up,
//! recovering, fenced, stopping, stopped, failed) and its fencing epoch, persisted in the
//! data directory as the 44-byte checksummed `STATE` file (layout in `docs/FORMAT.md`,
//! section "duplexd STATE file"), replaced atomically on every change: write `STATE.tmp`,
//! fsync, rename over `STATE`, fsync the directory.
//!
//! Clients read the state (`DUPLEX.STATE`, allowed before AUTH) to choose a server; the
//! epoch grows whenever the server is fenced or rebuilt, so a client never writes to a
//! server older than one it has already seen.

use duplex_proto::codes;
use duplex_wal::le;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::StateDamage;
use crate::Error;

/// File name of the state file in the data directory.
pub const STATE_FILE: &str = "STATE";
/// Magic bytes opening the state file.
pub const STATE_MAGIC: [u8; 8] = *b"DPXSTATE";
/// Format version of the state file.
pub const STATE_VERSION: u32 = 1;
/// Size of the state file.
pub const STATE_LEN: usize = 44;

/// A server's operation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpState {
    /// Opening the database (WAL replay).
    Starting = 1,
    /// Serving reads and writes.
    Running = 2,
    /// Serving reads and writes while a backup runs.
    BackingUp = 3,
    /// Catching up from a backup and archive, or from a peer; writes refused.
    Recovering = 4,
    /// Writes refused by an operator or the cluster (epoch increased); reads served.
    Fenced = 5,
    /// Shutting down: finishing in-flight requests, then a checkpoint.
    Stopping = 6,
    /// Cleanly stopped.
    Stopped = 7,
    /// A write or fsync failed (disk error, disk full): writes refused until an operator
    /// restarts the server and runs DUPLEX.UNFENCE.
    Failed = 8,
}

impl OpState {
    /// The state's name as clients see it.
    pub fn name(self) -> &'static str {
        match self {
            OpState::Starting => "starting",
            OpState::Running => "running",
            OpState::BackingUp => "backing-up",
            OpState::Recovering => "recovering",
            OpState::Fenced => "fenced",
            OpState::Stopping => "stopping",
            OpState::Stopped => "stopped",
            OpState::Failed => "failed",
        }
    }

    /// The state stored as byte `b`.
    pub fn from_u8(b: u8) -> Option<OpState> {
        Some(match b {
            1 => OpState::Starting,
            2 => OpState::Running,
            3 => OpState::BackingUp,
            4 => OpState::Recovering,
            5 => OpState::Fenced,
            6 => OpState::Stopping,
            7 => OpState::Stopped,
            8 => OpState::Failed,
            _ => return None,
        })
    }

    /// Whether client writes are accepted (in-flight requests still finish while stopping).
    pub fn accepts_writes(self) -> bool {
        matches!(
            self,
            OpState::Running | OpState::BackingUp | OpState::Stopping
        )
    }

    /// Whether a change from `self` to `to` is allowed: the state table's transitions.
    ///
    /// - `starting` goes to `running`, or comes up `fenced` or `failed` (kept from the
    ///   previous run), or `failed` when the database cannot open, or `recovering` right
    ///   after a rebuild from a peer (until its write hold, [`crate::rebuild`]);
    /// - `running` and `backing-up` go to each other, `fenced`, `stopping`, `stopped` and
    ///   `failed`;
    /// - `stopping` goes to `stopped`, `fenced` and `failed`;
    /// - `fenced` goes to `fenced` (fenced again: a higher epoch), `running` or `stopping`
    ///   (DUPLEX.UNFENCE) and `failed`; never to `stopping` or `stopped` by a shutdown;
    /// - `failed` goes only to `running` or `stopping` (DUPLEX.UNFENCE after a restart);
    /// - `recovering` goes to `running`, `fenced`, `failed` and `stopped` (a clean stop
    ///   before a rebuild's write hold); `stopped` goes nowhere.
    pub fn may_move(self, to: OpState) -> bool {
        use OpState::*;
        match self {
            Starting => matches!(to, Running | Recovering | Fenced | Failed),
            Running | BackingUp => {
                matches!(
                    to,
                    Running | BackingUp | Fenced | Stopping | Stopped | Failed
                )
            }
            Stopping => matches!(to, Stopped | Fenced | Failed),
            Fenced => matches!(to, Fenced | Running | Stopping | Failed),
            Failed => matches!(to, Running | Stopping),
            Recovering => matches!(to, Running | Fenced | Failed | Stopped),
            Stopped => false,
        }
    }

    /// Whether the state outlives a stop and a restart until an operator lifts it
    /// (`fenced` and `failed`, both with DUPLEX.UNFENCE).
    pub fn sticky(self) -> bool {
        matches!(self, OpState::Fenced | OpState::Failed)
    }

    /// The error a refused write gets, opening with the code clients act on
    /// ([`codes::FENCED`], [`codes::FAILED`] or [`codes::LOADING`]).
    pub fn refusal(self) -> String {
        match self {
            OpState::Fenced => codes::line(codes::FENCED, "this server is fenced: writes are refused; use another server"),
            OpState::Failed => codes::line(codes::FAILED, "this server failed (a write or fsync error, or a full disk): writes are refused; acknowledged writes are safe; once the disk is healthy, restart it and run DUPLEX.UNFENCE"),
            s => codes::line(codes::LOADING, &format!("this server is {}: writes are refused for now", s.name())),
        }
    }
}

/// One persisted state record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRecord {
    /// The state.
    pub state: OpState,
    /// Fencing epoch, starting at 1.
    pub epoch: u64,
    /// The server's node id.
    pub node_id: u64,
    /// When the state was set, Unix milliseconds.
    pub updated_ms: u64,
}

impl StateRecord {
    /// The 44 bytes of the state file.
    pub fn encode(&self) -> [u8; STATE_LEN] {
        let mut b = [0u8; STATE_LEN];
        b[0..8].copy_from_slice(&STATE_MAGIC);
        b[8..12].copy_from_slice(&STATE_VERSION.to_le_bytes());
        b[12] = self.state as u8;
        b[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        b[24..32].copy_from_slice(&self.node_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.updated_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks the state file's bytes.
    pub fn decode(b: &[u8]) -> Result<StateRecord, StateDamage> {
        if b.len() != STATE_LEN {
            return Err(StateDamage::Length {
                len: b.len(),
                expected: STATE_LEN,
            });
        }
        if b[0..8] != STATE_MAGIC {
            return Err(StateDamage::BadMagic);
        }
        let crc = crc32c::crc32c(&b[..40]);
        let stored = le::u32_at(b, 40);
        if crc != stored {
            return Err(StateDamage::Checksum {
                stored,
                computed: crc,
            });
        }
        let v = le::u32_at(b, 8);
        if v != STATE_VERSION {
            return Err(StateDamage::Version(v));
        }
        if b[13..16] != [0, 0, 0] {
            return Err(StateDamage::Reserved);
        }
        let state = OpState::from_u8(b[12]).ok_or(StateDamage::UnknownState(b[12]))?;
        Ok(StateRecord {
            state,
            epoch: le::u64_at(b, 16),
            node_id: le::u64_at(b, 24),
            updated_ms: le::u64_at(b, 32),
        })
    }
}

use duplex_wal::now_ms;

/// Reads the state file of `dir`; `Ok(None)` if there is none.
pub fn load(dir: &Path) -> Result<Option<StateRecord>, Error> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(b) => StateRecord::decode(&b)
            .map(Some)
            .map_err(|why| Error::StateFile { path, why }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            op: "read",
            path,
            source: e,
        }),
    }
}

/// Writes the state file of `dir` atomically and durably.
pub fn store(dir: &Path, rec: &StateRecord) -> Result<(), Error> {
    let tmp = dir.join("STATE.tmp");
    let path = dir.join(STATE_FILE);
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(&rec.encode()).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))?;
    Ok(())
}

/// The live state table: the current record, persisted on every change.
///
/// Every change is a compare-and-set under one lock ([`StateTable::move_to`]): it names the
/// states it may leave, and [`OpState::may_move`] must allow the step, so a change decided
/// on an old view (a backup ending, a shutdown beginning) never overwrites one made
/// meanwhile (a FENCE, a failure). The record is persisted under the same lock, so the file
/// always holds the last change.
#[derive(Debug)]
pub struct StateTable {
    dir: PathBuf,
    cur: Mutex<StateRecord>,
}

impl StateTable {
    /// A table for data directory `dir` starting at `rec` (persisted now).
    pub fn new(dir: &Path, rec: StateRecord) -> Result<StateTable, Error> {
        store(dir, &rec)?;
        Ok(StateTable {
            dir: dir.to_path_buf(),
            cur: Mutex::new(rec),
        })
    }

    /// The current record.
    pub fn get(&self) -> StateRecord {
        *self.cur.lock()
    }

    /// Moves to `to` (raising the epoch if `bump_epoch`) if the state is one of `from` and
    /// [`OpState::may_move`] allows the step; persists and logs the change. `Ok(None)` when
    /// it did not move (the state was another). A persist failure is logged and returned;
    /// the in-memory state changes anyway (clients must see `failed` or `fenced` even when
    /// the disk cannot record it).
    pub fn move_to(
        &self,
        from: &[OpState],
        to: OpState,
        bump_epoch: bool,
    ) -> Result<Option<StateRecord>, Error> {
        let mut cur = self.cur.lock();
        let old = cur.state;
        if !from.contains(&old) || !old.may_move(to) {
            return Ok(None);
        }
        cur.state = to;
        if bump_epoch {
            cur.epoch += 1;
        }
        cur.updated_ms = now_ms();
        let rec = *cur;
        let res = store(&self.dir, &rec);
        tracing::info!(
            event = "state",
            from = old.name(),
            to = to.name(),
            epoch = rec.epoch,
            persisted = res.is_ok(),
            "state change"
        );
        if let Err(e) = &res {
            tracing::error!(event = "state_persist_failed", error = %e, "cannot persist the state file");
        }
        res.map(|()| Some(rec))
    }

    /// Moves from `from` to `to` only if the state is still `from` (e.g. backing-up back to
    /// running, unless something else happened meanwhile). Returns whether it moved; a
    /// persist failure is logged by [`StateTable::move_to`].
    pub fn transition(&self, from: OpState, to: OpState) -> bool {
        match self.move_to(&[from], to, false) {
            Ok(moved) => moved.is_some(),
            Err(_) => true,
        }
    }

    /// Raises the epoch to `epoch` (never lowers it), keeping the state; persists and logs
    /// the change. Returns the record as it is now.
    pub fn raise_epoch_to(&self, epoch: u64) -> Result<StateRecord, Error> {
        let mut cur = self.cur.lock();
        if epoch <= cur.epoch {
            return Ok(*cur);
        }
        let old = cur.epoch;
        cur.epoch = epoch;
        cur.updated_ms = now_ms();
        let rec = *cur;
        let res = store(&self.dir, &rec);
        tracing::info!(
            event = "epoch",
            from = old,
            to = epoch,
            persisted = res.is_ok(),
            "epoch raised"
        );
        res.map(|()| rec)
    }
}

/// Logs `epoch` in the WAL ([`duplex_engine::Database::log_epoch`]) so that backups and the
/// archive carry it and a restore starts above it. A failure is logged, not returned: the
/// `STATE` file already holds the epoch, so the change stands; only a restore made before
/// the next epoch change could start at this epoch instead of above it.
pub fn log_epoch(db: &duplex_engine::Database, epoch: u64) {
    if db.max_epoch() >= epoch {
        return;
    }
    match db.log_epoch(epoch) {
        Ok(lsn) => tracing::info!(
            event = "epoch_logged",
            epoch,
            lsn,
            "epoch logged in the WAL"
        ),
        Err(e) => tracing::warn!(event = "epoch_not_logged", epoch, error = %e,
            "the epoch is in the STATE file but could not be logged in the WAL: a restore from a backup or the archive taken before the next epoch change may start at this epoch instead of above it"),
    }
}

/// The epoch a server starts with, from its `STATE` file's (`None`: there is none) and the
/// highest one its WAL logged (0: none):
/// - the file's when it knows the WAL's (a normal restart; the file may be ahead of the WAL
///   if the server stopped between recording a change and logging it);
/// - above the WAL's when the file is missing or older: the directory was restored from a
///   backup and the archive, whose log saw epochs this file never did, so it starts above
///   all of them: a client that knew the server before the loss accepts it, while an old
///   copy of the directory (whose WAL stops at an older epoch) still reports an older one;
/// - 1 for a new directory.
pub fn start_epoch(file: Option<u64>, wal_max: u64) -> u64 {
    match file {
        Some(f) if f >= wal_max => f.max(1),
        _ if wal_max == 0 => 1,
        _ => wal_max + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_epochs() {
        assert_eq!(start_epoch(None, 0), 1);
        assert_eq!(start_epoch(Some(0), 0), 1);
        assert_eq!(start_epoch(Some(3), 3), 3);
        assert_eq!(start_epoch(Some(4), 3), 4);
        // Restored: no STATE file, or one older than the log.
        assert_eq!(start_epoch(None, 5), 6);
        assert_eq!(start_epoch(Some(2), 5), 6);
    }

    #[test]
    fn round_trip_and_checks() {
        let r = StateRecord {
            state: OpState::Fenced,
            epoch: 7,
            node_id: 2,
            updated_ms: 123,
        };
        let b = r.encode();
        assert_eq!(StateRecord::decode(&b).unwrap(), r);
        for i in 0..STATE_LEN {
            let mut c = b;
            c[i] ^= 1;
            assert!(StateRecord::decode(&c).is_err(), "flip in byte {i}");
        }
        assert_eq!(
            StateRecord::decode(&b[..10]),
            Err(StateDamage::Length {
                len: 10,
                expected: STATE_LEN
            })
        );
        let mut c = b;
        c[0] ^= 1;
        assert_eq!(StateRecord::decode(&c), Err(StateDamage::BadMagic));
        let mut c = b;
        c[16] ^= 1;
        assert!(matches!(
            StateRecord::decode(&c),
            Err(StateDamage::Checksum { .. })
        ));
        assert!(OpState::Fenced.refusal().starts_with("FENCED "));
        assert!(OpState::Starting.refusal().starts_with("LOADING "));
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        store(d.path(), &r).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(r));
    }

    fn table(state: OpState) -> (tempfile::TempDir, StateTable) {
        let d = tempfile::tempdir().unwrap();
        let rec = StateRecord {
            state,
            epoch: 1,
            node_id: 1,
            updated_ms: 0,
        };
        let t = StateTable::new(d.path(), rec).unwrap();
        (d, t)
    }

    #[test]
    fn a_fence_during_a_backup_is_not_overwritten() {
        use OpState::*;
        let (d, t) = table(Running);
        assert!(t.transition(Running, BackingUp));
        let r = t
            .move_to(&[Running, BackingUp, Fenced, Stopping], Fenced, true)
            .unwrap()
            .unwrap();
        assert_eq!((r.state, r.epoch), (Fenced, 2));
        // The backup ends: backing-up -> running no longer applies.
        assert!(!t.transition(BackingUp, Running));
        // A shutdown does not move a fenced server to stopping, nor to stopped.
        assert_eq!(
            t.move_to(&[Running, BackingUp], Stopping, false).unwrap(),
            None
        );
        assert_eq!(
            t.move_to(&[Running, BackingUp, Stopping], Stopped, false)
                .unwrap(),
            None
        );
        assert_eq!(t.get().state, Fenced);
        assert_eq!(load(d.path()).unwrap().unwrap().state, Fenced);
        assert_eq!(load(d.path()).unwrap().unwrap().epoch, 2);
    }

    #[test]
    fn the_transition_table() {
        use OpState::*;
        let all = [
            Starting, Running, BackingUp, Recovering, Fenced, Stopping, Stopped, Failed,
        ];
        for s in all {
            assert!(!Stopped.may_move(s), "stopped -> {s:?}");
            assert_eq!(
                Failed.may_move(s),
                matches!(s, Running | Stopping),
                "failed -> {s:?}"
            );
            assert!(!s.may_move(Starting), "{s:?} -> starting");
            assert_eq!(s.may_move(Recovering), s == Starting, "{s:?} -> recovering");
        }
        assert!(!Fenced.may_move(Stopped));
        assert!(Fenced.may_move(Stopping) && Fenced.may_move(Running));
        assert!(Stopping.may_move(Fenced));
        assert!(Fenced.sticky() && Failed.sticky() && !Stopping.sticky());
        // A move the table forbids is refused even when `from` names the state.
        let (_d, t) = table(Stopped);
        assert_eq!(t.move_to(&[Stopped], Running, false).unwrap(), None);
        assert_eq!(t.get().state, Stopped);
    }

    #[test]
    fn racing_backups_never_undo_a_fence() {
        use OpState::*;
        let (_d, t) = table(Running);
        let t = std::sync::Arc::new(t);
        let fenced = std::sync::Arc::new(std::sync::Barrier::new(3));
        let mut hs = Vec::new();
        for _ in 0..2 {
            let (t, b) = (t.clone(), fenced.clone());
            hs.push(std::thread::spawn(move || {
                for i in 0..40 {
                    if i == 20 {
                        b.wait();
                    }
                    if t.transition(Running, BackingUp) {
                        t.transition(BackingUp, Running);
                    }
                }
            }));
        }
        fenced.wait();
        t.move_to(&[Running, BackingUp, Fenced], Fenced, true)
            .unwrap()
            .unwrap();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(t.get().state, Fenced);
        assert_eq!(t.get().epoch, 2);
    }
}
