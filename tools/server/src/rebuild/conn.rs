//! The rebuild's own peer-link connections, as initiator: the copy, the marks, the pull
//! and the write hold each open one ([`PeerConn`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use duplex_proto::peer::{
    Decoded, Frame, FrameDecoder, FrameLimits, Handshake, NodeIdentity, Status, NONCE_LEN,
};

use super::{CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT};
use crate::config::ServerConfig;

/// A peer-link connection as initiator, established.
pub(super) struct PeerConn {
    stream: TcpStream,
    decoder: FrameDecoder,
    limits: FrameLimits,
    chunk: Vec<u8>,
}

impl PeerConn {
    /// Connects to `addr` and runs the handshake as this node; retries a failed attempt
    /// for up to `retry_for` (a peer restarting, or still holding this node's old link).
    pub(super) fn open(
        cfg: &ServerConfig,
        secret: &[u8],
        addr: &str,
        retry_for: Duration,
    ) -> Result<PeerConn, String> {
        let until = Instant::now() + retry_for;
        loop {
            match PeerConn::try_open(cfg, secret, addr) {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() < until => {
                    tracing::info!(event = "rebuild_peer_retry", peer = addr, error = %e, "{addr}: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_open(cfg: &ServerConfig, secret: &[u8], addr: &str) -> Result<PeerConn, String> {
        let stream = connect(addr)?;
        let setup = |e: std::io::Error| format!("cannot set up the connection to {addr}: {e}");
        stream.set_nodelay(true).map_err(setup)?;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(setup)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(setup)?;
        let limits = FrameLimits::default();
        let mut c = PeerConn {
            stream,
            decoder: FrameDecoder::new(limits),
            limits,
            chunk: vec![0; 64 << 10],
        };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| format!("no random bytes: {e}"))?;
        let me = NodeIdentity {
            cluster_id: cfg.cluster_id,
            node_id: cfg.node_id,
            incarnation: 0,
            epoch: 0,
        };
        let (mut hs, hello) = Handshake::initiator(me, secret, nonce).map_err(|e| e.to_string())?;
        c.send(&hello)?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            match hs.status() {
                Status::Established(_) => return Ok(c),
                Status::Refused(r) => return Err(format!("handshake {r}")),
                Status::InProgress => {}
            }
            let f = c.recv(deadline)?;
            match hs.receive(&f) {
                Ok(Some(reply)) => c.send(&reply)?,
                Ok(None) => {}
                Err(e) => {
                    if let Status::Refused(r) = hs.status() {
                        let _ = c.send(&r.to_frame());
                    }
                    return Err(format!("handshake failed: {e}"));
                }
            }
        }
    }

    pub(super) fn send(&mut self, f: &Frame) -> Result<(), String> {
        let bytes = f.to_bytes(&self.limits).map_err(|e| e.to_string())?;
        self.stream
            .write_all(&bytes)
            .map_err(|e| format!("write to the peer: {e}"))
    }

    pub(super) fn recv(&mut self, deadline: Instant) -> Result<Frame, String> {
        loop {
            match self.decoder.next_frame().map_err(|e| e.to_string())? {
                Decoded::Frame { frame, .. } => return Ok(frame),
                Decoded::Incomplete { need } => {
                    let want = need.clamp(1, self.chunk.len());
                    match self.stream.read(&mut self.chunk[..want]) {
                        Ok(0) => {
                            return Err("the peer closed the connection (an older duplexd without rebuild support closes it at REBUILD)".into())
                        }
                        Ok(n) => self.decoder.feed(&self.chunk[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                            ) =>
                        {
                            if Instant::now() >= deadline {
                                return Err("the peer sent nothing in time".into());
                            }
                        }
                        Err(e) => return Err(format!("read from the peer: {e}")),
                    }
                }
            }
        }
    }
}

fn connect(addr: &str) -> Result<TcpStream, String> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?;
    let mut last = format!("{addr} resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}
