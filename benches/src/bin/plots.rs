//! SVG plots of the benchmark figures, under `docs/plots/` (issue 13), with `plotters`.
//!
//! ```text
//! # (a) measure commits/s against writer threads, beside the disk's raw fsync rate
//! cargo run --release -p duplex-benches --bin plots -- commits
//! # draw every plot whose CSV is present
//! cargo run --release -p duplex-benches --bin plots -- render
//! ```
//!
//! `commits` runs `duplex-wal` with `SyncPolicy::Always` (100-byte records, default options)
//! on 1, 2, 4, 8, 16, 32 and 64 threads, and, before each, the raw loop of one writer
//! (`pwrite` of 100 bytes + `fdatasync` on a `fallocate`d file: the disk's fsync rate, the
//! same as `wal_compare`'s `raw/fallocate/100B`), `DUPLEX_PLOT_SECS` (default 1) seconds a
//! slice, `DUPLEX_PLOT_ROUNDS` (default 3) interleaved rounds; prints each slice with the
//! load average and writes the medians to `docs/plots/commits.csv`
//! (`threads,duplex_commits_s,raw_fsync_s,load1`).
//!
//! `render` reads the CSVs in `docs/plots/` (`DUPLEX_PLOTS_DIR` to change) and writes:
//! - `commits.svg` from `commits.csv` (above);
//! - `repl_lag.svg` from `repl_lag.csv` (`DUPLEX_LAG_CSV=docs/plots/repl_lag.csv
//!   repl_bench`);
//! - `restore.svg` from `restore.csv` and `backup_latency.svg` from `backup_latency.csv`
//!   (100 ms windows); `rebuild_latency.svg` from `rebuild_latency.csv`
//!   (`DUPLEX_CSV_DIR=docs/plots rebuild_latency`)
//!   (`DUPLEX_CSV_DIR=docs/plots patent_compare`).
//!
//! Each title names the machine and the date (`DUPLEX_PLOT_DATE`, default today, UTC).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duplex_benches::{run_for, thread_payloads, DuplexLog, RawLoop, RawMode};
use duplex_wal::SyncPolicy;
use plotters::prelude::*;

/// The machine every figure here was measured on.
const MACHINE: &str = "2 vCPU / 24 GiB Firecracker VM, ext4 on virtio";
const THREADS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];
const SIZE: (u32, u32) = (860, 520);

type Res = Result<(), Box<dyn std::error::Error>>;
/// Rows of a CSV, each split on commas.
type Rows = Vec<Vec<String>>;
/// Draws one plot from its rows into the SVG file.
type Draw = fn(&Path, Rows) -> Res;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn plots_dir() -> PathBuf {
    std::env::var_os("DUPLEX_PLOTS_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/plots"),
        PathBuf::from,
    )
}

/// Today (UTC) as YYYY-MM-DD, or `$DUPLEX_PLOT_DATE`.
fn date() -> String {
    if let Ok(d) = std::env::var("DUPLEX_PLOT_DATE") {
        return d;
    }
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn title(what: &str) -> String {
    format!("{what} ({MACHINE}, {})", date())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("commits") => measure_commits(),
        Some("render") => render().expect("rendering the plots"),
        _ => {
            eprintln!("usage: plots commits | plots render   (see the doc comment)");
            std::process::exit(2);
        }
    }
}

/// (a): interleaved slices of the raw fsync loop and `Always` on N threads.
fn measure_commits() {
    let slice = Duration::from_secs_f64(env_f64("DUPLEX_PLOT_SECS", 1.0));
    let rounds = env_f64("DUPLEX_PLOT_ROUNDS", 3.0) as usize;
    let mut raw = vec![Vec::new(); THREADS.len()];
    let mut dup = vec![Vec::new(); THREADS.len()];
    let mut loads = vec![String::new(); THREADS.len()];
    let mut rl = RawLoop::new(RawMode::Fallocated, 100).expect("raw fsync loop");
    for round in 0..rounds {
        for (i, &t) in THREADS.iter().enumerate() {
            let start = std::time::Instant::now();
            let mut n = 0u64;
            while start.elapsed() < slice {
                rl.commit().expect("raw pwrite + fdatasync");
                n += 1;
            }
            let r = n as f64 / start.elapsed().as_secs_f64();
            let log = DuplexLog::open("plots-always", SyncPolicy::Always);
            let payloads = thread_payloads(t, 100);
            let (ops, took) = run_for(t, slice, |th, _| log.append(&payloads[th]));
            drop(log);
            let d = ops as f64 / took.as_secs_f64();
            loads[i] = load1();
            println!(
                "round {round} threads {t:>2}: raw fsync {r:>8.0}/s, duplex Always {d:>8.0} commits/s ({:.2}x raw) | load {}",
                d / r,
                loads[i]
            );
            raw[i].push(r);
            dup[i].push(d);
        }
    }
    let mut csv = String::from("threads,duplex_commits_s,raw_fsync_s,load1\n");
    for (i, &t) in THREADS.iter().enumerate() {
        let (d, r) = (median(&mut dup[i]), median(&mut raw[i]));
        println!("median threads {t:>2}: duplex {d:.0}/s, raw fsync {r:.0}/s");
        csv.push_str(&format!("{t},{d:.0},{r:.0},{}\n", loads[i]));
    }
    let path = plots_dir().join("commits.csv");
    std::fs::write(&path, csv).expect("writing commits.csv");
    println!("wrote {}", path.display());
}

/// Rows of a CSV (header skipped), each split on commas; `None` when the file is absent.
fn read_csv(name: &str) -> Option<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(plots_dir().join(name)).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split(',').map(|s| s.trim().to_owned()).collect())
            .collect(),
    )
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

fn render() -> Res {
    let dir = plots_dir();
    let jobs: [(&str, Draw); 5] = [
        ("commits", plot_commits),
        ("repl_lag", plot_lag),
        ("restore", plot_restore),
        ("backup_latency", plot_backup_latency),
        ("rebuild_latency", plot_rebuild_latency),
    ];
    for (name, f) in jobs {
        match read_csv(&format!("{name}.csv")) {
            Some(rows) if !rows.is_empty() => {
                let out = dir.join(format!("{name}.svg"));
                f(&out, rows)?;
                println!("wrote {}", out.display());
            }
            _ => println!("{name}.csv absent or empty: {name}.svg not drawn"),
        }
    }
    Ok(())
}

fn legend_line(c: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
}

fn plot_commits(out: &Path, rows: Vec<Vec<String>>) -> Res {
    let pts: Vec<(f64, f64, f64)> = rows
        .iter()
        .map(|r| (num(&r[0]), num(&r[1]), num(&r[2])))
        .collect();
    let ymax = pts.iter().map(|p| p.1.max(p.2)).fold(1.0, f64::max) * 1.5;
    let ymin = pts.iter().map(|p| p.1.min(p.2)).fold(f64::MAX, f64::min) * 0.5;
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut ch = ChartBuilder::on(&root)
        .caption(
            title("Durable commits/s vs writer threads"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0f64..64.0).log_scale(), (ymin..ymax).log_scale())?;
    ch.configure_mesh()
        .x_desc("writer threads (100 B records, SyncPolicy::Always)")
        .y_desc("commits/s")
        .light_line_style(WHITE)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let d: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
    ch.draw_series(LineSeries::new(d.clone(), BLUE.stroke_width(2)))?
        .label("duplex-wal, Always: commits/s")
        .legend(legend_line(BLUE));
    ch.draw_series(d.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    let r: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2)).collect();
    ch.draw_series(LineSeries::new(r, RED.stroke_width(2)))?
        .label("disk's fsync limit: raw pwrite 100 B + fdatasync, 1 writer, just before each point")
        .legend(legend_line(RED));
    ch.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_lag(out: &Path, rows: Vec<Vec<String>>) -> Res {
    let xmax = rows.iter().map(|r| num(&r[1])).fold(1.0, f64::max) * 1.1;
    let ymax = rows.iter().map(|r| num(&r[5])).fold(1.0, f64::max) * 8.0; // room above the data for the legend
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut ch = ChartBuilder::on(&root)
        .caption(title("Replication lag vs write rate"), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, (0.5f64..ymax).log_scale())?;
    ch.configure_mesh()
        .x_desc("paced SETs/s on server 1 (100 B values, 8 connections)")
        .y_desc("lag, commit on 1 to durable on 2 (ms)")
        .light_line_style(WHITE)
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    let syncs: Vec<String> = rows.iter().fold(Vec::new(), |mut v, r| {
        if !v.contains(&r[0]) {
            v.push(r[0].clone());
        }
        v
    });
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (si, sync) in syncs.iter().enumerate() {
        for (col, what, dashed) in [(4usize, "p99", false), (3, "p50", true)] {
            let c = colors[(si * 2 + usize::from(dashed)) % colors.len()];
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| &r[0] == sync)
                .map(|r| (num(&r[1]), num(&r[col]).max(0.5)))
                .collect();
            ch.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(format!("--sync {sync}: lag {what}"))
                .legend(legend_line(c));
            ch.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
    }
    ch.draw_series(LineSeries::new(
        vec![(0.0, 10.0), (xmax, 10.0)],
        BLACK.mix(0.5),
    ))?
    .label("target: p99 10 ms at 10k/s")
    .legend(legend_line(BLACK));
    ch.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_restore(out: &Path, rows: Vec<Vec<String>>) -> Res {
    // archive_mib, median s, fastest s, slowest s
    let pts: Vec<(f64, f64, f64, f64)> = rows
        .iter()
        .map(|r| {
            let m = num(&r[1]);
            let at = |i: usize| r.get(i).map_or(m, |v| num(v));
            (num(&r[0]), m, at(2), at(3))
        })
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let ymax = pts.iter().map(|p| p.3).fold(0.1, f64::max) * 1.3;
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut ch = ChartBuilder::on(&root)
        .caption(
            title("Restore + roll-forward time vs archive size"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-5.0..xmax, 0.0..ymax)?;
    ch.configure_mesh()
        .x_desc("archived writes after the backup (MiB of 1 KiB values)")
        .y_desc("duplex-recover restore, wall time (s)")
        .light_line_style(WHITE)
        .draw()?;
    let med: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
    ch.draw_series(LineSeries::new(med.clone(), BLUE.stroke_width(2)))?
        .label("1 GiB backup + archive rolled forward: median of the rounds")
        .legend(legend_line(BLUE));
    ch.draw_series(med.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    ch.draw_series(
        pts.iter()
            .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], BLACK.stroke_width(1))),
    )?
    .label("fastest to slowest round (the disk's fast and slow modes)")
    .legend(legend_line(BLACK));
    ch.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_backup_latency(out: &Path, rows: Rows) -> Res {
    plot_latency(
        out,
        &rows,
        "SET/GET latency during DUPLEX.BACKUP",
        "DUPLEX.BACKUP running (the server's adaptive pace)",
    )
}

fn plot_rebuild_latency(out: &Path, rows: Rows) -> Res {
    plot_latency(
        out,
        &rows,
        "SET/GET latency on a server while a peer rebuilds from it",
        "peer rebuilding: backup, stream, restore, catch-up, write hold",
    )
}

/// Latency in 100 ms windows with the phase-1 span shaded.
fn plot_latency(out: &Path, rows: &Rows, what: &str, shaded: &str) -> Res {
    // t_ms, set_p50_us, set_max_us, get_p50_us, get_max_us, phase (100 ms windows)
    let pts: Vec<(f64, [f64; 4], u8)> = rows
        .iter()
        .map(|r| {
            let ms = |i: usize| (num(&r[i]) / 1000.0).max(0.01);
            (
                num(&r[0]) / 1000.0,
                [ms(1), ms(2), ms(3), ms(4)],
                r[5].parse().unwrap_or(0),
            )
        })
        .collect();
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let ymax = pts.iter().map(|p| p.1[1].max(p.1[3])).fold(1.0, f64::max) * 20.0; // room above the data for the legend
    let during: Vec<f64> = pts.iter().filter(|p| p.2 == 1).map(|p| p.0).collect();
    let root = SVGBackend::new(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut ch = ChartBuilder::on(&root)
        .caption(title(what), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, (0.01f64..ymax).log_scale())?;
    ch.configure_mesh()
        .x_desc("time (s), 100 ms windows; shaded: see the legend")
        .y_desc("latency (ms)")
        .light_line_style(WHITE)
        .draw()?;
    if let (Some(&a), Some(&b)) = (during.first(), during.last()) {
        ch.draw_series(std::iter::once(Rectangle::new(
            [(a, 0.01), (b, ymax)],
            YELLOW.mix(0.25).filled(),
        )))?
        .label(shaded)
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], YELLOW.mix(0.5).filled()));
    }
    let series = [
        (1usize, "SET 1 KiB (durable), max per window", RED),
        (0, "SET, median per window", BLUE),
        (3, "GET, max per window", MAGENTA),
        (2, "GET, median per window", GREEN),
    ];
    for (col, label, c) in series {
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1[col])).collect();
        ch.draw_series(LineSeries::new(line, c.stroke_width(1)))?
            .label(label)
            .legend(legend_line(c));
    }
    ch.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
