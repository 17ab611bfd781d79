//! `duplex-recover` with backups and archives in object storage (`s3://bucket/prefix`):
//! the objects are read with parallel ranged reads, every chunk checked against its
//! CRC32C, into a staging directory beside the target, and the restore then runs exactly
//! as from disk (with every check of the backup, its chain and the archive records); a
//! backup is taken into a staging directory and uploaded in parallel parts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duplex_objstore::{Error as ObjError, Location, S3Settings, Store};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exit::{Code, ToolError};
use crate::text::human_bytes;

/// True if any of `paths` is an `s3://` location.
pub fn any_s3(paths: &[PathBuf]) -> bool {
    paths.iter().any(|p| duplex_objstore::is_s3(p))
}

/// The exit code and message for an object storage error: damage is exit 1.
pub fn tool_error(e: ObjError) -> ToolError {
    let code = match e {
        ObjError::Corrupt { .. }
        | ObjError::Length { .. }
        | ObjError::Malformed { .. }
        | ObjError::Gap { .. } => Code::Damaged,
        ObjError::BadLocation { .. } | ObjError::Exists { .. } => Code::Usage,
        _ => Code::Operational,
    };
    ToolError::new(code, e.to_string())
}

/// The store holding `url`'s parent prefix, and the last component (a backup's name).
pub fn split_backup_url(url: &Path) -> Result<(Store, String), ToolError> {
    let loc = Location::parse(url).map_err(tool_error)?;
    let Location::S3 { bucket, prefix } = loc else {
        return Err(ToolError::usage("not an s3:// location"));
    };
    let (parent, name) = match prefix.rsplit_once('/') {
        Some((p, n)) => (p.to_owned(), n.to_owned()),
        None => (String::new(), prefix.clone()),
    };
    if name.is_empty() {
        return Err(ToolError::usage(format!(
            "{}: name the backup: s3://bucket/prefix/<backup name>",
            url.display()
        )));
    }
    let store = Store::connect(
        &Location::S3 {
            bucket,
            prefix: parent,
        },
        &S3Settings::default(),
    )
    .map_err(tool_error)?;
    Ok((store, name))
}

/// Connects to an archive root `s3://bucket/prefix`.
pub fn archive_store(url: &Path) -> Result<Store, ToolError> {
    let loc = Location::parse(url).map_err(tool_error)?;
    Store::connect(&loc, &S3Settings::default()).map_err(tool_error)
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total.max(1)), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// What was read from object storage, for the report.
#[derive(Debug, Default, Clone)]
pub struct Fetched {
    /// Bytes read.
    pub bytes: u64,
    /// Seconds spent reading.
    pub seconds: f64,
}

impl Fetched {
    /// One line for the report.
    pub fn line(&self) -> String {
        format!(
            "read {} from object storage in {:.2} s ({}/s), every chunk checked",
            human_bytes(self.bytes),
            self.seconds,
            human_bytes((self.bytes as f64 / self.seconds.max(1e-9)) as u64)
        )
    }
}

/// Replaces every `s3://` backup in `backups` by a verified local copy under `staging`.
pub fn fetch_backups(
    backups: &mut [PathBuf],
    staging: &Path,
    got: &mut Fetched,
) -> Result<(), ToolError> {
    for b in backups.iter_mut() {
        if !duplex_objstore::is_s3(b) {
            continue;
        }
        let (store, name) = split_backup_url(b)?;
        let total = duplex_objstore::backup::backup_bytes(&store, &name).map_err(tool_error)?;
        let dst = staging.join("backups").join(&name);
        let pb = bar(total, &format!("reading backup {name}"));
        let t = Instant::now();
        let r = duplex_objstore::backup::download_backup(&store, &name, &dst, &|n| pb.inc(n));
        pb.finish_and_clear();
        r.map_err(tool_error)?;
        got.bytes += total;
        got.seconds += t.elapsed().as_secs_f64();
        *b = dst;
    }
    Ok(())
}

/// Replaces every `s3://` archive root in `archives` by a local copy under `staging` of
/// the lineage (`node`, `timeline`) from the segment holding `from_lsn` on.
pub fn fetch_archives(
    archives: &mut [PathBuf],
    lineage: (u64, u64),
    from_lsn: u64,
    staging: &Path,
    got: &mut Fetched,
) -> Result<(), ToolError> {
    for (i, a) in archives.iter_mut().enumerate() {
        if !duplex_objstore::is_s3(a) {
            continue;
        }
        let store = archive_store(a)?;
        let (_, total) = duplex_objstore::archive::plan(&store, lineage.0, lineage.1, from_lsn)
            .map_err(tool_error)?;
        let dst = staging.join(format!("archive-{i}"));
        let pb = bar(
            total,
            &format!("reading archive n{}-t{}", lineage.0, lineage.1),
        );
        let t = Instant::now();
        let r = duplex_objstore::archive::download_lineage(
            &store,
            lineage.0,
            lineage.1,
            from_lsn,
            &dst,
            &|n| pb.inc(n),
        );
        pb.finish_and_clear();
        let d = r.map_err(tool_error)?;
        got.bytes += d.bytes;
        got.seconds += t.elapsed().as_secs_f64();
        *a = dst;
    }
    Ok(())
}

/// A staging directory beside `target` (removed when dropped).
pub struct Staging(pub PathBuf);

impl Staging {
    /// `.<target name>.s3-<pid>` beside `target`, created empty.
    pub fn beside(target: &Path) -> Result<Staging, ToolError> {
        let name = target
            .file_name()
            .map_or_else(|| "target".into(), |n| n.to_string_lossy().into_owned());
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = parent.join(format!(".{name}.s3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| {
            ToolError::new(
                Code::Operational,
                format!("creating the staging directory {}: {e}", dir.display()),
            )
        })?;
        Ok(Staging(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Uploads the backup directory `dir` to `url` (`s3://bucket/prefix/<name>`), files in
/// parallel parts, `BACKUP` last. Returns (bytes, seconds).
pub fn upload_backup(dir: &Path, url: &Path) -> Result<(u64, f64), ToolError> {
    let (store, name) = split_backup_url(url)?;
    let total: u64 = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let pb = bar(total, &format!("uploading backup {name}"));
    let r = duplex_objstore::backup::upload_backup(&store, dir, &name, &|n| pb.inc(n));
    pb.finish_and_clear();
    let u = r.map_err(tool_error)?;
    Ok((u.bytes, u.seconds))
}

/// For `restore` and `drill`: when a backup or an archive is `s3://`, reads them into a
/// staging directory beside `beside` (backups first, then the archive lineage of the last
/// backup from its checkpoint on) and rewrites the arguments to the local copies. `None`
/// when everything is local.
pub fn stage(
    backups: &mut [PathBuf],
    archives: &mut [PathBuf],
    beside: &Path,
) -> Result<Option<Staging>, ToolError> {
    if !any_s3(backups) && !any_s3(archives) {
        return Ok(None);
    }
    let staging = Staging::beside(beside)?;
    let mut got = Fetched::default();
    fetch_backups(backups, &staging.0, &mut got)?;
    if any_s3(archives) {
        let Some(last) = backups.last() else {
            return Err(ToolError::usage("give at least one --backup"));
        };
        let m = duplex_engine::backup::read_backup_manifest(&duplex_wal::StdStorage, last)
            .map_err(|e| ToolError::new(Code::Damaged, e.to_string()))?;
        fetch_archives(
            archives,
            (m.node_id, m.timeline),
            m.checkpoint_lsn + 1,
            &staging.0,
            &mut got,
        )?;
    }
    println!("{}", got.line());
    Ok(Some(staging))
}

/// `duplex-recover backup --into s3://...`: `take` backs up into the local directory it is
/// given (inside a staging directory beside `data`), then the backup is uploaded to `url`.
pub fn backup_then_upload(
    data: &Path,
    url: &Path,
    take: impl FnOnce(PathBuf) -> anyhow::Result<Code>,
) -> anyhow::Result<Code> {
    let staging = Staging::beside(data)?;
    let local = staging.0.join("backup");
    take(local.clone())?;
    let (bytes, secs) = upload_backup(&local, url)?;
    println!(
        "uploaded to {}: {} in {secs:.2} s ({}/s), BACKUP last",
        url.display(),
        human_bytes(bytes),
        human_bytes((bytes as f64 / secs.max(1e-9)) as u64)
    );
    Ok(Code::Ok)
}
