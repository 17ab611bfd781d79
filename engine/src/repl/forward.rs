//! Forwarding another origin's batches from this server's own log, and what a server does
//! when nobody can forward them to it any more (issue 13, the simulation's seed 1053).
//!
//! A server keeps the last `replication_backlog_bytes` of every other origin's batches in
//! memory ([`super::backlog::ForwardLog`]); a restart empties it. The batches themselves
//! are also in its log: each applied remote batch is one WAL record holding the origin's
//! payload with `origin_lsn` set to its position (FORMAT.md section 24). So when memory
//! lacks what a peer needs, [`read_forward_log`] reads this incarnation's archive and live
//! WAL for the origin's records after the peer's mark. The chain is sound only from a
//! record at exactly the peer's mark: the origin's records follow one another in the log
//! in the order they were applied, each one's predecessor being the record before it
//! (a batch the apply passed over, beyond a rebuilt origin's base, is not logged, and
//! reaches everyone as the rebuilt origin's own copy). Without that anchor nothing is
//! returned: never a broken chain.
//!
//! When a survivor holds none of what a peer needs, its link tells the peer (a LACKING
//! frame, FORMAT.md section 29), which notes it ([`Database::note_peer_lacks`]); a server
//! below a rebuilt origin's base that every other member said it lacks is **stranded**
//! ([`Database::stranded`]): it must be rebuilt, and says so instead of waiting.

use duplex_wal::{ReadOptions, WalReader};

use super::{split_position, FeedBatch};
use crate::batch::{BatchRef, KIND_BATCH, ORIGIN_LSN_OFFSET};
use crate::db::{Database, WAL_DIR};
use crate::error::Result;

/// A server's mark of an origin that no peer can bring further: it is below the origin's
/// rebuilt base, and every other member said it lacks the origin's batches after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stranded {
    /// The origin (rebuilt since this server last heard from it).
    pub origin: u64,
    /// This server's mark of it, of the origin's earlier incarnation.
    pub mark: u64,
    /// The origin's current incarnation.
    pub incarnation: u64,
}

/// Up to `max_batches` (and about `max_bytes`) of `origin`'s batches after position
/// `after`, read from this server's log (archive of this incarnation, then the live WAL),
/// each with its predecessor; `None` when the log does not hold the record at `after`
/// (the chain cannot be vouched for) or nothing after it.
pub(crate) fn read_forward_log(
    db: &Database,
    origin: u64,
    after: u64,
    max_batches: usize,
    max_bytes: usize,
) -> Result<Option<Vec<FeedBatch>>> {
    let i = db.inner();
    // From the very start (a peer that holds none, or a rebuilt origin's empty base): the
    // chain is sound only if the log holds every batch of the origin this server logged,
    // which it does when it reaches back to LSN 1 or to a checkpoint before which this
    // server held none of the origin's batches.
    let none_before = if after == 0 {
        let a = i.repl.anchors.lock();
        let at = a
            .iter()
            .filter(|(_, marks)| !marks.iter().any(|(o, h)| *o == origin && *h > 0))
            .map(|(lsn, _)| *lsn)
            .max();
        Some(at.unwrap_or(0))
    } else {
        None
    };
    let mut dirs = Vec::new();
    if let Some(a) = &i.cfg.archive_dir {
        dirs.push(a.clone());
    }
    dirs.push(i.dir.join(WAL_DIR));
    let opts = ReadOptions {
        until_lsn: Some(i.wal.durable_lsn()),
        node_id: Some(i.cfg.node_id),
        timeline: Some(i.wal.options().timeline),
        max_record_size: i.wal.options().max_record_size,
        ..ReadOptions::default()
    };
    let mut reader = WalReader::open(i.storage.clone(), &dirs, 0, opts)?;
    let mut prev: Option<u64> = None;
    let mut first = true;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(rec) = reader.next_record()? {
        if std::mem::take(&mut first) {
            if let Some(c) = none_before {
                if rec.lsn > c + 1 && rec.lsn > 1 {
                    return Ok(None);
                }
                prev = Some(0);
            }
        }
        if rec.kind != KIND_BATCH {
            continue;
        }
        let Ok(b) = BatchRef::decode(&rec.payload, i.cfg.max_key_size, i.cfg.max_value_size) else {
            continue;
        };
        if b.stamp.origin != origin || b.origin_lsn == 0 {
            continue;
        }
        let pos = b.origin_lsn;
        let stamp = b.stamp.ts.0;
        if pos <= after {
            prev = Some(pos);
            continue;
        }
        if out.is_empty() && prev != Some(after) {
            // The record at the peer's mark is not in the log: the chain cannot start.
            return Ok(None);
        }
        let mut payload = rec.payload;
        if let Some(slot) = payload.get_mut(ORIGIN_LSN_OFFSET..ORIGIN_LSN_OFFSET + 8) {
            slot.copy_from_slice(&0u64.to_le_bytes());
        }
        bytes += payload.len();
        out.push(FeedBatch {
            origin_lsn: pos,
            prev_origin_lsn: prev.unwrap_or(after),
            stamp,
            payload: payload.into(),
        });
        prev = Some(pos);
        if out.len() >= max_batches || bytes >= max_bytes {
            break;
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// What the replication core holds in memory, with its bounds (the simulation checks them
/// throughout: memory stays bounded whatever the faults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplMemory {
    /// Payload bytes of local batches in the backlog.
    pub backlog_bytes: usize,
    /// Payload bytes kept for forwarding, the largest of any one origin.
    pub forward_bytes_max: usize,
    /// Origins with batches kept for forwarding.
    pub forward_origins: usize,
    /// The bound of each of the two (`replication_backlog_bytes`; per origin for
    /// forwarding).
    pub cap_bytes: usize,
    /// Conflict journal entries held.
    pub conflicts_held: usize,
    /// Its bound (`conflict_journal_entries`).
    pub conflicts_cap: usize,
    /// Conflict entries recorded since open.
    pub conflicts_recorded: u64,
    /// Conflict entries the bound dropped since open.
    pub conflicts_dropped: u64,
}

impl Database {
    /// What the replication core holds in memory now, and its bounds.
    pub fn repl_memory(&self) -> ReplMemory {
        let r = &self.inner().repl;
        let (backlog_bytes, cap_bytes) = {
            let b = r.backlog.lock();
            (b.bytes, b.cap)
        };
        let (forward_bytes_max, forward_origins) = {
            let f = r.forward.lock();
            (f.values().map(|l| l.bytes).max().unwrap_or(0), f.len())
        };
        let j = r.conflicts.lock();
        ReplMemory {
            backlog_bytes,
            forward_bytes_max,
            forward_origins,
            cap_bytes,
            conflicts_held: j.len(),
            conflicts_cap: self.inner().cfg.conflict_journal_entries,
            conflicts_recorded: j.recorded,
            conflicts_dropped: j.dropped,
        }
    }

    /// Notes that peer `peer` holds none of `origin`'s batches after `after` (it said so
    /// in a LACKING frame); replaces what it said before of that origin.
    pub fn note_peer_lacks(&self, peer: u64, origin: u64, after: u64) {
        self.inner()
            .repl
            .lacking
            .lock()
            .insert((origin, peer), after);
    }

    /// The origins this server is stranded on, given the cluster's `members` (node ids;
    /// this node and the origin are left out): its mark of the origin is of an earlier
    /// incarnation than the origin's current one, and every other member said it lacks
    /// the origin's batches after that mark. Nothing can bring such a server whole: it
    /// must be rebuilt (its link from the origin otherwise waits for good).
    pub fn stranded(&self, members: &[u64]) -> Vec<Stranded> {
        let me = self.node_id();
        let lacking = self.inner().repl.lacking.lock().clone();
        self.origins()
            .into_iter()
            .filter(|(o, st)| {
                let holders: Vec<u64> = members
                    .iter()
                    .copied()
                    .filter(|m| *m != me && *m != *o)
                    .collect();
                *o != me
                    && st.hwm > 0
                    && split_position(st.hwm).0 < st.incarnation
                    && !holders.is_empty()
                    && holders
                        .iter()
                        .all(|p| lacking.get(&(*o, *p)) == Some(&st.hwm))
            })
            .map(|(o, st)| Stranded {
                origin: o,
                mark: st.hwm,
                incarnation: st.incarnation,
            })
            .collect()
    }
}
