//! Helpers shared by the engine's backup and roll-forward tests: a configuration that
//! archives closed WAL segments, the real storage, and a database's whole contents.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use duplex_engine::{Config, Database};
use duplex_wal::{StdStorage, Storage};

/// Every live key and value.
pub type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

/// Small segments and checkpoints, closed segments archived into `archive`.
pub fn cfg(archive: &Path) -> Config {
    Config {
        segment_size: 64 << 10,
        checkpoint_wal_bytes: 512 << 10,
        archive_dir: Some(archive.to_path_buf()),
        ..Config::default()
    }
}

/// The real file system.
pub fn storage() -> Arc<dyn Storage> {
    Arc::new(StdStorage)
}

/// A full scan of `db`.
pub fn contents(db: &Database) -> Contents {
    db.scan(Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("items")
}
