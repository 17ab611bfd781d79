//! Temporary directories and whole-tree copies for tests.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

/// A temporary directory, removed on drop (`tempfile`'s).
pub use tempfile::TempDir;

/// A fresh, empty temporary directory, removed on drop.
///
/// # Panics
/// If the system temporary directory cannot be written.
pub fn temp_dir() -> TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("creating a temporary directory: {e}"))
}

/// Copies the tree `from` (files and subdirectories) into `to`, creating `to`; stops at the
/// first error.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else {
            fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

/// Appends a line `  <path> <bytes>` for every file under `dir`, in name order, to `out`
/// (for failure notes; what cannot be read is left out).
pub fn listing(dir: &Path, out: &mut String) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    let mut v: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    v.sort();
    for p in v {
        if p.is_dir() {
            listing(&p, out);
        } else {
            let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            let _ = writeln!(out, "  {} {len}", p.display());
        }
    }
}
