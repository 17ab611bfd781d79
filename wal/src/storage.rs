//! The storage trait: every file operation of the WAL (and of the engine above it) goes
//! through [`Storage`] and [`StorageFile`], so the same code runs on the real file system
//! ([`crate::StdStorage`]) and on the simulated one ([`crate::sim::SimStorage`]) that loses
//! unsynced writes, tears writes and fails fsyncs on command.
//!
//! Durability contract, the same for both implementations:
//! - bytes written to a file survive a crash only after `sync_data` on that file;
//! - a file's *name* (create, rename, remove) survives a crash only after `sync_dir` on its
//!   parent directory. [`sync_file_and_dir`] does both, in that order.
//!
//! The real implementation is in `std_storage`, the simulation in [`crate::sim`].

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    ReadWrite,
    /// New file, read and write; fails if the name exists.
    CreateNew,
    /// Create or truncate to empty, read and write.
    CreateTruncate,
}

/// A file system: the real one or a simulation.
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens `path` in `mode`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    /// Names (not paths) of the entries of `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// True if `path` names an existing file or directory.
    fn exists(&self, path: &Path) -> bool;

    /// Bytes available to this process on the file system holding `path` (what `df` shows
    /// as available), or `None` where the storage cannot tell. The default cannot tell.
    fn available_space(&self, path: &Path) -> io::Result<Option<u64>> {
        let _ = path;
        Ok(None)
    }

    /// Takes an exclusive advisory lock on `path` (created if missing), held until the
    /// returned guard is dropped. Fails with `WouldBlock` if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;

    /// Copies the first `len` bytes of `from` into the new file `to` (which must not exist)
    /// and returns the number of bytes copied. Does not sync. The real implementation uses
    /// `copy_file_range`; the default reads and writes through the trait.
    fn copy_prefix(&self, from: &Path, to: &Path, len: u64) -> io::Result<u64> {
        let src = self.open(from, OpenMode::Read)?;
        let dst = self.open(to, OpenMode::CreateNew)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < len {
            let want = usize::try_from((len - off).min(buf.len() as u64)).unwrap_or(buf.len());
            let n = src.read_at(&mut buf[..want], off)?;
            if n == 0 {
                break;
            }
            dst.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        Ok(off)
    }

    /// Copies `len` bytes of `from`, starting at `from_offset`, into the new file `to` (which
    /// must not exist) at offset 0, makes them durable (`sync_data` on `to`; the caller still
    /// syncs the directory) and returns the number of bytes copied (less than `len` only if
    /// `from` is shorter).
    ///
    /// The copy goes in slices whose lengths `pace` gives ([`CopyPace`]; a plain `u64` is a
    /// fixed slice length), so that the disk writes overlap the copy
    /// and no single large flush is left to queue ahead of other files' small fsyncs (the
    /// WAL's) on the same disk. The default hands each finished slice to writeback
    /// ([`StorageFile::start_writeback`]); the real implementation writes one slice at a
    /// time with direct I/O where it can, else copies with `copy_file_range` and waits for
    /// each slice's writeback before the next but one, so at most about two slices are
    /// dirty. After each slice `pace` may rest ([`CopyPace::after_slice`]), which is how a
    /// backup keeps to its rate. Only the final `sync_data` makes anything durable: a crash
    /// before it may keep any part of the copy, or none.
    fn copy_synced(
        &self,
        from: &Path,
        from_offset: u64,
        to: &Path,
        len: u64,
        pace: &mut dyn CopyPace,
    ) -> io::Result<u64> {
        copy_synced_through(self, from, from_offset, to, len, pace)
    }
}

/// The pace of a [`Storage::copy_synced`]: how long each slice is, and what happens after
/// one was written (a rest, for a copy that must leave the disk to others).
pub trait CopyPace {
    /// Length of the next slice in bytes (0 counts as 1).
    fn next_slice(&mut self) -> u64;
    /// Called after `n` bytes of the current slice were written (and, where the copy
    /// waits for writeback, written back); may sleep.
    fn after_slice(&mut self, n: u64);
}

/// A fixed slice length and no rest.
impl CopyPace for u64 {
    fn next_slice(&mut self) -> u64 {
        *self
    }

    fn after_slice(&mut self, _n: u64) {}
}

/// [`Storage::copy_synced`] through the trait's own reads and writes (the default, and the
/// real implementation's fallback where `copy_file_range` does not work).
pub(crate) fn copy_synced_through<S: Storage + ?Sized>(
    storage: &S,
    from: &Path,
    from_offset: u64,
    to: &Path,
    len: u64,
    pace: &mut dyn CopyPace,
) -> io::Result<u64> {
    let mut slice = pace.next_slice().max(1);
    let src = storage.open(from, OpenMode::Read)?;
    let dst = storage.open(to, OpenMode::CreateNew)?;
    let mut buf = vec![0u8; usize::try_from(slice.min(1 << 20)).unwrap_or(1 << 20)];
    let mut off = 0u64;
    let mut slice_start = 0u64;
    'copy: while off < len {
        let want = usize::try_from((len - off).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = src.read_at(&mut buf[..want], from_offset + off)?;
        if n == 0 {
            break 'copy;
        }
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
        if off - slice_start >= slice {
            dst.start_writeback(slice_start, off - slice_start)?;
            pace.after_slice(off - slice_start);
            slice_start = off;
            slice = pace.next_slice().max(1);
        }
    }
    dst.sync_data()?;
    Ok(off)
}

/// An open file.
// A file's length is a size, not a collection count: `is_empty` would mean nothing here.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Sets the length, truncating or extending with zeros.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves space up to `len` bytes (reading as zeros) so later overwrites need no
    /// allocation. The default extends with `set_len`.
    fn preallocate(&self, len: u64) -> io::Result<()> {
        if self.len()? < len {
            self.set_len(len)?;
        }
        Ok(())
    }

    /// Starts writing `[offset, offset + len)` back to the disk without waiting, so a later
    /// fsync has less to do. A hint: the default does nothing.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// A read-only view of the file's first `len` bytes. The real implementation maps the
    /// file (memmap2); the default reads it into memory. Callers must only map bytes that
    /// no longer change.
    fn map(&self, len: u64) -> io::Result<Mapped> {
        let n = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        let mut buf = vec![0u8; n];
        self.read_exact_at(&mut buf, 0)?;
        Ok(Mapped(Arc::new(buf)))
    }

    /// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` if the file
    /// is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than expected",
                ));
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// A read-only byte view returned by [`StorageFile::map`]; cheap to clone.
#[derive(Clone)]
pub struct Mapped(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Mapped {
    /// Bytes held in memory, as if mapped.
    pub fn from_vec(v: Vec<u8>) -> Mapped {
        Mapped(Arc::new(v))
    }

    /// A view of a real file map.
    pub(crate) fn from_map(map: memmap2::Mmap) -> Mapped {
        Mapped(Arc::new(map))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes)", self.bytes().len())
    }
}

/// Holds a lock taken with [`Storage::lock`]; dropping it releases the lock.
pub struct LockGuard(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>);

impl LockGuard {
    /// Wraps whatever keeps the lock alive.
    pub fn new(inner: Box<dyn std::any::Any + Send + Sync>) -> Self {
        LockGuard(inner)
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Makes a new or renamed file durable: fsync the file, then its parent directory.
pub fn sync_file_and_dir(
    storage: &dyn Storage,
    file: &dyn StorageFile,
    path: &Path,
) -> io::Result<()> {
    file.sync_data()?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => storage.sync_dir(dir),
        _ => storage.sync_dir(Path::new(".")),
    }
}
