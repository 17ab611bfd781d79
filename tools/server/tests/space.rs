//! A full disk is a refusal, not a failure (issue 17), with the real binary on a small
//! tmpfs: fill it until the WAL cannot create its next segment, then writes are answered
//! `-NORESOURCE`, reads go on, the state stays `running`, INFO shows the free space, the
//! reserve and the refusal; once space is freed (a filler file on the same file system
//! deleted) writes are accepted again without a restart, and every acknowledged write is
//! there after a restart.
//!
//! Needs to mount a tmpfs (root): skipped with a message when it cannot.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, ServerDaemon};
use redis::Commands;

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// One INFO field as a number (`-1` when absent or not a number).
fn info_field(c: &mut redis::Connection, name: &str) -> String {
    let info: String = redis::cmd("INFO").arg("persistence").query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO lacks {name}: {info}"))
        .to_owned()
}

fn state(c: &mut redis::Connection) -> String {
    let st: Vec<redis::Value> = redis::cmd("DUPLEX.STATE").query(c).unwrap();
    redis::from_redis_value(&st[1]).unwrap()
}

const MIB: u64 = 1 << 20;

#[test]
fn out_of_space_refuses_writes_serves_reads_and_resumes_by_itself() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("node");
    let Some(fs) = Tmpfs::mount(&root, "320m") else {
        return;
    };
    // The archive on the tmpfs would fill it too: no archive here.
    let mut d = Daemon::start_in(&fs.0, &["--archive-dir", ""]);
    let mut c = d.conn();
    let _: () = c.set("small", "kept").unwrap();
    let free: u64 = info_field(&mut c, "wal_free_bytes").parse().unwrap();
    let needed: u64 = info_field(&mut c, "wal_needed_bytes").parse().unwrap();
    assert!(needed > 0 && free > needed, "free {free}, needed {needed}");
    assert!(
        info_field(&mut c, "wal_reserve_bytes")
            .parse::<u64>()
            .unwrap()
            > 0
    );
    // Leave less free than a new segment needs, but room to fill the current one.
    let filler = fs.0.join("filler");
    // tmpfs allocates on write: write the filler's bytes.
    std::fs::write(
        &filler,
        vec![7u8; usize::try_from(free - (needed - 16 * MIB)).unwrap()],
    )
    .unwrap();

    let big = vec![b'x'; MIB as usize];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0u64;
    let refusal = loop {
        assert!(Instant::now() < deadline, "no refusal after {acked} writes");
        match c.set::<_, _, ()>("big", &big) {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refusal.code(), Some("NORESOURCE"), "{refusal}");
    let text = refusal.to_string();
    assert!(text.contains("resume by themselves"), "{text}");
    // Reads go on, the state is not failed, INFO names the refusal.
    assert_eq!(c.get::<_, String>("small").unwrap(), "kept");
    assert_eq!(state(&mut c), "running");
    assert_eq!(info_field(&mut c, "writes_refused"), "1");
    assert!(!info_field(&mut c, "writes_refused_reason").is_empty());
    let again = c.set::<_, _, ()>("small", "refused").unwrap_err();
    assert_eq!(again.code(), Some("NORESOURCE"), "{again}");

    // Space back: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let _: () = c.set("small", "after").unwrap();
    let _: () = c.set("big", &big).unwrap();
    assert_eq!(info_field(&mut c, "writes_refused"), "0");
    assert_eq!(state(&mut c), "running");
    d.stop();
    d.restart();
    let mut c = d.conn();
    assert_eq!(c.get::<_, String>("small").unwrap(), "after");
    assert_eq!(c.get::<_, Vec<u8>>("big").unwrap(), big);
    d.stop();
    drop(d);
    drop(fs);
}
