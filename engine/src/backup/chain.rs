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
    /// The archive a peer still needed ([`PeerFloor`]) exceeded its bound and was pruned
    /// anyway: that peer must be rebuilt.
    pub peer_floor_dropped: bool,
}

/// What replication still needs of a lineage's archive: the segments holding this node's
/// batches after `lsn` (the least any peer acknowledged), kept by retention as long as they
/// take at most `max_bytes` beyond what the backups keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFloor {
    /// The node whose archive it is.
    pub node: u64,
    /// Its timeline (incarnation).
    pub timeline: u64,
    /// Every peer holds this node's batches up to this LSN.
    pub lsn: u64,
    /// Most bytes of archive kept for peers beyond the backups' needs.
    pub max_bytes: u64,
}

/// Keeps the newest `keep` complete backups of each lineage (node and timeline) under
/// `backups_root` (directories holding a valid `BACKUP` manifest, ordered by creation
/// time) and the archive they need: older backups of that lineage are deleted, then the
/// segments of that lineage's archive directory (`n<node>-t<timeline>` under
/// `archive_dir`) wholly below its oldest kept backup's checkpoint. The backups and
/// archive of another lineage sharing the roots (the original of a restored copy, another
/// server) are never touched by this lineage's retention. Call it after a backup
/// completed, never before, so there is always a way back. Incomplete `*.tmp` directories
/// are left alone; a backup that others in the kept set build on (incremental chains) is
/// kept with them.
pub fn apply_retention(
    storage: &dyn Storage,
    backups_root: &Path,
    archive_dir: Option<&Path>,
    keep: usize,
) -> Result<RetentionReport> {
    apply_retention_for_peers(storage, backups_root, archive_dir, keep, None)
}

/// [`apply_retention`], keeping also the archive segments peers still need (`floor`), up
/// to its byte bound; past it the segments are pruned as if no peer needed them and the
/// report says so ([`RetentionReport::peer_floor_dropped`]).
pub fn apply_retention_for_peers(
    storage: &dyn Storage,
    backups_root: &Path,
    archive_dir: Option<&Path>,
    keep: usize,
    floor: Option<PeerFloor>,
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
    found.sort_by_key(|(m, _)| (m.node_id, m.timeline, m.created_ms, m.checkpoint_lsn));
    let mut report = RetentionReport::default();
    for lineage in found.chunk_by(|a, b| (a.0.node_id, a.0.timeline) == (b.0.node_id, b.0.timeline))
    {
        let own =
            floor.filter(|f| (f.node, f.timeline) == (lineage[0].0.node_id, lineage[0].0.timeline));
        retain_lineage(storage, lineage, archive_dir, keep, own, &mut report)?;
    }
    Ok(report)
}

/// [`apply_retention`] of the backups of one lineage, oldest first.
fn retain_lineage(
    storage: &dyn Storage,
    found: &[(BackupManifest, PathBuf)],
    archive_dir: Option<&Path>,
    keep: usize,
    floor: Option<PeerFloor>,
    report: &mut RetentionReport,
) -> Result<()> {
    if found.len() <= keep {
        return Ok(());
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
        let lineage = (oldest.node_id, oldest.timeline);
        let mut below = oldest.checkpoint_lsn + 1;
        if let Some(f) = floor.filter(|f| f.lsn + 1 < below) {
            if kept_bytes(storage, archive, lineage, f.lsn + 1, below)? <= f.max_bytes {
                below = f.lsn + 1;
            } else {
                report.peer_floor_dropped = true;
            }
        }
        report
            .segments_removed
            .extend(duplex_wal::prune_archive_lineage(
                storage,
                archive,
                Some(lineage),
                below,
            )?);
    }
    Ok(())
}

/// Bytes of the lineage's archived segments that retention would remove below `to` but a
/// floor at `from` keeps: those holding LSNs in `from..to`.
fn kept_bytes(
    storage: &dyn Storage,
    archive: &Path,
    lineage: (u64, u64),
    from: u64,
    to: u64,
) -> Result<u64> {
    let dirs =
        duplex_wal::resolve_archive_dirs(storage, archive, Some(lineage.0), Some(lineage.1))?;
    let segs = duplex_wal::list_segments(storage, &dirs)?;
    let mut total = 0u64;
    for (i, (first, path)) in segs.iter().enumerate() {
        let end = segs.get(i + 1).map_or(u64::MAX, |s| s.0);
        if end <= from || *first >= to {
            continue;
        }
        let f = storage
            .open(path, duplex_wal::OpenMode::Read)
            .map_err(|e| Error::io("open archived segment", path, e))?;
        total += f
            .len()
            .map_err(|e| Error::io("size of archived segment", path, e))?;
    }
    Ok(total)
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
    storage
        .create_dir_all(&staged)
        .map_err(|e| Error::io("create directory", &staged, e))?;
    // The backup's manifest goes with its WAL: the roll-forward reads its lineage there.
    let names = m
        .files
        .iter()
        .filter(|f| is_segment(&f.name))
        .map(|f| (f.name.as_str(), f.len));
    let manifest_len = storage
        .open(&dir.join(BACKUP_MANIFEST), OpenMode::Read)
        .and_then(|f| f.len())
        .map_err(|e| Error::io("stat", dir.join(BACKUP_MANIFEST), e))?;
    for (name, len) in names.chain([(BACKUP_MANIFEST, manifest_len)]) {
        let to = staged.join(name);
        storage
            .copy_prefix(&dir.join(name), &to, len)
            .map_err(|e| Error::io("copy WAL segment", &to, e))?;
        storage
            .open(&to, OpenMode::ReadWrite)
            .and_then(|h| h.sync_data())
            .map_err(|e| Error::io("fsync", &to, e))?;
    }
    storage
        .sync_dir(&staged)
        .map_err(|e| Error::io("fsync directory", &staged, e))?;
    Ok(())
}

/// The timeline of the backup staged in `staged` by [`restore_chain`]: its manifest's, or
/// (staged by an older build, without the manifest) that of its newest WAL segment; 1 if
/// neither is there.
pub(crate) fn staged_timeline(storage: &dyn Storage, staged: &Path) -> Result<u64> {
    if storage.exists(&staged.join(BACKUP_MANIFEST)) {
        return Ok(read_backup_manifest(storage, staged)?.timeline);
    }
    let segments = duplex_wal::list_segments(storage, &[staged.to_path_buf()])?;
    for (_, path) in segments.iter().rev() {
        if let Some((_, t)) = duplex_wal::segment_lineage(storage, path)? {
            return Ok(t);
        }
    }
    Ok(1)
}

/// Checks the WAL a backup carries (after [`verify_backup`] checked its files): every
/// record from the checkpoint to exactly the manifest's `end_lsn`, whole, of its node.
pub fn verify_backup_wal(storage: &Arc<dyn Storage>, dir: &Path, m: &BackupManifest) -> Result<()> {
    crate::backup_wal::check_wal(storage, dir, m)
}
