//! Client switch time after a server dies (issue 12, "Speed"): how long a `duplex-client`
//! that writes on its default server A takes to have a write acknowledged by its backup
//! server B once A is gone, the state poll interval included.
//!
//! ```text
//! cargo build --release -p duplex-server
//! DUPLEX_SWITCH_ROUNDS=20 cargo run --release -p duplex-benches --bin switch_time
//! ```
//! Two replicating servers A and B (`target/release/duplexd` or `$DUPLEXD_BIN`, `--sync
//! always`). Each round a new client (`ClientConfig::new([A, B])`, poll interval
//! `DUPLEX_SWITCH_POLL_MS`, default 1000, the client's default; session tokens on) writes a
//! SET every `DUPLEX_SWITCH_GAP_MS` (default 5) ms on A; after 0.5 s plus a random part of
//! the poll interval (so the loss falls anywhere in it) A is lost, in two ways:
//! - `kill9`: `kill -9` (the process dies, its sockets are reset);
//! - `term`: SIGTERM (a clean stop: state `stopping`, read by the client's poll, then the
//!   connections close).
//!
//! The switch time is from the signal to the first write acknowledged by B. A is started
//! again before the next round. Prints each round and p50 / p90 / p99 / max per way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duplex_benches::resp_load::Client as RawClient;
use duplex_client::{Client, ClientConfig};
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

/// `DUPLEX.STATE` says `running`.
fn running(port: u16) -> bool {
    RawClient::connect(&addr(port))
        .and_then(|mut c| c.call(&["DUPLEX.STATE"]))
        .is_ok_and(|r| match r {
            Reply::Array(items) => items
                .get(1)
                .is_some_and(|v| *v == Reply::Bulk(b"running".to_vec())),
            _ => false,
        })
}

fn server(bin: &Path, root: PathBuf, port: u16, node: u64, peer: u16, secret: &str) -> Daemon {
    let args = [
        "--node-id",
        &node.to_string(),
        "--backup-interval",
        "0",
        "--cluster-secret-file",
        secret,
        "--peer",
        &addr(peer),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    Daemon::launch(Spec {
        bin: bin.to_path_buf(),
        root,
        port,
        args,
        ready: running,
    })
}

/// A pseudo-random number below `n` (from the clock; enough to spread the loss over the
/// poll interval).
fn jitter(n: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (t.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17) % n.max(1)
}

/// One round: returns the switch time in ms (None if B acknowledged nothing within 10 s).
fn round(a: &mut Daemon, pb: u16, how: &str, poll: Duration, gap: Duration) -> Option<f64> {
    let cfg = ClientConfig::new([addr(a.port), addr(pb)]).poll_interval(poll);
    let mut client = Client::connect(cfg).expect("the client connects to A");
    let stop = AtomicBool::new(false);
    let acks: Mutex<Vec<(Instant, usize)>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());
    let lost_at = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("switch:{i}");
                match client.set(k.as_bytes(), b"v") {
                    Ok(()) => {
                        let at = client.current_index().unwrap_or(usize::MAX);
                        acks.lock().expect("acks").push((Instant::now(), at));
                    }
                    Err(e) => errors
                        .lock()
                        .expect("errors")
                        .push((Instant::now(), e.to_string())),
                }
                i += 1;
                std::thread::sleep(gap);
            }
        });
        std::thread::sleep(Duration::from_millis(500 + jitter(poll.as_millis() as u64)));
        let lost_at = Instant::now();
        match how {
            "kill9" => a.kill9(),
            _ => a.signal(libc::SIGTERM),
        }
        let deadline = lost_at + Duration::from_secs(10);
        while Instant::now() < deadline
            && !acks
                .lock()
                .expect("acks")
                .iter()
                .any(|(t, i)| *t > lost_at && *i == 1)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        lost_at
    });
    if how != "kill9" {
        let st = a.wait(30);
        assert!(st.success(), "A's clean stop: {st}");
    }
    a.restart();
    let acks = acks.into_inner().expect("acks");
    let errors = errors.into_inner().expect("errors");
    let after: Vec<&(Instant, String)> = errors.iter().filter(|(t, _)| *t > lost_at).collect();
    if let (Some(first), Some(last)) = (after.first(), after.last()) {
        println!(
            "  {} errors after the loss; first at {:.1} ms: {}; last at {:.1} ms: {}",
            after.len(),
            first.0.duration_since(lost_at).as_secs_f64() * 1e3,
            first.1,
            last.0.duration_since(lost_at).as_secs_f64() * 1e3,
            last.1
        );
    }
    acks.iter()
        .find(|(t, i)| *t > lost_at && *i == 1)
        .map(|(t, _)| t.duration_since(lost_at).as_secs_f64() * 1e3)
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
    let rounds = env_u64("DUPLEX_SWITCH_ROUNDS", 20);
    let poll = Duration::from_millis(env_u64("DUPLEX_SWITCH_POLL_MS", 1000));
    let gap = Duration::from_millis(env_u64("DUPLEX_SWITCH_GAP_MS", 5));
    let root = duplex_benches::temp_dir("switch-time");
    let secret = root.path().join("secret");
    std::fs::write(&secret, b"switch-time-secret").expect("writing the secret file");
    let secret = secret.display().to_string();
    let (pa, pb) = (free_port(), free_port());
    let mut a = server(&bin, root.path().join("a"), pa, 1, pb, &secret);
    let _b = server(&bin, root.path().join("b"), pb, 2, pa, &secret);
    println!(
        "switch_time: {rounds} rounds per way, poll interval {} ms, a write every {} ms | load {}",
        poll.as_millis(),
        gap.as_millis(),
        loadavg()
    );
    for how in ["kill9", "term"] {
        let mut got = Vec::new();
        let mut missed = 0;
        for r in 0..rounds {
            match round(&mut a, pb, how, poll, gap) {
                Some(ms) => {
                    println!("{how} round {:>2}: {ms:.1} ms", r + 1);
                    got.push(ms);
                }
                None => {
                    println!(
                        "{how} round {:>2}: no write acknowledged by B within 10 s",
                        r + 1
                    );
                    missed += 1;
                }
            }
        }
        got.sort_by(f64::total_cmp);
        let q = |p: f64| {
            got.get(((got.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "{how}: {} rounds, switch p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms; {missed} without a switch | load {}",
            got.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0),
            loadavg()
        );
    }
}
