//! The replication core between two or three in-process databases: the change feed of
//! each node's own batches, `apply_remote`'s checks (resend, gap, foreign payload, own
//! origin, clock), durable high-water marks across restarts and checkpoints, convergence
//! of concurrent writes with the loser journaled, the feed read back from the archive once
//! the live WAL released it, and stamps that rise with LSN.

mod common;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use duplex_engine::{
    split_position, Config, Database, FeedBatch, FeedCursor, RemoteBatch, ReplError, WriteBatch,
    LSN_BITS,
};
use duplex_testkit::temp_dir;
use duplex_wal::{ManualClock, ReadOptions, WalReader};

fn cfg(node: u64, backlog: u64) -> Config {
    Config {
        node_id: node,
        replication_backlog_bytes: backlog,
        background: false,
        scrub_bytes_per_sec: 0,
        ..Config::default()
    }
}

fn open(dir: &Path, node: u64) -> Database {
    Database::open(dir, cfg(node, 1 << 20)).expect("open")
}

fn feed_all(db: &Database, after: u64) -> Vec<FeedBatch> {
    let mut c = FeedCursor::new();
    let mut out = Vec::new();
    let mut at = after;
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

/// Ships every batch of `from` that `to` does not hold yet; returns how many were applied.
fn ship(from: &Database, to: &Database) -> usize {
    let after = to.origin_hwm(from.node_id());
    let batches = feed_all(from, after);
    let rep = to
        .apply_remote(from.node_id(), &remote(&batches))
        .expect("apply");
    assert_eq!(rep.refused, None);
    rep.applied
}

fn digest(db: &Database) -> String {
    db.stamped_digest(Bound::Unbounded, Bound::Unbounded)
        .expect("digest")
        .to_string()
}

fn get(db: &Database, k: &str) -> Option<String> {
    db.get(k.as_bytes())
        .expect("get")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Every (origin, origin position) of remote batches in `db`'s live WAL.
fn logged_remote(dir: &Path, node: u64) -> Vec<(u64, u64)> {
    let mut r = WalReader::open(
        Arc::new(duplex_wal::StdStorage),
        &[dir.join("wal")],
        0,
        ReadOptions::default(),
    )
    .expect("reader");
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().expect("record") {
        if rec.kind != duplex_engine::batch::KIND_BATCH {
            continue;
        }
        let b = duplex_engine::batch::decode_batch(&rec.payload, 4096, 16 << 20).expect("batch");
        if b.stamp.origin != node {
            out.push((b.stamp.origin, b.origin_lsn));
        }
    }
    out
}

#[test]
fn a_nodes_batches_reach_its_peer_once_with_their_stamps_and_are_never_echoed() {
    let (da, db_) = (temp_dir(), temp_dir());
    let a = open(da.path(), 1);
    let b = open(db_.path(), 2);
    for i in 0..50 {
        a.put(format!("k{i}").as_bytes(), format!("a{i}").as_bytes())
            .expect("put");
    }
    let mut batch = WriteBatch::new();
    batch.put("multi1", "x").put("multi2", "y").delete("k3");
    a.write(batch).expect("batch");
    b.put(b"bee", b"from-b").expect("put");

    assert_eq!(ship(&a, &b), 51);
    assert_eq!(get(&b, "k7").as_deref(), Some("a7"));
    assert_eq!(get(&b, "k3"), None);
    assert_eq!(get(&b, "multi2").as_deref(), Some("y"));
    // B's feed holds B's own batch only: what it applied from A is never sent on.
    let fb = feed_all(&b, 0);
    assert_eq!(fb.len(), 1);
    assert_eq!(ship(&b, &a), 1);
    assert_eq!(digest(&a), digest(&b), "same versions, stamps included");

    // Resending everything applies nothing again.
    let all = feed_all(&a, 0);
    let rep = b.apply_remote(1, &remote(&all)).expect("apply");
    assert_eq!((rep.applied, rep.duplicates, rep.refused), (0, 51, None));
    assert_eq!(b.origins()[&1].duplicates, 51);
    assert_eq!(b.origins()[&1].applied, 51);
    let logged = logged_remote(db_.path(), 2);
    assert_eq!(logged.len(), 51, "each of A's batches logged once on B");
    let mut uniq = logged.clone();
    uniq.dedup();
    assert_eq!(uniq, logged);
    assert!(logged.iter().all(|(o, _)| *o == 1));
}

#[test]
fn a_gap_a_foreign_or_damaged_batch_and_this_nodes_own_origin_are_refused_whole() {
    let (da, db_) = (temp_dir(), temp_dir());
    let a = open(da.path(), 1);
    let b = open(db_.path(), 2);
    for i in 0..5 {
        a.put(format!("g{i}").as_bytes(), b"v").expect("put");
    }
    let all = feed_all(&a, 0);
    let before = digest(&b);
    // The first batch missing: a gap, nothing applied, the mark unchanged.
    let rep = b.apply_remote(1, &remote(&all[1..])).expect("apply");
    assert!(
        matches!(rep.refused, Some(ReplError::Gap { expected: 0, .. })),
        "{rep:?}"
    );
    assert_eq!((rep.applied, b.origin_hwm(1)), (0, 0));
    assert_eq!(digest(&b), before);

    // A damaged payload in the third batch: the first two applied, the third refused whole.
    let mut damaged: Vec<Vec<u8>> = all.iter().map(|f| f.payload.to_vec()).collect();
    let last = damaged[2].len() - 1;
    damaged[2][last] ^= 0xff;
    damaged[2].truncate(last - 1);
    let batches: Vec<RemoteBatch<'_>> = all
        .iter()
        .zip(&damaged)
        .map(|(f, p)| RemoteBatch {
            origin_lsn: f.origin_lsn,
            prev_origin_lsn: f.prev_origin_lsn,
            stamp: f.stamp,
            payload: p,
        })
        .collect();
    let rep = b.apply_remote(1, &batches).expect("apply");
    assert_eq!(rep.applied, 2);
    assert!(
        matches!(rep.refused, Some(ReplError::BadBatch { .. })),
        "{rep:?}"
    );
    assert_eq!(b.origin_hwm(1), all[1].origin_lsn);
    assert_eq!(get(&b, "g2"), None);
    // The link resynchronises from the mark: the rest arrives whole.
    assert_eq!(ship(&a, &b), 3);
    assert_eq!(get(&b, "g4").as_deref(), Some("v"));

    // A's batches sent as another origin's, and as B's own: refused.
    let rep = b.apply_remote(3, &remote(&all)).expect("apply");
    assert!(
        matches!(rep.refused, Some(ReplError::BadBatch { .. })),
        "{rep:?}"
    );
    let rep = b.apply_remote(2, &remote(&all)).expect("apply");
    assert!(
        matches!(rep.refused, Some(ReplError::SelfOrigin { .. })),
        "{rep:?}"
    );
    assert_eq!(digest(&a), digest(&b));
}

#[test]
fn the_high_water_mark_survives_restarts_checkpoints_and_resumes_exactly() {
    let (da, db_) = (temp_dir(), temp_dir());
    let a = open(da.path(), 1);
    let b = open(db_.path(), 2);
    for i in 0..20 {
        a.put(format!("h{i}").as_bytes(), b"1").expect("put");
    }
    ship(&a, &b);
    let mark = b.origin_hwm(1);
    assert_eq!(split_position(mark).1, a.wal().last_lsn());
    drop(b);
    // Replayed from the WAL.
    let b = open(db_.path(), 2);
    assert_eq!(b.origin_hwm(1), mark);
    b.checkpoint().expect("checkpoint");
    drop(b);
    // Read from the checkpoint (the WAL before it may be gone).
    let b = open(db_.path(), 2);
    assert_eq!(b.origin_hwm(1), mark);
    for i in 20..30 {
        a.put(format!("h{i}").as_bytes(), b"2").expect("put");
    }
    assert_eq!(ship(&a, &b), 10, "only what came after the mark");
    assert_eq!(digest(&a), digest(&b));
}

#[test]
fn concurrent_writes_of_one_key_converge_and_the_loser_is_journaled_where_it_lost() {
    let (da, db_) = (temp_dir(), temp_dir());
    let a = open(da.path(), 1);
    let b = open(db_.path(), 2);
    a.put(b"k", b"from-a").expect("put");
    b.put(b"k", b"from-b").expect("put");
    // A causal overwrite: B writes "seq" after it applied A's version: not a conflict.
    a.put(b"seq", b"a-first").expect("put");
    ship(&a, &b);
    b.put(b"seq", b"b-after").expect("put");
    ship(&b, &a);
    assert_eq!(get(&a, "k"), get(&b, "k"));
    assert_eq!(get(&a, "seq").as_deref(), Some("b-after"));
    assert_eq!(digest(&a), digest(&b));
    let winner = get(&a, "k").expect("k");
    let (loser_node, loser_value) = if winner == "from-a" {
        (&b, "from-b")
    } else {
        (&a, "from-a")
    };
    let (entries, recorded, dropped) = loser_node.conflicts(10);
    assert_eq!((recorded, dropped), (1, 0), "{entries:?}");
    assert_eq!(entries[0].key, b"k");
    assert_eq!(
        entries[0].loser_value.as_deref(),
        Some(loser_value.as_bytes())
    );
    assert!(entries[0].winner.wins_over(&entries[0].loser));
    for db in [&a, &b] {
        assert!(
            db.conflicts(10).0.iter().all(|c| c.key != b"seq"),
            "seq was causal"
        );
    }
}

#[test]
fn a_peer_whose_clock_runs_ahead_is_refused_until_the_clocks_agree() {
    let (da, db_) = (temp_dir(), temp_dir());
    let fast = Arc::new(ManualClock::new(duplex_wal::now_ms() + 3_600_000));
    let a = Database::open(
        da.path(),
        Config {
            clock: fast,
            ..cfg(1, 1 << 20)
        },
    )
    .expect("open");
    let b = open(db_.path(), 2);
    a.put(b"t", b"future").expect("put");
    let all = feed_all(&a, 0);
    let rep = b.apply_remote(1, &remote(&all)).expect("apply");
    assert!(
        matches!(rep.refused, Some(ReplError::ClockSkew { .. })),
        "{rep:?}"
    );
    assert_eq!((rep.applied, get(&b, "t")), (0, None));
    let (stamp, _) = a.heartbeat();
    assert!(b.observe_peer_time(1, stamp).is_err());
}

#[test]
fn the_feed_reads_the_archive_once_the_live_wal_released_the_batches() {
    let (da, arch, db_) = (temp_dir(), temp_dir(), temp_dir());
    let a = Database::open(
        da.path(),
        Config {
            segment_size: 64 << 10,
            archive_dir: Some(arch.path().to_path_buf()),
            ..cfg(1, 0)
        },
    )
    .expect("open");
    let value = vec![b'v'; 1000];
    for i in 0..400 {
        a.put(format!("r{i:04}").as_bytes(), &value).expect("put");
    }
    a.wal().rotate().expect("rotate");
    a.run_maintenance().expect("archive");
    a.checkpoint().expect("checkpoint");
    a.run_maintenance().expect("maintenance");
    let first_live = a
        .wal()
        .segments()
        .first()
        .map(|s| s.first_lsn)
        .expect("segment");
    assert!(first_live > 1, "the checkpoint released early segments");
    let b = open(db_.path(), 2);
    assert_eq!(ship(&a, &b), 400);
    assert_eq!(digest(&a), digest(&b));
}

#[test]
fn a_peer_asking_beyond_this_nodes_log_is_told_so() {
    let da = temp_dir();
    let a = open(da.path(), 1);
    a.put(b"x", b"1").expect("put");
    let ahead = a.durable_position() + 10;
    let err = FeedCursor::new()
        .read(&a, ahead, 10, 1 << 20)
        .expect_err("ahead");
    assert!(
        matches!(err, duplex_engine::Error::Repl(ReplError::PeerAhead { .. })),
        "{err}"
    );
    // A later incarnation's position is ahead too.
    let later = (a.incarnation() + 1) << LSN_BITS;
    assert!(FeedCursor::new().read(&a, later, 10, 1 << 20).is_err());
}

#[test]
fn stamps_rise_with_positions_whatever_the_threads_and_backlog_and_log_agree() {
    let (d1, d2) = (temp_dir(), temp_dir());
    let with_backlog = Arc::new(open(d1.path(), 1));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let db = with_backlog.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    db.put(format!("t{t}-{i}").as_bytes(), b"v").expect("put");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let fed = feed_all(&with_backlog, 0);
    assert_eq!(fed.len(), 800);
    for w in fed.windows(2) {
        assert!(w[1].origin_lsn > w[0].origin_lsn);
        assert_eq!(w[1].prev_origin_lsn, w[0].origin_lsn);
        assert!(w[1].stamp > w[0].stamp, "stamp order follows log order");
    }
    // The same batches read from the log (a cursor with no backlog after a restart).
    drop(fed);
    let db = Arc::try_unwrap(with_backlog).expect("sole owner");
    let from_backlog = feed_all(&db, 0);
    drop(db);
    let reopened = Database::open(d1.path(), cfg(1, 0)).expect("reopen");
    let from_log = feed_all(&reopened, 0);
    assert_eq!(from_backlog, from_log);
    let _ = d2;
}

#[test]
fn a_lost_members_batches_that_reached_one_peer_are_forwarded_to_the_other() {
    let (da, db_, dc) = (temp_dir(), temp_dir(), temp_dir());
    let a = open(da.path(), 1);
    let b = open(db_.path(), 2);
    let c = open(dc.path(), 3);
    for i in 0..6 {
        a.put(format!("f{i}").as_bytes(), b"v").expect("put");
    }
    let all = feed_all(&a, 0);
    // C got everything, B only the first two before A was lost.
    assert_eq!(ship(&a, &c), 6);
    let rep = b.apply_remote(1, &remote(&all[..2])).expect("apply");
    assert_eq!(rep.applied, 2);
    let fwd = FeedCursor::read_forward(&c, 1, b.origin_hwm(1), 100, 1 << 20).expect("held");
    assert_eq!(fwd.len(), 4);
    assert_eq!(fwd[0].prev_origin_lsn, all[1].origin_lsn);
    assert_eq!(
        fwd,
        all[2..].to_vec(),
        "origin, positions, stamps and payloads preserved"
    );
    let rep = b.apply_remote(1, &remote(&fwd)).expect("apply");
    assert_eq!((rep.applied, rep.refused), (4, None));
    assert_eq!(digest(&b), digest(&c));
    // A comes back: what it sends again is recognised as held.
    let rep = b.apply_remote(1, &remote(&all)).expect("apply");
    assert_eq!((rep.applied, rep.duplicates), (0, 6));
    // A peer further behind than what C keeps is told so, not sent a broken chain.
    let tiny = Database::open(temp_dir().path(), cfg(4, 1)).expect("open");
    tiny.apply_remote(1, &remote(&all)).expect("apply");
    assert!(FeedCursor::read_forward(&tiny, 1, 0, 100, 1 << 20).is_none());
}

#[test]
fn a_restored_node_is_a_new_incarnation_whose_batches_are_never_taken_for_duplicates() {
    use duplex_engine::{restore_chain, roll_forward, RollForwardOptions};
    let t = temp_dir();
    let archive = t.path().join("archive");
    let acfg = |node| Config {
        archive_dir: Some(archive.clone()),
        ..cfg(node, 1 << 20)
    };
    let a = Database::open(t.path().join("a"), acfg(1)).expect("open a");
    let b = open(&t.path().join("b"), 2);
    for i in 0..10 {
        a.put(format!("old{i}").as_bytes(), b"1").expect("put");
    }
    let backup = t.path().join("backup");
    a.backup(&backup, None).expect("backup");
    // Written after the backup and replicated, then A's disk is lost.
    for i in 10..20 {
        a.put(format!("old{i}").as_bytes(), b"1").expect("put");
    }
    ship(&a, &b);
    let old_mark = b.origin_hwm(1);
    drop(a);
    // A restored from the backup alone (its archive lost too): LSNs continue from the
    // backup's end, below what B holds, but on a new timeline.
    let restored = t.path().join("a2");
    restore_chain(&common::storage(), &[backup], &restored).expect("restore");
    roll_forward(
        Arc::new(duplex_wal::StdStorage),
        &restored,
        &[],
        &RollForwardOptions {
            config: cfg(1, 0),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect("roll forward");
    let a2 = open(&restored, 1);
    assert!(a2.incarnation() > split_position(old_mark).0);
    assert!(a2.wal().last_lsn() < split_position(old_mark).1);
    a2.put(b"new", b"after-restore").expect("put");
    assert_eq!(
        ship(&a2, &b),
        1,
        "the new incarnation's batch is applied, not skipped"
    );
    assert_eq!(get(&b, "new").as_deref(), Some("after-restore"));
    assert!(b.origin_hwm(1) > old_mark);
    // An old copy of node 1 still sending its first incarnation is refused.
    let stale = Database::open(t.path().join("stale"), cfg(1, 1 << 20)).expect("open");
    stale.put(b"stale", b"x").expect("put");
    let fb = feed_all(&stale, 0);
    let rep = b.apply_remote(1, &remote(&fb)).expect("apply");
    assert!(
        matches!(rep.refused, Some(ReplError::Behind { .. })),
        "{rep:?}"
    );
    assert_eq!(get(&b, "stale"), None);
}

/// Restores `backup` (of node `from`) into `into` as node `from` would, then adopts it as
/// node `node`; returns the adoption report.
fn rebuild_as(
    backup: &Path,
    into: &Path,
    from: u64,
    node: u64,
    min_inc: u64,
) -> duplex_engine::AdoptReport {
    use duplex_engine::{adopt_restored, restore_chain, roll_forward, RollForwardOptions};
    restore_chain(&common::storage(), &[backup.to_path_buf()], into).expect("restore");
    let rf = roll_forward(
        common::storage(),
        into,
        &[],
        &RollForwardOptions {
            config: cfg(from, 0),
            ..RollForwardOptions::default()
        },
        &mut |_| {},
    )
    .expect("roll forward");
    adopt_restored(
        common::storage(),
        into,
        &cfg(node, 0),
        rf.from_timeline,
        min_inc,
    )
    .expect("adopt")
}

#[test]
fn a_lost_node_rebuilt_from_its_peers_backup_holds_the_peers_data_and_marks_and_starts_a_new_incarnation(
) {
    let t = temp_dir();
    let a = open(&t.path().join("a"), 1);
    let b = open(&t.path().join("b"), 2);
    let c = open(&t.path().join("c"), 3);
    for i in 0..30 {
        a.put(format!("a{i}").as_bytes(), b"from-a").expect("put");
        b.put(format!("b{i}").as_bytes(), b"from-b").expect("put");
        c.put(format!("c{i}").as_bytes(), b"from-c").expect("put");
    }
    ship(&b, &a);
    ship(&c, &a);
    a.checkpoint().expect("checkpoint");
    let c_more = c.put(b"c-late", b"x").map(|_| ());
    c_more.expect("put");
    ship(&c, &a);
    let b_mark_on_a = a.origin_hwm(2);
    let c_mark_on_a = a.origin_hwm(3);
    let backup = t.path().join("backup-of-a");
    a.backup(&backup, None).expect("backup");
    let a_digest = digest(&a);
    // B's disk is lost. Rebuilt from A's backup, above the incarnation A holds of B.
    drop(b);
    let rebuilt = t.path().join("b-rebuilt");
    let min_inc = split_position(b_mark_on_a).0 + 1;
    let rep = rebuild_as(&backup, &rebuilt, 1, 2, min_inc);
    assert_eq!((rep.from_node, rep.node), (1, 2));
    assert!(rep.incarnation >= min_inc);
    let b2 = open(&rebuilt, 2);
    assert_eq!(b2.node_id(), 2);
    assert_eq!(b2.incarnation(), rep.incarnation);
    assert_eq!(
        digest(&b2),
        a_digest,
        "every version of A's backup, stamps kept"
    );
    assert_eq!(
        get(&b2, "b7").as_deref(),
        Some("from-b"),
        "B's own old writes came back"
    );
    assert_eq!(b2.origin_hwm(3), c_mark_on_a, "A's marks of other origins");
    assert_eq!(split_position(b2.origin_hwm(1)).1, a.wal().last_lsn());
    assert_eq!(
        b2.incarnation_base(),
        Some(b_mark_on_a),
        "its base: what A held of B"
    );
    // A's writes after the backup arrive through the ordinary link, nothing resent.
    a.put(b"after-backup", b"1").expect("put");
    assert_eq!(ship(&a, &b2), 1);
    // B's new writes are a new incarnation: A applies them though it holds B's old mark.
    b2.put(b"b-new", b"rebuilt").expect("put");
    assert_eq!(ship(&b2, &a), 1);
    assert_eq!(get(&a, "b-new").as_deref(), Some("rebuilt"));
    assert!(a.origin_hwm(2) > b_mark_on_a);
    ship(&c, &b2);
    assert_eq!(digest(&a), digest(&b2));
    // Adopting twice, or one's own backup, is refused.
    let err = duplex_engine::adopt_restored(common::storage(), &rebuilt, &cfg(2, 0), 1, 1);
    assert!(err.is_err());
}

#[test]
fn a_rebuilt_nodes_old_updates_that_only_a_third_peer_holds_are_applied_back_and_survive_a_restart()
{
    let t = temp_dir();
    let a = open(&t.path().join("a"), 1);
    let b = open(&t.path().join("b"), 2);
    let c = open(&t.path().join("c"), 3);
    for i in 0..10 {
        b.put(format!("b{i}").as_bytes(), b"old").expect("put");
    }
    ship(&b, &a);
    ship(&b, &c);
    let b_mark_on_a = a.origin_hwm(2);
    let backup = t.path().join("backup-of-a");
    a.backup(&backup, None).expect("backup");
    // B's last updates reach C only, then B is lost.
    for i in 0..5 {
        b.put(format!("late{i}").as_bytes(), b"only-on-c")
            .expect("put");
    }
    b.put(b"b3", b"newer").expect("put");
    ship(&b, &c);
    drop(b);
    let rebuilt = t.path().join("b-rebuilt");
    let min_inc = split_position(c.origin_hwm(2)).0 + 1;
    rebuild_as(&backup, &rebuilt, 1, 2, min_inc);
    let b2 = open(&rebuilt, 2);
    assert_eq!(get(&b2, "late0"), None, "not in A's backup");
    let got = FeedCursor::read_forward(&c, 2, b_mark_on_a, 100, 1 << 20).expect("held");
    assert_eq!(got.len(), 6);
    // This node's own current incarnation is refused.
    let own_now = duplex_engine::position(b2.incarnation(), 1);
    let bogus = [RemoteBatch {
        origin_lsn: own_now,
        ..remote(&got)[0]
    }];
    let (n, refused) = b2.apply_own_recovered(&bogus).expect("apply");
    assert_eq!(n, 0);
    assert!(
        matches!(refused, Some(ReplError::BadBatch { .. })),
        "{refused:?}"
    );
    // Another origin's batches are refused.
    let (n, refused) = a.apply_own_recovered(&remote(&got)).expect("apply");
    assert_eq!(n, 0);
    assert!(refused.is_some());
    let (n, refused) = b2.apply_own_recovered(&remote(&got)).expect("apply");
    assert_eq!((n, refused), (6, None));
    assert_eq!(get(&b2, "late4").as_deref(), Some("only-on-c"));
    assert_eq!(get(&b2, "b3").as_deref(), Some("newer"));
    assert_eq!(
        b2.incarnation_base(),
        Some(b_mark_on_a),
        "its base is unchanged"
    );
    // Again: last writer wins, nothing changes.
    let before = digest(&b2);
    b2.apply_own_recovered(&remote(&got)).expect("apply");
    assert_eq!(digest(&b2), before);
    // Not sent to peers as new batches of the new incarnation.
    assert_eq!(feed_all(&b2, b2.incarnation_base().expect("base")).len(), 0);
    drop(b2);
    let b2 = open(&rebuilt, 2);
    assert_eq!(get(&b2, "late2").as_deref(), Some("only-on-c"), "logged");
    assert_eq!(
        b2.incarnation_base(),
        Some(b_mark_on_a),
        "replay leaves its base as the rebuild set it"
    );
    // B and C agree on every version.
    ship(&a, &c);
    assert_eq!(digest(&b2), digest(&c));
}

/// Issue 13, the simulation's seed 1053: a survivor keeps the batches it forwards in
/// memory, and a restart empties it. It then reads them from its own log (each applied
/// batch is a record with its origin, position and stamp), exactly as the origin sent them;
/// once its log no longer holds the record at the peer's mark it says so (`None`, never a
/// broken chain), and a peer below a rebuilt origin's base that every other member says it
/// lacks is stranded: it must be rebuilt instead of waiting for good.
#[test]
fn a_restarted_survivor_forwards_from_its_log_and_a_peer_nobody_can_serve_is_stranded() {
    let t = temp_dir();
    let small = |node: u64| Config {
        segment_size: 64 << 10,
        ..cfg(node, 1 << 20)
    };
    let a = open(&t.path().join("a"), 1);
    let b = Database::open(t.path().join("b"), small(2)).expect("open");
    let c = open(&t.path().join("c"), 3);
    for i in 0..40 {
        a.put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes())
            .expect("put");
    }
    let all = feed_all(&a, 0);
    assert_eq!(ship(&a, &b), 40);
    // C got the first 10 only.
    let rep = c.apply_remote(1, &remote(&all[..10])).expect("apply");
    assert_eq!(rep.applied, 10);
    // B restarts: its forwarding memory is empty, its log is not.
    drop(b);
    let b = Database::open(t.path().join("b"), small(2)).expect("reopen");
    let got = FeedCursor::read_forward(&b, 1, c.origin_hwm(1), 100, 1 << 20).expect("from log");
    assert_eq!(
        got,
        all[10..].to_vec(),
        "origin, positions, chain, stamps and payloads as A sent them"
    );
    let rep = c.apply_remote(1, &remote(&got)).expect("apply");
    assert_eq!((rep.applied, rep.refused), (30, None));
    assert_eq!(get(&c, "k39").as_deref(), Some("v39"));
    // In pieces too: each read continues the chain where the last one stopped.
    let first = FeedCursor::read_forward(&b, 1, all[4].origin_lsn, 3, 1 << 20).expect("log");
    assert_eq!(first, all[5..8].to_vec());
    // B's log moves on (its own writes, checkpoints release the segments holding A's
    // batches) and it restarts again: now nothing vouches for the chain after C's old mark.
    let d = open(&t.path().join("d"), 4);
    d.apply_remote(1, &remote(&all[..10])).expect("apply");
    let filler = vec![b'x'; 4000];
    for i in 0..100 {
        b.put(format!("b{i}").as_bytes(), &filler).expect("put");
        if i % 20 == 0 {
            b.checkpoint().expect("checkpoint");
        }
    }
    b.checkpoint().expect("checkpoint");
    drop(b);
    let b = Database::open(t.path().join("b"), small(2)).expect("reopen");
    assert!(b.origin_hwm(1) > d.origin_hwm(1));
    assert_eq!(
        FeedCursor::read_forward(&b, 1, d.origin_hwm(1), 100, 1 << 20),
        None,
        "B holds more of A than D, but can no longer vouch for the chain"
    );
    // A is rebuilt (a new incarnation); D is below its base. B says it lacks A's batches
    // after D's mark: with B the only other member, D is stranded.
    d.note_origin_incarnation(1, 2);
    let mark = d.origin_hwm(1);
    assert_eq!(d.stranded(&[1, 2, 4]), vec![]);
    d.note_peer_lacks(2, 1, mark);
    let s = d.stranded(&[1, 2, 4]);
    assert_eq!(
        s,
        vec![duplex_engine::Stranded {
            origin: 1,
            mark,
            incarnation: 2
        }]
    );
    // Another member (C) could still hold them: not stranded until it says so too.
    assert_eq!(d.stranded(&[1, 2, 3, 4]), vec![]);
    d.note_peer_lacks(3, 1, mark);
    assert_eq!(d.stranded(&[1, 2, 3, 4]).len(), 1);
    // What a peer said of an older mark does not count once the mark moved.
    d.apply_remote(1, &remote(&all[10..11])).expect("apply");
    assert_eq!(d.stranded(&[1, 2, 3, 4]), vec![]);
}

/// Found by the simulation's whole fault model (campaign seed 1001): a frame of batches
/// given back to a rebuilt node, lost with its connection and then replayed on the next
/// without the frame before it, raised the node's base past batches it never took back.
/// Given-back batches must continue the chain from the base, or nothing is taken.
#[test]
fn batches_given_back_out_of_chain_are_refused_and_the_base_stays() {
    let t = temp_dir();
    let a = open(&t.path().join("a"), 1);
    let b = open(&t.path().join("b"), 2);
    let c = open(&t.path().join("c"), 3);
    for i in 0..10 {
        b.put(format!("b{i}").as_bytes(), b"old").expect("put");
    }
    ship(&b, &a);
    let backup = t.path().join("backup-of-a");
    a.backup(&backup, None).expect("backup");
    for i in 0..6 {
        b.put(format!("late{i}").as_bytes(), b"only-on-c")
            .expect("put");
    }
    ship(&b, &c);
    drop(b);
    let rebuilt = t.path().join("b-rebuilt");
    rebuild_as(
        &backup,
        &rebuilt,
        1,
        2,
        split_position(c.origin_hwm(2)).0 + 1,
    );
    let b2 = open(&rebuilt, 2);
    let base = b2.incarnation_base().expect("base");
    let got = FeedCursor::read_forward(&c, 2, base, 100, 1 << 20).expect("held");
    assert_eq!(got.len(), 6);
    // The second half alone (the first half lost in flight): refused, nothing taken.
    let err = b2.take_back_own(&remote(&got[3..])).expect_err("a gap");
    assert!(
        matches!(err, duplex_engine::Error::Repl(ReplError::Gap { .. })),
        "{err}"
    );
    assert_eq!(b2.incarnation_base(), Some(base), "the base did not move");
    assert_eq!(get(&b2, "late5"), None);
    // In order: all six taken back, the base at the last.
    assert_eq!(b2.take_back_own(&remote(&got)).expect("take back"), 6);
    assert_eq!(b2.incarnation_base(), Some(got[5].origin_lsn));
    assert_eq!(get(&b2, "late0").as_deref(), Some("only-on-c"));
    // Given again (a resend): at or below the base, skipped.
    assert_eq!(b2.take_back_own(&remote(&got)).expect("again"), 0);
}
