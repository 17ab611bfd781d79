//! Smoke test of the peer link with real processes: two `duplexd`s started with the flags
//! an operator runs (`--node-id`, `--port`, `--peer`, `--cluster-secret-file`) see each
//! other's writes within seconds; a server with another secret never gets or gives a key.
//! (The fault, restart and three-server suites are `tests/replication*.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{answers, io_flags, Daemon, ServerDaemon};
use duplex_testkit::daemon::Spec;
use duplex_testkit::free_port;
use redis::Commands;

/// Starts `duplexd` in `root` on `port` with node id `node`, one peer and a secret file.
fn start(root: &Path, port: u16, node: u64, peer: u16, secret: &Path) -> Daemon {
    start_with_peer(root, port, node, &format!("127.0.0.1:{peer}"), secret)
}

/// Starts `duplexd` like [`start`], its `--peer` given as written (`ID@HOST:PORT` pins).
fn start_with_peer(root: &Path, port: u16, node: u64, peer: &str, secret: &Path) -> Daemon {
    let mut args = io_flags();
    args.extend([
        "--node-id".to_string(),
        node.to_string(),
        "--peer".into(),
        peer.to_string(),
        "--cluster-secret-file".into(),
        secret.display().to_string(),
    ]);
    Daemon::launch(Spec {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_duplexd")),
        root: root.to_path_buf(),
        port,
        args,
        ready: answers,
    })
}

fn get(d: &Daemon, key: &str) -> Option<String> {
    d.conn().get(key).unwrap()
}

/// Waits up to `secs` for `key` to read `want` on `d`.
fn eventually(d: &Daemon, key: &str, want: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if get(d, key).as_deref() == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn info_replication(d: &Daemon) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query(&mut d.conn())
        .unwrap()
}

#[test]
fn two_servers_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "the cluster secret\n").unwrap();
    let (p1, p2) = (free_port(), free_port());
    let a = start(&dir.path().join("n1"), p1, 1, p2, &secret);
    let b = start(&dir.path().join("n2"), p2, 2, p1, &secret);
    let _: () = a.conn().set("from-1", "one").unwrap();
    let _: () = b.conn().set("from-2", "two").unwrap();
    for d in [&a, &b] {
        assert!(eventually(d, "from-1", "one", 10), "{}", d.log());
        assert!(eventually(d, "from-2", "two", 10), "{}", d.log());
    }
    let info = info_replication(&a);
    assert!(info.contains("role:duplex"), "{info}");
    assert!(info.contains("peers:1"), "{info}");
    assert!(info.contains(",node=2,state=up,"), "{info}");
    let peers: Vec<Vec<String>> = redis::cmd("DUPLEX.PEERS").query(&mut b.conn()).unwrap();
    assert_eq!(peers.len(), 1);
    let field = |k: &str| {
        let i = peers[0].iter().position(|f| f == k).unwrap();
        peers[0][i + 1].clone()
    };
    assert_eq!(field("node"), "1");
    assert_eq!(field("state"), "up");
    assert_eq!(
        field("applied"),
        "1",
        "one batch of node 1 applied on node 2"
    );
}

#[test]
fn a_server_with_another_secret_never_replicates() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good, "the cluster secret").unwrap();
    std::fs::write(&bad, "a guess").unwrap();
    let (p1, p2) = (free_port(), free_port());
    let a = start(&dir.path().join("n1"), p1, 1, p2, &good);
    let b = start(&dir.path().join("n2"), p2, 2, p1, &bad);
    let _: () = a.conn().set("secret-1", "one").unwrap();
    let _: () = b.conn().set("secret-2", "two").unwrap();
    // Both links retry (every 5 s after a refusal): give them time to be refused.
    let deadline = Instant::now() + Duration::from_secs(3);
    let refused = |d: &Daemon| info_replication(d).contains("state=refused: ");
    while Instant::now() < deadline && !(refused(&a) && refused(&b)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for d in [&a, &b] {
        let info = info_replication(d);
        assert!(info.contains("wrong cluster secret"), "{info}");
        assert!(info.contains("batches_sent=0"), "{info}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get(&a, "secret-2"), None);
    assert_eq!(get(&b, "secret-1"), None);
    assert!(a.log().contains("peer_refused"), "{}", a.log());
}

#[test]
fn a_second_server_claiming_a_live_node_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "the cluster secret").unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let a = start(&dir.path().join("n1"), p1, 1, p2, &secret);
    let b = start(&dir.path().join("n2"), p2, 2, p1, &secret);
    let _: () = b.conn().set("from-2", "two").unwrap();
    assert!(eventually(&a, "from-2", "two", 10), "{}", a.log());
    // Another server with node id 2, pointed at node 1.
    let c = start(&dir.path().join("n3"), p3, 2, p1, &secret);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !info_replication(&c).contains("duplicate node id") {
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = info_replication(&c);
    assert!(
        info.contains("state=refused: refused by the peer: duplicate node id"),
        "{info}"
    );
    assert!(info_replication(&b).contains(",state=up,"));
}

#[test]
fn a_stranger_speaking_frames_is_closed_and_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "the cluster secret").unwrap();
    let (p1, nobody) = (free_port(), free_port());
    let a = start(&dir.path().join("n1"), p1, 1, nobody, &secret);
    // The frame magic's first byte, then garbage: refused at the second byte.
    let (got, closed) = common::raw(p1, b"\xD7XYZ garbage", 3);
    assert!(closed, "the connection is closed");
    assert!(got.is_empty(), "no frame, no data: {got:?}");
    // A server without a secret closes a peer connection at once.
    let plain = Daemon::start_in(&dir.path().join("plain"), &[]);
    let (got, closed) = common::raw(plain.port, b"\xD7DPL", 3);
    assert!(closed && got.is_empty());
    assert!(
        plain.log().contains("no --cluster-secret-file"),
        "{}",
        plain.log()
    );
    for d in [&a, &plain] {
        let pong: String = redis::cmd("PING").query(&mut d.conn()).unwrap();
        assert_eq!(pong, "PONG");
    }
}

#[test]
fn pinned_peers_make_the_membership_and_an_outsider_with_the_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "the cluster secret").unwrap();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let a = start_with_peer(
        &dir.path().join("n1"),
        p1,
        1,
        &format!("2@127.0.0.1:{p2}"),
        &secret,
    );
    let b = start_with_peer(
        &dir.path().join("n2"),
        p2,
        2,
        &format!("1@127.0.0.1:{p1}"),
        &secret,
    );
    let _: () = a.conn().set("member", "yes").unwrap();
    assert!(eventually(&b, "member", "yes", 10), "{}", b.log());
    // Node 3 has the secret but is in nobody's membership.
    let c = start(&dir.path().join("n3"), p3, 3, p1, &secret);
    let _: () = c.conn().set("outsider", "no").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !info_replication(&c).contains("not a member") {
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = info_replication(&c);
    assert!(
        info.contains("not a member") || info.contains("membership"),
        "{info}"
    );
    assert!(info.contains("batches_sent=0"), "{info}");
    assert_eq!(get(&a, "outsider"), None);
    assert!(a.log().contains("peer_refused"), "{}", a.log());
}
