//! Counters under replication (issue 15): INCR made concurrently on two servers both
//! count; a SET concurrent with an INCR follows the observed-reset rule of
//! `tools/server/src/counter.rs`. In process, two servers' command layers over two engines
//! on hand-set clocks exchange their change feeds by hand, so "concurrent" is exact; then
//! two real `duplexd` servers take INCRs from clients at once and converge.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{conn, converge, mesh, secret_file, CONVERGE};
use duplex_engine::{Config, Database, FeedCursor, RemoteBatch};
use duplex_server::cmd::write_groups_in;
use duplex_server::config::ServerConfig;
use duplex_server::shared::Shared;
use duplex_server::state::{OpState, StateRecord, StateTable};
use duplex_wal::{Clock, ManualClock};

/// One server's command layer over its own engine and clock.
struct Node {
    sh: Shared,
    clock: Arc<ManualClock>,
    /// Position of the other node's feed applied here.
    got: u64,
}

fn node(dir: &std::path::Path, id: u64) -> Node {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = Database::open(
        dir.join("data"),
        Config {
            node_id: id,
            background: false,
            clock: clock.clone(),
            ..Config::default()
        },
    )
    .unwrap();
    let rec = StateRecord {
        state: OpState::Running,
        epoch: 1,
        node_id: id,
        updated_ms: 0,
    };
    let table = StateTable::new(dir, rec).unwrap();
    let cfg = ServerConfig {
        data: dir.join("data"),
        node_id: id,
        ..ServerConfig::default()
    };
    let sh = Shared::new(
        db,
        cfg,
        table,
        clock.clone(),
        "127.0.0.1:0".parse().unwrap(),
    );
    Node { sh, clock, got: 0 }
}

/// Runs one command in database 0; returns its reply as RESP text.
fn run(n: &Node, args: &[&str]) -> String {
    let req: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let reqs = vec![req];
    String::from_utf8(write_groups_in(&n.sh, &[(0, &reqs)]).concat()).unwrap()
}

fn get(n: &Node, key: &str) -> Option<String> {
    duplex_server::keyspace::Reader::new(n.sh.db().snapshot(), n.clock.now_ms())
        .get(0, key.as_bytes())
        .unwrap()
        .map(|e| String::from_utf8(e.data).unwrap())
}

/// Applies everything `from` wrote since the last call to `to`.
fn ship(from: &Node, to: &mut Node) {
    let got = FeedCursor::new()
        .read(from.sh.db(), to.got, 10_000, 1 << 24)
        .unwrap();
    let Some(last) = got.last().map(|f| f.origin_lsn) else {
        return;
    };
    let batches: Vec<RemoteBatch<'_>> = got
        .iter()
        .map(|f| RemoteBatch {
            origin_lsn: f.origin_lsn,
            prev_origin_lsn: f.prev_origin_lsn,
            stamp: f.stamp,
            payload: &f.payload,
        })
        .collect();
    let rep = to
        .sh
        .db()
        .apply_remote(from.sh.db().node_id(), &batches)
        .unwrap();
    assert_eq!(rep.refused, None);
    to.got = last;
}

fn exchange(a: &mut Node, b: &mut Node) {
    ship(a, b);
    ship(b, a);
}

fn both(a: &Node, b: &Node, key: &str) -> Option<String> {
    let (va, vb) = (get(a, key), get(b, key));
    assert_eq!(va, vb, "the servers disagree on {key}");
    va
}

#[test]
fn concurrent_increments_all_count_and_resets_follow_the_stamps() {
    let t = duplex_testkit::temp_dir();
    let mut a = node(&t.path().join("a"), 1);
    let mut b = node(&t.path().join("b"), 2);
    // Concurrent INCRs on a missing key: each server's reply is its own view.
    assert_eq!(run(&a, &["INCR", "n"]), ":1\r\n");
    assert_eq!(run(&a, &["INCRBY", "n", "2"]), ":3\r\n");
    assert_eq!(run(&b, &["INCR", "n"]), ":1\r\n");
    assert_eq!(run(&b, &["DECRBY", "n", "5"]), ":-4\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "n").as_deref(), Some("-1"));
    // On a string base too: "10" plus both servers' increments.
    run(&a, &["SET", "s", "10"]);
    exchange(&mut a, &mut b);
    a.clock.set(1_000_010);
    b.clock.set(1_000_010);
    assert_eq!(run(&a, &["INCR", "s"]), ":11\r\n");
    assert_eq!(run(&b, &["INCRBY", "s", "5"]), ":15\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "s").as_deref(), Some("16"));
    // A SET after seeing the increments resets them.
    assert_eq!(run(&b, &["SET", "s", "100"]), "+OK\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "s").as_deref(), Some("100"));
    // A SET concurrent with an increment stamped before it: reset with it.
    a.clock.set(1_000_100);
    assert_eq!(run(&a, &["INCR", "s"]), ":101\r\n");
    b.clock.set(1_000_200);
    assert_eq!(run(&b, &["SET", "s", "7"]), "+OK\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "s").as_deref(), Some("7"));
    // A SET concurrent with an increment stamped after it (its writer cannot have seen
    // it): the increment counts on top.
    b.clock.set(1_000_300);
    assert_eq!(run(&b, &["SET", "s", "20"]), "+OK\r\n");
    a.clock.set(1_000_400);
    assert_eq!(run(&a, &["INCRBY", "s", "3"]), ":10\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "s").as_deref(), Some("23"));
    // A DEL concurrent with a later increment: the increment survives, from 0.
    a.clock.set(1_000_500);
    assert_eq!(run(&a, &["DEL", "s"]), ":1\r\n");
    b.clock.set(1_000_600);
    assert_eq!(run(&b, &["INCR", "s"]), ":24\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "s").as_deref(), Some("1"));
    // After a flush, counting starts again on both.
    a.clock.set(1_000_700);
    b.clock.set(1_000_700);
    let mut out = Vec::new();
    duplex_server::cmd::keys::flush_cmd(&b.sh, 0, &[b"FLUSHALL"], &mut out);
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "n"), None);
    assert_eq!(run(&a, &["INCR", "n"]), ":1\r\n");
    assert_eq!(run(&b, &["INCR", "n"]), ":1\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "n").as_deref(), Some("2"));
    // Expiry: INCR keeps it, the counter goes with it, a later INCR starts from 0.
    assert_eq!(run(&a, &["PEXPIRE", "n", "100"]), ":1\r\n");
    assert_eq!(run(&a, &["INCR", "n"]), ":3\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(run(&b, &["INCR", "n"]), ":4\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "n").as_deref(), Some("4"));
    a.clock.set(1_000_900);
    b.clock.set(1_000_900);
    assert_eq!(both(&a, &b, "n"), None);
    duplex_server::reclaim::step(&a.sh, None, 1000).unwrap();
    assert_eq!(get(&a, "n"), None, "reclaimed, still gone");
    assert_eq!(run(&a, &["INCR", "n"]), ":1\r\n");
    exchange(&mut a, &mut b);
    assert_eq!(both(&a, &b, "n").as_deref(), Some("1"));
    // INCR of a string that is not an integer.
    run(&a, &["SET", "w", "abc"]);
    assert_eq!(
        run(&a, &["INCR", "w"]),
        "-ERR value is not an integer or out of range\r\n"
    );
}

#[test]
fn two_servers_count_every_concurrent_incr() {
    let t = duplex_testkit::temp_dir();
    let secret = secret_file(t.path(), "secret", "factory-floor-secret");
    let nodes = mesh(t.path(), 2, &secret);
    let _ds: Vec<_> = nodes.iter().map(|n| n.start()).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for p in ports.clone() {
        for _ in 0..2 {
            let (stop, acked) = (stop.clone(), acked.clone());
            hs.push(std::thread::spawn(move || {
                let mut c = conn(p);
                while !stop.load(Ordering::Relaxed) {
                    let _: i64 = redis::cmd("INCR").arg("hits").query(&mut c).unwrap();
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    converge(&ports, CONVERGE);
    let n = acked.load(Ordering::Relaxed);
    assert!(n > 100, "only {n} INCRs");
    for p in ports {
        let v: i64 = redis::cmd("GET").arg("hits").query(&mut conn(p)).unwrap();
        assert_eq!(v as u64, n, "server {p} lost increments");
    }
}

/// The stamped digest `DUPLEX.DIGEST` answers, and the engine's.
fn digests(n: &Node) -> (String, String) {
    use std::ops::Bound::Unbounded;
    (
        duplex_server::digest::digest(&n.sh, Unbounded, Unbounded)
            .unwrap()
            .to_string(),
        n.sh.db()
            .stamped_digest(Unbounded, Unbounded)
            .unwrap()
            .to_string(),
    )
}

#[test]
fn digests_agree_whichever_server_reclaimed_what() {
    let t = duplex_testkit::temp_dir();
    let mut a = node(&t.path().join("a"), 1);
    let mut b = node(&t.path().join("b"), 2);
    run(&a, &["SET", "short", "v", "PX", "100"]);
    run(&a, &["SET", "long", "v", "EX", "100"]);
    run(&a, &["INCR", "cnt"]);
    run(&b, &["INCR", "cnt"]);
    exchange(&mut a, &mut b);
    run(&a, &["PEXPIRE", "cnt", "100"]);
    // A counter reset by a SET: its old contributions no longer count.
    run(&b, &["INCR", "reset"]);
    exchange(&mut a, &mut b);
    b.clock.set(1_000_050);
    run(&b, &["SET", "reset", "7"]);
    exchange(&mut a, &mut b);
    assert_eq!(digests(&a), digests(&b), "the same versions");
    a.clock.set(1_000_200);
    b.clock.set(1_000_200);
    assert_eq!(both(&a, &b, "short"), None);
    assert_eq!(both(&a, &b, "cnt"), None);
    assert_eq!(both(&a, &b, "reset").as_deref(), Some("7"));
    // Only A reclaims: the engines' digests differ, DUPLEX.DIGEST does not.
    let st = duplex_server::reclaim::step(&a.sh, None, 1000).unwrap();
    assert!(st.reclaimed >= 4, "{st:?}");
    let (da, db_) = (digests(&a), digests(&b));
    assert_ne!(
        da.1, db_.1,
        "A's engine holds tombstones where B's holds values"
    );
    assert_eq!(da.0, db_.0, "DUPLEX.DIGEST agrees");
    // And once B reclaimed too, both kinds agree.
    duplex_server::reclaim::step(&b.sh, None, 1000).unwrap();
    assert_eq!(digests(&a).1, digests(&b).1);
    assert_eq!(digests(&a).0, da.0);
}
