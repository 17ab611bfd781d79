//! The restore target: refusing a non-empty directory, and with `--force` emptying it
//! carefully.
//!
//! "Carefully" means: only the entries inside the target are removed (symbolic links are
//! removed as links, never followed), and the target is refused when it is the root
//! directory, when it holds (or is) a backup or archive the restore reads from, or when a
//! running database holds it (its `LOCK` is taken).

use std::path::{Path, PathBuf};

use duplex_engine::LOCK_NAME;
use duplex_wal::{StdStorage, Storage};

use crate::exit::ToolError;

/// What preparing the target did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Entries removed from the target (with `--force`).
    pub removed: usize,
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, ToolError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| ToolError::operational(format!("cannot list {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for e in rd {
        let e =
            e.map_err(|e| ToolError::operational(format!("cannot list {}: {e}", dir.display())))?;
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

fn canonical(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// Makes sure `into` can receive a restore: it does not exist, or is an empty directory,
/// or (with `force`) is emptied first. `sources` are the backup and archive directories
/// the restore reads, which the target must not hold.
pub fn prepare_target(
    into: &Path,
    force: bool,
    sources: &[PathBuf],
) -> Result<Prepared, ToolError> {
    let meta = match std::fs::symlink_metadata(into) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Prepared::default()),
        Err(e) => {
            return Err(ToolError::operational(format!(
                "cannot look at the target {}: {e}",
                into.display()
            )))
        }
    };
    // A directory, or a symbolic link to one.
    if !meta.is_dir() && !into.is_dir() {
        return Err(ToolError::operational(format!(
            "the target {} exists and is not a directory; give a new or empty directory",
            into.display()
        )));
    }
    let found = entries(into)?;
    if found.is_empty() {
        return Ok(Prepared::default());
    }
    if !force {
        let shown: Vec<String> = found
            .iter()
            .take(3)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        return Err(ToolError::operational(format!(
            "the target {} is not empty ({} entries: {}{}); restore into a new or empty directory, or add --force to delete everything inside it first",
            into.display(),
            found.len(),
            shown.join(", "),
            if found.len() > 3 { ", ..." } else { "" }
        )));
    }
    let target = canonical(into).ok_or_else(|| {
        ToolError::operational(format!("cannot resolve the target {}", into.display()))
    })?;
    if target.parent().is_none() {
        return Err(ToolError::usage(format!(
            "refusing to empty {}: it is the root directory",
            target.display()
        )));
    }
    for s in sources {
        if let Some(src) = canonical(s) {
            if src.starts_with(&target) {
                return Err(ToolError::usage(format!(
                    "refusing to empty {}: it holds {}, which this restore reads; restore somewhere else",
                    into.display(),
                    s.display()
                )));
            }
        }
    }
    let lock = target.join(LOCK_NAME);
    if lock.exists() {
        match StdStorage.lock(&lock) {
            Ok(guard) => drop(guard),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(ToolError::operational(format!(
                    "refusing to empty {}: a running database holds it (its {LOCK_NAME} is taken); stop that process first",
                    into.display()
                )))
            }
            Err(e) => {
                return Err(ToolError::operational(format!(
                    "cannot check the lock {}: {e}",
                    lock.display()
                )))
            }
        }
    }
    for p in &found {
        let m = std::fs::symlink_metadata(p)
            .map_err(|e| ToolError::operational(format!("cannot look at {}: {e}", p.display())))?;
        let res = if m.is_dir() {
            // remove_dir_all does not follow symbolic links inside the tree.
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        res.map_err(|e| {
            ToolError::operational(format!(
                "--force: cannot remove {}: {e} (the target is partly emptied; fix the cause and run again)",
                p.display()
            ))
        })?;
    }
    Ok(Prepared {
        removed: found.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Code;

    #[test]
    fn a_non_empty_target_is_refused_unless_forced_and_then_only_its_contents_go() {
        let t = tempfile::tempdir().expect("tempdir");
        let into = t.path().join("into");
        assert_eq!(prepare_target(&into, false, &[]), Ok(Prepared::default()));
        std::fs::create_dir_all(into.join("sub")).expect("mkdir");
        std::fs::write(into.join("sub").join("f"), b"x").expect("write");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("keep"), b"keep").expect("write");
        std::os::unix::fs::symlink(&outside, into.join("link")).expect("symlink");
        let err = prepare_target(&into, false, &[]).expect_err("not empty");
        assert_eq!(err.code, Code::Operational);
        assert!(err.message.contains("--force"), "{}", err.message);
        assert_eq!(
            prepare_target(&into, true, &[]),
            Ok(Prepared { removed: 2 })
        );
        assert!(into.is_dir());
        assert_eq!(std::fs::read_dir(&into).expect("list").count(), 0);
        assert!(
            outside.join("keep").is_file(),
            "a link's target is never touched"
        );
    }

    #[test]
    fn a_target_holding_a_source_is_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let into = t.path().join("into");
        let backup = into.join("backup");
        std::fs::create_dir_all(&backup).expect("mkdir");
        let err =
            prepare_target(&into, true, std::slice::from_ref(&backup)).expect_err("holds a source");
        assert_eq!(err.code, Code::Usage);
        assert!(backup.is_dir());
    }
}
