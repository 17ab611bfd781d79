//! Copying closed segments into an archive directory.
//!
//! Invariant: the archive never holds a half-written segment under its final name. A copy
//! is written as `<name>.tmp`, fsynced, renamed to `<name>`, and the directory is fsynced.
//! A leftover `.tmp` (from a crash mid-copy) is ignored by readers and replaced on retry.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage};

/// Copies the first `len` bytes of the closed segment `src` (its header and records, not
/// its pre-allocated tail) into `archive_dir` under the same name. Returns the archived
/// path. If the archive already holds that segment with the same length, nothing is done.
pub fn archive_segment(
    storage: &dyn Storage,
    src: &Path,
    len: u64,
    archive_dir: &Path,
) -> Result<PathBuf> {
    let name = src
        .file_name()
        .ok_or_else(|| Error::Config(format!("{} has no file name", src.display())))?;
    let dest = archive_dir.join(name);
    if storage.exists(&dest) {
        let have = storage
            .open(&dest, OpenMode::Read)
            .and_then(|f| f.len())
            .map_err(|e| Error::io("stat", &dest, e))?;
        if have == len {
            return Ok(dest);
        }
        return Err(Error::Config(format!(
            "the archive already holds {} with {have} bytes, but the segment has {len}; \
             move the archived copy aside and compare them",
            dest.display()
        )));
    }
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = archive_dir.join(tmp_name);
    if storage.exists(&tmp) {
        storage
            .remove_file(&tmp)
            .map_err(|e| Error::io("remove stale copy", &tmp, e))?;
    }
    let copied = storage
        .copy_prefix(src, &tmp, len)
        .map_err(|e| Error::io("copy to archive", &tmp, e))?;
    if copied != len {
        return Err(Error::io(
            "copy to archive",
            src,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("copied {copied} of {len} bytes"),
            ),
        ));
    }
    storage
        .open(&tmp, OpenMode::ReadWrite)
        .and_then(|f| f.sync_data())
        .map_err(|e| Error::io("fsync", &tmp, e))?;
    storage
        .rename(&tmp, &dest)
        .map_err(|e| Error::io("rename", &dest, e))?;
    storage
        .sync_dir(archive_dir)
        .map_err(|e| Error::io("fsync directory", archive_dir, e))?;
    Ok(dest)
}

/// Removes archived segments whose records all lie below `below_lsn` (a segment goes when
/// the next one starts at or below `below_lsn`); the newest segment always stays. For
/// retention: call it with the checkpoint LSN + 1 of the oldest backup still kept, after a
/// newer backup has completed. Returns the removed files.
pub fn prune_archive(
    storage: &dyn Storage,
    archive_dir: &Path,
    below_lsn: u64,
) -> Result<Vec<PathBuf>> {
    let segs = crate::reader::list_segments(storage, &[archive_dir.to_path_buf()])?;
    let mut removed = Vec::new();
    for pair in segs.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= below_lsn {
            storage
                .remove_file(path)
                .map_err(|e| Error::io("remove archived segment", path, e))?;
            removed.push(path.clone());
        }
    }
    if !removed.is_empty() {
        storage
            .sync_dir(archive_dir)
            .map_err(|e| Error::io("fsync directory", archive_dir, e))?;
    }
    Ok(removed)
}
