//! The restore drill of each new backup (`backup_drill`, default on): in a background
//! thread at low CPU and I/O priority, the backup (with the chain it builds on) is
//! restored into `backup_dir/.drill`, rolled forward to its end LSN (its own WAL, with the
//! archive's lineage checked) and compared version for version with the snapshot of the
//! live data taken at exactly that LSN when the backup ended
//! ([`duplex_engine::drill_backup`]). Retention, which removes older backups and the
//! archive they needed, runs only after a drill passed; a failed drill keeps everything,
//! is logged as an error and shows in INFO (`drill_status:failed`) and `duplexctl status`.
//!
//! One drill at a time: a backup that completes while one runs is not drilled, and
//! retention waits for the next drill that passes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use duplex_engine::backup::read_backup_manifest;
use duplex_engine::{BackupManifest, PeerFloor, Snapshot};
use parking_lot::Mutex;

use crate::config::ServerConfig;

/// Name of the scratch directory under `backup_dir` (a leading dot: never taken for a
/// backup).
pub const DRILL_DIR: &str = ".drill";

/// What is known about the drills, for INFO.
#[derive(Debug, Clone, Default)]
pub struct DrillInfo {
    /// `none`, `running`, `passed` or `failed`.
    pub status: &'static str,
    /// The backup drilled last (or being drilled).
    pub backup: Option<PathBuf>,
    /// The LSN it was rolled forward to.
    pub lsn: u64,
    /// Seconds the last drill took.
    pub seconds: f64,
    /// Why the last drill failed (the first differing key, or the error).
    pub error: Option<String>,
    /// The stamped digest the last passed drill found (`duplex-recover drill --expect`).
    pub digest: Option<String>,
    /// Drills passed since start.
    pub passed: u64,
    /// Drills failed since start.
    pub failed: u64,
    /// Backups not drilled because a drill was running.
    pub skipped: u64,
}

/// The drill service.
#[derive(Debug, Default)]
pub struct Drills {
    info: Arc<Mutex<DrillInfo>>,
    running: Arc<AtomicBool>,
}

/// One drill to run.
pub struct DrillJob {
    /// The backup just taken.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: BackupManifest,
    /// The live data at its end LSN.
    pub snapshot: Snapshot,
    /// The configuration (backup and archive directories, retention).
    pub cfg: ServerConfig,
    /// What retention keeps for peers.
    pub peer_floor: Option<PeerFloor>,
    /// Object storage (retention runs there too).
    pub remote: Arc<crate::remote::Remote>,
}

impl Drills {
    /// What is known about the drills.
    pub fn info(&self) -> DrillInfo {
        let i = self.info.lock().clone();
        DrillInfo {
            status: if i.status.is_empty() {
                "none"
            } else {
                i.status
            },
            ..i
        }
    }

    /// Starts the drill of `job` in the background, then retention if it passes. Returns
    /// false (and counts the backup as skipped) when a drill is running already.
    pub fn start(&self, job: DrillJob) -> bool {
        if self.running.swap(true, Ordering::AcqRel) {
            self.info.lock().skipped += 1;
            tracing::warn!(event = "drill_skipped", backup = %job.dir.display(), "a restore drill is still running: this backup is not drilled, and retention waits for the next drill that passes");
            return false;
        }
        {
            let mut i = self.info.lock();
            i.status = "running";
            i.backup = Some(job.dir.clone());
            i.lsn = job.manifest.end_lsn;
        }
        let (info, running) = (self.info.clone(), self.running.clone());
        let spawned = std::thread::Builder::new()
            .name("duplexd-drill".into())
            .spawn(move || {
                // Yield to the server: lowest CPU priority, idle I/O class.
                duplex_wal::background_priority();
                run(&job, &info);
                running.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            self.running.store(false, Ordering::Release);
            let mut i = self.info.lock();
            i.status = "failed";
            i.failed += 1;
            i.error = Some(format!("could not start the drill thread: {e}"));
            tracing::error!(event = "drill_failed", error = %e, "could not start the restore drill");
        }
        true
    }
}

/// Runs one drill and records it; retention after a pass.
fn run(job: &DrillJob, info: &Mutex<DrillInfo>) {
    tracing::info!(event = "drill_start", backup = %job.dir.display(), lsn = job.manifest.end_lsn, "restore drill started");
    let outcome = drill(job);
    match outcome {
        Ok(d) if d.passed() => {
            tracing::info!(event = "drill_passed", backup = %job.dir.display(), lsn = d.lsn, digest = %d.restored, seconds = d.seconds, "restore drill passed: the backup restores to the live data at its end LSN");
            // Retention first: INFO says `passed` once everything the pass allows is done.
            super::backup::retention(&job.cfg, job.peer_floor, &job.remote);
            let mut i = info.lock();
            i.status = "passed";
            i.passed += 1;
            i.seconds = d.seconds;
            i.error = None;
            i.digest = Some(d.restored.to_string());
        }
        Ok(d) => {
            let why = format!(
                "the restore differs from the live data at LSN {}: stamped digest {} against {}; first differing key {:?}",
                d.lsn,
                d.restored,
                d.live.map(|l| l.to_string()).unwrap_or_default(),
                d.first_difference
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default()
            );
            fail(&mut info.lock(), job, d.seconds, why);
        }
        Err(e) => fail(&mut info.lock(), job, 0.0, e.to_string()),
    }
}

fn fail(i: &mut DrillInfo, job: &DrillJob, seconds: f64, why: String) {
    i.status = "failed";
    i.failed += 1;
    i.seconds = seconds;
    tracing::error!(event = "drill_failed", backup = %job.dir.display(), error = %why, "restore drill FAILED: this backup did not restore to the live data; retention keeps every backup and the whole archive until a drill passes. Verify it (duplex-recover verify) and take a new backup");
    i.error = Some(why);
}

fn drill(job: &DrillJob) -> Result<duplex_engine::DrillReport, String> {
    let root = &job.cfg.backup_dir;
    let chain = chain_of(root, &job.dir, &job.manifest).ok_or_else(|| {
        format!(
            "the backups {} builds on are not all in {}",
            job.dir.display(),
            root.display()
        )
    })?;
    let archive: Vec<PathBuf> = job
        .cfg
        .archive()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    let storage: Arc<dyn duplex_wal::Storage> = Arc::new(duplex_wal::StdStorage);
    let scratch = root.join(DRILL_DIR);
    let spec = duplex_engine::DrillSpec {
        chain: &chain,
        archive: &archive,
        scratch: &scratch,
        node_id: job.manifest.node_id,
        until: Some(job.manifest.end_lsn),
        live: Some(&job.snapshot),
    };
    duplex_engine::drill_backup(&storage, &spec).map_err(|e| e.to_string())
}

/// The chain that ends in `dir` (manifest `m`): the full backup, then each incremental,
/// oldest first, found in `root` by their store lengths and CRCs; `None` if a link is
/// missing.
pub fn chain_of(root: &Path, dir: &Path, m: &BackupManifest) -> Option<Vec<PathBuf>> {
    let mut chain = vec![dir.to_path_buf()];
    let mut cur = m.clone();
    let others: Vec<(PathBuf, BackupManifest)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p != dir)
        .filter_map(|p| {
            let m = read_backup_manifest(&duplex_wal::StdStorage, &p).ok()?;
            Some((p, m))
        })
        .collect();
    while cur.is_incremental() {
        let (p, base) = others.iter().find(|(_, b)| {
            b.node_id == cur.node_id
                && b.generation == cur.generation
                && b.committed_len == cur.base_len
                && b.store_crc == cur.base_crc
        })?;
        chain.push(p.clone());
        cur = base.clone();
        if chain.len() > others.len() + 1 {
            return None;
        }
    }
    chain.reverse();
    Some(chain)
}
