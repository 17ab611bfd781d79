//! Taking back this node's own batches of an earlier incarnation after a rebuild: from a
//! peer that still held them ([`Database::take_back_own`]) or from this node's own archive
//! that survived the loss of its data disk ([`Database::take_back_archived`]). Either way
//! each batch is logged again as a local batch of the current incarnation with its
//! original stamp and operations, applied under last-writer-wins, and sent to every peer
//! like a new local batch.

use std::collections::HashSet;
use std::path::Path;

use duplex_wal::{ReadOptions, WalReader};

use super::{position, split_position, RemoteBatch};
use crate::batch::{BatchRef, KIND_BATCH};
use crate::db::Database;
use crate::error::{Error, Result};

/// Payload bytes taken back per WAL append when reading an archive.
const CHUNK_BYTES: usize = 4 << 20;

/// What [`Database::take_back_archived`] found in the archive and took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveTakeBack {
    /// The timelines (earlier incarnations) of this node whose lineage was read.
    pub lineages: Vec<u64>,
    /// This node's own batches above the base found there and logged again.
    pub taken_back: u64,
    /// Batches found with a stamp already taken (a copy an earlier, interrupted attempt
    /// logged in a later lineage): skipped.
    pub duplicates: u64,
    /// The position of the last own batch taken back (0: none).
    pub last_position: u64,
    /// The position of the last record the archive holds of the newest lineage read (its
    /// end: updates acknowledged after it, within the archive's lag, are not there).
    pub archive_end: u64,
    /// The first position of the base's lineage the archive holds, when it starts after
    /// the base (a retention cut: the batches between are not in the archive).
    pub starts_after_base: Option<u64>,
}

impl Database {
    /// Takes back this node's own batches of an earlier incarnation that a peer still held
    /// after this node lost its disk (a rebuild from another peer's backup did not bring
    /// them): each is logged again as a batch of this node's current incarnation, with its
    /// original stamp and operations, applied under last-writer-wins, and so sent to every
    /// peer like a new local batch. Its stamp is older than this node's clock: it wins only
    /// where nothing newer was written, on every server alike, so the replicas converge on
    /// what they would have held had the disk not been lost. Batches at or below this
    /// node's base are skipped (already held); the base rises to the last one taken, so a
    /// peer that forwards them is answered with the new base and stops. Payloads of another
    /// origin, and batches that do not continue the chain from the base (`ReplError::Gap`:
    /// the giver starts again from the base), are refused whole (nothing logged). Returns
    /// the batches taken back.
    pub fn take_back_own(&self, batches: &[RemoteBatch<'_>]) -> Result<usize> {
        let i = self.inner();
        let base = self.incarnation_base().unwrap_or(0);
        let batches: Vec<&RemoteBatch<'_>> =
            batches.iter().filter(|b| b.origin_lsn > base).collect();
        // They must continue the chain from the base: a frame given back that arrives
        // without the one before it (lost with a connection, then replayed on the next)
        // would otherwise raise the base past batches never taken back.
        let mut prev = if base == super::EMPTY_BASE { 0 } else { base };
        for b in &batches {
            if b.prev_origin_lsn != prev {
                return Err(Error::Repl(super::ReplError::Gap {
                    origin: i.cfg.node_id,
                    expected: prev,
                    got_prev: b.prev_origin_lsn,
                    origin_lsn: b.origin_lsn,
                }));
            }
            prev = b.origin_lsn;
        }
        let payloads: Vec<&[u8]> = batches.iter().map(|b| b.payload).collect();
        let last = batches.iter().map(|b| b.origin_lsn).max().unwrap_or(base);
        let n = self.relog_own(&payloads)?;
        if n > 0 {
            let mut o = i.repl.origins.lock();
            let s = o.entry(i.cfg.node_id).or_default();
            s.hwm = s.hwm.max(last);
        }
        Ok(n)
    }

    /// Takes back this node's own batches of its earlier incarnations from its archive root
    /// `root` (the lineages `n<node>-t<timeline>` below the current incarnation; a rebuild
    /// after the data disk was lost while the archive disk survived): every own batch above
    /// the base (what the backup's source held of this node, so the peers hold it too) is
    /// logged again as [`Database::take_back_own`] does, in order, so the updates this node
    /// acknowledged that never reached a peer come back and are sent to every peer. The base
    /// does not rise: no peer holds these batches at their old positions, so a peer at the
    /// base reads this incarnation's log from its start, them included. A batch whose stamp
    /// was already taken (an earlier attempt's copy in a later lineage) is skipped. The
    /// archive ends where its lag left it: what was acknowledged after its end is not there.
    pub fn take_back_archived(&self, root: &Path) -> Result<ArchiveTakeBack> {
        let i = self.inner();
        let node = i.cfg.node_id;
        let inc = self.incarnation();
        let base = self.incarnation_base().unwrap_or(0);
        let base_inc = split_position(base).0;
        let mut rep = ArchiveTakeBack::default();
        if !i.storage.exists(root) {
            return Ok(rep);
        }
        let mut lineages: Vec<u64> = i
            .storage
            .list(root)
            .map_err(|e| Error::io("list the archive root", root, e))?
            .iter()
            .filter_map(|n| duplex_wal::parse_archive_subdir(n))
            .filter(|(n, t)| *n == node && *t < inc && *t >= base_inc.max(1))
            .map(|(_, t)| t)
            .collect();
        lineages.sort_unstable();
        let mut seen = HashSet::new();
        for t in lineages {
            rep.lineages.push(t);
            self.take_back_lineage(root, t, base, &mut seen, &mut rep)?;
        }
        Ok(rep)
    }

    /// One lineage of [`Database::take_back_archived`].
    fn take_back_lineage(
        &self,
        root: &Path,
        t: u64,
        base: u64,
        seen: &mut HashSet<u64>,
        rep: &mut ArchiveTakeBack,
    ) -> Result<()> {
        let i = self.inner();
        let node = i.cfg.node_id;
        let dirs = [root.to_path_buf()];
        let segs = duplex_wal::list_segments_of(&*i.storage, &dirs, Some(node), Some(t))?;
        let Some(first) = segs.first().map(|s| s.0) else {
            return Ok(());
        };
        let (base_inc, base_lsn) = split_position(base);
        if t == base_inc && first > base_lsn + 1 {
            rep.starts_after_base = Some(position(t, first));
        }
        let opts = ReadOptions {
            node_id: Some(node),
            timeline: Some(t),
            max_record_size: i.wal.options().max_record_size,
            ..ReadOptions::default()
        };
        let mut r = WalReader::open(i.storage.clone(), &dirs, first, opts)?;
        let mut chunk: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        while let Some(rec) = r.next_record()? {
            rep.archive_end = position(t, rec.lsn);
            let pos = position(t, rec.lsn);
            if rec.kind != KIND_BATCH || pos <= base {
                continue;
            }
            let b = BatchRef::decode(&rec.payload, i.cfg.max_key_size, i.cfg.max_value_size)
                .map_err(|kind| Error::Corrupt {
                    file: duplex_wal::archive_subdir(root, node, t),
                    offset: rec.lsn,
                    kind,
                })?;
            if b.stamp.origin != node || b.origin_lsn != 0 || b.count == 0 {
                continue;
            }
            if !seen.insert(b.stamp.ts.0) {
                rep.duplicates += 1;
                continue;
            }
            rep.last_position = pos;
            bytes += rec.payload.len();
            chunk.push(rec.payload);
            if bytes >= CHUNK_BYTES {
                let p: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
                rep.taken_back += self.relog_own(&p)? as u64;
                chunk.clear();
                bytes = 0;
            }
        }
        let p: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        rep.taken_back += self.relog_own(&p)? as u64;
        Ok(())
    }

    /// Logs `payloads`, this node's own batches of an earlier incarnation, again as local
    /// batches of the current one with their stamps, and applies them under
    /// last-writer-wins. Refused whole if one is not a batch of this node's own writing.
    fn relog_own(&self, payloads: &[&[u8]]) -> Result<usize> {
        let i = self.inner();
        i.check_poisoned()?;
        let mut stamps = Vec::with_capacity(payloads.len());
        for p in payloads {
            let b =
                BatchRef::decode(p, i.cfg.max_key_size, i.cfg.max_value_size).map_err(|kind| {
                    Error::Corrupt {
                        file: i.dir.clone(),
                        offset: 0,
                        kind,
                    }
                })?;
            if b.stamp.origin != i.cfg.node_id || b.origin_lsn != 0 || b.count == 0 {
                return Err(Error::Config(format!(
                    "take_back_own: a batch of origin {} (origin LSN {}) is not one of node {}'s own",
                    b.stamp.origin, b.origin_lsn, i.cfg.node_id
                )));
            }
            stamps.push(b.stamp);
        }
        if payloads.is_empty() {
            return Ok(0);
        }
        let _g = i.gate.read();
        let entries: Vec<duplex_wal::Entry<'_>> = payloads
            .iter()
            .map(|p| duplex_wal::Entry {
                kind: KIND_BATCH,
                payload: p,
            })
            .collect();
        let stamp_at = crate::batch::TS_OFFSET;
        i.wal.append_stamped(&entries, stamp_at, &mut |lsn, p| {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&p[stamp_at..stamp_at + 8]);
            let ts = u64::from_le_bytes(ts);
            i.backlog_locked(lsn, p, ts);
            ts
        })?;
        for (p, stamp) in payloads.iter().zip(stamps) {
            let b = BatchRef::checked_before(p).map(|b| {
                b.ops()
                    .map(|op| match op.value {
                        Some(v) => crate::batch::Op::Put {
                            key: op.key.to_vec(),
                            value: v.to_vec(),
                        },
                        None => crate::batch::Op::Delete {
                            key: op.key.to_vec(),
                        },
                    })
                    .collect::<Vec<_>>()
            });
            i.apply(stamp, b.unwrap_or_default())?;
        }
        i.note_logged(payloads.iter().map(|p| p.len() as u64).sum());
        i.repl.commit_cv.notify_all();
        Ok(payloads.len())
    }
}
