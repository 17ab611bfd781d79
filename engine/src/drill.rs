//! The restore drill: a backup proven by restoring it. A backup that was never restored is a
//! hope; the drill restores a backup chain into a scratch directory, rolls its WAL (and the
//! archive, if given) forward to the backup's recorded end LSN, opens the result, and
//! compares it version for version (the stamped digest: keys, values, tombstones and
//! stamps) with a snapshot of the live database taken at exactly that LSN
//! ([`crate::BackupOptions::snapshot_at_end`]). On a mismatch it names the first key
//! whose versions differ. Without a snapshot to compare with (`duplex-recover drill` by
//! hand) it reports the digest, which an operator compares with one taken elsewhere.
//!
//! The scratch directory is removed afterwards, whatever the outcome; it needs room for
//! one copy of the store.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use duplex_wal::Storage;

use crate::backup::remove_tree;
use crate::snapshot::{Digest, Snapshot, Version};
use crate::{
    restore_chain, roll_forward, Config, Database, Error, Result, RollForwardOptions, Target,
};

/// What a drill found.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillReport {
    /// The LSN the restore was rolled forward to.
    pub lsn: u64,
    /// Stamped digest of the restored database (keys, values, tombstones, stamps).
    pub restored: Digest,
    /// Stamped digest of the live snapshot it was compared with, if any.
    pub live: Option<Digest>,
    /// The first key (in key order) whose versions differ, when the digests do.
    pub first_difference: Option<Vec<u8>>,
    /// Seconds the drill took.
    pub seconds: f64,
}

impl DrillReport {
    /// True when there was a live snapshot and the restore equals it (versions one side
    /// reclaimed aside, see [`first_difference`]).
    pub fn passed(&self) -> bool {
        self.live.is_some() && self.first_difference.is_none()
    }
}

/// What to drill: a backup chain, the archive to roll forward through, where to restore
/// it, and what to compare it with.
#[derive(Debug, Clone, Copy)]
pub struct DrillSpec<'a> {
    /// A full backup, then its incrementals, oldest first.
    pub chain: &'a [PathBuf],
    /// Archive roots (or lineage directories) to roll forward through; none: the backup's
    /// own WAL only.
    pub archive: &'a [PathBuf],
    /// Scratch directory: must not exist or be empty; removed afterwards.
    pub scratch: &'a Path,
    /// The node id the backup belongs to.
    pub node_id: u64,
    /// Roll forward to this LSN; `None`: the last backup's end LSN.
    pub until: Option<u64>,
    /// The live data at that LSN, to compare with.
    pub live: Option<&'a Snapshot>,
}

/// Restores the chain of `spec` into its scratch directory, rolls forward, opens it as its
/// node, compares it with the live snapshot if given, and removes the scratch directory.
pub fn drill_backup(storage: &Arc<dyn Storage>, spec: &DrillSpec<'_>) -> Result<DrillReport> {
    let res = drill_in(storage, spec);
    // Best effort: a scratch directory left behind is removed by the next drill.
    let _ = remove_tree(&**storage, spec.scratch);
    res
}

fn drill_in(storage: &Arc<dyn Storage>, spec: &DrillSpec<'_>) -> Result<DrillReport> {
    let DrillSpec {
        chain,
        archive,
        scratch,
        node_id,
        until,
        live,
    } = *spec;
    let start = Instant::now();
    if storage.exists(scratch) {
        remove_tree(&**storage, scratch)?;
    }
    let manifest = restore_chain(storage, chain, scratch)?;
    let lsn = until.unwrap_or(manifest.end_lsn);
    let config = Config {
        node_id,
        background: false,
        scrub_bytes_per_sec: 0,
        max_key_size: crate::MAX_KEY_SIZE,
        max_value_size: crate::MAX_VALUE_SIZE,
        ..Config::default()
    };
    let opts = RollForwardOptions {
        target: Target::Lsn(lsn),
        config: config.clone(),
        ..RollForwardOptions::default()
    };
    let rolled = roll_forward(storage.clone(), scratch, archive, &opts, &mut |_| {})?;
    if rolled.to_lsn < lsn {
        return Err(Error::Config(format!(
            "the restore reached LSN {} only, not {lsn}: the backup's WAL and the archive given end there",
            rolled.to_lsn
        )));
    }
    let db = Database::open_with(storage.clone(), scratch, config)?;
    let restored = db.snapshot();
    let all = (Bound::Unbounded, Bound::Unbounded);
    let restored_digest = restored.stamped_digest(all.0, all.1)?;
    let (live_digest, first_difference) = match live {
        Some(l) => {
            let d = l.stamped_digest(all.0, all.1)?;
            // Equal digests are equal data; unequal ones may still differ only by versions
            // one side reclaimed (`Database::reclaim`), which the key-by-key walk accepts.
            let diff = if d == restored_digest {
                None
            } else {
                first_difference(l, &restored)?
            };
            (Some(d), diff)
        }
        None => (None, None),
    };
    drop(restored);
    db.close()?;
    Ok(DrillReport {
        lsn,
        restored: restored_digest,
        live: live_digest,
        first_difference,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The first key, in key order, whose versions (value or tombstone, and stamp) differ
/// between `a` and `b`, or that one of them lacks. A value on one side and a tombstone of
/// the same stamp on the other are the same version, reclaimed on one side
/// (`Database::reclaim` replaces a version that can never be read again, an expired or
/// flushed value, in memory only, so a restore brings back the value the live data
/// reclaimed).
pub fn first_difference(a: &Snapshot, b: &Snapshot) -> Result<Option<Vec<u8>>> {
    let mut ia = a.scan_versions(Bound::Unbounded, Bound::Unbounded)?;
    let mut ib = b.scan_versions(Bound::Unbounded, Bound::Unbounded)?;
    let (mut va, mut vb) = (ia.next_version()?, ib.next_version()?);
    loop {
        match (&va, &vb) {
            (None, None) => return Ok(None),
            (Some((k, _)), None) | (None, Some((k, _))) => return Ok(Some(k.clone())),
            (Some((ka, xa)), Some((kb, xb))) => {
                if ka != kb {
                    return Ok(Some(ka.min(kb).clone()));
                }
                if !same(xa, xb) {
                    return Ok(Some(ka.clone()));
                }
            }
        }
        va = ia.next_version()?;
        vb = ib.next_version()?;
    }
}

fn same(a: &Version, b: &Version) -> bool {
    a.stamp == b.stamp && (a.value == b.value || a.value.is_none() || b.value.is_none())
}
