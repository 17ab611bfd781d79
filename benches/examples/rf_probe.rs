//! Roll-forward probe for profiling: builds a source once (a 1M-key backup plus 2M random
//! SETs in the archive, as `backup_compare`'s `rf` workload does), keeps it, then times
//! `restore_chain` + `roll_forward` on it as often as asked, so `perf record` sees only the
//! restore.
//!
//! `cargo run --release -p duplex-benches --example rf_probe -- DIR [ROUNDS]`
//! (`DUPLEX_RF_BASE_KEYS`, `DUPLEX_RF_RECORDS` size the source the first time).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use duplex_benches::kv::{load_sorted, write_records};
use duplex_engine::{
    restore_chain, roll_forward, Config, Database, RollForwardOptions, SyncPolicy, Target,
};
use duplex_wal::{StdStorage, Storage};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn build(dir: &Path) {
    let base = env_u64("DUPLEX_RF_BASE_KEYS", 1_000_000);
    let n = env_u64("DUPLEX_RF_RECORDS", 2_000_000);
    let data = dir.join("data");
    let archive = dir.join("archive");
    std::fs::create_dir_all(&archive).expect("archive dir");
    let cfg = |archive: Option<PathBuf>| Config {
        sync: SyncPolicy::Never,
        checkpoint_interval: None,
        archive_dir: archive,
        ..Config::default()
    };
    let db = Database::open(&data, cfg(None)).expect("open");
    load_sorted(&db, base);
    db.close().expect("close");
    let db = Database::open(&data, cfg(Some(archive.clone()))).expect("reopen");
    db.backup(&dir.join("backup"), None).expect("backup");
    write_records(&db, base, base + n);
    db.wal().rotate().expect("rotate");
    db.wal().archive_closed().expect("archive");
    db.close().expect("close");
    std::fs::write(dir.join("READY"), b"").expect("marker");
}

/// User + system CPU seconds of this process so far (all threads), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the
    // 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: rf_probe DIR [ROUNDS]"));
    let rounds: u64 = args.next().and_then(|r| r.parse().ok()).unwrap_or(1);
    if !dir.join("READY").exists() {
        let t = Instant::now();
        build(&dir);
        println!("built source in {:.1} s", t.elapsed().as_secs_f64());
    }
    let st: Arc<dyn Storage> = Arc::new(StdStorage);
    if std::env::var_os("RF_READ_ONLY").is_some() {
        // The reader alone: what the check pass costs before decoding anything.
        for _ in 0..rounds {
            let t = Instant::now();
            let r = duplex_wal::WalReader::open(
                st.clone(),
                &[dir.join("archive")],
                0,
                duplex_wal::ReadOptions::default(),
            )
            .expect("reader");
            let (mut n, mut b) = (0u64, 0u64);
            for rec in r {
                let rec = rec.expect("record");
                n += 1;
                b += rec.payload.len() as u64;
            }
            println!(
                "read {n} records, {b} payload bytes in {:.3} s",
                t.elapsed().as_secs_f64()
            );
        }
        return;
    }
    for _ in 0..rounds {
        let into = dir.join("restore");
        let _ = std::fs::remove_dir_all(&into);
        let t = Instant::now();
        restore_chain(&st, &[dir.join("backup")], &into).expect("restore_chain");
        let chain_s = t.elapsed().as_secs_f64();
        let opts = RollForwardOptions {
            target: Target::End,
            config: Config {
                background: false,
                ..Config::default()
            },
            ..RollForwardOptions::default()
        };
        let t = Instant::now();
        let cpu0 = cpu_seconds();
        let rep = roll_forward(
            st.clone(),
            &into,
            &[dir.join("archive")],
            &opts,
            &mut |_| {},
        )
        .expect("roll_forward");
        let s = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let x = rep.times;
        println!(
            "restore_chain {chain_s:.3} s; roll_forward {} records in {s:.3} s ({cpu:.2} s of CPU, all threads) = {:.2} M/s: check {:.3}, read {:.3}, sort {:.3}, merge {:.3}, finish {:.3}",
            rep.records,
            rep.records as f64 / s / 1e6,
            x.check, x.read, x.sort, x.merge, x.finish
        );
    }
}
