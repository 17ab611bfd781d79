//! The resource exhaustions [`super::SimStorage`] can inject: which operations
//! ([`SimOp`]), with which error ([`Exhaustion`], a raw `errno` as the kernel returns it),
//! and when ([`OpFault`]).

use std::io;
use std::path::PathBuf;

#[cfg(doc)]
use crate::storage::{OpenMode, StorageFile};

/// A kind of storage operation, for [`super::SimStorage::fail_op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimOp {
    /// Opening an existing file ([`OpenMode::Read`], [`OpenMode::ReadWrite`]).
    Open,
    /// Creating a file ([`OpenMode::CreateNew`], [`OpenMode::CreateTruncate`]).
    Create,
    /// A write into a file.
    Write,
    /// Setting a file's length.
    SetLen,
    /// Preallocating a file ([`StorageFile::preallocate`]).
    Preallocate,
    /// An fsync of a file.
    SyncFile,
    /// An fsync of a directory.
    SyncDir,
    /// A rename.
    Rename,
    /// Removing a file.
    Remove,
    /// Listing a directory.
    List,
    /// Creating directories.
    CreateDir,
    /// Taking a lock.
    Lock,
}

/// A resource running out, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exhaustion {
    /// `ENOSPC`: the file system is full.
    NoSpace,
    /// `EDQUOT`: the user's disk quota is used up.
    Quota,
    /// `EMFILE`: the process has no file descriptor left.
    NoDescriptors,
    /// `ENFILE`: the system has no file descriptor left.
    SystemDescriptors,
}

impl Exhaustion {
    /// The `errno` a real call would fail with.
    pub fn errno(self) -> i32 {
        match self {
            Exhaustion::NoSpace => libc::ENOSPC,
            Exhaustion::Quota => libc::EDQUOT,
            Exhaustion::NoDescriptors => libc::EMFILE,
            Exhaustion::SystemDescriptors => libc::ENFILE,
        }
    }

    /// The error a real call would return.
    pub fn to_io_error(self) -> io::Error {
        io::Error::from_raw_os_error(self.errno())
    }
}

/// An injected exhaustion: operations of kind `op` fail with `error` once `countdown`
/// more of them have passed; a persistent one keeps failing until lifted.
#[derive(Debug, Clone)]
pub(super) struct OpFault {
    pub(super) op: SimOp,
    /// Only operations on paths under this one (a file or a directory); `None`: any.
    pub(super) under: Option<PathBuf>,
    pub(super) error: Exhaustion,
    pub(super) countdown: u64,
    pub(super) persistent: bool,
}
