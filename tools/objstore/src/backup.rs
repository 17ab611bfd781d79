//! A backup in object storage: `<prefix>/<name>/<file>` for every file of the backup
//! directory, then `<prefix>/<name>/CHECKSUMS`, then `<prefix>/<name>/BACKUP` last. A
//! prefix without a `BACKUP` object (an upload that did not finish) is not a backup.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex_engine::backup::{BackupManifest, BACKUP_MANIFEST};

use crate::sums::{self, FileSums};
use crate::{Error, Result, Store, PART_SIZE};

/// What an upload did.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Bytes uploaded.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// Attempts per file (each after a pause doubling from 1 s).
const ATTEMPTS: u32 = 4;

/// Runs `f` up to [`ATTEMPTS`] times with backoff while it fails with a request error.
pub(crate) fn with_retries<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut pause = Duration::from_secs(1);
    let mut n = 1;
    loop {
        match f() {
            Err(Error::Request { .. }) if n < ATTEMPTS => {
                std::thread::sleep(pause);
                pause *= 2;
                n += 1;
            }
            r => return r,
        }
    }
}

/// Uploads the complete backup directory `dir` as `name`: each file listed in its
/// manifest (large ones in parallel parts), then `CHECKSUMS`, then `BACKUP`, then checks
/// that every object is there with its length. Refused if `name` already holds a backup.
pub fn upload_backup(
    store: &Store,
    dir: &Path,
    name: &str,
    progress: &dyn Fn(u64),
) -> Result<Uploaded> {
    let started = Instant::now();
    let rel = |f: &str| format!("{name}/{f}");
    if store.head(&rel(BACKUP_MANIFEST))?.is_some() {
        return Err(Error::Exists {
            object: store.object_url(name),
        });
    }
    let mpath = dir.join(BACKUP_MANIFEST);
    let mbytes = std::fs::read(&mpath).map_err(|e| Error::io("read", &mpath, e))?;
    let m = BackupManifest::decode(&mbytes).map_err(|e| Error::Malformed {
        object: mpath.display().to_string(),
        reason: format!("{e:?}"),
    })?;
    let mut all = Vec::new();
    let mut bytes = 0;
    for f in &m.files {
        let src = dir.join(&f.name);
        let (len, crcs) = with_retries(|| store.put_file(&rel(&f.name), &src, progress))?;
        if len != f.len || combine(&crcs, len) != f.crc {
            return Err(Error::Malformed {
                object: src.display().to_string(),
                reason: format!(
                    "the file changed while uploading: {len} bytes, the manifest says {}",
                    f.len
                ),
            });
        }
        bytes += len;
        all.push(FileSums {
            name: f.name.clone(),
            len,
            crcs,
        });
    }
    all.push(FileSums {
        name: BACKUP_MANIFEST.into(),
        len: mbytes.len() as u64,
        crcs: vec![crc32c::crc32c(&mbytes)],
    });
    let sums = Bytes::from(sums::encode(&all));
    with_retries(|| store.put_bytes(&rel(sums::NAME), sums.clone()))?;
    let mb = Bytes::from(mbytes);
    with_retries(|| store.put_bytes(&rel(BACKUP_MANIFEST), mb.clone()))?;
    bytes += mb.len() as u64;
    // Read back the listing: every object whole.
    let listed = store.list(name)?;
    for f in &all {
        let key = rel(&f.name);
        match listed.iter().find(|l| l.rel == key) {
            Some(l) if l.size == f.len => {}
            Some(l) => {
                return Err(Error::Length {
                    object: store.object_url(&key),
                    expected: f.len,
                    found: l.size,
                })
            }
            None => {
                return Err(Error::Missing {
                    object: store.object_url(&key),
                    hint: " after its upload",
                })
            }
        }
    }
    Ok(Uploaded {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// CRC32C of a whole file from the CRC32Cs of its [`PART_SIZE`] chunks.
pub fn combine(crcs: &[u32], len: u64) -> u32 {
    let mut acc = 0u32;
    let mut left = len;
    for (i, c) in crcs.iter().enumerate() {
        let n = left.min(PART_SIZE);
        acc = if i == 0 {
            *c
        } else {
            crc32c::crc32c_combine(acc, *c, n as usize)
        };
        left -= n;
    }
    acc
}

/// The manifest and checksums of backup `name`, both checked.
pub fn read_backup(store: &Store, name: &str) -> Result<(BackupManifest, Vec<FileSums>, Bytes)> {
    let rel = |f: &str| format!("{name}/{f}");
    let mb = store.get_bytes(&rel(BACKUP_MANIFEST)).map_err(|e| match e {
        Error::Missing { object, .. } => Error::Missing {
            object,
            hint: ": not a complete backup (no BACKUP manifest: the upload did not finish, or the name is wrong)",
        },
        e => e,
    })?;
    let m = BackupManifest::decode(&mb).map_err(|e| Error::Malformed {
        object: store.object_url(&rel(BACKUP_MANIFEST)),
        reason: format!("the manifest does not read: {e:?}"),
    })?;
    let sb = store.get_bytes(&rel(sums::NAME))?;
    let s = sums::decode(&sb).map_err(|reason| Error::Malformed {
        object: store.object_url(&rel(sums::NAME)),
        reason,
    })?;
    for f in &m.files {
        let Some(x) = s.iter().find(|x| x.name == f.name) else {
            return Err(Error::Malformed {
                object: store.object_url(&rel(sums::NAME)),
                reason: format!("no checksums for {}", f.name),
            });
        };
        if x.len != f.len || combine(&x.crcs, x.len) != f.crc {
            return Err(Error::Malformed {
                object: store.object_url(&rel(sums::NAME)),
                reason: format!(
                    "its checksums of {} disagree with the BACKUP manifest",
                    f.name
                ),
            });
        }
    }
    Ok((m, s, mb))
}

/// Bytes a download of backup `name` reads.
pub fn backup_bytes(store: &Store, name: &str) -> Result<u64> {
    let (m, _, mb) = read_backup(store, name)?;
    Ok(m.files.iter().map(|f| f.len).sum::<u64>() + mb.len() as u64)
}

/// Downloads backup `name` into the new directory `dst` (ranged parallel reads, every
/// chunk checked against `CHECKSUMS`, every file against the manifest), fsynced. The
/// result is a backup directory as `Database::backup` writes it.
pub fn download_backup(
    store: &Store,
    name: &str,
    dst: &Path,
    progress: &dyn Fn(u64),
) -> Result<BackupManifest> {
    let (m, s, mb) = read_backup(store, name)?;
    std::fs::create_dir_all(dst).map_err(|e| Error::io("create directory", dst, e))?;
    for f in &m.files {
        let Some(x) = s.iter().find(|x| x.name == f.name) else {
            continue; // checked by read_backup
        };
        store.get_file(
            &format!("{name}/{}", f.name),
            x.len,
            &x.crcs,
            &dst.join(&f.name),
            progress,
        )?;
    }
    let mp = dst.join(BACKUP_MANIFEST);
    std::fs::write(&mp, &mb).map_err(|e| Error::io("write", &mp, e))?;
    progress(mb.len() as u64);
    let d = std::fs::File::open(dst).map_err(|e| Error::io("open", dst, e))?;
    d.sync_all().map_err(|e| Error::io("fsync", dst, e))?;
    Ok(m)
}

/// The complete backups in the store (a `BACKUP` that reads), by name.
pub fn list_backups(store: &Store) -> Result<Vec<(String, BackupManifest)>> {
    let mut out = Vec::new();
    for name in store.list_dirs("")? {
        if name.starts_with('.') {
            continue;
        }
        match store.get_bytes(&format!("{name}/{BACKUP_MANIFEST}")) {
            Ok(b) => {
                if let Ok(m) = BackupManifest::decode(&b) {
                    out.push((name, m));
                }
            }
            Err(Error::Missing { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// What retention removed from object storage.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    /// Backups deleted.
    pub backups: Vec<String>,
    /// Archived segments deleted.
    pub segments: usize,
}

/// Retention in object storage, as `apply_retention` on disk: per lineage (node,
/// timeline), the newest `keep` backups stay with the bases their incrementals need; the
/// others go (their `BACKUP` first, so a half-deleted one is never taken for a backup),
/// then the archived segments of that lineage wholly below the oldest kept backup's
/// `checkpoint_lsn + 1`. Call it only once the newest backup is verified (drilled).
pub fn apply_retention(store: &Store, archive: Option<&Store>, keep: usize) -> Result<Removed> {
    let all = list_backups(store)?;
    let mut lineages: Vec<(u64, u64)> = all.iter().map(|(_, m)| (m.node_id, m.timeline)).collect();
    lineages.sort_unstable();
    lineages.dedup();
    let mut removed = Removed::default();
    for lin in lineages {
        let mut of: Vec<&(String, BackupManifest)> = all
            .iter()
            .filter(|(_, m)| (m.node_id, m.timeline) == lin)
            .collect();
        of.sort_by_key(|(n, m)| (m.created_ms, n.clone()));
        let mut kept: Vec<usize> = (of.len().saturating_sub(keep.max(1))..of.len()).collect();
        let mut i = 0;
        while i < kept.len() {
            let m = &of[kept[i]].1;
            if m.is_incremental() {
                if let Some(b) = of.iter().position(|(_, x)| {
                    x.generation == m.generation
                        && x.committed_len == m.base_len
                        && x.store_crc == m.base_crc
                }) {
                    if !kept.contains(&b) {
                        kept.push(b);
                    }
                }
            }
            i += 1;
        }
        for (i, (name, _)) in of.iter().enumerate() {
            if kept.contains(&i) {
                continue;
            }
            store.delete(&format!("{name}/{BACKUP_MANIFEST}"))?;
            for o in store.list(name)? {
                store.delete(&o.rel)?;
            }
            removed.backups.push(name.clone());
        }
        let oldest = kept.iter().map(|&i| of[i].1.checkpoint_lsn).min();
        if let (Some(a), Some(lsn)) = (archive, oldest) {
            removed.segments += crate::archive::prune(a, lin.0, lin.1, lsn + 1)?;
        }
    }
    Ok(removed)
}
