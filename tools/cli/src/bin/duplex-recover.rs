//! `duplex-recover`: rebuild a lost Duplex database from a backup and its WAL archive,
//! verify backups and archives, dump WAL records, back up a data directory.
//!
//! This binary parses arguments, shows progress and prints results; the work is done by
//! `duplex-engine` (backup, restore, roll-forward, verification of backups and data
//! directories), `duplex-wal` (reading the log) and the `duplex_cli` library (verification
//! reports, dump formatting, target checks). Exit codes are those of [`duplex_cli::exit`];
//! `--help` lists them.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use duplex_cli::dump::decode;
use duplex_cli::exit::{engine_code, wal_code, Code, ToolError};
use duplex_cli::help::{BACKUP_HELP, DRILL_HELP, DUMP_HELP, MAIN_HELP, RESTORE_HELP, VERIFY_HELP};
use duplex_cli::identify::identify;
use duplex_cli::target::prepare_target;
use duplex_cli::text::{format_time_ms, human_bytes, parse_time_ms};
use duplex_cli::verify::{check_chain_links, verify_paths, ScopedReader, WalScope};
use duplex_engine::{
    BackupManifest, BackupOptions, BackupRate, Config, Database, Phase, RollForwardOptions,
    RollForwardReport, Target, MANIFEST_NAME, MAX_KEY_SIZE, MAX_VALUE_SIZE,
};
use duplex_wal::{StdStorage, Storage};

/// Rebuild a lost Duplex database from a backup and its WAL archive; verify backups and
/// archives; dump WAL records; back up a data directory.
/// `duplex-recover --version`: the package version and the Duplex on-disk format it reads
/// and writes (`duplex_engine::FORMAT_VERSION`; a test checks that the two agree).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (on-disk format 2, reads formats 1 to 2)"
);

#[derive(Debug, Parser)]
#[command(name = "duplex-recover", version = VERSION, after_help = MAIN_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Restore a backup (or chain) into an empty directory and roll the archive forward.
    #[command(after_help = RESTORE_HELP)]
    Restore(RestoreArgs),
    /// Verify backups, backup chains, WAL archives, segments or data directories.
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Print WAL records, readable (or as JSON lines).
    #[command(after_help = DUMP_HELP)]
    Dump(DumpArgs),
    /// Back up a database directory (offline, or held by a running server).
    #[command(after_help = BACKUP_HELP)]
    Backup(BackupArgs),
    /// Prove a backup: restore it into a scratch directory, roll forward, print its
    /// stamped digest (and compare it with one expected), remove the scratch directory.
    #[command(after_help = DRILL_HELP)]
    Drill(DrillArgs),
}

#[derive(Debug, Args)]
struct DrillArgs {
    /// Backup directory; repeat for a chain: the full backup first, then each incremental.
    #[arg(long = "backup", value_name = "DIR", required = true)]
    backup: Vec<PathBuf>,
    /// Archive root (or lineage directory) to roll forward through; repeatable.
    #[arg(long = "archive", value_name = "DIR")]
    archive: Vec<PathBuf>,
    /// Roll forward to this LSN (default: the last backup's end LSN).
    #[arg(long, value_name = "N")]
    until_lsn: Option<u64>,
    /// The stamped digest the restore must have (as INFO's drill_digest or the server's
    /// drill_passed log line print it: 32 hex digits, '/', the count).
    #[arg(long, value_name = "DIGEST")]
    expect: Option<String>,
    /// Scratch directory (must not exist, or be empty; removed afterwards). Default:
    /// `.drill-<pid>` beside the first backup.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// Backup directory; repeat for a chain: the full backup first, then each incremental.
    #[arg(long = "backup", value_name = "DIR", required = true)]
    backup: Vec<PathBuf>,
    /// Directory of archived WAL segments; repeat to read several as one log.
    #[arg(long = "archive", value_name = "DIR")]
    archive: Vec<PathBuf>,
    /// Target directory: must be new or empty (see --force).
    #[arg(long, value_name = "DIR")]
    into: PathBuf,
    /// Stop after this LSN (inclusive): the state right after record N (one record is one
    /// client command or MULTI/EXEC, also inside a write group the server logged at once).
    #[arg(long, value_name = "N", conflicts_with = "until_time")]
    until_lsn: Option<u64>,
    /// Apply only records stamped at or before this time (record by record): RFC 3339
    /// (2026-11-25T10:00:00Z, 2026-11-25T11:00:00+01:00) or ms since the Unix epoch.
    #[arg(long, value_name = "TIME", value_parser = parse_time_ms)]
    until_time: Option<u64>,
    /// On a gap or damaged record in the archive, keep what was applied before it instead
    /// of failing (the exit code is still 1).
    #[arg(long)]
    stop_at_last_good: bool,
    /// Memory (MiB) for the archived operations gathered before each merge into the tree:
    /// about 100 bytes per key written plus its key and value (the records are read in place
    /// from the page cache).
    /// Larger is faster for long archives: each merge rewrites the tree.
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    chunk_mib: u64,
    /// Node id of the database (default: the one in the backup manifest; it must match).
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,
    /// Delete everything inside a non-empty target first (only inside it; refused if a
    /// running database holds it or it contains a backup or archive being read).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Backup directories (a chain oldest first), WAL archives, *.wal files or data
    /// directories.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// A WAL archive, a wal/ directory, a data directory or one *.wal file.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// First LSN to print (default: the first the log holds).
    #[arg(long, value_name = "LSN")]
    from: Option<u64>,
    /// Last LSN to print (inclusive; the records of a write group are printed one by one,
    /// also when the group straddles the range).
    #[arg(long, value_name = "LSN")]
    until: Option<u64>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Bytes of each value to show (escaped).
    #[arg(long, value_name = "N", default_value_t = 32)]
    value_bytes: usize,
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// The database's data directory (it may be held by a running server).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// New backup directory (must not exist).
    #[arg(long, value_name = "DIR")]
    into: PathBuf,
    /// Take an incremental backup on this base backup (the newest of its chain).
    #[arg(long, value_name = "DIR")]
    incremental_from: Option<PathBuf>,
    /// Copy at most this many MB (10^6 bytes) per second; 0 copies at full speed.
    /// Default: adaptive (at most about a tenth of the disk's time).
    #[arg(long, value_name = "MB_PER_S")]
    rate_limit: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Restore(a) => restore(a),
        Cmd::Verify(a) => verify(a),
        Cmd::Dump(a) => dump(a),
        Cmd::Backup(a) => backup(a),
        Cmd::Drill(a) => drill(a),
    };
    match res {
        Ok(code) => ExitCode::from(code.as_u8()),
        Err(e) => {
            if let Some(Reported(code)) = e.downcast_ref::<Reported>() {
                return ExitCode::from(code.as_u8());
            }
            eprintln!("error: {e}");
            ExitCode::from(code_of(&e).as_u8())
        }
    }
}

/// An error already printed (with its notes); only its exit code remains to be used.
#[derive(Debug)]
struct Reported(Code);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0.as_u8())
    }
}

impl std::error::Error for Reported {}

/// The exit code an error calls for.
fn code_of(e: &anyhow::Error) -> Code {
    if let Some(t) = e.downcast_ref::<ToolError>() {
        t.code
    } else if let Some(e) = e.downcast_ref::<duplex_engine::Error>() {
        engine_code(e)
    } else if let Some(e) = e.downcast_ref::<duplex_wal::Error>() {
        wal_code(e)
    } else {
        Code::Operational
    }
}

fn drill(mut a: DrillArgs) -> Result<Code> {
    let beside = a.scratch.clone().unwrap_or_else(|| PathBuf::from("drill"));
    let _staging = duplex_cli::remote::stage(&mut a.backup, &mut a.archive, &beside)?;
    let first = &a.backup[0];
    let m = duplex_engine::verify_backup(&*storage(), first)?;
    let scratch = a.scratch.clone().unwrap_or_else(|| {
        first
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!(".drill-{}", std::process::id()))
    });
    let pb = spinner("restoring and rolling forward");
    let spec = duplex_engine::DrillSpec {
        chain: &a.backup,
        archive: &a.archive,
        scratch: &scratch,
        node_id: m.node_id,
        until: a.until_lsn,
        live: None,
    };
    let r = duplex_engine::drill_backup(&storage(), &spec);
    pb.finish_and_clear();
    let r = r?;
    println!(
        "restored to LSN {}: stamped digest {} (keys, values, tombstones and stamps); {:.2} s",
        r.lsn, r.restored, r.seconds
    );
    match a.expect {
        None => Ok(Code::Ok),
        Some(want) if want.trim() == r.restored.to_string() => {
            println!("matches the expected digest: the backup restores to that state");
            Ok(Code::Ok)
        }
        Some(want) => {
            println!(
                "DIFFERS from the expected digest {}: the backup does not restore to that state at LSN {}",
                want.trim(),
                r.lsn
            );
            Ok(Code::Damaged)
        }
    }
}

fn storage() -> Arc<dyn Storage> {
    Arc::new(StdStorage)
}

/// The configuration a restored database is opened with: its node id, no background
/// thread, and the largest key and value sizes any configuration allows, so that every
/// record a database could have logged is accepted.
fn restore_config(node_id: u64) -> Config {
    Config {
        node_id,
        background: false,
        max_key_size: MAX_KEY_SIZE,
        max_value_size: MAX_VALUE_SIZE,
        ..Config::default()
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        pb.set_style(style);
    }
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Bytes of archived segments a roll-forward from `from` (up to `until`) reads in the
/// lineage (node, timeline) of the backup: the segment holding `from` and those after it.
/// For the ETA.
/// Timelines of `node` above `from` in the archive roots: histories that continued after
/// other restores, which a restore of a `from` backup does not follow.
fn later_timelines(archives: &[PathBuf], node: u64, from: u64) -> Vec<u64> {
    let mut later: Vec<u64> = archives
        .iter()
        .filter_map(|root| std::fs::read_dir(root).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| duplex_wal::parse_archive_subdir(&e.file_name().to_string_lossy()))
        .filter(|&(n, t)| n == node && t > from)
        .map(|(_, t)| t)
        .collect();
    later.sort_unstable();
    later.dedup();
    later
}

fn bytes_to_read(archives: &[PathBuf], lineage: (u64, u64), from: u64, until: Option<u64>) -> u64 {
    let Ok(segs) =
        duplex_wal::list_segments_of(&StdStorage, archives, Some(lineage.0), Some(lineage.1))
    else {
        return 0;
    };
    let mut total = 0;
    for (i, (first, path)) in segs.iter().enumerate() {
        let next = segs.get(i + 1).map(|s| s.0);
        if next.is_some_and(|n| n <= from) || until.is_some_and(|u| *first > u) {
            continue;
        }
        total += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    }
    total
}

fn restore(mut a: RestoreArgs) -> Result<Code> {
    // s3:// backups and archives are read (verified) into a staging directory first.
    let _staging = duplex_cli::remote::stage(&mut a.backup, &mut a.archive, &a.into)?;
    let storage = storage();
    let node_id = check_restore_args(&a, &*storage)?;
    let mut sources = a.backup.clone();
    sources.extend(a.archive.iter().cloned());
    let prepared = prepare_target(&a.into, a.force, &sources)?;
    if prepared.removed > 0 {
        eprintln!(
            "--force: removed {} entries from {}",
            prepared.removed,
            a.into.display()
        );
    }

    let started = Instant::now();
    let m = copy_backups(&a, &storage)?;
    let r = roll_archive(&a, &storage, &m, node_id)?;

    let db = Database::open(&a.into, restore_config(node_id)).map_err(|e| partial(e, &a.into))?;
    let digest = db.digest().map_err(|e| partial(e, &a.into))?;
    let final_lsn = db.wal().last_lsn();
    db.close().map_err(|e| partial(e, &a.into))?;

    let secs = r.seconds.max(1e-9);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "restored {} into {}: node {node_id}, backup checkpoint LSN {}",
        a.backup
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        a.into.display(),
        m.checkpoint_lsn
    )?;
    if r.records > 0 {
        writeln!(
            out,
            "rolled forward LSN {} to {}: {} records, {} in {:.2} s ({:.0} records/s, {}/s)",
            r.from_lsn,
            r.to_lsn,
            r.records,
            human_bytes(r.bytes),
            r.seconds,
            r.records as f64 / secs,
            human_bytes((r.bytes as f64 / secs) as u64)
        )?;
    } else {
        writeln!(
            out,
            "rolled forward 0 records ({:.2} s): the backup's WAL and the archive hold nothing to apply after LSN {}",
            r.seconds, m.checkpoint_lsn
        )?;
    }
    if a.archive.is_empty() {
        writeln!(
            out,
            "restored the backup alone (no --archive): to LSN {} (the backup ends at LSN {})",
            r.to_lsn, m.end_lsn
        )?;
    }
    writeln!(out, "final LSN: {final_lsn}")?;
    writeln!(
        out,
        "timeline: {} (a new lineage; the backup was of timeline {}): the restored server archives into n{node_id}-t{} under its archive root, beside the original's n{node_id}-t{}",
        r.timeline, r.from_timeline, r.timeline, r.from_timeline
    )?;
    let later = later_timelines(&a.archive, node_id, r.from_timeline);
    if !later.is_empty() {
        writeln!(
            out,
            "warning: the archive also holds later timelines of node {node_id} ({}), written after earlier restores: this restore followed timeline {} only, so the writes made on those timelines are not in it; to reach them, restore a backup taken on the newest timeline",
            later.iter().map(|t| format!("n{node_id}-t{t}")).collect::<Vec<_>>().join(", "),
            r.from_timeline
        )?;
    }
    writeln!(
        out,
        "next: once the restored server runs, take a backup of it (DUPLEX.BACKUP): backups of timeline {} cannot reach the writes it makes on timeline {}",
        r.from_timeline, r.timeline
    )?;
    writeln!(
        out,
        "digest: {digest} ({} live keys; compare with a peer's digest)",
        digest.count
    )?;
    writeln!(
        out,
        "total time: {:.2} s; the database in {} is ready to open",
        started.elapsed().as_secs_f64(),
        a.into.display()
    )?;
    Ok(restore_warnings(&a, &m, &r))
}

/// The checks of `restore`'s arguments before anything is written: the backup chain's
/// links, the node id, the target LSN, the archive directories. Returns the node id.
fn check_restore_args(a: &RestoreArgs, storage: &dyn Storage) -> Result<u64> {
    let manifests = check_chain_links(storage, &a.backup)?;
    let Some(last) = manifests.last() else {
        return Err(ToolError::usage("give at least one --backup DIR").into());
    };
    let node_id = match a.node_id {
        Some(n) if n != last.node_id => {
            return Err(ToolError::usage(format!(
                "the backup is of node {}, not node {n}: a database opens only as its own node (leave out --node-id)",
                last.node_id
            ))
            .into())
        }
        Some(n) => n,
        None => last.node_id,
    };
    if let Some(u) = a.until_lsn {
        if u < last.checkpoint_lsn {
            return Err(ToolError::usage(format!(
                "--until-lsn {u} is before this backup's checkpoint (LSN {}), which already holds the records up to it; restore an older backup to reach LSN {u}",
                last.checkpoint_lsn
            ))
            .into());
        }
    }
    for dir in &a.archive {
        if !dir.is_dir() {
            return Err(ToolError::usage(format!(
                "the archive {} is not a directory (check the path: without it the restore would stop at the backup)",
                dir.display()
            ))
            .into());
        }
    }
    Ok(node_id)
}

/// Verifies the backup chain and assembles it into the target, with a spinner. Returns
/// the last backup's manifest.
fn copy_backups(a: &RestoreArgs, storage: &Arc<dyn Storage>) -> Result<BackupManifest> {
    let started = Instant::now();
    let pb = spinner(&format!(
        "verifying and copying {} backup(s) into {}",
        a.backup.len(),
        a.into.display()
    ));
    let restored = duplex_engine::restore_chain(storage, &a.backup, &a.into);
    pb.finish_and_clear();
    let m = restored.map_err(|e| partial(e, &a.into))?;
    let copy_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "restored {} backup(s): node {}, checkpoint LSN {}, store {} in {copy_secs:.2} s",
        a.backup.len(),
        m.node_id,
        m.checkpoint_lsn,
        human_bytes(m.committed_len)
    );
    if a.archive.is_empty() {
        eprintln!(
            "note: no --archive given: the database is restored from the backup alone, to its end LSN {} at most",
            m.end_lsn
        );
    }
    Ok(m)
}

/// Rolls the archive forward onto the restored backup `m`, with a progress bar.
fn roll_archive(
    a: &RestoreArgs,
    storage: &Arc<dyn Storage>,
    m: &BackupManifest,
    node_id: u64,
) -> Result<RollForwardReport> {
    let target = match (a.until_lsn, a.until_time) {
        (Some(l), _) => Target::Lsn(l),
        (None, Some(t)) => Target::TimeMs(t),
        (None, None) => Target::End,
    };
    let mut sources = vec![a.into.join(duplex_engine::RESTORE_WAL_DIR)];
    sources.extend(a.archive.iter().cloned());
    let total = bytes_to_read(
        &sources,
        (node_id, m.timeline),
        m.checkpoint_lsn + 1,
        a.until_lsn,
    );
    let pb = ProgressBar::with_draw_target(Some(total.max(1)), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} rolling forward [{bar:30}] {binary_bytes}/{binary_total_bytes} {msg} ETA {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    let header = duplex_wal::format::RECORD_HEADER_LEN as u64;
    let opts = RollForwardOptions {
        target,
        stop_at_last_good: a.stop_at_last_good,
        config: restore_config(node_id),
        chunk_bytes: a.chunk_mib << 20,
    };
    let rolled = duplex_engine::roll_forward(
        storage.clone(),
        &a.into,
        &a.archive,
        &opts,
        &mut |p: &duplex_engine::Progress| {
            // Record bytes on disk, approximately: payload plus each record's header.
            let pos = p.bytes + p.records * header;
            pb.set_length(total.max(pos).max(1));
            pb.set_position(pos);
            pb.set_message(progress_message(p));
        },
    );
    pb.finish_and_clear();
    rolled.map_err(|e| partial(e, &a.into))
}

/// The progress bar's words for a roll-forward's progress.
fn progress_message(p: &duplex_engine::Progress) -> String {
    match p.phase {
        Phase::Check => format!("checking: {} records, {:.0}/s", p.records, p.rate()),
        Phase::Apply => format!(
            "applying: {} of {} records, {:.0}/s",
            p.records,
            p.to_apply,
            p.rate()
        ),
        Phase::Merge => format!(
            "sorting and writing into the tree: {} of {} records read",
            p.records, p.to_apply
        ),
    }
}

/// Warns about a time target before the backup, and reports a roll-forward that stopped
/// early; returns the exit code.
fn restore_warnings(a: &RestoreArgs, m: &BackupManifest, r: &RollForwardReport) -> Code {
    if let (Some(t), 0) = (a.until_time, r.records) {
        if t < m.created_ms {
            eprintln!(
                "warning: --until-time {} is before the backup was taken ({}); the restored state is the backup's checkpoint, which may hold later writes: restore an older backup to reach that time",
                format_time_ms(t),
                format_time_ms(m.created_ms)
            );
        }
    }
    if let Some(why) = &r.stopped_early {
        eprintln!(
            "error: the roll-forward stopped early at LSN {} (--stop-at-last-good): {why}",
            r.to_lsn
        );
        eprintln!(
            "note: the database holds every record up to LSN {} and opens normally; the records after it are lost unless the damaged or missing segment is found",
            r.to_lsn
        );
        return Code::Damaged;
    }
    Code::Ok
}

/// Prints an error met after the target was written to, with a note that the target now
/// holds a partial restore.
fn partial(e: impl Into<anyhow::Error>, into: &Path) -> anyhow::Error {
    let e = e.into();
    eprintln!("error: {e}");
    let written = std::fs::read_dir(into).is_ok_and(|mut d| d.next().is_some());
    if written {
        eprintln!(
            "note: {} now holds a partial restore; once the cause is fixed, run again with --force",
            into.display()
        );
    }
    Reported(code_of(&e)).into()
}

fn verify(a: VerifyArgs) -> Result<Code> {
    let reports = verify_paths(&storage(), &a.paths);
    let mut out = std::io::stdout().lock();
    let mut code = Code::Ok;
    let mut failed = 0;
    for r in &reports {
        let kind = r.kind.as_ref().map_or("?", |k| k.name());
        match &r.error {
            None => writeln!(out, "OK    {} ({kind})", r.path.display())?,
            Some(_) => writeln!(out, "FAIL  {} ({kind})", r.path.display())?,
        }
        for f in &r.facts {
            writeln!(out, "      {f}")?;
        }
        for n in &r.notes {
            writeln!(out, "      note: {n}")?;
        }
        if let Some(e) = &r.error {
            writeln!(out, "      error: {e}")?;
            failed += 1;
        }
        code = code.worst(r.code());
    }
    out.flush()?;
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} path(s) failed verification",
            reports.len()
        );
    } else {
        writeln!(out, "all {} path(s) verified", reports.len())?;
    }
    Ok(code)
}

fn dump(a: DumpArgs) -> Result<Code> {
    let kind = identify(&a.path)?;
    let scope = WalScope::for_path(&a.path, &kind)?;
    let mut reader =
        ScopedReader::open(&storage(), &scope, a.from.unwrap_or(0), a.until).map_err(dump_err)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut records, mut bad) = (0u64, 0u64);
    let (mut first, mut last) = (None, None);
    let end = loop {
        let rec = match reader.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        let d = decode(&rec);
        bad += u64::from(d.is_bad());
        let line = if a.json {
            d.json(a.value_bytes).to_string()
        } else {
            d.text(a.value_bytes)
        };
        if let Err(e) = writeln!(out, "{line}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(Code::Ok);
            }
            return Err(e.into());
        }
        records += 1;
        first.get_or_insert(rec.lsn);
        last = Some(rec.lsn);
    };
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Code::Ok),
        r => r?,
    }
    if std::io::stderr().is_terminal() || end.is_some() || bad > 0 {
        match (first, last) {
            (Some(f), Some(l)) => eprintln!("{records} records, LSN {f} to {l}"),
            _ => eprintln!("no records"),
        }
    }
    if let Some(t) = reader.torn_tail() {
        eprintln!(
            "note: the log ends in a torn tail in {} at offset {} ({})",
            t.file.display(),
            t.offset,
            t.kind
        );
    }
    if let Some(e) = end {
        return Err(dump_err(e).into());
    }
    if bad > 0 {
        return Err(ToolError::damaged(format!(
            "{bad} batch record(s) do not decode (shown as UNDECODABLE); a roll-forward would stop at the first"
        ))
        .into());
    }
    Ok(Code::Ok)
}

/// A WAL error met while dumping: asking for an LSN the log does not hold is a usage
/// error there.
fn dump_err(e: duplex_wal::Error) -> ToolError {
    let code = match e {
        duplex_wal::Error::LsnUnavailable { .. } => Code::Usage,
        ref e => wal_code(e),
    };
    ToolError::new(code, e.to_string())
}

fn backup(mut a: BackupArgs) -> Result<Code> {
    if duplex_objstore::is_s3(&a.into) {
        // Into a staging directory beside the data, then uploaded in parallel parts.
        let (url, data) = (std::mem::take(&mut a.into), a.data.clone());
        return duplex_cli::remote::backup_then_upload(&data, &url, |into| {
            a.into = into;
            backup(a)
        });
    }
    if !a.data.join(MANIFEST_NAME).is_file() {
        return Err(ToolError::usage(format!(
            "{} is not a Duplex data directory (it has no {})",
            a.data.display(),
            MANIFEST_NAME
        ))
        .into());
    }
    if let Some(base) = &a.incremental_from {
        if !base.join(duplex_engine::backup::BACKUP_MANIFEST).is_file() {
            return Err(ToolError::usage(format!(
                "{} is not a backup directory (it has no {})",
                base.display(),
                duplex_engine::backup::BACKUP_MANIFEST
            ))
            .into());
        }
    }
    let pb = spinner(&format!(
        "backing up {} into {}",
        a.data.display(),
        a.into.display()
    ));
    let opts = BackupOptions {
        rate: match a.rate_limit {
            None => BackupRate::Adaptive,
            Some(0) => BackupRate::Unlimited,
            Some(mb) => BackupRate::BytesPerSec(mb.saturating_mul(1_000_000)),
        },
        ..BackupOptions::default()
    };
    let r = duplex_engine::backup_dir_with(
        &storage(),
        &a.data,
        &a.into,
        a.incremental_from.as_deref(),
        &opts,
    );
    pb.finish_and_clear();
    let r = r?;
    let m = &r.manifest;
    let secs = r.seconds.max(1e-9);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} backup of {} into {}: node {}, generation {}, checkpoint LSN {}",
        if m.is_incremental() {
            "incremental"
        } else {
            "full"
        },
        a.data.display(),
        r.dir.display(),
        m.node_id,
        m.generation,
        m.checkpoint_lsn
    )?;
    writeln!(
        out,
        "copied {} ({} bytes) in {:.2} s ({:.1} MB/s)",
        human_bytes(r.bytes_copied),
        r.bytes_copied,
        r.seconds,
        r.bytes_copied as f64 / secs / 1e6
    )?;
    writeln!(
        out,
        "WAL: LSN {} to {} ({}): the backup restores on its own to LSN {}; the archive continues it from LSN {}",
        m.checkpoint_lsn + 1,
        m.end_lsn,
        human_bytes(r.wal_bytes),
        m.end_lsn,
        m.end_lsn + 1
    )?;
    Ok(Code::Ok)
}
