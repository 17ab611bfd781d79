//! Replication between real `duplexd` processes on loopback (issue 11, "Speed"); every
//! figure beside a baseline from the same run.
//!
//! Build the server first, then run:
//! ```text
//! cargo build --release -p duplex-server
//! cargo run --release -p duplex-benches --bin repl_bench
//! ```
//! It uses `target/release/duplexd` (or `$DUPLEXD_BIN`) and puts every server's files under
//! `$DUPLEX_BENCH_DIR` (default `target/duplex-bench-tmp`).
//!
//! 1. **Lag**: two servers (node 1 and 2, each its own directories, each `--peer` of the
//!    other, one `--cluster-secret-file`), a paced load of SETs on server 1 (8 connections,
//!    time slots, every reply checked `+OK`, 100-byte values, each key written once) at
//!    10,000/s for `DUPLEX_LAG_SECS` (default 10); then server 2's `lag_p50_ms`,
//!    `lag_p99_ms` and `lag_max_ms` (commit on server 1 to applied and durable on server 2)
//!    and a `DUPLEX.DIGEST` of both (all keys arrived). Then 20k, 40k, 80k, ... (a fresh
//!    pair each) until the lag is no longer bounded or server 1 cannot take the rate:
//!    bounded = p99 <= 100 ms, server 1's `lag_batches` in the last third of the load no
//!    more than twice its first third's (plus 100 ms of writes), and nothing
//!    unacknowledged within 1 s of the load's end ("catch-up"; the digests are compared
//!    after it).
//! 2. **SET cost**: an unpaced load (50 connections, pipeline 16, 100-byte values, random
//!    keys out of 100,000; redis-benchmark's shape, by this program's own client) for
//!    `DUPLEX_SECS` (default 5) against server 1 alone, with a fake peer that acknowledges
//!    without applying (`duplex_benches::peer_sink`), and with a real applying peer;
//!    `DUPLEX_ROUNDS` (default 3) interleaved rounds, medians, ratios against alone.
//! 3. Both for `--sync always` (the server's default) and `--sync interval:1000`
//!    (`DUPLEX_SYNCS`, comma-separated, to choose).
//!
//! Other knobs: `DUPLEX_RATES` (comma-separated writes/s, default 10000,20000,40000,80000,
//! 160000,320000), `DUPLEX_ONLY=lag|cost` (one part only), `DUPLEX_SERVER_ARGS` (more
//! flags for every server, e.g. `--transfer-on-commit false`), `DUPLEX_LAG_CSV=FILE` (append
//! one CSV row per lag step: `sync,rate,achieved,p50_ms,p99_ms,max_ms,load1`, a header
//! first when the file is new; `docs/plots/repl_lag.csv` is made this way and plotted by
//! `plots`), `DUPLEX_LAG_ALL=1` (run every rate of `DUPLEX_RATES`, for a plot, instead of
//! stopping at the first step that is not bounded). The load average is printed with every figure: two servers and the load
//! share the machine's cores.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duplex_benches::peer_sink::PeerSink;
use duplex_benches::resp_load::{paced_sets, unpaced_sets, Client, LoadReport, Paced, Unpaced};
use duplex_proto::Reply;
use duplex_testkit::daemon::{Daemon, Spec};
use duplex_testkit::{addr, free_port};

/// The cluster secret every server (and the sink) proves.
const SECRET: &[u8] = b"repl-bench-secret";
/// Paced load connections.
const PACED_CONNS: usize = 8;
/// The issue's lag target at 10k/s, and the bound for "lag stays bounded".
const P99_TARGET_MS: u64 = 10;
const P99_BOUND_MS: u64 = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn duplexd_bin() -> PathBuf {
    let bin = std::env::var_os("DUPLEXD_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/duplexd"),
        PathBuf::from,
    );
    if !bin.exists() {
        eprintln!(
            "repl_bench: {} not found; build it first: cargo build --release -p duplex-server",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

/// Answers PING with PONG.
fn ping_ready(port: u16) -> bool {
    Client::connect(&addr(port))
        .and_then(|mut c| c.call(&["PING"]))
        .is_ok_and(|r| r == Reply::Simple("PONG".into()))
}

/// How to start servers in this run.
struct Setup {
    bin: PathBuf,
    root: tempfile::TempDir,
    secret_file: PathBuf,
}

impl Setup {
    /// One server: node `node`, `sync`, peers `peers` (none: no secret either).
    fn server(&self, tag: &str, node: u64, port: u16, sync: &str, peers: &[String]) -> Daemon {
        let mut args = vec![
            "--node-id".to_owned(),
            node.to_string(),
            "--sync".to_owned(),
            sync.to_owned(),
        ];
        if let Ok(extra) = std::env::var("DUPLEX_SERVER_ARGS") {
            args.extend(extra.split_whitespace().map(str::to_owned));
        }
        if !peers.is_empty() {
            args.push("--cluster-secret-file".into());
            args.push(self.secret_file.display().to_string());
            for p in peers {
                args.push("--peer".into());
                args.push(p.clone());
            }
        }
        Daemon::launch(Spec {
            bin: self.bin.clone(),
            root: self.root.path().join(tag),
            port,
            args,
            ready: ping_ready,
        })
    }

    /// Two servers, each the other's peer, links up both ways.
    fn pair(&self, tag: &str, sync: &str) -> (Daemon, Daemon) {
        let (p1, p2) = (free_port(), free_port());
        let a = self.server(&format!("{tag}-1"), 1, p1, sync, &[addr(p2)]);
        let b = self.server(&format!("{tag}-2"), 2, p2, sync, &[addr(p1)]);
        wait_link_up(p1, true);
        wait_link_up(p2, true);
        (a, b)
    }
}

/// The DUPLEX.PEERS rows of the server on `port`.
fn peers(port: u16) -> Vec<std::collections::HashMap<String, String>> {
    Client::connect(&addr(port))
        .and_then(|mut c| c.peers())
        .expect("DUPLEX.PEERS")
}

/// Waits (at most 30 s) until the server on `port` has its outbound link up, and an
/// inbound one too when `inbound`.
fn wait_link_up(port: u16, inbound: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = peers(port);
        let up = rows.first().is_some_and(|r| {
            r.get("state").is_some_and(|s| s == "up")
                && (!inbound || r.get("inbound").is_some_and(|s| s == "up"))
        });
        if up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the peer link of the server on {port} did not come up: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn field(row: &std::collections::HashMap<String, String>, k: &str) -> u64 {
    row.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn digest(port: u16) -> Reply {
    Client::connect(&addr(port))
        .and_then(|mut c| c.call(&["DUPLEX.DIGEST"]))
        .expect("DUPLEX.DIGEST")
}

fn main() {
    let bin = duplexd_bin();
    let root = duplex_benches::temp_dir("repl-bench");
    let secret_file = root.path().join("secret");
    std::fs::write(&secret_file, SECRET).expect("writing the cluster secret file");
    let setup = Setup {
        bin,
        root,
        secret_file,
    };
    let syncs = env_list("DUPLEX_SYNCS", "always,interval:1000");
    let rates: Vec<u64> = env_list("DUPLEX_RATES", "10000,20000,40000,80000,160000,320000")
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "repl_bench summary (duplexd {}; 2 servers + the load on one machine)",
        setup.bin.display()
    );
    let only = std::env::var("DUPLEX_ONLY").unwrap_or_default();
    for sync in &syncs {
        if only != "cost" {
            lag_steps(&setup, sync, &rates, &mut summary);
        }
        if only != "lag" {
            set_cost(&setup, sync, &mut summary);
        }
    }
    println!("\n{summary}");
}

/// One paced step's outcome.
struct Step {
    rate: u64,
    load: LoadReport,
    p50: String,
    p99: String,
    max: String,
    samples: u64,
    lag_batches_first: u64,
    lag_batches_last: u64,
    catch_up_ms: u64,
    digests_equal: bool,
    load_avg: String,
    /// Server 1's BATCHES frames and batches sent to server 2.
    frames_sent: u64,
    batches_sent: u64,
}

impl Step {
    fn p99(&self) -> u64 {
        self.p99.parse().unwrap_or(u64::MAX)
    }

    fn accepted(&self) -> bool {
        self.load.unsent == 0 && self.load.bad == 0 && self.load.rate() >= 0.95 * self.rate as f64
    }

    fn bounded(&self) -> bool {
        self.p99() <= P99_BOUND_MS
            && self.lag_batches_last <= 2 * self.lag_batches_first + self.rate / 10
            && self.catch_up_ms <= 1000
            && self.digests_equal
    }
}

/// Steps the paced rate up until the lag is unbounded or the server cannot take it.
fn lag_steps(setup: &Setup, sync: &str, rates: &[u64], summary: &mut String) {
    let secs = env_u64("DUPLEX_LAG_SECS", 10) as f64;
    let _ = writeln!(
        summary,
        "\n== lag, --sync {sync}: paced SETs on server 1, {PACED_CONNS} connections, {secs} s a step; lag = commit on 1 to applied+durable on 2 =="
    );
    let mut best: Option<u64> = None;
    let mut base_p99: Option<u64> = None;
    for &rate in rates {
        let s = lag_step(setup, sync, rate, secs);
        let verdict = match (s.accepted(), s.bounded()) {
            (false, _) => "server 1 did not take the rate",
            (true, true) => "bounded",
            (true, false) => "NOT bounded",
        };
        let line = format!(
            "rate {:>7}/s: achieved {:>9.0}/s ({:.2}x) ok {} bad {} unsent {} behind<={:.0}ms | lag p50 {} p99 {} max {} ms ({} batches) | lag_batches first/last third {}/{} | catch-up {} ms | {:.1} batches/frame | digests {} | {verdict} | load {}",
            s.rate,
            s.load.rate(),
            s.load.rate() / s.rate as f64,
            s.load.ok,
            s.load.bad,
            s.load.unsent,
            s.load.max_behind_ms,
            s.p50,
            s.p99,
            s.max,
            s.samples,
            s.lag_batches_first,
            s.lag_batches_last,
            s.catch_up_ms,
            s.batches_sent as f64 / s.frames_sent.max(1) as f64,
            if s.digests_equal { "equal" } else { "DIFFER" },
            s.load_avg
        );
        println!("{line}");
        let _ = writeln!(summary, "{line}");
        append_lag_csv(sync, &s);
        if let Some(b) = &s.load.first_bad {
            let _ = writeln!(summary, "  first non-OK reply: {b}");
        }
        if base_p99.is_none() {
            base_p99 = Some(s.p99());
            let _ = writeln!(
                summary,
                "  at {rate}/s: p99 {} ms against the target < {P99_TARGET_MS} ms: {}",
                s.p99,
                if s.p99() < P99_TARGET_MS {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
        if !(s.accepted() && s.bounded()) {
            if std::env::var_os("DUPLEX_LAG_ALL").is_none() {
                break;
            }
        } else if best.is_none_or(|b| b < rate) {
            best = Some(rate);
        }
    }
    let _ = writeln!(
        summary,
        "  highest rate with bounded lag (p99 <= {P99_BOUND_MS} ms, lag_batches not growing, caught up <= 1 s): {}",
        best.map_or_else(|| "none".to_owned(), |r| format!("{r}/s"))
    );
}

/// Appends one row for step `s` to `$DUPLEX_LAG_CSV` (if set), with a header when new.
fn append_lag_csv(sync: &str, s: &Step) {
    let Some(path) = std::env::var_os("DUPLEX_LAG_CSV") else {
        return;
    };
    let path = PathBuf::from(path);
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("opening $DUPLEX_LAG_CSV for appending");
    let mut row = String::new();
    if new {
        row.push_str("sync,rate,achieved,p50_ms,p99_ms,max_ms,load1\n");
    }
    let load1 = s.load_avg.split_whitespace().next().unwrap_or("?");
    let _ = writeln!(
        row,
        "{sync},{},{:.0},{},{},{},{load1}",
        s.rate,
        s.load.rate(),
        s.p50,
        s.p99,
        s.max
    );
    std::io::Write::write_all(&mut f, row.as_bytes()).expect("writing $DUPLEX_LAG_CSV");
}

/// One paced step on a fresh pair.
fn lag_step(setup: &Setup, sync: &str, rate: u64, secs: f64) -> Step {
    let (a, b) = setup.pair(&format!("lag-{}-{rate}", sync.replace(':', "")), sync);
    let (pa, pb) = (a.port, b.port);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (load, lag_samples) = std::thread::scope(|s| {
        let mon = s.spawn(|| {
            let mut v = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                v.push(field(&peers(pa)[0], "lag_batches"));
                std::thread::sleep(Duration::from_millis(200));
            }
            v
        });
        let load = paced_sets(
            &addr(pa),
            &Paced {
                rate,
                secs,
                conns: PACED_CONNS,
                prefix: format!("r{rate}"),
                value_len: 100,
            },
        )
        .expect("the paced load failed");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (load, mon.join().expect("the lag monitor panicked"))
    });
    let load_avg = loadavg();
    let ended = Instant::now();
    // Caught up: server 1 has nothing unacknowledged (polled every 5 ms).
    while field(&peers(pa)[0], "lag_batches") != 0 && ended.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let catch_up_ms = ended.elapsed().as_millis() as u64;
    let mut digests_equal = false;
    while ended.elapsed() < Duration::from_secs(60) {
        if digest(pa) == digest(pb) {
            digests_equal = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = peers(pa).into_iter().next().unwrap_or_default();
    let row = peers(pb)
        .into_iter()
        .find(|r| r.get("node").is_some_and(|n| n == "1"))
        .expect("server 2 has a row for node 1");
    let third = lag_samples.len() / 3;
    let max_of = |s: &[u64]| s.iter().copied().max().unwrap_or(0);
    let get = |k: &str| row.get(k).cloned().unwrap_or_default();
    drop((a, b));
    Step {
        rate,
        load,
        p50: get("lag_p50_ms"),
        p99: get("lag_p99_ms"),
        max: get("lag_max_ms"),
        samples: field(&row, "lag_samples"),
        lag_batches_first: max_of(&lag_samples[..third]),
        lag_batches_last: max_of(&lag_samples[lag_samples.len() - third..]),
        catch_up_ms,
        digests_equal,
        load_avg,
        frames_sent: field(&out, "frames_sent"),
        batches_sent: field(&out, "batches_sent"),
    }
}

/// Which peer server 1 has in a SET-cost run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    Alone,
    Sink,
    Real,
}

impl PeerKind {
    fn name(self) -> &'static str {
        match self {
            PeerKind::Alone => "alone",
            PeerKind::Sink => "peer acks without applying",
            PeerKind::Real => "real applying peer",
        }
    }
}

/// One unpaced run of server 1 with `kind` of peer; returns SETs/s and the load average.
fn set_run(setup: &Setup, sync: &str, kind: PeerKind, round: u64) -> (f64, String) {
    let tag = format!("cost-{}-{round}-{}", sync.replace(':', ""), kind as u8);
    let u = Unpaced {
        conns: 50,
        pipeline: 16,
        secs: env_u64("DUPLEX_SECS", 5) as f64,
        keyspace: 100_000,
        value_len: 100,
    };
    let run = |port: u16| {
        let r = unpaced_sets(&addr(port), &u).expect("the unpaced load failed");
        assert_eq!(r.bad, 0, "non-OK replies: {:?}", r.first_bad);
        (r.rate(), loadavg())
    };
    match kind {
        PeerKind::Alone => {
            let d = setup.server(&tag, 1, free_port(), sync, &[]);
            run(d.port)
        }
        PeerKind::Sink => {
            let sink = PeerSink::start(SECRET.to_vec(), 9, 1).expect("starting the peer sink");
            let d = setup.server(&tag, 1, free_port(), sync, &[sink.addr().to_owned()]);
            wait_link_up(d.port, false);
            let out = run(d.port);
            assert!(sink.batches_acked() > 0, "the sink acknowledged nothing");
            out
        }
        PeerKind::Real => {
            let (a, _b) = setup.pair(&tag, sync);
            run(a.port)
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// SET throughput alone, with a sink peer and with a real peer; medians and ratios.
fn set_cost(setup: &Setup, sync: &str, summary: &mut String) {
    let rounds = env_u64("DUPLEX_ROUNDS", 3).max(1);
    let kinds = [PeerKind::Alone, PeerKind::Sink, PeerKind::Real];
    let mut rates = vec![Vec::new(); kinds.len()];
    let mut loads = vec![Vec::new(); kinds.len()];
    for round in 0..rounds {
        for (i, &k) in kinds.iter().enumerate() {
            let (r, l) = set_run(setup, sync, k, round);
            println!(
                "sync {sync} round {round} {:<28} {r:>10.0} SET/s  load {l}",
                k.name()
            );
            rates[i].push(r);
            loads[i].push(l);
        }
    }
    let _ = writeln!(
        summary,
        "\n== SET cost, --sync {sync}: unpaced, 50 connections, pipeline 16, 100 B values, {rounds} rounds, medians =="
    );
    let base = median(&mut rates[0].clone());
    for (i, k) in kinds.iter().enumerate() {
        let m = median(&mut rates[i].clone());
        let _ = writeln!(
            summary,
            "{:<28} {m:>10.0} SET/s  {:.2}x alone  (rounds: {}; load: {})",
            k.name(),
            m / base,
            rates[i]
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            loads[i].join(" | ")
        );
    }
    let sink = median(&mut rates[1].clone()) / base;
    let _ = writeln!(
        summary,
        "  target: peer that acks without applying >= 0.9x alone: {:.2}x {}",
        sink,
        if sink >= 0.9 { "met" } else { "MISSED" }
    );
}
