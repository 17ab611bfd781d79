//! Rebuild speed (issue 12, "Speed"): a lost server rebuilt from a 1 GiB peer while the
//! peer takes writes, against the copy rate and the roll-forward rate measured in the same
//! run.
//!
//! ```text
//! cargo build --release -p duplex-server -p duplex-cli
//! cargo run --release -p duplex-benches --bin rebuild_speed
//! ```
//! 1. Server A (`target/release/duplexd` or `$DUPLEXD_BIN`, node 1, `--sync always`,
//!    `--peer` C not yet running) is loaded with `DUPLEX_REBUILD_MIB` (default 1024) MiB of
//!    1 KiB values (4 connections pipelining 256 SETs), checkpointed and archived.
//! 2. Copy baseline: `cp -r` of A's data directory + `sync`.
//! 3. Roll-forward baseline: `duplex-recover backup --rate-limit 0` of A while it runs,
//!    then `DUPLEX_ARCHIVE_MIB` (default 100) MiB more of 1 KiB SETs, archived; `duplex-recover restore` of that backup alone and
//!    with the archive (`target/release/duplex-recover` or `$DUPLEX_RECOVER_BIN`): the
//!    difference is the roll-forward's time for the archive's bytes.
//! 4. The rebuild: server C (node 2, `--peer` A) starts with `--rebuild-from A` while 4
//!    connections write `DUPLEX_WRITE_RATE` (default 500: about 100 MiB during a copy of
//!    200 s) SETs/s of 1 KiB on A, until C is `running`. The SETs acknowledged by the time
//!    C's copy and restore are done are what C catches up over the link. C's log gives the phases (`rebuild_done`: the copy with A's backup, the
//!    restore and roll-forward; `rebuild_rolled_forward`: the WAL written on A during its
//!    backup, rolled forward; `rebuild_running`: catch-up and hold), A's the write hold.
//!
//! Prints the total against the ideal made of the two baselines: the bytes copied at the
//! copy rate plus the bytes rolled forward at the roll-forward rate.
//!
//! `DUPLEX_REBUILD_RATE_MB=0` starts A with `--rebuild-backup-rate-mb 0` (its backup for
//! C as fast as the disk goes, not at the adaptive pace); the SETs' latency during the
//! copy is then the price (p50 / p99 of the writers' SETs are printed per phase).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duplex_benches::resp_load::Client;
use duplex_proto::Reply;
use duplex_testkit::daemon::{Daemon, Spec};
use duplex_testkit::{addr, free_port};

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
            "rebuild_speed: {} not found; build it first: cargo build --release -p duplex-server -p duplex-cli",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

fn connect(port: u16) -> Client {
    Client::connect(&addr(port)).expect("connecting to a duplexd")
}

/// The `state` field of `DUPLEX.STATE`, if the server answers.
fn state(port: u16) -> Option<Vec<u8>> {
    match Client::connect(&addr(port)).and_then(|mut c| c.call(&["DUPLEX.STATE"])) {
        Ok(Reply::Array(items)) => match items.get(1) {
            Some(Reply::Bulk(b)) => Some(b.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn answers(port: u16) -> bool {
    state(port).is_some()
}

fn server(bin: &Path, root: PathBuf, port: u16, node: u64, extra: &[String]) -> Daemon {
    let mut args: Vec<String> = ["--node-id", &node.to_string(), "--backup-interval", "0"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend_from_slice(extra);
    Daemon::launch(Spec {
        bin: bin.to_path_buf(),
        root,
        port,
        args,
        ready: answers,
    })
}

/// `n` SETs of 1 KiB values with keys `<prefix>:<i>`, over 4 connections pipelining 256.
fn load(port: u16, prefix: &str, n: u64) {
    std::thread::scope(|s| {
        for c in 0..4u64 {
            s.spawn(move || {
                let mut cl = connect(port);
                let v = vec![b'v'; 1024];
                let ids: Vec<u64> = (0..n).filter(|i| i % 4 == c).collect();
                for chunk in ids.chunks(256) {
                    for i in chunk {
                        cl.queue(&[
                            b"SET".as_slice(),
                            format!("{prefix}:{i:010}").as_bytes(),
                            &v,
                        ]);
                    }
                    cl.flush().expect("sending SETs");
                    for _ in chunk {
                        let r = cl.reply().expect("a SET reply");
                        assert_eq!(r, Reply::Simple("OK".into()), "SET answered {r:?}");
                    }
                }
            });
        }
    });
}

fn info(port: u16) -> String {
    match connect(port).call(&["INFO"]).expect("INFO") {
        Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        r => panic!("INFO answered {r:?}"),
    }
}

fn info_u64(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the archive holds everything logged; returns the last LSN.
fn wait_archived(port: u16) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let m = info(port);
        let last = info_u64(&m, "last_lsn");
        if info_u64(&m, "archive_durable_lsn") >= last {
            return last;
        }
        assert!(Instant::now() < deadline, "the archive did not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

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

fn du(dir: &Path) -> u64 {
    duplex_benches::engines::dir_bytes(dir)
}

/// The number after ` name=` in a log line.
fn field(line: &str, name: &str) -> f64 {
    let Some(at) = line.find(&format!(" {name}=")) else {
        return f64::NAN;
    };
    let rest = &line[at + name.len() + 2..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].trim_matches('"').parse().unwrap_or(f64::NAN)
}

fn line_of(log: &str, event: &str) -> String {
    log.lines()
        .rfind(|l| l.contains(&format!("event=\"{event}\"")))
        .unwrap_or_else(|| panic!("no {event} line in:\n{log}"))
        .to_owned()
}

/// Step 3: the roll-forward rate (bytes/s) of `archive_mib` MiB written after a backup.
fn rollforward_baseline(a: &Daemon, recover: &Path, archive_mib: u64) -> f64 {
    let backup = a.root.join("rf-base");
    let secs = timed(
        Command::new(recover)
            .arg("backup")
            .arg("--data")
            .arg(a.root.join("data"))
            .arg("--into")
            .arg(&backup)
            .arg("--rate-limit")
            .arg("0"),
    );
    println!("unpaced backup for the baseline (duplex-recover backup --rate-limit 0): {secs:.2} s");
    let arch0 = du(&a.root.join("archive"));
    load(a.port, "after-backup", archive_mib << 10);
    let lsn = wait_archived(a.port);
    let arch_bytes = du(&a.root.join("archive")) - arch0;
    let into = a.root.join("restore-tmp");
    let t = Instant::now();
    let out = Command::new(recover)
        .arg("restore")
        .arg("--backup")
        .arg(&backup)
        .arg("--into")
        .arg(&into)
        .arg("--archive")
        .arg(a.root.join("archive"))
        .arg("--until-lsn")
        .arg(lsn.to_string())
        .output()
        .expect("running duplex-recover restore");
    let all = t.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "duplex-recover restore failed: {text}"
    );
    std::fs::remove_dir_all(&into).expect("removing the restore");
    // "rolled forward LSN a to b: N records, X in S s (...)": the roll-forward's own time.
    let line = text
        .lines()
        .find(|l| l.contains("rolled forward LSN"))
        .unwrap_or_else(|| panic!("no roll-forward line in: {text}"));
    let rf: f64 = line
        .rsplit_once(" in ")
        .and_then(|(_, r)| r.split(" s").next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no seconds in: {line}"));
    println!(
        "roll-forward baseline: duplex-recover restore with {} MiB of archive in {all:.2} s; its roll-forward: {} = {:.0} MB/s | load {}",
        arch_bytes >> 20,
        line.trim(),
        arch_bytes as f64 / rf.max(1e-3) / 1e6,
        loadavg()
    );
    let rf = rf.max(1e-3);
    arch_bytes as f64 / rf
}

/// 4 connections writing `rate` SETs/s of 1 KiB on `port` (every 10 ms a pipelined
/// slice) until `stop`; counts the acknowledged ones in `acked`.
/// Each tick's round trip (its SETs sent to their last reply), µs, with when it began.
type Trips = std::sync::Mutex<Vec<(Instant, u64)>>;

fn write_until(port: u16, rate: u64, stop: &AtomicBool, acked: &AtomicU64, trips: &Trips) {
    std::thread::scope(|s| {
        for c in 0..4u64 {
            s.spawn(move || {
                let mut cl = connect(port);
                let v = vec![b'w'; 1024];
                let per_tick = (rate / 400).max(1);
                let mut i = 0u64;
                let start = Instant::now();
                let mut tick = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..per_tick {
                        cl.queue(&[b"SET".as_slice(), format!("during:{c}:{i}").as_bytes(), &v]);
                        i += 1;
                    }
                    let sent = Instant::now();
                    cl.flush().expect("sending SETs");
                    for _ in 0..per_tick {
                        let r = cl.reply().expect("a SET reply");
                        assert_eq!(r, Reply::Simple("OK".into()), "SET answered {r:?}");
                    }
                    let us = sent.elapsed().as_micros() as u64;
                    trips.lock().expect("trips").push((sent, us));
                    acked.fetch_add(per_tick, Ordering::Relaxed);
                    tick += 1;
                    let next = Duration::from_millis(10 * tick);
                    std::thread::sleep(next.saturating_sub(start.elapsed()));
                }
            });
        }
    });
}

fn main() {
    let duplexd = release_bin("DUPLEXD_BIN", "duplexd");
    let recover = release_bin("DUPLEX_RECOVER_BIN", "duplex-recover");
    let mib = env_u64("DUPLEX_REBUILD_MIB", 1024);
    let archive_mib = env_u64("DUPLEX_ARCHIVE_MIB", 100);
    let rate = env_u64("DUPLEX_WRITE_RATE", 500);
    let root = duplex_benches::temp_dir("rebuild-speed");
    let secret = root.path().join("secret");
    std::fs::write(&secret, b"rebuild-speed-secret").expect("writing the secret file");
    let secret = secret.display().to_string();
    let (pa, pc) = (free_port(), free_port());
    let link = |p: u16| {
        vec![
            "--cluster-secret-file".into(),
            secret.clone(),
            "--peer".into(),
            addr(p),
        ]
    };
    // A's pace for the backup it takes for C (unset: the default adaptive pace).
    let mut a_args = link(pc);
    if let Ok(mb) = std::env::var("DUPLEX_REBUILD_RATE_MB") {
        a_args.extend(["--rebuild-backup-rate-mb".into(), mb]);
    }
    let a = server(&duplexd, root.path().join("a"), pa, 1, &a_args);
    let t = Instant::now();
    load(pa, "key", mib << 10);
    connect(pa)
        .call(&["DUPLEX.CHECKPOINT"])
        .expect("DUPLEX.CHECKPOINT");
    wait_archived(pa);
    let data = a.root.join("data");
    let data_bytes = du(&data);
    println!(
        "A loaded with {mib} MiB of 1 KiB values in {:.1} s; data directory {} MiB | load {}",
        t.elapsed().as_secs_f64(),
        data_bytes >> 20,
        loadavg()
    );
    let copy_to = root.path().join("cp-copy");
    let cp = timed(Command::new("sh").arg("-c").arg(format!(
        "cp -r '{}' '{}' && sync",
        data.display(),
        copy_to.display()
    )));
    std::fs::remove_dir_all(&copy_to).expect("removing the copy");
    let copy_rate = data_bytes as f64 / cp;
    println!(
        "copy baseline: cp -r + sync of {} MiB in {cp:.2} s = {:.0} MB/s | load {}",
        data_bytes >> 20,
        copy_rate / 1e6,
        loadavg()
    );
    let rf_rate = rollforward_baseline(&a, &recover, archive_mib);
    let (stop, acked) = (AtomicBool::new(false), AtomicU64::new(0));
    let trips = Trips::default();
    let mut t_start = Instant::now();
    let (c, total, at_done) = std::thread::scope(|s| {
        s.spawn(|| write_until(pa, rate, &stop, &acked, &trips));
        std::thread::sleep(Duration::from_secs(1));
        let t = Instant::now();
        t_start = t;
        let mut extra = link(pa);
        extra.extend(["--rebuild-from".into(), addr(pa)]);
        let c = server(&duplexd, root.path().join("c"), pc, 2, &extra);
        let deadline = Instant::now() + Duration::from_secs(1800);
        let mut at_done = None;
        let arch0 = du(&a.root.join("archive"));
        while state(pc).as_deref() != Some(b"running".as_slice()) {
            assert!(Instant::now() < deadline, "C not running: {}", c.log());
            if at_done.is_none() && c.log().contains("event=\"rebuild_done\"") {
                let wal = du(&a.root.join("archive")) - arch0;
                at_done = Some((acked.load(Ordering::Relaxed), wal));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let total = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        (c, total, at_done.unwrap_or((0, 0)))
    });
    let acked = acked.load(Ordering::Relaxed);
    println!(
        "SETs acknowledged on A: {} ({} MiB of A's archived WAL) when C's restore was done, {acked} when C was running",
        at_done.0,
        at_done.1 >> 20
    );
    report(&a, &c, total, (copy_rate, rf_rate), acked, at_done.1 as f64);
    let trips = trips.into_inner().expect("trips");
    for (name, during) in [("the 1 s before the rebuild", false), ("the rebuild", true)] {
        let mut v: Vec<u64> = trips
            .iter()
            .filter(|(t, _)| (*t >= t_start) == during)
            .map(|(_, us)| *us)
            .collect();
        v.sort_unstable();
        let q = |p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "writers' SET round trips (each a tick's SETs, pipelined) during {name}: {} ticks, p50 {} us, p99 {} us, max {} us",
            v.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
}

/// The phases from both logs, and the total against the baselines.
/// `wal` is what A logged while C copied and restored (C catches it up over the link).
fn report(a: &Daemon, c: &Daemon, total: f64, rates: (f64, f64), acked: u64, wal: f64) {
    let (copy_rate, rf_rate) = rates;
    let log = c.log();
    let done = line_of(&log, "rebuild_done");
    let rolled = line_of(&log, "rebuild_rolled_forward");
    let running = line_of(&log, "rebuild_running");
    let hold = line_of(&a.log(), "write_hold");
    let bytes = field(&done, "bytes");
    let copy_secs = field(&done, "copy_secs");
    let restore_secs = field(&done, "restore_secs");
    let rf_bytes = field(&rolled, "bytes");
    let rf_secs = field(&rolled, "seconds");
    let ideal = bytes / copy_rate + (rf_bytes + wal) / rf_rate;
    println!("rebuild of C from A while A took {acked} SETs of 1 KiB: running after {total:.2} s | load {}", loadavg());
    println!(
        "  copy (A's fresh backup streamed): {:.0} MiB in {copy_secs:.2} s = {:.0} MB/s ({:.2}x the cp rate)",
        bytes / 1048576.0,
        bytes / copy_secs / 1e6,
        (bytes / copy_secs) / copy_rate
    );
    println!(
        "  verify + restore + roll-forward + adopt: {restore_secs:.2} s, of which roll-forward of {:.0} MiB of WAL in {rf_secs:.2} s = {:.0} MB/s ({:.2}x the baseline rate)",
        rf_bytes / 1048576.0,
        rf_bytes / rf_secs.max(1e-3) / 1e6,
        (rf_bytes / rf_secs.max(1e-3)) / rf_rate
    );
    let catch_up = field(&running, "catch_up_secs");
    println!(
        "  catch-up of {:.0} MiB of WAL A wrote meanwhile: {:.0} MB/s ({:.2}x the roll-forward rate)",
        wal / 1048576.0,
        wal / catch_up / 1e6,
        wal / catch_up / rf_rate
    );
    println!(
        "  catch-up + write hold: {catch_up:.2} s (C's log: pause {:.1} ms, {} attempt(s)); A: writes paused {:.2} ms, {} held, max {:.2} ms",
        field(&running, "pause_ms"),
        field(&running, "attempts"),
        field(&hold, "pause_ms"),
        field(&hold, "writes_held"),
        field(&hold, "held_max_ms")
    );
    println!(
        "  total {total:.2} s against the ideal {ideal:.2} s (the bytes copied at the cp rate + the WAL rolled forward and caught up at the roll-forward rate): {:.2}x",
        total / ideal
    );
}
