//! The rebuild suites' helpers: `duplexd --rebuild-from` started in the foreground, in the
//! background or as a ready daemon, its state, and fields of its log lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duplex_testkit::daemon::{Daemon, Spec};
use redis::Value;

use super::cluster::{conn, NodeSpec, CONVERGE};
use super::{answers, io_flags};

/// The flags of `node` (node id, secret, peers) and `extra`.
pub fn node_args(node: &NodeSpec, extra: &[String]) -> Vec<String> {
    let mut args = io_flags();
    args.extend([
        "--node-id".to_string(),
        node.id.to_string(),
        "--cluster-secret-file".to_string(),
        node.secret.display().to_string(),
    ]);
    for p in &node.peers {
        args.extend(["--peer".to_string(), p.clone()]);
    }
    args.extend(extra.iter().cloned());
    args
}

/// Starts `node` rebuilding from `from`; waits until it answers (rebuilt and started).
pub fn start_rebuilding(node: &NodeSpec, from: &str) -> Daemon {
    Daemon::launch(Spec {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_duplexd")),
        root: node.root.clone(),
        port: node.port,
        args: node_args(node, &["--rebuild-from".into(), from.into()]),
        ready: answers,
    })
}

/// Runs `duplexd` for `node` with `--rebuild-from from` in the foreground, expecting it to
/// exit within `secs`; returns whether it succeeded and what it wrote to stderr.
pub fn run_to_exit(node: &NodeSpec, from: &str, secs: u64) -> (bool, String) {
    std::fs::create_dir_all(&node.root).unwrap();
    let log = node.root.join("failed-start.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_duplexd"))
        .arg("--port")
        .arg(node.port.to_string())
        .arg("--data")
        .arg(node.root.join("data"))
        .arg("--backup-dir")
        .arg(node.root.join("backups"))
        .arg("--archive-dir")
        .arg(node.root.join("archive"))
        .args(node_args(node, &["--rebuild-from".into(), from.into()]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "duplexd did not exit: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (st.success(), std::fs::read_to_string(&log).unwrap())
}

/// Starts `duplexd` for `node` rebuilding from `from` in the background (not waiting for
/// it), its stderr in `log`.
pub fn spawn_rebuilding(node: &NodeSpec, from: &str, log: &Path) -> std::process::Child {
    std::fs::create_dir_all(&node.root).unwrap();
    Command::new(env!("CARGO_BIN_EXE_duplexd"))
        .arg("--port")
        .arg(node.port.to_string())
        .arg("--data")
        .arg(node.root.join("data"))
        .arg("--backup-dir")
        .arg(node.root.join("backups"))
        .arg("--archive-dir")
        .arg(node.root.join("archive"))
        .args(node_args(node, &["--rebuild-from".into(), from.into()]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The `state` field of DUPLEX.STATE.
pub fn state(port: u16) -> String {
    let st: Vec<Value> = redis::cmd("DUPLEX.STATE").query(&mut conn(port)).unwrap();
    let st: Vec<String> = st
        .iter()
        .map(|v| redis::from_redis_value::<String>(v).unwrap())
        .collect();
    let i = st.iter().position(|f| f == "state").unwrap();
    st[i + 1].clone()
}

/// Waits until `b` is `running` (after its write hold with `a`); fails with both logs.
pub fn wait_running(b: &Daemon, a: &Daemon) {
    let deadline = Instant::now() + CONVERGE;
    while state(b.port) != "running" {
        assert!(
            Instant::now() < deadline,
            "B is not running after {CONVERGE:?}: {}\nB's log:\n{}\nA's log:\n{}",
            state(b.port),
            b.log(),
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number after ` name=` in a log line.
pub fn field(line: &str, name: &str) -> Option<f64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[at..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The staging directory of a rebuild of `root`/data.
pub fn staging(root: &Path) -> PathBuf {
    root.join("data.rebuild-staging")
}
