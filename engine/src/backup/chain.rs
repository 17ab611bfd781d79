//! Restoring a backup chain into an empty directory (with the last backup's WAL staged
//! for the roll-forward), checking a backup's WAL, and retention of backups and archive.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::{OpenMode, Storage};

use super::{
    file_crc, read_backup_manifest, remove_tree, verify_backup, BackupManifest, BACKUP_MANIFEST,
};
use crate::backup_wal::{is_segment, RESTORE_WAL_DIR};
use crate::error::{CorruptKind, Error, Result};
use crate::format::store_file_name;
use crate::store::write_manifest;

/// What [`apply_retention`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Backup directories deleted.
    pub backups_removed: Vec<PathBuf>,
    /// Archived WAL segments deleted.
    pub segments_removed: Vec<PathBuf>,
}

/// Keeps the newest `keep` complete backups under `backups_root` (directories holding a
/// valid `BACKUP` manifest, ordered by creation time) and the archive they need: older
/// backups are deleted, then archived segments wholly below the oldest kept backup's
/// checkpoint. Call it after a backup completed, never before, so there is always a way
/// back. Incomplete `*.tmp` directories are left alone; a backup that others in the kept
/// set build on (incremental chains) is kept with them.
pub fn apply_retention(
    storage: &dyn Storage,
    backups_root: &Path,
    archive_dir: Option<&Path>,
    keep: usize,
) -> Result<RetentionReport> {
    if keep == 0 {
        return Err(Error::Config(
            "retention must keep at least one backup".into(),
        ));
    }
    let mut found: Vec<(BackupManifest, PathBuf)> = Vec::new();
    for name in storage
        .list(backups_root)
        .map_err(|e| Error::io("list", backups_root, e))?
    {
        let dir = backups_root.join(&name);
        if name.ends_with(".tmp") || !storage.exists(&dir.join(BACKUP_MANIFEST)) {
            continue;
        }
        if let Ok(m) = read_backup_manifest(storage, &dir) {
            found.push((m, dir));
        }
    }
    found.sort_by_key(|(m, _)| (m.created_ms, m.checkpoint_lsn));
    let mut report = RetentionReport::default();
    if found.len() <= keep {
        return Ok(report);
    }
    let mut first_kept = found.len() - keep;
    // An incremental backup needs its whole chain back to a full one.
    while first_kept > 0 && found[first_kept].0.is_incremental() {
        first_kept -= 1;
    }
    for (_, dir) in &found[..first_kept] {
        remove_tree(storage, dir)?;
        report.backups_removed.push(dir.clone());
    }
    if let (Some(archive), Some((oldest, _))) = (archive_dir, found.get(first_kept)) {
        report.segments_removed =
            duplex_wal::prune_archive(storage, archive, oldest.checkpoint_lsn + 1)?;
    }
    Ok(report)
}

/// Restores a backup chain (a full backup, then zero or more incrementals, oldest first)
/// into the empty directory `into`: verifies every file, assembles the store, writes the
/// engine manifest. Returns the last backup's manifest. The result still needs a WAL: see
/// [`crate::roll_forward`].
pub fn restore_chain(
    storage: &Arc<dyn Storage>,
    chain: &[PathBuf],
    into: &Path,
) -> Result<BackupManifest> {
    let Some(first) = chain.first() else {
        return Err(Error::Config("no backup given to restore".into()));
    };
    if storage.exists(into)
        && !storage
            .list(into)
            .map_err(|e| Error::io("list", into, e))?
            .is_empty()
    {
        return Err(Error::Config(format!(
            "{} is not empty; restore into an empty directory",
            into.display()
        )));
    }
    let mut manifests = Vec::with_capacity(chain.len());
    for dir in chain {
        manifests.push(verify_backup(&**storage, dir)?);
    }
    let m0 = &manifests[0];
    if m0.is_incremental() {
        return Err(Error::Config(format!(
            "{} is an incremental backup; a chain starts with a full backup",
            first.display()
        )));
    }
    for (w, dir) in manifests.windows(2).zip(&chain[1..]) {
        let (prev, next) = (&w[0], &w[1]);
        if !next.is_incremental()
            || next.node_id != prev.node_id
            || next.generation != prev.generation
            || next.base_len != prev.committed_len
            || next.base_crc != prev.store_crc
        {
            return Err(Error::Config(format!(
                "{} does not continue the chain (its base is {} bytes with CRC {:#010x}; the previous backup has {} bytes with CRC {:#010x})",
                dir.display(),
                next.base_len,
                next.base_crc,
                prev.committed_len,
                prev.store_crc
            )));
        }
    }
    storage
        .create_dir_all(into)
        .map_err(|e| Error::io("create directory", into, e))?;
    let last = manifests.last().cloned().unwrap_or_else(|| m0.clone());
    let store = into.join(store_file_name(last.generation));
    storage
        .copy_prefix(&first.join(m0.store_part_name()), &store, m0.committed_len)
        .map_err(|e| Error::io("copy store", &store, e))?;
    let out = storage
        .open(&store, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", &store, e))?;
    for (m, dir) in manifests.iter().zip(chain).skip(1) {
        let part = dir.join(m.store_part_name());
        let src = storage
            .open(&part, OpenMode::Read)
            .map_err(|e| Error::io("open", &part, e))?;
        let mut buf = vec![0u8; 8 << 20];
        let mut off = 0u64;
        let len = m.committed_len - m.base_len;
        while off < len {
            let n = (len - off).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], off)
                .map_err(|e| Error::io("read", &part, e))?;
            out.write_all_at(&buf[..n], m.base_len + off)
                .map_err(|e| Error::io("write", &store, e))?;
            off += n as u64;
        }
    }
    out.sync_data().map_err(|e| Error::io("fsync", &store, e))?;
    // The assembled image must be exactly what the last backup saw.
    let crc = file_crc(&*out, &store, last.committed_len)?;
    if crc != last.store_crc {
        return Err(Error::corrupt(
            &store,
            0,
            CorruptKind::CrcMismatch {
                expected: last.store_crc,
                actual: crc,
            },
        ));
    }
    write_manifest(&**storage, into, &last.engine_manifest())?;
    let last_dir = chain.last().unwrap_or(first);
    stage_backup_wal(storage, last_dir, &last, into)?;
    storage
        .sync_dir(into)
        .map_err(|e| Error::io("fsync directory", into, e))?;
    Ok(last)
}

/// Checks the WAL of the backup `dir` and copies it into `into`'s
/// [`RESTORE_WAL_DIR`], where [`crate::roll_forward`] reads it before any archive.
fn stage_backup_wal(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    m: &BackupManifest,
    into: &Path,
) -> Result<()> {
    crate::backup_wal::check_wal(storage, dir, m)?;
    let staged = into.join(RESTORE_WAL_DIR);
    for f in m.files.iter().filter(|f| is_segment(&f.name)) {
        storage
            .create_dir_all(&staged)
            .map_err(|e| Error::io("create directory", &staged, e))?;
        let to = staged.join(&f.name);
        storage
            .copy_prefix(&dir.join(&f.name), &to, f.len)
            .map_err(|e| Error::io("copy WAL segment", &to, e))?;
        storage
            .open(&to, OpenMode::ReadWrite)
            .and_then(|h| h.sync_data())
            .map_err(|e| Error::io("fsync", &to, e))?;
    }
    if storage.exists(&staged) {
        storage
            .sync_dir(&staged)
            .map_err(|e| Error::io("fsync directory", &staged, e))?;
    }
    Ok(())
}

/// Checks the WAL a backup carries (after [`verify_backup`] checked its files): every
/// record from the checkpoint to exactly the manifest's `end_lsn`, whole, of its node.
pub fn verify_backup_wal(storage: &Arc<dyn Storage>, dir: &Path, m: &BackupManifest) -> Result<()> {
    crate::backup_wal::check_wal(storage, dir, m)
}
