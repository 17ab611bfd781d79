//! Where the data, the archive and the backups live: at start-up, whether the archive or the
//! backup directory is on the data's file system. They then die with the data disk, so
//! `duplexd` warns in the log and INFO shows `archive_same_fs` and `backup_same_fs`.
//!
//! Two paths are on one file system when their device ids (`st_dev`) are equal; a directory
//! not created yet is judged by its nearest existing parent, where it will be created.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::ServerConfig;

/// What the start-up check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Disks {
    /// The archive is on the data's file system (false when there is no archive).
    pub archive_same_fs: bool,
    /// The backup directory is on the data's file system.
    pub backup_same_fs: bool,
}

/// The device id of `p`, or of its nearest existing parent; `None` if none can be read.
fn device(p: &Path) -> Option<u64> {
    let abs = std::path::absolute(p).ok()?;
    abs.ancestors()
        .find_map(|a| std::fs::metadata(a).ok())
        .map(|m| m.dev())
}

/// Whether `a` and `b` are on one file system (false when either cannot be read).
pub fn same_fs(a: &Path, b: &Path) -> bool {
    matches!((device(a), device(b)), (Some(x), Some(y)) if x == y)
}

/// Compares the archive and backup directories with the data directory and warns (log) for
/// each that shares its file system.
pub fn check(cfg: &ServerConfig) -> Disks {
    // The local cache of s3:// locations is meant to share the data's disk.
    let cache = crate::remote::cache_dir(&cfg.data);
    let d = Disks {
        archive_same_fs: cfg
            .archive()
            .is_some_and(|a| !a.starts_with(&cache) && same_fs(&cfg.data, a)),
        backup_same_fs: !cfg.backup_dir.starts_with(&cache) && same_fs(&cfg.data, &cfg.backup_dir),
    };
    if d.archive_same_fs {
        tracing::warn!(event = "archive_same_fs", data = %cfg.data.display(), archive = %cfg.archive_dir.display(),
            "the WAL archive is on the same file system as the data: losing that disk loses both; put archive_dir on another disk");
    }
    if d.backup_same_fs {
        tracing::warn!(event = "backup_same_fs", data = %cfg.data.display(), backups = %cfg.backup_dir.display(),
            "the backups are on the same file system as the data: losing that disk loses both; put backup_dir on another disk");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_and_missing_directories() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::create_dir(&a).unwrap();
        assert!(same_fs(&a, d.path()));
        assert!(same_fs(&a, &d.path().join("not/yet/made")));
        // /proc is its own file system wherever the temporary directory is.
        assert!(!same_fs(&a, Path::new("/proc/self")));
    }
}
