//! A store file: one generation of the append-only page store, shared by every view of it
//! and deleted when retired and no longer read.
//!
//! Invariants: bytes below a store file's committed length never change; a store file is
//! deleted only when it is retired (a newer generation is current) and the last reader of
//! it (a tree view, a backup) lets go.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use duplex_wal::{OpenMode, Storage, StorageFile};

use crate::error::{Error, Result};
use crate::format::{store_file_name, StoreHeader};

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
    /// Blocks whose CRC was checked since the file was opened.
    pub(crate) verified: crate::verified::VerifiedBlocks,
}

impl StoreFile {
    /// Wraps an open handle of store file `generation` at `path`.
    pub(crate) fn new(
        storage: &Arc<dyn Storage>,
        path: PathBuf,
        file: Box<dyn StorageFile>,
        generation: u64,
    ) -> Arc<StoreFile> {
        Arc::new(StoreFile {
            storage: storage.clone(),
            path,
            file,
            generation,
            retired: AtomicBool::new(false),
            verified: Default::default(),
        })
    }

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

/// Creates store file `generation` with its header (stamped `created_ms`, from the clock
/// the database is given), fsynced with its directory.
pub fn create_store(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    node_id: u64,
    generation: u64,
    created_ms: u64,
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
        created_ms,
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write", &path, e))?;
    duplex_wal::sync_file_and_dir(&**storage, &*file, &path)
        .map_err(|e| Error::io("fsync", &path, e))?;
    Ok(StoreFile::new(storage, path, file, generation))
}
