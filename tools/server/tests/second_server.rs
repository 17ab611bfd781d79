//! A second `duplexd` on a data directory a running server holds is refused before it
//! writes anything (the running server's STATE file keeps its bytes and time), and deleting
//! the `LOCK` file does not let it in: the directory itself is locked.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use common::{Daemon, ServerDaemon};
use duplex_testkit::free_port;

/// Runs a second `duplexd` on `root/data` on another port until it exits.
fn second(root: &Path, other: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_duplexd"))
        .arg("--port")
        .arg(free_port().to_string())
        .arg("--data")
        .arg(root.join("data"))
        .arg("--backup-dir")
        .arg(other.join("backups"))
        .arg("--archive-dir")
        .arg(other.join("archive"))
        .output()
        .expect("spawn the second duplexd")
}

/// The STATE file's bytes and modification time.
fn state_file(root: &Path) -> (Vec<u8>, SystemTime) {
    let p = root.join("data").join("STATE");
    let bytes = std::fs::read(&p).expect("read STATE");
    let mtime = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .expect("STATE mtime");
    (bytes, mtime)
}

fn assert_refused(out: &Output) {
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second server started: {log}");
    assert!(log.contains("already open by another process"), "{log}");
}

#[test]
fn a_second_server_on_the_same_directory_writes_nothing_even_without_the_lock_file() {
    let t = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let _: () = redis::Commands::set(&mut c, "k", "v").unwrap();
    let before = state_file(t.path());
    // Time enough that a rewrite would show in the modification time.
    std::thread::sleep(std::time::Duration::from_millis(50));

    let out = second(t.path(), other.path());
    assert_refused(&out);
    assert_eq!(
        state_file(t.path()),
        before,
        "the refused server wrote STATE"
    );

    let lock = t.path().join("data").join(duplex_engine::LOCK_NAME);
    std::fs::remove_file(&lock).unwrap();
    let out = second(t.path(), other.path());
    assert_refused(&out);
    assert_eq!(
        state_file(t.path()),
        before,
        "the refused server wrote STATE"
    );
    assert!(
        !other.path().join("archive").exists(),
        "the refused server made its archive"
    );

    let v: String = redis::Commands::get(&mut c, "k").unwrap();
    assert_eq!(v, "v");
    d.stop();
}
