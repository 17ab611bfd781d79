//! One number for the whole on-disk format: the **Duplex format** (FORMAT.md section 26).
//!
//! Each structure keeps its own version field (segment header, store header and manifest,
//! backup manifest, STATE file, WAL record kinds); the Duplex format names the set a build
//! writes, so an operator, a support engineer or a migration has one number to go by.
//! Format 2 gathers the changes of the archive-and-lineage work: segment header version 2
//! (timeline, intended length), backup manifest version 3 (end LSN, timeline), epoch
//! records (WAL record kind 2) and the checkpoint's `max_epoch`, and the batch seen list.
//! Format 1 files (the golden files in `fixtures/`) are read as they are, without migration:
//! a database of format 1 goes on with its old segments and writes new ones in format 2.

use std::path::Path;

use duplex_wal::{OpenMode, Storage};

/// The Duplex format this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest Duplex format this build reads (every format from it up to
/// [`FORMAT_VERSION`] opens without a migration).
pub const OLDEST_FORMAT_READ: u32 = 1;

/// The Duplex format a WAL segment header of version `v` belongs to (0 for a version this
/// build does not know).
pub fn format_of_segment(v: u32) -> u32 {
    match v {
        1 => 1,
        2 => 2,
        _ => 0,
    }
}

/// The Duplex format a backup manifest of version `v` belongs to: version 1 is format 1;
/// versions 2 and 3 are format 2 (version 2 was written only by builds on the way to it).
/// 0 for a version this build does not know.
pub fn format_of_backup_manifest(v: u32) -> u32 {
    match v {
        1 => 1,
        2 | 3 => 2,
        _ => 0,
    }
}

/// The version field of a file that starts with an 8-byte magic and a little-endian `u32`
/// version (WAL segment headers, `BACKUP` manifests): `None` if it cannot be read.
pub fn version_field(storage: &dyn Storage, path: &Path) -> Option<u32> {
    let f = storage.open(path, OpenMode::Read).ok()?;
    let mut b = [0u8; 12];
    f.read_exact_at(&mut b, 0).ok()?;
    Some(u32::from_le_bytes([b[8], b[9], b[10], b[11]]))
}

/// A sentence on the format of files of Duplex format `format`, for `verify` and the like.
pub fn describe_format(format: u32) -> String {
    match format {
        f if f == FORMAT_VERSION => format!("Duplex format {f} (this build's)"),
        f if (OLDEST_FORMAT_READ..FORMAT_VERSION).contains(&f) => format!(
            "Duplex format {f}: read as it is, no migration needed; what a database writes from now on is format {FORMAT_VERSION}"
        ),
        f => format!(
            "Duplex format {f}: not one this build knows (it reads {OLDEST_FORMAT_READ} to {FORMAT_VERSION})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_structure_version_this_build_writes_is_of_the_current_format() {
        assert_eq!(
            format_of_segment(duplex_wal::format::FORMAT_VERSION),
            FORMAT_VERSION
        );
        assert_eq!(
            format_of_backup_manifest(crate::backup::BACKUP_VERSION),
            FORMAT_VERSION
        );
        assert_eq!(format_of_segment(1), 1);
        assert_eq!(format_of_segment(3), 0);
        assert_eq!(format_of_backup_manifest(1), 1);
        assert_eq!(format_of_backup_manifest(4), 0);
        assert!(describe_format(1).contains("no migration"));
        assert!(describe_format(2).contains("this build"));
        assert!(describe_format(9).contains("not one this build knows"));
    }
}
