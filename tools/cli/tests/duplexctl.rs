//! `duplexctl` against real `duplexd` processes: the status of two replicating servers
//! (node ids and states asserted) and of an unreachable one, compare of replicated servers
//! (identical, exit 0) and of two non-replicating servers that share 500 keys except 3
//! changed and 1 deleted (exactly those 4 printed, exit 1), the conflict journal of a
//! server where a concurrent write lost, a backup on request, and `rebuild --start` of a
//! lost server from its peer followed to `running` (digests equal, the hold reported).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::Out;
use duplex_cli::resp::{text, Conn, ConnectOptions};
use duplex_proto::Reply;
use duplex_testkit::daemon::{duplexd, Daemon, Spec};
use duplex_testkit::{addr, temp_dir};
use serde_json::Value;

/// The `duplexctl` binary of this build.
const CTL: &str = env!("CARGO_BIN_EXE_duplexctl");

fn ctl(args: &[&str]) -> Out {
    ctl_env(args, None)
}

/// Runs `duplexctl` with `DUPLEX_PASSWORD` set to `password` (unset for `None`).
fn ctl_env(args: &[&str], password: Option<&str>) -> Out {
    let mut cmd = Command::new(CTL);
    cmd.args(args).env_remove("DUPLEX_PASSWORD");
    if let Some(p) = password {
        cmd.env("DUPLEX_PASSWORD", p);
    }
    let out = cmd.output().expect("spawn duplexctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A free port no other server of this test process was given (the tests run in
/// parallel, and the kernel may offer a just-released port again).
fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let p = duplex_testkit::free_port();
        if GIVEN.lock().unwrap().insert(p) {
            return p;
        }
    }
}

/// Ready once it answers a DUPLEX.STATE (allowed before AUTH).
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = [0u8; 256];
    s.write_all(b"DUPLEX.STATE\r\n").is_ok() && s.read(&mut b).is_ok_and(|n| n > 0)
}

fn secret_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("secret");
    std::fs::write(&p, "test-cluster-secret-0123456789\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Starts `duplexd` with its files under `root`, node id `id`, naming `peers`.
fn start(root: &Path, port: u16, id: u64, peers: &[u16], secret: &Path) -> Daemon {
    let mut args = vec!["--node-id".to_string(), id.to_string()];
    if !peers.is_empty() {
        args.extend([
            "--cluster-secret-file".to_string(),
            secret.display().to_string(),
        ]);
    }
    for p in peers {
        args.extend(["--peer".to_string(), addr(*p)]);
    }
    Daemon::launch(Spec {
        bin: duplexd().to_path_buf(),
        root: root.to_path_buf(),
        port,
        args,
        ready: answers,
    })
}

fn conn(port: u16) -> Conn {
    Conn::open(&addr(port), &ConnectOptions::default()).unwrap()
}

fn call(port: u16, args: &[&str]) -> Reply {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    conn(port).call(&a).unwrap()
}

fn digest(port: u16) -> String {
    text(&call(port, &["DUPLEX.DIGEST"]))
}

/// Writes `key:000`..`key:<n-1>` = `value-<i>` with MSET, 100 at a time.
fn fill(port: u16, n: usize) {
    let mut c = conn(port);
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("key:{i:03}"), format!("value-{i}")))
        .collect();
    for chunk in pairs.chunks(100) {
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for (k, v) in chunk {
            args.extend([k.as_bytes(), v.as_bytes()]);
        }
        assert_eq!(c.call(&args).unwrap(), Reply::Simple("OK".into()));
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_of_two_replicating_servers_then_compare_says_identical() {
    let t = temp_dir();
    let secret = secret_file(t.path());
    let (p1, p2) = (free_port(), free_port());
    let _d1 = start(&t.path().join("n1"), p1, 1, &[p2], &secret);
    let _d2 = start(&t.path().join("n2"), p2, 2, &[p1], &secret);
    fill(p1, 200);
    wait_for("replication", Duration::from_secs(20), || {
        digest(p1) == digest(p2)
    });

    let out = ctl(&["status", "--json", &addr(p1), &addr(p2)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let j: Value = serde_json::from_str(&out.stdout).expect("status --json is JSON");
    for (row, (port, id, peer)) in [(p1, 1, 2), (p2, 2, 1)].into_iter().enumerate() {
        let s = &j[row];
        assert_eq!(s["server"], addr(port), "{s}");
        assert_eq!(s["reachable"], true, "{s}");
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["node_id"], id, "{s}");
        assert!(s["last_lsn"].as_u64().is_some(), "{s}");
        assert_eq!(s["conflicts"], 0, "{s}");
        assert_eq!(s["peers"][0]["node"], peer, "{s}");
    }

    let out = ctl(&["status", &addr(p1), &addr(p2)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with("SERVER") && lines[0].contains("NODE"));
    for (line, port) in lines[1..].iter().zip([p1, p2]) {
        assert!(line.starts_with(&addr(port)), "{line}");
        assert!(line.contains("running"), "{line}");
    }
    assert!(
        lines[1].contains(&format!("{} node 2", addr(p2))),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(&format!("{} node 1", addr(p1))),
        "{}",
        lines[2]
    );

    let out = ctl(&["compare", &addr(p1), &addr(p2)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("identical: 200 keys"), "{}", out.all());
}

#[test]
fn status_shows_an_unreachable_server_as_a_row_and_exits_3() {
    let t = temp_dir();
    let secret = secret_file(t.path());
    let p = free_port();
    let _d = start(&t.path().join("n1"), p, 1, &[], &secret);
    let dead = addr(free_port());
    let out = ctl(&["status", &addr(p), &dead]);
    assert_eq!(out.code, 3, "{}", out.all());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[1].contains("running"), "{}", lines[1]);
    assert!(
        lines[2].starts_with(&dead) && lines[2].contains("UNREACHABLE: cannot reach"),
        "{}",
        lines[2]
    );
    assert!(out.stderr.contains("1 of 2 servers"), "{}", out.stderr);
    let out = ctl(&["status", "--json", &dead]);
    assert_eq!(out.code, 3, "{}", out.all());
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j[0]["reachable"], false);

    // A lone server's empty journal, and a backup on request.
    let out = ctl(&["conflicts", &addr(p)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("0 conflicts recorded since start, 0 dropped (journal full); 0 shown"),
        "{}",
        out.stdout
    );
    let out = ctl(&["backup", &addr(p), "by-duplexctl"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("by-duplexctl") && out.stdout.contains("base_len=0 "),
        "{}",
        out.stdout
    );
    // An incremental one on top of it, and one on a named base.
    let out = ctl(&["backup", &addr(p), "inc-1", "--incremental"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("inc-1") && !out.stdout.contains("base_len=0 "),
        "{}",
        out.stdout
    );
    let out = ctl(&["backup", &addr(p), "inc-2", "--base", "by-duplexctl"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.stdout.contains("base_len=0 "), "{}", out.stdout);
    let out = ctl(&["backup", &addr(p), "inc-3", "--base", "no-such-backup"]);
    assert_eq!(out.code, 3, "{}", out.all());
    let out = ctl(&["compare", &addr(p), &dead]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.contains(&dead), "{}", out.stderr);
}

#[test]
fn compare_of_non_replicating_servers_prints_exactly_the_differing_keys() {
    let t = temp_dir();
    let secret = secret_file(t.path());
    let (pa, pb) = (free_port(), free_port());
    let _a = start(&t.path().join("a"), pa, 1, &[], &secret);
    fill(pa, 500);
    // B starts from A's backup: the same keys with the same stamps, and no peer link.
    let r = text(&call(pa, &["DUPLEX.BACKUP", "seed"]));
    let dir = r
        .split_whitespace()
        .find_map(|f| f.strip_prefix("dir="))
        .unwrap_or_else(|| panic!("no dir= in {r}"));
    let b_root = t.path().join("b");
    std::fs::create_dir_all(&b_root).unwrap();
    let b_data = b_root.join("data");
    let out = common::run([
        "restore",
        "--backup",
        dir,
        "--into",
        b_data.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let _b = start(&b_root, pb, 1, &[], &secret);
    assert_eq!(digest(pa), digest(pb));

    for k in ["key:007", "key:123", "key:499"] {
        call(pb, &["SET", k, "changed"]);
    }
    call(pb, &["DEL", "key:250"]);
    let out = ctl(&["compare", &addr(pa), &addr(pb)]);
    assert_eq!(out.code, 1, "{}", out.all());
    let diffs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("differs") || l.starts_with("missing"))
        .collect();
    assert_eq!(diffs.len(), 4, "{}", out.stdout);
    assert!(
        diffs[0].starts_with("value differs   \"key:007\"  A: 7 B \"value-7\"  B: 7 B \"changed\""),
        "{}",
        out.stdout
    );
    assert!(
        diffs[1].starts_with("value differs   \"key:123\""),
        "{}",
        out.stdout
    );
    assert!(
        diffs[2].starts_with("missing on B    \"key:250\"  A: 9 B \"value-250\""),
        "{}",
        out.stdout
    );
    assert!(
        diffs[3].starts_with("value differs   \"key:499\""),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("4 differences"), "{}", out.stdout);
}

#[test]
fn conflicts_shows_the_losing_write_of_a_concurrent_pair() {
    let t = temp_dir();
    let secret = secret_file(t.path());
    let (p1, p2) = (free_port(), free_port());
    let (r1, r2) = (t.path().join("n1"), t.path().join("n2"));
    // Not peers yet: the same key written on both, node 1 first (it loses).
    let mut d1 = start(&r1, p1, 1, &[], &secret);
    let mut d2 = start(&r2, p2, 2, &[], &secret);
    call(p1, &["SET", "line1:speed", "from-node-1"]);
    std::thread::sleep(Duration::from_millis(20));
    call(p2, &["SET", "line1:speed", "from-node-2"]);
    d1.stop();
    d2.stop();
    // Now peers: the versions meet and node 1 journals its loss.
    let _d1 = start(&r1, p1, 1, &[p2], &secret);
    let _d2 = start(&r2, p2, 2, &[p1], &secret);
    wait_for(
        "the conflict on node 1",
        Duration::from_secs(20),
        || matches!(call(p1, &["DUPLEX.CONFLICTS", "0"]), Reply::Array(a) if a.first() == Some(&Reply::Integer(1))),
    );
    let out = ctl(&["conflicts", &addr(p1)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let s = &out.stdout;
    assert!(
        s.contains("1 conflicts recorded since start, 0 dropped (journal full); 1 shown"),
        "{s}"
    );
    assert!(s.contains("key \"line1:speed\"  recorded 20"), "{s}");
    assert!(s.contains(" node 2\n"), "{s}");
    assert!(
        s.contains(" node 1: value \"from-node-1\" (11 B, xxh3 "),
        "{s}"
    );
    let out = ctl(&["conflicts", "--json", "--count", "5", &addr(p1)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let j: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["recorded"], 1);
    let e = &j["entries"][0];
    assert_eq!(e["key"], "line1:speed");
    assert_eq!(e["winner"]["origin"], 2);
    assert_eq!(e["loser"]["origin"], 1);
    assert_eq!(e["loser"]["value"], "from-node-1");
    assert!(e["winner"]["ts"].as_u64() > e["loser"]["ts"].as_u64());
}

#[test]
fn a_password_comes_from_the_flag_or_the_environment() {
    let t = temp_dir();
    let p = free_port();
    let _d = Daemon::launch(Spec {
        bin: duplexd().to_path_buf(),
        root: t.path().join("n1"),
        port: p,
        args: vec!["--requirepass".into(), "s3cret".into()],
        ready: answers,
    });
    let out = ctl(&["status", &addr(p)]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stdout.contains("running (epoch ")
            && out.stdout.contains("ERROR:")
            && out.stdout.contains("NOAUTH")
            && out.stdout.contains("DUPLEX_PASSWORD"),
        "{}",
        out.stdout
    );
    let out = ctl(&["status", "--password", "wrong", &addr(p)]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stdout.contains("ERROR:") && out.stdout.contains("WRONGPASS"),
        "{}",
        out.stdout
    );
    let out = ctl(&["status", "--password", "s3cret", &addr(p)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("running"), "{}", out.stdout);
    let out = ctl_env(&["conflicts", &addr(p)], Some("s3cret"));
    assert_eq!(out.code, 0, "{}", out.all());
    let out = ctl(&["conflicts", &addr(p)]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stderr.contains("needs the right password"),
        "{}",
        out.stderr
    );
}

/// Kills the `duplexd` a `duplexctl rebuild --start` left running (detached by design).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The pid in `started duplexd (pid N) ...`.
fn started_pid(stderr: &str) -> Option<u32> {
    let at = stderr.find("started duplexd (pid ")? + "started duplexd (pid ".len();
    stderr[at..].split(')').next()?.parse().ok()
}

#[test]
fn rebuild_starts_a_lost_server_follows_it_to_running_and_reports_the_hold() {
    let t = temp_dir();
    let secret = secret_file(t.path());
    let (pa, pc) = (free_port(), free_port());
    let _a = start(&t.path().join("a"), pa, 1, &[pc], &secret);
    fill(pa, 300);
    // Not rebuilt at its start: nothing to follow (usage, exit 2).
    let out = ctl(&["rebuild", &addr(pa)]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("was not rebuilt"), "{}", out.stderr);

    let c = t.path().join("c");
    let log = t.path().join("c-rebuild.log");
    let path = |p: &Path| p.display().to_string();
    let a_s = addr(pa);
    // `duplexctl rebuild C --start --from A ...` with the server's own arguments after `--`.
    let start_args = |server_args: &[String]| -> Vec<String> {
        let mut v: Vec<String> = ["rebuild", &addr(pc), "--start", "--from", &a_s]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend([
            "--duplexd".into(),
            path(duplexd()),
            "--log".into(),
            path(&log),
        ]);
        v.push("--".into());
        v.extend(server_args.iter().cloned());
        v
    };
    let server_args: Vec<String> = vec![
        "--port".into(),
        pc.to_string(),
        "--data".into(),
        path(&c.join("data")),
        "--backup-dir".into(),
        path(&c.join("backups")),
        "--archive-dir".into(),
        path(&c.join("archive")),
        "--node-id".into(),
        "2".into(),
        "--cluster-secret-file".into(),
        path(&secret),
        "--peer".into(),
        a_s.clone(),
    ];
    let args = start_args(&server_args);
    let out = ctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let _c = KillOnDrop(started_pid(&out.stderr));
    assert_eq!(
        out.code,
        0,
        "{}\nlog:\n{}",
        out.all(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(_c.0.is_some(), "{}", out.stderr);
    let s = &out.stdout;
    assert!(s.contains(&format!("{}: rebuilt", addr(pc))), "{s}");
    assert!(s.contains("running on epoch "), "{s}");
    assert!(s.contains("from node 1 in "), "{s}");
    assert!(s.contains("write hold  the peer paused new writes "), "{s}");
    assert!(
        s.contains("every update of the lost server that reached a peer is back"),
        "{s}"
    );
    // The rebuilt server holds what A held, and INFO says how the rebuild went.
    assert_eq!(digest(pc), digest(pa));
    let info = text(&call(pc, &["INFO"]));
    for f in [
        "rebuild_status:done",
        "rebuild_source_node:1",
        "rebuild_hold_writes_held:",
    ] {
        assert!(info.contains(f), "{f} missing in\n{info}");
    }
    // A second start over a running server is refused (exit 3), nothing started.
    let args = start_args(&server_args[..2]);
    let out = ctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.contains("already answers"), "{}", out.stderr);
    assert!(started_pid(&out.stderr).is_none());
}
