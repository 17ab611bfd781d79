//! Start-up truths with the real binary: a busy port is named and found before the data
//! directory is touched, errors carry one `duplexd:` prefix, `--archive-dir ""` turns the
//! archive off, `--version` names the commit, and INFO tells the backup schedule (resumed
//! from the last backup across a restart) and whether archive and backups share the data's
//! file system.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, ServerDaemon};
use duplex_testkit::free_port;

fn duplexd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duplexd"))
}

/// The value of INFO field `name`.
fn info_field(c: &mut redis::Connection, name: &str) -> String {
    let info: String = redis::cmd("INFO").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO lacks {name}: {info}"))
        .trim()
        .to_owned()
}

#[test]
fn a_busy_port_is_named_before_the_data_is_touched() {
    let t = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let data = t.path().join("data");
    let out: Output = duplexd()
        .args(["--port", &port.to_string(), "--data"])
        .arg(&data)
        .arg("--archive-dir")
        .arg(t.path().join("archive"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("duplexd: cannot listen on 127.0.0.1:"),
        "{err}"
    );
    assert!(last.contains(&port.to_string()), "{err}");
    assert!(!last.contains("duplexd: duplexd:"), "{err}");
    assert!(
        !data.exists(),
        "the data directory was created before the bind"
    );
    assert!(!t.path().join("archive").exists());
}

#[test]
fn version_names_the_commit() {
    let out = duplexd().arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("duplexd "), "{v}");
    assert!(
        v.contains(env!("CARGO_PKG_VERSION")) && v.contains("(commit "),
        "{v}"
    );
    // The Duplex on-disk format it writes and the oldest it reads (FORMAT.md section 26).
    let format = format!(
        "format {}, reads formats {} to {}",
        duplex_engine::FORMAT_VERSION,
        duplex_engine::OLDEST_FORMAT_READ,
        duplex_engine::FORMAT_VERSION
    );
    assert!(v.contains(&format), "{v}");
}

#[test]
fn an_empty_archive_dir_turns_the_archive_off() {
    let t = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = duplexd()
        .args(["--port", &port.to_string(), "--data"])
        .arg(t.path().join("data"))
        .arg("--backup-dir")
        .arg(t.path().join("backups"))
        .args(["--archive-dir", ""])
        .current_dir(t.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(b"INFO persistence\r\n").unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while let Ok(n) = s.read(&mut b) {
                got.extend_from_slice(&b[..n]);
                if n == 0 || got.ends_with(b"\r\n\r\n\r\n") {
                    break;
                }
            }
            break String::from_utf8_lossy(&got).into_owned();
        }
        assert!(Instant::now() < deadline, "duplexd did not start");
        assert!(child.try_wait().unwrap().is_none(), "duplexd exited");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.contains("\r\narchive_dir:\r\n"), "{reply}");
    assert!(reply.contains("\r\narchive_same_fs:0\r\n"), "{reply}");
    assert!(!Path::new(&t.path().join("duplex-archive")).exists());
}

#[test]
fn the_schedule_resumes_from_the_last_backup_across_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    assert_eq!(info_field(&mut c, "last_backup_age_secs"), "-1");
    // No backup yet: the first one is due soon after start, not a day later.
    let next: i64 = info_field(&mut c, "next_backup_in_secs").parse().unwrap();
    assert!((0..=600).contains(&next), "{next}");
    assert_eq!(info_field(&mut c, "archive_same_fs"), "1");
    assert_eq!(info_field(&mut c, "backup_same_fs"), "1");
    assert!(d.log().contains("archive_same_fs"), "{}", d.log());
    let _: String = redis::cmd("DUPLEX.BACKUP").arg("b1").query(&mut c).unwrap();
    d.stop();
    d.restart();
    let mut c = d.conn();
    let age: i64 = info_field(&mut c, "last_backup_age_secs").parse().unwrap();
    assert!((0..60).contains(&age), "{age}");
    // Due a day after that backup (sched.rs's tests drive restarts hours apart).
    let next: i64 = info_field(&mut c, "next_backup_in_secs").parse().unwrap();
    assert!(
        (86_400 - 60 - age..=86_400 - age).contains(&next),
        "{next} {age}"
    );
    assert!(info_field(&mut c, "last_backup_dir").ends_with("b1"));
}
