//! Store files and the manifest: creating a store generation, opening the current one at
//! its committed length, and switching the manifest atomically.
//!
//! Invariants:
//! - bytes of a store file below its committed length never change;
//! - the manifest is replaced only by write-temp, fsync, rename, fsync-directory, so it is
//!   always either the old or the new one;
//! - a checkpoint is written whole (blocks, checkpoint block, fsync) before the manifest
//!   names it;
//! - a store file is deleted only when it is retired (a newer generation is current) and the
//!   last reader of it (a tree view, a backup) lets go.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use duplex_wal::{OpenMode, Storage, StorageFile};

use crate::error::{CorruptKind, Error, Result};
use crate::format::{
    decode_block, kind, store_file_name, Checkpoint, Manifest, StoreHeader, FILE_HEADER_LEN,
};
use crate::tree::{TreeView, TreeWriter, Update};

/// Name of the manifest file in the data directory.
pub const MANIFEST_NAME: &str = "MANIFEST";

/// An open store file, shared by every view of it.
#[derive(Debug)]
pub struct StoreFile {
    storage: Arc<dyn Storage>,
    /// Path of the file.
    pub path: PathBuf,
    /// The open handle.
    pub file: Box<dyn StorageFile>,
    /// Generation number.
    pub generation: u64,
    retired: AtomicBool,
}

impl StoreFile {
    /// Marks the file for deletion once the last reference is dropped.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}

impl Drop for StoreFile {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            // Best effort: a leftover old generation is also removed at the next open.
            let _ = self.storage.remove_file(&self.path);
        }
    }
}

/// Creates store file `generation` with its header, fsynced with its directory.
pub fn create_store(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    node_id: u64,
    generation: u64,
) -> Result<Arc<StoreFile>> {
    let path = dir.join(store_file_name(generation));
    if storage.exists(&path) {
        // A leftover from a compaction that never became current.
        storage
            .remove_file(&path)
            .map_err(|e| Error::io("remove stale store", &path, e))?;
    }
    let file = storage
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create store", &path, e))?;
    let header = StoreHeader {
        node_id,
        generation,
        created_ms: crate::hlc::wall_ms(),
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write", &path, e))?;
    duplex_wal::sync_file_and_dir(&**storage, &*file, &path)
        .map_err(|e| Error::io("fsync", &path, e))?;
    Ok(Arc::new(StoreFile {
        storage: storage.clone(),
        path,
        file,
        generation,
        retired: AtomicBool::new(false),
    }))
}

/// Reads the manifest; `None` if the directory has none (a new database).
pub fn read_manifest(storage: &dyn Storage, dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST_NAME);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let f = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open", &path, e))?;
    let mut b = [0u8; FILE_HEADER_LEN];
    let len = f.len().map_err(|e| Error::io("stat", &path, e))?;
    if len != FILE_HEADER_LEN as u64 {
        return Err(Error::corrupt(&path, 0, CorruptKind::Truncated));
    }
    f.read_exact_at(&mut b, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    Manifest::decode(&b)
        .map(Some)
        .map_err(|k| Error::corrupt(&path, 0, k))
}

/// Replaces the manifest atomically.
pub fn write_manifest(storage: &dyn Storage, dir: &Path, m: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST_NAME);
    let tmp = dir.join("MANIFEST.tmp");
    let f = storage
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all_at(&m.encode(), 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_data().map_err(|e| Error::io("fsync", &tmp, e))?;
    storage
        .rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Opens the store file the manifest names in `mode` and checks it is long enough.
fn open_named(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    m: &Manifest,
    mode: OpenMode,
) -> Result<(Arc<StoreFile>, u64)> {
    let path = dir.join(store_file_name(m.generation));
    let file = storage
        .open(&path, mode)
        .map_err(|e| Error::io("open store", &path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len < m.committed_len {
        return Err(Error::corrupt(&path, len, CorruptKind::Truncated));
    }
    let sf = Arc::new(StoreFile {
        storage: storage.clone(),
        path,
        file,
        generation: m.generation,
        retired: AtomicBool::new(false),
    });
    Ok((sf, len))
}

/// Opens the store generation the manifest names, cuts anything after its committed
/// length (an interrupted checkpoint), and returns a view of its current checkpoint.
pub fn open_store(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    m: &Manifest,
    node_id: u64,
) -> Result<TreeView> {
    let (sf, len) = open_named(storage, dir, m, OpenMode::ReadWrite)?;
    let path = &sf.path;
    let mut hb = [0u8; FILE_HEADER_LEN];
    sf.file
        .read_exact_at(&mut hb, 0)
        .map_err(|e| Error::io("read", path, e))?;
    let h = StoreHeader::decode(&hb).map_err(|k| Error::corrupt(path, 0, k))?;
    if h.generation != m.generation || h.node_id != node_id {
        return Err(Error::corrupt(
            path,
            0,
            CorruptKind::Invalid("store header does not match the manifest or node id"),
        ));
    }
    if len > m.committed_len {
        sf.file
            .set_len(m.committed_len)
            .and_then(|_| sf.file.sync_data())
            .map_err(|e| Error::io("truncate uncommitted tail", path, e))?;
    }
    view_at(sf, m.checkpoint_offset, m.committed_len)
}

/// Opens the store the manifest names read-only, without touching it: for backing up a
/// directory that a running database may be writing (bytes below the committed length
/// never change; an open handle keeps a compacted-away file readable).
pub fn open_store_readonly(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    m: &Manifest,
) -> Result<TreeView> {
    let (sf, _) = open_named(storage, dir, m, OpenMode::Read)?;
    view_at(sf, m.checkpoint_offset, m.committed_len)
}

/// A view of `file` as of the checkpoint block at `offset`, which must end at `committed`.
pub fn view_at(file: Arc<StoreFile>, offset: u64, committed: u64) -> Result<TreeView> {
    let map = file
        .file
        .map(committed)
        .map_err(|e| Error::io("map", &file.path, e))?;
    let bytes = map.bytes();
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let b = bytes
        .get(start..)
        .ok_or_else(|| Error::corrupt(&file.path, offset, CorruptKind::Truncated))?;
    let (k, body) = decode_block(b).map_err(|kd| Error::corrupt(&file.path, offset, kd))?;
    if k != kind::CHECKPOINT {
        return Err(Error::corrupt(
            &file.path,
            offset,
            CorruptKind::WrongBlock {
                expected: "checkpoint",
                found: k,
            },
        ));
    }
    let end = offset + crate::format::block_size(body.len()) as u64;
    if end != committed {
        return Err(Error::corrupt(
            &file.path,
            offset,
            CorruptKind::Invalid("checkpoint does not end at the committed length"),
        ));
    }
    let ckpt = Checkpoint::decode(body).map_err(|kd| Error::corrupt(&file.path, offset, kd))?;
    if ckpt.root >= offset {
        return Err(Error::corrupt(
            &file.path,
            offset,
            CorruptKind::Invalid("root after its checkpoint"),
        ));
    }
    Ok(TreeView {
        file,
        map,
        ckpt,
        ckpt_offset: offset,
        committed,
    })
}

/// Writes a checkpoint at `lsn` that merges sorted, distinct-key `updates` into `tree`
/// (last writer wins per key): appended copy-on-write to the same file, or, with
/// `new_generation`, the whole tree rebuilt with full leaves into a new generation file
/// (compaction; also the cheaper way when the updates touch most leaves). Fsyncs, switches
/// the manifest and returns the new view. After a new generation the caller retires the
/// old file. `max_ts` is the largest timestamp the database has seen.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_checkpoint(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    node_id: u64,
    tree: &TreeView,
    updates: &[Update<'_>],
    lsn: u64,
    max_ts: u64,
    new_generation: bool,
) -> Result<TreeView> {
    let max_ts = tree.ckpt.max_ts.max(max_ts);
    let origins = tree.ckpt.origins.clone();
    let (file, w, ckpt);
    if new_generation {
        file = create_store(storage, dir, node_id, tree.file.generation + 1)?;
        let mut tw = TreeWriter::new(&file, FILE_HEADER_LEN as u64);
        let root = tw.rebuild(tree, updates)?;
        ckpt = Checkpoint {
            lsn,
            root,
            entries: tw.added,
            live_bytes: tw.written,
            max_ts,
            prev: 0,
            origins,
        };
        w = tw;
    } else {
        file = tree.file.clone();
        let mut tw = TreeWriter::new(&file, tree.committed);
        let root = tw.merge(tree, updates)?;
        ckpt = Checkpoint {
            lsn,
            root,
            entries: tree.ckpt.entries.saturating_add(tw.added),
            live_bytes: tree
                .ckpt
                .live_bytes
                .saturating_add(tw.written)
                .saturating_sub(tw.dead),
            max_ts,
            prev: tree.ckpt_offset,
            origins,
        };
        w = tw;
    }
    let (off, committed) = w.finish(&ckpt)?;
    write_manifest(
        &**storage,
        dir,
        &Manifest {
            node_id,
            generation: file.generation,
            checkpoint_offset: off,
            committed_len: committed,
            checkpoint_lsn: ckpt.lsn,
        },
    )?;
    view_at(file.clone(), off, committed)
}
