//! The summary table of `backup_compare`: medians of every measured step against the
//! targets of issue 4, as Markdown rows.

use super::{fit, fmt_all, median, redis::RedisResult, RestoreRun, RfResult, SizeResult, MIB};

/// Every row, in the order of the workloads.
pub(super) fn print(
    rf: Option<&RfResult>,
    redis: Option<&RedisResult>,
    rf_records: u64,
    by_size: &[(u64, SizeResult)],
    archive_mib: u64,
) {
    let rf_rate = rf.map_or(f64::NAN, print_rf);
    if let Some(r) = redis {
        print_redis(r, rf, rf_rate, rf_records);
    }
    print_backups(by_size);
    print_restores(by_size, archive_mib);
}

/// The roll-forward rows; returns its median rate (records/s).
fn print_rf(r: &RfResult) -> f64 {
    let rf_rate = median(r.rf_rate.clone());
    let rf_s = median(r.rf_s.clone());
    let (check_s, sort_s, merge_s) = (
        median(r.check_s.clone()),
        median(r.sort_s.clone()),
        median(r.merge_s.clone()),
    );
    let read = median(r.read_mbs.clone());
    let arch_mib = r.archive_bytes as f64 / MIB as f64;
    println!("| measure | value | target | verdict |\n|---|---|---|---|");
    println!(
        "| roll_forward of {} SETs ({:.0} MiB of archive, {:.0} MB payload; setup {:.0} s) | {:.3} s: **{:.2} M records/s**, {:.0} MiB/s of archive (runs: {} M/s) | >= 1.5 M/s | {} |",
        r.records,
        arch_mib,
        r.payload as f64 / 1e6,
        r.setup_s,
        rf_s,
        rf_rate / 1e6,
        arch_mib / rf_s,
        fmt_all(&r.rf_rate.iter().map(|x| x / 1e6).collect::<Vec<_>>(), 2),
        verdict(rf_rate / 1.5e6)
    );
    println!(
        "| - of which reading, checking and gathering the archive | {check_s:.3} s ({:.2} M records/s, {:.0} MiB/s) | | |",
        r.records as f64 / check_s / 1e6,
        arch_mib / check_s
    );
    println!(
        "| - of which sorting (2 threads) and keeping the newest per key | {sort_s:.3} s | | |"
    );
    println!("| - of which merging into the tree (rebuilt, fsynced) | {merge_s:.3} s | | |");
    println!(
        "| sequential read of the same archive files (warm cache) | {read:.0} MiB/s ({:.3} s; runs {} MiB/s) | | roll_forward at {:.1}% of it |",
        arch_mib / read,
        fmt_all(&r.read_mbs, 0),
        100.0 * (arch_mib / rf_s) / read
    );
    rf_rate
}

/// The Redis AOF reload rows and the ratios to the roll-forward.
fn print_redis(r: &RedisResult, rf: Option<&RfResult>, rf_rate: f64, rf_records: u64) {
    let l = median(r.load_s.clone());
    let rr = r.records_rate(rf_records);
    println!(
        "| {} AOF reload of {rf_records} SETs ({:.0} MiB AOF, written in {:.1} s) | {l:.3} s by its log, {:.3} s until PONG: {:.0} SETs/s (runs {} s) | | |",
        r.version.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        r.aof_bytes as f64 / MIB as f64,
        r.write_s,
        median(r.wall_s.clone()),
        rr,
        fmt_all(&r.load_s, 3)
    );
    println!(
        "| Duplex roll_forward / Redis AOF reload (medians) | **{:.2}x** | >= 3x | {} |",
        rf_rate / rr,
        verdict(rf_rate / rr / 3.0)
    );
    if let Some(rf) = rf.filter(|r| !r.ratio.is_empty()) {
        let m = median(rf.ratio.clone());
        println!(
            "| the same, median of the per-round ratios (both in the same round) | **{m:.2}x** (rounds {}) | >= 3x | {} |",
            fmt_all(&rf.ratio, 2),
            verdict(m / 3.0)
        );
    }
}

/// The backup and write-latency rows, store size by store size.
fn print_backups(by_size: &[(u64, SizeResult)]) {
    for (s, r) in by_size {
        if let Some(b) = &r.backup {
            let (bs, cs, css) = (
                median(b.backup_s.clone()),
                median(b.cp_s.clone()),
                median(b.cp_sync_s.clone()),
            );
            let mib = b.store_bytes as f64 / MIB as f64;
            println!(
                "| Database::backup of a {mib:.0} MiB store (warm) | {bs:.3} s, {:.0} MiB/s (runs {} s) | | |",
                mib / bs,
                fmt_all(&b.backup_s, 3)
            );
            println!(
                "| cp of the store file (warm) / cp + fsync | {cs:.3} s, {:.0} MiB/s (runs {} s) / {css:.3} s (runs {} s) | | |",
                mib / cs,
                fmt_all(&b.cp_s, 3),
                fmt_all(&b.cp_sync_s, 3)
            );
            println!(
                "| backup throughput / cp (/ cp + fsync) | **{:.2}x** ({:.2}x) | >= 0.9x of cp | {} |",
                cs / bs,
                css / bs,
                verdict(cs / bs / 0.9)
            );
        }
        if let Some(l) = &r.latency {
            println!(
                "| durable single put, without backup ({s} MiB store) | p99 {:.0} µs, max {:.0} µs (max per run {} µs; {:.0} puts per run) | | |",
                median(l.base_p99.clone()),
                median(l.base_max.clone()),
                fmt_all(&l.base_max, 0),
                median(l.base_n.clone())
            );
            println!(
                "| durable single put, during a backup ({:.2} s) | p99 {:.0} µs, max {:.0} µs (max per run {} µs; {:.0} puts per run) | | |",
                median(l.bk_s.clone()),
                median(l.bk_p99.clone()),
                median(l.bk_max.clone()),
                fmt_all(&l.bk_max, 0),
                median(l.bk_n.clone())
            );
        }
    }
}

/// The end-to-end restore rows and the extrapolation to 3 GB.
fn print_restores(by_size: &[(u64, SizeResult)], archive_mib: u64) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (_, r) in by_size {
        let rr = &r.restore;
        if rr.runs.is_empty() {
            continue;
        }
        let total = rr.med(RestoreRun::total);
        println!(
            "| restore of {:.0} MiB (loaded in {:.0} s) + {:.0} MiB archive ({} SETs), end to end | **{total:.2} s** = restore_chain {:.2} + roll_forward {:.2} (check {:.2}, sort {:.2}, merge {:.2}) + open {:.3} (totals {} s) | | |",
            rr.store_mib,
            rr.load_s,
            rr.archive_mib,
            rr.records,
            rr.med(|r| r.chain_s),
            rr.med(|r| r.rf_s),
            rr.med(|r| r.rf_times.check),
            rr.med(|r| r.rf_times.sort),
            rr.med(|r| r.rf_times.merge + r.rf_times.read),
            rr.med(|r| r.open_s),
            fmt_all(&rr.runs.iter().map(RestoreRun::total).collect::<Vec<_>>(), 2)
        );
        xs.push(rr.store_mib);
        ys.push(total);
    }
    if xs.len() >= 2 {
        let (a, b) = fit(&xs, &ys);
        let gb3 = 3e9 / MIB as f64;
        println!(
            "| restore time vs store size (least squares over {} sizes, {archive_mib} MiB archive) | {a:.2} s + {:.2} s per GiB | | |",
            xs.len(),
            b * 1024.0
        );
        println!(
            "| extrapolated restore of a 3 GB store + {archive_mib} MiB archive | **{:.1} s** | patent: export/import ~8 h, roll-forward minutes | |",
            a + b * gb3
        );
    }
}

/// "met", or how far from the target.
pub(super) fn verdict(ratio_to_target: f64) -> String {
    if ratio_to_target >= 1.0 {
        "met".into()
    } else {
        format!("missed ({:.0}% of target)", ratio_to_target * 100.0)
    }
}
