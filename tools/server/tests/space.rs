//! A full disk is a refusal, not a failure (issue 17), with the real binary on a small
//! tmpfs: fill it until the WAL cannot create its next segment, then writes are answered
//! `-NORESOURCE`, reads go on, the state stays `running`, INFO shows the free space, the
//! reserve and the refusal; once space is freed (a filler file on the same file system
//! deleted) writes are accepted again without a restart, and every acknowledged write is
//! there after a restart.
//!
//! And a full archive (a tmpfs too small for it) is loud, and the write policy follows
//! `archive_lag_ms`.
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
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("SET")
        .arg("small")
        .arg("tx")
        .query(&mut c)
        .unwrap();
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some("NORESOURCE"),
        "EXEC keeps the refusal's code: {e}"
    );

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

/// Writes `n` values of `size` bytes under `prefix`, returning the errors met.
fn write_some(
    c: &mut redis::Connection,
    prefix: &str,
    n: usize,
    size: usize,
) -> Vec<redis::RedisError> {
    let v = vec![b'a'; size];
    (0..n)
        .filter_map(|i| c.set::<_, _, ()>(format!("{prefix}:{i}"), &v).err())
        .collect()
}

/// Waits up to 10 s for `INFO persistence` field `name` to read `want`.
fn wait_field(c: &mut redis::Connection, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while info_field(c, name) != want {
        assert!(Instant::now() < deadline, "{name} never became {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn archive_field(c: &mut redis::Connection) -> String {
    let st: Vec<redis::Value> = redis::cmd("DUPLEX.STATE").query(c).unwrap();
    assert_eq!(
        st.len(),
        12,
        "DUPLEX.STATE keeps its fields and appends `archive` and `scrub`"
    );
    assert_eq!(
        redis::from_redis_value::<String>(&st[8]).unwrap(),
        "archive"
    );
    redis::from_redis_value(&st[9]).unwrap()
}

/// A full archive (a 2 MiB tmpfs): with the default lag local writes go on while INFO,
/// DUPLEX.STATE and the log say the archive fails; with lag 0 writes are answered
/// `-NOARCHIVE` and the server stays `running`. Grown again, the archive catches up by itself.
#[test]
fn a_full_archive_is_loud_and_policy_follows_the_lag() {
    for lag in ["1000", "0"] {
        let t = tempfile::tempdir().unwrap();
        let Some(fs) = Tmpfs::mount(&t.path().join("archive"), "2m") else {
            return;
        };
        let arch = fs.0.to_str().unwrap().to_owned();
        let mut d = Daemon::start_in(
            &t.path().join("node"),
            &["--archive-dir", &arch, "--archive-lag-ms", lag],
        );
        let mut c = d.conn();
        let _: () = c.set("k", "v").unwrap();
        wait_field(&mut c, "archive_status", "ok");
        assert_eq!(archive_field(&mut c), "ok");
        let errors = write_some(&mut c, "fill", 40, 128 << 10);
        if lag == "0" {
            let e = errors
                .first()
                .expect("a synchronous archive that is full refuses writes");
            assert_eq!(e.code(), Some("NOARCHIVE"), "{e}");
        } else {
            assert!(errors.is_empty(), "local writes go on: {errors:?}");
        }
        wait_field(&mut c, "archive_status", "failing");
        assert_eq!(archive_field(&mut c), "failing");
        assert!(!info_field(&mut c, "archive_last_error").is_empty());
        assert_ne!(info_field(&mut c, "archive_failing_since_ms"), "-1");
        assert_eq!(state(&mut c), "running");
        assert_eq!(c.get::<_, String>("k").unwrap(), "v");
        // The watcher logs it within its period.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !d.log().contains("archive_failing") {
            assert!(Instant::now() < deadline, "not logged: {}", d.log());
            std::thread::sleep(Duration::from_millis(100));
        }

        let st = Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(&fs.0)
            .status()
            .unwrap();
        assert!(st.success());
        let _: () = c.set("k", "after").unwrap();
        wait_field(&mut c, "archive_status", "ok");
        assert_eq!(archive_field(&mut c), "ok");
        wait_field(&mut c, "archive_lag_ms", "0");
        d.stop();
        drop(d);
        drop(fs);
    }
}
