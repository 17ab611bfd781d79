//! Online backups on request and on schedule: one at a time, into `backup_dir/<name>`,
//! with the state `backing-up` meanwhile and retention applied after each success.
//!
//! What is known about the last attempt is kept for INFO ([`BackupInfo`]).

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use duplex_engine::backup::read_backup_manifest;
use duplex_engine::{BackupOptions, BackupReport, Database};
use duplex_wal::Clock;
use parking_lot::Mutex;

use super::drill::{DrillInfo, DrillJob, Drills};
use crate::config::ServerConfig;
use crate::state::{OpState, StateTable};
use crate::Error;

/// What is known about the backups, for INFO and the schedule.
#[derive(Debug, Clone, Default)]
pub struct BackupInfo {
    /// Backups completed since start.
    pub taken: u64,
    /// Backups failed since start.
    pub failed: u64,
    /// Directory of the last completed backup: taken since start, or else the newest
    /// complete one found in `backup_dir` at start.
    pub last_dir: Option<PathBuf>,
    /// When it completed (one found at start: when it was taken, from its manifest), Unix
    /// ms; 0 for none.
    pub last_ms: u64,
    /// Last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The backup service: one backup at a time, and what the last ones did.
#[derive(Debug, Default)]
pub struct Backups {
    info: Mutex<BackupInfo>,
    running: Mutex<()>,
    /// The restore drills of the backups taken.
    drills: Drills,
    /// When the next scheduled backup is due, Unix ms; 0 for none (published by the
    /// scheduler).
    next_ms: AtomicU64,
    /// Object storage (`s3://` backup_dir / archive_dir), if any.
    remote: Mutex<std::sync::Arc<crate::remote::Remote>>,
}

/// The newest complete backup under `root` (a directory whose `BACKUP` manifest reads
/// back) of the lineage `(node id, timeline)`, by the time its manifest says it was taken:
/// (directory, Unix ms). Backups of another lineage do not count: after a restore the
/// database writes a new timeline, which the older backups and their archive cannot reach,
/// so its first backup must not wait a whole interval.
pub fn newest_backup(root: &Path, lineage: (u64, u64)) -> Option<(PathBuf, u64)> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            read_backup_manifest(&duplex_wal::StdStorage, &p)
                .ok()
                .filter(|m| (m.node_id, m.timeline) == lineage)
                .map(|m| (p, m.created_ms))
        })
        .max_by_key(|(_, ms)| *ms)
}

/// What an incremental backup builds on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackupBase {
    /// Nothing: a full backup.
    #[default]
    None,
    /// The newest complete backup of this server's lineage in `backup_dir`.
    Newest,
    /// The backup of this name in `backup_dir`.
    Named(String),
}

/// What a backup needs from the rest of the daemon.
#[derive(Debug, Clone, Copy)]
pub struct BackupCtx<'a> {
    /// The database to copy.
    pub db: &'a Database,
    /// The state table (`backing-up` while it runs).
    pub state: &'a StateTable,
    /// The configuration (backup and archive directories, retention).
    pub cfg: &'a ServerConfig,
    /// The clock (backup names and INFO times).
    pub clock: &'a dyn Clock,
    /// What retention keeps of the archive for peers (`None` without peers).
    pub peer_floor: Option<duplex_engine::PeerFloor>,
    /// How fast the copy goes.
    pub rate: duplex_engine::BackupRate,
}

impl Backups {
    /// The service for `backup_dir` `root`, knowing its newest complete backup of the
    /// database's lineage `(node id, timeline)`.
    pub fn found_in(root: &Path, lineage: (u64, u64)) -> Backups {
        let b = Backups::default();
        if let Some((dir, ms)) = newest_backup(root, lineage) {
            let mut info = b.info.lock();
            info.last_dir = Some(dir);
            info.last_ms = ms;
        }
        b
    }

    /// Sets the object storage backups are uploaded to.
    pub fn set_remote(&self, r: std::sync::Arc<crate::remote::Remote>) {
        *self.remote.lock() = r;
    }

    /// The object storage backups and the archive go to.
    pub fn remote(&self) -> std::sync::Arc<crate::remote::Remote> {
        self.remote.lock().clone()
    }

    /// Records when the next scheduled backup is due (0: none).
    pub fn set_next_ms(&self, ms: u64) {
        self.next_ms.store(ms, Ordering::Relaxed);
    }

    /// When the next scheduled backup is due, Unix ms; `None` without a schedule.
    pub fn next_ms(&self) -> Option<u64> {
        Some(self.next_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// What is known about the backups taken since start.
    pub fn info(&self) -> BackupInfo {
        self.info.lock().clone()
    }

    /// What is known about the restore drills.
    pub fn drill_info(&self) -> DrillInfo {
        self.drills.info()
    }

    /// Takes a backup into `backup_dir/<name>` (a UTC timestamp if `name` is `None`), then
    /// applies retention. State `backing-up` meanwhile (if it was `running`). `base`: a
    /// full backup (or the increment of a chain) to build an incremental backup on.
    pub fn take(
        &self,
        cx: BackupCtx<'_>,
        name: Option<&str>,
        base: BackupBase,
    ) -> Result<BackupReport, Error> {
        let Some(_one) = self.running.try_lock() else {
            return Err(Error::BackupRunning);
        };
        let root = &cx.cfg.backup_dir;
        std::fs::create_dir_all(root).map_err(|source| Error::Io {
            op: "create backup directory",
            path: root.clone(),
            source,
        })?;
        let dest = match name {
            Some(n) if !plain_name(n) => return Err(Error::BackupName { name: n.to_owned() }),
            Some(n) => root.join(n),
            None => unique_dir(root, &timestamp_name(cx.clock.now_ms())),
        };
        if dest.exists() {
            return Err(Error::BackupExists { path: dest });
        }
        let base = match base {
            BackupBase::None => None,
            BackupBase::Named(n) if !plain_name(&n) => return Err(Error::BackupName { name: n }),
            BackupBase::Named(n) => Some(root.join(n)),
            BackupBase::Newest => {
                let lineage = (cx.cfg.node_id, cx.db.wal().options().timeline);
                match newest_backup(root, lineage) {
                    Some((dir, _)) => Some(dir),
                    None => {
                        return Err(Error::NoBaseBackup {
                            dir: root.clone(),
                            node: lineage.0,
                            timeline: lineage.1,
                        })
                    }
                }
            }
        };
        let moved = cx.state.transition(OpState::Running, OpState::BackingUp);
        tracing::info!(event = "backup_start", dir = %dest.display(), base = ?base.as_ref().map(|b| b.display().to_string()), "backup started");
        let opts = BackupOptions {
            snapshot_at_end: cx.cfg.backup_drill,
            rate: cx.rate,
        };
        let remote = self.remote();
        // With an s3:// backup_dir a backup counts once it is in the store.
        let res = cx
            .db
            .backup_with(&dest, base.as_deref(), &opts)
            .map_err(Error::from)
            .and_then(|rep| remote.upload_backup(&rep.dir).map(|()| rep));
        if moved {
            cx.state.transition(OpState::BackingUp, OpState::Running);
        }
        match res {
            Ok(mut rep) => {
                {
                    let mut info = self.info.lock();
                    info.taken += 1;
                    info.last_dir = Some(rep.dir.clone());
                    info.last_ms = cx.clock.now_ms();
                    info.last_error = None;
                }
                tracing::info!(event = "backup_done", dir = %rep.dir.display(), bytes = rep.bytes_copied, seconds = rep.seconds, "backup completed");
                // With the drill, retention waits until the backup restored correctly.
                match rep.snapshot.take() {
                    Some(snapshot) => {
                        self.drills.start(DrillJob {
                            dir: rep.dir.clone(),
                            manifest: rep.manifest.clone(),
                            snapshot,
                            cfg: cx.cfg.clone(),
                            peer_floor: cx.peer_floor,
                            remote,
                        });
                    }
                    None => retention(cx.cfg, cx.peer_floor, &remote),
                }
                Ok(rep)
            }
            Err(e) => {
                {
                    let mut info = self.info.lock();
                    info.failed += 1;
                    info.last_error = Some(e.to_string());
                }
                tracing::error!(event = "backup_failed", error = %e, "backup failed");
                Err(e)
            }
        }
    }
}

/// Applies retention after a backup; a failure is logged (the backup itself stands).
pub(super) fn retention(
    cfg: &ServerConfig,
    floor: Option<duplex_engine::PeerFloor>,
    remote: &crate::remote::Remote,
) {
    // With backups in object storage, retention runs there; the local cache keeps only the
    // newest backup (the base of the next incremental one). With the archive there, the
    // spool is left to the uploader (it removes each segment once the store holds it).
    remote.retention(cfg.keep_backups);
    let keep = if remote.backups_remote() {
        1
    } else {
        cfg.keep_backups
    };
    let archive = if remote.archive_remote() {
        None
    } else {
        cfg.archive()
    };
    match duplex_engine::apply_retention_for_peers(
        &duplex_wal::StdStorage,
        &cfg.backup_dir,
        archive,
        keep,
        floor,
    ) {
        Ok(r) if r.peer_floor_dropped => tracing::warn!(
            event = "retention_dropped_peer_archive",
            backups_removed = r.backups_removed.len(),
            segments_removed = r.segments_removed.len(),
            max_bytes = cfg.peer_retention_bytes,
            "retention removed archive a peer still needed (more than peer_retention_bytes): that peer must be rebuilt"
        ),
        Ok(r) => tracing::info!(
            event = "retention",
            backups_removed = r.backups_removed.len(),
            segments_removed = r.segments_removed.len(),
            "retention applied"
        ),
        Err(e) => {
            tracing::warn!(event = "retention_failed", error = %e, "retention failed")
        }
    }
}

/// Whether `n` names a directory inside the backup directory (not a path, not hidden, not
/// a leftover of an interrupted copy).
fn plain_name(n: &str) -> bool {
    !(n.is_empty()
        || n.contains('/')
        || n.contains('\\')
        || n.starts_with('.')
        || n.ends_with(".tmp"))
}

/// `name`, or `name-2`, `name-3`, ... whichever does not exist under `root`.
fn unique_dir(root: &Path, name: &str) -> PathBuf {
    let mut p = root.join(name);
    let mut i = 2;
    while p.exists() {
        p = root.join(format!("{name}-{i}"));
        i += 1;
    }
    p
}

/// `YYYYMMDDTHHMMSS.mmmZ` (UTC) for Unix milliseconds.
pub fn timestamp_name(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(timestamp_name(0), "19700101T000000.000Z");
        assert_eq!(timestamp_name(1_700_000_000_123), "20231114T221320.123Z");
        assert!(plain_name("first"));
        for bad in ["", "../evil", "a\\b", ".hidden", "x.tmp"] {
            assert!(!plain_name(bad), "{bad}");
        }
        let d = tempfile::tempdir().unwrap();
        assert_eq!(newest_backup(d.path(), (1, 1)), None);
        assert_eq!(newest_backup(&d.path().join("missing"), (1, 1)), None);
        std::fs::create_dir(d.path().join("n")).unwrap();
        // A directory without a readable manifest is not a backup.
        assert_eq!(newest_backup(d.path(), (1, 1)), None);
        assert_eq!(unique_dir(d.path(), "n"), d.path().join("n-2"));
    }

    /// Only backups of the database's own lineage count for the schedule: after a restore
    /// (a new timeline) the older backups cannot reach its writes.
    #[test]
    fn the_newest_backup_is_the_newest_of_the_lineage() {
        let d = tempfile::tempdir().unwrap();
        let put = |name: &str, timeline: u64, created_ms: u64| {
            let dir = d.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            let m = duplex_engine::backup::BackupManifest {
                node_id: 1,
                generation: 1,
                checkpoint_offset: 0,
                committed_len: 0,
                checkpoint_lsn: 0,
                created_ms,
                end_lsn: 0,
                timeline,
                base_len: 0,
                base_crc: 0,
                store_crc: 0,
                files: Vec::new(),
            };
            std::fs::write(dir.join(duplex_engine::backup::BACKUP_MANIFEST), m.encode()).unwrap();
            dir
        };
        let old = put("old", 1, 1_000);
        let newer_t1 = put("newer", 1, 2_000);
        assert_eq!(newest_backup(d.path(), (1, 1)), Some((newer_t1, 2_000)));
        assert_eq!(
            newest_backup(d.path(), (1, 2)),
            None,
            "no backup of timeline 2 yet"
        );
        let t2 = put("t2", 2, 1_500);
        assert_eq!(newest_backup(d.path(), (1, 2)), Some((t2, 1_500)));
        assert_eq!(newest_backup(d.path(), (2, 1)), None, "another node's");
        drop(old);
        assert_eq!(unique_dir(d.path(), "m"), d.path().join("m"));
    }
}
