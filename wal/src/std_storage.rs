//! [`StdStorage`]: the [`Storage`] trait on the real (Linux) file system, through `std::fs`
//! and a few Linux calls (`flock`, `fallocate`, `copy_file_range`, `sync_file_range`,
//! `O_DIRECT`, file maps), whose `unsafe` lives in [`crate::sys`].
//!
//! It keeps the durability contract of [`crate::storage`]: nothing here makes data durable
//! except `sync_data`/`sync_dir` (and the copy functions' own final `sync_data`), and every
//! faster path (direct I/O, kernel copies, write-back hints) falls back to plain reads and
//! writes where the file system does not support it, with the same result.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::storage::{
    copy_synced_through, CopyPace, LockGuard, Mapped, OpenMode, Storage, StorageFile,
};
use crate::sys;

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

    fn available_space(&self, path: &Path) -> io::Result<Option<u64>> {
        // statvfs takes a path, not a descriptor: it works when descriptors have run out.
        let st = rustix::fs::statvfs(path)?;
        Ok(Some(st.f_bavail.saturating_mul(st.f_frsize)))
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        sys::flock_exclusive(&f)?;
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
        pace: &mut dyn CopyPace,
    ) -> io::Result<u64> {
        if let Some(n) = self.copy_synced_direct(from, from_offset, to, len, pace)? {
            return Ok(n);
        }
        match self.copy_synced_sliced(from, from_offset, to, len, pace)? {
            Some(n) => Ok(n),
            None => copy_synced_through(self, from, from_offset, to, len, pace),
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
        pace: &mut dyn CopyPace,
    ) -> io::Result<Option<u64>> {
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
        // The caller copies only bytes that no longer change, of a file that is never
        // truncated below them (the contract of `StorageFile::map`); the range lies inside
        // the file's current length.
        let map = sys::map_read_only(&src, from_offset, map_len)?;
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
        let mut off = 0u64;
        while off < whole {
            let slice = (pace.next_slice() / BLOCK).max(1) * BLOCK;
            let n = slice.min(whole - off);
            // Offsets below `whole` fit in usize: `whole <= len`, which does.
            let buf = &map[off as usize..(off + n) as usize];
            match dst.write_at(buf, off) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => {
                    off += w as u64;
                    pace.after_slice(w as u64);
                }
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
            sys::clear_direct_io(&dst)?;
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
        pace: &mut dyn CopyPace,
    ) -> io::Result<Option<u64>> {
        let src = File::open(from)?;
        let dst = OpenOptions::new().write(true).create_new(true).open(to)?;
        // As cp does: the source is read once, front to back (a hint for cold files).
        sys::advise_sequential(&src);
        let mut copied = 0u64;
        // The slice handed to writeback last, still to be waited for.
        let mut in_flight: Option<(u64, u64)> = None;
        while copied < len {
            let end = (copied + pace.next_slice().max(1)).min(len);
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
            pace.after_slice(copied - slice_start);
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
    let mut copied = 0u64;
    while copied < len {
        let chunk = usize::try_from((len - copied).min(1 << 30)).unwrap_or(1 << 30);
        let (Ok(o_in), Ok(o_out)) = (
            libc::loff_t::try_from(off_in + copied),
            libc::loff_t::try_from(off_out + copied),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset too large",
            ));
        };
        let n = match sys::copy_file_range(src, o_in, dst, o_out, chunk) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if copied == 0
                    && matches!(
                        err.raw_os_error(),
                        Some(libc::EXDEV)
                            | Some(libc::ENOSYS)
                            | Some(libc::EOPNOTSUPP)
                            | Some(libc::EINVAL)
                    ) =>
            {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
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
    let (Ok(off), Ok(n)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return Ok(());
    };
    loop {
        let Err(err) = sys::sync_file_range(file, off, n, flags) else {
            return Ok(());
        };
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
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Ok(());
        };
        match sys::sync_file_range(&self.0, off, n, libc::SYNC_FILE_RANGE_WRITE) {
            // Not every file system supports it; it is only a hint.
            Err(err)
                if !matches!(
                    err.raw_os_error(),
                    Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ESPIPE)
                ) =>
            {
                Err(err)
            }
            _ => Ok(()),
        }
    }

    fn map(&self, len: u64) -> io::Result<Mapped> {
        if len == 0 {
            return Ok(Mapped::from_vec(Vec::new()));
        }
        let n = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        // Callers map only committed bytes, which are never written again, of a file never
        // truncated below a length that a live map covers (this trait method's contract).
        Ok(Mapped::from_map(sys::map_read_only(&self.0, 0, n)?))
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        let Ok(len_off) = libc::off_t::try_from(len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "length too large",
            ));
        };
        let Err(err) = sys::fallocate(&self.0, len_off) else {
            return Ok(());
        };
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
    use crate::storage::sync_file_and_dir;

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
                let mut slice = slice;
                let n = match how {
                    0 => StdStorage.copy_synced(&src, off, &dst, len, &mut slice),
                    1 => StdStorage
                        .copy_synced_direct(&src, off, &dst, len, &mut slice)
                        .map(|n| n.unwrap_or(0)),
                    2 => StdStorage
                        .copy_synced_sliced(&src, off, &dst, len, &mut slice)
                        .map(|n| n.expect("copy_file_range works here")),
                    _ => copy_synced_through(&StdStorage, &src, off, &dst, len, &mut slice),
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
        assert!(StdStorage
            .copy_synced(&src, 0, &dst, 10, &mut 4096)
            .is_err());
    }

    /// A pace that changes the slice length as it goes and counts what it was told.
    struct Varying {
        lens: Vec<u64>,
        told: u64,
        calls: u64,
    }

    impl CopyPace for Varying {
        fn next_slice(&mut self) -> u64 {
            self.lens[(self.calls as usize) % self.lens.len()]
        }

        fn after_slice(&mut self, n: u64) {
            self.told += n;
            self.calls += 1;
        }
    }

    #[test]
    fn a_copy_whose_pace_varies_the_slices_copies_every_byte_and_reports_each_slice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src");
        let data = pattern(3_000_017);
        std::fs::write(&src, &data).expect("write source");
        for how in 0..4 {
            let dst = dir.path().join(format!("dst-{how}"));
            let mut pace = Varying {
                lens: vec![4096, 1 << 20, 65_536, 12_288],
                told: 0,
                calls: 0,
            };
            let len = data.len() as u64;
            let n = match how {
                0 => StdStorage.copy_synced(&src, 0, &dst, len, &mut pace),
                1 => StdStorage
                    .copy_synced_direct(&src, 0, &dst, len, &mut pace)
                    .map(|n| n.unwrap_or(0)),
                2 => StdStorage
                    .copy_synced_sliced(&src, 0, &dst, len, &mut pace)
                    .map(|n| n.expect("copy_file_range works here")),
                _ => copy_synced_through(&StdStorage, &src, 0, &dst, len, &mut pace),
            }
            .expect("copy");
            if how == 1 && !dst.exists() {
                continue; // no direct I/O on this file system
            }
            assert_eq!(n, len, "{how}: bytes copied");
            assert!(
                std::fs::read(&dst).expect("read") == data,
                "{how}: contents"
            );
            // Every slice but a final partial one (written another way) was reported.
            assert!(
                pace.told + (1 << 20) >= len && pace.told <= len,
                "{how}: {}",
                pace.told
            );
            assert!(pace.calls >= 4, "{how}: {} slices", pace.calls);
        }
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
            .copy_synced(src, 1000, dst, 250_000, &mut (32 << 10))
            .expect("copy");
        assert_eq!(n, 250_000);
        sim.sync_dir(Path::new("/d")).expect("sync dir");
        sim.crash(CrashMode::Torn { seed: 1 });
        assert_eq!(sim.contents(dst).as_deref(), Some(&data[1000..251_000]));

        // The final sync fails: the slices handed to writeback are not durable.
        let sim = sim_with_source(&data);
        sim.fail_sync_after(1);
        assert!(sim
            .copy_synced(src, 0, dst, 300_000, &mut (32 << 10))
            .is_err());
        sim.sync_dir(Path::new("/d")).expect("sync dir");
        sim.crash(CrashMode::LoseUnsynced);
        assert_eq!(sim.contents(dst).as_deref(), Some(&[][..]));

        // Power lost at every point of the copy: a copy that returned Ok (and whose name
        // was synced) survives whole; any other leaves at most a prefix of the source.
        let mut whole = 0;
        for ops in 0..40 {
            let sim = sim_with_source(&data);
            sim.power_off_after(ops);
            let ok = sim
                .copy_synced(src, 0, dst, 300_000, &mut (32 << 10))
                .is_ok()
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
