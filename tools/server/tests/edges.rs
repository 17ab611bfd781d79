//! Faults at the server's edges, against the real binary (issue 17): a descriptor limit
//! too low for `max_clients`, a client that never reads its replies, and a reply larger
//! than `client_output_limit_bytes`. Each runs under both connection layers, whatever
//! `DUPLEXD_IO` says.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{answers, Daemon, ServerDaemon};
use duplex_server::state::{load, OpState};
use duplex_testkit::daemon::Spec;
use duplex_testkit::free_port;
use redis::Commands;

const LAYERS: [&str; 2] = ["events", "threads"];

/// The daemon this package builds.
fn duplexd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duplexd"))
}

/// Starts `bin` (the daemon or a wrapper around it) in `root` with `args` (each test names
/// its connection layer itself, so `DUPLEXD_IO` does not apply).
fn launch(bin: PathBuf, root: &Path, args: &[&str]) -> Daemon {
    Daemon::launch(Spec {
        bin,
        root: root.to_path_buf(),
        port: free_port(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ready: answers,
    })
}

/// A shell script that runs `duplexd` with its descriptor limit (soft and hard) at `n`.
fn with_nofile(dir: &Path, n: u32) -> PathBuf {
    let p = dir.join("duplexd-nofile.sh");
    let script = format!(
        "#!/bin/sh\nulimit -n {n} || exit 97\nexec '{}' \"$@\"\n",
        duplexd().display()
    );
    std::fs::write(&p, script).unwrap();
    let st = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    p
}

/// One INFO field.
fn info_field(c: &mut redis::Connection, name: &str) -> String {
    let info: String = redis::cmd("INFO").query(c).unwrap();
    let key = format!("{name}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("INFO lacks {name}: {info}"))
        .trim()
        .to_owned()
}

/// The first reply line a fresh connection gets to PING, within 2 s ("" if none).
fn ping_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.write_all(b"PING\r\n");
    let mut got = Vec::new();
    let mut b = [0u8; 128];
    while !got.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    String::from_utf8_lossy(&got).trim_end().to_owned()
}

#[test]
fn a_low_descriptor_limit_refuses_extra_clients_and_keeps_the_engine_writing() {
    for io in LAYERS {
        let t = tempfile::tempdir().unwrap();
        let bin = with_nofile(t.path(), 64);
        let mut d = launch(bin, t.path(), &["--io", io, "--max-clients", "1000"]);
        let log = d.log();
        assert!(
            log.contains("You requested max_clients of 1000 requiring at least"),
            "{log}"
        );
        let mut c = d.conn();
        let max: usize = info_field(&mut c, "maxclients").parse().unwrap();
        assert!(
            max > 0 && max < 64,
            "maxclients {max} fits under 64 descriptors"
        );
        assert_eq!(info_field(&mut c, "fd_limit"), "64");

        // Many more clients than fit: the admitted ones answer, the others are refused
        // at once with the error reply (none hangs).
        // The start-up probes' connections may still be closing: wait until only this
        // client is left, so that the count below is exact.
        let deadline = Instant::now() + Duration::from_secs(10);
        while info_field(&mut c, "connected_clients") != "1" {
            assert!(Instant::now() < deadline, "{io}: probes never closed");
            std::thread::sleep(Duration::from_millis(20));
        }
        let connected = 1;
        let mut held = Vec::new();
        let (mut admitted, mut refused) = (connected, 0);
        for _ in 0..(max + 40) {
            let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
            let t0 = Instant::now();
            let line = ping_line(&mut s);
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{io}: no prompt reply"
            );
            match line.as_str() {
                "+PONG" => admitted += 1,
                "-ERR max number of clients reached" => refused += 1,
                other => panic!("{io}: unexpected reply {other:?}"),
            }
            held.push(s);
        }
        assert_eq!(admitted, max, "{io}");
        assert_eq!(refused, 40 + connected, "{io}");

        // With every client slot taken, the engine still has its descriptors: writes,
        // a checkpoint and a backup succeed, and the admitted clients are served.
        for i in 0..200 {
            let _: () = c.set(format!("k{i}"), vec![b'v'; 4096]).unwrap();
        }
        let _: () = redis::cmd("DUPLEX.CHECKPOINT").query(&mut c).unwrap();
        let _: redis::Value = redis::cmd("DUPLEX.BACKUP").query(&mut c).unwrap();
        let _: () = c.set("after", "yes").unwrap();
        assert_eq!(c.get::<_, String>("after").unwrap(), "yes");
        assert_eq!(
            info_field(&mut c, "rejected_connections"),
            refused.to_string()
        );
        let log = d.log();
        let accept_lines = log.matches("accept failed").count();
        assert!(
            accept_lines <= 3,
            "{io}: {accept_lines} accept failures logged: {log}"
        );
        drop(held);
        drop(c);
        d.stop();
        let rec = load(&t.path().join("data")).unwrap().unwrap();
        assert_eq!(rec.state, OpState::Stopped, "{io}");
    }
}

/// VmRSS of process `pid`, bytes.
fn rss(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// `n` RESP GETs of `key`.
fn gets(key: &str, n: usize) -> Vec<u8> {
    format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len())
        .repeat(n)
        .into_bytes()
}

#[test]
fn a_client_that_never_reads_costs_bounded_memory_and_no_one_else_waits() {
    for io in LAYERS {
        let t = tempfile::tempdir().unwrap();
        let d = launch(duplexd(), t.path(), &["--io", io, "--idle-timeout", "3"]);
        let mut c = d.conn();
        let _: () = c.set("big", vec![b'x'; 1_000_000]).unwrap();
        let _: () = c.set("small", "s").unwrap();
        let base = rss(d.pid());

        // 3,000 GETs of the 1 MB value, never read.
        let mut bad = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        bad.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let req = gets("big", 3000);
        let writer = std::thread::spawn(move || {
            let _ = bad.write_all(&req);
            bad
        });

        let (mut worst, mut answered, mut peak) = (Duration::ZERO, 0, base);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            let q = Instant::now();
            assert_eq!(c.get::<_, String>("small").unwrap(), "s");
            worst = worst.max(q.elapsed());
            answered += 1;
            peak = peak.max(rss(d.pid()));
            std::thread::sleep(Duration::from_millis(5));
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while !d.log().contains("client_output_disconnect") {
            assert!(
                Instant::now() < deadline,
                "{io}: not disconnected: {}",
                d.log()
            );
            peak = peak.max(rss(d.pid()));
            std::thread::sleep(Duration::from_millis(50));
        }
        let bad = writer.join().unwrap();
        let grew = peak.saturating_sub(base);
        eprintln!(
            "{io}: RSS grew {} MB, worst GET {worst:?}, {answered} answered",
            grew >> 20
        );
        assert!(grew < 200 << 20, "{io}: RSS grew by {grew} bytes");
        assert!(answered > 0);
        assert!(
            worst < Duration::from_millis(500),
            "{io}: worst GET {worst:?}"
        );
        let log = d.log();
        assert!(log.contains("has not read its replies"), "{io}: {log}");
        assert_eq!(
            info_field(&mut c, "client_output_buffer_limit_disconnections"),
            "1",
            "{io}"
        );
        drop(bad);
        assert_eq!(c.get::<_, String>("small").unwrap(), "s");
    }
}

#[test]
fn a_reply_past_the_output_limit_disconnects_its_client_only() {
    for io in LAYERS {
        let t = tempfile::tempdir().unwrap();
        let d = launch(
            duplexd(),
            t.path(),
            &["--io", io, "--client-output-limit-bytes", "2097152"],
        );
        let mut c = d.conn();
        for k in ["a", "b", "c"] {
            let _: () = c.set(k, vec![b'x'; 1_000_000]).unwrap();
        }
        // One 1 MB value fits; an MGET of three does not: that client is let go.
        assert_eq!(c.get::<_, Vec<u8>>("a").unwrap().len(), 1_000_000);
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"MGET a b c\r\n").unwrap();
        let mut got = Vec::new();
        let closed = loop {
            let mut b = [0u8; 65536];
            match s.read(&mut b) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(e) => panic!("{io}: {e}"),
            }
        };
        assert!(closed && got.len() < 3_000_000, "{io}: {} bytes", got.len());
        let log = d.log();
        assert!(
            log.contains("passed client_output_limit_bytes"),
            "{io}: {log}"
        );
        assert_eq!(info_field(&mut c, "client_output_limit_bytes"), "2097152");
        assert_eq!(c.get::<_, Vec<u8>>("b").unwrap().len(), 1_000_000);
    }
}

/// Whether `prlimit` (util-linux) can run.
fn have_prlimit() -> bool {
    std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn descriptors_taken_while_running_refuse_clients_with_a_reply_and_few_log_lines() {
    if !have_prlimit() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    for io in LAYERS {
        let t = tempfile::tempdir().unwrap();
        let mut d = launch(duplexd(), t.path(), &["--io", io, "--max-clients", "200"]);
        // The limit drops under the running server (as if something else took the
        // descriptors): accept itself fails with EMFILE once the clients fill it.
        let st = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(d.pid().to_string())
            .arg("--nofile=40:40")
            .status()
            .unwrap();
        assert!(st.success());
        let (mut admitted, mut refused, mut held) = (0, 0, Vec::new());
        for _ in 0..80 {
            let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
            let t0 = Instant::now();
            let line = ping_line(&mut s);
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{io}: no prompt reply"
            );
            match line.as_str() {
                "+PONG" => admitted += 1,
                "-ERR max number of clients reached" => refused += 1,
                other => panic!("{io}: unexpected reply {other:?}: {}", d.log()),
            }
            held.push(s);
        }
        assert!(
            admitted > 0 && refused > 30,
            "{io}: {admitted} admitted, {refused} refused"
        );
        let log = d.log();
        let lines = log.matches("out of file descriptors").count();
        eprintln!("{io}: {admitted} admitted, {refused} refused, {lines} log line(s)");
        assert!((1..=2).contains(&lines), "{io}: {lines} lines: {log}");
        // Descriptors back: new clients are served again.
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
            if ping_line(&mut s) == "+PONG" {
                break;
            }
            assert!(Instant::now() < deadline, "{io}: not served again");
            std::thread::sleep(Duration::from_millis(50));
        }
        d.stop();
    }
}
