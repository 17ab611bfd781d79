//! The data directory's lock: taken before anything in the directory is written, held as
//! long as a database (or a roll-forward, or a server) uses the directory.
//!
//! On the real file system the directory itself is locked (`flock` on an open handle of
//! the directory), which deleting a file cannot defeat; the `LOCK` file is locked too, for
//! the tools that look for it. On other storage (the simulated one) the `LOCK` file is the
//! lock.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use duplex_wal::{LockGuard, StdStorage, Storage};

use crate::error::{Error, Result};

/// Name of the lock file in the data directory.
pub const LOCK_NAME: &str = "LOCK";

/// The lock of one data directory, released when dropped. Take it with
/// [`DirLock::acquire`] before writing anything in the directory, then hand it to
/// [`Database::open_with_lock`](crate::Database::open_with_lock).
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    /// The locked directory handle (real file system only).
    _dir_handle: Option<File>,
    _file: LockGuard,
}

impl DirLock {
    /// Locks the data directory `dir` on the real file system, creating it if missing
    /// (nothing inside it is written but the empty `LOCK` file, and that only once the
    /// directory itself is locked). Fails with [`Error::Locked`] if another process (or
    /// another open database in this one) holds it.
    pub fn acquire(dir: impl Into<PathBuf>) -> Result<DirLock> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let handle = File::open(&dir).map_err(|e| Error::io("open directory", &dir, e))?;
        match handle.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { dir }),
            Err(TryLockError::Error(e)) => return Err(Error::io("lock directory", &dir, e)),
        }
        let file = lock_file(&StdStorage, &dir)?;
        Ok(DirLock {
            dir,
            _dir_handle: Some(handle),
            _file: file,
        })
    }

    /// Locks `dir` on the given storage through its `LOCK` file.
    pub(crate) fn acquire_with(storage: &dyn Storage, dir: &Path) -> Result<DirLock> {
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _dir_handle: None,
            _file: lock_file(storage, dir)?,
        })
    }

    /// The locked data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Takes the `LOCK` file's lock in `dir`.
pub(crate) fn lock_file(storage: &dyn Storage, dir: &Path) -> Result<LockGuard> {
    storage.lock(&dir.join(LOCK_NAME)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                dir: dir.to_path_buf(),
            }
        } else {
            Error::io("lock", dir.join(LOCK_NAME), e)
        }
    })
}
