//! The patent's own comparison on the same data, in one run (issue 13): a logical export and
//! re-import against a backup by file copy, and against a restore plus roll-forward.
//!
//! ```text
//! cargo build --release -p duplex-server -p duplex-cli   # duplexd and duplex-recover
//! cargo run --release -p duplex-benches --bin patent_compare
//! ```
//! It runs `target/release/duplexd` and `target/release/duplex-recover` (or `$DUPLEXD_BIN`,
//! `$DUPLEX_RECOVER_BIN`), every file under `$DUPLEX_BENCH_DIR` (default
//! `target/duplex-bench-tmp`), servers with their defaults (`--sync always`, archive on).
//!
//! 1. **Load**: `DUPLEX_PATENT_MIB` (default 1024) MiB of values into server A: keys
//!    `key:0000000000`.., values of `DUPLEX_VALUE_BYTES` (default 1024) bytes, 8 connections
//!    pipelining 256 SETs.
//! 2. **(i) Logical export and re-import**, as a dump/restore tool would: one thread reads
//!    every key out of A (`SCAN` cursor `COUNT 1000`, then `MGET` of that page), a second
//!    writes each page into an empty server B (1000 pipelined SETs, every reply checked); B's
//!    `DBSIZE` must equal A's.
//! 3. **(ii) Backup by file copy**: `duplex-recover backup --data A --into DIR --rate-limit 0`
//!    (the copy at the disk's speed, against the running server), beside `cp -r` of A's data
//!    directory followed by `sync` (the baseline in the same run).
//! 4. **Backup pace and latency** (`DUPLEX_PATENT_LATENCY=0` skips it): `DUPLEX.BACKUP`
//!    (the server's own adaptively paced backup) while another client does a SET then a
//!    GET of a 1 KiB value in a loop, each timed; 2 s before and after as the baseline.
//! 5. **Writes after the backup**: three more loads of `DUPLEX_AFTER_MIB` (default 64),
//!    same size and then twice that, of overwrites and new keys, each followed by a wait
//!    until the archive holds every write; `last_lsn` after each.
//! 6. **(iii) Restore plus roll-forward**: `duplex-recover restore --backup B [--archive A
//!    --until-lsn L]` into a new directory, with no archive and with the 1, 2 and 4 x
//!    `DUPLEX_AFTER_MIB` of writes, `DUPLEX_RESTORE_ROUNDS` (default 3) interleaved rounds,
//!    medians; the last restore is opened by a server and its `DUPLEX.DIGEST` compared
//!    with A's.
//!
//! Prints each time, the ratios (logical / copy, logical / restore), and the load average
//! with each figure. With `DUPLEX_CSV_DIR=docs/plots` it also writes `restore.csv`
//! (`archive_mib,restore_s,min_s,max_s`: median, fastest, slowest) and `backup_latency.csv` (100 ms windows:
//! `t_ms,set_p50_us,set_max_us,get_p50_us,get_max_us,phase`; phase 1 = backup running) there,
//! which the `plots` binary draws.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use duplex_benches::resp_load::Client;
use duplex_proto::Reply;
use duplex_testkit::daemon::{Daemon, Spec};
use duplex_testkit::{addr, free_port};

/// Connections of the bulk loads.
const LOAD_CONNS: u64 = 8;
/// SETs a load connection sends before reading their replies.
const LOAD_PIPELINE: u64 = 256;
/// Keys a SCAN page asks for, and so an MGET / a pipelined import batch.
const PAGE: &str = "1000";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `target/release/<name>` or `$<var>`; exits with a hint when missing.
fn release_bin(var: &str, name: &str) -> PathBuf {
    let bin = std::env::var_os(var).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/release/{name}")),
        PathBuf::from,
    );
    if !bin.exists() {
        eprintln!(
            "patent_compare: {} not found; build it first: cargo build --release -p duplex-server -p duplex-cli",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

fn ping_ready(port: u16) -> bool {
    Client::connect(&addr(port))
        .and_then(|mut c| c.call(&["PING"]))
        .is_ok_and(|r| r == Reply::Simple("PONG".into()))
}

/// A server with its defaults, no scheduled backups, files under `root`.
fn start(bin: &Path, root: PathBuf) -> Daemon {
    Daemon::launch(Spec {
        bin: bin.to_path_buf(),
        root,
        port: free_port(),
        args: vec!["--backup-interval".into(), "0".into()],
        ready: ping_ready,
    })
}

fn connect(port: u16) -> Client {
    Client::connect(&addr(port)).expect("connecting to a duplexd")
}

/// The value of key number `i`: `len` bytes, different for each key and each `round`.
fn value(i: u64, round: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

fn key(i: u64) -> String {
    format!("key:{i:010}")
}

/// SETs keys `from..to` (value round `round`) over [`LOAD_CONNS`] pipelined connections.
fn load(port: u16, from: u64, to: u64, round: u64, len: usize) {
    let per = (to - from).div_ceil(LOAD_CONNS);
    std::thread::scope(|s| {
        for c in 0..LOAD_CONNS {
            let (lo, hi) = (from + c * per, (from + (c + 1) * per).min(to));
            s.spawn(move || {
                let mut cl = connect(port);
                let mut i = lo;
                while i < hi {
                    let end = (i + LOAD_PIPELINE).min(hi);
                    for k in i..end {
                        cl.queue(&[b"SET".to_vec(), key(k).into_bytes(), value(k, round, len)]);
                    }
                    cl.flush().expect("sending SETs");
                    for _ in i..end {
                        let r = cl.reply().expect("a SET reply");
                        assert_eq!(r, Reply::Simple("OK".into()), "SET answered {r:?}");
                    }
                    i = end;
                }
            });
        }
    });
}

/// The `INFO` fields of the server on `port`.
fn info(port: u16) -> HashMap<String, String> {
    let Reply::Bulk(b) = connect(port).call(&["INFO"]).expect("INFO") else {
        panic!("INFO did not answer a bulk string");
    };
    String::from_utf8_lossy(&b)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn info_u64(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO has no numeric {k}: {m:?}"))
}

/// Waits until the archive holds every durable write; returns `last_lsn`.
fn wait_archived(port: u16) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let m = info(port);
        let last = info_u64(&m, "last_lsn");
        if info_u64(&m, "archive_durable_lsn") >= last {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "the archive did not catch up: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dbsize(port: u16) -> i64 {
    match connect(port).call(&["DBSIZE"]).expect("DBSIZE") {
        Reply::Integer(n) => n,
        r => panic!("DBSIZE answered {r:?}"),
    }
}

/// Reads every key of `a` (SCAN + MGET) on one thread and writes it into `b` (pipelined
/// SETs) on another; returns the keys copied.
fn export_import(a: u16, b: u16) -> u64 {
    let (tx, rx) = mpsc::sync_channel::<Vec<(Vec<u8>, Vec<u8>)>>(4);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut c = connect(a);
            let mut cursor = b"0".to_vec();
            loop {
                let r = c
                    .call(&[b"SCAN".as_slice(), &cursor, b"COUNT", PAGE.as_bytes()])
                    .expect("SCAN");
                let Reply::Array(mut parts) = r else {
                    panic!("SCAN answered {r:?}")
                };
                let (Some(Reply::Array(keys)), Some(Reply::Bulk(next))) =
                    (parts.pop(), parts.pop())
                else {
                    panic!("SCAN answered an unexpected shape")
                };
                let keys: Vec<Vec<u8>> = keys
                    .into_iter()
                    .map(|k| match k {
                        Reply::Bulk(k) => k,
                        r => panic!("SCAN key {r:?}"),
                    })
                    .collect();
                if !keys.is_empty() {
                    let mut args = vec![b"MGET".to_vec()];
                    args.extend(keys.iter().cloned());
                    let Reply::Array(vals) = c.call(&args).expect("MGET") else {
                        panic!("MGET did not answer an array")
                    };
                    let page = keys
                        .into_iter()
                        .zip(vals)
                        .filter_map(|(k, v)| match v {
                            Reply::Bulk(v) => Some((k, v)),
                            _ => None, // deleted between the SCAN and the MGET
                        })
                        .collect();
                    tx.send(page).expect("the importer stopped");
                }
                if next == b"0" {
                    break;
                }
                cursor = next;
            }
        });
        let mut c = connect(b);
        let mut n = 0u64;
        for page in rx {
            for (k, v) in &page {
                c.queue(&[b"SET".as_slice(), k, v]);
            }
            c.flush().expect("sending SETs to B");
            for _ in &page {
                let r = c.reply().expect("a SET reply from B");
                assert_eq!(r, Reply::Simple("OK".into()), "B answered {r:?}");
            }
            n += page.len() as u64;
        }
        n
    })
}

/// Runs `cmd`, which must succeed; returns its wall time in seconds.
fn timed(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

/// Bytes in the files under `dir`.
fn du(dir: &Path) -> u64 {
    duplex_benches::engines::dir_bytes(dir)
}

/// One latency sample: ms since the start, SET and GET in µs, phase (0 before the backup,
/// 1 during, 2 after).
type Sample = (u64, u64, u64, u8);

/// `DUPLEX.BACKUP name` on `port` while a client SETs and GETs in a loop; returns the
/// backup's seconds and the samples.
fn backup_with_latency(port: u16, name: &str) -> (f64, Vec<Sample>) {
    let phase = std::sync::atomic::AtomicU8::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut c = connect(port);
            let v = value(0, 99, 1024);
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = c
                    .call(&[b"SET".as_slice(), b"latency-probe", &v])
                    .expect("probe SET");
                assert_eq!(r, Reply::Simple("OK".into()));
                let t1 = Instant::now();
                c.call(&["GET", "latency-probe"]).expect("probe GET");
                let t2 = Instant::now();
                out.push((
                    t0.duration_since(start).as_millis() as u64,
                    t1.duration_since(t0).as_micros() as u64,
                    t2.duration_since(t1).as_micros() as u64,
                    phase.load(Ordering::Relaxed),
                ));
                std::thread::sleep(Duration::from_millis(1));
            }
            out
        });
        std::thread::sleep(Duration::from_secs(2));
        phase.store(1, Ordering::Relaxed);
        let mut c = connect(port);
        c.set_read_timeout(None).expect("no timeout");
        let t = Instant::now();
        let r = c.call(&["DUPLEX.BACKUP", name]).expect("DUPLEX.BACKUP");
        let secs = t.elapsed().as_secs_f64();
        assert!(
            !matches!(r, Reply::Error(_)),
            "DUPLEX.BACKUP answered {r:?}"
        );
        phase.store(2, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        (secs, sampler.join().expect("sampler panicked"))
    })
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0)
}

/// One line per phase: samples, SET p50/p99/max, GET p50/p99/max.
fn latency_summary(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (ph, name) in [(0u8, "before"), (1, "during"), (2, "after")] {
        let mut set: Vec<u64> = samples.iter().filter(|s| s.3 == ph).map(|s| s.1).collect();
        let mut get: Vec<u64> = samples.iter().filter(|s| s.3 == ph).map(|s| s.2).collect();
        out.push_str(&format!(
            "  {name:>6}: {} samples; SET p50 {} p99 {} max {} us; GET p50 {} p99 {} max {} us\n",
            set.len(),
            pct(&mut set, 0.5),
            pct(&mut set, 0.99),
            pct(&mut set, 1.0),
            pct(&mut get, 0.5),
            pct(&mut get, 0.99),
            pct(&mut get, 1.0),
        ));
    }
    out
}

/// The samples in 100 ms windows: start ms, SET p50 and max, GET p50 and max (µs), phase.
fn windows(samples: &[Sample]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < samples.len() {
        let w = samples[i].0 / 100;
        let j = i + samples[i..].iter().take_while(|s| s.0 / 100 == w).count();
        let mut set: Vec<u64> = samples[i..j].iter().map(|s| s.1).collect();
        let mut get: Vec<u64> = samples[i..j].iter().map(|s| s.2).collect();
        out.push(format!(
            "{},{},{},{},{},{}",
            w * 100,
            pct(&mut set, 0.5),
            pct(&mut set, 1.0),
            pct(&mut get, 0.5),
            pct(&mut get, 1.0),
            samples[j - 1].3
        ));
        i = j;
    }
    out
}

fn write_csv(name: &str, header: &str, rows: &[String]) {
    let Some(dir) = std::env::var_os("DUPLEX_CSV_DIR") else {
        return;
    };
    let path = PathBuf::from(dir).join(name);
    let mut text = format!("{header}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("wrote {}", path.display());
}

/// `duplex-recover restore` of `backup` (+ `archive` up to `until`) into a new `into`.
fn restore(recover: &Path, backup: &Path, archive: Option<(&Path, u64)>, into: &Path) -> f64 {
    let mut cmd = Command::new(recover);
    cmd.arg("restore")
        .arg("--backup")
        .arg(backup)
        .arg("--into")
        .arg(into);
    if let Some((dir, lsn)) = archive {
        cmd.arg("--archive")
            .arg(dir)
            .arg("--until-lsn")
            .arg(lsn.to_string());
    }
    timed(&mut cmd)
}

struct Ctx {
    duplexd: PathBuf,
    recover: PathBuf,
    root: tempfile::TempDir,
    keys: u64,
    vlen: usize,
}

fn main() {
    let ctx = Ctx {
        duplexd: release_bin("DUPLEXD_BIN", "duplexd"),
        recover: release_bin("DUPLEX_RECOVER_BIN", "duplex-recover"),
        root: duplex_benches::temp_dir("patent"),
        vlen: env_u64("DUPLEX_VALUE_BYTES", 1024) as usize,
        keys: 0,
    };
    let mib = env_u64("DUPLEX_PATENT_MIB", 1024);
    let ctx = Ctx {
        keys: (mib << 20) / ctx.vlen as u64,
        ..ctx
    };
    println!(
        "patent_compare: {mib} MiB = {} keys of {} B values; files under {}; load {}",
        ctx.keys,
        ctx.vlen,
        ctx.root.path().display(),
        loadavg()
    );
    let mut a = start(&ctx.duplexd, ctx.root.path().join("a"));
    let t = Instant::now();
    load(a.port, 0, ctx.keys, 0, ctx.vlen);
    connect(a.port)
        .call(&["DUPLEX.CHECKPOINT"])
        .expect("DUPLEX.CHECKPOINT");
    let lsn0 = wait_archived(a.port);
    println!(
        "load: {:.1} s ({:.0} SETs/s), checkpointed, archived to LSN {lsn0}; data dir {} MiB | load {}",
        t.elapsed().as_secs_f64(),
        ctx.keys as f64 / t.elapsed().as_secs_f64(),
        du(&a.root.join("data")) >> 20,
        loadavg()
    );
    let logical = run_logical(&ctx, &a);
    let (copy, backup) = run_copies(&ctx, &a);
    run_restores(&ctx, &mut a, &backup, logical, copy);
}

/// (i): export from `a` into a fresh server B; returns the seconds.
fn run_logical(ctx: &Ctx, a: &Daemon) -> f64 {
    let mut b = start(&ctx.duplexd, ctx.root.path().join("b"));
    let t = Instant::now();
    let n = export_import(a.port, b.port);
    let secs = t.elapsed().as_secs_f64();
    let (na, nb) = (dbsize(a.port), dbsize(b.port));
    assert_eq!(na, nb, "B holds {nb} keys, A {na}");
    println!(
        "(i) logical export + import (SCAN/MGET -> pipelined SETs into an empty server): {n} keys in {secs:.1} s ({:.0} keys/s), DBSIZE equal ({na}) | load {}",
        n as f64 / secs,
        loadavg()
    );
    b.stop();
    secs
}

/// (ii): `duplex-recover backup --rate-limit 0`, `cp -r` + `sync`, and the paced
/// `DUPLEX.BACKUP` with latency samples; returns the copy's seconds and its directory.
fn run_copies(ctx: &Ctx, a: &Daemon) -> (f64, PathBuf) {
    let data = a.root.join("data");
    let into = ctx.root.path().join("backup-fast");
    let secs = timed(
        Command::new(&ctx.recover)
            .arg("backup")
            .arg("--data")
            .arg(&data)
            .arg("--into")
            .arg(&into)
            .args(["--rate-limit", "0"]),
    );
    println!(
        "(ii) backup by file copy (duplex-recover backup --rate-limit 0): {secs:.2} s, {} MiB | load {}",
        du(&into) >> 20,
        loadavg()
    );
    let cp_to = ctx.root.path().join("cp-copy");
    let cp = timed(Command::new("sh").arg("-c").arg(format!(
        "cp -r '{}' '{}' && sync",
        data.display(),
        cp_to.display()
    )));
    println!(
        "     baseline: cp -r of the data directory + sync: {cp:.2} s ({:.2}x the backup's time) | load {}",
        cp / secs,
        loadavg()
    );
    let _ = std::fs::remove_dir_all(&cp_to);
    if env_u64("DUPLEX_PATENT_LATENCY", 1) == 1 {
        let (bsecs, samples) = backup_with_latency(a.port, "paced");
        println!(
            "     DUPLEX.BACKUP (the server's adaptive pace) while a client SETs+GETs 1 KiB: {bsecs:.1} s | load {}\n{}",
            loadavg(),
            latency_summary(&samples)
        );
        write_csv(
            "backup_latency.csv",
            "t_ms,set_p50_us,set_max_us,get_p50_us,get_max_us,phase",
            &windows(&samples),
        );
        let _ = std::fs::remove_dir_all(a.root.join("backups").join("paced"));
    }
    (secs, into)
}

/// Writes after the backup, then (iii): restores with 0, 1, 2 and 4 x the after-writes.
fn run_restores(ctx: &Ctx, a: &mut Daemon, backup: &Path, logical: f64, copy: f64) {
    let after_mib = env_u64("DUPLEX_AFTER_MIB", 64);
    let step = (after_mib << 20) / ctx.vlen as u64;
    let mut points = vec![(0u64, None)];
    // Half overwrites of loaded keys, half new keys; rounds change the values.
    let mut next_new = ctx.keys;
    for (round, mult) in [(1u64, 1u64), (2, 1), (3, 2)] {
        let n = step * mult;
        let t = Instant::now();
        load(a.port, ctx.keys / 3, ctx.keys / 3 + n / 2, round, ctx.vlen);
        load(a.port, next_new, next_new + n - n / 2, round, ctx.vlen);
        next_new += n - n / 2;
        let lsn = wait_archived(a.port);
        let total = points.last().map_or(0, |p: &(u64, Option<u64>)| p.0) + after_mib * mult;
        println!(
            "writes after the backup: {n} SETs ({} MiB of values) in {:.1} s, archived to LSN {lsn}",
            after_mib * mult,
            t.elapsed().as_secs_f64()
        );
        points.push((total, Some(lsn)));
    }
    let archive = a.root.join("archive");
    let rounds = env_u64("DUPLEX_RESTORE_ROUNDS", 3) as usize;
    let mut times = vec![Vec::new(); points.len()];
    let mut last = (0.0, PathBuf::new());
    for round in 0..rounds {
        for (i, (mib, lsn)) in points.iter().enumerate() {
            let into = ctx.root.path().join(format!("restored-{round}-{i}"));
            let secs = restore(
                &ctx.recover,
                backup,
                lsn.map(|l| (archive.as_path(), l)),
                &into,
            );
            println!(
                "(iii) round {round}: restore + roll-forward of {mib} MiB of archived writes: {secs:.2} s | load {}",
                loadavg()
            );
            times[i].push(secs);
            if round + 1 < rounds || i + 1 < points.len() {
                let _ = std::fs::remove_dir_all(&into);
            } else {
                last.1 = into;
            }
        }
    }
    let mut rows = Vec::new();
    for (i, (mib, _)) in points.iter().enumerate() {
        times[i].sort_by(f64::total_cmp);
        let med = times[i][times[i].len() / 2];
        println!(
            "(iii) median of {rounds}: {mib} MiB of archive: {med:.2} s {:?}",
            times[i]
        );
        let (lo, hi) = (times[i][0], times[i][times[i].len() - 1]);
        rows.push(format!("{mib},{med:.3},{lo:.3},{hi:.3}"));
        last.0 = med;
    }
    write_csv("restore.csv", "archive_mib,restore_s,min_s,max_s", &rows);
    check_restored(ctx, a, &last.1);
    println!(
        "\nratios: logical export+import / file-copy backup = {:.1}x; logical / restore+roll-forward of the backup and {} MiB of archive = {:.1}x (the patent: 600 / 60 min = 10x for 3 GB)",
        logical / copy,
        points.last().map_or(0, |p| p.0),
        logical / last.0
    );
}

/// Opens the last restore with a server and compares its digest with A's.
fn check_restored(ctx: &Ctx, a: &Daemon, restored: &Path) {
    let root = ctx.root.path().join("r");
    std::fs::create_dir_all(&root).expect("creating the restored server's root");
    std::fs::rename(restored, root.join("data")).expect("moving the restore into place");
    let mut r = start(&ctx.duplexd, root);
    let (da, dr) = (
        connect(a.port)
            .call(&["DUPLEX.DIGEST"])
            .expect("DIGEST of A"),
        connect(r.port)
            .call(&["DUPLEX.DIGEST"])
            .expect("DIGEST of the restore"),
    );
    assert_eq!(da, dr, "the restored database differs from A");
    println!(
        "restored database: DBSIZE {} and DUPLEX.DIGEST equal to A's",
        dbsize(r.port)
    );
    r.stop();
}
