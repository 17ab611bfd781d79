//! The peer link's sockets (std::net, blocking with timeouts): one thread per `--peer` that
//! connects, runs the handshake as initiator and then the transfer loop around a
//! [`Sender`], reconnecting with exponential back-off ([`BACKOFF_MIN`] to [`BACKOFF_MAX`]);
//! and, per inbound connection, the acceptor's handshake and a [`Receiver`]. Everything a
//! link learns goes to [`crate::shared::PeerTable`]; refusals are logged.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_engine::Timestamp;
use duplex_proto::peer::{
    Decoded, Frame, FrameDecoder, FrameLimits, Handshake, NodeIdentity, PeerInfo, RefuseReason,
    Status, NONCE_LEN,
};

use super::link::{LinkError, Receiver};
use crate::limits::{CHUNK_BYTES, POLL};
use crate::shared::Shared;

/// First wait before reconnecting after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnects (also the wait after a refusal, a needs-rebuild or a
/// clock skew: what a retry alone cannot fix).
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a connect may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write may block (a peer that reads nothing for this long is dropped).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A receiver that hears nothing (no batch, no heartbeat) for this long closes the link.
const RECEIVER_IDLE: Duration = Duration::from_secs(30);
/// Most batches in one BATCHES frame.
pub(super) const FRAME_BATCHES: usize = 1024;
/// Payload bytes a BATCHES frame aims at.
pub(super) const FRAME_BYTES: usize = 1 << 20;

/// Why a connection ended, as the outbound loop and the status see it.
#[derive(Debug)]
pub(super) enum Fail {
    /// Connecting, reading or writing failed (or timed out).
    Io(String),
    /// The handshake was refused, by either side.
    Refused(String),
    /// The established link failed.
    Link(LinkError),
    /// The server is stopping.
    Stopped,
    /// The connection did what it was for (a rebuild was served) and ended cleanly.
    Done,
}

impl From<LinkError> for Fail {
    fn from(e: LinkError) -> Fail {
        Fail::Link(e)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Io(e) => f.write_str(e),
            Fail::Refused(e) => write!(f, "handshake {e}"),
            Fail::Link(e) => write!(f, "{e}"),
            Fail::Stopped => f.write_str("stopping"),
            Fail::Done => f.write_str("done"),
        }
    }
}

fn io_fail(what: &str) -> impl Fn(std::io::Error) -> Fail + '_ {
    move |e| Fail::Io(format!("{what}: {e}"))
}

/// A connection's frames: encoding out, decoding in.
pub(super) struct FrameIo {
    pub(super) stream: TcpStream,
    pub(super) decoder: FrameDecoder,
    pub(super) limits: FrameLimits,
    pub(super) out: Vec<u8>,
    pub(super) chunk: Box<[u8; CHUNK_BYTES]>,
}

impl FrameIo {
    pub(super) fn new(
        stream: TcpStream,
        limits: FrameLimits,
        prefix: &[u8],
    ) -> Result<FrameIo, Fail> {
        stream.set_nodelay(true).map_err(io_fail("set nodelay"))?;
        stream
            .set_read_timeout(Some(POLL))
            .map_err(io_fail("set read timeout"))?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(io_fail("set write timeout"))?;
        let mut decoder = FrameDecoder::new(limits);
        decoder.feed(prefix);
        Ok(FrameIo {
            stream,
            decoder,
            limits,
            out: Vec::new(),
            chunk: Box::new([0; CHUNK_BYTES]),
        })
    }

    pub(super) fn send(&mut self, frames: &[Frame]) -> Result<(), Fail> {
        self.out.clear();
        for f in frames {
            f.encode(&self.limits, &mut self.out)
                .map_err(|e| Fail::Link(LinkError::Local(e.to_string())))?;
        }
        self.stream
            .write_all(&self.out)
            .map_err(io_fail("write to the peer"))
    }

    /// The next frame if one is already here (decoded from what was read, or readable
    /// without waiting); `None` otherwise.
    fn try_recv(&mut self) -> Result<Option<Frame>, Fail> {
        loop {
            match self.decoder.next_frame() {
                Ok(Decoded::Frame { frame, .. }) => return Ok(Some(frame)),
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => return Err(Fail::Link(LinkError::Protocol(e.to_string()))),
            }
            self.stream
                .set_nonblocking(true)
                .map_err(io_fail("set non-blocking"))?;
            let r = self.stream.read(&mut self.chunk[..]);
            self.stream
                .set_nonblocking(false)
                .map_err(io_fail("set blocking"))?;
            match r {
                Ok(0) => return Err(Fail::Io("the peer closed the connection".into())),
                Ok(n) => self.decoder.feed(&self.chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    return Ok(None)
                }
                Err(e) => return Err(Fail::Io(format!("read from the peer: {e}"))),
            }
        }
    }

    /// The next frame, waiting until `deadline`; [`Fail::Stopped`] once the server stops.
    pub(super) fn recv(&mut self, sh: &Shared, deadline: Instant) -> Result<Frame, Fail> {
        let stop = || sh.stopping();
        recv_frame(
            &mut self.stream,
            &mut self.decoder,
            &mut self.chunk,
            deadline,
            &stop,
        )
    }
}

/// Reads until a whole frame is decoded, `deadline` passes or `stop()` says so.
pub(super) fn recv_frame(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    chunk: &mut [u8; CHUNK_BYTES],
    deadline: Instant,
    stop: &dyn Fn() -> bool,
) -> Result<Frame, Fail> {
    loop {
        match decoder.next_frame() {
            Ok(Decoded::Frame { frame, .. }) => return Ok(frame),
            Ok(Decoded::Incomplete { need }) => {
                let want = need.clamp(1, CHUNK_BYTES);
                match stream.read(&mut chunk[..want]) {
                    Ok(0) => return Err(Fail::Io("the peer closed the connection".into())),
                    Ok(n) => decoder.feed(&chunk[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) =>
                    {
                        if stop() {
                            return Err(Fail::Stopped);
                        }
                        if Instant::now() >= deadline {
                            return Err(Fail::Io("the peer sent nothing in time".into()));
                        }
                    }
                    Err(e) => return Err(Fail::Io(format!("read from the peer: {e}"))),
                }
            }
            Err(e) => return Err(Fail::Link(LinkError::Protocol(e.to_string()))),
        }
    }
}

/// This server as its handshake announces it.
pub(super) fn identity(sh: &Shared) -> NodeIdentity {
    NodeIdentity {
        cluster_id: sh.cfg().cluster_id,
        node_id: sh.db().node_id(),
        incarnation: sh.db().incarnation(),
        epoch: sh.state().get().epoch,
    }
}

pub(super) fn nonce() -> Result<[u8; NONCE_LEN], Fail> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut n)
        .map_err(|e| Fail::Io(format!("no random bytes for the handshake nonce: {e}")))?;
    Ok(n)
}

/// Frame limits for this server's largest batch.
pub(super) fn frame_limits(sh: &Shared) -> FrameLimits {
    FrameLimits::for_batch_bytes(sh.db().wal().options().max_record_size)
}

/// Feeds handshake frames until it is established or refused.
pub(super) fn handshake(
    sh: &Shared,
    io: &mut FrameIo,
    hs: &mut Handshake,
    first: Option<Frame>,
) -> Result<PeerInfo, Fail> {
    if let Some(f) = first {
        io.send(&[f])?;
    }
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        match hs.status() {
            Status::Established(p) => return Ok(*p),
            Status::Refused(r) => return Err(Fail::Refused(r.to_string())),
            Status::InProgress => {}
        }
        let frame = io.recv(sh, deadline)?;
        match hs.receive(&frame) {
            Ok(Some(Frame::Challenge(c))) => {
                let node = hs.peer_hello().map(|h| h.node_id);
                let outsider = node.filter(|n| sh.cfg().members().is_some_and(|m| !m.contains(n)));
                let busy = node.filter(|&n| sh.peers().inbound_live(n, sh.clock().now_ms()));
                let reply = match (outsider, busy) {
                    (Some(n), _) => hs
                        .refuse(
                            RefuseReason::NotAMember,
                            &format!("node {n} is not in this server's membership (its --peer entries pin other node ids): add {n}@HOST:PORT to every server's peers, or fix its --node-id"),
                        )
                        .map_err(|e| Fail::Refused(e.to_string()))?,
                    (None, Some(n)) => hs
                        .refuse(
                            RefuseReason::DuplicateNodeId,
                            &format!("node {n} already has a live link to this server: two servers share node id {n}; give each its own --node-id"),
                        )
                        .map_err(|e| Fail::Refused(e.to_string()))?,
                    (None, None) => Frame::Challenge(c),
                };
                io.send(&[reply])?;
            }
            Ok(Some(reply)) => io.send(&[reply])?,
            Ok(None) => {}
            Err(e) => {
                if let Status::Refused(r) = hs.status() {
                    let _ = io.send(&[r.to_frame()]);
                }
                return Err(Fail::Refused(e.to_string()));
            }
        }
    }
}

pub use super::outbound::spawn_outbound;
use super::outbound::{farewell, peer_stopping};

/// Serves an inbound peer connection on the calling thread: `prefix` holds the bytes the
/// RESP layer already read (starting with the frame magic). Returns when the link ends.
/// The caller counts the connection closed.
pub fn serve_inbound(sh: &Shared, stream: TcpStream, prefix: &[u8]) {
    let addr = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    if let Err(f) = stream.set_nonblocking(false) {
        tracing::debug!(error = %f, "cannot make a peer connection blocking");
        return;
    }
    let mut io = match FrameIo::new(stream, frame_limits(sh), prefix) {
        Ok(io) => io,
        Err(f) => {
            tracing::debug!(error = %f, "cannot prepare a peer connection");
            return;
        }
    };
    let Some(secret) = sh.peers().secret() else {
        tracing::warn!(event = "peer_refused", from = %addr, "a peer connected from {addr}, but this server has no --cluster-secret-file: closed");
        return;
    };
    let peer = nonce()
        .and_then(|n| {
            Handshake::acceptor(identity(sh), secret.bytes(), n)
                .map_err(|e| Fail::Refused(e.to_string()))
        })
        .and_then(|mut hs| handshake(sh, &mut io, &mut hs, None));
    let peer = match peer {
        Ok(p) => p,
        Err(Fail::Refused(r)) => {
            tracing::warn!(event = "peer_refused", from = %addr, reason = %r, "peer connection from {addr}: handshake {r}");
            sh.peers().note_refusal(format!("from {addr}: {r}"));
            return;
        }
        Err(f) => {
            tracing::debug!(from = %addr, error = %f, "peer handshake failed");
            return;
        }
    };
    let origin = peer.node_id;
    // A peer on a later incarnation was rebuilt: what others still lack of its earlier
    // one gets forwarded.
    sh.db().note_origin_incarnation(origin, peer.incarnation);
    let gen = sh.peers().inbound_begin(origin, &addr);
    tracing::info!(event = "peer_inbound_up", from = %addr, node = origin, "peer node {origin} ({addr}) connected; applying its batches");
    let fail = receive(sh, &mut io, origin, gen);
    if let Some(f) = farewell(&fail) {
        let _ = io.send(&[f]);
    }
    let error = match &fail {
        Fail::Stopped | Fail::Done => None,
        f => Some(f.to_string()),
    };
    if let Some(e) = &error {
        if peer_stopping(&fail) {
            tracing::info!(event = "peer_inbound_down", from = %addr, node = origin, "peer node {origin} is stopping: its link ended");
        } else {
            tracing::warn!(event = "peer_inbound_down", from = %addr, node = origin, error = %e, "peer node {origin} link ended: {e}");
        }
    }
    sh.peers().inbound_end(origin, gen, error);
}

/// The receiving loop of an inbound link.
fn receive(sh: &Shared, io: &mut FrameIo, origin: u64, gen: u64) -> Fail {
    let db = sh.db();
    let (mut rx, first) = Receiver::open(db, origin);
    let mut opening = vec![first];
    opening.extend(Receiver::other_marks(db, origin));
    if let Err(f) = io.send(&opening) {
        return f;
    }
    // A frame read ahead by `coalesce` that could not join the one before it.
    let mut held: Option<Frame> = None;
    loop {
        if sh.stopping() {
            return Fail::Stopped;
        }
        if !sh.peers().inbound_current(origin, gen) {
            return Fail::Io("replaced by a newer connection from the same node".into());
        }
        let frame = match held.take() {
            Some(f) => f,
            None => match io.recv(sh, Instant::now() + RECEIVER_IDLE) {
                Ok(f) => f,
                Err(f) => return f,
            },
        };
        let frame = match coalesce(io, &rx, frame, &mut held) {
            Ok(f) => f,
            Err(f) => return f,
        };
        if let Frame::Rebuild(r) = frame {
            if rx.progress().frames > 0 {
                return Fail::Link(LinkError::Protocol(
                    "REBUILD after data frames: it must be the first frame".into(),
                ));
            }
            return super::serve_rebuild::serve(sh, io, origin, r);
        }
        if let Frame::Resync(r) = &frame {
            if r.origin == origin && rx.progress().frames == 0 {
                return super::serve_rebuild::serve_pull(sh, io, origin, r.last_good_lsn);
            }
        }
        if let Frame::Hold(h) = frame {
            if rx.progress().frames > 0 {
                return Fail::Link(LinkError::Protocol(
                    "HOLD after data frames: it must be the first frame".into(),
                ));
            }
            return super::serve_rebuild::serve_hold(sh, io, origin, h);
        }
        if let Frame::Batches(b) = &frame {
            if let (true, Some(last)) = (b.origin == origin, b.batches.last()) {
                sh.peers().note_received(origin, last.origin_lsn);
            }
        }
        let before = rx.progress();
        let replies = rx.on_frame(&frame, db, sh.clock().now_ms());
        let p = rx.progress();
        let now = sh.clock().now_ms();
        sh.peers().update_inbound(origin, gen, |s| {
            s.last_frame_ms = now;
            s.frames = p.frames;
            s.skew_ms = p.skew_ms;
            s.resyncs += p.resyncs - before.resyncs;
            s.applied += p.applied - before.applied;
            s.duplicates += p.duplicates - before.duplicates;
            s.forwarded += p.forwarded - before.forwarded;
            // Commit (the origin's stamp) to applied and durable here; both clocks are
            // wall clocks, so across machines this includes their skew.
            for &stamp in rx.applied_stamps() {
                s.lag.record(now.saturating_sub(Timestamp(stamp).wall_ms()));
            }
        });
        match replies {
            Ok(r) => {
                if let Err(f) = io.send(&r) {
                    return f;
                }
            }
            Err(e) => return Fail::Link(e),
        }
    }
}

/// Most batches [`coalesce`] joins into one apply.
const COALESCE_BATCHES: usize = 16_384;

/// Joins to `frame` (a BATCHES frame of the link's origin) the BATCHES frames of that
/// origin that have already arrived and continue its chain, so the receiver applies and
/// makes them durable with one WAL append and one sync instead of one per frame (a sender
/// that sends each commit at once otherwise outruns a receiver that syncs each frame).
/// The ACK of the joined frame covers them all. Never joins across a chain break or while
/// a RESYNC is pending (the frames after a RESYNC are checked one by one, as they come); a
/// frame read ahead that cannot join is left in `held` for the next turn.
fn coalesce(
    io: &mut FrameIo,
    rx: &Receiver,
    frame: Frame,
    held: &mut Option<Frame>,
) -> Result<Frame, Fail> {
    let Frame::Batches(mut joined) = frame else {
        return Ok(frame);
    };
    if joined.origin != rx.origin() || rx.resync_pending() {
        return Ok(Frame::Batches(joined));
    }
    while joined.batches.len() < COALESCE_BATCHES {
        let Some(next) = io.try_recv()? else {
            break;
        };
        let last = joined.batches.last().map(|b| b.origin_lsn);
        match next {
            Frame::Batches(mut b)
                if b.origin == joined.origin
                    && b.batches.first().map(|x| x.prev_origin_lsn) == last =>
            {
                joined.batches.append(&mut b.batches);
            }
            other => {
                *held = Some(other);
                break;
            }
        }
    }
    Ok(Frame::Batches(joined))
}

/// Runs [`serve_inbound`] on a thread of its own (the event loops' hand-off); counts the
/// connection closed when it ends.
pub fn spawn_inbound(sh: &Arc<Shared>, stream: TcpStream, prefix: Vec<u8>) {
    let s = sh.clone();
    let spawned = std::thread::Builder::new()
        .name("peer-in".into())
        .spawn(move || {
            serve_inbound(&s, stream, &prefix);
            s.conn_closed();
        });
    if let Err(e) = spawned {
        sh.conn_closed();
        tracing::warn!(event = "spawn_failed", error = %e, "cannot start a peer connection thread");
    }
}

/// How long an origin must have been silent (no batch, no heartbeat) before its batches
/// are forwarded to peers that miss them: ten heartbeats, at least a second.
pub fn forward_after_ms(transfer_interval_ms: u64) -> u64 {
    transfer_interval_ms.saturating_mul(10).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_proto::peer::{Batch, Batches, Heartbeat};

    fn batches(origin: u64, lsns: &[(u64, u64)]) -> Frame {
        Frame::Batches(Batches {
            origin,
            batches: lsns
                .iter()
                .map(|&(prev, lsn)| Batch {
                    origin_lsn: lsn,
                    prev_origin_lsn: prev,
                    stamp: lsn,
                    payload: vec![1, 2, 3],
                })
                .collect(),
        })
    }

    fn lsns(f: &Frame) -> Vec<u64> {
        match f {
            Frame::Batches(b) => b.batches.iter().map(|x| x.origin_lsn).collect(),
            other => panic!("not BATCHES: {other:?}"),
        }
    }

    #[test]
    fn frames_already_here_that_continue_the_chain_are_applied_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = duplex_engine::Database::open(
            dir.path(),
            duplex_engine::Config {
                node_id: 2,
                background: false,
                ..duplex_engine::Config::default()
            },
        )
        .unwrap();
        let (rx, _) = Receiver::open(&db, 1);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let limits = FrameLimits::default();
        let mut io = FrameIo::new(server, limits, &[]).unwrap();
        let hb = Frame::Heartbeat(Heartbeat {
            origin: 1,
            stamp: 9,
            last_origin_lsn: 5,
        });
        let mut wire = Vec::new();
        for f in [
            batches(1, &[(3, 4), (4, 5)]),
            batches(1, &[(5, 7)]),
            hb.clone(),
        ] {
            f.encode(&limits, &mut wire).unwrap();
        }
        tx.write_all(&wire).unwrap();
        let first = batches(1, &[(0, 1), (1, 3)]);
        let mut held = None;
        // Wait until everything written is readable.
        std::thread::sleep(Duration::from_millis(50));
        let joined = coalesce(&mut io, &rx, first, &mut held).unwrap();
        assert_eq!(lsns(&joined), [1, 3, 4, 5, 7], "joined up to the heartbeat");
        assert_eq!(held, Some(hb), "the heartbeat waits for the next turn");
        // A frame that does not continue the chain is not joined.
        let mut wire = Vec::new();
        batches(1, &[(20, 21)]).encode(&limits, &mut wire).unwrap();
        tx.write_all(&wire).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut held = None;
        let joined = coalesce(&mut io, &rx, batches(1, &[(7, 8)]), &mut held).unwrap();
        assert_eq!(lsns(&joined), [8]);
        assert_eq!(held.as_ref().map(lsns), Some(vec![21]));
        // Nothing more here: the frame alone, nothing held.
        let mut held = None;
        let joined = coalesce(&mut io, &rx, batches(1, &[(8, 9)]), &mut held).unwrap();
        assert_eq!((lsns(&joined), held.take()), (vec![9], None));
        // Another origin's frame is never joined to.
        let other = batches(3, &[(0, 1)]);
        assert_eq!(
            coalesce(&mut io, &rx, other.clone(), &mut held).unwrap(),
            other
        );
    }
}
