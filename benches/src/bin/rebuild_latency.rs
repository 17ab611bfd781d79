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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
        ready: running,
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
    let a = server(&bin, root.path().join("a"), pa, 1, &link(pc));
    let mib: u64 = std::env::var("DUPLEX_REBUILD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    load(pa, mib << 10);
    println!(
        "A loaded with {mib} MiB of 1 KiB values | load {}",
        loadavg()
    );
    let (phase, stop, start) = (AtomicU8::new(0), AtomicBool::new(false), Instant::now());
    let (samples, took) = std::thread::scope(|s| {
        let h = s.spawn(|| probe(pa, start, &phase, &stop));
        std::thread::sleep(Duration::from_secs(2));
        phase.store(1, Ordering::Relaxed);
        let t = Instant::now();
        let mut extra = link(pa);
        extra.extend(["--rebuild-from".into(), addr(pa)]);
        let c = server(&bin, root.path().join("c"), pc, 2, &extra);
        let took = t.elapsed().as_secs_f64();
        phase.store(2, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        drop(c);
        (h.join().expect("probe panicked"), took)
    });
    println!(
        "C rebuilt from A and running after {took:.2} s | load {}",
        loadavg()
    );
    for l in a
        .log()
        .lines()
        .filter(|l| l.contains("write_hold") || l.contains("rebuild_serve"))
    {
        println!("A's log: {l}");
    }
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
