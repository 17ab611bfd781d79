//! The restore drill of each backup, with the real binary: after `DUPLEX.BACKUP` (taken
//! while a client writes), the server restores the backup in the background, rolls it
//! forward to its end LSN and compares it with the live data at that LSN: INFO says
//! `drill_status:passed` for that LSN, and retention (keep_backups 1) prunes the older
//! backup only then. A drill that cannot run (its scratch directory is blocked by a file)
//! fails loudly and retention keeps every backup; once unblocked, the next drill passes
//! and retention catches up.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, ServerDaemon};
use redis::Commands;

fn info_field(c: &mut redis::Connection, name: &str) -> String {
    let info: String = redis::cmd("INFO").arg("persistence").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO has no {name}"))
        .trim()
        .to_owned()
}

/// Waits until the drill of `lsn` ended; returns its status.
fn drill_outcome(c: &mut redis::Connection, lsn: &str) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let status = info_field(c, "drill_status");
        if status != "running" && info_field(c, "drill_lsn") == lsn {
            return status;
        }
        assert!(Instant::now() < until, "the drill did not end: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes a backup named `name` while another client writes; returns its end LSN.
fn backup_while_writing(d: &Daemon, c: &mut redis::Connection, name: &str) -> String {
    let port = d.port;
    let owned = name.to_owned();
    let b = std::thread::spawn(move || {
        let cl = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut b = cl.get_connection().unwrap();
        let r: String = redis::cmd("DUPLEX.BACKUP")
            .arg(&owned)
            .query(&mut b)
            .unwrap();
        r
    });
    let mut i = 0u64;
    while !b.is_finished() {
        let _: () = c.set(format!("during:{name}:{i}"), i).unwrap();
        i += 1;
    }
    let reply = b.join().unwrap();
    reply
        .split(' ')
        .find_map(|f| f.strip_prefix("end_lsn="))
        .unwrap_or_else(|| panic!("DUPLEX.BACKUP answered {reply}"))
        .to_owned()
}

fn backups(root: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn each_backup_is_restored_and_compared_before_retention_prunes() {
    let t = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(t.path(), &["--keep-backups", "1"]);
    let mut c = d.conn();
    assert_eq!(info_field(&mut c, "drill_status"), "none");
    for i in 0..3000u64 {
        let _: () = c.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    let _: () = c.del("k7").unwrap();
    let lsn = backup_while_writing(&d, &mut c, "b1");
    assert_eq!(drill_outcome(&mut c, &lsn), "passed");
    assert_eq!(info_field(&mut c, "drills_passed"), "1");
    let digest = info_field(&mut c, "drill_digest");
    assert!(digest.len() > 33 && digest.contains('/'), "{digest}");
    let root = t.path().join("backups");
    assert_eq!(backups(&root), ["b1"]);

    // A file where the drill's scratch directory goes: the drill fails, loudly, and
    // retention keeps both backups (keep_backups is 1).
    std::fs::write(root.join(".drill"), b"in the way").unwrap();
    let lsn = backup_while_writing(&d, &mut c, "b2");
    assert_eq!(drill_outcome(&mut c, &lsn), "failed");
    assert!(
        info_field(&mut c, "drill_error").contains(".drill"),
        "{}",
        info_field(&mut c, "drill_error")
    );
    assert_eq!(info_field(&mut c, "drills_failed"), "1");
    assert_eq!(backups(&root), ["b1", "b2"]);

    // Unblocked: the next drill passes and retention keeps the newest backup only.
    std::fs::remove_file(root.join(".drill")).unwrap();
    let lsn = backup_while_writing(&d, &mut c, "b3");
    assert_eq!(drill_outcome(&mut c, &lsn), "passed");
    assert_eq!(backups(&root), ["b3"]);
    assert!(
        !root.join(".drill").exists(),
        "the scratch directory is removed"
    );
}
