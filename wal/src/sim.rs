//! A simulated file system for deterministic crash and power-loss tests.
//!
//! Fault model (what a real disk and kernel may do, and what this simulation does):
//! - Every file keeps two images: *live* (what reads see now) and *durable* (what survives a
//!   crash). `sync_data` copies live to durable.
//! - Names are durable only after `sync_dir` on the parent: a file created or renamed since
//!   the last `sync_dir` vanishes (or reverts) on crash.
//! - [`SimStorage::crash`] throws away everything not durable. With [`CrashMode::Torn`] each
//!   file instead keeps a seeded random prefix of its unsynced writes, in order, the last of
//!   them cut at a random byte: a torn write.
//! - [`SimStorage::fail_sync_after`] makes a chosen future fsync fail (and nothing become
//!   durable); [`SimStorage::fail_write_after`] does the same for writes;
//!   [`SimStorage::power_off_after`] makes every operation after the n-th fail, as if the
//!   machine had lost power at that point (call `crash` afterwards).
//! - Running out of resources, as a real kernel reports it (a raw `errno`, so callers
//!   classify it as they would a real one): [`SimStorage::fail_op`] makes operations of one
//!   kind ([`SimOp`]) fail with [`Exhaustion`] (`ENOSPC`, `EMFILE`, ...) from the n-th on
//!   (or only the n-th, [`SimStorage::fail_op_once`]); [`SimStorage::set_free_space`] gives
//!   the file system a capacity (writes, length changes and preallocations that would grow
//!   past it fail with `ENOSPC`, a preallocation after extending as far as it could, as
//!   ext4's `fallocate` does), reported by [`Storage::available_space`];
//!   [`SimStorage::set_max_open_files`] limits open handles (opens, listings, directory
//!   fsyncs and locks past it fail with `EMFILE`). [`SimStorage::give_back`] lifts all of
//!   them: space and descriptors are back.
//!
//! Not modelled: writes reaching the disk out of order within one file, bit rot on read
//! (tests corrupt bytes directly with [`SimStorage::corrupt`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{LockGuard, OpenMode, Storage, StorageFile};

mod faults;

use faults::OpFault;
pub use faults::{Exhaustion, SimOp};

/// What a crash keeps of unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Keep exactly what was synced.
    LoseUnsynced,
    /// Keep a random prefix of each file's unsynced writes, the last one torn at a random
    /// byte; the seed makes it repeatable.
    Torn {
        /// Seed for the random choices.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct FileData {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes and length changes since the last sync, in order.
    pending: Vec<PendingOp>,
}

#[derive(Debug)]
enum PendingOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

type Node = Arc<Mutex<FileData>>;

#[derive(Debug, Default)]
struct State {
    live: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    dirs: BTreeSet<PathBuf>,
    ops: u64,
    fail_sync_at: Option<u64>,
    syncs: u64,
    fail_write_at: Option<u64>,
    writes: u64,
    power_off_at: Option<u64>,
    locks: BTreeMap<PathBuf, u64>,
    lock_tokens: u64,
    faults: Vec<OpFault>,
    /// Total bytes the files may hold (sum of live lengths); `None`: unlimited.
    capacity: Option<u64>,
    /// Open handles (files and locks), and the most allowed; `None`: unlimited.
    open_files: u64,
    max_open_files: Option<u64>,
}

/// An in-memory file system with crash simulation. Cheap to clone: clones share state.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct SimFile {
    node: Node,
    state: Arc<Mutex<State>>,
    writable: bool,
    /// The name it was opened under (for faults injected under a path).
    path: PathBuf,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("simulated {what} failure"))
}

impl State {
    /// Counts one operation; fails if the simulated power is off.
    fn tick(&mut self) -> io::Result<()> {
        self.ops += 1;
        match self.power_off_at {
            Some(n) if self.ops > n => Err(injected("power")),
            _ => Ok(()),
        }
    }

    /// [`State::tick`], then the exhaustion injected for operations of kind `op`, if its
    /// turn has come.
    fn enter(&mut self, op: SimOp, path: &Path) -> io::Result<()> {
        self.tick()?;
        let mut failed = None;
        self.faults.retain_mut(|f| {
            let applies = f.op == op && f.under.as_ref().is_none_or(|u| path.starts_with(u));
            if !applies || failed.is_some() {
                return true;
            }
            if f.countdown > 1 {
                f.countdown -= 1;
                return true;
            }
            failed = Some(f.error);
            f.persistent
        });
        match failed {
            Some(e) => Err(e.to_io_error()),
            None => Ok(()),
        }
    }

    /// Fails with `EMFILE` when an operation that needs a descriptor finds none left.
    fn need_descriptor(&self) -> io::Result<()> {
        match self.max_open_files {
            Some(max) if self.open_files >= max => Err(Exhaustion::NoDescriptors.to_io_error()),
            _ => Ok(()),
        }
    }

    /// Bytes held by the live files (each file once, however many names it has).
    fn used_bytes(&self) -> u64 {
        let mut seen = BTreeSet::new();
        self.live
            .values()
            .filter(|n| seen.insert(Arc::as_ptr(n)))
            .map(|n| n.lock().live.len() as u64)
            .sum()
    }

    /// Bytes still free, `None` when the capacity is unlimited.
    fn free_bytes(&self) -> Option<u64> {
        self.capacity.map(|c| c.saturating_sub(self.used_bytes()))
    }
}

impl SimStorage {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `n`-th fsync from now (1 = the next) fail.
    pub fn fail_sync_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.fail_sync_at = Some(s.syncs + n);
    }

    /// Makes the `n`-th write from now (1 = the next) fail without writing anything.
    pub fn fail_write_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.fail_write_at = Some(s.writes + n);
    }

    /// Every operation after `n` more operations fails, as if power were lost there.
    pub fn power_off_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.power_off_at = Some(s.ops + n);
    }

    /// Makes operations of kind `op` fail with `error` from the `n`-th one from now (1 = the
    /// next) on, until [`SimStorage::give_back`].
    pub fn fail_op(&self, op: SimOp, error: Exhaustion, n: u64) {
        self.push_fault(op, None, error, n, true);
    }

    /// Makes only the `n`-th operation of kind `op` from now (1 = the next) fail with
    /// `error`.
    pub fn fail_op_once(&self, op: SimOp, error: Exhaustion, n: u64) {
        self.push_fault(op, None, error, n, false);
    }

    /// [`SimStorage::fail_op`] for operations on paths under `under` only (a file, or a
    /// directory and everything in it: one disk of several).
    pub fn fail_op_under(&self, under: &Path, op: SimOp, error: Exhaustion, n: u64) {
        self.push_fault(op, Some(under.to_path_buf()), error, n, true);
    }

    fn push_fault(
        &self,
        op: SimOp,
        under: Option<PathBuf>,
        error: Exhaustion,
        n: u64,
        persistent: bool,
    ) {
        self.state.lock().faults.push(OpFault {
            op,
            under,
            error,
            countdown: n.max(1),
            persistent,
        });
    }

    /// Leaves `bytes` free on the simulated file system from now on (`None`: unlimited, the
    /// default): growing files past it fails with `ENOSPC`, and
    /// [`Storage::available_space`] reports what is left.
    pub fn set_free_space(&self, bytes: Option<u64>) {
        let mut s = self.state.lock();
        s.capacity = bytes.map(|b| s.used_bytes().saturating_add(b));
    }

    /// Allows at most `n` open handles (files and locks) from now on (`None`: unlimited, the
    /// default); opening past it fails with `EMFILE`.
    pub fn set_max_open_files(&self, n: Option<u64>) {
        self.state.lock().max_open_files = n;
    }

    /// Handles open now (files and locks).
    pub fn open_files(&self) -> u64 {
        self.state.lock().open_files
    }

    /// Space and descriptors are back: lifts every injected exhaustion, the capacity and the
    /// descriptor limit.
    pub fn give_back(&self) {
        let mut s = self.state.lock();
        s.faults.clear();
        s.capacity = None;
        s.max_open_files = None;
    }

    /// Names of the live entries of `dir` (for tests).
    pub fn list_names(&self, dir: &Path) -> Vec<String> {
        let s = self.state.lock();
        s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect()
    }

    /// Number of storage operations performed so far.
    pub fn op_count(&self) -> u64 {
        self.state.lock().ops
    }

    /// Simulates a crash: everything not durable is lost (or torn, per `mode`), faults are
    /// cleared and power is back on. Handles opened before the crash must not be used.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.state.lock();
        let mut rng = match mode {
            CrashMode::LoseUnsynced => None,
            CrashMode::Torn { seed } => Some(SplitMix(seed)),
        };
        // Fresh nodes so that stale handles cannot touch the new world.
        let mut fresh: BTreeMap<*const Mutex<FileData>, Node> = BTreeMap::new();
        let mut new_live = BTreeMap::new();
        for (path, node) in s.durable.iter() {
            let key = Arc::as_ptr(node);
            let n = fresh
                .entry(key)
                .or_insert_with(|| {
                    let d = node.lock();
                    let mut bytes = d.durable.clone();
                    if let Some(rng) = rng.as_mut() {
                        apply_torn_prefix(&mut bytes, &d.pending, rng);
                    }
                    Arc::new(Mutex::new(FileData {
                        live: bytes.clone(),
                        durable: bytes,
                        pending: Vec::new(),
                    }))
                })
                .clone();
            new_live.insert(path.clone(), n);
        }
        s.durable = new_live.clone();
        s.live = new_live;
        s.fail_sync_at = None;
        s.fail_write_at = None;
        s.power_off_at = None;
        s.locks.clear();
    }

    /// Flips bits: XORs `mask` into the byte at `offset` of `path`, in both images.
    pub fn corrupt(&self, path: &Path, offset: u64, mask: u8) -> io::Result<()> {
        let s = self.state.lock();
        let node = s
            .live
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let mut d = node.lock();
        let i = usize::try_from(offset).map_err(|_| io::Error::other("offset"))?;
        if i >= d.live.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "beyond end"));
        }
        d.live[i] ^= mask;
        if i < d.durable.len() {
            d.durable[i] ^= mask;
        }
        Ok(())
    }

    /// The live contents of a file (for tests).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.live.get(path).map(|n| n.lock().live.clone())
    }

    /// Truncates a file's live and durable images to `len` (for tests).
    pub fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let s = self.state.lock();
        let node = s
            .live
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let mut d = node.lock();
        let n = usize::try_from(len).map_err(|_| io::Error::other("len"))?;
        d.live.truncate(n);
        d.durable.truncate(n);
        Ok(())
    }
}

/// Applies a random prefix of `pending` onto `bytes`, tearing the last applied write.
fn apply_torn_prefix(bytes: &mut Vec<u8>, pending: &[PendingOp], rng: &mut SplitMix) {
    if pending.is_empty() {
        return;
    }
    let keep = (rng.next() % (pending.len() as u64 + 1)) as usize;
    for (i, op) in pending.iter().take(keep).enumerate() {
        match op {
            PendingOp::SetLen(len) => bytes.resize(*len as usize, 0),
            PendingOp::Write(off, data) => {
                let take = if i + 1 == keep {
                    (rng.next() % (data.len() as u64 + 1)) as usize
                } else {
                    data.len()
                };
                write_into(bytes, *off, &data[..take]);
            }
        }
    }
}

fn write_into(bytes: &mut Vec<u8>, off: u64, data: &[u8]) {
    let off = off as usize;
    if bytes.len() < off + data.len() {
        bytes.resize(off + data.len(), 0);
    }
    bytes[off..off + data.len()].copy_from_slice(data);
}

/// A tiny deterministic generator, so the simulation needs no RNG dependency.
#[derive(Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut s = self.state.lock();
        s.enter(
            match mode {
                OpenMode::Read | OpenMode::ReadWrite => SimOp::Open,
                OpenMode::CreateNew | OpenMode::CreateTruncate => SimOp::Create,
            },
            path,
        )?;
        s.need_descriptor()?;
        let existing = s.live.get(path).cloned();
        let node = match (mode, existing) {
            (OpenMode::Read | OpenMode::ReadWrite, Some(n)) => n,
            (OpenMode::Read | OpenMode::ReadWrite, None) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"))
            }
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"))
            }
            (OpenMode::CreateTruncate, Some(n)) => {
                {
                    let mut d = n.lock();
                    d.live.clear();
                    d.pending.push(PendingOp::SetLen(0));
                }
                n
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                if !s.dirs.contains(&parent(path)) {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
                }
                let n: Node = Arc::default();
                s.live.insert(path.to_path_buf(), n.clone());
                n
            }
        };
        s.open_files += 1;
        Ok(Box::new(SimFile {
            node,
            state: self.state.clone(),
            writable: mode != OpenMode::Read,
            path: path.to_path_buf(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.state.lock();
        s.enter(SimOp::List, dir)?;
        s.need_descriptor()?;
        if !s.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let mut out = Vec::new();
        for p in s.live.keys() {
            if p.parent() == Some(dir) {
                if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    out.push(name.to_owned());
                }
            }
        }
        for d in s.dirs.iter() {
            if d.parent() == Some(dir) {
                if let Some(name) = d.file_name().and_then(|n| n.to_str()) {
                    out.push(name.to_owned());
                }
            }
        }
        Ok(out)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(SimOp::CreateDir, dir)?;
        // Directories are durable at once: the crash tests are about files.
        for a in dir.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(SimOp::Remove, path)?;
        s.live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(SimOp::Remove, dir)?;
        if s.live.keys().any(|p| p.starts_with(dir))
            || s.dirs.iter().any(|d| d.parent() == Some(dir))
        {
            return Err(io::Error::other("directory not empty"));
        }
        if !s.dirs.remove(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(SimOp::Rename, from)?;
        if s.dirs.contains(from) {
            // A directory moves with everything in it. Simplification: the move is durable
            // at once (the tests use it only for complete, fsynced directories).
            if s.dirs.contains(to) || s.live.contains_key(to) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "target exists",
                ));
            }
            let moved = |p: &Path| -> Option<PathBuf> {
                p.strip_prefix(from).ok().map(|rest| to.join(rest))
            };
            s.dirs = s
                .dirs
                .iter()
                .map(|d| moved(d).unwrap_or_else(|| d.clone()))
                .collect();
            let st = &mut *s;
            for map in [&mut st.live, &mut st.durable] {
                let old = std::mem::take(map);
                *map = old
                    .into_iter()
                    .map(|(p, n)| (moved(&p).unwrap_or(p), n))
                    .collect();
            }
            return Ok(());
        }
        let node = s
            .live
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        s.live.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(SimOp::SyncDir, dir)?;
        s.need_descriptor()?;
        s.syncs += 1;
        if s.fail_sync_at == Some(s.syncs) {
            return Err(injected("fsync"));
        }
        let dir = dir.to_path_buf();
        s.durable.retain(|p, _| p.parent() != Some(dir.as_path()));
        let children: Vec<(PathBuf, Node)> = s
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir.as_path()))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        s.durable.extend(children);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.live.contains_key(path) || s.dirs.contains(path)
    }

    fn available_space(&self, _path: &Path) -> io::Result<Option<u64>> {
        let mut s = self.state.lock();
        s.tick()?;
        Ok(s.free_bytes())
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut s = self.state.lock();
        s.enter(SimOp::Lock, path)?;
        s.need_descriptor()?;
        if s.locks.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "locked"));
        }
        s.lock_tokens += 1;
        let token = s.lock_tokens;
        s.locks.insert(path.to_path_buf(), token);
        s.open_files += 1;
        Ok(LockGuard::new(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            token,
        })))
    }
}

/// Releases a simulated lock on drop (a crash releases it too: the process is gone).
#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    token: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        s.open_files = s.open_files.saturating_sub(1);
        // A lock taken after a crash belongs to someone else: leave it.
        if s.locks.get(&self.path) == Some(&self.token) {
            s.locks.remove(&self.path);
        }
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.state.lock().tick()?;
        let d = self.node.lock();
        let len = d.live.len() as u64;
        if offset >= len {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(d.live.len() - start);
        buf[..n].copy_from_slice(&d.live[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        {
            let mut s = self.state.lock();
            s.enter(SimOp::Write, &self.path)?;
            s.writes += 1;
            if s.fail_write_at == Some(s.writes) {
                return Err(injected("write"));
            }
            self.check_growth(&s, offset + buf.len() as u64)?;
        }
        if !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"));
        }
        let mut d = self.node.lock();
        write_into(&mut d.live, offset, buf);
        d.pending.push(PendingOp::Write(offset, buf.to_vec()));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let mut s = self.state.lock();
            s.enter(SimOp::SyncFile, &self.path)?;
            s.syncs += 1;
            if s.fail_sync_at == Some(s.syncs) {
                return Err(injected("fsync"));
            }
        }
        let mut d = self.node.lock();
        let FileData {
            durable, pending, ..
        } = &mut *d;
        for op in pending.drain(..) {
            match op {
                PendingOp::Write(off, data) => write_into(durable, off, &data),
                PendingOp::SetLen(len) => durable.resize(len as usize, 0),
            }
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.state.lock().tick()?;
        Ok(self.node.lock().live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        {
            let mut s = self.state.lock();
            s.enter(SimOp::SetLen, &self.path)?;
            self.check_growth(&s, len)?;
        }
        self.resize(len);
        Ok(())
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        let partial = {
            let mut s = self.state.lock();
            s.enter(SimOp::Preallocate, &self.path)?;
            let have = self.node.lock().live.len() as u64;
            match s.free_bytes() {
                Some(free) if len > have && len - have > free => Some(have + free),
                _ => None,
            }
        };
        match partial {
            // Like ext4's fallocate: what could be allocated stays, then ENOSPC.
            Some(reached) => {
                self.resize(reached);
                Err(Exhaustion::NoSpace.to_io_error())
            }
            None => {
                if (self.node.lock().live.len() as u64) < len {
                    self.resize(len);
                }
                Ok(())
            }
        }
    }
}

impl SimFile {
    /// Fails with `ENOSPC` if growing this file to `end` bytes needs more than is free.
    fn check_growth(&self, s: &State, end: u64) -> io::Result<()> {
        let Some(free) = s.free_bytes() else {
            return Ok(());
        };
        let have = self.node.lock().live.len() as u64;
        if end > have && end - have > free {
            return Err(Exhaustion::NoSpace.to_io_error());
        }
        Ok(())
    }

    fn resize(&self, len: u64) {
        let mut d = self.node.lock();
        d.live.resize(len as usize, 0);
        d.pending.push(PendingOp::SetLen(len));
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        s.open_files = s.open_files.saturating_sub(1);
    }
}
