//! A lost server whose archive survived on another disk (issue 12), with real processes:
//! its updates that were acknowledged but never reached the peer are taken back from its
//! own archive during the rebuild (origin and stamps kept), served by the rebuilt server
//! and sent to the peer; the rebuild reports how many (log `rebuild_archive`, INFO
//! `rebuild_updates_from_archive`).

mod common;

use std::path::PathBuf;

use common::cluster::{conn, converge, get, mesh, secret_file, set, wait_for, CONVERGE};
use common::rebuild::{field, node_args, start_rebuilding, wait_running};
use common::{answers, Daemon};
use duplex_testkit::daemon::Spec;
use duplex_testkit::Proxy;

/// A INFO field's value.
fn info_field(port: u16, name: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").query(&mut conn(port)).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
}

/// A's link to B is cut (a proxy, partitioned) while A takes writes: acknowledged, in A's
/// archive (synchronous, `--archive-lag-ms 0`), never on B. A's data directory is
/// destroyed, its archive kept; A is rebuilt from B. The rebuild takes those writes back
/// from A's archive: A serves them after the rebuild and B gets them, with A's stamps
/// (equal digests).
#[test]
fn a_lost_servers_surviving_archive_gives_back_its_unreplicated_writes() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "secret", "rebuild suite secret");
    let mut nodes = mesh(dir.path(), 2, &secret);
    let to_b = Proxy::start(nodes[1].addr().parse().unwrap()).unwrap();
    nodes[0].peers = vec![to_b.addr()];
    let (na, nb) = (&nodes[0], &nodes[1]);
    let mut a = Daemon::launch(Spec {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_duplexd")),
        root: na.root.clone(),
        port: na.port,
        args: node_args(na, &["--archive-lag-ms".into(), "0".into()]),
        ready: answers,
    });
    let b = nb.start();
    for i in 0..40 {
        set(a.port, &format!("a-before-{i}"), "a");
        set(b.port, &format!("b-before-{i}"), "b");
    }
    converge(&[a.port, b.port], CONVERGE);
    to_b.partition();
    let n = 30u64;
    for i in 0..n {
        set(a.port, &format!("a-only-{i}"), &format!("v{i}"));
    }
    // Overwritten on A while cut off: the later value must win everywhere.
    set(a.port, "a-only-0", "v0-again");
    set(b.port, "b-while-cut", "b");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(get(b.port, "a-only-0"), None, "the cut keeps them off B");
    a.kill9();
    drop(a);
    std::fs::remove_dir_all(na.root.join("data")).unwrap();
    assert!(na.root.join("archive").join("n1-t1").exists());
    to_b.heal();
    let a = start_rebuilding(na, &nb.addr());
    wait_running(&a, &b);
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("event=\"rebuild_archive\""))
        .unwrap_or_else(|| panic!("the rebuild reports its archive: {log}"));
    assert_eq!(field(line, "taken_back"), Some((n + 1) as f64), "{line}");
    assert_eq!(
        info_field(a.port, "rebuild_updates_from_archive").as_deref(),
        Some((n + 1).to_string().as_str())
    );
    assert_eq!(
        info_field(a.port, "rebuild_updates_gone_at_most").as_deref(),
        Some("0")
    );
    // On A after the rebuild, then on B, with A's stamps (equal digests).
    assert_eq!(get(a.port, "a-only-0").as_deref(), Some("v0-again"));
    for i in 1..n {
        assert_eq!(
            get(a.port, &format!("a-only-{i}")),
            Some(format!("v{i}")),
            "a-only-{i} on A"
        );
    }
    wait_for("A's archived writes on B", CONVERGE, || {
        (1..n).all(|i| get(b.port, &format!("a-only-{i}")) == Some(format!("v{i}")))
            && get(b.port, "a-only-0").as_deref() == Some("v0-again")
    });
    assert_eq!(get(a.port, "b-while-cut").as_deref(), Some("b"));
    for i in 0..40 {
        assert_eq!(get(a.port, &format!("a-before-{i}")).as_deref(), Some("a"));
        assert_eq!(get(a.port, &format!("b-before-{i}")).as_deref(), Some("b"));
    }
    set(a.port, "a-after", "a");
    wait_for("A's new write on B", CONVERGE, || {
        get(b.port, "a-after").as_deref() == Some("a")
    });
    converge(&[a.port, b.port], CONVERGE);
    for l in log
        .lines()
        .filter(|l| l.contains("rebuild_archive") || l.contains("rebuild_done"))
    {
        eprintln!("A: {l}");
    }
}
