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

    /// Copies `len` bytes of `from`, starting at `from_offset`, into the new file `to` (which
    /// must not exist) at offset 0, makes them durable (`sync_data` on `to`; the caller still
    /// syncs the directory) and returns the number of bytes copied (less than `len` only if
    /// `from` is shorter).
    ///
    /// The copy goes in slices of `slice` bytes, so that the disk writes overlap the copy
    /// and no single large flush is left to queue ahead of other files' small fsyncs (the
    /// WAL's) on the same disk. The default hands each finished slice to writeback
    /// ([`StorageFile::start_writeback`]); the real implementation writes one slice at a
    /// time with direct I/O where it can, else copies with `copy_file_range` and waits for
    /// each slice's writeback before the next but one, so at most about two slices are
    /// dirty. Only the final `sync_data` makes anything durable: a crash before it may keep
    /// any part of the copy, or none.
    fn copy_synced(
        &self,
        from: &Path,
        from_offset: u64,
        to: &Path,
        len: u64,
        slice: u64,
    ) -> io::Result<u64> {
        copy_synced_through(self, from, from_offset, to, len, slice)
    }
}

/// [`Storage::copy_synced`] through the trait's own reads and writes (the default, and the
/// real implementation's fallback where `copy_file_range` does not work).
fn copy_synced_through<S: Storage + ?Sized>(
    storage: &S,
    from: &Path,
    from_offset: u64,
    to: &Path,
    len: u64,
    slice: u64,
) -> io::Result<u64> {
    let slice = slice.max(1);
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
            slice_start = off;
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
        let src = File::open(from)?;
        let dst = OpenOptions::new().write(true).create_new(true).open(to)?;
        match kernel_copy(&src, 0, &dst, 0, len)? {
            Some(n) => Ok(n),
            None => {
                // Cross-device or unsupported: a buffered copy instead.
                drop(dst);
                fs::remove_file(to)?;
                buffered_copy(from, to, len)
            }
        }
    }

    fn copy_synced(
        &self,
        from: &Path,
        from_offset: u64,
        to: &Path,
        len: u64,
        slice: u64,
    ) -> io::Result<u64> {
        if let Some(n) = self.copy_synced_direct(from, from_offset, to, len, slice)? {
            return Ok(n);
        }
        match self.copy_synced_sliced(from, from_offset, to, len, slice)? {
            Some(n) => Ok(n),
            None => copy_synced_through(self, from, from_offset, to, len, slice),
        }
    }
}

impl StdStorage {
    /// [`Storage::copy_synced`] with direct I/O: maps the source range and writes it to `to`
    /// opened with `O_DIRECT`, one slice per write, so the disk reads the source's pages
    /// (from the page cache, or faulted in from the disk) without a copy in memory, the copy
    /// leaves no dirty pages behind, and at most one slice of it is ever queued at the disk.
    /// The last partial block goes through the page cache, then one `fdatasync` covers the
    /// rest (the file's metadata and the disk's write cache). Returns `None` (having removed
    /// `to` if it created it) where this does not apply: a source offset or range not
    /// aligned to 4 KiB blocks, a small range, or a file system without direct I/O.
    ///
    /// Reads the source through a map, like [`StorageFile::map`]: the range must not change
    /// or be truncated while it is copied.
    fn copy_synced_direct(
        &self,
        from: &Path,
        from_offset: u64,
        to: &Path,
        len: u64,
        slice: u64,
    ) -> io::Result<Option<u64>> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        const BLOCK: u64 = 4096;
        if !from_offset.is_multiple_of(BLOCK) || len < 2 * BLOCK {
            return Ok(None);
        }
        let src = File::open(from)?;
        let len = len.min(src.metadata()?.len().saturating_sub(from_offset));
        let (Ok(map_len), true) = (usize::try_from(len), len >= 2 * BLOCK) else {
            return Ok(None);
        };
        // SAFETY: the caller copies only bytes that no longer change, of a file that is
        // never truncated below them (the same contract as `StorageFile::map`); the range
        // lies inside the file's current length.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(from_offset)
                .len(map_len)
                .map(&src)?
        };
        let _ = map.advise(memmap2::Advice::Sequential);
        let dst = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(to)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        let whole = len / BLOCK * BLOCK;
        let slice = (slice / BLOCK).max(1) * BLOCK;
        let mut off = 0u64;
        while off < whole {
            let n = slice.min(whole - off);
            // Offsets below `whole` fit in usize: `whole <= len`, which does.
            let buf = &map[off as usize..(off + n) as usize];
            match dst.write_at(buf, off) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => off += w as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Direct I/O refused (alignment the device does not take): fall back.
                Err(e) if off == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                    drop(dst);
                    fs::remove_file(to)?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        if whole < len {
            // The last partial block: through the page cache.
            // SAFETY: the descriptor is open; fcntl only reads its arguments.
            let flags = unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_GETFL) };
            if flags < 0
                // SAFETY: as above.
                || unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_SETFL, flags & !libc::O_DIRECT) }
                    < 0
            {
                return Err(io::Error::last_os_error());
            }
            dst.write_all_at(&map[whole as usize..map_len], whole)?;
        }
        dst.sync_data()?;
        Ok(Some(len))
    }

    /// [`Storage::copy_synced`] with `copy_file_range` and `sync_file_range`. Returns `None`
    /// (having removed `to`) if the kernel cannot copy between these files, so the caller
    /// falls back to reads and writes.
    fn copy_synced_sliced(
        &self,
        from: &Path,
        from_offset: u64,
        to: &Path,
        len: u64,
        slice: u64,
    ) -> io::Result<Option<u64>> {
        use std::os::fd::AsRawFd;
        let slice = slice.max(1);
        let src = File::open(from)?;
        let dst = OpenOptions::new().write(true).create_new(true).open(to)?;
        // As cp does: the source is read once, front to back (a hint for cold files).
        // SAFETY: the descriptor is open; fadvise only reads its arguments.
        unsafe { libc::posix_fadvise(src.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
        let mut copied = 0u64;
        // The slice handed to writeback last, still to be waited for.
        let mut in_flight: Option<(u64, u64)> = None;
        while copied < len {
            let end = (copied + slice).min(len);
            let slice_start = copied;
            match kernel_copy(&src, from_offset + copied, &dst, copied, end - copied)? {
                Some(n) => copied += n,
                None => {
                    drop(dst);
                    fs::remove_file(to)?;
                    return Ok(None);
                }
            }
            if copied == slice_start {
                break; // the source ended
            }
            // Start writing this slice back, then wait for the one before it: the disk
            // writes one slice while the next is copied, and at most two are dirty.
            sync_range(
                &dst,
                slice_start,
                copied - slice_start,
                libc::SYNC_FILE_RANGE_WRITE,
            )?;
            if let Some((off, n)) = in_flight.take() {
                sync_range(
                    &dst,
                    off,
                    n,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                )?;
            }
            in_flight = Some((slice_start, copied - slice_start));
            if copied < end {
                break; // the source ended inside this slice
            }
        }
        // The data left (at most the last slice) and the metadata needed to read it; also
        // reports any writeback error of the earlier slices.
        dst.sync_data()?;
        Ok(Some(copied))
    }
}

/// Copies `len` bytes of `src` from `off_in` to `dst` at `off_out` with
/// `copy_file_range`, until done or the source ends; returns the bytes copied. `Ok(None)`
/// when the kernel cannot copy between these files (cross-device, unsupported) and nothing
/// was copied: the caller copies another way.
fn kernel_copy(
    src: &File,
    off_in: u64,
    dst: &File,
    off_out: u64,
    len: u64,
) -> io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    let mut copied = 0u64;
    while copied < len {
        let chunk = usize::try_from((len - copied).min(1 << 30)).unwrap_or(1 << 30);
        let (Ok(mut o_in), Ok(mut o_out)) = (
            libc::loff_t::try_from(off_in + copied),
            libc::loff_t::try_from(off_out + copied),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset too large",
            ));
        };
        // SAFETY: both descriptors are open for the duration of the call and the offset
        // pointers point at live locals.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut o_in,
                dst.as_raw_fd(),
                &mut o_out,
                chunk,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if copied == 0
                && matches!(
                    err.raw_os_error(),
                    Some(libc::EXDEV)
                        | Some(libc::ENOSYS)
                        | Some(libc::EOPNOTSUPP)
                        | Some(libc::EINVAL)
                )
            {
                return Ok(None);
            }
            return Err(err);
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
    }
    Ok(Some(copied))
}

/// `sync_file_range` on `[offset, offset + len)` of `file`; where the file system does not
/// support it, does nothing (the final fsync then does all the work).
fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Ok(());
    };
    loop {
        // SAFETY: the descriptor is open; sync_file_range only reads its arguments.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, flags) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ESPIPE) => return Ok(()),
            _ => return Err(err),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{CrashMode, SimStorage};

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn copy_synced_copies_every_slice_of_a_range_on_the_real_file_system() {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src");
        let data = pattern(1_000_003);
        std::fs::write(&src, &data).expect("write source");
        // Slices smaller than, equal to and larger than the range; ranges from the start,
        // from an unaligned offset, and reaching past the end of the source.
        for (i, (off, len, slice)) in [
            (0u64, data.len() as u64, 4096u64),
            (12_345, 300_001, 65_536),
            (4096, 200_000, 200_000),
            (1, 999_000, 1 << 30),
            (900_000, 500_000, 8192),
            (819_200, 500_000, 8192),
            (0, 0, 4096),
        ]
        .into_iter()
        .enumerate()
        {
            // Every way the real implementation may copy: the dispatch (direct I/O where
            // the range is aligned), the sliced copy_file_range and the plain reads and
            // writes it falls back to.
            for how in 0..4 {
                let dst = dir.path().join(format!("dst-{i}-{how}"));
                let n = match how {
                    0 => StdStorage.copy_synced(&src, off, &dst, len, slice),
                    1 => StdStorage
                        .copy_synced_direct(&src, off, &dst, len, slice)
                        .map(|n| n.unwrap_or(0)),
                    2 => StdStorage
                        .copy_synced_sliced(&src, off, &dst, len, slice)
                        .map(|n| n.expect("copy_file_range works here")),
                    _ => copy_synced_through(&StdStorage, &src, off, &dst, len, slice),
                }
                .expect("copy");
                if how == 1 && !dst.exists() {
                    assert!(
                        off % 4096 != 0 || len < 8192,
                        "case {i}: direct I/O declined"
                    );
                    continue;
                }
                let end = (off + len).min(data.len() as u64) as usize;
                assert_eq!(
                    n as usize,
                    end - off as usize,
                    "case {i}/{how}: bytes copied"
                );
                let got = std::fs::read(&dst).expect("read copy");
                assert!(got == data[off as usize..end], "case {i}/{how}: contents");
            }
        }
        let dst = dir.path().join("dst-0-0");
        assert!(StdStorage.copy_synced(&src, 0, &dst, 10, 4096).is_err());
    }

    fn sim_with_source(data: &[u8]) -> SimStorage {
        let sim = SimStorage::new();
        sim.create_dir_all(Path::new("/d")).expect("dir");
        let f = sim
            .open(Path::new("/d/src"), OpenMode::CreateNew)
            .expect("create");
        f.write_all_at(data, 0).expect("write");
        sync_file_and_dir(&sim, &*f, Path::new("/d/src")).expect("sync");
        sim
    }

    #[test]
    fn copy_synced_in_the_simulation_is_durable_only_once_it_returns() {
        let data = pattern(300_000);
        let (src, dst) = (Path::new("/d/src"), Path::new("/d/dst"));
        let sim = sim_with_source(&data);
        let n = sim
            .copy_synced(src, 1000, dst, 250_000, 32 << 10)
            .expect("copy");
        assert_eq!(n, 250_000);
        sim.sync_dir(Path::new("/d")).expect("sync dir");
        sim.crash(CrashMode::Torn { seed: 1 });
        assert_eq!(sim.contents(dst).as_deref(), Some(&data[1000..251_000]));

        // The final sync fails: the slices handed to writeback are not durable.
        let sim = sim_with_source(&data);
        sim.fail_sync_after(1);
        assert!(sim.copy_synced(src, 0, dst, 300_000, 32 << 10).is_err());
        sim.sync_dir(Path::new("/d")).expect("sync dir");
        sim.crash(CrashMode::LoseUnsynced);
        assert_eq!(sim.contents(dst).as_deref(), Some(&[][..]));

        // Power lost at every point of the copy: a copy that returned Ok (and whose name
        // was synced) survives whole; any other leaves at most a prefix of the source.
        let mut whole = 0;
        for ops in 0..40 {
            let sim = sim_with_source(&data);
            sim.power_off_after(ops);
            let ok = sim.copy_synced(src, 0, dst, 300_000, 32 << 10).is_ok()
                && sim.sync_dir(Path::new("/d")).is_ok();
            sim.crash(CrashMode::Torn { seed: ops });
            let got = sim.contents(dst).unwrap_or_default();
            if ok {
                assert!(
                    got == data,
                    "ops={ops}: a completed copy must survive whole"
                );
                whole += 1;
            } else {
                assert!(
                    data.starts_with(&got),
                    "ops={ops}: not a prefix of the source"
                );
            }
        }
        assert!(whole > 0, "no run got far enough to complete the copy");
    }
}
