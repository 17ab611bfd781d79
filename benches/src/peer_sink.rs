//! A fake peer for the replication benchmarks: it accepts a `duplexd`'s outbound peer link
//! (the server's `--peer` points at it), runs the acceptor's side of the handshake with the
//! cluster secret (`duplex_proto::peer::Handshake::acceptor`), tells the sender to start
//! from the beginning (`ACK{origin, durable_lsn: 0}`), then answers every BATCHES frame
//! with an ACK of its last origin LSN without applying anything. What the sender spends on
//! that link is then all replication costs its write path.
//!
//! One thread accepts (a non-blocking listener polled every 10 ms); one thread per
//! connection. Both stop when the [`PeerSink`] is dropped.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use duplex_proto::peer::{
    Ack, Decoded, Frame, FrameDecoder, FrameLimits, Handshake, NodeIdentity, Status, NONCE_LEN,
};

/// A running fake peer.
#[derive(Debug)]
pub struct PeerSink {
    addr: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// What a connection thread shares with the sink.
#[derive(Debug, Clone)]
struct Ctx {
    identity: NodeIdentity,
    secret: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
}

impl PeerSink {
    /// Listens on a free loopback port as node `node_id` of cluster `cluster_id`, proving
    /// `secret`.
    pub fn start(secret: Vec<u8>, node_id: u64, cluster_id: u64) -> io::Result<PeerSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let ctx = Ctx {
            identity: NodeIdentity {
                cluster_id,
                node_id,
                incarnation: 0,
                epoch: 0,
            },
            secret: Arc::new(secret),
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::new(AtomicU64::new(0)),
        };
        let (stop, acked) = (ctx.stop.clone(), ctx.acked.clone());
        let thread = std::thread::Builder::new()
            .name("peer-sink".into())
            .spawn(move || accept_loop(&listener, &ctx))?;
        Ok(PeerSink {
            addr,
            stop,
            acked,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:<port>`, for the server's `--peer`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Batches acknowledged since start (all connections).
    pub fn batches_acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
}

impl Drop for PeerSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, ctx: &Ctx) {
    let mut conns = Vec::new();
    while !ctx.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let c = ctx.clone();
                conns.push(std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &c) {
                        // The server going away (killed at the end of a run) is no news.
                        if !c.stop.load(Ordering::Relaxed) && e.kind() != ErrorKind::UnexpectedEof {
                            eprintln!("peer_sink: connection ended: {e}");
                        }
                    }
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("peer_sink: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// One connection's frames.
struct Io {
    stream: TcpStream,
    decoder: FrameDecoder,
    limits: FrameLimits,
    out: Vec<u8>,
}

impl Io {
    fn recv(&mut self, stop: &AtomicBool) -> io::Result<Frame> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.decoder.next_frame() {
                Ok(Decoded::Frame { frame, .. }) => return Ok(frame),
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => return Err(io::Error::new(ErrorKind::InvalidData, e.to_string())),
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "peer closed")),
                Ok(n) => self.decoder.feed(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if stop.load(Ordering::Relaxed) {
                        return Err(io::Error::new(ErrorKind::Interrupted, "sink stopping"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, f: &Frame) -> io::Result<()> {
        self.out.clear();
        f.encode(&self.limits, &mut self.out)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
        self.stream.write_all(&self.out)
    }
}

/// Handshake, first ACK, then an ACK per BATCHES frame until the sender goes away.
fn serve(stream: TcpStream, ctx: &Ctx) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let limits = FrameLimits::default();
    let mut io = Io {
        stream,
        decoder: FrameDecoder::new(limits),
        limits,
        out: Vec::new(),
    };
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut hs = Handshake::acceptor(ctx.identity, &ctx.secret, nonce)
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
    let origin = loop {
        let frame = io.recv(&ctx.stop)?;
        let reply = hs
            .receive(&frame)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
        if let Some(r) = reply {
            io.send(&r)?;
        }
        match hs.status() {
            Status::Established(p) => break p.node_id,
            Status::Refused(r) => return Err(io::Error::other(r.to_string())),
            Status::InProgress => {}
        }
    };
    io.send(&Frame::Ack(Ack {
        origin,
        durable_lsn: 0,
    }))?;
    loop {
        match io.recv(&ctx.stop)? {
            Frame::Batches(b) if b.origin == origin => {
                if let Some(last) = b.batches.last() {
                    io.send(&Frame::Ack(Ack {
                        origin,
                        durable_lsn: last.origin_lsn,
                    }))?;
                    ctx.acked
                        .fetch_add(b.batches.len() as u64, Ordering::Relaxed);
                }
            }
            Frame::Error(e) => return Err(io::Error::other(format!("sender: {}", e.message))),
            _ => {}
        }
    }
}
