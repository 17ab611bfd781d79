//! The page store of a data directory: the manifest naming the current store generation and
//! checkpoint, opening that store at its committed length (or creating the first one), and
//! writing a checkpoint (the tree's new blocks, then the manifest switch).
//!
//! Invariants:
//! - bytes of a store file below its committed length never change ([`crate::store_file`]);
//! - the manifest is replaced only by write-temp, fsync, rename, fsync-directory, so it is
//!   always either the old or the new one;
//! - a checkpoint is written whole (blocks, checkpoint block, fsync) before the manifest
//!   names it.

use std::path::Path;
use std::sync::Arc;

use duplex_wal::{Clock, OpenMode, Storage};

use crate::error::{CorruptKind, Error, Result};
use crate::format::{
    parse_store_file_name, store_file_name, Checkpoint, Manifest, StoreHeader, FILE_HEADER_LEN,
};
use crate::store_file::{create_store, StoreFile};
use crate::tree::{view_at, TreeView, TreeWriter, Update};

/// The store of one data directory, as the code that writes it sees it: where it is, whose
/// it is, and the clock that stamps new store files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreDir<'a> {
    /// Storage the directory is on.
    pub storage: &'a Arc<dyn Storage>,
    /// The data directory.
    pub dir: &'a Path,
    /// The node the database belongs to.
    pub node_id: u64,
    /// Wall time for store headers.
    pub clock: &'a dyn Clock,
}

/// Name of the manifest file in the data directory.
pub const MANIFEST_NAME: &str = "MANIFEST";

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
    stage_manifest(storage, dir, m)?;
    switch_manifest(storage, dir)?;
    sync_manifest_dir(storage, dir)
}

/// Name of the manifest being written, before its rename.
const MANIFEST_TMP: &str = "MANIFEST.tmp";

/// Writes and fsyncs the next manifest under its temporary name. A failure leaves the
/// manifest as it was.
fn stage_manifest(storage: &dyn Storage, dir: &Path, m: &Manifest) -> Result<()> {
    let tmp = dir.join(MANIFEST_TMP);
    let f = storage
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all_at(&m.encode(), 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_data().map_err(|e| Error::io("fsync", &tmp, e))
}

/// Renames the staged manifest over the current one. A failed rename changed nothing.
fn switch_manifest(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let path = dir.join(MANIFEST_NAME);
    storage
        .rename(&dir.join(MANIFEST_TMP), &path)
        .map_err(|e| Error::io("rename", &path, e))
}

/// Fsyncs the directory after the rename. A failure here is fatal whatever its cause: the
/// manifest on disk may be either one, so nothing it may name can be cut back.
fn sync_manifest_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io_fatal("fsync directory", dir, e))
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
    Ok((StoreFile::new(storage, path, file, m.generation), len))
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
        // Best effort: the bytes past the committed length are never read (the view ends
        // there and the next checkpoint writes over them), so a failure to cut them does
        // not stop the open; it only keeps their space until the next open.
        let _ = sf
            .file
            .set_len(m.committed_len)
            .and_then(|_| sf.file.sync_data());
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

/// What a checkpoint merges, and into what: sorted, distinct-key `updates` into `tree`
/// at `lsn`; `max_ts` and `max_epoch` are the largest timestamp and fencing epoch the
/// database has seen; `new_generation` rebuilds the tree into a new generation file.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointJob<'a, 'u> {
    pub tree: &'a TreeView,
    pub updates: &'a [Update<'u>],
    pub lsn: u64,
    pub max_ts: u64,
    pub max_epoch: u64,
    /// Per-origin high-water marks to record (merged with the tree's, the larger kept).
    pub origins: Vec<(u64, u64)>,
    pub new_generation: bool,
}

/// Writes a checkpoint (see [`CheckpointJob`]): appended copy-on-write to the same file,
/// or, with `new_generation`, the whole tree rebuilt with full leaves into a new
/// generation file (compaction; also the cheaper way when the updates touch most leaves).
/// Fsyncs, switches the manifest and returns the new view. After a new generation the
/// caller retires the old file.
///
/// A failure before the manifest's rename leaves the manifest as it was and cuts back
/// what it appended (best effort): the store file to its committed length, or the new
/// generation file removed, so a failed checkpoint does not keep the disk space it took.
pub(crate) fn write_checkpoint(at: &StoreDir<'_>, job: &CheckpointJob<'_, '_>) -> Result<TreeView> {
    let written = append_checkpoint(at, job).and_then(|(file, manifest)| {
        stage_manifest(&**at.storage, at.dir, &manifest)?;
        switch_manifest(&**at.storage, at.dir)?;
        Ok((file, manifest))
    });
    let (file, m) = match written {
        Ok(w) => w,
        Err(e) => {
            cut_back(at, job);
            return Err(e);
        }
    };
    sync_manifest_dir(&**at.storage, at.dir)?;
    view_at(file, m.checkpoint_offset, m.committed_len)
}

/// Undoes what a failed checkpoint appended (best effort; open ignores bytes past the
/// committed length and removes store files the manifest does not name).
fn cut_back(at: &StoreDir<'_>, job: &CheckpointJob<'_, '_>) {
    let _ = at.storage.remove_file(&at.dir.join(MANIFEST_TMP));
    if job.new_generation {
        let p = at.dir.join(store_file_name(job.tree.file.generation + 1));
        let _ = at.storage.remove_file(&p);
    } else {
        let _ = job.tree.file.file.set_len(job.tree.committed);
    }
}

/// Appends the checkpoint's blocks and checkpoint block and fsyncs them; returns the file
/// and the manifest that names the checkpoint.
fn append_checkpoint(
    at: &StoreDir<'_>,
    job: &CheckpointJob<'_, '_>,
) -> Result<(Arc<crate::store_file::StoreFile>, Manifest)> {
    let tree = job.tree;
    let max_ts = tree.ckpt.max_ts.max(job.max_ts);
    let max_epoch = tree.ckpt.max_epoch.max(job.max_epoch);
    let origins = merge_origins(&tree.ckpt.origins, &job.origins);
    let (file, w, ckpt);
    if job.new_generation {
        file = create_store(
            at.storage,
            at.dir,
            at.node_id,
            tree.file.generation + 1,
            at.clock.now_ms(),
        )?;
        let mut tw = TreeWriter::new(&file, FILE_HEADER_LEN as u64);
        let root = tw.rebuild(tree, job.updates)?;
        ckpt = Checkpoint {
            lsn: job.lsn,
            root,
            entries: tw.added,
            live_bytes: tw.written,
            max_ts,
            prev: 0,
            origins,
            max_epoch,
        };
        w = tw;
    } else {
        file = tree.file.clone();
        let mut tw = TreeWriter::new(&file, tree.committed);
        let root = tw.merge(tree, job.updates)?;
        ckpt = Checkpoint {
            lsn: job.lsn,
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
            max_epoch,
        };
        w = tw;
    }
    let (off, committed) = w.finish(&ckpt)?;
    let manifest = Manifest {
        node_id: at.node_id,
        generation: file.generation,
        checkpoint_offset: off,
        committed_len: committed,
        checkpoint_lsn: ckpt.lsn,
    };
    Ok((file, manifest))
}

/// True when the store files of a directory without a manifest are what an interrupted
/// creation leaves: generation 1 alone, no longer than its header and the empty checkpoint,
/// and no WAL segment (the WAL is created only after the first manifest). Anything else
/// held data once, and is never wiped.
fn creation_interrupted(at: &StoreDir<'_>, gens: &[u64]) -> Result<bool> {
    if gens != [1] {
        return Ok(false);
    }
    let wal_dir = at.dir.join(crate::db::WAL_DIR);
    if at.storage.exists(&wal_dir)
        && !duplex_wal::list_segments(&**at.storage, std::slice::from_ref(&wal_dir))?.is_empty()
    {
        return Ok(false);
    }
    let path = at.dir.join(store_file_name(1));
    let len = at
        .storage
        .open(&path, OpenMode::Read)
        .and_then(|f| f.len())
        .map_err(|e| Error::io("stat", &path, e))?;
    let empty = FILE_HEADER_LEN + crate::format::block_size(Checkpoint::default().encode().len());
    Ok(len <= empty as u64)
}

/// Creates generation 1 with an empty checkpoint, then the manifest naming it. The
/// manifest comes last: until it exists, an interrupted creation is redone at the next
/// open ([`creation_interrupted`]).
fn create_first_store(at: &StoreDir<'_>) -> Result<TreeView> {
    let (storage, dir, node_id) = (at.storage, at.dir, at.node_id);
    let f = create_store(storage, dir, node_id, 1, at.clock.now_ms())?;
    let ckpt = Checkpoint::default();
    let (off, committed) = TreeWriter::new(&f, FILE_HEADER_LEN as u64).finish(&ckpt)?;
    write_manifest(
        &**storage,
        dir,
        &Manifest {
            node_id,
            generation: 1,
            checkpoint_offset: off,
            committed_len: committed,
            checkpoint_lsn: 0,
        },
    )?;
    view_at(f, off, committed)
}

/// Opens the current store, or creates generation 1 with an empty checkpoint; removes
/// store files of other generations (leftovers of an interrupted or finished compaction).
pub(crate) fn open_or_create_store(at: &StoreDir<'_>) -> Result<TreeView> {
    let (storage, dir, node_id) = (at.storage, at.dir, at.node_id);
    let names = storage
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let gens: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_store_file_name(n))
        .collect();
    let view = match read_manifest(&**storage, dir)? {
        Some(m) => {
            if m.node_id != node_id {
                return Err(Error::Config(format!(
                    "{} belongs to node {}, but this database was opened as node {node_id}",
                    dir.display(),
                    m.node_id
                )));
            }
            open_store(storage, dir, &m, node_id)?
        }
        None if !gens.is_empty() && !creation_interrupted(at, &gens)? => {
            return Err(Error::Corrupt {
                file: dir.join(MANIFEST_NAME),
                offset: 0,
                kind: CorruptKind::Invalid(
                    "the manifest is missing but the store or the WAL holds data (the manifest was lost)",
                ),
            })
        }
        // A new database, or one whose creation was interrupted before its manifest was
        // written: create it (again).
        None => create_first_store(at)?,
    };
    for g in gens {
        if g != view.file.generation {
            let p = dir.join(store_file_name(g));
            storage
                .remove_file(&p)
                .map_err(|e| Error::io("remove old store", &p, e))?;
        }
    }
    Ok(view)
}

/// The union of two high-water-mark lists, the larger mark kept per origin, by origin.
pub(crate) fn merge_origins(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut m = std::collections::BTreeMap::new();
    for (o, l) in a.iter().chain(b) {
        let e = m.entry(*o).or_insert(0u64);
        *e = (*e).max(*l);
    }
    m.into_iter().collect()
}
