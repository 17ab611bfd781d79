//! The replication side of a [`Database`]: its identity among peers (node id,
//! incarnation, positions), the heartbeat and the commit wake-up a transfer loop uses, the
//! WAL kept for lagging peers, and the backlog filled under the WAL's append lock.

use std::sync::atomic::Ordering;

use super::position;
use crate::batch::TS_OFFSET;
use crate::db::{Database, Inner};

impl Database {
    /// This server's node id.
    pub fn node_id(&self) -> u64 {
        self.inner().cfg.node_id
    }

    /// This database's incarnation of its node id: the timeline of its log (a restore
    /// starts a new one), the high bits of its replication positions.
    pub fn incarnation(&self) -> u64 {
        self.inner().wal.options().timeline
    }

    /// The replication position of the last durable local record: every local batch at or
    /// below it may be sent to peers.
    pub fn durable_position(&self) -> u64 {
        position(self.incarnation(), self.inner().wal.durable_lsn())
    }

    /// The replication position of the last local-origin batch stamped since open (0: none
    /// yet), durable or about to be. A client's session token: read after its write was
    /// acknowledged, it is at or above that write's position and names a batch peers will
    /// receive, so a peer whose `origin_hwm(node_id)` reaches it holds the write (it may
    /// also cover other clients' writes made at the same time: a waiter waits a little
    /// longer, never too little).
    pub fn last_local_position(&self) -> u64 {
        self.inner().repl.last_local.load(Ordering::Acquire)
    }

    /// Tells the engine the least position of this node any peer acknowledged (`None`:
    /// no peers). Checkpoints then keep the WAL after it (up to
    /// `Config::peer_wal_retention_bytes`), so a peer that was away catches up from the
    /// log instead of needing a rebuild. A position of an earlier incarnation keeps the
    /// whole WAL of this one (within the bound).
    pub fn set_peer_floor(&self, position: Option<u64>) {
        let lsn = position.map(|p| match crate::repl::split_position(p) {
            (inc, lsn) if inc == self.incarnation() => lsn,
            _ => 0,
        });
        *self.inner().repl.peer_floor.lock() = lsn;
    }

    /// Tells the engine, for each other origin, the least mark of it that a peer other
    /// than that origin is known to hold (0: a peer not heard from yet); replaces what was
    /// said before. Checkpoints then keep the WAL holding each origin's batches after it
    /// (up to `Config::peer_wal_retention_bytes`, with [`Database::set_peer_floor`]'s): a
    /// server that restarted (its forwarding memory empty) can still forward them, and give
    /// them back to their origin if it is rebuilt from a peer that lacked them.
    pub fn set_forward_floors(&self, floors: impl IntoIterator<Item = (u64, u64)>) {
        let me = self.node_id();
        *self.inner().repl.forward_floors.lock() =
            floors.into_iter().filter(|(o, _)| *o != me).collect();
    }

    /// Whether a checkpoint released WAL that a peer still needed (more than
    /// `peer_wal_retention_bytes` behind): that peer must catch up from the archive or be
    /// rebuilt.
    pub fn peer_floor_dropped(&self) -> bool {
        self.inner()
            .repl
            .floor_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until a commit (local or remote) lands or `timeout` passes; a transfer loop
    /// wakes on it to send at once.
    pub fn wait_for_commit(&self, timeout: std::time::Duration) {
        let mut b = self.inner().repl.backlog.lock();
        let _ = self.inner().repl.commit_cv.wait_for(&mut b, timeout);
    }

    /// A heartbeat for peers: (stamp, position) read under the log's append lock; every
    /// local batch after `position` will be stamped above `stamp`. Send it once every
    /// batch up to `position` was sent.
    pub fn heartbeat(&self) -> (u64, u64) {
        let i = self.inner();
        let inc = i.wal.options().timeline;
        i.wal
            .with_append_lock(|next| (i.hlc.now().0, position(inc, next.saturating_sub(1))))
    }
}

impl Inner {
    /// Called under the WAL's append lock for each local batch, in LSN order: takes its
    /// timestamp there (so stamps rise with LSN on this origin: a receiver knows nothing
    /// later can come below the last one it saw) and puts the batch in the backlog.
    pub(crate) fn stamp_locked(&self, lsn: u64, payload: &[u8]) -> u64 {
        let ts = self.hlc.now().0;
        self.backlog_locked(lsn, payload, ts);
        ts
    }

    /// Puts a local batch just given its LSN (and timestamp `ts`) in the backlog; under
    /// the WAL's append lock.
    pub(crate) fn backlog_locked(&self, lsn: u64, payload: &[u8], ts: u64) {
        let mut b = self.repl.backlog.lock();
        let pos = position(self.wal.options().timeline, lsn);
        self.repl.last_local.fetch_max(pos, Ordering::Release);
        if b.cap > 0 {
            let mut p = payload.to_vec();
            if let Some(slot) = p.get_mut(TS_OFFSET..TS_OFFSET + 8) {
                slot.copy_from_slice(&ts.to_le_bytes());
            }
            b.push(crate::repl::backlog_entry(pos, lsn, ts, p));
        } else {
            b.covers_from = pos;
        }
    }
}
