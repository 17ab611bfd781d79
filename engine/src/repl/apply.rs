//! Applying batches received from a peer (the patent's S6-S12): each is checked (origin not
//! this node, payload a well-formed batch of that origin with the stamp the frame names,
//! nothing missing since the origin's last applied batch, a clock within the allowed
//! offset) and applied whole or not at all, logged with its origin and origin position in
//! one WAL record, made durable, and only then counted in the origin's high-water mark. A
//! batch at or below the mark is a resend and is skipped; the first refused batch ends the
//! call and the link resynchronises from the mark instead of skipping it.

use std::collections::BTreeMap;

use super::{split_position, Conflict, OriginState};
use crate::batch::{BatchRef, KIND_BATCH, ORIGIN_LSN_OFFSET};
use crate::db::{Database, Inner};
use crate::error::Result;
use crate::hlc::{Stamp, Timestamp};
use crate::memtable::MemVersion;

/// One batch as a peer sent it.
#[derive(Debug, Clone, Copy)]
pub struct RemoteBatch<'a> {
    /// Its position on the origin.
    pub origin_lsn: u64,
    /// The position of the origin's batch before it.
    pub prev_origin_lsn: u64,
    /// The timestamp the frame names (must match the payload's).
    pub stamp: u64,
    /// The batch as the origin logged it.
    pub payload: &'a [u8],
}

/// Why a received batch was refused; the link resynchronises from the high-water mark.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplError {
    /// A batch claims this server's own node id as its origin.
    #[error("a peer sent a batch of origin {origin}, this server's own node id: two servers share a node id; give each its own --node-id")]
    SelfOrigin {
        /// The origin named.
        origin: u64,
    },
    /// A batch does not follow the last one applied from its origin.
    #[error("batch {got_prev}->{origin_lsn} of origin {origin} does not follow the last one applied ({expected}): resynchronising from {expected}")]
    Gap {
        /// The origin.
        origin: u64,
        /// The high-water mark held.
        expected: u64,
        /// The batch's `prev_origin_lsn`.
        got_prev: u64,
        /// The batch's position.
        origin_lsn: u64,
    },
    /// A batch of an earlier incarnation of its origin than one already applied.
    #[error("origin {origin} sent position {origin_lsn} of incarnation {got}, behind incarnation {held} already applied here: that server is an old copy of node {origin} and must be rebuilt")]
    Behind {
        /// The origin.
        origin: u64,
        /// The position sent.
        origin_lsn: u64,
        /// Its incarnation.
        got: u64,
        /// The incarnation of the high-water mark.
        held: u64,
    },
    /// The payload is not a well-formed batch of the origin with the frame's stamp.
    #[error("batch {origin_lsn} of origin {origin} is malformed: {why}")]
    BadBatch {
        /// The origin.
        origin: u64,
        /// The batch's position.
        origin_lsn: u64,
        /// What is wrong.
        why: String,
    },
    /// The origin's clock is ahead of this server's by more than the allowed offset.
    #[error("origin {origin}'s clock is {ahead_ms} ms ahead of this server's (at most {max_ms} ms allowed): its batches wait until the clocks agree; fix the clocks (NTP)")]
    ClockSkew {
        /// The origin.
        origin: u64,
        /// How far ahead its stamp is.
        ahead_ms: u64,
        /// The allowed offset.
        max_ms: u64,
    },
    /// A peer asks for this server's batches after a position this server never reached.
    #[error("a peer holds node {node}'s batches up to position {peer_holds}, beyond this server's durable {have}: this server lost updates it had sent (restored without a new incarnation?); rebuild it from a peer")]
    PeerAhead {
        /// This node.
        node: u64,
        /// The peer's mark.
        peer_holds: u64,
        /// This server's durable position.
        have: u64,
    },
    /// A peer holds less of this node's earlier incarnation than this node's state does
    /// (it was rebuilt from another peer's backup): the peer must first get the rest of
    /// the earlier incarnation, forwarded by a survivor, or it would skip it.
    #[error("a peer holds node {node}'s earlier batches up to position {peer_holds}, below {base}, where this node's rebuilt state starts: it waits for a survivor to forward the rest")]
    BelowBase {
        /// This node.
        node: u64,
        /// The peer's mark.
        peer_holds: u64,
        /// The base of this incarnation.
        base: u64,
    },
    /// What a peer needs was released by the live WAL and is not in the archive.
    #[error("a peer needs node {node}'s batches after position {wanted}, but the oldest still held is {oldest}: the peer must be rebuilt (or keep more WAL/archive)")]
    NeedsRebuild {
        /// This node.
        node: u64,
        /// The first position wanted.
        wanted: u64,
        /// The oldest position held.
        oldest: u64,
    },
}

/// What [`Database::apply_remote`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Batches applied.
    pub applied: usize,
    /// Batches skipped as already held.
    pub duplicates: usize,
    /// The origin's durable high-water mark after the call.
    pub hwm: u64,
    /// Conflict journal entries recorded.
    pub conflicts: usize,
    /// The first batch refused, if any (the ones before it were applied).
    pub refused: Option<ReplError>,
}

struct Checked<'a> {
    pos: u64,
    prev: u64,
    ts: u64,
    payload: Vec<u8>,
    batch: BatchRef<'a>,
}

impl Database {
    /// Applies batches received from `origin`, oldest first (see the module doc). Returns
    /// what was applied and the first refusal; an error only for a local failure (the WAL
    /// or the store), after which nothing of the failed append was counted.
    pub fn apply_remote(&self, origin: u64, batches: &[RemoteBatch<'_>]) -> Result<ApplyReport> {
        let i = self.inner();
        i.check_poisoned()?;
        let mut rep = ApplyReport::default();
        if origin == i.cfg.node_id {
            rep.refused = Some(ReplError::SelfOrigin { origin });
            return Ok(rep);
        }
        let _one = i.repl.apply_lock.lock();
        let (hwm, known_inc, base) = i
            .repl
            .origins
            .lock()
            .get(&origin)
            .map_or((0, 0, 0), |s| (s.hwm, s.incarnation, s.base));
        rep.hwm = hwm;
        let mut passed = hwm;
        let (checked, refused) = check(
            i,
            origin,
            (hwm, known_inc, base),
            batches,
            &mut rep,
            &mut passed,
        );
        rep.refused = refused;
        if checked.is_empty() {
            let mut o = i.repl.origins.lock();
            let s = o.entry(origin).or_default();
            s.duplicates += rep.duplicates as u64;
            s.hwm = s.hwm.max(passed);
            rep.hwm = s.hwm;
            return Ok(rep);
        }
        let _g = i.gate.read();
        let entries: Vec<duplex_wal::Entry<'_>> = checked
            .iter()
            .map(|c| duplex_wal::Entry {
                kind: KIND_BATCH,
                payload: &c.payload,
            })
            .collect();
        let logged: usize = checked.iter().map(|c| c.payload.len()).sum();
        // Durable in the local log when only the synchronous archive copy failed: applied,
        // then reported (as local writes are).
        let archive_failed = match i.wal.append_batch(&entries) {
            Ok(_) => None,
            Err(e @ duplex_wal::Error::ArchiveFailed { .. }) => Some(e),
            Err(e) => return Err(e.into()),
        };
        // Acknowledged only once durable, whatever the sync policy of local writes.
        if !matches!(i.wal.options().sync, duplex_wal::SyncPolicy::Always) {
            i.wal.sync()?;
        }
        let now = i.cfg.clock.now_ms();
        for c in &checked {
            rep.conflicts += i.apply_remote_ops(c, now)?;
        }
        i.note_logged(logged as u64);
        let last = checked.last().map_or(hwm, |c| c.pos);
        let max_ts = checked.iter().map(|c| c.ts).max().unwrap_or(0);
        {
            let mut o = i.repl.origins.lock();
            let s: &mut OriginState = o.entry(origin).or_default();
            s.hwm = s.hwm.max(last).max(passed);
            s.max_ts = s.max_ts.max(max_ts);
            s.heard_ts = s.heard_ts.max(max_ts);
            s.applied += checked.len() as u64;
            s.duplicates += rep.duplicates as u64;
            s.incarnation = s.incarnation.max(split_position(last).0);
            rep.hwm = s.hwm;
        }
        rep.applied = checked.len();
        i.repl.keep_for_forwarding(
            origin,
            checked
                .iter()
                .zip(batches_after(batches, hwm))
                .map(|(c, b)| super::backlog::Forwarded {
                    pos: c.pos,
                    prev: c.prev,
                    stamp: c.ts,
                    payload: b.payload.into(),
                }),
        );
        i.repl.commit_cv.notify_all();
        match archive_failed {
            Some(e) => Err(e.into()),
            None => Ok(rep),
        }
    }

    /// Applies batches of this node's own EARLIER incarnation recovered from a peer after a
    /// rebuild (the peer held them; the backup the rebuild came from did not). Each is
    /// checked (a well-formed batch of this node's own writing, at a position of an
    /// incarnation below the current one, the frame's stamp) and applied as plain versions
    /// under last-writer-wins, logged with its origin and position in one WAL append made
    /// durable, so it survives a crash. No high-water mark changes (replay skips this
    /// node's own id), nothing is kept for forwarding, and the change feed never sends them
    /// (they are not local batches). Returns the batches applied and the first refusal
    /// (the ones before it were applied).
    pub fn apply_own_recovered(
        &self,
        batches: &[RemoteBatch<'_>],
    ) -> Result<(usize, Option<ReplError>)> {
        let i = self.inner();
        i.check_poisoned()?;
        let node = i.cfg.node_id;
        let inc = self.incarnation();
        let _one = i.repl.apply_lock.lock();
        let mut checked = Vec::with_capacity(batches.len());
        let mut refused = None;
        for b in batches {
            match check_own(i, node, inc, b) {
                Ok(c) => checked.push(c),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if checked.is_empty() {
            return Ok((0, refused));
        }
        let _g = i.gate.read();
        let entries: Vec<duplex_wal::Entry<'_>> = checked
            .iter()
            .map(|c| duplex_wal::Entry {
                kind: KIND_BATCH,
                payload: &c.payload,
            })
            .collect();
        let archive_failed = match i.wal.append_batch(&entries) {
            Ok(_) => None,
            Err(e @ duplex_wal::Error::ArchiveFailed { .. }) => Some(e),
            Err(e) => return Err(e.into()),
        };
        if !matches!(i.wal.options().sync, duplex_wal::SyncPolicy::Always) {
            i.wal.sync()?;
        }
        let now = i.cfg.clock.now_ms();
        for c in &checked {
            i.apply_remote_ops(c, now)?;
        }
        i.note_logged(checked.iter().map(|c| c.payload.len() as u64).sum());
        i.repl.commit_cv.notify_all();
        match archive_failed {
            Some(e) => Err(e.into()),
            None => Ok((checked.len(), refused)),
        }
    }

    /// The high-water mark of every remote origin applied here (origin, state).
    pub fn origins(&self) -> BTreeMap<u64, OriginState> {
        self.inner().repl.origins.lock().clone()
    }

    /// The durable high-water mark of `origin`: the position a sender resumes after.
    pub fn origin_hwm(&self, origin: u64) -> u64 {
        self.inner()
            .repl
            .origins
            .lock()
            .get(&origin)
            .map_or(0, |s| s.hwm)
    }

    /// Notes that `origin`'s time is at least `ts` (a heartbeat: every later batch of it is
    /// stamped above), after checking it against the allowed clock offset. The HLC moves
    /// past it, so local writes made after stay ahead of the peer's.
    pub fn observe_peer_time(&self, origin: u64, ts: u64) -> std::result::Result<(), ReplError> {
        let i = self.inner();
        check_clock(i, origin, ts)?;
        let mut o = i.repl.origins.lock();
        let s = o.entry(origin).or_default();
        s.heard_ts = s.heard_ts.max(ts);
        Ok(())
    }

    /// Notes that `origin` is on incarnation `incarnation` (from a heartbeat's position): a
    /// peer still below that origin's earlier incarnation then gets the earlier batches
    /// forwarded.
    pub fn note_origin_incarnation(&self, origin: u64, incarnation: u64) {
        if origin == self.node_id() || incarnation == 0 {
            return;
        }
        let mut o = self.inner().repl.origins.lock();
        let s = o.entry(origin).or_default();
        s.incarnation = s.incarnation.max(incarnation);
    }

    /// Notes a rebuilt origin's base (from its opening ACKs): a peer below it gets the
    /// origin's earlier batches up to it forwarded.
    pub fn note_origin_base(&self, origin: u64, base: u64) {
        if origin == self.node_id() {
            return;
        }
        let mut o = self.inner().repl.origins.lock();
        let s = o.entry(origin).or_default();
        s.base = s.base.max(base);
    }

    /// This node's base: the last of its own earlier-incarnation batches its state holds
    /// (set when it was rebuilt from a peer's backup); `None` otherwise.
    pub fn incarnation_base(&self) -> Option<u64> {
        let i = self.inner();
        i.repl
            .origins
            .lock()
            .get(&i.cfg.node_id)
            .map(|s| s.hwm)
            .filter(|h| *h > 0)
    }

    /// The newest `n` conflict journal entries (newest first), entries recorded since open
    /// and entries the journal's bound dropped.
    pub fn conflicts(&self, n: usize) -> (Vec<super::Conflict>, u64, u64) {
        let j = self.inner().repl.conflicts.lock();
        (j.newest(n), j.recorded, j.dropped)
    }
}

/// The batches of a call that [`check`] kept, in order: those above the mark (resends at
/// or below it are skipped; the first refusal ends the kept prefix, which `zip` stops at).
fn batches_after<'b, 'a>(
    batches: &'b [RemoteBatch<'a>],
    hwm: u64,
) -> impl Iterator<Item = &'b RemoteBatch<'a>> {
    let mut prev = hwm;
    batches.iter().filter(move |b| {
        if b.origin_lsn <= prev {
            return false;
        }
        prev = b.origin_lsn;
        true
    })
}

fn check_clock(i: &Inner, origin: u64, ts: u64) -> std::result::Result<(), ReplError> {
    let max = i.cfg.max_clock_offset_ms;
    let now = i.cfg.clock.now_ms();
    let wall = Timestamp(ts).wall_ms();
    if max > 0 && wall > now.saturating_add(max) {
        return Err(ReplError::ClockSkew {
            origin,
            ahead_ms: wall - now,
            max_ms: max,
        });
    }
    Ok(())
}

/// Checks batches in order; returns those to apply (the prefix before the first refusal,
/// resends skipped) and the refusal.
fn check<'a>(
    i: &Inner,
    origin: u64,
    (hwm, known_inc, base): (u64, u64, u64),
    batches: &[RemoteBatch<'a>],
    rep: &mut ApplyReport,
    passed: &mut u64,
) -> (Vec<Checked<'a>>, Option<ReplError>) {
    let mut out: Vec<Checked<'a>> = Vec::new();
    let mut prev = hwm;
    // Behind the mark's incarnation. (Batches of an earlier incarnation than the one the
    // origin announced stay acceptable here: a survivor forwards them to a peer below the
    // rebuilt origin's base; the origin's own link refuses them.)
    let held_inc = split_position(hwm).0;
    for b in batches {
        let (inc, _) = split_position(b.origin_lsn);
        if inc < held_inc {
            let e = ReplError::Behind {
                origin,
                origin_lsn: b.origin_lsn,
                got: inc,
                held: held_inc,
            };
            return (out, Some(e));
        }
        let twice = crate::testing::mutated(crate::testing::Mutation::ApplyTwice);
        if b.origin_lsn <= prev && !twice {
            rep.duplicates += 1;
            continue;
        }
        // A rebuilt origin's earlier batch beyond its base reaches everyone as the origin's
        // own copy (it took it back): passed over here, the chain moving past it.
        if known_inc > inc && base > 0 && b.origin_lsn > base && b.prev_origin_lsn == prev {
            rep.duplicates += 1;
            prev = b.origin_lsn;
            *passed = prev;
            continue;
        }
        if b.prev_origin_lsn != prev && !twice {
            let e = ReplError::Gap {
                origin,
                expected: prev,
                got_prev: b.prev_origin_lsn,
                origin_lsn: b.origin_lsn,
            };
            return (out, Some(e));
        }
        let bad = |why: &str| ReplError::BadBatch {
            origin,
            origin_lsn: b.origin_lsn,
            why: why.to_string(),
        };
        let batch = match BatchRef::decode(b.payload, i.cfg.max_key_size, i.cfg.max_value_size) {
            Ok(r) => r,
            Err(k) => return (out, Some(bad(&k.to_string()))),
        };
        if let Some(w) = payload_fault(&batch, b, origin) {
            return (out, Some(bad(w)));
        }
        if let Err(e) = check_clock(i, origin, b.stamp) {
            return (out, Some(e));
        }
        let mut payload = b.payload.to_vec();
        payload[ORIGIN_LSN_OFFSET..ORIGIN_LSN_OFFSET + 8]
            .copy_from_slice(&b.origin_lsn.to_le_bytes());
        out.push(Checked {
            pos: b.origin_lsn,
            prev,
            ts: b.stamp,
            payload,
            batch,
        });
        prev = b.origin_lsn;
    }
    (out, None)
}

/// What is wrong with a decoded payload sent as `origin`'s batch `b`, if anything: another
/// origin, a batch the origin applied from another server (only an origin's own batches
/// travel), a stamp other than the frame's, no operation.
fn payload_fault(batch: &BatchRef<'_>, b: &RemoteBatch<'_>, origin: u64) -> Option<&'static str> {
    if batch.stamp.origin != origin {
        Some("its payload names another origin")
    } else if batch.origin_lsn != 0 {
        Some("its payload is a batch the origin applied from another server (only an origin's own batches are sent)")
    } else if batch.stamp.ts.0 != b.stamp {
        Some("the frame's stamp differs from the payload's")
    } else if batch.count == 0 {
        Some("it holds no operation")
    } else if b.payload.len() < ORIGIN_LSN_OFFSET + 8 {
        Some("short header")
    } else {
        None
    }
}

/// Checks one batch of this node's own earlier incarnation (see
/// [`Database::apply_own_recovered`]).
fn check_own<'a>(
    i: &Inner,
    node: u64,
    inc: u64,
    b: &RemoteBatch<'a>,
) -> Result<Checked<'a>, ReplError> {
    let bad = |why: &str| ReplError::BadBatch {
        origin: node,
        origin_lsn: b.origin_lsn,
        why: why.to_string(),
    };
    let (b_inc, lsn) = split_position(b.origin_lsn);
    if b_inc >= inc || lsn == 0 {
        return Err(bad("not a position of an earlier incarnation of this node"));
    }
    let batch = BatchRef::decode(b.payload, i.cfg.max_key_size, i.cfg.max_value_size)
        .map_err(|k| bad(&k.to_string()))?;
    if let Some(w) = payload_fault(&batch, b, node) {
        return Err(bad(w));
    }
    let mut payload = b.payload.to_vec();
    payload[ORIGIN_LSN_OFFSET..ORIGIN_LSN_OFFSET + 8].copy_from_slice(&b.origin_lsn.to_le_bytes());
    Ok(Checked {
        pos: b.origin_lsn,
        prev: b.prev_origin_lsn,
        ts: b.stamp,
        payload,
        batch,
    })
}

impl Inner {
    /// Applies one checked remote batch to the memtable under last-writer-wins, recording
    /// each overwritten concurrent version (either side's) in the conflict journal. Returns
    /// the entries recorded.
    fn apply_remote_ops(&self, c: &Checked<'_>, now_ms: u64) -> Result<usize> {
        let stamp = c.batch.stamp;
        let seen: BTreeMap<u64, u64> = c.batch.seen().collect();
        let mut conflicts = Vec::new();
        let mut ops = Vec::with_capacity(c.batch.count);
        for op in c.batch.ops() {
            if let Some(old) = self.version_of(op.key)? {
                if old.stamp.origin != stamp.origin && old.stamp != stamp {
                    // The writer had applied `old` if its seen list reaches old's stamp.
                    let seen_old = seen
                        .get(&old.stamp.origin)
                        .is_some_and(|t| *t >= old.stamp.ts.0);
                    if old.stamp.wins_over(&stamp) {
                        // The incoming write loses; concurrent unless `old` was written
                        // after it was seen, which cannot be: it arrives only now.
                        conflicts.push(super::Conflict::new(
                            op.key, old.stamp, stamp, op.value, now_ms,
                        ));
                    } else if !seen_old {
                        conflicts.push(Conflict::new(
                            op.key,
                            stamp,
                            old.stamp,
                            old.value.as_deref(),
                            now_ms,
                        ));
                    }
                }
            }
            ops.push(match op.value {
                Some(v) => crate::batch::Op::Put {
                    key: op.key.to_vec(),
                    value: v.to_vec(),
                },
                None => crate::batch::Op::Delete {
                    key: op.key.to_vec(),
                },
            });
        }
        self.apply(stamp, ops)?;
        let n = conflicts.len();
        if n > 0 {
            let mut j = self.repl.conflicts.lock();
            for c in conflicts {
                j.record(c);
            }
        }
        Ok(n)
    }

    /// The current version of `key` across every layer.
    fn version_of(&self, key: &[u8]) -> Result<Option<MemVersion>> {
        let (active, frozen, tree) = {
            let m = self.mem.read();
            (m.active.clone(), m.frozen.clone(), m.tree.clone())
        };
        if let Some(v) = active.get(key, u64::MAX) {
            return Ok(Some(v));
        }
        if let Some(v) = frozen.as_ref().and_then(|f| f.get(key, u64::MAX)) {
            return Ok(Some(v));
        }
        Ok(tree
            .get(key)?
            .map(|(stamp, value): (Stamp, Option<Vec<u8>>)| MemVersion { stamp, value }))
    }
}
