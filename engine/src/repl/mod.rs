//! The replication core: what a server sends its peers and how it applies what they send
//! (DESIGN.md steps 2-4). No sockets, threads or wall-clock reads of its own: a link (the
//! server's, or a simulation's) calls these with frames' contents and the time it lives in.
//!
//! - Positions ([`position`]): an origin's batches are named by `incarnation << 48 | lsn`,
//!   the incarnation being the timeline of the origin's log. A restored or rebuilt server
//!   starts a new timeline, so its new batches sort above everything its old incarnation
//!   could have sent and no peer takes them for duplicates.
//! - The change feed ([`FeedCursor`]): the local-origin batches after a position, from the
//!   in-memory backlog of recent commits, the live WAL, or the archive.
//! - [`crate::Database::apply_remote`]: checks received batches (origin, payload, chain,
//!   clock) and applies each whole or not at all, logged with its origin and origin
//!   position, so the per-origin high-water mark advances durably in the same WAL record.
//! - The conflict journal ([`Conflict`]): versions overwritten by a concurrent write.

mod apply;
mod backlog;
mod conflicts;
mod feed;
mod forward;
mod node;
mod takeback;

use std::collections::BTreeMap;

use parking_lot::{Condvar, Mutex};

pub use apply::{ApplyReport, RemoteBatch, ReplError};
pub(crate) use backlog::Backlog;
pub use conflicts::{Conflict, ConflictJournal};
pub use feed::{FeedBatch, FeedCursor};
pub use forward::{ReplMemory, Stranded};
pub use takeback::ArchiveTakeBack;

/// The base of a node rebuilt from a peer that held none of its earlier batches: below
/// every real position (incarnations start at 1), above 0 so it is announced and a
/// survivor gives back every earlier batch it holds (issue 13, campaign seed 1524: with a
/// base of 0 the rebuilt node said nothing and its batches that only another survivor
/// held were never given back). A chain after it starts with an origin's first batch
/// (predecessor 0).
pub const EMPTY_BASE: u64 = 1;

/// Bits of a position that hold the LSN; the incarnation is above them.
pub const LSN_BITS: u32 = 48;
/// The largest incarnation (timeline) a position can name.
pub const MAX_INCARNATION: u64 = (1 << 15) - 1;

/// The position of the batch at `lsn` of an origin's incarnation `incarnation`.
pub fn position(incarnation: u64, lsn: u64) -> u64 {
    (incarnation << LSN_BITS) | (lsn & ((1 << LSN_BITS) - 1))
}

/// (incarnation, lsn) of a position.
pub fn split_position(pos: u64) -> (u64, u64) {
    (pos >> LSN_BITS, pos & ((1 << LSN_BITS) - 1))
}

/// What this server knows of one other origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginState {
    /// Position of the origin's last batch applied here (durable): the high-water mark a
    /// sender resumes after.
    pub hwm: u64,
    /// Largest timestamp of the origin's batches applied here.
    pub max_ts: u64,
    /// Batches of the origin applied since open.
    pub applied: u64,
    /// Batches of the origin received again and skipped since open (resent after a
    /// reconnect: already held).
    pub duplicates: u64,
    /// The origin's time as last heard (a batch or a heartbeat): every later batch of it
    /// is stamped above this.
    pub heard_ts: u64,
    /// The origin's current incarnation, as its batches and heartbeats say (0: unknown).
    pub incarnation: u64,
    /// The origin's base, when it was rebuilt and said so: the last of its earlier batches
    /// its rebuilt state holds (0: none known).
    pub base: u64,
}

/// Where the log stood at a checkpoint: (local LSN, every origin's mark then).
pub(crate) type Anchor = (u64, Vec<(u64, u64)>);

/// The replication state of an open database.
#[derive(Debug, Default)]
pub(crate) struct ReplState {
    /// Per remote origin; rebuilt at open from the checkpoint and the replayed log.
    pub(crate) origins: Mutex<BTreeMap<u64, OriginState>>,
    /// Recent local batches, for links that keep up.
    pub(crate) backlog: Mutex<Backlog>,
    /// Notified after every local commit.
    pub(crate) commit_cv: Condvar,
    /// The journal of overwritten concurrent versions.
    pub(crate) conflicts: Mutex<ConflictJournal>,
    /// One apply of remote batches at a time (the chain check and the append stay in
    /// order).
    pub(crate) apply_lock: Mutex<()>,
    /// Recent batches of other origins, per origin, to forward to a peer that missed them
    /// when their origin is unreachable.
    pub(crate) forward: Mutex<BTreeMap<u64, backlog::ForwardLog>>,
    /// The least LSN of this incarnation every peer acknowledged (`None`: no peers, or
    /// not known): checkpoints keep the WAL after it, up to a bound.
    pub(crate) peer_floor: Mutex<Option<u64>>,
    /// Whether a checkpoint released WAL a peer still needed (past the bound).
    pub(crate) floor_dropped: std::sync::atomic::AtomicBool,
    /// Position of the last local batch stamped since open (0: none yet): a session
    /// token's position ([`crate::Database::last_local_position`]).
    pub(crate) last_local: std::sync::atomic::AtomicU64,
    /// What peers said they lack (LACKING frames): (origin, peer) -> the mark after which
    /// that peer holds none of the origin's batches.
    pub(crate) lacking: Mutex<BTreeMap<(u64, u64), u64>>,
    /// Per other origin, the least mark of it that a peer other than the origin is known
    /// to hold ([`crate::Database::set_forward_floors`]; 0: a peer not heard from yet):
    /// checkpoints keep the WAL holding that origin's batches after it, up to a bound.
    pub(crate) forward_floors: Mutex<BTreeMap<u64, u64>>,
    /// Where the log stood at recent checkpoints: (local LSN, every origin's mark then).
    /// Each origin's batches after its mark in an anchor were logged after that LSN: how a
    /// checkpoint finds the WAL it must keep for [`ReplState::forward_floors`].
    pub(crate) anchors: Mutex<std::collections::VecDeque<Anchor>>,
}

impl ReplState {
    /// The seen list written into a local batch: every other origin's largest applied
    /// timestamp.
    pub(crate) fn seen(&self) -> Vec<(u64, u64)> {
        let o = self.origins.lock();
        if o.is_empty() {
            return Vec::new();
        }
        o.iter()
            .filter(|(_, s)| s.max_ts > 0)
            .map(|(id, s)| (*id, s.max_ts))
            .collect()
    }

    /// Keeps batches of `origin` just applied for forwarding (when the backlog is on).
    pub(crate) fn keep_for_forwarding(
        &self,
        origin: u64,
        batches: impl Iterator<Item = backlog::Forwarded>,
    ) {
        let cap = self.backlog.lock().cap;
        if cap == 0 {
            return;
        }
        let mut f = self.forward.lock();
        let log = f.entry(origin).or_default();
        for b in batches {
            log.push(b, cap);
        }
    }

    /// Notes that the log up to `lsn` holds exactly the batches of every origin up to its
    /// mark in `marks` (or fewer: a later view of the marks is as good), for
    /// [`ReplState::keep_for_peers_from`]. Keeps at most `MAX_ANCHORS` (dropping every
    /// other old one: the lookup only gets more cautious).
    pub(crate) fn anchor(&self, lsn: u64, marks: Vec<(u64, u64)>) {
        const MAX_ANCHORS: usize = 256;
        let mut a = self.anchors.lock();
        if a.back().is_some_and(|(l, _)| *l >= lsn) {
            return;
        }
        a.push_back((lsn, marks));
        if a.len() > MAX_ANCHORS {
            let kept: std::collections::VecDeque<_> = a
                .drain(..)
                .enumerate()
                .filter(|(i, _)| i % 2 == 1 || *i >= MAX_ANCHORS / 2)
                .map(|(_, x)| x)
                .collect();
            *a = kept;
        }
    }

    /// Forgets anchors wholly below `lsn` (the log before it is released), keeping the
    /// last of them.
    pub(crate) fn forget_anchors_below(&self, lsn: u64) {
        let mut a = self.anchors.lock();
        while a.len() > 1 && a.get(1).is_some_and(|(l, _)| *l < lsn) {
            a.pop_front();
        }
    }

    /// The first local LSN the WAL must keep so that every other origin's batches after
    /// the least mark a peer holds of it ([`ReplState::forward_floors`]) stay in the log,
    /// to forward them or give them back to a rebuilt origin (issue 13, the give-back
    /// window: a survivor that restarted had only its log to give them from). `None`: no
    /// peer lacks anything this server holds. 0: not known where (keep all).
    pub(crate) fn keep_for_peers_from(&self) -> Option<u64> {
        let floors = self.forward_floors.lock().clone();
        let marks: BTreeMap<u64, u64> = self
            .origins
            .lock()
            .iter()
            .map(|(o, s)| (*o, s.hwm))
            .collect();
        let anchors = self.anchors.lock();
        let mut keep: Option<u64> = None;
        for (origin, floor) in floors {
            if marks.get(&origin).copied().unwrap_or(0) <= floor {
                continue;
            }
            // The latest anchor whose mark of the origin is below the floor: the batch at
            // the floor (a chain read from the log starts there) and every later one were
            // logged after that anchor's LSN.
            let from = anchors
                .iter()
                .rev()
                .find(|(_, m)| m.iter().find(|(o, _)| *o == origin).map_or(0, |(_, h)| *h) < floor)
                .map_or(0, |(lsn, _)| lsn + 1);
            keep = Some(keep.map_or(from, |k| k.min(from)));
        }
        keep
    }

    /// The high-water marks, for a checkpoint.
    pub(crate) fn hwms(&self) -> Vec<(u64, u64)> {
        self.origins
            .lock()
            .iter()
            .filter(|(_, s)| s.hwm > 0)
            .map(|(id, s)| (*id, s.hwm))
            .collect()
    }

    /// Raises high-water marks (open: the checkpoint's list, then the replayed log).
    pub(crate) fn raise(&self, marks: impl IntoIterator<Item = (u64, u64, u64)>) {
        let mut o = self.origins.lock();
        for (origin, hwm, ts) in marks {
            let s = o.entry(origin).or_default();
            s.hwm = s.hwm.max(hwm);
            s.max_ts = s.max_ts.max(ts);
            s.heard_ts = s.heard_ts.max(ts);
        }
    }
}

/// A backlog entry for a local batch just stamped.
pub(crate) fn backlog_entry(pos: u64, lsn: u64, stamp: u64, payload: Vec<u8>) -> backlog::Entry {
    backlog::Entry {
        pos,
        lsn,
        stamp,
        payload: payload.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_a_later_incarnation_sort_above_every_earlier_one() {
        let old = position(1, (1 << LSN_BITS) - 1);
        let new = position(2, 1);
        assert!(new > old);
        assert_eq!(split_position(new), (2, 1));
        assert_eq!(split_position(old), (1, (1 << LSN_BITS) - 1));
        assert!(position(MAX_INCARNATION, 1) < u64::MAX);
    }
}
