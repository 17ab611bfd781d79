//! The tables `wal_compare` prints: rates per workload, the ratios against the targets of
//! issue 2 with a verdict, and the replay rates.

use duplex_benches::{records_for, replay_log_bytes, LARGE, OKAYWAL_CHUNKS_PER_ENTRY, SMALL};

use super::{fmt_rate, median, phase_of, Results, Run, Sample, FAST_DISK};

/// The samples, with phase-1 rounds classified by the disk's state.
///
/// The disk of this kind of VM flips between a fast state (fdatasync ~0.1 ms) and a slow
/// one (~4 ms) every few seconds, whatever we run. Phase-1 rounds are classified by the raw
/// 100 B fallocate loop of the same round, and the fsync-bound figures and ratios are also
/// given for each state separately.
pub(super) struct Stats<'a> {
    results: &'a Results,
    /// Per phase-1 round: was the disk fast.
    fast: Vec<bool>,
}

impl<'a> Stats<'a> {
    pub(super) fn new(results: &'a Results) -> Self {
        let fast = results
            .get("raw/fallocate/100B")
            .map(|v| v.iter().map(|s| s.ops >= FAST_DISK).collect())
            .unwrap_or_default();
        Stats { results, fast }
    }

    /// The samples of `name`: all (`None`), or those of fast or slow phase-1 rounds.
    fn pick(&self, name: &str, sel: Option<bool>) -> Vec<Sample> {
        let Some(v) = self.results.get(name) else {
            return Vec::new();
        };
        match sel {
            None => v.clone(),
            Some(_) if phase_of(name) != 1 => Vec::new(),
            Some(want) => v
                .iter()
                .zip(&self.fast)
                .filter(|(_, &f)| f == want)
                .map(|(s, _)| *s)
                .collect(),
        }
    }

    fn med(&self, name: &str, sel: Option<bool>) -> Option<f64> {
        let v = self.pick(name, sel);
        (!v.is_empty()).then(|| median(v.iter().map(|s| s.ops).collect()))
    }

    fn med_bytes(&self, name: &str) -> Option<f64> {
        let v = self.pick(name, None);
        (!v.is_empty()).then(|| median(v.iter().map(|s| s.bytes).collect()))
    }

    /// Median of the per-round ratios num/den (both measured in the same round).
    fn ratio(&self, num: &str, den: &str, sel: Option<bool>) -> Option<f64> {
        let (a, b) = (self.pick(num, sel), self.pick(den, sel));
        let v: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x.ops / y.ops).collect();
        (!v.is_empty()).then(|| median(v))
    }

    /// One row of the ratio table; nothing if the ratio was not measured.
    fn row(&self, label: &str, num: &str, den: &str, target: &str, ok: &dyn Fn(f64) -> bool) {
        let all_r = self.ratio(num, den, None);
        if all_r.is_none() {
            return;
        }
        let f = self.ratio(num, den, Some(true));
        let sl = self.ratio(num, den, Some(false));
        let judge = |r: Option<f64>| match r {
            Some(r) if ok(r) => "met",
            Some(_) => "MISSED",
            None => "-",
        };
        let verdict = if target.is_empty() {
            "(info)".to_string()
        } else if phase_of(num) == 1 {
            format!(
                "{} on the fast disk, {} on the slow disk",
                judge(f),
                judge(sl)
            )
        } else {
            judge(all_r).to_string()
        };
        let c = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "| {label} | {target} | {} | {} | {} | {verdict} |",
            c(all_r),
            c(f),
            c(sl)
        );
    }
}

fn cell(v: Option<f64>) -> String {
    v.map(fmt_rate).unwrap_or_else(|| "-".into())
}

/// The table of rates, workload by workload.
pub(super) fn print_figures(stats: &Stats<'_>, names: &[(String, String)]) {
    println!("## Figures");
    println!();
    if !stats.fast.is_empty() {
        let n_fast = stats.fast.iter().filter(|&&f| f).count();
        let n_slow = stats.fast.len() - n_fast;
        println!(
            "Phase 1 had {n_fast} fast-disk round(s) and {n_slow} slow-disk round(s) (fast: the \
             raw 100 B fallocate loop made >= {FAST_DISK:.0} commits/s in that round)."
        );
        println!();
    }
    println!(
        "| workload | what | records/s, median of all rounds | min..max | fast-disk rounds \
         | slow-disk rounds | payload MB/s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (name, what) in names {
        let Some(v) = stats.results.get(name) else {
            continue;
        };
        let lo = v.iter().map(|s| s.ops).fold(f64::INFINITY, f64::min);
        let hi = v.iter().map(|s| s.ops).fold(0.0, f64::max);
        println!(
            "| `{name}` | {what} | {} | {}..{} | {} | {} | {:.1} |",
            cell(stats.med(name, None)),
            fmt_rate(lo),
            fmt_rate(hi),
            cell(stats.med(name, Some(true))),
            cell(stats.med(name, Some(false))),
            stats.med_bytes(name).unwrap_or(f64::NAN) / 1e6
        );
    }
    println!();
}

/// The ratios against the targets of issue 2.
pub(super) fn print_ratios(stats: &Stats<'_>) {
    println!("## Ratios against the targets of issue 2");
    println!();
    println!(
        "Each ratio is the median of per-round ratios (numerator and denominator measured in \
         the same round)."
    );
    println!();
    println!("| ratio | target | all rounds | fast-disk rounds | slow-disk rounds | verdict |");
    println!("|---|---|---:|---:|---:|---|");
    raw_ratio_rows(stats);
    thread_ratio_rows(stats);
    okaywal_ratio_rows(stats);
}

/// Duplex against the raw loops, and the raw loops against each other.
fn raw_ratio_rows(stats: &Stats<'_>) {
    let info = |_: f64| true;
    stats.row(
        "Duplex Always 1 thread / raw fallocate 100 B loop",
        "always/duplex/1",
        "raw/fallocate/100B",
        ">= 0.90",
        &|r| r >= 0.9,
    );
    for (label, num, den) in [
        (
            "Duplex Always 1 thread / raw zero-filled 100 B loop",
            "always/duplex/1",
            "raw/zero-filled/100B",
        ),
        (
            "Duplex Always 1 thread / raw growing 100 B loop",
            "always/duplex/1",
            "raw/growing/100B",
        ),
        (
            "raw zero-filled / raw fallocate, 100 B",
            "raw/zero-filled/100B",
            "raw/fallocate/100B",
        ),
        (
            "raw zero-filled / raw fallocate, 4 KiB",
            "raw/zero-filled/4096B",
            "raw/fallocate/4096B",
        ),
        (
            "raw fallocate / raw growing, 4 KiB",
            "raw/fallocate/4096B",
            "raw/growing/4096B",
        ),
        (
            "raw zero-filled / raw fallocate, 64 KiB",
            "raw/zero-filled/65536B",
            "raw/fallocate/65536B",
        ),
    ] {
        stats.row(label, num, den, "", &info);
    }
}

/// Scaling with threads, Duplex and okaywal.
fn thread_ratio_rows(stats: &Stats<'_>) {
    for t in [4usize, 8, 16, 64] {
        let target = if t == 64 { ">= 20" } else { "" };
        stats.row(
            &format!("Duplex Always {t} threads / 1 thread"),
            &format!("always/duplex/{t}"),
            "always/duplex/1",
            target,
            &|r| r >= 20.0,
        );
    }
    stats.row(
        "okaywal 64 threads / 1 thread",
        "always/okaywal/64",
        "always/okaywal/1",
        "",
        &|_| true,
    );
}

/// Duplex against okaywal: durable, unsynced, batched, replay; the reader's tail.
fn okaywal_ratio_rows(stats: &Stats<'_>) {
    for t in [1usize, 4, 8, 16, 64] {
        let target = if t == 8 { ">= 3" } else { "" };
        stats.row(
            &format!("Duplex Always / okaywal, {t} thread(s)"),
            &format!("always/duplex/{t}"),
            &format!("always/okaywal/{t}"),
            target,
            &|r| r >= 3.0,
        );
    }
    let k = OKAYWAL_CHUNKS_PER_ENTRY;
    for len in [SMALL, LARGE] {
        stats.row(
            &format!("Duplex Never 1 thread / okaywal {k}-chunk entries, {len} B"),
            &format!("never/duplex/{len}B/1"),
            &format!("never/okaywal-{k}/{len}B/1"),
            "> 1",
            &|r| r > 1.0,
        );
        stats.row(
            &format!("Duplex Never 4 threads / okaywal {k}-chunk entries, {len} B"),
            &format!("never/duplex/{len}B/4"),
            &format!("never/okaywal-{k}/{len}B/1"),
            "",
            &|_| true,
        );
        stats.row(
            &format!("Duplex Always append_batch({k}) / okaywal {k}-chunk entries, {len} B"),
            &format!("batch/duplex-{k}/{len}B/1"),
            &format!("never/okaywal-{k}/{len}B/1"),
            "",
            &|_| true,
        );
        stats.row(
            &format!("Duplex replay / okaywal replay, {len} B"),
            &format!("replay/duplex/{len}B"),
            &format!("replay/okaywal/{len}B"),
            "",
            &|_| true,
        );
    }
    stats.row(
        "reader to end: no pre-allocation / pre-allocated 64 MiB segment",
        "reader-tail/no-prealloc",
        "reader-tail/prealloc",
        "",
        &|_| true,
    );
}

/// Duplex's replay rates against the 1 GB/s target.
pub(super) fn print_replay_rates(stats: &Stats<'_>, run: &Run) {
    let log_bytes = replay_log_bytes();
    for len in [SMALL, LARGE] {
        let name = format!("replay/duplex/{len}B");
        if let (Some(ops), Some(b)) = (stats.med(&name, None), stats.med_bytes(&name)) {
            let log_b = run.replay_log_bytes_read.get(&name).copied().unwrap_or(0) as f64;
            let recs = records_for(len, log_bytes) as f64;
            let log_rate = log_b / (recs / ops);
            println!(
                "- Duplex replay {len} B ({} MiB log): {} records/s, {:.2} GB/s of payload, \
                 {:.2} GB/s of log (target >= 1 GB/s: {})",
                log_bytes >> 20,
                fmt_rate(ops),
                b / 1e9,
                log_rate / 1e9,
                if b >= 1e9 {
                    "met"
                } else if log_rate >= 1e9 {
                    "met on log bytes only"
                } else {
                    "MISSED"
                }
            );
        }
    }
}
