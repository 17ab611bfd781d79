//! Adopting a restored copy of another node's backup as this node: the heart of rebuilding
//! a lost server from its peer (DESIGN.md step 5, the patent's paragraphs 0084-0088).
//!
//! The lost server B gets a backup of its healthy peer A, restores it and rolls its WAL
//! forward exactly as A's own restore would ([`crate::restore_chain`], [`crate::roll_forward`]
//! as node A), then [`adopt_restored`] makes the result B's:
//! - the tree is rewritten into a new store generation whose header and manifest name B
//!   (the versions keep their stamps: A's writes stay A's, B's old ones B's);
//! - the per-origin high-water marks become B's view: A's own batches up to the backup's
//!   end (`position(A's timeline, last LSN)`) and the marks A held of every other origin;
//!   A's mark of B itself stays as B's **base**: the last of B's earlier batches the
//!   restored state holds. A peer that holds less of B's earlier incarnation than the base
//!   must get the rest (forwarded by a survivor) before B's new batches, or it would skip
//!   them silently ([`crate::FeedCursor::read`] refuses it with `BelowBase`);
//! - a new WAL starts for B on a new incarnation, above every incarnation of B that a peer
//!   may still hold marks of (the caller passes the least acceptable one) and above every
//!   lineage of B in its archive root, so B's new batches are never taken for duplicates.
//!
//! Nothing is changed until every check passed; a failure part way leaves a directory the
//! next attempt starts over from (the caller clears it).

use std::path::Path;
use std::sync::Arc;

use duplex_wal::{Storage, Wal};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lock::lock_file;
use crate::repl::{position, MAX_INCARNATION};
use crate::store::{open_store, read_manifest, write_checkpoint, CheckpointJob, StoreDir};
use crate::WAL_DIR;

/// What [`adopt_restored`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptReport {
    /// The node whose backup it was.
    pub from_node: u64,
    /// This node.
    pub node: u64,
    /// This node's new incarnation (its WAL's timeline).
    pub incarnation: u64,
    /// The high-water marks recorded (origin, position), the backup's node included.
    pub origins: Vec<(u64, u64)>,
    /// The last LSN the restored copy holds; this node's WAL continues after it.
    pub last_lsn: u64,
}

/// Makes the database in `dir`, a fresh restore of node `from`'s backup rolled forward
/// (its WAL holding no record after the checkpoint), node `cfg.node_id`'s, on an
/// incarnation of at least `min_incarnation`. `source_timeline` is the timeline of the
/// backup's log (`RollForwardReport::from_timeline`): the incarnation of `from` whose
/// positions its peers know.
pub fn adopt_restored(
    storage: Arc<dyn Storage>,
    dir: &Path,
    cfg: &Config,
    source_timeline: u64,
    min_incarnation: u64,
) -> Result<AdoptReport> {
    cfg.validate()?;
    let _lock = lock_file(&*storage, dir)?;
    let m = read_manifest(&*storage, dir)?.ok_or_else(|| {
        Error::Config(format!(
            "{} holds no restored database (no manifest): restore the peer's backup first",
            dir.display()
        ))
    })?;
    let from = m.node_id;
    if from == cfg.node_id {
        return Err(Error::Config(format!(
            "{} already belongs to node {from}: a backup of this node itself is restored, not adopted",
            dir.display()
        )));
    }
    let wal_dir = dir.join(WAL_DIR);
    check_log_ends_at(&storage, &wal_dir, m.checkpoint_lsn)?;
    let incarnation = pick_incarnation(&*storage, cfg, min_incarnation)?;
    let mut tree = open_store(&storage, dir, &m, from)?;
    let last = tree.ckpt.lsn;
    let mut origins: Vec<(u64, u64)> = tree
        .ckpt
        .origins
        .iter()
        .copied()
        .filter(|(o, _)| *o != from)
        .collect();
    origins.push((from, position(source_timeline, last)));
    if !origins.iter().any(|(o, _)| *o == cfg.node_id) {
        // The source held none of this node's earlier batches: the empty base, announced
        // to the peers so that any of them that holds some gives them back.
        origins.push((cfg.node_id, crate::repl::EMPTY_BASE));
    }
    origins.sort_unstable();
    tree.ckpt.origins.clear();
    let at = StoreDir {
        storage: &storage,
        dir,
        node_id: cfg.node_id,
        clock: &*cfg.clock,
    };
    let job = CheckpointJob {
        tree: &tree,
        updates: &[],
        lsn: last,
        max_ts: tree.ckpt.max_ts,
        max_epoch: tree.ckpt.max_epoch,
        origins: origins.clone(),
        new_generation: true,
    };
    write_checkpoint(&at, &job)?;
    tree.file.retire();
    drop(tree);
    // The restore's log was the backup node's: this node's starts empty after it.
    for (_, path) in duplex_wal::list_segments(&*storage, std::slice::from_ref(&wal_dir))? {
        storage
            .remove_file(&path)
            .map_err(|e| Error::io("remove the restored node's WAL segment", &path, e))?;
    }
    let wal_opts = duplex_wal::WalOptions {
        timeline: incarnation,
        ..cfg.wal_options(last + 1)
    };
    Wal::open_with(storage.clone(), &wal_dir, wal_opts)?.close()?;
    Ok(AdoptReport {
        from_node: from,
        node: cfg.node_id,
        incarnation,
        origins,
        last_lsn: last,
    })
}

/// Refuses a restored copy whose WAL holds records after its checkpoint (a roll-forward
/// that did not finish): adopting it would drop them.
fn check_log_ends_at(storage: &Arc<dyn Storage>, wal_dir: &Path, ckpt: u64) -> Result<()> {
    let mut r = duplex_wal::WalReader::open(
        storage.clone(),
        &[wal_dir.to_path_buf()],
        0,
        duplex_wal::ReadOptions::default(),
    )?;
    if let Some(rec) = r.next_record()? {
        if rec.lsn > ckpt {
            return Err(Error::Config(format!(
                "{} holds WAL records after the checkpoint (LSN {} > {ckpt}): finish the roll-forward before adopting",
                wal_dir.display(),
                rec.lsn
            )));
        }
    }
    Ok(())
}

/// The new incarnation: at least `min` and above every lineage of this node in its archive
/// root.
fn pick_incarnation(storage: &dyn Storage, cfg: &Config, min: u64) -> Result<u64> {
    let mut inc = min.max(1);
    if let Some(root) = cfg.archive_dir.as_deref().filter(|r| storage.exists(r)) {
        for name in storage
            .list(root)
            .map_err(|e| Error::io("list directory", root, e))?
        {
            if let Some((n, t)) = duplex_wal::parse_archive_subdir(&name) {
                if n == cfg.node_id {
                    inc = inc.max(t + 1);
                }
            }
        }
    }
    if inc > MAX_INCARNATION {
        return Err(Error::Config(format!(
            "node {} has used every incarnation up to {MAX_INCARNATION}: rebuild it under a new node id",
            cfg.node_id
        )));
    }
    Ok(inc)
}
