//! The committed golden files under `fixtures/` at the workspace root: where they are, a
//! scratch copy to open (opening may repair or extend what it opens, and the committed
//! bytes must stay as they are), and the two kinds of damage the damaged variants carry.
//! See `fixtures/README.md` for what each file is and how it was made.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::dirs::{copy_tree, temp_dir, TempDir};

/// The fixtures folder of one crate's formats: `fixtures/<name>` at the workspace root.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
        .join(name)
}

/// A scratch copy of the fixture directory `fixture` (e.g. `dir("wal").join("intact")`),
/// removed on drop; the copy is at `<temp>/<last component of fixture>`.
///
/// # Panics
/// If the fixture is missing or cannot be copied.
pub fn scratch_copy(fixture: &Path) -> (TempDir, PathBuf) {
    let t = temp_dir();
    let name = fixture
        .file_name()
        .unwrap_or_else(|| panic!("fixture path {} has no name", fixture.display()));
    let to = t.path().join(name);
    copy_tree(fixture, &to)
        .unwrap_or_else(|e| panic!("copying the fixture {}: {e}", fixture.display()));
    (t, to)
}

/// Flips every bit of the byte at `offset` of `path`.
pub fn flip_byte(path: &Path, offset: u64) -> io::Result<()> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)?;
    b[0] ^= 0xFF;
    f.write_all_at(&b, offset)
}

/// Cuts `path` to its first `len` bytes.
pub fn cut(path: &Path, len: u64) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.set_len(len)
}

/// Replaces the directory `to` with a copy of `from` (for a generator that writes
/// fixtures).
pub fn replace_dir(from: &Path, to: &Path) -> io::Result<()> {
    if to.exists() {
        fs::remove_dir_all(to)?;
    }
    copy_tree(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_and_scratch_copies_leave_the_original_alone() {
        let t = temp_dir();
        let orig = t.path().join("orig");
        fs::create_dir_all(orig.join("sub")).expect("mkdir");
        fs::write(orig.join("sub").join("f"), [1u8, 2, 3, 4]).expect("write");
        let (_s, copy) = scratch_copy(&orig);
        let f = copy.join("sub").join("f");
        flip_byte(&f, 1).expect("flip");
        assert_eq!(fs::read(&f).expect("read"), [1, 0xFD, 3, 4]);
        cut(&f, 2).expect("cut");
        assert_eq!(fs::read(&f).expect("read"), [1, 0xFD]);
        assert_eq!(
            fs::read(orig.join("sub").join("f")).expect("read"),
            [1, 2, 3, 4]
        );
        assert!(dir("wal").ends_with("fixtures/wal"));
    }
}
