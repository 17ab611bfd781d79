//! A rebuilt node takes its own unreplicated batches back from its surviving archive
//! (`Database::take_back_archived`): those above its base come back with their stamps, are
//! sent to peers as batches of the new incarnation, and the base does not move; a second
//! attempt that finds an earlier attempt's copies in a later lineage takes each stamp once.

mod common;

use std::ops::Bound;
use std::path::Path;

use duplex_engine::{
    adopt_restored, restore_chain, roll_forward, Config, Database, FeedCursor, RemoteBatch,
    RollForwardOptions,
};
use duplex_testkit::temp_dir;

fn cfg(node: u64, archive: Option<&Path>) -> Config {
    Config {
        node_id: node,
        replication_backlog_bytes: 1 << 20,
        background: false,
        scrub_bytes_per_sec: 0,
        archive_dir: archive.map(Path::to_path_buf),
        archive_lag_ms: 0,
        ..Config::default()
    }
}

/// Restores `backup` (of node `from`) into `into`, rolls it forward and adopts it as `node`
/// (its archive root `archive`, whose lineages the new incarnation lies above).
fn rebuild_as(backup: &Path, into: &Path, from: u64, node: u64, archive: &Path) -> u64 {
    restore_chain(&common::storage(), &[backup.to_path_buf()], into).expect("restore");
    let rf = roll_forward(
        common::storage(),
        into,
        &[],
        &RollForwardOptions {
            config: cfg(from, None),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect("roll forward");
    adopt_restored(
        common::storage(),
        into,
        &cfg(node, Some(archive)),
        rf.from_timeline,
        1,
    )
    .expect("adopt")
    .incarnation
}

/// Ships every batch of `from` after `to`'s mark of it.
fn ship(from: &Database, to: &Database) -> usize {
    let mut c = FeedCursor::new();
    let mut n = 0;
    loop {
        let after = to.origin_hwm(from.node_id());
        let got = c.read(from, after, 50, 1 << 20).expect("feed");
        if got.is_empty() {
            return n;
        }
        let remote: Vec<RemoteBatch<'_>> = got
            .iter()
            .map(|f| RemoteBatch {
                origin_lsn: f.origin_lsn,
                prev_origin_lsn: f.prev_origin_lsn,
                stamp: f.stamp,
                payload: &f.payload,
            })
            .collect();
        let rep = to.apply_remote(from.node_id(), &remote).expect("apply");
        assert_eq!(rep.refused, None);
        n += rep.applied;
    }
}

fn get(db: &Database, k: &str) -> Option<String> {
    db.get(k.as_bytes())
        .expect("get")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn digest(db: &Database) -> String {
    db.stamped_digest(Bound::Unbounded, Bound::Unbounded)
        .expect("digest")
        .to_string()
}

#[test]
fn a_rebuilt_node_takes_its_unreplicated_batches_back_from_its_own_archive_once() {
    let t = temp_dir();
    let arch = t.path().join("archive-of-b");
    let a = Database::open(t.path().join("a"), cfg(1, None)).expect("open");
    let b = Database::open(t.path().join("b"), cfg(2, Some(&arch))).expect("open");
    for i in 0..10 {
        b.put(format!("b{i}").as_bytes(), b"old").expect("put");
    }
    assert_eq!(ship(&b, &a), 10);
    let base = a.origin_hwm(2);
    let backup = t.path().join("backup-of-a");
    a.backup(&backup, None).expect("backup");
    // Acknowledged on B, in its archive, never shipped; then B's disk is lost.
    for i in 0..5 {
        b.put(format!("late{i}").as_bytes(), b"only-in-the-archive")
            .expect("put");
    }
    b.put(b"b3", b"newer").expect("put");
    a.put(b"b4", b"a-wrote-it-later").expect("put");
    drop(b);
    let dir = t.path().join("b-rebuilt");
    let inc = rebuild_as(&backup, &dir, 1, 2, &arch);
    assert_eq!(inc, 2, "above the archive's lineage t1");
    let b2 = Database::open(&dir, cfg(2, Some(&arch))).expect("open");
    assert_eq!(get(&b2, "late0"), None, "not in A's backup");
    let r = b2.take_back_archived(&arch).expect("take back");
    assert_eq!(
        (r.lineages.clone(), r.taken_back, r.duplicates),
        (vec![1], 6, 0)
    );
    assert!(r.archive_end >= r.last_position && r.last_position > base);
    assert_eq!(r.starts_after_base, None);
    assert_eq!(get(&b2, "late4").as_deref(), Some("only-in-the-archive"));
    assert_eq!(get(&b2, "b3").as_deref(), Some("newer"));
    assert_eq!(b2.incarnation_base(), Some(base), "the base does not move");
    // Sent to A as batches of the new incarnation, with their stamps: A and B agree, and
    // A's later write of b4 still wins over B's older one.
    assert_eq!(ship(&b2, &a), 6);
    assert_eq!(get(&a, "late2").as_deref(), Some("only-in-the-archive"));
    assert_eq!(get(&a, "b4").as_deref(), Some("a-wrote-it-later"));
    assert_eq!(ship(&a, &b2), 1, "A's write after its backup");
    assert_eq!(get(&b2, "b4").as_deref(), Some("a-wrote-it-later"));
    assert_eq!(digest(&a), digest(&b2));
    drop(b2);
    // An attempt that found the first one's copies (lineage t2) takes each stamp once.
    let dir2 = t.path().join("b-rebuilt-again");
    let inc2 = rebuild_as(&backup, &dir2, 1, 2, &arch);
    assert_eq!(inc2, 3);
    let b3 = Database::open(&dir2, cfg(2, Some(&arch))).expect("open");
    let r = b3.take_back_archived(&arch).expect("take back");
    assert_eq!((r.lineages, r.taken_back, r.duplicates), (vec![1, 2], 6, 6));
    assert_eq!(get(&b3, "late1").as_deref(), Some("only-in-the-archive"));
}
