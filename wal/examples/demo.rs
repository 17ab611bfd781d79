//! The Duplex WAL on embedded defaults: a few threads append durably (group commit),
//! the log is closed and reopened (recovery), read back and checked, and a closed segment
//! is archived. Prints what it did and how fast.
//!
//! Run: `cargo run --release -p duplex-wal --example demo [DIR]` (default `./duplex-demo-wal`).

use std::sync::Arc;
use std::time::Instant;

use duplex_wal::{SyncPolicy, Wal, WalOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "duplex-demo-wal".to_string());
    let dir = std::path::PathBuf::from(dir);
    let opts = WalOptions {
        sync: SyncPolicy::Always,
        archive_dir: Some(dir.join("archive")),
        ..WalOptions::default()
    };
    let wal = Arc::new(Wal::open(dir.join("wal"), opts.clone())?);
    let rep = wal.recovery_report();
    println!(
        "opened {} : {} segment(s), LSNs {}..={}, tail cut: {}",
        dir.join("wal").display(),
        rep.segments,
        rep.first_lsn,
        rep.last_lsn,
        rep.truncated
            .as_ref()
            .map(|t| format!("{} bytes at {}:{}", t.bytes, t.file.display(), t.offset))
            .unwrap_or_else(|| "none".into())
    );
    let start_lsn = wal.last_lsn();
    let threads = 16u64;
    let per_thread = 500u64;
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || -> duplex_wal::Result<()> {
                for i in 0..per_thread {
                    let body = format!("machine {t:02} lot {i:05} film-roll ok");
                    wal.append(1, body.as_bytes())?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "writer thread panicked")??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = threads * per_thread;
    println!(
        "{n} durable appends from {threads} threads in {secs:.2} s: {:.0} commits/s (sync policy Always, one fsync per group)",
        n as f64 / secs
    );
    wal.rotate()?;
    let archived = wal.archive_closed()?;
    println!(
        "archived {archived} closed segment(s) to {}",
        dir.join("archive").display()
    );
    let wal = Arc::try_unwrap(wal).map_err(|_| "log still shared")?;
    wal.close()?;

    let wal = Wal::open(dir.join("wal"), opts)?;
    let t0 = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0u64;
    for r in wal.read_from(start_lsn + 1)? {
        let r = r?;
        if !r.payload.starts_with(b"machine ") {
            return Err(format!("record {} holds unexpected bytes", r.lsn).into());
        }
        count += 1;
        bytes += r.payload.len() as u64;
    }
    if count != n {
        return Err(format!("read back {count} records, expected {n}").into());
    }
    println!(
        "reopened and read back all {count} records ({bytes} payload bytes) in {:.3} s; last LSN {}",
        t0.elapsed().as_secs_f64(),
        wal.last_lsn()
    );
    wal.close()?;
    Ok(())
}
