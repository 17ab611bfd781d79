//! The `REBUILDING` marker (docs/FORMAT.md section 27): a rebuilt data directory that has
//! not finished its write hold yet. It is written into the staging database before that
//! directory is renamed into place, so the rename installs both at once, and removed only
//! once the state is `running` after the hold. A server that finds it at start (killed
//! between the install and the end of the hold) resumes: `recovering`, catch-up from the
//! peer the marker names, the write hold, `running`, whether or not it was started with
//! `--rebuild-from` again.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::Error;

/// The marker's file name in the data directory.
pub const MARKER_FILE: &str = "REBUILDING";
/// Its magic.
const MAGIC: [u8; 8] = *b"DPXREBLD";
/// Its format version.
const VERSION: u32 = 1;
/// Bytes before the peer's address.
const HEAD: usize = 32;
/// The longest peer address accepted.
const MAX_PEER: usize = 1024;

/// What an unfinished rebuild must still do: catch up with node `from_node` at `peer` and
/// end with the write hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The node the backup came from (whose mark must reach the hold's cut-off).
    pub from_node: u64,
    /// This node's incarnation after the rebuild (for the log).
    pub incarnation: u64,
    /// The peer's address (`HOST:PORT`) the write hold is asked of.
    pub peer: String,
}

impl Unfinished {
    /// The marker's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let peer = self.peer.as_bytes();
        let mut b = Vec::with_capacity(HEAD + peer.len() + 4);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&(peer.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.from_node.to_le_bytes());
        b.extend_from_slice(&self.incarnation.to_le_bytes());
        b.extend_from_slice(peer);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a marker's bytes; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<Unfinished, String> {
        if b.len() < HEAD + 4 {
            return Err(format!("{} bytes, at least {} expected", b.len(), HEAD + 4));
        }
        if b[0..8] != MAGIC {
            return Err("not a rebuild marker (magic)".into());
        }
        let u32_at = |at: usize| {
            let mut x = [0u8; 4];
            x.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(x)
        };
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        let n = u32_at(12) as usize;
        if n > MAX_PEER || b.len() != HEAD + n + 4 {
            return Err(format!(
                "{} bytes for a peer address of {n} bytes ({} expected)",
                b.len(),
                HEAD + n.min(MAX_PEER) + 4
            ));
        }
        let (stored, computed) = (u32_at(HEAD + n), crc32c::crc32c(&b[..HEAD + n]));
        if stored != computed {
            return Err(format!(
                "checksum {stored:#010x} stored, {computed:#010x} computed"
            ));
        }
        let v = u32_at(8);
        if v != VERSION {
            return Err(format!("version {v}, only {VERSION} is known"));
        }
        let peer = std::str::from_utf8(&b[HEAD..HEAD + n])
            .map_err(|_| "the peer address is not UTF-8".to_string())?;
        Ok(Unfinished {
            from_node: u64_at(16),
            incarnation: u64_at(24),
            peer: peer.to_owned(),
        })
    }
}

/// Writes the marker into `dir` (the staging database, before it is renamed into place),
/// fsynced with its directory.
pub fn write(dir: &Path, u: &Unfinished) -> Result<(), Error> {
    let path = dir.join(MARKER_FILE);
    let io = |op: &'static str| {
        let path = path.clone();
        move |source| Error::Io { op, path, source }
    };
    let mut f = File::create(&path).map_err(io("create the rebuild marker"))?;
    f.write_all(&u.encode())
        .map_err(io("write the rebuild marker"))?;
    f.sync_all().map_err(io("fsync the rebuild marker"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the directory of the rebuild marker"))
}

/// The marker in the data directory `dir`, if any. A damaged marker refuses the start:
/// a rebuild that may not have caught up must never turn `running` by guess.
pub fn load(dir: &Path) -> Result<Option<Unfinished>, Error> {
    let path = dir.join(MARKER_FILE);
    match fs::read(&path) {
        Ok(b) => Unfinished::decode(&b)
            .map(Some)
            .map_err(|why| Error::RebuildMarker { path, why }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            op: "read the rebuild marker",
            path,
            source,
        }),
    }
}

/// Removes the marker (the rebuild is finished: the state is `running`), durably.
pub fn remove(dir: &Path) -> Result<(), Error> {
    let path = dir.join(MARKER_FILE);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                op: "remove the rebuild marker",
                path,
                source,
            })
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            op: "fsync the data directory after removing the rebuild marker",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_any_damage_is_refused() {
        let u = Unfinished {
            from_node: 7,
            incarnation: 3,
            peer: "10.0.0.2:7379".into(),
        };
        let b = u.encode();
        assert_eq!(b.len(), HEAD + 13 + 4);
        assert_eq!(&b[0..8], b"DPXREBLD");
        assert_eq!(Unfinished::decode(&b).unwrap(), u);
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x20;
            assert!(Unfinished::decode(&d).is_err(), "byte {i} flipped");
        }
        assert!(Unfinished::decode(&b[..b.len() - 1]).is_err());
        assert!(Unfinished::decode(&[]).is_err());
    }

    #[test]
    fn a_marker_is_written_loaded_and_removed() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        let u = Unfinished {
            from_node: 1,
            incarnation: 2,
            peer: "127.0.0.1:1".into(),
        };
        write(d.path(), &u).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(u));
        std::fs::write(d.path().join(MARKER_FILE), b"DPXREBLD junk").unwrap();
        let e = load(d.path()).unwrap_err().to_string();
        assert!(e.contains("REBUILDING") && e.contains("damaged"), "{e}");
        remove(d.path()).unwrap();
        remove(d.path()).unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
    }
}
