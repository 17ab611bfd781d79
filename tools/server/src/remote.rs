//! Backups and the WAL archive in object storage (`backup_dir` / `archive_dir` written
//! `s3://bucket/prefix`).
//!
//! The daemon keeps working on local directories, so every local rule (the archiver's
//! bounded lag and `.partial`, backups by file copy, the restore drill, retention) is the
//! one already tested on disk, and the store adds to it:
//!
//! - the archive is written into a local **spool**, `<data>.s3/archive` (the on-disk
//!   archive layout), and an uploader thread ([`duplex_objstore::mirror`]) sends its new
//!   bytes as fragments at least every half `archive_lag_ms`, seals each closed segment
//!   and removes it from the spool once sealed: the WAL is kept until the archiver copied
//!   it, the spool until the store holds it, and a slow or failing store never holds up a
//!   write (it costs local disk, and shows in INFO `archive_upload_*`);
//! - a backup is taken into `<data>.s3/backups/<name>` as on disk, then uploaded in
//!   parallel parts (`BACKUP` last) before it counts as taken; the drill restores the local
//!   copy; once it passed, retention runs in the store (backups and archive segments) and
//!   keeps only the newest backup (with its chain) in the local cache.
//!
//! Credentials come from the `AWS_*` environment or the `[s3]` section of the config
//! file; no URL, log line, INFO field or error carries them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use duplex_objstore::mirror::{Mirror, MirrorStatus};
use duplex_objstore::{Location, S3Settings, Store};
use parking_lot::Mutex;

use crate::config::ServerConfig;
use crate::Error;

/// The object storage of a daemon; empty when both locations are directories.
#[derive(Default)]
pub struct Remote {
    backup: Option<Store>,
    archive: Option<Store>,
    archive_url: Option<String>,
    backup_url: Option<String>,
    mirror: Mutex<Option<Mirror>>,
    uploads: Mutex<UploadInfo>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({:?}, {:?})", self.backup_url, self.archive_url)
    }
}

/// What the backup uploads did, for INFO.
#[derive(Debug, Clone, Default)]
pub struct UploadInfo {
    /// Backups uploaded since start.
    pub uploaded: u64,
    /// Bytes of the last one.
    pub last_bytes: u64,
    /// Seconds the last one took.
    pub last_seconds: f64,
    /// The last upload error (cleared by a success).
    pub last_error: Option<String>,
}

fn settings(cfg: &ServerConfig) -> S3Settings {
    cfg.s3.clone()
}

fn connect(url: &Path, cfg: &ServerConfig) -> Result<Option<Store>, Error> {
    let loc = Location::parse(url).map_err(|e| Error::Config(e.to_string()))?;
    match loc {
        Location::Local(_) => Ok(None),
        s3 => Store::connect(&s3, &settings(cfg))
            .map(Some)
            .map_err(|e| Error::Config(e.to_string())),
    }
}

/// `<data>.s3`: the local cache of backups and the archive spool.
pub fn cache_dir(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(".s3");
    PathBuf::from(s)
}

/// Connects to the stores `backup_dir` and `archive_dir` name (if `s3://`) and points them
/// at the local cache and spool; the config is unchanged for directories.
pub fn resolve(mut cfg: ServerConfig) -> Result<(ServerConfig, Remote), Error> {
    let mut r = Remote::default();
    if let Some(st) = connect(&cfg.backup_dir, &cfg)? {
        r.backup_url = Some(st.url());
        r.backup = Some(st);
        cfg.backup_dir = cache_dir(&cfg.data).join("backups");
    }
    if cfg.archive().is_some() {
        if let Some(st) = connect(&cfg.archive_dir, &cfg)? {
            r.archive_url = Some(st.url());
            r.archive = Some(st);
            cfg.archive_dir = cache_dir(&cfg.data).join("archive");
        }
    }
    Ok((cfg, r))
}

impl Remote {
    /// Starts the archive uploader over the spool (with an `s3://` archive).
    pub fn start_mirror(&self, cfg: &ServerConfig) -> Result<(), Error> {
        let (Some(url), Some(spool)) = (&self.archive_url, cfg.archive()) else {
            return Ok(());
        };
        let store =
            connect(Path::new(url), cfg)?.ok_or_else(|| Error::Config("archive store".into()))?;
        let period = Duration::from_millis((cfg.archive_lag_ms / 2).clamp(50, 60_000));
        *self.mirror.lock() = Some(Mirror::start(store, spool.to_path_buf(), period));
        tracing::info!(event = "archive_upload_start", store = %url, spool = %spool.display(), "archive uploads to object storage started");
        Ok(())
    }

    /// Stops the uploader after a last round.
    pub fn stop_mirror(&self) {
        if let Some(m) = self.mirror.lock().take() {
            m.stop();
        }
    }

    /// Whether backups go to object storage.
    pub fn backups_remote(&self) -> bool {
        self.backup.is_some()
    }

    /// Whether the archive goes to object storage.
    pub fn archive_remote(&self) -> bool {
        self.archive.is_some()
    }

    /// The backup store's URL (no credentials).
    pub fn backup_url(&self) -> Option<&str> {
        self.backup_url.as_deref()
    }

    /// The archive store's URL (no credentials).
    pub fn archive_url(&self) -> Option<&str> {
        self.archive_url.as_deref()
    }

    /// The uploader's status (`None` without an `s3://` archive).
    pub fn mirror_status(&self) -> Option<MirrorStatus> {
        self.mirror.lock().as_ref().map(Mirror::status)
    }

    /// What the backup uploads did.
    pub fn upload_info(&self) -> UploadInfo {
        self.uploads.lock().clone()
    }

    /// Uploads the complete local backup `dir` (a no-op without an `s3://` backup_dir).
    pub fn upload_backup(&self, dir: &Path) -> Result<(), Error> {
        let Some(st) = &self.backup else {
            return Ok(());
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let r = duplex_objstore::backup::upload_backup(st, dir, &name, &|_| {});
        let mut u = self.uploads.lock();
        match r {
            Ok(up) => {
                u.uploaded += 1;
                u.last_bytes = up.bytes;
                u.last_seconds = up.seconds;
                u.last_error = None;
                tracing::info!(event = "backup_uploaded", object = %st.object_url(&name), bytes = up.bytes, seconds = up.seconds, "backup uploaded to object storage");
                Ok(())
            }
            Err(e) => {
                u.last_error = Some(e.to_string());
                Err(Error::Remote(e))
            }
        }
    }

    /// Retention in the store, after the newest backup's drill passed (or at once without
    /// the drill): logged, never fatal.
    pub fn retention(&self, keep: usize) {
        let Some(st) = &self.backup else {
            return;
        };
        match duplex_objstore::backup::apply_retention(st, self.archive.as_ref(), keep) {
            Ok(r) => tracing::info!(
                event = "retention_remote",
                backups_removed = r.backups.len(),
                segments_removed = r.segments,
                "retention applied in object storage"
            ),
            Err(e) => {
                tracing::warn!(event = "retention_remote_failed", error = %e, "retention in object storage failed")
            }
        }
    }
}
