//! The needs-rebuild outcome with real processes (issue 13): a server below a rebuilt
//! origin's base whose every other member lacks the rest of that origin's earlier batches
//! is **stranded** and says so, in `INFO replication` (`needs_rebuild:yes`) and on that
//! origin's `DUPLEX.PEERS` row (`needs_rebuild`), instead of waiting for good.
//!
//! Three servers A, B, C. B's and A's links to C go through proxies the test partitions,
//! so B's last writes reach A only. A keeps nothing of them it could forward: no archive, one byte
//! of forwarding memory, one byte of WAL kept for peers, and a checkpoint after its log
//! rolled past them (64 MiB of its own writes). B's disk is lost and B is rebuilt from A:
//! its base holds those writes, C's mark of B is below it, B's feed refuses C (below the
//! base), and A tells C it lacks the rest (a LACKING frame). C is stranded.

mod common;

use std::path::PathBuf;

use common::cluster::{
    conn, converge, get, info_replication, mesh, peers, secret_file, set, status, wait_for,
    NodeSpec, CONVERGE,
};
use common::rebuild::{node_args, start_rebuilding, wait_running};
use duplex_testkit::daemon::{Daemon, Spec};
use duplex_testkit::Proxy;

/// Starts `node` with `extra` flags after its own (the last of a repeated flag wins).
fn start_with(node: &NodeSpec, extra: &[&str]) -> Daemon {
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_string()).collect();
    Daemon::launch(Spec {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_duplexd")),
        root: node.root.clone(),
        port: node.port,
        args: node_args(node, &extra),
        ready: common::answers,
    })
}

#[test]
fn a_server_no_member_can_bring_level_with_a_rebuilt_origin_says_it_needs_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "secret", "stranded suite secret");
    let mut nodes = mesh(dir.path(), 3, &secret);
    let b_to_c = Proxy::start(nodes[2].addr().parse().unwrap()).unwrap();
    let a_to_c = Proxy::start(nodes[2].addr().parse().unwrap()).unwrap();
    nodes[1].peers = vec![nodes[0].addr(), b_to_c.addr()];
    nodes[0].peers = vec![nodes[1].addr(), a_to_c.addr()];
    let (na, nb, nc) = (&nodes[0], &nodes[1], &nodes[2]);
    // No archive and one byte of forwarding memory: A can forward only from its WAL.
    let lean = ["--archive-dir", "", "--replication-backlog-bytes", "1"];
    let mut a = start_with(na, &lean);
    let mut b = nb.start();
    let c = nc.start();
    set(b.port, "before", "b");
    converge(&[a.port, b.port, c.port], CONVERGE);
    for port in [a.port, b.port, c.port] {
        assert!(
            info_replication(port).contains("needs_rebuild:no"),
            "{}",
            info_replication(port)
        );
    }

    b_to_c.partition();
    let n = 20;
    for i in 0..n {
        set(b.port, &format!("b-on-a-only-{i}"), "b");
    }
    wait_for("B's last writes on A", CONVERGE, || {
        get(a.port, &format!("b-on-a-only-{}", n - 1)).is_some()
    });
    assert_eq!(
        get(c.port, "b-on-a-only-0"),
        None,
        "the cut keeps them off C"
    );

    // A's log rolls past B's batches (64 MiB segments) and everyone takes A's writes.
    let big = vec![b'x'; 1 << 20];
    let mut ca = conn(a.port);
    for _ in 0..70 {
        let () = redis::cmd("SET")
            .arg("a-big")
            .arg(&big[..])
            .query(&mut ca)
            .unwrap();
    }
    set(a.port, "a-done", "1");
    let deadline = std::time::Instant::now() + 2 * CONVERGE;
    while get(b.port, "a-done").is_none() || get(c.port, "a-done").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "A's writes never reached B and C: {}\nA's log:\n{}",
            status(&[a.port, b.port, c.port]),
            a.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A restarts keeping one byte of WAL for peers, and its checkpoint releases the WAL
    // holding B's batches that C lacks (past the bound). (Its link to C is cut meanwhile:
    // a restarted server forwards a silent-looking origin's batches from its log at once.)
    a_to_c.partition();
    drop(ca);
    a.stop();
    drop(a);
    let mut flags = lean.to_vec();
    flags.extend(["--peer-wal-retention-bytes", "1"]);
    let a = start_with(na, &flags);
    set(a.port, "a-after-restart", "1");
    let () = redis::cmd("DUPLEX.CHECKPOINT")
        .query(&mut conn(a.port))
        .unwrap();
    assert!(
        info_replication(a.port).contains("peer_wal_dropped:1"),
        "A released WAL a peer needed: {}",
        info_replication(a.port)
    );

    // B's disk is lost; B is rebuilt from A, whose state holds B's last writes.
    b.kill9();
    drop(b);
    std::fs::remove_dir_all(nb.root.join("data")).unwrap();
    let b = start_rebuilding(nb, &na.addr());
    wait_running(&b, &a);
    for i in 0..n {
        assert_eq!(
            get(b.port, &format!("b-on-a-only-{i}")).as_deref(),
            Some("b")
        );
    }
    b_to_c.heal();
    a_to_c.heal();

    c_alone_says_it_needs_a_rebuild(&a, &b, &c);
    // And C still lacks B's last writes: nothing came by another way.
    assert_eq!(get(c.port, "b-on-a-only-0"), None);
}

/// Waits until C says `needs_rebuild:yes`; the reason must be on B's row of its
/// `DUPLEX.PEERS` and no other, and A and B must say `needs_rebuild:no`.
fn c_alone_says_it_needs_a_rebuild(a: &Daemon, b: &Daemon, c: &Daemon) {
    let deadline = std::time::Instant::now() + CONVERGE;
    while !info_replication(c.port).contains("needs_rebuild:yes") {
        assert!(
            std::time::Instant::now() < deadline,
            "C never said it needs a rebuild: {}\nA's log:\n{}\nC's log:\n{}",
            status(&[a.port, b.port, c.port]),
            a.log(),
            c.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let rows = peers(c.port);
    let row_b = rows
        .iter()
        .find(|r| r.get("node").map(String::as_str) == Some("2"))
        .unwrap_or_else(|| panic!("C has a row for B: {rows:?}"));
    let why = row_b.get("needs_rebuild").cloned().unwrap_or_default();
    assert!(
        !why.is_empty(),
        "the reason is on B's row of C's DUPLEX.PEERS: {rows:?}"
    );
    for r in &rows {
        if r.get("node").map(String::as_str) != Some("2") {
            assert!(
                r.get("needs_rebuild").is_none_or(String::is_empty),
                "only B's row: {rows:?}"
            );
        }
    }
    // A and B are whole: neither says it.
    for (who, port) in [("A", a.port), ("B", b.port)] {
        assert!(
            info_replication(port).contains("needs_rebuild:no"),
            "{who}: {}\n{}",
            info_replication(port),
            status(&[a.port, b.port, c.port])
        );
    }
}
