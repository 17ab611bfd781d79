//! The lost-disk drill with the real binaries: `duplexd` with its archive and backups in
//! their own directories; writes with the `redis` crate; `DUPLEX.BACKUP` online while a
//! writer goes on; `kill -9`; the data directory deleted; `duplex-recover restore` from the
//! backup and the archive; `duplexd` on the restored directory. Every write acknowledged at
//! least `archive_lag_ms` (plus a margin) before the kill is there byte for byte (with
//! `--archive-lag-ms 0`, every acknowledged write), nothing is there that was not written,
//! and the restored server starts above the epoch the lost one had. A point-in-time restore
//! (`--until-lsn`) yields exactly the writes up to its target. The same again on a chain
//! of a full and an incremental backup (`DUPLEX.BACKUP name INCREMENTAL`).
//!
//! `duplex-recover` comes from another package: it is found beside `duplexd`
//! (`target/<profile>/duplex-recover`, built with cargo if missing, as the testkit does for
//! `duplexd`), or named by `DUPLEX_RECOVER_BIN`; the drill is skipped with a message when it
//! cannot be found.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, ServerDaemon};
use redis::{Commands, Value};

/// Slack on top of `archive_lag_ms` for the archiver's wake-up and fsync.
const MARGIN: Duration = Duration::from_millis(500);

/// The value of write `i`: distinct per write, binary, a few hundred bytes.
fn value(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.extend((0..200u64).map(|j| ((i * 31 + j * 7) % 256) as u8));
    v
}

fn key(i: u64) -> String {
    format!("drill:{i}")
}

/// `duplex-recover`, beside `duplexd` (built if missing), or `None` with a message.
fn recover_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DUPLEX_RECOVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let duplexd = Path::new(env!("CARGO_BIN_EXE_duplexd"));
    let dir = duplexd.parent()?;
    let bin = dir.join(format!("duplex-recover{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "duplex-cli",
            "--bin",
            "duplex-recover",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!("skipped: building duplex-recover failed ({st:?})");
        }
    }
    if bin.exists() {
        Some(bin)
    } else {
        eprintln!(
            "skipped: duplex-recover not found at {}; build it with `cargo build -p duplex-cli --bin duplex-recover` or set DUPLEX_RECOVER_BIN",
            bin.display()
        );
        None
    }
}

/// Runs `duplex-recover` with `args`; panics with its output unless it succeeds.
fn recover(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "duplex-recover {args:?}: {text}");
    text
}

fn epoch_and_lsn(c: &mut redis::Connection) -> (u64, u64) {
    let st: Vec<Value> = redis::cmd("DUPLEX.STATE").query(c).unwrap();
    let int = |name: &str| {
        let i = st
            .iter()
            .position(|v| redis::from_redis_value::<String>(v).is_ok_and(|s| s == name))
            .unwrap();
        redis::from_redis_value::<u64>(&st[i + 1]).unwrap()
    };
    (int("epoch"), int("last_lsn"))
}

/// Every acknowledged write: its index and when its reply came.
struct Acked {
    at: Vec<(u64, Instant)>,
    /// (index of the last write, `last_lsn` read right after it) for a point in time.
    mark: Option<(u64, u64)>,
}

/// Writes `drill:<i>` from `from` on until `stop`, noting each acknowledgement; the write
/// at index `mark_at` is followed by a DUPLEX.STATE whose `last_lsn` is noted.
fn write_until(c: &mut redis::Connection, from: u64, stop: Instant, mark_at: Option<u64>) -> Acked {
    let mut a = Acked {
        at: Vec::new(),
        mark: None,
    };
    let mut i = from;
    while Instant::now() < stop {
        let _: () = c.set(key(i), value(i)).unwrap();
        a.at.push((i, Instant::now()));
        if mark_at == Some(i) {
            a.mark = Some((i, epoch_and_lsn(c).1));
        }
        i += 1;
    }
    a
}

/// What the restored server holds of writes `0..n`: the indexes present (each checked byte
/// for byte).
fn present(c: &mut redis::Connection, n: u64) -> Vec<u64> {
    let mut got = Vec::new();
    for i in 0..n {
        let v: Option<Vec<u8>> = c.get(key(i)).unwrap();
        if let Some(v) = v {
            assert_eq!(v, value(i), "write {i} restored with other bytes");
            got.push(i);
        }
    }
    got
}

/// Writes on from the next index for `dur`, adding to `acked`.
fn write_for(c: &mut redis::Connection, acked: &mut Acked, dur: Duration) {
    let from = acked.at.len() as u64;
    acked
        .at
        .extend(write_until(c, from, Instant::now() + dur, None).at);
}

/// What DUPLEX.BACKUP answered.
#[derive(Debug)]
struct Taken {
    dir: String,
    committed_len: u64,
    base_len: u64,
    bytes_copied: u64,
}

/// `DUPLEX.BACKUP args` from another connection while `c` keeps writing.
fn online_backup(port: u16, args: &[&str], c: &mut redis::Connection, acked: &mut Acked) -> Taken {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let backup = std::thread::spawn(move || {
        let cl = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut b = cl.get_connection().unwrap();
        let r: String = redis::cmd("DUPLEX.BACKUP")
            .arg(&args)
            .query(&mut b)
            .unwrap();
        r
    });
    while !backup.is_finished() {
        write_for(c, acked, Duration::from_millis(50));
    }
    let reply = backup.join().unwrap();
    let field = |name: &str| {
        reply
            .split(' ')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("DUPLEX.BACKUP answered {reply}"))
            .to_owned()
    };
    let num = |name: &str| field(name).parse::<u64>().unwrap();
    let dir = field("dir");
    let committed_len = duplex_engine::verify_backup(&duplex_wal::StdStorage, Path::new(&dir))
        .unwrap()
        .committed_len;
    Taken {
        committed_len,
        base_len: num("base_len"),
        bytes_copied: num("bytes_copied"),
        dir,
    }
}

/// One drill with `--archive-lag-ms lag_ms`, on a full backup or a chain of a full and an
/// incremental one (both taken online by the daemon).
fn drill(bin: &Path, lag_ms: u64, incremental: bool) {
    let t = tempfile::tempdir().unwrap();
    let lag = lag_ms.to_string();
    let mut d = Daemon::start_in(&t.path().join("node"), &["--archive-lag-ms", &lag]);
    let mut c = d.conn();
    let _: i64 = redis::cmd("DUPLEX.FENCE").query(&mut c).unwrap();
    let _: () = redis::cmd("DUPLEX.UNFENCE").query(&mut c).unwrap();
    let (epoch_before, _) = epoch_and_lsn(&mut c);

    let mut acked = Acked {
        at: Vec::new(),
        mark: None,
    };
    write_for(&mut c, &mut acked, Duration::from_millis(500));
    let full = online_backup(d.port, &["b1"], &mut c, &mut acked);
    let mut chain = vec![full.dir.clone()];
    if incremental {
        // An incremental backup on top of it, taken online too: it copies only what the
        // store gained since (the checkpoint it takes folds the writes in between).
        write_for(&mut c, &mut acked, Duration::from_millis(700));
        let inc = online_backup(d.port, &["b2", "INCREMENTAL"], &mut c, &mut acked);
        assert_eq!(
            inc.base_len, full.committed_len,
            "the incremental backup builds on the full one's store"
        );
        assert!(inc.base_len > 0 && inc.bytes_copied > 0, "{inc:?}");
        chain.push(inc.dir);
    }
    let mut backups: Vec<&str> = Vec::new();
    for b in &chain {
        backups.extend(["--backup", b.as_str()]);
    }
    let i = acked.at.len() as u64;
    // Keep writing past the backup (longer than the lag, so that writes made after the
    // backup are required too): a point in time early on, then more.
    let more = write_until(
        &mut c,
        i,
        Instant::now() + Duration::from_millis(lag_ms + 2000),
        Some(i + 100),
    );
    acked.at.extend(more.at);
    let (mark_i, mark_lsn) = more.mark.expect("the writer reached its point in time");
    d.kill9();
    let killed = Instant::now();
    let n = acked.at.len() as u64 + 1;

    let data = t.path().join("node/data");
    std::fs::remove_dir_all(&data).unwrap();
    let archive = t.path().join("node/archive");
    let restored = t.path().join("restored");
    let into = restored.join("data");
    let mut args = vec!["restore"];
    args.extend(&backups);
    args.extend(["--archive", archive.to_str().unwrap()]);
    args.extend(["--into", into.to_str().unwrap()]);
    recover(bin, &args);
    let mut r = Daemon::start_in(&restored, &[]);
    let mut rc = r.conn();
    let got = present(&mut rc, n);
    let (epoch_after, _) = epoch_and_lsn(&mut rc);
    let required_by = killed - Duration::from_millis(lag_ms) - MARGIN;
    let required: Vec<u64> = acked
        .at
        .iter()
        .filter(|(_, at)| lag_ms == 0 || *at <= required_by)
        .map(|(i, _)| *i)
        .collect();
    let missing: Vec<&u64> = required
        .iter()
        .filter(|i| got.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "lag {lag_ms} ms: {} of {} required writes missing after the restore (first {:?}); {} acknowledged, {} present",
        missing.len(),
        required.len(),
        missing.first(),
        acked.at.len(),
        got.len()
    );
    eprintln!(
        "drill at lag {lag_ms} ms: {} writes acknowledged, {} required, {} restored; epoch {epoch_before} -> {epoch_after}",
        acked.at.len(),
        required.len(),
        got.len()
    );
    // Nothing but a prefix of the writes (one writer, in order): at most the one write
    // in flight at the kill beyond the acknowledged ones.
    assert!(
        got.iter().enumerate().all(|(k, i)| k as u64 == *i),
        "restored writes are not a prefix"
    );
    assert!(
        epoch_after > epoch_before,
        "the restored server reports epoch {epoch_after}, not above {epoch_before} of the lost one"
    );
    r.stop();

    // Point in time: exactly the writes up to the one whose LSN was noted.
    let pit = t.path().join("pit");
    let lsn = mark_lsn.to_string();
    let pit_data = pit.join("data");
    let mut args = vec!["restore"];
    args.extend(&backups);
    args.extend(["--archive", archive.to_str().unwrap()]);
    args.extend(["--into", pit_data.to_str().unwrap(), "--until-lsn", &lsn]);
    recover(bin, &args);
    let mut p = Daemon::start_in(&pit, &[]);
    let got = present(&mut p.conn(), n);
    assert_eq!(
        got.len() as u64,
        mark_i + 1,
        "point in time at LSN {mark_lsn}: expected writes 0..={mark_i}"
    );
    p.stop();
}

#[test]
fn lost_disk_drill_default_lag() {
    if let Some(bin) = recover_bin() {
        drill(&bin, 1000, false);
    }
}

#[test]
fn lost_disk_drill_synchronous_archive() {
    if let Some(bin) = recover_bin() {
        drill(&bin, 0, false);
    }
}

#[test]
fn lost_disk_drill_incremental_chain() {
    if let Some(bin) = recover_bin() {
        drill(&bin, 1000, true);
    }
}
