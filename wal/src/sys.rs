//! The crate's only `unsafe` code: safe wrappers around the Linux calls (through `libc`)
//! and the file mapping (through `memmap2`) that [`crate::StdStorage`] needs.
//!
//! The crate root denies `unsafe_code`; each function here is allowed it alone, says why
//! its call is sound in a `// SAFETY:` comment, and returns a plain `io::Result` (the OS
//! error from `errno` on failure), so callers decide what an error means without touching
//! raw return codes. A descriptor passed in is borrowed from a live `File`, so it stays
//! open for the whole call.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `Ok` when a libc call returned 0 (or more), else the OS error it left in `errno`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Takes an exclusive `flock` on `file` without waiting (`WouldBlock` if another holder
/// has it). The lock lives as long as the descriptor.
#[allow(unsafe_code)]
pub(crate) fn flock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call; flock takes no pointers.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `copy_file_range` call: up to `len` bytes of `src` at `off_in` to `dst` at
/// `off_out`. Returns the bytes copied (0 at the source's end).
#[allow(unsafe_code)]
pub(crate) fn copy_file_range(
    src: &File,
    off_in: libc::loff_t,
    dst: &File,
    off_out: libc::loff_t,
    len: usize,
) -> io::Result<usize> {
    let (mut o_in, mut o_out) = (off_in, off_out);
    // SAFETY: both descriptors are open for the duration of the call and the offset
    // pointers point at live locals.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut o_in,
            dst.as_raw_fd(),
            &mut o_out,
            len,
            0,
        )
    };
    // A negative count is an error; any other fits usize.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `sync_file_range(file, offset, len, flags)`.
#[allow(unsafe_code)]
pub(crate) fn sync_file_range(
    file: &File,
    offset: libc::off64_t,
    len: libc::off64_t,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: the descriptor is open; sync_file_range only reads its arguments.
    check(unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) })
}

/// `fallocate(file, 0, 0, len)`: reserves the blocks of the file's first `len` bytes.
#[allow(unsafe_code)]
pub(crate) fn fallocate(file: &File, len: libc::off_t) -> io::Result<()> {
    // SAFETY: the descriptor is open; fallocate only reads its arguments.
    check(unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) })
}

/// Tells the kernel `file` will be read once, front to back (a hint; errors are ignored).
#[allow(unsafe_code)]
pub(crate) fn advise_sequential(file: &File) {
    // SAFETY: the descriptor is open; fadvise only reads its arguments.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

/// Turns `O_DIRECT` off on an open file, so further writes go through the page cache.
#[allow(unsafe_code)]
pub(crate) fn clear_direct_io(file: &File) -> io::Result<()> {
    // SAFETY: the descriptor is open; fcntl with F_GETFL takes no further argument.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    check(flags)?;
    // SAFETY: as above; F_SETFL reads the integer flags it is given.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_DIRECT) })
}

/// Maps `len` bytes of `file` from `offset`, read-only.
///
/// The map is sound only while those bytes do not change and the file is not truncated
/// below them; every caller maps committed bytes only (a closed segment, a checkpointed
/// store range), which are never written again, of files never truncated while a map of
/// them is alive: the contract of [`crate::StorageFile::map`].
#[allow(unsafe_code)]
pub(crate) fn map_read_only(file: &File, offset: u64, len: usize) -> io::Result<memmap2::Mmap> {
    // SAFETY: see above: the mapped bytes are immutable and stay inside the file for the
    // map's whole life, so the `&[u8]` it hands out never changes under a reader.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)
    }
}

/// Puts the calling thread at the lowest CPU priority (nice 19) and in the idle I/O class
/// (honoured where the disk's scheduler supports I/O priorities), for background work that
/// must yield to the foreground: a server's restore drill. Best effort: what the kernel
/// refuses is left as it was.
#[allow(unsafe_code)]
pub fn background_priority() {
    // SAFETY: plain syscalls on the calling thread's own id; no pointers are passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        // ioprio_set(IOPRIO_WHO_PROCESS = 1, tid, IOPRIO_CLASS_IDLE (3) << 13).
        libc::syscall(libc::SYS_ioprio_set, 1, tid, 3 << 13);
    }
}
