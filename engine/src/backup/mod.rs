//! Online backup by file copy, incremental backups, verification and restore.
//!
//! A backup is a directory holding the committed bytes of the store file (or, for an
//! incremental backup, only the bytes appended since its base), the engine manifest naming
//! the checkpoint, the WAL segments from that checkpoint to the LSN at which the copy
//! ended (module `backup_wal`), and a `BACKUP` manifest listing every file with its length and CRC32C
//! and that end LSN. Because bytes of the store below its committed length never change,
//! copying them while writers go on yields a consistent image without stopping anyone; the
//! WAL copied after it makes the backup restorable on its own.
//!
//! Invariant: a backup directory appears under its final name only when whole (written as
//! `<name>.tmp`, every file and the directory fsynced, then renamed and the parent
//! fsynced); a backup that fails removes its `.tmp`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use duplex_wal::{OpenMode, Storage, StorageFile};

use crate::backup_wal::{copy_wal, WalSource};
use crate::error::{CorruptKind, Error, Result};
use crate::format::{store_file_name, Manifest};
use crate::ratelimit::RateLimit;
use crate::store::MANIFEST_NAME;
use crate::tree::TreeView;
use duplex_wal::le::{u32_at, Cursor};

mod chain;
mod pace;
pub(crate) use chain::staged_timeline;
pub use chain::{
    apply_retention, apply_retention_for_peers, restore_chain, verify_backup_wal, PeerFloor,
    RetentionReport,
};
pub(crate) use pace::{wal_dir_activity, Activity};

/// Name of the backup manifest inside a backup directory.
pub const BACKUP_MANIFEST: &str = "BACKUP";
const BACKUP_MAGIC: [u8; 8] = *b"DPLXBKUP";
/// Version written: 2 adds `end_lsn` and the WAL segment files, 3 the timeline of the log
/// the backup was taken from. Versions 1 and 2 still read (a version 1 manifest's end LSN
/// is its checkpoint LSN; both are of timeline 1, the only one before restores started
/// new ones).
pub(crate) const BACKUP_VERSION: u32 = 3;
/// Most files a backup manifest may list.
const MAX_FILES: usize = 64;
/// Longest file name in a backup manifest.
const MAX_NAME: usize = 255;
/// The parallel CRC pass checks for a failed copy after each chunk of this size.
const CRC_CHUNK: usize = 16 << 20;

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// File name inside the backup directory.
    pub name: String,
    /// Its length.
    pub len: u64,
    /// CRC32C of its bytes.
    pub crc: u32,
}

/// The contents of a `BACKUP` manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupManifest {
    /// Node the database belongs to.
    pub node_id: u64,
    /// Store generation copied.
    pub generation: u64,
    /// Offset of the checkpoint block in the store.
    pub checkpoint_offset: u64,
    /// Committed length of the store at the backup.
    pub committed_len: u64,
    /// WAL LSN the checkpoint covers: roll forward from the next one.
    pub checkpoint_lsn: u64,
    /// When the backup was taken, ms since the Unix epoch.
    pub created_ms: u64,
    /// Last WAL LSN the backup holds (in its segment files): a restore of the backup alone
    /// reaches it. Equal to `checkpoint_lsn` when it holds no WAL (and in version 1).
    pub end_lsn: u64,
    /// Timeline of the log the backup was taken from (with `node_id`, its lineage: the
    /// archive that continues it is `n<node_id>-t<timeline>`); 1 in versions 1 and 2.
    pub timeline: u64,
    /// For an incremental backup: the committed length of its base (the increment holds
    /// bytes from there on); 0 for a full backup.
    pub base_len: u64,
    /// For an incremental backup: CRC32C of the base's store bytes `[0, base_len)`, so a
    /// chain can be checked link by link; 0 for a full backup.
    pub base_crc: u32,
    /// CRC32C of the store bytes `[0, committed_len)` (the whole image, after assembly).
    pub store_crc: u32,
    /// Files in the backup directory.
    pub files: Vec<BackupFile>,
}

impl BackupManifest {
    /// True for an incremental backup.
    pub fn is_incremental(&self) -> bool {
        self.base_len > 0
    }

    /// Encodes the manifest.
    // Format: magic[8]="DPLXBKUP" version:u32=3 node_id:u64 generation:u64 checkpoint_offset:u64 committed_len:u64 checkpoint_lsn:u64 created_ms:u64 base_len:u64 end_lsn:u64 timeline:u64 base_crc:u32 store_crc:u32 n:u32 n x (name_len:u16 name len:u64 crc:u32) crc32c(all before):u32
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128 + 64 * self.files.len());
        b.extend_from_slice(&BACKUP_MAGIC);
        b.extend_from_slice(&BACKUP_VERSION.to_le_bytes());
        for v in [
            self.node_id,
            self.generation,
            self.checkpoint_offset,
            self.committed_len,
            self.checkpoint_lsn,
            self.created_ms,
            self.base_len,
            self.end_lsn,
            self.timeline,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.base_crc.to_le_bytes());
        b.extend_from_slice(&self.store_crc.to_le_bytes());
        b.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            b.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
            b.extend_from_slice(f.name.as_bytes());
            b.extend_from_slice(&f.len.to_le_bytes());
            b.extend_from_slice(&f.crc.to_le_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a manifest.
    pub fn decode(b: &[u8]) -> Result<Self, CorruptKind> {
        if b.len() < 12 {
            return Err(CorruptKind::Truncated);
        }
        let (body, tail) = b.split_at(b.len() - 4);
        let stored = u32_at(tail, 0);
        let actual = crc32c::crc32c(body);
        if stored != actual {
            return Err(CorruptKind::CrcMismatch {
                expected: stored,
                actual,
            });
        }
        let t = CorruptKind::Truncated;
        let mut c = Cursor::new(body);
        if c.take(8) != Some(&BACKUP_MAGIC[..]) {
            return Err(CorruptKind::BadMagic);
        }
        let version = c.u32().ok_or(t.clone())?;
        if version > BACKUP_VERSION {
            return Err(CorruptKind::NewerFormat {
                found: version,
                supported: BACKUP_VERSION,
            });
        }
        if version < 1 {
            return Err(CorruptKind::UnsupportedVersion(version));
        }
        let mut f = [0u64; 9];
        let fields = match version {
            1 => 7,
            2 => 8,
            _ => 9,
        };
        for v in f.iter_mut().take(fields) {
            *v = c.u64().ok_or(t.clone())?;
        }
        if version == 1 {
            f[7] = f[4];
        }
        if version < 3 {
            f[8] = 1;
        }
        if f[7] < f[4] {
            return Err(CorruptKind::Invalid("end LSN before the checkpoint LSN"));
        }
        if f[8] == 0 {
            return Err(CorruptKind::Invalid("timeline 0"));
        }
        let base_crc = c.u32().ok_or(t.clone())?;
        let store_crc = c.u32().ok_or(t.clone())?;
        let n = c.u32().ok_or(t.clone())? as usize;
        if n > MAX_FILES {
            return Err(CorruptKind::Invalid("file count"));
        }
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            let len = c.u16().ok_or(t.clone())? as usize;
            if len == 0 || len > MAX_NAME {
                return Err(CorruptKind::Invalid("file name length"));
            }
            let name = std::str::from_utf8(c.take(len).ok_or(t.clone())?)
                .map_err(|_| CorruptKind::Invalid("file name"))?;
            if !valid_file_name(name) {
                return Err(CorruptKind::Invalid("file name"));
            }
            files.push(BackupFile {
                name: name.to_owned(),
                len: c.u64().ok_or(t.clone())?,
                crc: c.u32().ok_or(t.clone())?,
            });
        }
        if c.remaining() != 0 {
            return Err(CorruptKind::Invalid("trailing bytes"));
        }
        Ok(BackupManifest {
            node_id: f[0],
            generation: f[1],
            checkpoint_offset: f[2],
            committed_len: f[3],
            checkpoint_lsn: f[4],
            created_ms: f[5],
            base_len: f[6],
            end_lsn: f[7],
            timeline: f[8],
            base_crc,
            store_crc,
            files,
        })
    }

    /// The engine manifest a restore of this backup writes.
    pub fn engine_manifest(&self) -> Manifest {
        Manifest {
            node_id: self.node_id,
            generation: self.generation,
            checkpoint_offset: self.checkpoint_offset,
            committed_len: self.committed_len,
            checkpoint_lsn: self.checkpoint_lsn,
        }
    }

    /// Name of the store file (or increment) in the backup.
    pub fn store_part_name(&self) -> String {
        let base = store_file_name(self.generation);
        if self.is_incremental() {
            format!("{base}.inc")
        } else {
            base
        }
    }
}

/// A name a manifest may list: a plain file name (no `/`, not starting with `.`).
fn valid_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.starts_with('.')
}

/// How fast a backup copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupRate {
    /// Adaptive (the default): as fast as the disk goes while no writer commits; while
    /// writers commit, small slices (written with direct I/O where the file system
    /// allows, so no fsync per slice), each followed by a rest nine times as long as the
    /// slice took, so the copy takes at most about a tenth of the disk's time, whatever the
    /// disk, and a WAL fsync never queues behind more than one small slice.
    #[default]
    Adaptive,
    /// At most this many bytes per second (0: unlimited).
    BytesPerSec(u64),
    /// As fast as the disk goes.
    Unlimited,
}

/// Options of a backup.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// How fast the copy goes. Default [`BackupRate::Adaptive`].
    pub rate: BackupRate,
    /// Also hand back a snapshot of the database at exactly the backup's end LSN
    /// ([`BackupReport::snapshot`]), to check a restore of the backup against (the restore
    /// drill). Writers pause for one fsync while it is taken. Default false.
    pub snapshot_at_end: bool,
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The backup directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: BackupManifest,
    /// Store bytes copied.
    pub bytes_copied: u64,
    /// WAL bytes copied (the segment files in the backup).
    pub wal_bytes: u64,
    /// Wall time taken, seconds.
    pub seconds: f64,
    /// With [`BackupOptions::snapshot_at_end`]: the database as of exactly the backup's
    /// `end_lsn` (every batch logged up to it, none after), which a restore of the backup
    /// rolled forward to that LSN must equal.
    pub snapshot: Option<crate::Snapshot>,
}

/// Reads and checks the `BACKUP` manifest of a backup directory.
pub fn read_backup_manifest(storage: &dyn Storage, dir: &Path) -> Result<BackupManifest> {
    let path = dir.join(BACKUP_MANIFEST);
    if !storage.exists(&path) {
        return Err(Error::Config(format!(
            "{} is not a complete backup: it has no {BACKUP_MANIFEST} manifest (a backup that failed or is still being written never has one); use another backup, or take a new one",
            dir.display()
        )));
    }
    let f = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open backup manifest", &path, e))?;
    let len = f.len().map_err(|e| Error::io("stat", &path, e))?;
    if len > 1 << 20 {
        return Err(Error::corrupt(
            &path,
            0,
            CorruptKind::Invalid("manifest too large"),
        ));
    }
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    BackupManifest::decode(&b).map_err(|k| Error::corrupt(&path, 0, k))
}

/// CRC32C of a file's first `len` bytes, read in large chunks.
pub(crate) fn file_crc(file: &dyn StorageFile, path: &Path, len: u64) -> Result<u32> {
    let mut buf = vec![0u8; 8 << 20];
    let mut crc = 0u32;
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], off)
            .map_err(|e| Error::io("read", path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        off += n as u64;
    }
    Ok(crc)
}

/// CRC32C of `bytes`, computed chunk by chunk; gives up (returning 0) once `stop` is set.
fn crc_until_stopped(bytes: &[u8], stop: &AtomicBool) -> u32 {
    let mut crc = 0u32;
    for chunk in bytes.chunks(CRC_CHUNK) {
        if stop.load(Ordering::Relaxed) {
            return 0;
        }
        crc = crc32c::crc32c_append(crc, chunk);
    }
    crc
}

/// Checks every file of one backup directory against its manifest: presence, length and
/// CRC. Returns the manifest.
pub fn verify_backup(storage: &dyn Storage, dir: &Path) -> Result<BackupManifest> {
    let m = read_backup_manifest(storage, dir)?;
    for f in &m.files {
        let path = dir.join(&f.name);
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io("open backup file", &path, e))?;
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        if len != f.len {
            return Err(Error::corrupt(
                &path,
                len.min(f.len),
                CorruptKind::Truncated,
            ));
        }
        let crc = file_crc(&*file, &path, len)?;
        if crc != f.crc {
            return Err(Error::corrupt(
                &path,
                0,
                CorruptKind::CrcMismatch {
                    expected: f.crc,
                    actual: crc,
                },
            ));
        }
    }
    if !m.files.iter().any(|f| f.name == m.store_part_name()) {
        return Err(Error::corrupt(
            &dir.join(BACKUP_MANIFEST),
            0,
            CorruptKind::Invalid("the manifest lists no store file"),
        ));
    }
    Ok(m)
}

/// Writes `bytes` to a new file, fsyncs it, and returns its manifest entry.
fn write_file(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<BackupFile> {
    let path = dir.join(name);
    let f = storage
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &path, e))?;
    f.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write", &path, e))?;
    f.sync_data().map_err(|e| Error::io("fsync", &path, e))?;
    Ok(BackupFile {
        name: name.to_owned(),
        len: bytes.len() as u64,
        crc: crc32c::crc32c(bytes),
    })
}

/// What a backup copies besides the store: its identity, its base, its WAL, its pace.
pub(crate) struct BackupJob<'a> {
    /// Node the database belongs to.
    pub node_id: u64,
    /// The new backup directory.
    pub dest: &'a Path,
    /// The base of an incremental backup.
    pub base: Option<&'a BackupManifest>,
    /// Stamp of the backup, ms since the Unix epoch.
    pub created_ms: u64,
    /// Where the WAL after the checkpoint is read.
    pub wal: WalSource,
    /// The copy's pace.
    pub rate: BackupRate,
    /// What the adaptive pace watches for commits.
    pub activity: Activity<'a>,
}

/// Copies the committed bytes of `view` (all of them, or those past `base`'s), then the WAL
/// from its checkpoint to the durable end, into a new backup directory. The caller has
/// taken a checkpoint and holds `view` so that the file cannot go away during the copy. A
/// failure removes the half-written `<dest>.tmp`.
pub(crate) fn write_backup(
    storage: &Arc<dyn Storage>,
    view: &TreeView,
    job: &BackupJob<'_>,
) -> Result<BackupReport> {
    let tmp = fresh_tmp_dir(storage, job.dest)?;
    let res = write_backup_in(storage, view, job, &tmp);
    if res.is_err() {
        // Best effort: what stays is a `.tmp`, which no reader takes for a backup.
        let _ = remove_tree(&**storage, &tmp);
    }
    res
}

fn write_backup_in(
    storage: &Arc<dyn Storage>,
    view: &TreeView,
    job: &BackupJob<'_>,
    tmp: &Path,
) -> Result<BackupReport> {
    let start = Instant::now();
    let committed = view.committed;
    let base_len = increment_start(job.base, view, job.node_id)?;
    let base_crc = job.base.map_or(0, |b| b.store_crc);
    let manifest_stub = BackupManifest {
        node_id: job.node_id,
        generation: view.file.generation,
        checkpoint_offset: view.ckpt_offset,
        committed_len: committed,
        checkpoint_lsn: view.ckpt.lsn,
        created_ms: job.created_ms,
        end_lsn: view.ckpt.lsn,
        timeline: crate::backup_wal::log_timeline(storage, &job.wal.dir)?,
        base_len,
        base_crc,
        store_crc: 0,
        files: Vec::new(),
    };
    let part_name = manifest_stub.store_part_name();
    let (copied, part_crc) = copy_store_part(
        storage,
        view,
        base_len,
        &tmp.join(&part_name),
        pace::BackupPace::new(job.rate, job.activity),
    )?;
    // The base's manifest already holds the CRC of its bytes (which never change below its
    // committed length), and CRCs combine.
    let store_crc = if base_len > 0 {
        crc32c::crc32c_combine(base_crc, part_crc, (committed - base_len) as usize)
    } else {
        part_crc
    };
    let mut limit = RateLimit::new(match job.rate {
        BackupRate::BytesPerSec(r) => Some(r),
        _ => None,
    });
    let (wal_files, end_lsn) = copy_wal(
        storage,
        &job.wal,
        view.ckpt.lsn + 1,
        job.node_id,
        tmp,
        &mut limit,
    )?;
    let wal_bytes = wal_files.iter().map(|f| f.len).sum();
    let manifest_stub = BackupManifest {
        store_crc,
        end_lsn: end_lsn.max(view.ckpt.lsn),
        ..manifest_stub
    };
    let part = BackupFile {
        name: part_name,
        len: copied,
        crc: part_crc,
    };
    let engine_manifest = write_file(
        &**storage,
        tmp,
        MANIFEST_NAME,
        &manifest_stub.engine_manifest().encode(),
    )?;
    let mut files = vec![part, engine_manifest];
    files.extend(wal_files);
    let manifest = BackupManifest {
        files,
        ..manifest_stub
    };
    write_file(&**storage, tmp, BACKUP_MANIFEST, &manifest.encode())?;
    publish_dir(storage, tmp, job.dest)?;
    Ok(BackupReport {
        dir: job.dest.to_path_buf(),
        manifest,
        bytes_copied: copied,
        wal_bytes,
        seconds: start.elapsed().as_secs_f64(),
        snapshot: None,
    })
}

/// Removes a directory and everything in it (a backup holds files and its `wal/`).
pub(crate) fn remove_tree(storage: &dyn Storage, dir: &Path) -> Result<()> {
    for name in storage.list(dir).map_err(|e| Error::io("list", dir, e))? {
        let p = dir.join(name);
        if storage.remove_file(&p).is_err() {
            remove_tree(storage, &p)?;
        }
    }
    storage
        .remove_dir(dir)
        .map_err(|e| Error::io("remove directory", dir, e))
}

/// Creates `<dest>.tmp`, the directory a backup is written in before it gets its final
/// name, emptying the leftover of a backup that crashed. Refuses an existing `dest`.
fn fresh_tmp_dir(storage: &Arc<dyn Storage>, dest: &Path) -> Result<PathBuf> {
    if storage.exists(dest) {
        return Err(Error::Config(format!(
            "backup destination {} already exists; choose a new directory",
            dest.display()
        )));
    }
    let mut tmp_name = dest
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} has no directory name", dest.display())))?
        .to_os_string();
    tmp_name.push(".tmp");
    let tmp = dest.with_file_name(tmp_name);
    if storage.exists(&tmp) {
        // A leftover of a backup that crashed: it never got its final name.
        remove_tree(&**storage, &tmp)?;
    }
    storage
        .create_dir_all(&tmp)
        .map_err(|e| Error::io("create directory", &tmp, e))?;
    Ok(tmp)
}

/// Where the bytes of a backup on `base` start (0 for a full backup), once the base is
/// checked to be an earlier image of the same store.
fn increment_start(base: Option<&BackupManifest>, view: &TreeView, node_id: u64) -> Result<u64> {
    let Some(b) = base else {
        return Ok(0);
    };
    if b.node_id != node_id || b.generation != view.file.generation {
        return Err(Error::Config(format!(
            "the base backup is of node {} generation {}, the database is node {node_id} generation {} (a compaction happened since): take a full backup",
            b.node_id, b.generation, view.file.generation
        )));
    }
    if b.committed_len > view.committed {
        return Err(Error::Config(
            "the base backup is newer than the database".into(),
        ));
    }
    Ok(b.committed_len)
}

/// Copies the store's committed bytes from `base_len` on into `part_path` (fsynced) at the
/// pace `pace` sets, and returns how many were copied and their CRC32C.
fn copy_store_part(
    storage: &Arc<dyn Storage>,
    view: &TreeView,
    base_len: u64,
    part_path: &Path,
    mut pace: pace::BackupPace<'_>,
) -> Result<(u64, u32)> {
    let committed = view.committed;
    let part_bytes = &view.map.bytes()[base_len as usize..committed as usize];
    // The copy (in slices, written to the disk as it goes, then fsynced) and the
    // one CRC pass over the bytes copied run at the same time, on two threads: the CRC reads
    // the mapped store, the copy reads the file, and both see the same committed bytes,
    // which never change.
    let stop = AtomicBool::new(false);
    let (copied, part_crc) = std::thread::scope(|s| {
        let crc = s.spawn(|| crc_until_stopped(part_bytes, &stop));
        let copied = storage.copy_synced(
            &view.file.path,
            base_len,
            part_path,
            committed - base_len,
            &mut pace,
        );
        if copied.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        (copied, crc.join())
    });
    let copied = copied.map_err(|e| Error::io("copy store", part_path, e))?;
    let part_crc = match part_crc {
        Ok(crc) => crc,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if copied != committed - base_len {
        return Err(Error::io(
            "copy store",
            &view.file.path,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short copy"),
        ));
    }
    Ok((copied, part_crc))
}

/// Gives the whole backup in `tmp` its final name `dest`: fsync the directory, rename,
/// fsync the parent.
fn publish_dir(storage: &Arc<dyn Storage>, tmp: &Path, dest: &Path) -> Result<()> {
    storage
        .sync_dir(tmp)
        .map_err(|e| Error::io("fsync directory", tmp, e))?;
    storage
        .rename(tmp, dest)
        .map_err(|e| Error::io("rename backup", dest, e))?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    storage
        .sync_dir(parent)
        .map_err(|e| Error::io("fsync directory", parent, e))
}

/// Backs up the database directory `data` into `dest` without opening the database, so it
/// works on a directory that a running `duplexd` holds: the manifest names the committed
/// checkpoint (the store's bytes below it never change), and the WAL from that checkpoint
/// to the durable end the files hold is copied with it (fsynced first), so the backup
/// restores on its own. Does not take a checkpoint. The default pace
/// ([`BackupOptions::default`]).
pub fn backup_dir(
    storage: &Arc<dyn Storage>,
    data: &Path,
    dest: &Path,
    base: Option<&Path>,
) -> Result<BackupReport> {
    backup_dir_with(storage, data, dest, base, &BackupOptions::default())
}

/// [`backup_dir`] with options. A checkpoint of the running server that removes WAL
/// segments the copy still needed makes it start over (three times at most).
pub fn backup_dir_with(
    storage: &Arc<dyn Storage>,
    data: &Path,
    dest: &Path,
    base: Option<&Path>,
    opts: &BackupOptions,
) -> Result<BackupReport> {
    let base = match base {
        Some(b) => Some(read_backup_manifest(&**storage, b)?),
        None => None,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let view = read_view(storage, data)?;
        let node_id = view
            .file
            .file
            .map(crate::format::FILE_HEADER_LEN as u64)
            .ok()
            .and_then(|m| crate::format::StoreHeader::decode(m.bytes()).ok())
            .map(|h| h.node_id)
            .ok_or_else(|| {
                Error::corrupt(&view.file.path, 0, CorruptKind::Invalid("store header"))
            })?;
        let wal_dir = data.join(crate::db::WAL_DIR);
        let activity = || wal_dir_activity(&wal_dir);
        let job = BackupJob {
            node_id,
            dest,
            base: base.as_ref(),
            // No database and so no configured clock here: the system's stamps it.
            created_ms: duplex_wal::now_ms(),
            wal: WalSource {
                dir: wal_dir.clone(),
                until: None,
                sync_first: true,
            },
            rate: opts.rate,
            activity: &activity,
        };
        match write_backup(storage, &view, &job) {
            Err(Error::Wal(
                e @ (duplex_wal::Error::LsnUnavailable { .. } | duplex_wal::Error::Gap { .. }),
            )) => {
                if attempt >= 3 {
                    return Err(Error::Config(format!(
                        "the WAL in {} no longer held the records after the backup's checkpoint three times running (the server's checkpoints removed them during the copy): run the backup again, or take it with DUPLEX.BACKUP on the server ({e})",
                        data.display()
                    )));
                }
            }
            r => return r,
        }
    }
}

/// The committed store of `data`, read again if a compaction switches generations between
/// reading the manifest and opening the store.
fn read_view(storage: &Arc<dyn Storage>, data: &Path) -> Result<TreeView> {
    let mut tries = 0;
    loop {
        let m = crate::store::read_manifest(&**storage, data)?.ok_or_else(|| {
            Error::Config(format!(
                "{} holds no Duplex database (no MANIFEST)",
                data.display()
            ))
        })?;
        match crate::store::open_store_readonly(storage, data, &m) {
            Ok(v) => return Ok(v),
            Err(Error::Io { .. }) if tries < 5 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_damage() {
        let m = BackupManifest {
            node_id: 1,
            generation: 2,
            checkpoint_offset: 4096,
            committed_len: 5000,
            checkpoint_lsn: 77,
            created_ms: 1,
            end_lsn: 90,
            timeline: 3,
            base_len: 100,
            base_crc: 5,
            store_crc: 6,
            files: vec![
                BackupFile {
                    name: "store-000002.dpx.inc".into(),
                    len: 4900,
                    crc: 9,
                },
                BackupFile {
                    name: "00000000000000000001.wal".into(),
                    len: 100,
                    crc: 10,
                },
            ],
        };
        let b = m.encode();
        assert_eq!(BackupManifest::decode(&b), Ok(m));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x40;
            assert!(BackupManifest::decode(&d).is_err(), "flip at {i}");
        }
        for cut in 0..b.len() {
            assert!(BackupManifest::decode(&b[..cut]).is_err());
        }
    }

    #[test]
    fn a_version_1_manifest_still_reads_with_its_end_at_the_checkpoint() {
        let m = BackupManifest {
            node_id: 1,
            generation: 2,
            checkpoint_offset: 4096,
            committed_len: 5000,
            checkpoint_lsn: 77,
            created_ms: 1,
            end_lsn: 77,
            timeline: 1,
            base_len: 0,
            base_crc: 0,
            store_crc: 6,
            files: vec![BackupFile {
                name: "store-000002.dpx".into(),
                len: 5000,
                crc: 9,
            }],
        };
        // Version 1: no end_lsn field (and no timeline).
        let v3 = m.encode();
        let mut v1 = v3[..8].to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&v3[12..68]);
        v1.extend_from_slice(&v3[84..v3.len() - 4]);
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(BackupManifest::decode(&v1), Ok(m));
    }

    #[test]
    fn a_version_2_manifest_reads_as_timeline_1() {
        let m = BackupManifest {
            node_id: 4,
            generation: 1,
            checkpoint_offset: 4096,
            committed_len: 5000,
            checkpoint_lsn: 77,
            created_ms: 1,
            end_lsn: 80,
            timeline: 1,
            base_len: 0,
            base_crc: 0,
            store_crc: 6,
            files: Vec::new(),
        };
        // Version 2: everything but the timeline.
        let v3 = m.encode();
        let mut v2 = v3[..8].to_vec();
        v2.extend_from_slice(&2u32.to_le_bytes());
        v2.extend_from_slice(&v3[12..76]);
        v2.extend_from_slice(&v3[84..v3.len() - 4]);
        let crc = crc32c::crc32c(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(BackupManifest::decode(&v2), Ok(m));
    }
}
