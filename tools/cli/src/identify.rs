//! What a path given on the command line is: a backup directory (it has a `BACKUP`
//! manifest), a database data directory (a `MANIFEST`, store files and `wal/`), a directory
//! of WAL segments (an archive, or the `wal/` of a data directory), or one segment file.

use std::path::{Path, PathBuf};

use duplex_engine::backup::BACKUP_MANIFEST;
use duplex_engine::{MANIFEST_NAME, WAL_DIR};
use duplex_wal::format::parse_segment_file_name;

use crate::exit::ToolError;

/// The kinds of path the tools understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A backup directory.
    Backup,
    /// A database data directory.
    DataDir,
    /// A directory of WAL segments.
    WalDir {
        /// True when it is the `wal/` of a data directory: the log a database writes, whose
        /// last segment may end in a torn tail after a crash (the database cuts it at open),
        /// unlike an archive, where every segment must be whole.
        live: bool,
    },
    /// One WAL segment file.
    Segment,
}

impl Kind {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::DataDir => "data directory",
            Kind::WalDir { live: true } => "WAL directory",
            Kind::WalDir { live: false } => "WAL archive",
            Kind::Segment => "WAL segment",
        }
    }
}

/// True if `dir` is the `wal/` directory of a data directory.
pub fn is_live_wal_dir(dir: &Path) -> bool {
    dir.file_name().is_some_and(|n| n == WAL_DIR)
        && dir
            .parent()
            .is_some_and(|p| p.join(MANIFEST_NAME).is_file())
}

/// Decides what `path` is by looking at it (nothing is opened for writing).
pub fn identify(path: &Path) -> Result<Kind, ToolError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ToolError::usage(format!("{} does not exist", path.display()))
        } else {
            ToolError::operational(format!("cannot look at {}: {e}", path.display()))
        }
    })?;
    if meta.is_file() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        return match name {
            Some(n) if n.ends_with(".wal") => Ok(Kind::Segment),
            _ => Err(ToolError::usage(format!(
                "{} is a file but not a WAL segment (*.wal); give a backup directory, a WAL archive directory, a data directory or a *.wal file",
                path.display()
            ))),
        };
    }
    if path.join(BACKUP_MANIFEST).is_file() {
        if path.extension().is_some_and(|e| e == "tmp") {
            // Written but never renamed to its final name: the backup did not complete
            // (the name is given last), and nothing reads a `.tmp`.
            return Err(ToolError::damaged(format!(
                "{} is not a complete backup: a backup is written as <name>.tmp and renamed when whole, and this one never was (it failed, or is still being written); restore from another backup, or take a new one",
                path.display()
            )));
        }
        return Ok(Kind::Backup);
    }
    if path.join(MANIFEST_NAME).is_file() {
        // Every data directory has its wal/ (the database creates it at open); a store and
        // manifest without it, and without a BACKUP manifest, is what a backup cut off
        // before its end leaves.
        let tmp = path.extension().is_some_and(|e| e == "tmp");
        if tmp || !path.join(WAL_DIR).is_dir() {
            return Err(ToolError::damaged(format!(
                "{} holds a {MANIFEST_NAME} but no {BACKUP_MANIFEST} manifest and no {WAL_DIR}/ directory: it is not a complete backup (a backup that failed or is still being written) nor a whole data directory; restore from another backup, or take a new one with `duplex-recover backup`",
                path.display()
            )));
        }
        return Ok(Kind::DataDir);
    }
    let names = std::fs::read_dir(path)
        .map_err(|e| ToolError::operational(format!("cannot list {}: {e}", path.display())))?;
    let (mut has_segment, mut has_store) = (false, false);
    for entry in names {
        let entry = entry
            .map_err(|e| ToolError::operational(format!("cannot list {}: {e}", path.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        has_segment |= parse_segment_file_name(&name).is_some();
        has_store |= name.ends_with(".dpx") || name.ends_with(".dpx.inc");
    }
    if has_store || path.extension().is_some_and(|e| e == "tmp") {
        // A store copy (and WAL segments) without either manifest is what a backup cut
        // off before its end leaves: never an archive, never OK.
        return Err(ToolError::damaged(format!(
            "{} holds {} but no {BACKUP_MANIFEST} manifest and no {MANIFEST_NAME}: it is not a complete backup (a backup that failed or is still being written); restore from another backup, or take a new one with `duplex-recover backup`",
            path.display(),
            if has_store { "a store file" } else { "the name of a backup being written (*.tmp)" }
        )));
    }
    if has_segment || has_lineage_dirs(path) {
        return Ok(Kind::WalDir {
            live: is_live_wal_dir(path),
        });
    }
    if path.join(WAL_DIR).is_dir() {
        return Err(ToolError::damaged(format!(
            "{} has a {WAL_DIR}/ directory but no {MANIFEST_NAME}: if it is a data directory, its manifest is lost (restore it with `duplex-recover restore --backup DIR --archive DIR --into NEW_DIR` from a backup plus the archive)",
            path.display()
        )));
    }
    Err(ToolError::usage(format!(
        "{} holds no {BACKUP_MANIFEST} file, no {MANIFEST_NAME} and no WAL segment (*.wal): it is not a backup, a data directory or a WAL archive",
        path.display()
    )))
}

/// True if `dir` is an archive root: it holds lineage subdirectories (`n<node>-t<timeline>`,
/// FORMAT.md section 11), which the WAL reader resolves to the history asked for.
pub fn has_lineage_dirs(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|names| {
        names.flatten().any(|e| {
            duplex_wal::parse_archive_subdir(&e.file_name().to_string_lossy()).is_some()
                && e.path().is_dir()
        })
    })
}

/// The directory of WAL segments that belongs to `path` of kind `kind`: the path itself
/// for a WAL directory, `wal/` inside a data directory, the parent of a segment file.
/// `None` for a backup, which holds no WAL.
pub fn wal_dir_of(path: &Path, kind: &Kind) -> Option<PathBuf> {
    match kind {
        Kind::Backup => None,
        Kind::DataDir => Some(path.join(WAL_DIR)),
        Kind::WalDir { .. } => Some(path.to_path_buf()),
        Kind::Segment => Some(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path();
        std::fs::create_dir_all(p.join("b")).expect("mkdir");
        std::fs::write(p.join("b").join(BACKUP_MANIFEST), b"x").expect("write");
        assert_eq!(identify(&p.join("b")), Ok(Kind::Backup));
        std::fs::create_dir_all(p.join("d").join(WAL_DIR)).expect("mkdir");
        std::fs::write(p.join("d").join(MANIFEST_NAME), b"x").expect("write");
        assert_eq!(identify(&p.join("d")), Ok(Kind::DataDir));
        let seg = p.join("d").join(WAL_DIR).join("00000000000000000001.wal");
        std::fs::write(&seg, b"x").expect("write");
        assert_eq!(
            identify(&p.join("d").join(WAL_DIR)),
            Ok(Kind::WalDir { live: true })
        );
        assert_eq!(identify(&seg), Ok(Kind::Segment));
        std::fs::create_dir_all(p.join("a")).expect("mkdir");
        std::fs::write(p.join("a").join("00000000000000000007.wal"), b"x").expect("write");
        assert_eq!(identify(&p.join("a")), Ok(Kind::WalDir { live: false }));
        std::fs::create_dir_all(p.join("empty")).expect("mkdir");
        assert_eq!(
            identify(&p.join("empty")).map_err(|e| e.code),
            Err(crate::exit::Code::Usage)
        );
        assert_eq!(
            identify(&p.join("nope")).map_err(|e| e.code),
            Err(crate::exit::Code::Usage)
        );
        assert_eq!(
            wal_dir_of(&seg, &Kind::Segment),
            Some(p.join("d").join(WAL_DIR))
        );
    }
}
