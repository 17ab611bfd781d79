//! A quick end-to-end probe of the engine on the real file system: bulk load, checkpoint,
//! random gets, a full scan, and reopen times (clean and with WAL to replay).
//!
//! Run: `cargo run --release -p duplex-engine --example probe [KEYS] [DIR]`.

use std::ops::Bound;
use std::time::Instant;

use duplex_engine::{Config, Database, SyncPolicy, WriteBatch};

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "duplex-probe-db".into());
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = Config {
        sync: SyncPolicy::Always,
        ..Config::default()
    };
    let value = [0x5Au8; 100];
    let db = Database::open(&dir, cfg.clone())?;
    let t = Instant::now();
    for chunk in 0..n / 1000 {
        let mut b = WriteBatch::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            b.put(key(i), value);
        }
        db.write(b)?;
    }
    let load = t.elapsed().as_secs_f64();
    println!(
        "load {n} keys in batches of 1000: {load:.2} s ({:.0} keys/s)",
        n as f64 / load
    );
    let t = Instant::now();
    db.checkpoint()?;
    println!(
        "checkpoint: {:.2} s, stats {:?}",
        t.elapsed().as_secs_f64(),
        db.stats()
    );
    let t = Instant::now();
    let mut x = 12345u64;
    let gets = 1_000_000u64;
    for _ in 0..gets {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = db.get(&key(x % n))?;
        if v.is_none() {
            return Err("missing key".into());
        }
    }
    let g = t.elapsed().as_secs_f64();
    println!(
        "{gets} random gets: {g:.2} s ({:.0} gets/s)",
        gets as f64 / g
    );
    let t = Instant::now();
    let count = db.scan(Bound::Unbounded, Bound::Unbounded)?.count();
    let s = t.elapsed().as_secs_f64();
    println!(
        "full scan of {count}: {s:.2} s ({:.0} keys/s)",
        count as f64 / s
    );
    let t = Instant::now();
    let mut b = 0;
    for i in 0..20_000u64 {
        db.put(&key(n + i), &value)?;
        b += 1;
    }
    println!(
        "{b} single durable puts: {:.0} puts/s",
        b as f64 / t.elapsed().as_secs_f64()
    );
    db.close()?;
    let t = Instant::now();
    let db = Database::open(&dir, cfg.clone())?;
    println!("open after clean close: {:.3} s", t.elapsed().as_secs_f64());
    // 64 MiB of WAL to replay: ~500k puts of 116-byte payloads, then drop without close.
    let mut k = 0;
    while db.stats().wal_bytes_since_checkpoint < 60 << 20 && k < 2_000_000 {
        let mut b = WriteBatch::new();
        for _ in 0..1000 {
            b.put(key(k), value);
            k += 1;
        }
        db.write(b)?;
    }
    let wal_bytes = db.stats().wal_bytes_since_checkpoint;
    drop(db);
    {
        // How much of a replay is reading the log: read it alone.
        let t = Instant::now();
        let wal = duplex_wal::Wal::open(
            std::path::Path::new(&dir).join("wal"),
            duplex_wal::WalOptions {
                max_record_size: 64 << 20,
                ..Default::default()
            },
        )?;
        let t_open = t.elapsed().as_secs_f64();
        let mut recs = 0u64;
        for r in wal.read_from(wal.segments()[0].first_lsn)? {
            r?;
            recs += 1;
        }
        println!(
            "  WAL alone: open {t_open:.3} s, open+read {recs} records {:.3} s",
            t.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let db = Database::open(&dir, cfg)?;
    println!(
        "open with {:.1} MiB of WAL to replay: {:.3} s",
        wal_bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
