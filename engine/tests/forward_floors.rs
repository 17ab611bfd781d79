//! The WAL a survivor keeps for its peers holds other origins' batches too (issue 13, the
//! simulation's give-back window, seed 1306): a server that restarts forwards another
//! origin's batches from its log, and its checkpoints keep the log after the least mark a
//! peer holds of that origin (`Database::set_forward_floors`), so a restart followed by
//! checkpoints does not leave it unable to forward (or give back) what a peer lacks.

use std::path::Path;

use duplex_engine::{Config, Database, FeedBatch, FeedCursor, RemoteBatch};
use duplex_testkit::temp_dir;

fn cfg(node: u64, segment_size: u64) -> Config {
    Config {
        node_id: node,
        replication_backlog_bytes: 1 << 20,
        background: false,
        scrub_bytes_per_sec: 0,
        segment_size,
        ..Config::default()
    }
}

fn open(dir: &Path, node: u64, segment_size: u64) -> Database {
    Database::open(dir, cfg(node, segment_size)).expect("open")
}

fn feed_all(db: &Database) -> Vec<FeedBatch> {
    let mut c = FeedCursor::new();
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let got = c.read(db, at, 7, 1 << 20).expect("feed");
        let Some(last) = got.last() else {
            return out;
        };
        at = last.origin_lsn;
        out.extend(got);
    }
}

fn remote(b: &[FeedBatch]) -> Vec<RemoteBatch<'_>> {
    b.iter()
        .map(|f| RemoteBatch {
            origin_lsn: f.origin_lsn,
            prev_origin_lsn: f.prev_origin_lsn,
            stamp: f.stamp,
            payload: &f.payload,
        })
        .collect()
}

/// Survivor `node` applies all of `a`'s batches, then its own writes and checkpoints move
/// its log on (`floor`: the mark C holds of A, told to it as a peer would), and it restarts.
/// Returns it reopened.
fn survivor(dir: &Path, node: u64, all: &[FeedBatch], floor: Option<u64>) -> Database {
    let small = 64 << 10;
    let s = open(dir, node, small);
    let rep = s.apply_remote(1, &remote(all)).expect("apply");
    assert_eq!((rep.applied, rep.refused), (all.len(), None));
    if let Some(f) = floor {
        s.set_forward_floors([(1, f)]);
    }
    let filler = vec![b'x'; 4000];
    for i in 0..100 {
        s.put(format!("s{i}").as_bytes(), &filler).expect("put");
        if i % 20 == 0 {
            s.checkpoint().expect("checkpoint");
        }
    }
    s.checkpoint().expect("checkpoint");
    drop(s);
    open(dir, node, small)
}

#[test]
fn a_survivor_keeps_the_log_holding_another_origins_batches_a_peer_lacks() {
    let t = temp_dir();
    let a = open(&t.path().join("a"), 1, 64 << 20);
    for i in 0..40 {
        a.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .expect("put");
    }
    let all = feed_all(&a);
    assert_eq!(all.len(), 40);
    // C got the first 10 only.
    let c = open(&t.path().join("c"), 3, 64 << 20);
    c.apply_remote(1, &remote(&all[..10])).expect("apply");
    let mark = c.origin_hwm(1);

    // Told C's mark, B keeps the log after it through its checkpoints and a restart.
    let b = survivor(&t.path().join("b"), 2, &all, Some(mark));
    let got = FeedCursor::read_forward(&b, 1, mark, 100, 1 << 20)
        .expect("B still vouches for the chain after C's mark");
    assert_eq!(got, all[10..].to_vec());
    let rep = c.apply_remote(1, &remote(&got)).expect("apply");
    assert_eq!((rep.applied, rep.refused), (30, None));

    // Not told (as before the fix), its checkpoints release it: nothing to forward.
    let d = survivor(&t.path().join("d"), 4, &all, None);
    assert_eq!(
        FeedCursor::read_forward(&d, 1, mark, 100, 1 << 20),
        None,
        "without the floor the log holding A's batches is released"
    );

    // A floor of 0 (a peer that has not said) keeps everything: the chain from the start.
    let e = survivor(&t.path().join("e"), 5, &all, Some(0));
    let got = FeedCursor::read_forward(&e, 1, 0, 100, 1 << 20).expect("from the start");
    assert_eq!(got, all);
}
