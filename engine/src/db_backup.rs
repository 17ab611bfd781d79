//! Online backups of an open database ([`Database::backup`]): a checkpoint, then the copy
//! by `crate::backup` at the chosen pace, with the WAL up to the durable end (and, on
//! request, a snapshot at exactly that LSN for the restore drill).

use std::path::Path;

use crate::backup::{read_backup_manifest, write_backup, BackupJob, BackupOptions, BackupReport};
use crate::backup_wal::WalSource;
use crate::db::{Database, WAL_DIR};
use crate::error::Result;

impl Database {
    /// Takes an online backup into the new directory `dest` by file copy, while writers go
    /// on: a checkpoint, then a copy of the store's committed bytes (only those appended
    /// since `base` for an incremental backup), the WAL from the checkpoint to the durable
    /// end when the copy finishes (so the backup restores on its own to its manifest's
    /// `end_lsn`) and the manifests, at the default pace ([`BackupOptions::default`]). With
    /// an archive configured, the WAL segment in progress is then closed and everything is
    /// archived, so the archive continues the backup without a gap.
    pub fn backup(&self, dest: &Path, base: Option<&Path>) -> Result<BackupReport> {
        self.backup_with(dest, base, &BackupOptions::default())
    }

    /// [`Database::backup`] with options (the copy's pace).
    pub fn backup_with(
        &self,
        dest: &Path,
        base: Option<&Path>,
        opts: &BackupOptions,
    ) -> Result<BackupReport> {
        let i = self.inner();
        i.checkpoint(false)?;
        // Holding the view keeps its store file alive even if a compaction retires it.
        let view = i.mem.read().tree.clone();
        let base = match base {
            Some(b) => Some(read_backup_manifest(&*i.storage, b)?),
            None => None,
        };
        // The adaptive pace slows down while writers commit.
        let activity = || Some(i.wal.durable_lsn());
        let job = BackupJob {
            node_id: i.cfg.node_id,
            dest,
            base: base.as_ref(),
            created_ms: i.cfg.clock.now_ms(),
            wal: WalSource {
                dir: i.dir.join(WAL_DIR),
                until: None,
                sync_first: false,
            },
            rate: opts.rate,
            activity: &activity,
        };
        let report = {
            // No checkpoint (which removes WAL segments) while the WAL is being copied;
            // the store copy itself needs no lock, the view keeps its file.
            let _no_ckpt = i.ckpt_lock.lock();
            let (durable, snapshot) = if opts.snapshot_at_end {
                // With the gate closed every batch appended is applied and none is being
                // appended: after the sync, the snapshot holds exactly the batches up to
                // the durable LSN, where the backup's WAL ends.
                let _g = i.gate.write();
                (i.wal.sync()?, Some(self.snapshot()))
            } else {
                (i.wal.sync()?, None)
            };
            let job = BackupJob {
                wal: WalSource {
                    until: Some(durable.max(view.ckpt.lsn)),
                    ..job.wal
                },
                ..job
            };
            BackupReport {
                snapshot,
                ..write_backup(&i.storage, &view, &job)?
            }
        };
        if i.cfg.archive_dir.is_some() {
            i.wal.rotate()?;
            i.wal.archive_closed()?;
        }
        Ok(report)
    }
}
