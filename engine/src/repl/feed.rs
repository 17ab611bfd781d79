//! The change feed: this server's own batches after a position, oldest first, each with
//! its predecessor's position so the receiver can see a gap. Served from the backlog when
//! it reaches back far enough, else from the live WAL and, for what the live WAL has
//! released, the archive of this node's current incarnation. Only durable batches are
//! served: a batch a crash could still take back must never reach a peer, or the restarted
//! server would log different batches under positions the peer already holds.

use std::sync::Arc;

use duplex_wal::{ReadOptions, WalReader};

use super::{position, split_position, ReplError};
use crate::batch::{BatchRef, KIND_BATCH};
use crate::db::{Database, Inner, WAL_DIR};
use crate::error::{Error, Result};

/// One local batch for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedBatch {
    /// Its position on this origin ([`super::position`]).
    pub origin_lsn: u64,
    /// The position of this origin's batch before it (the `after` the read started from,
    /// for the first).
    pub prev_origin_lsn: u64,
    /// Its timestamp.
    pub stamp: u64,
    /// The WAL payload as logged here.
    pub payload: Arc<[u8]>,
}

/// A reader of the change feed for one link; keeps its place in the log between calls so
/// a catch-up from the archive reads each segment once.
#[derive(Debug, Default)]
pub struct FeedCursor {
    reader: Option<(WalReader, u64)>,
}

impl FeedCursor {
    /// A cursor with no place yet.
    pub fn new() -> Self {
        FeedCursor::default()
    }

    /// Up to `max_batches` local batches (and about `max_bytes` of payload, at least one
    /// batch if any) after position `after`, whose predecessor chain starts at `after`.
    /// Empty when the peer has everything durable. Errors: the peer holds a later
    /// position than this server has ([`ReplError::PeerAhead`]), or what it needs is in
    /// neither the live WAL nor the archive ([`ReplError::NeedsRebuild`]).
    pub fn read(
        &mut self,
        db: &Database,
        after: u64,
        max_batches: usize,
        max_bytes: usize,
    ) -> Result<Vec<FeedBatch>> {
        let i = db.inner();
        let inc = i.wal.options().timeline;
        let durable = i.wal.durable_lsn();
        let (a_inc, a_lsn) = split_position(after);
        if a_inc > inc || (a_inc == inc && a_lsn > durable) {
            return Err(Error::Repl(ReplError::PeerAhead {
                node: i.cfg.node_id,
                peer_holds: after,
                have: position(inc, durable),
            }));
        }
        let max_batches = max_batches.max(1);
        {
            let b = i.repl.backlog.lock();
            let echo = crate::testing::mutated(crate::testing::Mutation::EchoRemote);
            if b.covers(after) && !echo {
                self.reader = None;
                let mut prev = after;
                return Ok(b
                    .read(after, durable, max_batches, max_bytes)
                    .into_iter()
                    .map(|e| {
                        let fb = FeedBatch {
                            origin_lsn: e.pos,
                            prev_origin_lsn: prev,
                            stamp: e.stamp,
                            payload: e.payload,
                        };
                        prev = e.pos;
                        fb
                    })
                    .collect());
            }
        }
        // An earlier incarnation's position: this incarnation's log from its start, once
        // the peer holds everything of the earlier one this node's state holds.
        if a_inc < inc {
            if let Some(base) = db
                .incarnation_base()
                .filter(|b| after < *b && *b != super::EMPTY_BASE)
            {
                return Err(Error::Repl(ReplError::BelowBase {
                    node: i.cfg.node_id,
                    peer_holds: after,
                    base,
                }));
            }
        }
        let from = if a_inc < inc { 0 } else { a_lsn + 1 };
        if from != 0 && from > durable {
            return Ok(Vec::new());
        }
        self.read_log(i, inc, after, from, durable, max_batches, max_bytes)
    }

    /// Batches of another origin `origin` applied here after position `after`, to forward
    /// to a peer that missed them (their origin unreachable, or rebuilt while the peer was
    /// away): origin, positions, stamps and payloads exactly as the origin sent them, the
    /// chain as checked when they were applied. Served from memory (the last
    /// `replication_backlog_bytes` of each origin's batches) and, when memory lacks them
    /// (after a restart, or past its bound), from this server's own log and archive
    /// ([`super::forward`]). Empty when this server holds nothing after `after`; `None`
    /// when it holds more but can no longer vouch for the chain from `after` (the peer
    /// needs them from another server, or a rebuild).
    pub fn read_forward(
        db: &Database,
        origin: u64,
        after: u64,
        max_batches: usize,
        max_bytes: usize,
    ) -> Option<Vec<FeedBatch>> {
        // Nothing lies between 0 and the empty base: a chain after it is one after 0.
        let after = if after == super::EMPTY_BASE { 0 } else { after };
        let held = db.origin_hwm(origin);
        let from_memory = {
            let f = db.inner().repl.forward.lock();
            f.get(&origin)
                .map_or(Some(Vec::new()), |log| {
                    log.read(after, max_batches.max(1), max_bytes)
                })
                .map(|got| {
                    got.into_iter()
                        .map(|e| FeedBatch {
                            origin_lsn: e.pos,
                            prev_origin_lsn: e.prev,
                            stamp: e.stamp,
                            payload: e.payload,
                        })
                        .collect::<Vec<_>>()
                })
        };
        match from_memory {
            Some(got) if !got.is_empty() || held <= after => Some(got),
            // A log that cannot be read vouches for nothing (the peer asks elsewhere).
            _ => super::forward::read_forward_log(db, origin, after, max_batches.max(1), max_bytes)
                .ok()
                .flatten(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_log(
        &mut self,
        i: &Inner,
        inc: u64,
        after: u64,
        from: u64,
        durable: u64,
        max_batches: usize,
        max_bytes: usize,
    ) -> Result<Vec<FeedBatch>> {
        let reuse = matches!(&self.reader, Some((_, next)) if *next == from && from != 0);
        if !reuse {
            self.reader = Some((open_log(i, inc, from, durable)?, from));
        }
        let node = i.cfg.node_id;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut prev = after;
        let Some((reader, next)) = self.reader.as_mut() else {
            return Ok(out);
        };
        loop {
            if out.len() >= max_batches || (!out.is_empty() && bytes >= max_bytes) {
                return Ok(out);
            }
            let Some(rec) = reader.next_record()? else {
                // The end of what was durable when the reader opened: the next call
                // opens again (or finds the backlog).
                self.reader = None;
                return Ok(out);
            };
            *next = rec.lsn + 1;
            if rec.lsn > durable {
                self.reader = None;
                return Ok(out);
            }
            if rec.kind != KIND_BATCH {
                continue;
            }
            let b = BatchRef::decode(&rec.payload, i.cfg.max_key_size, i.cfg.max_value_size)
                .map_err(|kind| Error::Corrupt {
                    file: i.dir.join(WAL_DIR),
                    offset: rec.lsn,
                    kind,
                })?;
            let echo = crate::testing::mutated(crate::testing::Mutation::EchoRemote);
            if (b.stamp.origin != node || b.origin_lsn != 0) && !echo {
                continue;
            }
            let pos = position(inc, rec.lsn);
            bytes += rec.payload.len();
            out.push(FeedBatch {
                origin_lsn: pos,
                prev_origin_lsn: prev,
                stamp: b.stamp.ts.0,
                payload: rec.payload.into(),
            });
            prev = pos;
        }
    }
}

/// A reader over this incarnation's log from `from` (0: its first record) to `durable`:
/// the archive's lineage directory first (what the live WAL released), then the live WAL.
fn open_log(i: &Inner, inc: u64, from: u64, durable: u64) -> Result<WalReader> {
    let mut dirs = Vec::new();
    if let Some(a) = &i.cfg.archive_dir {
        dirs.push(a.clone());
    }
    dirs.push(i.dir.join(WAL_DIR));
    let opts = ReadOptions {
        until_lsn: Some(durable),
        node_id: Some(i.cfg.node_id),
        timeline: Some(inc),
        max_record_size: i.wal.options().max_record_size,
        ..ReadOptions::default()
    };
    WalReader::open(i.storage.clone(), &dirs, from, opts).map_err(|e| match e {
        duplex_wal::Error::LsnUnavailable { first, .. } => Error::Repl(ReplError::NeedsRebuild {
            node: i.cfg.node_id,
            wanted: position(inc, from),
            oldest: position(inc, first),
        }),
        other => Error::Wal(other),
    })
}
