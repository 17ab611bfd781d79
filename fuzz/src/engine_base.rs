//! The small databases the `engine_open` target damages, built by the real engine on
//! simulated storage. Used by the fuzz package (`duplex_fuzz::engine`) and, through this
//! library, by `fuzz/seedgen` (which needs the same layout to aim its seeds at blocks).
//!
//! Every base holds 120 keys written in batches, then overwrites, deletes, an empty value,
//! values above `INLINE_MAX` (value blocks) and a batch that writes one key twice. The
//! variants differ in what is checkpointed (see [`VARIANTS`]). The layout (every offset) is
//! the same on every build; only timestamps and creation times differ from run to run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_engine::{Config, Database, Op, WriteBatch};
use duplex_wal::sim::SimStorage;
use duplex_wal::{OpenMode, Storage};

/// The data directory of every base.
pub const DB_DIR: &str = "/db";

/// Number of base variants.
pub const VARIANTS: usize = 4;

/// Names of the variants, by index:
/// - 0 `closed`: phase 1, checkpoint, phase 2, `close()` (which checkpoints): everything is
///   in the store, nothing to replay; a stale `MANIFEST.tmp` lies around.
/// - 1 `wal-tail`: phase 1, checkpoint, phase 2, dropped without close: phase 2 lives only in
///   the WAL and is replayed at open; a stale `MANIFEST.tmp` lies around.
/// - 2 `compacted`: phase 1, checkpoint, first half of phase 2, compaction (generation 2),
///   second half of phase 2, dropped: a WAL tail over a compacted store; a copy of the
///   retired `store-000001.dpx` is left behind, as an interrupted cleanup would.
/// - 3 `wal-only`: phases 1 and 2, dropped, never checkpointed: the store holds the empty
///   checkpoint and the WAL everything.
pub const VARIANT_NAMES: [&str; VARIANTS] = ["closed", "wal-tail", "compacted", "wal-only"];

/// The engine configuration every base is written and opened with.
pub fn config() -> Config {
    Config {
        background: false,
        segment_size: 64 << 10,
        max_value_size: 64 << 10,
        checkpoint_wal_bytes: u64::MAX,
        checkpoint_interval: None,
        ..Config::default()
    }
}

/// Live contents: key to value.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// A base database: its files, and every acknowledged batch with its LSN.
#[derive(Debug, Clone)]
pub struct Base {
    /// Every file under [`DB_DIR`] (path, bytes), sorted by path.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// The current store file.
    pub store: PathBuf,
    /// The manifest.
    pub manifest: PathBuf,
    /// The last WAL segment.
    pub wal_last: PathBuf,
    /// A file open must ignore or remove (`MANIFEST.tmp`, or an old store generation).
    pub stale: PathBuf,
    /// Every batch written, with the LSN it was acknowledged at, in order.
    pub writes: Vec<(u64, WriteBatch)>,
    /// LSN of the last batch.
    pub last_lsn: u64,
    /// LSN the current checkpoint covers.
    pub checkpoint_lsn: u64,
}

impl Base {
    /// The bytes of `path`.
    pub fn file(&self, path: &Path) -> &[u8] {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| &b[..])
            .unwrap_or(&[])
    }

    /// Contents after every batch up to LSN `lsn`.
    pub fn model_at(&self, lsn: u64) -> Model {
        let mut m = Model::new();
        for (l, b) in &self.writes {
            if *l <= lsn {
                apply(&mut m, b);
            }
        }
        m
    }
}

/// Applies a batch to a model: in order, a later operation on a key wins.
pub fn apply(m: &mut Model, b: &WriteBatch) {
    for op in b.ops() {
        match op {
            Op::Put { key, value } => {
                m.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                m.remove(key);
            }
        }
    }
}

/// Key `i` of a base.
pub fn key(i: usize) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

/// Keys a base may hold (every key any batch touches), sorted.
pub fn all_keys() -> Vec<Vec<u8>> {
    let mut k: Vec<Vec<u8>> = (0..120).map(key).collect();
    k.push(b"k200".to_vec());
    k.sort();
    k
}

/// Value of key `i` in round `round`: sizes vary from empty to above the inline limit.
pub fn value(i: usize, round: usize) -> Vec<u8> {
    let len = if i.is_multiple_of(15) {
        1100 + 37 * i % 900
    } else if i.is_multiple_of(7) && round == 0 {
        0
    } else {
        20 + (i * 13 + round * 29) % 180
    };
    (0..len)
        .map(|j| (i * 31 + j * 7 + round * 101) as u8)
        .collect()
}

fn phase1() -> Vec<WriteBatch> {
    (0..40)
        .map(|b| {
            let mut w = WriteBatch::new();
            for i in 3 * b..3 * b + 3 {
                w.put(key(i), value(i, 0));
            }
            w
        })
        .collect()
}

fn phase2() -> Vec<WriteBatch> {
    let mut out = Vec::new();
    for i in (0..120).step_by(4) {
        let mut w = WriteBatch::new();
        w.put(key(i), value(i, 1));
        out.push(w);
    }
    for i in (1..120).step_by(9) {
        let mut w = WriteBatch::new();
        w.delete(key(i));
        out.push(w);
    }
    let mut w = WriteBatch::new();
    w.put(b"k200".to_vec(), vec![0xA5; 5000])
        .delete(key(2))
        .put(key(5), b"five".to_vec());
    out.push(w);
    let mut w = WriteBatch::new();
    w.put(key(10), b"x".to_vec()).put(key(10), b"y".to_vec());
    out.push(w);
    let mut w = WriteBatch::new();
    w.delete(key(11)).put(key(11), b"back".to_vec());
    out.push(w);
    out
}

fn files_under(sim: &SimStorage, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for name in sim.list(dir).expect("list base directory") {
        let p = dir.join(&name);
        match sim.contents(&p) {
            Some(b) => out.push((p, b)),
            None => files_under(sim, &p, out),
        }
    }
}

/// Builds base `variant` (0..[`VARIANTS`]).
pub fn build(variant: usize) -> Base {
    let sim = SimStorage::new();
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let db = Database::open_with(storage.clone(), DB_DIR, config()).expect("open base");
    let mut writes = Vec::new();
    let mut write = |db: &Database, b: WriteBatch| {
        let lsn = db.write(b.clone()).expect("write base batch");
        writes.push((lsn, b));
    };
    for b in phase1() {
        write(&db, b);
    }
    if variant != 3 {
        db.checkpoint().expect("checkpoint base");
    }
    let p2 = phase2();
    let half = p2.len() / 2;
    let mut old_store = None;
    for (n, b) in p2.into_iter().enumerate() {
        if variant == 2 && n == half {
            let p = Path::new(DB_DIR).join(duplex_engine::format::store_file_name(1));
            old_store = sim.contents(&p).map(|c| (p, c));
            db.compact().expect("compact base");
        }
        write(&db, b);
    }
    let checkpoint_lsn = if variant == 0 {
        db.close().expect("close base");
        writes.last().map(|w| w.0).unwrap_or(0)
    } else {
        let s = db.stats().checkpoint_lsn;
        drop(db);
        s
    };
    let dir = Path::new(DB_DIR);
    let stale = match old_store {
        Some((p, c)) => {
            let f = sim.open(&p, OpenMode::CreateNew).expect("stale store");
            f.write_all_at(&c, 0).expect("write stale store");
            p
        }
        None => {
            let p = dir.join("MANIFEST.tmp");
            let f = sim.open(&p, OpenMode::CreateNew).expect("stale manifest");
            f.write_all_at(b"an interrupted manifest switch", 0)
                .expect("write stale manifest");
            p
        }
    };
    let mut files = Vec::new();
    files_under(&sim, dir, &mut files);
    files.sort();
    let generation = if variant == 2 { 2 } else { 1 };
    let store = dir.join(duplex_engine::format::store_file_name(generation));
    let wal_dir = dir.join(duplex_engine::WAL_DIR);
    let wal_last = files
        .iter()
        .filter(|(p, _)| p.parent() == Some(wal_dir.as_path()))
        .map(|(p, _)| p.clone())
        .max()
        .expect("a WAL segment");
    let last_lsn = writes.last().map(|w| w.0).unwrap_or(0);
    Base {
        files,
        store,
        manifest: dir.join("MANIFEST"),
        wal_last,
        stale,
        writes,
        last_lsn,
        checkpoint_lsn,
    }
}
