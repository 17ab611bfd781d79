//! The outbound side of a peer link: the thread that connects to a `--peer`, runs the
//! handshake and sends this server's batches ([`super::link::Sender`]) with a reader
//! thread for the peer's ACKs, reconnecting with back-off until the server stops; and the
//! forward floors the links report to the engine. Moved out of `conn.rs` (the connection
//! plumbing and the inbound side stay there), no behaviour change.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duplex_proto::peer::{ErrorCode, ErrorFrame, Frame, FrameDecoder, FrameLimits, Handshake};

use super::conn::{
    forward_after_ms, frame_limits, handshake, identity, nonce, recv_frame, Fail, FrameIo,
    BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, FRAME_BATCHES, FRAME_BYTES,
};
use super::link::{LinkError, SendLimits, Sender};
use crate::config::SyncMode;
use crate::limits::{CHUNK_BYTES, POLL};
use crate::shared::{LinkState, Shared};
use crate::Error;

/// Starts the outbound link thread to `addr` (status row `i`).
pub fn spawn_outbound(
    sh: Arc<Shared>,
    i: usize,
    addr: String,
    pin: Option<u64>,
) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(format!("peer-out-{i}"))
        .spawn(move || outbound_loop(&sh, i, &addr, pin))
        .map_err(Error::Net)
}

/// Connects, runs the link, and reconnects with back-off until the server stops.
fn outbound_loop(sh: &Shared, i: usize, addr: &str, pin: Option<u64>) {
    let mut backoff = BACKOFF_MIN;
    let mut last_logged: Option<String> = None;
    while !sh.links_stopping() {
        let mut established = false;
        let res = run_outbound(sh, i, (addr, pin), &mut established);
        if established {
            backoff = BACKOFF_MIN;
        }
        let (state, wait) = match &res {
            Fail::Stopped => break,
            Fail::Io(_) | Fail::Done => (LinkState::Connecting, backoff),
            Fail::Refused(r) => (LinkState::Refused(r.clone()), BACKOFF_MAX),
            Fail::Link(LinkError::NeedsRebuild(_)) => (LinkState::NeedsRebuild, BACKOFF_MAX),
            Fail::Link(LinkError::ClockSkew(_)) => (LinkState::ClockSkew, BACKOFF_MAX),
            Fail::Link(_) => (LinkState::Connecting, backoff),
        };
        let msg = res.to_string();
        // A peer that stays down is logged once, not every back-off.
        if last_logged.as_deref() != Some(msg.as_str()) {
            let level_warn = (!matches!(res, Fail::Io(_)) || established) && !peer_stopping(&res);
            if level_warn {
                tracing::warn!(event = "peer_link_down", peer = addr, error = %msg, "peer link to {addr}: {msg}");
            } else {
                tracing::info!(event = "peer_unreachable", peer = addr, error = %msg, "peer {addr} not reachable yet: {msg}");
            }
            last_logged = Some(msg.clone());
        }
        sh.peers().update_outbound(i, |s| {
            s.state = state;
            s.last_error = Some(msg);
            s.lag_batches = 0;
            s.lag_bytes = 0;
            s.lag_ms = 0;
        });
        sleep_unless_stopping(sh, wait);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn sleep_unless_stopping(sh: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !sh.links_stopping() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(POLL));
    }
}

/// One connection to `addr`: connect, handshake, transfer until it fails.
fn run_outbound(
    sh: &Shared,
    i: usize,
    (addr, pin): (&str, Option<u64>),
    established: &mut bool,
) -> Fail {
    let stream = match connect(addr) {
        Ok(s) => s,
        Err(f) => return f,
    };
    let limits = frame_limits(sh);
    let mut io = match FrameIo::new(stream, limits, &[]) {
        Ok(io) => io,
        Err(f) => return f,
    };
    let secret = match sh.peers().secret() {
        Some(s) => s,
        None => return Fail::Refused("this server has no cluster secret".into()),
    };
    let started = nonce().and_then(|n| {
        Handshake::initiator(identity(sh), secret.bytes(), n)
            .map_err(|e| Fail::Refused(e.to_string()))
    });
    let (mut hs, hello) = match started {
        Ok(x) => x,
        Err(f) => return f,
    };
    let peer = match handshake(sh, &mut io, &mut hs, Some(hello)) {
        Ok(p) => p,
        Err(f) => return f,
    };
    if let Some(want) = pin.filter(|w| *w != peer.node_id) {
        return Fail::Refused(format!(
            "the server at {addr} is node {}, but --peer pins node {want} there: fix the --peer entry or that server's --node-id",
            peer.node_id
        ));
    }
    *established = true;
    tracing::info!(
        event = "peer_link_up",
        peer = addr,
        node = peer.node_id,
        "peer link to {addr} (node {}) is up",
        peer.node_id
    );
    sh.peers().update_outbound(i, |s| {
        s.node = Some(peer.node_id);
        s.state = LinkState::Up;
        s.connects += 1;
        // Not known again until the peer tells them (it may have been rebuilt).
        s.marks.clear();
    });
    transfer(sh, i, io, peer.node_id)
}

fn connect(addr: &str) -> Result<TcpStream, Fail> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| Fail::Io(format!("cannot resolve {addr}: {e}")))?;
    let mut last = Fail::Io(format!("{addr} resolves to no address"));
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Fail::Io(format!("cannot connect to {addr}: {e}")),
        }
    }
    Err(last)
}

/// What the reader thread of an outbound link passes on.
type Incoming = Result<Frame, Fail>;

/// The transfer loop of an established outbound link (see [`Sender`]); a reader thread
/// passes the receiver's frames in.
fn transfer(sh: &Shared, i: usize, io: FrameIo, peer: u64) -> Fail {
    let FrameIo {
        stream,
        decoder,
        limits,
        ..
    } = io;
    let mut read_half = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return Fail::Io(format!("cannot clone the peer socket: {e}")),
    };
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Incoming>();
    let reader_done = done.clone();
    let reader = std::thread::Builder::new()
        .name(format!("peer-ack-{i}"))
        .spawn(move || {
            let mut decoder = decoder;
            let mut chunk = Box::new([0u8; CHUNK_BYTES]);
            loop {
                let far = Instant::now() + Duration::from_secs(86_400);
                let r = recv_frame(&mut read_half, &mut decoder, &mut chunk, far, &|| {
                    reader_done.load(Ordering::Relaxed)
                });
                let end = r.is_err();
                if tx.send(r).is_err() || end {
                    return;
                }
            }
        });
    let reader = match reader {
        Ok(r) => r,
        Err(e) => return Fail::Io(format!("cannot start the peer reader: {e}")),
    };
    let mut io = FrameIo {
        stream,
        decoder: FrameDecoder::new(limits),
        limits,
        out: Vec::new(),
        chunk: Box::new([0; CHUNK_BYTES]),
    };
    let fail = send_loop(sh, i, &mut io, &rx, (limits, peer));
    if let Some(f) = farewell(&fail) {
        let _ = io.send(&[f]);
    }
    done.store(true, Ordering::Relaxed);
    let _ = io.stream.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    fail
}

/// Whether the peer ended the link because it is stopping (logged as info, not a warning).
pub(super) fn peer_stopping(f: &Fail) -> bool {
    matches!(
        f,
        Fail::Link(LinkError::Peer {
            code: ErrorCode::ShuttingDown,
            ..
        })
    )
}

/// The ERROR frame to send as the link ends, if any.
pub(super) fn farewell(f: &Fail) -> Option<Frame> {
    match f {
        Fail::Link(e) => e.farewell(),
        Fail::Stopped => Some(Frame::Error(ErrorFrame::new(
            ErrorCode::ShuttingDown,
            "the sender is stopping",
        ))),
        _ => None,
    }
}

/// Sends until the link fails or the server stops.
fn send_loop(
    sh: &Shared,
    i: usize,
    io: &mut FrameIo,
    rx: &mpsc::Receiver<Incoming>,
    (limits, peer): (FrameLimits, u64),
) -> Fail {
    let cfg = sh.cfg();
    let interval = Duration::from_millis(cfg.transfer_interval_ms);
    let db = sh.db();
    let mut sender = Sender::new(
        db.node_id(),
        SendLimits {
            frame: limits,
            max_batches_per_frame: FRAME_BATCHES,
            frame_bytes: FRAME_BYTES,
            window_bytes: cfg.peer_window_bytes,
            heartbeat_ms: cfg.transfer_interval_ms,
            forward_after_ms: forward_after_ms(cfg.transfer_interval_ms),
        },
    )
    .to_peer(peer);
    let mut totals = (0u64, 0u64, 0u64);
    loop {
        if sh.links_stopping() {
            return Fail::Stopped;
        }
        while let Ok(m) = rx.try_recv() {
            if let Err(f) = take(&mut sender, m) {
                return f;
            }
        }
        // A commit landing after this is seen by the check before the wait below.
        let seen_lsn = db.wal().last_lsn();
        if !matches!(cfg.sync, SyncMode::Always) && seen_lsn > db.wal().durable_lsn() {
            if let Err(e) = db.wal().sync() {
                return Fail::Link(LinkError::Local(format!("WAL sync before sending: {e}")));
            }
        }
        let frames = match sender.poll(db, sh.clock().now_ms()) {
            Ok(f) => f,
            Err(e) => return Fail::Link(e),
        };
        if let Err(f) = io.send(&frames) {
            return f;
        }
        report(sh, i, &sender, &mut totals);
        let sent_batches = frames.iter().any(|f| matches!(f, Frame::Batches(_)));
        if sent_batches && !sender.window_full() {
            continue;
        }
        if !sender.started() || sender.window_full() || !cfg.transfer_on_commit {
            match rx.recv_timeout(interval) {
                Ok(m) => {
                    if let Err(f) = take(&mut sender, m) {
                        return f;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Fail::Io("the peer reader ended".into())
                }
            }
        } else if db.wal().last_lsn() == seen_lsn {
            db.wait_for_commit(interval);
        }
    }
}

/// Hands one message of the reader to the sender.
fn take(sender: &mut Sender, m: Incoming) -> Result<(), Fail> {
    let frame = m?;
    sender.on_frame(&frame).map_err(Fail::Link)
}

/// Copies the sender's progress into the status (counters as totals since start).
fn report(sh: &Shared, i: usize, sender: &Sender, totals: &mut (u64, u64, u64)) {
    let p = sender.progress(sh.clock().now_ms());
    let (df, db) = (p.frames_sent - totals.0, p.batches_sent - totals.1);
    let dfw = p.batches_forwarded - totals.2;
    *totals = (p.frames_sent, p.batches_sent, p.batches_forwarded);
    sh.peers().update_outbound(i, |s| {
        s.state = LinkState::Up;
        s.acked = p.acked;
        s.lag_batches = p.lag_batches;
        s.lag_bytes = p.lag_bytes;
        s.lag_ms = p.lag_ms;
        s.frames_sent += df;
        s.batches_sent += db;
        s.batches_forwarded += dfw;
        s.marks.clone_from(sender.peer_marks());
    });
    // Checkpoints keep the WAL every peer still needs: the least acknowledged position of
    // this node's batches, and of every other origin's the least mark a peer other than
    // that origin holds (a survivor that restarts can then still give a rebuilt origin
    // back what its rebuild's source lacked).
    let outbound = sh.peers().outbound();
    let db = sh.db();
    db.set_peer_floor(outbound.iter().map(|p| p.acked).min());
    db.set_forward_floors(forward_floors(db, &outbound));
}

/// For every other origin this server holds batches of, the least mark of it that an
/// outbound peer other than the origin holds (0 where a peer has not said: keep).
pub(crate) fn forward_floors(
    db: &duplex_engine::Database,
    outbound: &[crate::shared::PeerStatus],
) -> Vec<(u64, u64)> {
    db.origins()
        .keys()
        .filter_map(|&o| {
            outbound
                .iter()
                .filter(|p| p.node != Some(o))
                .map(|p| p.marks.get(&o).copied().unwrap_or(0))
                .min()
                .map(|m| (o, m))
        })
        .collect()
}
