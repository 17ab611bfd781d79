//! Side-by-side comparison of the Duplex engine with `redb` and `fjall` (issue 3, "Speed and
//! memory"), every workload in one process run so the ratios are fair.
//!
//! Run: `cargo run --release -p duplex-benches --bin engine_compare`.
//!
//! Each engine runs with its strongest durability setting that matches ours
//! (`SyncPolicy::Always`: a write is acknowledged once `fdatasync`ed):
//! - Duplex: `SyncPolicy::Always` (group-committed WAL, `fdatasync`);
//! - redb: every write transaction commits with the default `Durability::Immediate`;
//! - fjall: a single put is `insert` + `Database::persist(PersistMode::SyncData)` (the persist
//!   runs after the journal lock is released, so concurrent writers share fsyncs); a batch is
//!   a `WriteBatch` with `durability(Some(PersistMode::SyncData))`.
//!
//! Workloads (16-byte random keys, 100-byte random non-zero values):
//! - durable random puts from 1 and 16 threads, for a fixed time (writes/s);
//! - batched puts, 1000 per batch, durable per batch, one thread (keys/s);
//! - a load of 1M keys in batches of 1000, then "settling" (Duplex: `checkpoint`; fjall:
//!   memtable flush + major compaction; redb: nothing, its commits are already the tree),
//!   then random gets from one thread (gets/s; for redb also with one read transaction per
//!   1000 gets), a full scan (keys/s) and the open time after a clean close;
//! - open after a crash: a child process writes 64 MiB of WAL (Duplex, with
//!   `checkpoint_wal_bytes` out of reach) or the same keys (peers: fjall with a memtable
//!   large enough that its whole journal is replayed, redb committing every batch), is killed
//!   with SIGKILL, and the parent times the reopen and checks the last key;
//! - RSS per key: a fresh child process reads `VmRSS` before opening and after loading 1M
//!   keys (after settling too), and another fresh child after reopening (and after a full
//!   scan, which maps the whole tree for Duplex). 10M keys once per run (see
//!   `DUPLEX_RSS_10M`).
//!
//! Environment: `DUPLEX_ROUNDS` (default 3: every workload runs that many times, engines in
//! rotating order, medians reported), `DUPLEX_SECS` (seconds per timed workload, default 5),
//! `DUPLEX_KEYS` (keys for gets/scan, default 1,000,000), `DUPLEX_RSS_10M` (0 to skip the
//! 10M-key RSS run, default 1), `DUPLEX_ONLY` (comma-separated workloads to run: put, batch, read, crash, rss),
//! `DUPLEX_ENGINES` (comma-separated engines, default `duplex,redb,fjall`),
//! `DUPLEX_BENCH_DIR` (where the databases go; default `target/engine-bench`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duplex_benches::engines::{
    engine_root, fresh_dir, key, load, mix, rss, thread_base, value, Kind, Rss, XorShift, BATCH,
    CRASH_WAL_BYTES, KEY_LEN, KINDS, THREADS,
};
use duplex_benches::run_for;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Child processes: crash and RSS.

fn child_main(args: &[String]) {
    match args.first().map(String::as_str) {
        // crash KIND DIR KEYS: write KEYS keys (0 = until 64 MiB of Duplex WAL), say READY,
        // then wait to be killed.
        Some("crash") => {
            let kind = Kind::parse(&args[1]).expect("kind");
            let dir = PathBuf::from(&args[2]);
            let target: u64 = args[3].parse().expect("keys");
            let s = kind.open(&dir, true);
            let mut i = 0u64;
            loop {
                if target > 0 && i >= target {
                    break;
                }
                // Without a target (Duplex only), stop on the engine's own WAL figure.
                if target == 0 && s.wal_bytes().unwrap_or(u64::MAX) >= CRASH_WAL_BYTES {
                    break;
                }
                s.put_batch(i, BATCH);
                i += BATCH as u64;
            }
            let wal = s.wal_bytes().unwrap_or(0);
            println!(
                "READY keys={i} wal={wal} disk={} state={}",
                s.disk_bytes(),
                s.describe().replace(' ', "_")
            );
            std::mem::forget(s);
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        // rss KIND DIR N load|reopen
        Some("rss") => {
            let kind = Kind::parse(&args[1]).expect("kind");
            let dir = PathBuf::from(&args[2]);
            let n: u64 = args[3].parse().expect("n");
            let phase = args[4].as_str();
            let base = rss();
            let t = Instant::now();
            let s = kind.open(&dir, false);
            let opened = rss();
            let open_s = t.elapsed().as_secs_f64();
            let mut out = vec![("base", base), ("open", opened)];
            let extra = if phase == "load" {
                let t = Instant::now();
                load(&*s, n);
                let load_s = t.elapsed().as_secs_f64();
                out.push(("loaded", rss()));
                let t = Instant::now();
                s.settle();
                let settle_s = t.elapsed().as_secs_f64();
                out.push(("settled", rss()));
                // What is live, as opposed to what the allocator kept after the peak.
                // SAFETY: malloc_trim only releases free heap memory back to the OS.
                unsafe {
                    libc::malloc_trim(0);
                }
                out.push(("trimmed", rss()));
                format!(
                    "load_s={load_s:.2} settle_s={settle_s:.2} disk={}",
                    s.disk_bytes()
                )
            } else {
                let t = Instant::now();
                let c = s.scan();
                assert_eq!(c, n, "{} scan after reopen", kind.name());
                out.push(("scanned", rss()));
                let mut rng = XorShift(0x1234_5678);
                for _ in 0..200_000 {
                    let i = rng.next_u64() % n;
                    assert!(s.get(&key(i)).is_some());
                }
                out.push(("got", rss()));
                format!("open_s={open_s:.3} read_s={:.2}", t.elapsed().as_secs_f64())
            };
            s.close();
            let mut line = String::from("RSS");
            for (name, r) in out {
                line.push_str(&format!(" {name}={},{},{}", r.total, r.anon, r.file));
            }
            println!("{line} {extra}");
        }
        _ => panic!("unknown child command {args:?}"),
    }
}

/// Runs this executable as a child with `args`; returns its stdout.
fn run_child(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .arg("child")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn child");
    assert!(out.status.success(), "child {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Crash workload: a child writes, then is SIGKILLed; returns (keys written, child's
/// report line, open time in seconds after the kill).
fn crash_once(kind: Kind, keys: u64) -> (u64, String, f64) {
    let dir = fresh_dir(&format!("crash-{}", kind.name()));
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .arg("child")
        .arg("crash")
        .arg(kind.name())
        .arg(dir.path())
        .arg(keys.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read READY");
    assert!(line.starts_with("READY"), "crash child said {line:?}");
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
    let n: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("keys="))
        .and_then(|v| v.parse().ok())
        .expect("keys=");
    let t = Instant::now();
    let s = kind.open(dir.path(), false);
    let open_s = t.elapsed().as_secs_f64();
    assert!(
        s.get(&key(n - 1)).is_some() && s.get(&key(0)).is_some(),
        "{}: acknowledged keys lost after the crash",
        kind.name()
    );
    s.close();
    (n, line.trim().to_string(), open_s)
}

fn parse_rss(line: &str) -> BTreeMap<String, Rss> {
    let mut m = BTreeMap::new();
    for w in line.split_whitespace().skip(1) {
        let Some((name, v)) = w.split_once('=') else {
            continue;
        };
        let parts: Vec<u64> = v.split(',').filter_map(|x| x.parse().ok()).collect();
        if parts.len() == 3 {
            m.insert(
                name.to_string(),
                Rss {
                    total: parts[0],
                    anon: parts[1],
                    file: parts[2],
                },
            );
        }
    }
    m
}

// ---------------------------------------------------------------------------------------
// Results.

/// Whether a figure is better high (throughput) or low (time, memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput.
    High,
    /// Time or memory.
    Low,
}

#[derive(Default)]
struct Results {
    /// (workload, engine variant) -> samples; workloads keep first-seen order.
    samples: BTreeMap<(usize, String), Vec<f64>>,
    workloads: Vec<(String, &'static str, Better)>,
}

impl Results {
    fn add(&mut self, workload: &str, unit: &'static str, better: Better, engine: &str, v: f64) {
        let idx = match self.workloads.iter().position(|(w, _, _)| w == workload) {
            Some(i) => i,
            None => {
                self.workloads.push((workload.to_string(), unit, better));
                self.workloads.len() - 1
            }
        };
        self.samples
            .entry((idx, engine.to_string()))
            .or_default()
            .push(v);
        eprintln!("  {workload:<28} {engine:<22} {}", fmt_num(v, unit));
    }

    fn median(&self, idx: usize, engine: &str) -> Option<f64> {
        let v = self.samples.get(&(idx, engine.to_string()))?;
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    fn print(&self) {
        println!(
            "\n| workload | unit | duplex | redb | fjall | duplex/redb | duplex/fjall | duplex/best peer |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for (idx, (w, unit, better)) in self.workloads.iter().enumerate() {
            let engines: Vec<String> = self
                .samples
                .keys()
                .filter(|(i, _)| *i == idx)
                .map(|(_, e)| e.clone())
                .collect();
            let pick = |prefix: &str| -> Option<(String, f64)> {
                engines
                    .iter()
                    .filter(|e| e.split(' ').next() == Some(prefix))
                    .filter_map(|e| self.median(idx, e).map(|m| (e.clone(), m)))
                    .reduce(|a, b| {
                        let a_better = match better {
                            Better::High => a.1 >= b.1,
                            Better::Low => a.1 <= b.1,
                        };
                        if a_better {
                            a
                        } else {
                            b
                        }
                    })
            };
            let d = pick("duplex");
            let r = pick("redb");
            let f = pick("fjall");
            let cell = |x: &Option<(String, f64)>| match x {
                Some((e, v)) if e.contains(' ') => {
                    format!(
                        "{} ({})",
                        fmt_num(*v, unit),
                        &e[e.find(' ').unwrap_or(0) + 1..]
                    )
                }
                Some((_, v)) => fmt_num(*v, unit),
                None => "-".into(),
            };
            let ratio = |a: &Option<(String, f64)>, b: &Option<(String, f64)>| match (a, b) {
                (Some((_, a)), Some((_, b))) if *b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            let best = [&r, &f]
                .into_iter()
                .flatten()
                .cloned()
                .reduce(|a, b| match better {
                    Better::High if b.1 > a.1 => b,
                    Better::Low if b.1 < a.1 => b,
                    _ => a,
                });
            println!(
                "| {w} | {unit} | {} | {} | {} | {} | {} | {} |",
                cell(&d),
                cell(&r),
                cell(&f),
                ratio(&d, &r),
                ratio(&d, &f),
                ratio(&d, &best)
            );
        }
        println!(
            "\nRatios are Duplex / peer of the medians: above 1 is better for Duplex in rates, \
             below 1 is better for Duplex in times and bytes."
        );
    }
}

fn fmt_num(v: f64, unit: &str) -> String {
    match unit {
        "s" => format!("{v:.3}"),
        "B/key" => format!("{v:.0}"),
        _ if v >= 100.0 => {
            // Thousands separators.
            let s = format!("{:.0}", v);
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        _ => format!("{v:.2}"),
    }
}

// ---------------------------------------------------------------------------------------
// The workloads.

fn wants(only: &Option<Vec<String>>, name: &str) -> bool {
    only.as_ref().is_none_or(|o| o.iter().any(|x| x == name))
}

fn bench_puts(res: &mut Results, kind: Kind, threads: usize, dur: Duration, round: u64) {
    let dir = fresh_dir(&format!("put{threads}-{}", kind.name()));
    let s = kind.open(dir.path(), false);
    let val = value(round);
    // Warm-up: a few puts (first segment, first table file).
    for i in 0..50 {
        s.put(&key(thread_base(99) + i), &val);
    }
    let (n, el) = run_for(threads, dur, |t, n| {
        let i = thread_base(t) + (round << 32) + n;
        s.put(&key(i), &value(i));
    });
    s.close();
    res.add(
        &format!(
            "durable put, {threads} thread{}",
            if threads > 1 { "s" } else { "" }
        ),
        "writes/s",
        Better::High,
        kind.name(),
        n as f64 / el.as_secs_f64(),
    );
}

fn bench_batches(res: &mut Results, kind: Kind, dur: Duration) {
    let dir = fresh_dir(&format!("batch-{}", kind.name()));
    let s = kind.open(dir.path(), false);
    let (n, el) = run_for(1, dur, |_, n| {
        s.put_batch(n * BATCH as u64, BATCH);
    });
    s.close();
    res.add(
        "batched put (1000/batch)",
        "keys/s",
        Better::High,
        kind.name(),
        (n * BATCH as u64) as f64 / el.as_secs_f64(),
    );
}

/// "1M", "10M", "100k": how many keys, for workload names.
pub fn keys_label(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn bench_reads(res: &mut Results, kind: Kind, keys: u64, dur: Duration, round: u64) {
    let kl = keys_label(keys);
    let dir = fresh_dir(&format!("read-{}", kind.name()));
    let s = kind.open(dir.path(), false);
    let t = Instant::now();
    load(&*s, keys);
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    s.settle();
    let settle_s = t.elapsed().as_secs_f64();
    eprintln!(
        "  [{}] loaded {keys} in {load_s:.1} s, settled in {settle_s:.1} s, disk {:.1} MiB, {}",
        kind.name(),
        s.disk_bytes() as f64 / (1 << 20) as f64,
        s.describe()
    );
    res.add(
        &format!("load {kl} (1000/batch) + settle"),
        "s",
        Better::Low,
        kind.name(),
        load_s + settle_s,
    );
    res.add(
        "disk after load + settle",
        "B/key",
        Better::Low,
        kind.name(),
        s.disk_bytes() as f64 / keys as f64,
    );
    // Warm-up pass over a slice of the keys, then random gets.
    let mut rng = XorShift(0x9E37_79B9 ^ (round + 1));
    for _ in 0..10_000 {
        assert!(s.get(&key(rng.next_u64() % keys)).is_some());
    }
    let seed = mix(round + 0xABC);
    let (n, el) = run_for(1, dur, |_, n| {
        let i = mix(n ^ seed) % keys;
        assert!(s.get(&key(i)).is_some(), "missing key {i}");
    });
    res.add(
        &format!("random get, {kl} keys"),
        "gets/s",
        Better::High,
        kind.name(),
        n as f64 / el.as_secs_f64(),
    );
    if kind == Kind::Redb {
        // redb's read transaction per get is most of its cost: also one per 1000 gets.
        let (n, el) = run_for(1, dur, |_, n| {
            let ks: Vec<[u8; KEY_LEN]> = (0..1000)
                .map(|j| key(mix((n * 1000 + j) ^ seed) % keys))
                .collect();
            assert_eq!(s.get_many(&ks), 1000);
        });
        res.add(
            &format!("random get, {kl} keys"),
            "gets/s",
            Better::High,
            "redb 1 txn/1000 gets",
            (n * 1000) as f64 / el.as_secs_f64(),
        );
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let c = s.scan();
        let el = t.elapsed().as_secs_f64();
        assert_eq!(c, keys, "{} scan count", kind.name());
        best = best.min(el);
    }
    res.add(
        &format!("full scan, {kl} keys"),
        "keys/s",
        Better::High,
        kind.name(),
        keys as f64 / best,
    );
    s.close();
    let t = Instant::now();
    let s = kind.open(dir.path(), false);
    let open_s = t.elapsed().as_secs_f64();
    assert!(s.get(&key(keys / 2)).is_some());
    let first_get_s = t.elapsed().as_secs_f64();
    s.close();
    res.add(
        &format!("open after clean close, {kl}"),
        "s",
        Better::Low,
        kind.name(),
        open_s,
    );
    res.add(
        &format!("open + first get, {kl}"),
        "s",
        Better::Low,
        kind.name(),
        first_get_s,
    );
}

/// One crash-and-reopen of `k` with `keys` keys (0: as many as 64 MiB of WAL hold),
/// recorded; returns the key count the child wrote.
fn crash_and_record(res: &mut Results, k: Kind, keys: u64) -> u64 {
    let (n, line, open_s) = crash_once(k, keys);
    eprintln!("  [{}] crash child: {line}", k.name());
    res.add(
        "open after crash, 64 MiB WAL",
        "s",
        Better::Low,
        k.name(),
        open_s,
    );
    n
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        child_main(&args[1..]);
        return;
    }
    let rounds = env_u64("DUPLEX_ROUNDS", 3);
    let dur = Duration::from_secs(env_u64("DUPLEX_SECS", 5));
    let keys = env_u64("DUPLEX_KEYS", 1_000_000);
    let rss_10m = env_u64("DUPLEX_RSS_10M", 1) != 0;
    let only: Option<Vec<String>> = std::env::var("DUPLEX_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let kinds: Vec<Kind> = match std::env::var("DUPLEX_ENGINES") {
        Ok(s) => s
            .split(',')
            .map(|n| Kind::parse(n).unwrap_or_else(|| panic!("unknown engine {n}")))
            .collect(),
        Err(_) => KINDS.to_vec(),
    };
    let root = engine_root();
    std::fs::create_dir_all(&root).expect("bench root");
    println!(
        "engine_compare: {rounds} rounds, {}s per timed workload, {keys} keys for reads, in {}",
        dur.as_secs(),
        root.canonicalize().unwrap_or(root.clone()).display()
    );
    println!("load average at start: {}", loadavg());
    let mut res = Results::default();
    let mut crash_keys = 0u64;
    let mut loads = Vec::new();
    for round in 0..rounds {
        let mut order = kinds.clone();
        order.rotate_left(round as usize % kinds.len());
        eprintln!(
            "round {} (order {:?}), load {}",
            round + 1,
            order,
            loadavg()
        );
        loads.push(loadavg());
        if wants(&only, "put") {
            for &k in &order {
                bench_puts(&mut res, k, 1, dur, round);
            }
            for &k in &order {
                bench_puts(&mut res, k, THREADS, dur, round);
            }
        }
        if wants(&only, "batch") {
            for &k in &order {
                bench_batches(&mut res, k, dur);
            }
        }
        if wants(&only, "read") {
            for &k in &order {
                bench_reads(&mut res, k, keys, dur, round);
            }
        }
        if wants(&only, "crash") {
            // Duplex decides how many keys make 64 MiB of its WAL; peers write the same
            // (without Duplex in this run: the key count 64 MiB of its WAL holds).
            let duplex_first = crash_keys == 0 && kinds.contains(&Kind::Duplex);
            if duplex_first {
                crash_keys = crash_and_record(&mut res, Kind::Duplex, 0);
            }
            let target = if crash_keys == 0 { 537_000 } else { crash_keys };
            for &k in order
                .iter()
                .filter(|k| !(duplex_first && **k == Kind::Duplex))
            {
                crash_and_record(&mut res, k, target);
            }
        }
        if wants(&only, "rss") && round == 0 {
            for &k in &order {
                rss_run(&mut res, k, keys, &keys_label(keys));
            }
        }
    }
    if wants(&only, "rss") && rss_10m {
        for &k in &kinds {
            rss_run(&mut res, k, 10 * keys, &keys_label(10 * keys));
        }
    }
    res.print();
    println!("\nload average per round: {}", loads.join(" | "));
    println!("load average at end: {}", loadavg());
}

/// RSS per key: a child loads `n` keys (RSS before/after, after settling), another child
/// reopens (RSS after open, after a full scan and 200k gets).
fn rss_run(res: &mut Results, kind: Kind, n: u64, label: &str) {
    let dir = fresh_dir(&format!("rss-{}", kind.name()));
    let d = dir.path().to_string_lossy().into_owned();
    let ns = n.to_string();
    let load_line = run_child(&["rss", kind.name(), &d, &ns, "load"]);
    let load_line = load_line
        .lines()
        .find(|l| l.starts_with("RSS"))
        .expect("RSS line")
        .to_string();
    let reopen_line = run_child(&["rss", kind.name(), &d, &ns, "reopen"]);
    let reopen_line = reopen_line
        .lines()
        .find(|l| l.starts_with("RSS"))
        .expect("RSS line")
        .to_string();
    eprintln!("  [{}] {label} load: {load_line}", kind.name());
    eprintln!("  [{}] {label} reopen: {reopen_line}", kind.name());
    let l = parse_rss(&load_line);
    let r = parse_rss(&reopen_line);
    let per = |a: &Rss, b: &Rss| (b.total as f64 - a.total as f64) / n as f64;
    let per_anon = |a: &Rss, b: &Rss| (b.anon as f64 - a.anon as f64) / n as f64;
    let name = kind.name();
    res.add(
        &format!("RSS after load, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&l["base"], &l["loaded"]),
    );
    res.add(
        &format!("RSS after settle, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&l["base"], &l["settled"]),
    );
    res.add(
        &format!("RSS settle+malloc_trim, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&l["base"], &l["trimmed"]),
    );
    res.add(
        &format!("RSS after reopen, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&r["base"], &r["open"]),
    );
    res.add(
        &format!("RSS reopen+scan+gets, {label}"),
        "B/key",
        Better::Low,
        name,
        per(&r["base"], &r["got"]),
    );
    res.add(
        &format!("anon RSS reopen+scan+gets, {label}"),
        "B/key",
        Better::Low,
        name,
        per_anon(&r["base"], &r["got"]),
    );
    let disk = load_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("disk="))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    res.add(
        &format!("disk after settle, {label}"),
        "B/key",
        Better::Low,
        name,
        disk / n as f64,
    );
}
