//! The two ends of an established peer link as pure state machines: no sockets, threads or
//! clock reads (the caller passes `now_ms`), so tests and a simulation drive them with
//! frames in memory.
//!
//! - [`Sender`] (the initiator, the origin of the batches): waits for the receiver's first
//!   ACK, then sends its own durable batches after the acknowledged position in bounded
//!   BATCHES frames, keeping at most `window_bytes` of payload unacknowledged; an ACK moves
//!   the window, a RESYNC rewinds to the receiver's mark; heartbeats when idle.
//! - [`Receiver`] (the acceptor): answers the handshake's end with ACK(origin, durable
//!   high-water mark), applies each BATCHES frame with [`Database::apply_remote`] and
//!   answers ACK with the new mark, plus RESYNC when a batch was refused.
//! - Forwarding: the receiver also tells the sender its marks of every other origin (ACKs
//!   of those origins), and a sender whose database has not heard from an origin for
//!   `forward_after_ms` sends the peer that origin's batches it holds and the peer lacks
//!   ([`FeedCursor::read_forward`]: origin, positions, stamps and payloads as the origin
//!   sent them). So an update of a member that dies after reaching one peer reaches every
//!   peer; while the origin is alive each update crosses each link once.
//!
//! Either end fails with a [`LinkError`]; its [`LinkError::farewell`] is the ERROR frame to
//! send before the connection closes.

use std::collections::{BTreeMap, VecDeque};

pub use super::receive::{Receiver, ReceiverProgress};

use duplex_engine::{Database, FeedBatch, FeedCursor, RemoteBatch, ReplError, Timestamp};
use duplex_proto::peer::{
    Batch, Batches, ErrorCode, ErrorFrame, Frame, FrameLimits, Heartbeat, Lacking,
    BATCHES_HEADER_LEN, BATCH_HEADER_LEN,
};

/// Why a link ends. Every variant closes the connection; the connection layer reconnects
/// (slowly for [`LinkError::NeedsRebuild`] and [`LinkError::ClockSkew`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The peer broke the link protocol (a frame that has no place on this side).
    #[error("peer link protocol violation: {0}; the connection is closed and the link reconnects")]
    Protocol(String),
    /// This server cannot give the peer what it needs (or the peer holds more than this
    /// server ever had): one of the two must be rebuilt.
    #[error("{0}")]
    NeedsRebuild(String),
    /// A clock is off by more than `max_clock_offset_ms`.
    #[error("{0}")]
    ClockSkew(String),
    /// The peer sent an ERROR frame.
    #[error("the peer reported {code:?}: {message}")]
    Peer {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// A local failure (the WAL or the store).
    #[error("local failure on the peer link: {0}")]
    Local(String),
    /// The peer must first get this node's earlier batches from a survivor (this node was
    /// rebuilt): the link reconnects and asks again.
    #[error("{0}")]
    Waiting(String),
}

impl LinkError {
    /// The ERROR frame to send the peer before closing (none when the peer ended the link).
    pub fn farewell(&self) -> Option<Frame> {
        let code = match self {
            LinkError::Protocol(_) => ErrorCode::Protocol,
            LinkError::NeedsRebuild(_) => ErrorCode::NeedsRebuild,
            LinkError::ClockSkew(_) => ErrorCode::ClockSkew,
            LinkError::Local(_) => ErrorCode::Internal,
            LinkError::Peer { .. } | LinkError::Waiting(_) => return None,
        };
        Some(Frame::Error(ErrorFrame::new(code, &self.to_string())))
    }

    /// The error a received ERROR frame means for this side.
    pub(super) fn from_peer(e: &ErrorFrame) -> LinkError {
        match e.code {
            ErrorCode::NeedsRebuild => LinkError::NeedsRebuild(e.message.clone()),
            ErrorCode::ClockSkew => LinkError::ClockSkew(e.message.clone()),
            code => LinkError::Peer {
                code,
                message: e.message.clone(),
            },
        }
    }
}

/// How a sender shapes its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendLimits {
    /// Frame limits both ends decode with.
    pub frame: FrameLimits,
    /// Most batches in one BATCHES frame.
    pub max_batches_per_frame: usize,
    /// Payload bytes a BATCHES frame aims at (one larger batch still goes alone).
    pub frame_bytes: usize,
    /// Most payload bytes sent and not yet acknowledged.
    pub window_bytes: u64,
    /// Milliseconds between heartbeats of an idle link.
    pub heartbeat_ms: u64,
    /// An origin silent this long (ms) is taken for lost: its batches this server holds
    /// are forwarded to the peer if it lacks them.
    pub forward_after_ms: u64,
}

/// One batch sent and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    pos: u64,
    stamp: u64,
    bytes: u64,
}

/// What a sender reports about its link (copied into the shared status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderProgress {
    /// The peer's acknowledged position of this origin (0 before the first ACK).
    pub acked: u64,
    /// Batches sent and not yet acknowledged.
    pub lag_batches: u64,
    /// Their payload bytes.
    pub lag_bytes: u64,
    /// Milliseconds since the oldest of them was stamped (0 when none).
    pub lag_ms: u64,
    /// Frames sent on this link.
    pub frames_sent: u64,
    /// Batches sent on this link.
    pub batches_sent: u64,
    /// Batches of other origins forwarded on this link.
    pub batches_forwarded: u64,
}

/// The sending end of a link: this server's own batches to one peer.
#[derive(Debug)]
pub struct Sender {
    node: u64,
    limits: SendLimits,
    cursor: FeedCursor,
    /// The peer's acknowledged position; `None` until its first ACK.
    acked: Option<u64>,
    /// Position of the last batch sent (the feed continues after it).
    sent: u64,
    inflight: VecDeque<InFlight>,
    inflight_bytes: u64,
    last_heartbeat_ms: Option<u64>,
    frames_sent: u64,
    batches_sent: u64,
    /// The peer's node id (its own batches are never forwarded to it).
    peer: Option<u64>,
    /// The peer's marks of other origins, from its ACKs and RESYNCs.
    peer_marks: BTreeMap<u64, u64>,
    /// The last position of each other origin forwarded on this link.
    forwarded: BTreeMap<u64, u64>,
    batches_forwarded: u64,
    /// Per origin, the position after which this server could not vouch for a chain to
    /// forward (neither memory nor log): not read again until it changes.
    unreadable: BTreeMap<u64, u64>,
    /// Per origin, the peer's mark a LACKING was sent for on this connection.
    lacking_sent: BTreeMap<u64, u64>,
}

impl Sender {
    /// A sender of node `node`'s batches, waiting for the peer's first ACK.
    pub fn new(node: u64, limits: SendLimits) -> Sender {
        Sender {
            node,
            limits,
            cursor: FeedCursor::new(),
            acked: None,
            sent: 0,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            last_heartbeat_ms: None,
            frames_sent: 0,
            batches_sent: 0,
            peer: None,
            peer_marks: BTreeMap::new(),
            forwarded: BTreeMap::new(),
            batches_forwarded: 0,
            unreadable: BTreeMap::new(),
            lacking_sent: BTreeMap::new(),
        }
    }

    /// The same sender, knowing the peer's node id (learnt in the handshake).
    pub fn to_peer(mut self, peer: u64) -> Sender {
        self.peer = Some(peer);
        self
    }

    /// The peer's marks of other origins as it last told them (empty until it did).
    pub fn peer_marks(&self) -> &BTreeMap<u64, u64> {
        &self.peer_marks
    }

    /// Whether the peer has told where to start (its first ACK arrived).
    pub fn started(&self) -> bool {
        self.acked.is_some()
    }

    /// Whether the window of unacknowledged bytes is full: nothing more is sent until an
    /// ACK arrives.
    pub fn window_full(&self) -> bool {
        self.inflight_bytes >= self.limits.window_bytes
    }

    /// Takes one frame from the receiver: ACK, RESYNC or ERROR.
    pub fn on_frame(&mut self, frame: &Frame) -> Result<(), LinkError> {
        match frame {
            Frame::Ack(a) if a.origin == self.node => {
                self.on_ack(a.durable_lsn);
                Ok(())
            }
            Frame::Resync(r) if r.origin == self.node => {
                self.rewind(r.last_good_lsn);
                Ok(())
            }
            // The peer's mark of another origin (what it holds, or where a forwarded
            // chain must restart), or, of its own, its base after a rebuild.
            Frame::Ack(a) => {
                let m = self.peer_marks.entry(a.origin).or_default();
                *m = (*m).max(a.durable_lsn);
                Ok(())
            }
            Frame::Resync(r) => {
                self.peer_marks.insert(r.origin, r.last_good_lsn);
                self.forwarded.insert(r.origin, r.last_good_lsn);
                Ok(())
            }
            Frame::Error(e) => Err(LinkError::from_peer(e)),
            other => Err(LinkError::Protocol(format!(
                "the receiver sent {} (of origin {:?}) to sender {}",
                other.kind(),
                frame_origin(other),
                self.node
            ))),
        }
    }

    fn on_ack(&mut self, mark: u64) {
        if self.acked.is_none() {
            self.rewind(mark);
            return;
        }
        self.acked = Some(self.acked.unwrap_or(0).max(mark));
        while self.inflight.front().is_some_and(|f| f.pos <= mark) {
            if let Some(f) = self.inflight.pop_front() {
                self.inflight_bytes -= f.bytes;
            }
        }
        // The peer holds more than was sent on this link (sent on an earlier one).
        if mark > self.sent {
            self.rewind(mark);
        }
    }

    /// Starts over after `mark`: everything later is (re)sent.
    fn rewind(&mut self, mark: u64) {
        self.acked = Some(mark);
        self.sent = mark;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.cursor = FeedCursor::new();
    }

    /// The frames to send now: BATCHES while the window allows and durable batches wait,
    /// else a HEARTBEAT when one is due. Nothing before the peer's first ACK.
    pub fn poll(&mut self, db: &Database, now_ms: u64) -> Result<Vec<Frame>, LinkError> {
        let mut out = Vec::new();
        if self.acked.is_none() {
            return Ok(out);
        }
        let due = self
            .last_heartbeat_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= self.limits.heartbeat_ms);
        // Taken before the read: once the feed is empty and durable past it, every batch
        // up to its position was sent.
        let hb = due.then(|| db.heartbeat());
        let mut drained = false;
        while !self.window_full() {
            let room = self.limits.window_bytes - self.inflight_bytes;
            let want = (self.limits.frame_bytes as u64).min(room).max(1) as usize;
            let batches = self
                .cursor
                .read(db, self.sent, self.limits.max_batches_per_frame, want)
                .map_err(feed_error)?;
            if batches.is_empty() {
                drained = true;
                break;
            }
            self.frame_batches(&batches, &mut out);
        }
        self.forward(db, now_ms, &mut out);
        let Some((hb_stamp, hb_pos)) = hb else {
            return Ok(out);
        };
        if drained && db.durable_position() >= hb_pos {
            self.last_heartbeat_ms = Some(now_ms);
            out.push(Frame::Heartbeat(Heartbeat {
                origin: self.node,
                stamp: hb_stamp,
                last_origin_lsn: self.sent,
            }));
            self.frames_sent += 1;
        }
        Ok(out)
    }

    /// Forwards the batches of origins silent for `forward_after_ms` that this server holds
    /// and the peer lacks, one frame per origin per poll, never the peer's own.
    fn forward(&mut self, db: &Database, now_ms: u64, out: &mut Vec<Frame>) {
        // Only knowing the peer: its own batches are never forwarded to it.
        if self.peer.is_none() {
            return;
        }
        for (origin, st) in db.origins() {
            if origin == self.node {
                continue;
            }
            if Some(origin) == self.peer {
                self.give_back(db, origin, st, out);
                continue;
            }
            let silent = now_ms.saturating_sub(Timestamp(st.heard_ts).wall_ms());
            let known = self.peer_marks.get(&origin).copied();
            let mark = known.unwrap_or(0);
            // Also when the origin moved to a new incarnation (it was rebuilt) and the peer
            // reported a mark of an earlier one: it still lacks the end of the earlier
            // incarnation, which the origin cannot send.
            // Only up to the origin's base (it said so to this server): what lies beyond
            // it reaches the peer as the rebuilt origin's own copies.
            let behind = known.is_some_and(|m| {
                duplex_engine::split_position(m).0 < st.incarnation && m < st.base
            });
            if silent < self.limits.forward_after_ms && !behind {
                continue;
            }
            let after = mark.max(self.forwarded.get(&origin).copied().unwrap_or(0));
            if st.hwm <= after {
                // Below a rebuilt origin's base with nothing more here: say so.
                if behind && st.hwm <= mark {
                    self.lacking(origin, mark, out);
                }
                continue;
            }
            if self.unreadable.get(&origin) == Some(&after) {
                continue;
            }
            let want = self.limits.frame_bytes;
            let per_frame = (self.limits.frame.max_batches_per_frame as usize)
                .min(self.limits.max_batches_per_frame)
                .max(1);
            let Some(mut batches) = FeedCursor::read_forward(db, origin, after, per_frame, want)
            else {
                // Neither memory nor the log holds the chain from `after` any more.
                self.unreadable.insert(origin, after);
                if behind && after == mark {
                    self.lacking(origin, mark, out);
                }
                continue;
            };
            if behind && silent < self.limits.forward_after_ms {
                batches.retain(|b| b.origin_lsn <= st.base);
            }
            let Some(last) = batches.last().map(|b| b.origin_lsn) else {
                continue;
            };
            let n = batches.len() as u64;
            let frame = Batches {
                origin,
                batches: batches.iter().map(frame_batch).collect(),
            };
            // At most `frame_bytes` of payload, or one batch the frame limits allow.
            tracing::info!(
                event = "peer_forward",
                origin,
                batches = n,
                after,
                "forwarding a silent origin's batches the peer lacks"
            );
            self.forwarded.insert(origin, last);
            self.batches_forwarded += n;
            self.frames_sent += 1;
            out.push(Frame::Batches(frame));
        }
    }

    /// Tells the peer (once per mark and connection) that this server holds none of
    /// `origin`'s batches after the peer's `mark`: a peer below a rebuilt origin's base
    /// that hears it from every other member turns needs-rebuild instead of waiting.
    fn lacking(&mut self, origin: u64, mark: u64, out: &mut Vec<Frame>) {
        if self.lacking_sent.get(&origin) == Some(&mark) {
            return;
        }
        tracing::warn!(
            event = "peer_lacking",
            origin,
            after = mark,
            "the peer needs an origin's earlier batches this server no longer holds"
        );
        self.lacking_sent.insert(origin, mark);
        self.frames_sent += 1;
        out.push(Frame::Lacking(Lacking {
            origin,
            after: mark,
        }));
    }

    /// A rebuilt peer's own earlier batches this server holds beyond the peer's base (it
    /// said so in its opening ACKs): forwarded to it, which takes them back.
    fn give_back(
        &mut self,
        db: &Database,
        peer: u64,
        st: duplex_engine::OriginState,
        out: &mut Vec<Frame>,
    ) {
        let Some(base) = self.peer_marks.get(&peer).copied().filter(|b| *b > 0) else {
            return;
        };
        db.note_origin_base(peer, base);
        let after = base.max(self.forwarded.get(&peer).copied().unwrap_or(0));
        // Only batches of an incarnation the peer has left (its current one, from its
        // handshake, is what it sends itself).
        let earlier = |pos: u64| duplex_engine::split_position(pos).0 < st.incarnation;
        if st.incarnation == 0 || st.hwm <= after || !earlier(after) {
            return;
        }
        let per_frame = (self.limits.frame.max_batches_per_frame as usize)
            .min(self.limits.max_batches_per_frame)
            .max(1);
        let Some(mut batches) =
            FeedCursor::read_forward(db, peer, after, per_frame, self.limits.frame_bytes)
        else {
            return;
        };
        batches.retain(|b| earlier(b.origin_lsn));
        let Some(last) = batches.last().map(|b| b.origin_lsn) else {
            return;
        };
        tracing::info!(
            event = "peer_give_back",
            peer,
            batches = batches.len(),
            after,
            "giving a rebuilt peer back its own earlier batches"
        );
        self.forwarded.insert(peer, last);
        self.batches_forwarded += batches.len() as u64;
        self.frames_sent += 1;
        out.push(Frame::Batches(Batches {
            origin: peer,
            batches: batches.iter().map(frame_batch).collect(),
        }));
    }

    /// Splits `batches` into frames within the frame limits and records them in flight.
    fn frame_batches(&mut self, batches: &[FeedBatch], out: &mut Vec<Frame>) {
        let max_payload = self.limits.frame.max_payload_bytes() as usize;
        let max_count = (self.limits.frame.max_batches_per_frame as usize)
            .min(self.limits.max_batches_per_frame)
            .max(1);
        let mut cur: Vec<Batch> = Vec::new();
        let mut cur_bytes = BATCHES_HEADER_LEN;
        for b in batches {
            let size = BATCH_HEADER_LEN + b.payload.len();
            if !cur.is_empty() && (cur.len() >= max_count || cur_bytes + size > max_payload) {
                self.push_frame(std::mem::take(&mut cur), out);
                cur_bytes = BATCHES_HEADER_LEN;
            }
            cur.push(frame_batch(b));
            cur_bytes += size;
        }
        if !cur.is_empty() {
            self.push_frame(cur, out);
        }
    }

    fn push_frame(&mut self, batches: Vec<Batch>, out: &mut Vec<Frame>) {
        for b in &batches {
            let bytes = b.payload.len() as u64;
            self.inflight.push_back(InFlight {
                pos: b.origin_lsn,
                stamp: b.stamp,
                bytes,
            });
            self.inflight_bytes += bytes;
            self.sent = b.origin_lsn;
        }
        self.batches_sent += batches.len() as u64;
        self.frames_sent += 1;
        out.push(Frame::Batches(Batches {
            origin: self.node,
            batches,
        }));
    }

    /// Where the link stands at `now_ms`.
    pub fn progress(&self, now_ms: u64) -> SenderProgress {
        SenderProgress {
            acked: self.acked.unwrap_or(0),
            lag_batches: self.inflight.len() as u64,
            lag_bytes: self.inflight_bytes,
            lag_ms: self
                .inflight
                .front()
                .map_or(0, |f| now_ms.saturating_sub(Timestamp(f.stamp).wall_ms())),
            frames_sent: self.frames_sent,
            batches_sent: self.batches_sent,
            batches_forwarded: self.batches_forwarded,
        }
    }
}

/// A batch of the change feed as a BATCHES frame carries it.
pub fn frame_batch(b: &FeedBatch) -> Batch {
    Batch {
        origin_lsn: b.origin_lsn,
        prev_origin_lsn: b.prev_origin_lsn,
        stamp: b.stamp,
        payload: b.payload.to_vec(),
    }
}

/// The batches of a BATCHES frame as the engine applies them.
pub(super) fn remote_batches(b: &Batches) -> Vec<RemoteBatch<'_>> {
    b.batches
        .iter()
        .map(|x| RemoteBatch {
            origin_lsn: x.origin_lsn,
            prev_origin_lsn: x.prev_origin_lsn,
            stamp: x.stamp,
            payload: &x.payload,
        })
        .collect()
}

/// The origin a frame names, for an error message.
pub(super) fn frame_origin(f: &Frame) -> Option<u64> {
    match f {
        Frame::Batches(b) => Some(b.origin),
        Frame::Ack(a) => Some(a.origin),
        Frame::Heartbeat(h) => Some(h.origin),
        Frame::Resync(r) => Some(r.origin),
        _ => None,
    }
}

/// A failed feed read: needs-rebuild for what no retry can fix, else a local failure.
pub(super) fn feed_error(e: duplex_engine::Error) -> LinkError {
    match e {
        duplex_engine::Error::Repl(
            r @ (ReplError::PeerAhead { .. } | ReplError::NeedsRebuild { .. }),
        ) => LinkError::NeedsRebuild(r.to_string()),
        duplex_engine::Error::Repl(r @ ReplError::BelowBase { .. }) => {
            LinkError::Waiting(r.to_string())
        }
        other => LinkError::Local(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_engine::Config;
    use duplex_proto::peer::Ack;

    fn open(dir: &std::path::Path, node: u64) -> Database {
        Database::open(
            dir,
            Config {
                node_id: node,
                background: false,
                replication_backlog_bytes: 1 << 20,
                ..Config::default()
            },
        )
        .unwrap()
    }

    fn limits(window_bytes: u64, per_frame: usize) -> SendLimits {
        SendLimits {
            frame: FrameLimits::default(),
            max_batches_per_frame: per_frame,
            frame_bytes: 1 << 20,
            window_bytes,
            heartbeat_ms: 100,
            forward_after_ms: 1000,
        }
    }

    /// Runs the link until the sender has nothing more to send; returns the BATCHES
    /// frames that crossed.
    fn pump(s: &mut Sender, a: &Database, r: &mut Receiver, b: &Database, now: u64) -> usize {
        let mut batches = 0;
        for _ in 0..1000 {
            let frames = s.poll(a, now).unwrap();
            let data: Vec<&Frame> = frames
                .iter()
                .filter(|f| matches!(f, Frame::Batches(_)))
                .collect();
            if data.is_empty() {
                return batches;
            }
            batches += data.len();
            for f in frames {
                for reply in r.on_frame(&f, b, now).unwrap() {
                    s.on_frame(&reply).unwrap();
                }
            }
        }
        panic!("the link never went idle");
    }

    /// A sender of `a` and a receiver in `b`, the receiver's first ACK delivered.
    fn link(a: &Database, b: &Database, l: SendLimits) -> (Sender, Receiver) {
        let mut s = Sender::new(a.node_id(), l);
        assert!(
            s.poll(a, 0).unwrap().is_empty(),
            "nothing before the first ACK"
        );
        let (r, ack) = Receiver::open(b, a.node_id());
        s.on_frame(&ack).unwrap();
        assert!(s.started());
        (s, r)
    }

    fn now(db: &Database) -> u64 {
        Timestamp(db.heartbeat().0).wall_ms()
    }

    #[test]
    fn updates_reach_the_other_side_and_are_acknowledged() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), 1), open(db_.path(), 2));
        for i in 0..20u32 {
            a.put(format!("k{i}").as_bytes(), b"v").unwrap();
        }
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 7));
        let t = now(&a);
        assert_eq!(pump(&mut s, &a, &mut r, &b, t), 3, "20 batches, 7 a frame");
        for i in 0..20u32 {
            assert_eq!(
                b.get(format!("k{i}").as_bytes()).unwrap().as_deref(),
                Some(&b"v"[..])
            );
        }
        let p = s.progress(t);
        assert_eq!(p.acked, b.origin_hwm(1));
        assert_eq!(p.acked, a.durable_position());
        assert_eq!((p.lag_batches, p.lag_bytes), (0, 0));
        assert_eq!(p.batches_sent, 20);
        assert_eq!(b.origins()[&1].applied, 20);
    }

    #[test]
    fn a_resent_frame_is_applied_once() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), 1), open(db_.path(), 2));
        a.put(b"x", b"1").unwrap();
        a.put(b"y", b"2").unwrap();
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 16));
        let t = now(&a);
        let frames = s.poll(&a, t).unwrap();
        assert!(matches!(frames[0], Frame::Batches(_)));
        let first = r.on_frame(&frames[0], &b, t).unwrap();
        let Frame::Batches(sent) = &frames[0] else {
            unreachable!()
        };
        let stamps: Vec<u64> = sent.batches.iter().map(|x| x.stamp).collect();
        assert_eq!(stamps.len(), 2);
        assert_eq!(r.applied_stamps(), stamps.as_slice(), "both applied");
        let again = r.on_frame(&frames[0], &b, t).unwrap();
        assert!(r.applied_stamps().is_empty(), "resends are not applied");
        assert_eq!(first, again, "the same ACK: the mark did not move");
        assert_eq!(b.origins()[&1].applied, 2);
        assert_eq!((r.progress().applied, r.progress().duplicates), (2, 2));
        for f in first {
            s.on_frame(&f).unwrap();
        }
        assert_eq!(s.progress(t).lag_batches, 0);
    }

    #[test]
    fn a_gap_triggers_resync_and_converges() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), 1), open(db_.path(), 2));
        for i in 0..3u32 {
            a.put(format!("g{i}").as_bytes(), b"v").unwrap();
        }
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 1));
        let t = now(&a);
        let frames = s.poll(&a, t).unwrap();
        assert_eq!(
            frames.len(),
            4,
            "three BATCHES, then a heartbeat: all was sent"
        );
        assert!(matches!(frames[3], Frame::Heartbeat(_)));
        // The first frame is lost: the second leaves a gap.
        let replies = r.on_frame(&frames[1], &b, t).unwrap();
        assert!(
            replies
                .iter()
                .any(|f| matches!(f, Frame::Resync(x) if x.last_good_lsn == 0)),
            "{replies:?}"
        );
        assert_eq!(r.progress().resyncs, 1);
        // The frame after it was in flight too: dropped, not a second RESYNC.
        assert!(r.on_frame(&frames[2], &b, t).unwrap().is_empty());
        assert_eq!(r.progress().resyncs, 1);
        for f in &replies {
            s.on_frame(f).unwrap();
        }
        pump(&mut s, &a, &mut r, &b, t);
        for i in 0..3u32 {
            assert!(b.get(format!("g{i}").as_bytes()).unwrap().is_some());
        }
        assert_eq!(b.origin_hwm(1), a.durable_position());
    }

    #[test]
    fn a_restarted_receiver_resumes_from_its_durable_mark() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = open(da.path(), 1);
        let mut b = open(db_.path(), 2);
        a.put(b"before", b"1").unwrap();
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 16));
        let t = now(&a);
        pump(&mut s, &a, &mut r, &b, t);
        let mark = b.origin_hwm(1);
        b.close().unwrap();
        a.put(b"after", b"2").unwrap();
        b = open(db_.path(), 2);
        assert_eq!(b.origin_hwm(1), mark, "the mark survives the restart");
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 16));
        assert_eq!(s.progress(t).acked, mark);
        pump(&mut s, &a, &mut r, &b, t);
        assert_eq!(b.get(b"after").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(b.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(b.origins()[&1].applied, 1, "only the new batch crossed");
        assert_eq!(r.progress().duplicates, 0);
    }

    #[test]
    fn the_window_bounds_unacknowledged_bytes() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), 1), open(db_.path(), 2));
        for i in 0..5u32 {
            a.put(format!("w{i}").as_bytes(), &[7u8; 100]).unwrap();
        }
        let (mut s, mut r) = link(&a, &b, limits(1, 16));
        let t = now(&a);
        let frames = s.poll(&a, t).unwrap();
        assert_eq!(frames.len(), 1, "one batch fills a 1-byte window");
        assert!(s.window_full());
        assert!(s.poll(&a, t).unwrap().is_empty(), "nothing until an ACK");
        for reply in r.on_frame(&frames[0], &b, t).unwrap() {
            s.on_frame(&reply).unwrap();
        }
        assert!(!s.window_full());
        assert_eq!(pump(&mut s, &a, &mut r, &b, t), 4);
    }

    #[test]
    fn an_idle_link_heartbeats_and_the_receiver_measures_skew() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), 1), open(db_.path(), 2));
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 16));
        let t = now(&a);
        let frames = s.poll(&a, t).unwrap();
        assert!(
            matches!(frames.as_slice(), [Frame::Heartbeat(h)] if h.origin == 1),
            "{frames:?}"
        );
        assert!(s.poll(&a, t + 10).unwrap().is_empty(), "not due yet");
        assert!(r.on_frame(&frames[0], &b, t).unwrap().is_empty());
        assert!(r.progress().skew_ms.is_some_and(|s| s.abs() < 5_000));
        assert_eq!(s.poll(&a, t + 100).unwrap().len(), 1);
    }

    #[test]
    fn a_heartbeat_past_the_mark_reveals_a_lost_tail() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), 1), open(db_.path(), 2));
        a.put(b"tail", b"1").unwrap();
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 16));
        let t = now(&a);
        let frames = s.poll(&a, t).unwrap();
        // The BATCHES frame is lost; the heartbeat after it arrives.
        assert!(matches!(
            frames.as_slice(),
            [Frame::Batches(_), Frame::Heartbeat(_)]
        ));
        let replies = r.on_frame(&frames[1], &b, t).unwrap();
        assert!(matches!(replies.as_slice(), [Frame::Resync(x)] if x.last_good_lsn == 0));
        for f in &replies {
            s.on_frame(f).unwrap();
        }
        pump(&mut s, &a, &mut r, &b, t);
        assert_eq!(b.get(b"tail").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(r.progress().resyncs, 1);
    }

    #[test]
    fn a_peer_ahead_of_this_server_needs_a_rebuild() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, _b) = (open(da.path(), 1), open(db_.path(), 2));
        let mut s = Sender::new(1, limits(8 << 20, 16));
        let ahead = a.durable_position() + 1000;
        s.on_frame(&Frame::Ack(Ack {
            origin: 1,
            durable_lsn: ahead,
        }))
        .unwrap();
        let e = s.poll(&a, 0).unwrap_err();
        assert!(matches!(e, LinkError::NeedsRebuild(_)), "{e:?}");
        assert!(matches!(e.farewell(), Some(Frame::Error(f)) if f.code == ErrorCode::NeedsRebuild));
    }

    #[test]
    fn applied_batches_are_never_sent_on() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), 1), open(db_.path(), 2));
        a.put(b"from-a", b"1").unwrap();
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 16));
        pump(&mut s, &a, &mut r, &b, now(&a));
        // b's link back to a carries b's own batches only: none yet.
        let (mut back, mut ra) = link(&b, &a, limits(8 << 20, 16));
        assert_eq!(pump(&mut back, &b, &mut ra, &a, now(&b)), 0);
        b.put(b"from-b", b"2").unwrap();
        assert_eq!(pump(&mut back, &b, &mut ra, &a, now(&b)), 1);
        assert_eq!(a.get(b"from-b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(a.origins()[&2].applied, 1);
    }

    #[test]
    fn a_silent_origins_batches_are_forwarded_to_a_peer_that_lacks_them_and_only_then() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (a, b, c) = (
            open(dirs[0].path(), 1),
            open(dirs[1].path(), 2),
            open(dirs[2].path(), 3),
        );
        for i in 0..5u8 {
            a.put(&[b'f', i], b"v").unwrap();
        }
        // A reached C, then died before reaching B.
        let (mut ac, mut rc) = link(&a, &c, limits(8 << 20, 16));
        pump(&mut ac, &a, &mut rc, &c, now(&a));
        // C's link to B: B tells C its marks of the other origins (none of A).
        let mut s = Sender::new(3, limits(8 << 20, 16)).to_peer(2);
        let (mut r, ack) = Receiver::open(&b, 3);
        s.on_frame(&ack).unwrap();
        for m in Receiver::other_marks(&b, 3) {
            s.on_frame(&m).unwrap();
        }
        // While A is heard from, nothing of A's is forwarded.
        assert_eq!(pump(&mut s, &c, &mut r, &b, now(&a)), 0);
        assert_eq!(b.get(&[b'f', 4]).unwrap(), None);
        // Silent for longer than forward_after_ms: forwarded, stamps and positions kept.
        let later = now(&a) + 5_000;
        assert!(pump(&mut s, &c, &mut r, &b, later) >= 1);
        assert_eq!(b.get(&[b'f', 4]).unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(b.origin_hwm(1), c.origin_hwm(1));
        assert_eq!(r.progress().forwarded, 5);
        assert_eq!(s.progress(later).batches_forwarded, 5);
        let d = |db: &Database| {
            db.stamped_digest(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
                .unwrap()
        };
        assert_eq!(d(&b), d(&c));
        // Nothing more to forward: B acknowledged A's mark.
        assert_eq!(pump(&mut s, &c, &mut r, &b, later + 1_000), 0);
        // A comes back: its own link sends again what B holds: all recognised as held.
        let (mut ab, mut rb) = link(&a, &b, limits(8 << 20, 16));
        pump(&mut ab, &a, &mut rb, &b, now(&a));
        assert_eq!(rb.progress().applied, 0);
    }

    #[test]
    fn a_peer_clock_far_ahead_is_refused_with_clock_skew() {
        use duplex_wal::{Clock, ManualClock};
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let wall = duplex_wal::SystemClock.now_ms();
        let ahead = std::sync::Arc::new(ManualClock::new(wall + 60_000));
        let a = Database::open(
            da.path(),
            Config {
                node_id: 1,
                background: false,
                clock: ahead,
                ..Config::default()
            },
        )
        .unwrap();
        let b = open(db_.path(), 2);
        a.put(b"fast", b"clock").unwrap();
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 16));
        let frames = s.poll(&a, wall + 60_000).unwrap();
        let e = r.on_frame(&frames[0], &b, wall).unwrap_err();
        assert!(matches!(e, LinkError::ClockSkew(_)), "{e:?}");
        assert!(matches!(e.farewell(), Some(Frame::Error(f)) if f.code == ErrorCode::ClockSkew));
        assert_eq!(b.get(b"fast").unwrap(), None, "nothing applied");
        let hb = Frame::Heartbeat(Heartbeat {
            origin: 1,
            stamp: a.heartbeat().0,
            last_origin_lsn: 0,
        });
        assert!(matches!(
            r.on_frame(&hb, &b, wall),
            Err(LinkError::ClockSkew(_))
        ));
        assert!(r.progress().skew_ms.is_some_and(|s| s > 50_000));
    }

    #[test]
    fn frames_of_the_wrong_kind_or_origin_break_the_protocol() {
        let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), 1), open(db_.path(), 2));
        let (mut s, mut r) = link(&a, &b, limits(8 << 20, 16));
        let ack = Frame::Ack(Ack {
            origin: 1,
            durable_lsn: 0,
        });
        assert!(matches!(
            r.on_frame(&ack, &b, 0),
            Err(LinkError::Protocol(_))
        ));
        let hb = Frame::Heartbeat(Heartbeat {
            origin: 3,
            stamp: 1,
            last_origin_lsn: 0,
        });
        assert!(matches!(
            r.on_frame(&hb, &b, 0),
            Err(LinkError::Protocol(_))
        ));
        assert!(matches!(s.on_frame(&hb), Err(LinkError::Protocol(_))));
        let bye = Frame::Error(ErrorFrame::new(ErrorCode::ShuttingDown, "bye"));
        assert!(matches!(s.on_frame(&bye), Err(LinkError::Peer { .. })));
        assert!(LinkError::Peer {
            code: ErrorCode::ShuttingDown,
            message: String::new()
        }
        .farewell()
        .is_none());
        let _ = a;
    }
}
