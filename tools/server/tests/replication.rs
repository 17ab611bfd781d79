//! Replication between real `duplexd` processes (issue 11), no faults but a `kill -9`:
//! 2 servers, then 3 in a full mesh, written concurrently through the `redis` crate, end
//! with equal `DUPLEX.DIGEST`s and every acknowledged write readable everywhere; each
//! batch is logged once on every server (no echo, no double apply); a MULTI/EXEC is never
//! seen half applied on another server; a server killed mid-load catches up.
//!
//! These need the peer link: without it `duplexd` refuses `--peer` and every test fails.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{
    assert_logged_once, assert_readable, converge, digest_count, last_lsn, mesh, peers,
    secret_file, Load, CONVERGE,
};
use common::Daemon;
use duplex_testkit::temp_dir;

/// Starts `n` servers in a full mesh under `dir`; returns them and their ports.
fn start_mesh(dir: &std::path::Path, n: u64) -> (Vec<Daemon>, Vec<u16>) {
    let secret = secret_file(dir, "secret", "factory-floor-secret");
    let nodes = mesh(dir, n, &secret);
    let ds: Vec<Daemon> = nodes.iter().map(|n| n.start()).collect();
    (ds, nodes.iter().map(|n| n.port).collect())
}

/// Each server's root and node id (ids 1, 2, ... in order), for [`assert_logged_once`].
fn roots(ds: &[Daemon]) -> Vec<(std::path::PathBuf, u64)> {
    ds.iter()
        .zip(1..)
        .map(|(d, id)| (d.root.clone(), id))
        .collect()
}

/// Loads every server for `ms`, waits for convergence and checks contents and the count
/// of records each server logged since `base` (its `last_lsn` before the load): every
/// server logs every acknowledged batch exactly once, its own and each peer's. Returns the
/// writes acknowledged per server.
fn load_and_check(ports: &[u16], writers: usize, ms: u64, tag: &str) -> Vec<u64> {
    let base: Vec<u64> = ports.iter().map(|p| last_lsn(*p)).collect();
    let load = Load::start(ports, writers, tag, 40);
    std::thread::sleep(Duration::from_millis(ms));
    let (acked, per) = load.stop();
    let total: u64 = per.iter().sum();
    for (i, n) in per.iter().enumerate() {
        assert!(*n > 50, "server {i} acknowledged only {n} writes: {per:?}");
    }
    let d = converge(ports, CONVERGE);
    assert_eq!(
        digest_count(&d),
        acked.len() as u64,
        "the digest counts other keys than were written"
    );
    for p in ports {
        assert_readable(*p, &acked, false);
    }
    for (p, b) in ports.iter().zip(&base) {
        let logged = last_lsn(*p) - b;
        assert_eq!(
            logged, total,
            "server {p} logged {logged} records for {total} acknowledged batches ({per:?}): a batch applied twice, echoed or lost"
        );
    }
    per
}

#[test]
fn two_servers_converge_under_concurrent_writes() {
    let t = temp_dir();
    let (_ds, ports) = start_mesh(t.path(), 2);
    load_and_check(&ports, 3, 1500, "two");
    // Both links report up, with the other's node id.
    for (i, p) in ports.iter().enumerate() {
        let rows = peers(*p);
        assert_eq!(rows.len(), 1, "server {p}: {rows:?}");
        assert_eq!(
            rows[0].get("state").map(String::as_str),
            Some("up"),
            "{rows:?}"
        );
        let other = if i == 0 { "2" } else { "1" };
        assert_eq!(
            rows[0].get("node").map(String::as_str),
            Some(other),
            "{rows:?}"
        );
    }
}

#[test]
fn three_servers_in_a_full_mesh_send_each_update_over_each_link_once() {
    let t = temp_dir();
    let (ds, ports) = start_mesh(t.path(), 3);
    let per = load_and_check(&ports, 2, 1500, "mesh");
    assert_logged_once(&roots(&ds), Duration::from_secs(10));
    // Each link carries exactly its sender's own batches, never another origin's (no
    // echo): a link that never reconnected sent as many as were written there, and every
    // server applied each origin's batches once (the record counts checked above say it
    // from the WAL's side).
    for (j, p) in ports.iter().enumerate() {
        let rows = peers(*p);
        assert_eq!(rows.len(), 2, "server {p}: {rows:?}");
        for r in &rows {
            let field = |f: &str| -> u64 {
                r.get(f)
                    .unwrap_or_else(|| panic!("DUPLEX.PEERS lacks {f}: {r:?}"))
                    .parse()
                    .unwrap_or_else(|e| panic!("{f}: {e}: {r:?}"))
            };
            assert_eq!(r.get("state").map(String::as_str), Some("up"), "{rows:?}");
            let sent = field("batches_sent");
            if field("connects") == 1 {
                assert_eq!(sent, per[j], "server {p} link {r:?}: wrote {}", per[j]);
            } else {
                assert!(sent >= per[j], "server {p} link {r:?}");
            }
            let origin = usize::try_from(field("node")).unwrap() - 1;
            assert_eq!(
                field("applied"),
                per[origin],
                "server {p} applied origin {}'s {} batches a different number of times: {r:?}",
                origin + 1,
                per[origin]
            );
        }
    }
}

/// Ten keys set by one MULTI/EXEC per round on server 1; a reader on server 2 reads them
/// with one MGET (one snapshot) and must see one round for all ten, never a mix.
#[test]
fn a_transaction_is_never_seen_half_applied_on_another_server() {
    let t = temp_dir();
    let (_ds, ports) = start_mesh(t.path(), 2);
    let keys: Vec<String> = (0..10).map(|i| format!("tx{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, keys, port) = (stop.clone(), keys.clone(), ports[1]);
        std::thread::spawn(move || {
            let mut c = common::cluster::conn(port);
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
                let rounds: BTreeSet<Option<String>> = got.into_iter().collect();
                assert_eq!(rounds.len(), 1, "half a transaction seen: {rounds:?}");
                if let Some(Some(r)) = rounds.into_iter().next() {
                    seen.insert(r);
                }
            }
            seen
        })
    };
    let mut c = common::cluster::conn(ports[0]);
    let rounds = 300;
    for r in 0..rounds {
        let mut p = redis::pipe();
        p.atomic();
        for k in &keys {
            p.set(k, format!("r{r:04}")).ignore();
        }
        let () = p.query(&mut c).unwrap();
        // Paced, so that the link carries rounds while the reader reads.
        std::thread::sleep(Duration::from_millis(2));
    }
    converge(&ports, CONVERGE);
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(
        seen.len() > 3,
        "the reader saw too few rounds replicate while they were written: {seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some(format!("r{:04}", rounds - 1).as_str())
    );
}

#[test]
fn a_server_killed_mid_load_catches_up_and_loses_nothing_acknowledged() {
    let t = temp_dir();
    let (mut ds, ports) = start_mesh(t.path(), 2);
    let load = Load::start(&ports, 2, "kill", 40);
    std::thread::sleep(Duration::from_millis(800));
    ds[1].kill9();
    // Server 1 goes on taking writes while server 2 is down.
    std::thread::sleep(Duration::from_millis(700));
    ds[1].restart();
    common::cluster::require_peer_link(ports[1], &ds[1]);
    std::thread::sleep(Duration::from_millis(300));
    let (acked, per) = load.stop();
    assert!(per[0] > 100, "{per:?}");
    // A fresh round on both once server 2 is back.
    let (acked2, _) = {
        let l = Load::start(&ports, 1, "after", 20);
        std::thread::sleep(Duration::from_millis(500));
        l.stop()
    };
    let d = converge(&ports, CONVERGE);
    for p in &ports {
        // A write to server 2 in flight at the kill may have landed with a newer value.
        assert_readable(*p, &acked, true);
        assert_readable(*p, &acked2, false);
    }
    assert!(digest_count(&d) >= (acked.len() + acked2.len()) as u64);
    // Nothing applied twice, nothing missing: each (origin, origin LSN) once in every log.
    assert_logged_once(&roots(&ds), Duration::from_secs(10));
    let log = ds[1].log();
    assert!(
        !log.contains("panicked"),
        "server 2 panicked after its restart: {log}"
    );
}

/// The checks above can fail: two servers that do not replicate (no `--peer`) never
/// converge, and one's acknowledged writes are missing on the other. Runs without the peer
/// link, so it also checks the harness itself (load, digests, reads).
#[test]
fn the_checks_catch_two_servers_that_do_not_replicate() {
    use common::ServerDaemon;
    let (ta, tb) = (temp_dir(), temp_dir());
    let (a, b) = (
        Daemon::start_in(ta.path(), &[]),
        Daemon::start_in(tb.path(), &["--node-id", "2"]),
    );
    let ports = [a.port, b.port];
    let load = Load::start(&ports, 2, "lone", 20);
    std::thread::sleep(Duration::from_millis(300));
    let (acked, per) = load.stop();
    assert!(per.iter().all(|n| *n > 10), "{per:?}");
    // Each server holds its own writes.
    let own = |s: &str| {
        acked
            .iter()
            .filter(|(k, _)| k.starts_with(s))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::HashMap<_, _>>()
    };
    assert_readable(a.port, &own("lone-s0-"), false);
    assert_readable(b.port, &own("lone-s1-"), false);
    let quiet =
        |f: &mut dyn FnMut()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    assert!(
        quiet(&mut || {
            converge(&ports, Duration::from_secs(1));
        }),
        "converge passed on two servers that share nothing"
    );
    assert!(
        quiet(&mut || assert_readable(b.port, &acked, false)),
        "server 2 has server 1's writes without a link"
    );
    let logs = [(a.root.clone(), 1), (b.root.clone(), 2)];
    assert!(
        quiet(&mut || assert_logged_once(&logs, Duration::ZERO)),
        "the log check passed on two servers that share nothing"
    );
    assert_eq!(
        digest_count(&common::cluster::digest(a.port)),
        own("lone-s0-").len() as u64
    );
}

/// A clean stop (SIGTERM) of a server while a client writes to it: every write it
/// acknowledged, also those acknowledged while it drained, reaches its peer before its
/// links stop (they used to stop at the signal, leaving the drain's writes on the stopped
/// server alone until it ran again).
#[test]
fn writes_acknowledged_during_a_clean_stop_reach_the_peer() {
    let t = temp_dir();
    let (mut ds, ports) = start_mesh(t.path(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let (port_a, stop_w) = (ports[0], stop.clone());
    let writer = std::thread::spawn(move || {
        let mut c = common::cluster::conn(port_a);
        let mut acked = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(15);
        let mut i = 0u64;
        while std::time::Instant::now() < until {
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("drain:{i}"))
                .arg(i)
                .query(&mut c);
            if r.is_err() {
                break;
            }
            acked.push(i);
            i += 1;
            if stop_w.load(Ordering::Relaxed) && acked.len() > 50_000 {
                break;
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(400));
    ds[0].signal(libc::SIGTERM);
    stop.store(true, Ordering::Relaxed);
    let st = ds[0].wait(30);
    assert!(st.success(), "A exited with {st}: {}", ds[0].log());
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty(), "the writer was acknowledged at all");
    let mut b = common::cluster::conn(ports[1]);
    let last = *acked.last().unwrap();
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|i| {
            let v: Option<u64> = redis::cmd("GET")
                .arg(format!("drain:{i}"))
                .query(&mut b)
                .unwrap();
            v != Some(*i)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} writes A acknowledged are not on B (first {:?}, last acknowledged {last}); A's log: {}",
        missing.len(),
        acked.len(),
        missing.first(),
        ds[0].log()
    );
}
