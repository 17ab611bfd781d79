//! A rebuild killed after its directory was installed but before its write hold ended
//! (issue 12), with real processes: the data directory keeps the `REBUILDING` marker, so
//! the next start, with `--rebuild-from` again or without it, resumes in `recovering`
//! (writes refused), catches up from the peer and ends with the write hold; it never turns
//! `running` on data that lags the peer.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::{conn, converge, get, mesh, secret_file, set, wait_for, CONVERGE};
use common::rebuild::{node_args, start_rebuilding, state, wait_running};
use common::{answers, Daemon};
use duplex_testkit::daemon::Spec;
use duplex_testkit::Proxy;

/// A SET on `port` is refused (the server is recovering).
fn write_refused(port: u16) -> bool {
    redis::cmd("SET")
        .arg("refused?")
        .arg("x")
        .query::<()>(&mut conn(port))
        .is_err()
}

/// A is rebuilt from B while B's link to A is cut (a proxy, partitioned): A installs the
/// rebuilt directory but cannot catch up with what B writes next, so its write hold never
/// succeeds. Killed there (twice: restarted first with `--rebuild-from`, then without), A
/// comes back `recovering` each time; once the link heals it catches up, turns `running`
/// and holds every write B took, the marker gone.
#[test]
fn a_rebuild_killed_before_its_write_hold_resumes_recovering_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "secret", "rebuild suite secret");
    let mut nodes = mesh(dir.path(), 2, &secret);
    let to_a = Proxy::start(nodes[0].addr().parse().unwrap()).unwrap();
    nodes[1].peers = vec![to_a.addr()];
    let (na, nb) = (&nodes[0], &nodes[1]);
    let mut a = na.start();
    let b = nb.start();
    for i in 0..50 {
        set(a.port, &format!("a-before-{i}"), "a");
        set(b.port, &format!("b-before-{i}"), "b");
    }
    converge(&[a.port, b.port], CONVERGE);
    a.kill9();
    drop(a);
    std::fs::remove_dir_all(na.root.join("data")).unwrap();
    to_a.partition();
    let marker = na.root.join("data").join("REBUILDING");
    let mut a = start_rebuilding(na, &nb.addr());
    wait_for("A's rebuilt directory in place", CONVERGE, || {
        marker.exists()
    });
    // What B takes now reaches A only over the cut link.
    for i in 0..50 {
        set(b.port, &format!("b-after-{i}"), "b");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(a.port), "recovering", "{}", a.log());
    assert!(write_refused(a.port));
    a.kill9();
    assert!(marker.exists(), "the marker outlives the kill");
    // Started again the same way: the rebuild resumes (no copy, the directory is not
    // refused as non-empty) and stays recovering while it cannot catch up.
    a.restart();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(a.port), "recovering", "{}", a.log());
    assert!(write_refused(a.port));
    let log = a.log();
    assert_eq!(
        log.matches("event=\"rebuild_requested\"").count(),
        1,
        "one copy only: {log}"
    );
    assert!(log.contains("rebuild_resume"), "{log}");
    a.kill9();
    drop(a);
    // Started without --rebuild-from: the marker alone makes it resume.
    set(b.port, "b-while-a-was-down", "b");
    let a = Daemon::launch(Spec {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_duplexd")),
        root: na.root.clone(),
        port: na.port,
        args: node_args(na, &[]),
        ready: answers,
    });
    assert_eq!(state(a.port), "recovering", "{}", a.log());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(a.port), "recovering", "{}", a.log());
    assert!(write_refused(a.port));
    assert_eq!(get(a.port, "b-after-49"), None, "A has not caught up");
    to_a.heal();
    let t0 = Instant::now();
    wait_running(&a, &b);
    eprintln!("caught up and running {:?} after the heal", t0.elapsed());
    for i in 0..50 {
        assert_eq!(get(a.port, &format!("a-before-{i}")).as_deref(), Some("a"));
        assert_eq!(get(a.port, &format!("b-before-{i}")).as_deref(), Some("b"));
        assert_eq!(get(a.port, &format!("b-after-{i}")).as_deref(), Some("b"));
    }
    assert_eq!(get(a.port, "b-while-a-was-down").as_deref(), Some("b"));
    wait_for("the marker removed", CONVERGE, || !marker.exists());
    let log = a.log();
    assert!(log.contains("rebuild_running"), "{log}");
    set(a.port, "a-after", "a");
    wait_for("A's new write on B", CONVERGE, || {
        get(b.port, "a-after").as_deref() == Some("a")
    });
    converge(&[a.port, b.port], CONVERGE);
}
