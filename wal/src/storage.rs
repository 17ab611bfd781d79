//! The storage trait: every file operation of the WAL (and of the engine above it) goes
//! through [`Storage`] and [`StorageFile`], so the same code runs on the real file system
//! ([`StdStorage`]) and on the simulated one ([`crate::sim::SimStorage`]) that loses unsynced
//! writes, tears writes and fails fsyncs on command.
//!
//! Durability contract, the same for both implementations:
//! - bytes written to a file survive a crash only after `sync_data` on that file;
//! - a file's *name* (create, rename, remove) survives a crash only after `sync_dir` on its
//!   parent directory. [`sync_file_and_dir`] does both, in that order.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
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

/// The real file system, through `std::fs` and a few Linux calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

#[derive(Debug)]
struct StdFile(File);

impl Storage for StdStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
            OpenMode::CreateTruncate => o.read(true).write(true).create(true).truncate(true),
        };
        Ok(Box::new(StdFile(o.open(path)?)))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        use std::os::fd::AsRawFd;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // SAFETY: the descriptor is open for the duration of the call.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // The lock lives as long as the descriptor: keep the file open in the guard.
        Ok(LockGuard::new(Box::new(f)))
    }

    fn copy_prefix(&self, from: &Path, to: &Path, len: u64) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        let src = File::open(from)?;
        let dst = OpenOptions::new().write(true).create_new(true).open(to)?;
        let mut copied = 0u64;
        while copied < len {
            let chunk = usize::try_from((len - copied).min(1 << 30)).unwrap_or(1 << 30);
            let mut off_in = copied as libc::loff_t;
            let mut off_out = copied as libc::loff_t;
            // SAFETY: both descriptors are open for the duration of the call and the offset
            // pointers point at live locals.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    chunk,
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                // Cross-device or unsupported: fall back to a buffered copy of the rest.
                if copied == 0
                    && matches!(
                        err.raw_os_error(),
                        Some(libc::EXDEV)
                            | Some(libc::ENOSYS)
                            | Some(libc::EOPNOTSUPP)
                            | Some(libc::EINVAL)
                    )
                {
                    drop(dst);
                    fs::remove_file(to)?;
                    return buffered_copy(from, to, len);
                }
                return Err(err);
            }
            if n == 0 {
                break;
            }
            copied += n as u64;
        }
        Ok(copied)
    }
}

fn buffered_copy(from: &Path, to: &Path, len: u64) -> io::Result<u64> {
    use std::io::{Read, Write};
    let src = File::open(from)?;
    let mut dst = OpenOptions::new().write(true).create_new(true).open(to)?;
    let n = io::copy(&mut src.take(len), &mut dst)?;
    dst.flush()?;
    Ok(n)
}

impl StorageFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Ok(());
        };
        // SAFETY: the descriptor is open; sync_file_range only reads its arguments.
        let rc = unsafe {
            libc::sync_file_range(self.0.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // Not every file system supports it; it is only a hint.
            if matches!(
                err.raw_os_error(),
                Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ESPIPE)
            ) {
                return Ok(());
            }
            return Err(err);
        }
        Ok(())
    }

    fn map(&self, len: u64) -> io::Result<Mapped> {
        if len == 0 {
            return Ok(Mapped(Arc::new(Vec::new())));
        }
        let n = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        // SAFETY: callers map only committed bytes, which are never written again; the
        // file is never truncated below a length that a live map covers.
        let map = unsafe { memmap2::MmapOptions::new().len(n).map(&self.0)? };
        Ok(Mapped(Arc::new(map)))
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let Ok(len_off) = libc::off_t::try_from(len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "length too large",
            ));
        };
        // SAFETY: the descriptor is open; fallocate only reads its arguments.
        let rc = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, 0, len_off) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // File systems without fallocate: a sparse extension still reads as zeros.
            if self.len()? < len {
                self.set_len(len)?;
            }
            return Ok(());
        }
        Err(err)
    }
}
