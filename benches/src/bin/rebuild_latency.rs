//! Write latency on a server while a peer rebuilds from it, through the rebuild's write
//! hold (issue 13's "write latency during a rebuild's fence").
//!
//! ```text
//! cargo build --release -p duplex-server
//! DUPLEX_CSV_DIR=docs/plots cargo run --release -p duplex-benches --bin rebuild_latency
//! ```
//! Server A (`target/release/duplexd` or `$DUPLEXD_BIN`, node 1, `--peer` of a server C
//! not yet running, one `--cluster-secret-file`) is loaded with `DUPLEX_REBUILD_MIB`
//! (default 64) MiB of 1 KiB values; one client then does a SET then a GET of a 1 KiB value
//! in a loop (1 ms apart) on A. After 2 s, C (node 2, `--peer` A) starts with
//! `--rebuild-from A`: A takes and streams a backup, C restores it, catches up, and asks A
//! for the write hold (at most 100 ms of delayed writes) before it turns `running`. The
//! probe goes on 2 s after that. Prints the latency per phase (before, rebuild, after), C's
//! time to `running`, and A's `write_hold` log line (the pause and the writes it held);
//! with `DUPLEX_CSV_DIR` writes `rebuild_latency.csv` (100 ms windows,
//! `t_ms,set_p50_us,set_max_us,get_p50_us,get_max_us,phase`), drawn by `plots render`.
//!
//! The write hold over many rebuilds under many writing clients:
//! ```text
//! DUPLEX_REBUILD_MIB=16 DUPLEX_REBUILD_ROUNDS=20 DUPLEX_REBUILD_WRITERS=16 \
//!   cargo run --release -p duplex-benches --bin rebuild_latency
//! ```
//! `DUPLEX_REBUILD_WRITERS` more clients each SET a 1 KiB value in a loop (no pause) on A
//! throughout; after each rebuild C is killed (`kill -9`), its data and archive
//! directories deleted, and rebuilt again, `DUPLEX_REBUILD_ROUNDS` times. Prints each
//! round's write hold from A's log (the writes' pause, the writes held and how long they
//! waited) and their p50 / p99 / max over the rounds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use duplex_benches::resp_load::Client;
use duplex_proto::Reply;
use duplex_testkit::daemon::{Daemon, Spec};
use duplex_testkit::{addr, free_port};

/// ms since the start, SET µs, GET µs, phase (0 before, 1 rebuilding, 2 after).
type Sample = (u64, u64, u64, u8);

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A writing client: SETs of 1 KiB values to keys `w<w>:<n % 10000>` in a loop until
/// `stop`, each answered before the next; counts them in `written`.
fn writer(port: u16, w: u64, stop: &AtomicBool, written: &AtomicU64) {
    let mut c = connect(port);
    let v = vec![b'w'; 1024];
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = format!("w{w}:{}", i % 10_000);
        let r = c
            .call(&[b"SET".as_slice(), k.as_bytes(), &v])
            .expect("writer SET");
        assert_eq!(r, Reply::Simple("OK".into()), "writer SET answered {r:?}");
        written.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

/// The number after ` name=` in a log line.
fn field(line: &str, name: &str) -> f64 {
    let Some(at) = line.find(&format!(" {name}=")) else {
        return f64::NAN;
    };
    let rest = &line[at + name.len() + 2..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().unwrap_or(f64::NAN)
}

/// Every successful write hold in A's log (`write_hold` lines that reached the cut-off):
/// the pause, the writes held and their longest wait, and p50 / p99 / max over them.
fn holds(log: &str) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=\"write_hold\"") && l.contains("reached=Some(true)"))
        .collect();
    let tried = log.matches("event=\"write_hold\"").count();
    let mut pause: Vec<f64> = lines.iter().map(|l| field(l, "pause_ms")).collect();
    let mut held: Vec<f64> = lines.iter().map(|l| field(l, "writes_held")).collect();
    let mut wait: Vec<f64> = lines.iter().map(|l| field(l, "held_max_ms")).collect();
    for (i, l) in lines.iter().enumerate() {
        println!(
            "hold {:>2}: writes paused {:.2} ms (gate closed after {:.2} ms{}, drained by {:.2}, cut-off named by {:.2}; {} batches to ship), {} held, longest wait {:.2} ms, p50 {:.2} ms",
            i + 1,
            field(l, "pause_ms"),
            field(l, "idle_wait_ms"),
            if l.contains("forced=true") { ", forced" } else { "" },
            field(l, "drained_ms"),
            field(l, "held_ms"),
            field(l, "pending"),
            field(l, "writes_held"),
            field(l, "held_max_ms"),
            field(l, "held_p50_ms")
        );
    }
    let q = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{} holds reached the cut-off ({tried} asked, the rest not granted or expired); pause p50 {:.2} / p99 {:.2} / max {:.2} ms; writes held p50 {} / max {}; longest wait of a held write p50 {:.2} / p99 {:.2} / max {:.2} ms",
        lines.len(),
        q(&mut pause, 0.5),
        q(&mut pause, 0.99),
        q(&mut pause, 1.0),
        q(&mut held, 0.5),
        q(&mut held, 1.0),
        q(&mut wait, 0.5),
        q(&mut wait, 0.99),
        q(&mut wait, 1.0)
    );
}

fn connect(port: u16) -> Client {
    Client::connect(&addr(port)).expect("connecting to a duplexd")
}

/// `DUPLEX.STATE` (an array of field, value) says `state` `running`.
fn running(port: u16) -> bool {
    Client::connect(&addr(port))
        .and_then(|mut c| c.call(&["DUPLEX.STATE"]))
        .is_ok_and(|r| match r {
            Reply::Array(items) => items
                .get(1)
                .is_some_and(|v| *v == Reply::Bulk(b"running".to_vec())),
            _ => false,
        })
}

/// `DUPLEX.STATE` answers (a rebuilding server's responder answers at once).
fn answers(port: u16) -> bool {
    Client::connect(&addr(port))
        .and_then(|mut c| c.call(&["DUPLEX.STATE"]))
        .is_ok()
}

/// Starts C rebuilding and waits (up to 10 min) until it is `running`.
fn rebuilt(bin: &Path, root: PathBuf, port: u16, extra: &[String]) -> Daemon {
    let c = server(bin, root, port, 2, extra, answers);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !running(port) {
        assert!(Instant::now() < deadline, "C not running: {}", c.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    c
}

fn server(
    bin: &Path,
    root: PathBuf,
    port: u16,
    node: u64,
    extra: &[String],
    ready: fn(u16) -> bool,
) -> Daemon {
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
        ready,
    })
}

/// `n` SETs of 1 KiB values, 256 pipelined per write.
fn load(port: u16, n: u64) {
    let mut c = connect(port);
    let v = vec![b'v'; 1024];
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        for i in chunk {
            c.queue(&[b"SET".as_slice(), format!("key:{i:010}").as_bytes(), &v]);
        }
        c.flush().expect("sending SETs");
        for _ in chunk {
            let r = c.reply().expect("a SET reply");
            assert_eq!(r, Reply::Simple("OK".into()), "SET answered {r:?}");
        }
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(0)
}

/// The SET/GET probe on `port` until `stop`.
fn probe(port: u16, start: Instant, phase: &AtomicU8, stop: &AtomicBool) -> Vec<Sample> {
    let mut c = connect(port);
    let v = vec![b'p'; 1024];
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let r = c
            .call(&[b"SET".as_slice(), b"probe", &v])
            .expect("probe SET");
        assert_eq!(r, Reply::Simple("OK".into()), "probe SET answered {r:?}");
        let t1 = Instant::now();
        c.call(&["GET", "probe"]).expect("probe GET");
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
}

fn main() {
    let bin = std::env::var_os("DUPLEXD_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/duplexd"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p duplex-server",
        bin.display()
    );
    let root = duplex_benches::temp_dir("rebuild-latency");
    let secret = root.path().join("secret");
    std::fs::write(&secret, b"rebuild-latency-secret").expect("writing the secret file");
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
    let a = server(&bin, root.path().join("a"), pa, 1, &link(pc), running);
    let mib = env_u64("DUPLEX_REBUILD_MIB", 64);
    load(pa, mib << 10);
    println!(
        "A loaded with {mib} MiB of 1 KiB values | load {}",
        loadavg()
    );
    let rounds = env_u64("DUPLEX_REBUILD_ROUNDS", 1).max(1);
    let writers = env_u64("DUPLEX_REBUILD_WRITERS", 0);
    let (phase, stop, start) = (AtomicU8::new(0), AtomicBool::new(false), Instant::now());
    let written = AtomicU64::new(0);
    let (samples, took) = std::thread::scope(|s| {
        let h = s.spawn(|| probe(pa, start, &phase, &stop));
        for w in 0..writers {
            let (stop, written) = (&stop, &written);
            s.spawn(move || writer(pa, w, stop, written));
        }
        std::thread::sleep(Duration::from_secs(2));
        let mut took = Vec::new();
        for r in 0..rounds {
            let c_root = root.path().join("c");
            for d in ["data", "archive", "backups"] {
                let _ = std::fs::remove_dir_all(c_root.join(d));
            }
            phase.store(1, Ordering::Relaxed);
            let t = Instant::now();
            let mut extra = link(pa);
            extra.extend(["--rebuild-from".into(), addr(pa)]);
            let c = rebuilt(&bin, c_root, pc, &extra);
            took.push(t.elapsed().as_secs_f64());
            phase.store(2, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(if r + 1 == rounds { 2 } else { 1 }));
            drop(c);
        }
        stop.store(true, Ordering::Relaxed);
        (h.join().expect("probe panicked"), took)
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{rounds} rebuild(s) of C from A, running after {} s | {writers} writers: {} SETs ({:.0}/s) | load {}",
        took.iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        written.load(Ordering::Relaxed),
        written.load(Ordering::Relaxed) as f64 / secs,
        loadavg()
    );
    let log = a.log();
    for l in log
        .lines()
        .filter(|l| l.contains("write_hold") || l.contains("rebuild_serve"))
        .take(if rounds > 1 { 0 } else { usize::MAX })
    {
        println!("A's log: {l}");
    }
    holds(&log);
    report(&samples);
}

/// Per-phase percentiles, and the CSV of 100 ms windows.
fn report(samples: &[Sample]) {
    for (ph, name) in [(0u8, "before"), (1, "rebuild"), (2, "after")] {
        let mut set: Vec<u64> = samples.iter().filter(|s| s.3 == ph).map(|s| s.1).collect();
        let mut get: Vec<u64> = samples.iter().filter(|s| s.3 == ph).map(|s| s.2).collect();
        let n = set.len();
        let (s50, s99, smax) = (pct(&mut set, 0.5), pct(&mut set, 0.99), pct(&mut set, 1.0));
        let (g50, g99, gmax) = (pct(&mut get, 0.5), pct(&mut get, 0.99), pct(&mut get, 1.0));
        println!("{name:>8}: {n} samples; SET p50 {s50} p99 {s99} max {smax} us; GET p50 {g50} p99 {g99} max {gmax} us");
    }
    let Some(dir) = std::env::var_os("DUPLEX_CSV_DIR") else {
        return;
    };
    let mut text = String::from("t_ms,set_p50_us,set_max_us,get_p50_us,get_max_us,phase\n");
    let mut i = 0;
    while i < samples.len() {
        let w = samples[i].0 / 100;
        let j = i + samples[i..].iter().take_while(|s| s.0 / 100 == w).count();
        let mut set: Vec<u64> = samples[i..j].iter().map(|s| s.1).collect();
        let mut get: Vec<u64> = samples[i..j].iter().map(|s| s.2).collect();
        text.push_str(&format!(
            "{},{},{},{},{},{}\n",
            w * 100,
            pct(&mut set, 0.5),
            pct(&mut set, 1.0),
            pct(&mut get, 0.5),
            pct(&mut get, 1.0),
            samples[j - 1].3
        ));
        i = j;
    }
    let path = PathBuf::from(dir).join("rebuild_latency.csv");
    std::fs::write(&path, text).expect("writing rebuild_latency.csv");
    println!("wrote {}", path.display());
}
