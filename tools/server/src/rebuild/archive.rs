//! The lost server's own archive, when it survived on another disk: its updates that never
//! reached a peer are taken back from it during the rebuild, before the rebuilt directory
//! is installed ([`take_back`]).

use std::path::Path;

use duplex_engine::Database;

use super::RebuildGap;
use crate::config::ServerConfig;
use crate::Error;

/// Reads this node's earlier lineages in its configured archive root (`n<node>-t<t>`) and
/// takes back every own update above the backup source's mark
/// ([`Database::take_back_archived`]: logged again in the rebuilt database, origin and
/// stamps kept, sent to every peer once the links start), with the database in `db` (the
/// staging copy, not yet in place: a crash here leaves nothing installed). `gap` is
/// updated and the result logged (`rebuild_archive`). An archive that cannot be read is
/// logged (`rebuild_archive_failed`) and the rebuild goes on without it.
pub(super) fn take_back(cfg: &ServerConfig, db: &Path, gap: &mut RebuildGap) -> Result<(), Error> {
    let Some(root) = cfg.archive() else {
        return Ok(());
    };
    let node = cfg.node_id;
    let lineages: Vec<u64> = match std::fs::read_dir(root) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .filter_map(|e| duplex_wal::parse_archive_subdir(&e.file_name().to_string_lossy()))
            .filter(|(n, _)| *n == node)
            .map(|(_, t)| t)
            .collect(),
        Err(_) => Vec::new(),
    };
    if lineages.is_empty() {
        tracing::info!(event = "rebuild_archive", archive = %root.display(), "no archive of this node's earlier incarnations in {}: its updates that reached no peer, if any, cannot be recovered", root.display());
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    let db = Database::open(db, crate::server::db_config(cfg))?;
    let opened = t0.elapsed().as_secs_f64();
    let res = db.take_back_archived(root);
    let read = t0.elapsed().as_secs_f64() - opened;
    // Closing checkpoints: what was taken back is in the store before the install.
    db.close()?;
    let secs = t0.elapsed().as_secs_f64();
    match res {
        Ok(r) => {
            gap.after_archive(r.taken_back, r.archive_end, r.starts_after_base);
            let (end_inc, end_lsn) = duplex_engine::split_position(r.archive_end);
            tracing::info!(
                event = "rebuild_archive",
                archive = %root.display(),
                lineages = ?r.lineages,
                taken_back = r.taken_back,
                duplicates = r.duplicates,
                archive_end = r.archive_end,
                recovered_mark = gap.recovered_mark,
                updates_gone_at_most = ?gap.gone_at_most,
                seconds = secs,
                read_seconds = read,
                "took back {} of this node's own updates from its archive (timelines {:?}, read to incarnation {end_inc} LSN {end_lsn}); they are sent to every peer once the links start; {}",
                r.taken_back, r.lineages, gap.describe()
            );
        }
        Err(e) => {
            tracing::warn!(event = "rebuild_archive_failed", archive = %root.display(), error = %e, "cannot take this node's updates back from its archive {}: {e}; the rebuild goes on without them", root.display());
        }
    }
    Ok(())
}
