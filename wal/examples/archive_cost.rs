//! What following the log with the archive costs: durable appends (`SyncPolicy::Always`,
//! group commit) from several threads with no archive, with the archive following at the
//! default lag (1000 ms) and with a synchronous archive (lag 0), in the same run, rounds
//! interleaved so that the disk's drift hits every configuration alike. Prints the median
//! rate of each, its ratio to no archive, and the archive lag (p50, p99, max) sampled every
//! 10 ms while the lagged archive follows.
//!
//! Run: `cargo run --release -p duplex-wal --example archive_cost [DIR] [ROUNDS] [SECS]
//! [ARCHIVE_DIR]` (defaults: a directory under the system temp dir, 5 rounds of 3 s per
//! configuration, the archive in `DIR/archive`, on the same disk as the log; a real archive
//! belongs on another disk, where it costs the log less).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_wal::{SyncPolicy, Wal, WalOptions};

const THREADS: usize = 8;

#[derive(Clone, Copy, Debug)]
enum Mode {
    NoArchive,
    Lag(u64),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::NoArchive => "no archive".into(),
            Mode::Lag(ms) => format!("archive, lag {ms} ms"),
        }
    }
}

/// One round: appends for `secs` seconds; returns appends per second and the lag samples.
fn round(
    dir: &Path,
    archive: &Path,
    mode: Mode,
    secs: f64,
) -> Result<(f64, Vec<u64>), Box<dyn std::error::Error>> {
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(archive);
    let opts = WalOptions {
        sync: SyncPolicy::Always,
        archive_dir: match mode {
            Mode::NoArchive => None,
            Mode::Lag(_) => Some(archive.to_path_buf()),
        },
        archive_lag_ms: match mode {
            Mode::NoArchive => 1000,
            Mode::Lag(ms) => ms,
        },
        ..WalOptions::default()
    };
    let wal = Arc::new(Wal::open(dir.join("wal"), opts)?);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (wal, stop, count) = (wal.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || -> duplex_wal::Result<()> {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("writer {t:02} record {i:08} {}", "x".repeat(64));
                    wal.append(1, body.as_bytes())?;
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    let mut lags = Vec::new();
    while t0.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(10));
        if let Mode::Lag(_) = mode {
            lags.push(wal.archive_status().lag_ms);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().map_err(|_| "writer panicked")??;
    }
    let rate = count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
    if let Some(e) = wal.archive_status().last_error {
        return Err(format!("the archive failed: {e}").into());
    }
    Arc::try_unwrap(wal)
        .map_err(|_| "wal still shared")?
        .close()?;
    Ok((rate, lags))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("duplex-archive-cost-{}", std::process::id()))
    });
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3.0);
    let archive_base = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| base.clone());
    let modes = [Mode::NoArchive, Mode::Lag(1000), Mode::Lag(0)];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut lags = Vec::new();
    for r in 0..rounds {
        // Rotate the order each round.
        for k in 0..modes.len() {
            let m = (k + r) % modes.len();
            let (rate, l) = round(
                &base.join(format!("m{m}")),
                &archive_base.join(format!("archive-m{m}")),
                modes[m],
                secs,
            )?;
            rates[m].push(rate);
            if let Mode::Lag(1000) = modes[m] {
                lags.extend(l);
            }
            println!("round {r} {:<22} {rate:>9.0} appends/s", modes[m].name());
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    for m in 0..modes.len() {
        let _ = std::fs::remove_dir_all(archive_base.join(format!("archive-m{m}")));
    }
    let base_rate = median(&mut rates[0].clone());
    println!(
        "\n{THREADS} writer threads, SyncPolicy::Always, {rounds} rounds of {secs} s, medians:"
    );
    for (m, mode) in modes.iter().enumerate() {
        let med = median(&mut rates[m]);
        println!(
            "  {:<22} {med:>9.0} appends/s  ratio {:.3}",
            mode.name(),
            med / base_rate
        );
    }
    println!(
        "  archive lag at lag 1000 (sampled every 10 ms): p50 {} ms, p99 {} ms, max {} ms",
        percentile(&mut lags, 0.5),
        percentile(&mut lags, 0.99),
        lags.iter().max().copied().unwrap_or(0)
    );
    Ok(())
}
