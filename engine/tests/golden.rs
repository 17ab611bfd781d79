//! Golden files: a small data directory (store, MANIFEST, WAL with a tail to replay) and a
//! full backup of it (store part and `BACKUP` manifest) as written by today's format,
//! committed under `fixtures/engine/`. The intact ones must open and return exactly the
//! written keys and values; the damaged copies must fail with the typed corruption error
//! naming the damaged file (and the offset of the damaged block). A change that cannot read
//! yesterday's files fails here. `write_fixtures` (ignored) made them; see
//! `fixtures/README.md`.

mod common;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::Contents;
use duplex_engine::{
    backup_dir, restore_chain, roll_forward, verify_backup, Config, CorruptKind, Database, Error,
    RollForwardOptions, SyncPolicy, WriteBatch, WAL_DIR,
};
use duplex_testkit::fixtures::{self, flip_byte, replace_dir, scratch_copy};
use duplex_wal::{StdStorage, Storage};

/// Small WAL segments, so that the fixture stays small.
const SEGMENT_SIZE: u64 = 4096;
const NODE_ID: u64 = 3;
/// Keys written before the checkpoint (`phase1`).
const KEYS: u32 = 60;
/// The store file of the fixture, its manifest, the backup's manifest and store part.
const STORE_FILE: &str = "store-000001.dpx";
const MANIFEST: &str = "MANIFEST";
const BACKUP: &str = "BACKUP";
/// The key whose value's first byte `store-flipped-byte/` inverts, and the offset of the
/// leaf block holding it, as the generator found it: the engine must name that block.
const FLIPPED_KEY: u32 = 13;
const FLIPPED_BLOCK: u64 = 4696;

fn config() -> Config {
    Config {
        node_id: NODE_ID,
        sync: SyncPolicy::Always,
        segment_size: SEGMENT_SIZE,
        checkpoint_interval: None,
        background: false,
        ..Config::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:03}").into_bytes()
}

/// The value of key `i` in `round`: `<i>/<round>/` repeated to up to 200 bytes, empty for
/// some, out of line (above the tree's 1024-byte inline limit) for every twentieth.
fn value(i: u32, round: u32) -> Vec<u8> {
    let len = if i % 20 == 7 {
        1500
    } else {
        ((i * 53 + round * 11) % 201) as usize
    };
    format!("{i}/{round}/")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

/// Phase 1, checkpointed: keys `0..KEYS`, the first 40 one put each, the rest in one batch.
fn phase1(model: &mut Contents) -> Vec<WriteBatch> {
    let mut batches = Vec::new();
    let mut rest = WriteBatch::new();
    for i in 0..KEYS {
        model.insert(key(i), value(i, 1));
        if i < 40 {
            let mut b = WriteBatch::new();
            b.put(key(i), value(i, 1));
            batches.push(b);
        } else {
            rest.put(key(i), value(i, 1));
        }
    }
    batches.push(rest);
    batches
}

/// Phase 2, only in the WAL: overwrites of keys 0..10, deletes of 50..55, new keys 60..65,
/// and one batch that writes key 30 twice (the later wins).
fn phase2(model: &mut Contents) -> Vec<WriteBatch> {
    let mut batches = Vec::new();
    for i in 0..10 {
        let mut b = WriteBatch::new();
        b.put(key(i), value(i, 2));
        model.insert(key(i), value(i, 2));
        batches.push(b);
    }
    for i in 50..55 {
        let mut b = WriteBatch::new();
        b.delete(key(i));
        model.remove(&key(i));
        batches.push(b);
    }
    let mut b = WriteBatch::new();
    for i in 60..65 {
        b.put(key(i), value(i, 2));
        model.insert(key(i), value(i, 2));
    }
    b.put(key(30), value(30, 2));
    b.put(key(30), value(30, 3));
    model.insert(key(30), value(30, 3));
    batches.push(b);
    batches
}

/// What the data directory holds (phases 1 and 2) and what its checkpoint, and so its
/// backup, holds (phase 1).
fn expected() -> (Contents, Contents) {
    let mut model = Contents::new();
    phase1(&mut model);
    let at_checkpoint = model.clone();
    phase2(&mut model);
    (model, at_checkpoint)
}

fn fixture(name: &str) -> PathBuf {
    fixtures::dir("engine").join(name)
}

/// Opens `dir` and reads every pair: the first error of the open or the scan.
fn open_and_read(dir: &Path) -> Result<Contents, Error> {
    let db = Database::open(dir, config())?;
    let all = db
        .scan(Bound::Unbounded, Bound::Unbounded)?
        .collect::<Result<Contents, _>>()?;
    db.close()?;
    Ok(all)
}

/// `err` is the typed corruption of `file` at `offset` (any offset if `None`).
fn assert_corrupt(err: Error, file: &Path, offset: Option<u64>) -> CorruptKind {
    match err {
        Error::Corrupt {
            file: f,
            offset: o,
            kind,
        } => {
            assert_eq!(f, file, "{kind} at {o}");
            if let Some(offset) = offset {
                assert_eq!(o, offset, "{kind} in {}", f.display());
            }
            kind
        }
        other => panic!("expected corruption of {}, got {other}", file.display()),
    }
}

#[test]
fn intact_data_directory_opens_with_exactly_its_contents() {
    let (_t, dir) = scratch_copy(&fixture("data"));
    let (want, _) = expected();
    let db = Database::open(&dir, config()).expect("open the fixture");
    // Phase 2 is only in the WAL: the open replayed it.
    let st = db.stats();
    assert_eq!((st.checkpoint_lsn, st.last_lsn), (41, 57), "{st:?}");
    assert_eq!(db.get(&key(30)).expect("get"), Some(value(30, 3)));
    assert_eq!(db.get(&key(52)).expect("get"), None);
    drop(db);
    assert_eq!(open_and_read(&dir).expect("reopen"), want);
}

#[test]
fn a_flipped_byte_in_the_store_is_corruption_naming_store_and_block() {
    let (_t, dir) = scratch_copy(&fixture("store-flipped-byte"));
    let err = open_and_read(&dir).expect_err("the damage must show");
    let kind = assert_corrupt(err, &dir.join(STORE_FILE), Some(FLIPPED_BLOCK));
    assert!(matches!(kind, CorruptKind::CrcMismatch { .. }), "{kind}");
}

#[test]
fn a_damaged_manifest_is_corruption_naming_it() {
    let (_t, dir) = scratch_copy(&fixture("manifest-flipped-byte"));
    let err = open_and_read(&dir).expect_err("the damage must show");
    assert_corrupt(err, &dir.join(MANIFEST), Some(0));
}

#[test]
fn intact_backup_verifies_and_restores_with_the_wal_rolled_forward() {
    let (t, dir) = scratch_copy(&fixture("backup"));
    let (_d, data) = scratch_copy(&fixture("data"));
    let storage: Arc<dyn Storage> = Arc::new(StdStorage);
    let m = verify_backup(&*storage, &dir).expect("verify the backup fixture");
    assert_eq!(
        (m.node_id, m.generation, m.checkpoint_lsn),
        (NODE_ID, 1, 41)
    );
    assert!(!m.is_incremental());
    let into = t.path().join("restored");
    restore_chain(&storage, std::slice::from_ref(&dir), &into).expect("restore");
    // The data directory's WAL (LSNs 42..=57) serves as the archive.
    let rf = roll_forward(
        storage,
        &into,
        &[data.join(WAL_DIR)],
        &RollForwardOptions {
            config: config(),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect("roll forward");
    assert_eq!((rf.from_lsn, rf.to_lsn), (42, 57));
    let (want, _) = expected();
    assert_eq!(open_and_read(&into).expect("open the restore"), want);
}

#[test]
fn a_damaged_backup_manifest_is_corruption_naming_it() {
    let (_t, dir) = scratch_copy(&fixture("backup-manifest-flipped-byte"));
    let err = verify_backup(&StdStorage, &dir).expect_err("the damage must show");
    assert_corrupt(err, &dir.join(BACKUP), Some(0));
}

#[test]
fn a_damaged_backup_store_part_is_corruption_naming_it() {
    let (_t, dir) = scratch_copy(&fixture("backup-store-flipped-byte"));
    let err = verify_backup(&StdStorage, &dir).expect_err("the damage must show");
    let kind = assert_corrupt(err, &dir.join(STORE_FILE), Some(0));
    assert!(matches!(kind, CorruptKind::CrcMismatch { .. }), "{kind}");
}

/// Offset of the first byte of `needle` in `path` (it must occur once).
fn find_once(path: &Path, needle: &[u8]) -> u64 {
    let image = std::fs::read(path).expect("read");
    let at: Vec<usize> = image
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the needle occurs {} times", at.len());
    at[0] as u64
}

/// Writes `fixtures/engine/`: `data/` (phase 1 checkpointed, phase 2 only in the WAL, the
/// database dropped without a close), `store-flipped-byte/` (the first byte of key 13's
/// value inverted in the store file), `manifest-flipped-byte/` (byte 12 of `MANIFEST`
/// inverted), `backup/` (a full backup of `data/`), `backup-manifest-flipped-byte/` (byte
/// 12 of `BACKUP` inverted) and `backup-store-flipped-byte/` (byte 100 of its store part
/// inverted). Run on purpose only: the committed bytes are the truth.
#[test]
#[ignore = "regenerates the committed golden files"]
fn write_fixtures() {
    let t = duplex_testkit::temp_dir();
    let data = t.path().join("data");
    let db = Database::open(&data, config()).expect("open");
    let mut model = Contents::new();
    for b in phase1(&mut model) {
        db.write(b).expect("phase 1");
    }
    db.checkpoint().expect("checkpoint");
    for b in phase2(&mut model) {
        db.write(b).expect("phase 2");
    }
    drop(db);
    let _ = std::fs::remove_file(data.join(duplex_engine::LOCK_NAME));
    let storage: Arc<dyn Storage> = Arc::new(StdStorage);
    let backup = t.path().join("backup");
    backup_dir(&storage, &data, &backup, None).expect("backup");

    replace_dir(&data, &fixture("data")).expect("write data/");
    let store = fixture("store-flipped-byte");
    replace_dir(&data, &store).expect("write store-flipped-byte/");
    let at = find_once(&store.join(STORE_FILE), &value(FLIPPED_KEY, 1));
    flip_byte(&store.join(STORE_FILE), at).expect("flip");
    let manifest = fixture("manifest-flipped-byte");
    replace_dir(&data, &manifest).expect("write manifest-flipped-byte/");
    flip_byte(&manifest.join(MANIFEST), 12).expect("flip");
    replace_dir(&backup, &fixture("backup")).expect("write backup/");
    let bm = fixture("backup-manifest-flipped-byte");
    replace_dir(&backup, &bm).expect("write backup-manifest-flipped-byte/");
    flip_byte(&bm.join(BACKUP), 12).expect("flip");
    let bs = fixture("backup-store-flipped-byte");
    replace_dir(&backup, &bs).expect("write backup-store-flipped-byte/");
    flip_byte(&bs.join(STORE_FILE), 100).expect("flip");
}
