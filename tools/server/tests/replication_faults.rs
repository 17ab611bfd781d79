//! Replication through a faulty network (issue 11): two `duplexd`s whose `--peer` each
//! points at a fault-injecting proxy (`duplex_testkit::proxy`) in front of the other, so
//! the tests delay, cut mid-frame, drop, duplicate, replay and partition each direction of
//! each link; after the heal the servers converge with nothing acknowledged lost. Also:
//! the same key written on both during a partition (one winner everywhere, the loser in the
//! conflict journal where it lost), split brain (a delete newer than every write stays
//! deleted) with a third server joining after the heal, and a peer with a wrong secret.
//!
//! These need the peer link: without it `duplexd` refuses `--peer` and every test fails.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::cluster::{
    assert_logged_once, assert_readable, conflicts, converge, digest, get, last_lsn, peers,
    secret_file, set, wait_for, Load, NodeSpec, PeerRow, CONVERGE,
};
use common::Daemon;
use duplex_testkit::{temp_dir, Dir, Proxy};
use redis::Commands;

/// Two servers, each reaching the other through a proxy: `p[0]` carries server 1's link
/// to server 2 (server 1 is its client), `p[1]` server 2's link to server 1.
struct Pair {
    nodes: Vec<NodeSpec>,
    ds: Vec<Daemon>,
    p: Vec<Proxy>,
}

impl Pair {
    fn start(dir: &Path) -> Pair {
        let secret = secret_file(dir, "secret", "factory-floor-secret");
        let mut nodes = vec![
            NodeSpec::new(dir, 1, &secret),
            NodeSpec::new(dir, 2, &secret),
        ];
        let target = |n: &NodeSpec| -> SocketAddr { n.addr().parse().unwrap() };
        let p = vec![
            Proxy::start(target(&nodes[1])).unwrap(),
            Proxy::start(target(&nodes[0])).unwrap(),
        ];
        nodes[0].peers = vec![p[0].addr()];
        nodes[1].peers = vec![p[1].addr()];
        let ds = nodes.iter().map(NodeSpec::start).collect();
        Pair { nodes, ds, p }
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    fn partition(&self) {
        self.p.iter().for_each(Proxy::partition);
    }

    fn heal(&self) {
        self.p.iter().for_each(Proxy::heal);
    }

    /// Waits until a key set on each server is on the other: the links are up.
    fn wait_linked(&self, tag: &str) {
        let ports = self.ports();
        set(ports[0], &format!("{tag}-from1"), "x");
        set(ports[1], &format!("{tag}-from2"), "x");
        wait_for(&format!("the links to carry {tag}"), CONVERGE, || {
            get(ports[1], &format!("{tag}-from1")).is_some()
                && get(ports[0], &format!("{tag}-from2")).is_some()
        });
    }
}

/// The link fault phases under load: delay, a cut in the middle of a frame in each
/// direction, a chunk sent twice and one replayed on reconnect, dropped connections.
fn link_faults(pair: &Pair) {
    for p in &pair.p {
        p.set_delay(Dir::ToTarget, 40);
        p.set_delay(Dir::ToClient, 25);
    }
    std::thread::sleep(Duration::from_millis(800));
    for p in &pair.p {
        p.set_delay(Dir::ToTarget, 0);
        p.set_delay(Dir::ToClient, 0);
    }
    // Odd byte counts: past the handshake, inside some frame.
    pair.p[0].cut_after(Dir::ToTarget, 1_777);
    pair.p[1].cut_after(Dir::ToTarget, 2_333);
    pair.p[0].cut_after(Dir::ToClient, 301);
    wait_for("the cuts", Duration::from_secs(10), || {
        pair.p.iter().all(|p| p.cuts(Dir::ToTarget) == 1) && pair.p[0].cuts(Dir::ToClient) == 1
    });
    reconnect(pair, "after the cuts");
    // A data chunk (the links are up and the load runs) sent twice.
    let chunks: Vec<u64> = pair.p.iter().map(|p| p.chunks(Dir::ToTarget)).collect();
    pair.p.iter().for_each(|p| p.duplicate_next(Dir::ToTarget));
    wait_for("the duplicated chunks", Duration::from_secs(10), || {
        pair.p
            .iter()
            .zip(&chunks)
            .all(|(p, c)| p.chunks(Dir::ToTarget) > c + 1)
    });
    // The last chunk of a connection replayed on the next one, past its handshake.
    pair.p
        .iter()
        .for_each(|p| p.replay_on_reconnect(Dir::ToTarget, 4));
    reconnect(pair, "after the replay");
}

/// Drops every connection and waits until each proxy has seen a new one and the links
/// carry data again.
fn reconnect(pair: &Pair, when: &str) {
    let before: Vec<u64> = pair.p.iter().map(Proxy::accepted).collect();
    pair.p.iter().for_each(Proxy::drop_connections);
    wait_for(
        &format!("the links to reconnect {when}"),
        Duration::from_secs(10),
        || pair.p.iter().zip(&before).all(|(p, b)| p.accepted() > *b),
    );
    pair.wait_linked(&format!("relinked-{}", before[0]));
}

#[test]
fn delay_cuts_drops_duplicates_and_a_partition_converge_after_the_heal() {
    let t = temp_dir();
    let pair = Pair::start(t.path());
    let ports = pair.ports();
    pair.wait_linked("warm");
    converge(&ports, CONVERGE);
    let base: Vec<u64> = ports.iter().map(|p| last_lsn(*p)).collect();
    let load = Load::start(&ports, 2, "faults", 30);
    link_faults(&pair);
    // A partition under load: nothing crosses (the proxies are really on the path) ...
    pair.partition();
    std::thread::sleep(Duration::from_millis(200));
    set(ports[0], "during-partition", "1");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        get(ports[1], "during-partition"),
        None,
        "data crossed a partition"
    );
    assert_ne!(digest(ports[0]), digest(ports[1]));
    // ... and after the heal everything does.
    pair.heal();
    std::thread::sleep(Duration::from_millis(500));
    let (acked, per) = load.stop();
    assert!(per.iter().all(|n| *n > 50), "too few writes: {per:?}");
    converge(&ports, CONVERGE);
    for p in &ports {
        assert_readable(*p, &acked, false);
    }
    assert_eq!(get(ports[1], "during-partition").as_deref(), Some("1"));
    let roots: Vec<_> = pair
        .ds
        .iter()
        .zip(1..)
        .map(|(d, id)| (d.root.clone(), id))
        .collect();
    assert_logged_once(&roots, Duration::from_secs(10));
    // Each batch logged once on each server, whatever the network duplicated: the load's
    // writes, the marker, and the keys `reconnect` wrote (2 per call, 2 calls).
    let total = per.iter().sum::<u64>() + 1 + 4;
    for (p, b) in ports.iter().zip(&base) {
        assert_eq!(
            last_lsn(*p) - b,
            total,
            "server {p}: a batch applied twice or lost\n{}",
            common::cluster::status(&ports)
        );
    }
    for p in &ports {
        let rows = peers(*p);
        assert_eq!(state(&rows), "up", "server {p}: {rows:?}");
    }
}

/// The `state` of a server's only peer row.
fn state(rows: &[PeerRow]) -> String {
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].get("state").cloned().unwrap_or_default()
}

#[test]
fn the_same_key_written_on_both_keeps_one_winner_and_journals_the_loser() {
    let t = temp_dir();
    let pair = Pair::start(t.path());
    let ports = pair.ports();
    pair.wait_linked("warm");
    pair.partition();
    // Key i is written first on server i % 2 + 1, then on the other: the later write wins.
    let mut expect = Vec::new();
    for i in 0..6 {
        let first = i % 2;
        let second = 1 - first;
        let k = format!("both{i}");
        set(ports[first], &k, &format!("from{}-{i}", first + 1));
        std::thread::sleep(Duration::from_millis(3));
        set(ports[second], &k, &format!("from{}-{i}", second + 1));
        expect.push((k, first, second));
    }
    pair.heal();
    converge(&ports, CONVERGE);
    for (k, loser, winner) in &expect {
        let i = &k[4..];
        let win = format!("from{}-{i}", winner + 1);
        let lose = format!("from{}-{i}", loser + 1);
        for p in &ports {
            assert_eq!(get(*p, k).as_ref(), Some(&win), "server {p}, {k}");
        }
        // The loser is in the journal of the server where it was written (and lost).
        let (recorded, dropped, rows) = conflicts(ports[*loser]);
        assert!(recorded >= 3, "{recorded}");
        assert_eq!(dropped, 0);
        let e = rows.iter().find(|r| &r.key == k).unwrap_or_else(|| {
            panic!(
                "no conflict entry for {k} on server {}: {rows:?}",
                loser + 1
            )
        });
        assert_eq!(e.loser_value.as_ref(), Some(&lose), "{e:?}");
        assert!(!e.loser_deleted);
        assert_eq!(e.loser.1, *loser as u64 + 1, "{e:?}");
        assert_eq!(e.winner.1, *winner as u64 + 1, "{e:?}");
        assert!(e.winner.0 > e.loser.0, "{e:?}");
        // The winner's server, where the loser arrived late, records the same pair
        // (OPERATIONS.md says every server holding both versions does).
        let (_, _, there) = conflicts(ports[*winner]);
        let w = there.iter().find(|r| &r.key == k);
        assert_eq!(w, Some(e), "server {} journals {k} differently", winner + 1);
    }
}

/// Split brain: during a partition key `a` is updated on server 2 and later deleted on
/// server 1; `b` is set on both; `c` is deleted on server 1 and left alone on server 2.
/// After the heal both agree, the delete newer than every write stays, the lost update is
/// journaled; then a third server joins and converges to the same digest.
#[test]
fn split_brain_then_a_third_server_joins() {
    let t = temp_dir();
    let mut pair = Pair::start(t.path());
    let ports = pair.ports();
    for k in ["a", "b", "c"] {
        set(ports[0], k, "base");
    }
    pair.wait_linked("warm");
    wait_for("the base keys on server 2", CONVERGE, || {
        get(ports[1], "c").is_some()
    });
    pair.partition();
    set(ports[1], "a", "s2-update");
    set(ports[0], "b", "from1");
    std::thread::sleep(Duration::from_millis(3));
    set(ports[1], "b", "from2");
    std::thread::sleep(Duration::from_millis(3));
    let n: i64 = common::cluster::conn(ports[0]).del(&["a", "c"]).unwrap();
    assert_eq!(n, 2);
    pair.heal();
    let d = converge(&ports, CONVERGE);
    for p in &ports {
        assert_eq!(
            get(*p, "a"),
            None,
            "server {p}: a came back after its newer delete"
        );
        assert_eq!(get(*p, "c"), None, "server {p}: c came back");
        assert_eq!(get(*p, "b").as_deref(), Some("from2"), "server {p}");
    }
    let (_, _, rows) = conflicts(ports[1]);
    assert!(
        rows.iter()
            .any(|r| r.key == "a" && r.loser_value.as_deref() == Some("s2-update")),
        "the update of a lost to the delete is not journaled on server 2: {rows:?}"
    );
    let (_, _, rows) = conflicts(ports[0]);
    assert!(
        rows.iter()
            .any(|r| r.key == "b" && r.loser_value.as_deref() == Some("from1")),
        "server 1's b is not journaled there: {rows:?}"
    );

    // A third server joins: the other two are restarted naming it too.
    let secret = pair.nodes[0].secret.clone();
    let mut n3 = NodeSpec::new(t.path(), 3, &secret);
    n3.peers = pair.nodes.iter().map(NodeSpec::addr).collect();
    for (i, node) in pair.nodes.iter_mut().enumerate() {
        pair.ds[i].stop();
        node.peers.push(n3.addr());
        pair.ds[i] = node.start();
    }
    let _d3 = n3.start();
    let all = [ports[0], ports[1], n3.port];
    assert_eq!(
        converge(&all, CONVERGE),
        d,
        "the joined cluster's contents changed"
    );
    assert_eq!(get(n3.port, "a"), None);
    assert_eq!(get(n3.port, "c"), None);
    assert_eq!(get(n3.port, "b").as_deref(), Some("from2"));
    assert_eq!(get(n3.port, "warm-from1").as_deref(), Some("x"));
}

#[test]
fn a_peer_with_a_wrong_secret_gets_no_data_and_is_shown_refused() {
    let t = temp_dir();
    let good = secret_file(t.path(), "good", "factory-floor-secret");
    let bad = secret_file(t.path(), "bad", "not-the-secret");
    let mut n1 = NodeSpec::new(t.path(), 1, &good);
    let mut n2 = NodeSpec::new(t.path(), 2, &bad);
    // Server 1's link goes through a proxy that counts what it carries.
    let p = Proxy::start(n2.addr().parse().unwrap()).unwrap();
    n1.peers = vec![p.addr()];
    n2.peers = vec![n1.addr()];
    let _d1 = n1.start();
    let _d2 = n2.start();
    let secret_value = "s".repeat(1000);
    for i in 0..50 {
        set(n1.port, &format!("one{i}"), &secret_value);
        set(n2.port, &format!("two{i}"), "own data");
    }
    let own = digest(n2.port);
    // Both links are refused, and say so.
    for (port, other) in [(n1.port, &n2), (n2.port, &n1)] {
        wait_for(
            &format!("server {port} to show its link to {} refused", other.addr()),
            Duration::from_secs(15),
            || {
                peers(port)
                    .iter()
                    .any(|r| r.get("state").is_some_and(|s| s.starts_with("refused")))
            },
        );
    }
    // Several transfer intervals and reconnects later, nothing crossed either way.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(digest(n2.port), own, "the wrong-secret peer received data");
    assert_eq!(common::cluster::digest_count(&own), 50);
    assert_eq!(get(n2.port, "one0"), None);
    assert_eq!(get(n1.port, "two0"), None);
    // 50 kB of values on server 1; what went towards server 2 is handshakes only.
    let (sent, conns) = (p.bytes(Dir::ToTarget), p.accepted());
    assert!(conns >= 1 && sent > 0, "server 1 never tried the link");
    assert!(
        sent < conns * 1024,
        "{sent} bytes went to the wrong-secret peer over {conns} connections"
    );
}

/// Members that die (issue 11): with three servers, an update of A that reached C but not
/// B (A's link to B partitioned) must still reach B once A is lost, by C forwarding A's
/// batches or by a repair that compares range digests.
#[test]
fn a_dead_members_update_that_reached_one_peer_reaches_the_other() {
    let t = temp_dir();
    let secret = secret_file(t.path(), "secret", "factory-floor-secret");
    let mut n: Vec<NodeSpec> = (1..=3)
        .map(|id| NodeSpec::new(t.path(), id, &secret))
        .collect();
    let ab = Proxy::start(n[1].addr().parse().unwrap()).unwrap();
    let ba = Proxy::start(n[0].addr().parse().unwrap()).unwrap();
    n[0].peers = vec![ab.addr(), n[2].addr()];
    n[1].peers = vec![ba.addr(), n[2].addr()];
    n[2].peers = vec![n[0].addr(), n[1].addr()];
    let mut ds: Vec<Daemon> = n.iter().map(NodeSpec::start).collect();
    let ports: Vec<u16> = n.iter().map(|n| n.port).collect();
    for (i, p) in ports.iter().enumerate() {
        set(*p, &format!("hello{i}"), "x");
    }
    converge(&ports, CONVERGE);
    ab.partition();
    ba.partition();
    set(ports[0], "from-a", "reached-c-only");
    wait_for("A's update on C", CONVERGE, || {
        get(ports[2], "from-a").is_some()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get(ports[1], "from-a"),
        None,
        "A's update crossed the partition"
    );
    ds[0].kill9();
    wait_for(
        "A's update to reach B through C after A died (forwarding or anti-entropy)",
        CONVERGE,
        || get(ports[1], "from-a").is_some(),
    );
    converge(&ports[1..], CONVERGE);
}
