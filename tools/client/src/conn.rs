//! One blocking TCP connection to one `duplexd`: requests are encoded and replies parsed with
//! `duplex-proto`, every read and write is bounded by the configured timeouts, and
//! [`Conn::is_closed`] tells, without blocking, whether the server has already closed it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use duplex_proto::{encode_request, parse_reply, Limits, ProtoError, Reply};

/// Why a request/reply exchange failed at the connection level (the reply, if any, is lost).
#[derive(Debug)]
pub(crate) enum ConnError {
    /// An I/O error or a timeout.
    Io(std::io::Error),
    /// The server closed the connection.
    Closed,
    /// The reply is not valid RESP; the stream cannot be trusted any more.
    Proto(ProtoError),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                write!(f, "no reply within the read timeout")
            }
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Closed => write!(f, "the server closed the connection"),
            ConnError::Proto(e) => write!(f, "invalid reply: {e}"),
        }
    }
}

/// A connection and its read buffer.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    limits: Limits,
}

/// Read chunk size.
const CHUNK: usize = 16 << 10;

impl Conn {
    /// Connects to `addr` (`host:port`), trying every address it resolves to, each within
    /// `connect_timeout`; reads and writes then time out after `io_timeout`.
    pub(crate) fn open(
        addr: &str,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> std::io::Result<Conn> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let mut last = std::io::Error::new(ErrorKind::NotFound, "the name resolves to nothing");
        for a in addrs {
            match TcpStream::connect_timeout(&a, connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(io_timeout))?;
                    stream.set_write_timeout(Some(io_timeout))?;
                    return Ok(Conn {
                        stream,
                        buf: Vec::with_capacity(CHUNK),
                        limits: Limits::default(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends one request.
    pub(crate) fn send(&mut self, args: &[&[u8]]) -> Result<(), ConnError> {
        let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        encode_request(&mut out, args);
        self.stream.write_all(&out).map_err(ConnError::Io)
    }

    /// Reads one reply.
    pub(crate) fn recv(&mut self) -> Result<Reply, ConnError> {
        loop {
            if let Some((reply, used)) =
                parse_reply(&self.buf, &self.limits).map_err(ConnError::Proto)?
            {
                self.buf.drain(..used);
                return Ok(reply);
            }
            let len = self.buf.len();
            self.buf.resize(len + CHUNK, 0);
            let got = self.stream.read(&mut self.buf[len..]);
            match got {
                Ok(0) => {
                    self.buf.truncate(len);
                    return Err(ConnError::Closed);
                }
                Ok(n) => self.buf.truncate(len + n),
                Err(e) if e.kind() == ErrorKind::Interrupted => self.buf.truncate(len),
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(ConnError::Io(e));
                }
            }
        }
    }

    /// Sends two requests in one write and reads both replies: the first reply, and the
    /// second or why it could not be read (the first reply is known either way).
    pub(crate) fn call_pair(
        &mut self,
        first: &[&[u8]],
        second: &[&[u8]],
    ) -> Result<(Reply, Result<Reply, ConnError>), ConnError> {
        let mut out = Vec::with_capacity(96 + first.iter().map(|a| a.len() + 16).sum::<usize>());
        encode_request(&mut out, first);
        encode_request(&mut out, second);
        self.stream.write_all(&out).map_err(ConnError::Io)?;
        let a = self.recv()?;
        Ok((a, self.recv()))
    }

    /// Sends one request and reads its reply.
    pub(crate) fn call(&mut self, args: &[&[u8]]) -> Result<Reply, ConnError> {
        self.send(args)?;
        self.recv()
    }

    /// Whether the connection is unusable before anything is sent on it: the server has
    /// closed it (idle timeout, shutdown), reset it, or sent bytes nobody asked for. Does
    /// not block.
    pub(crate) fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let closed = match self.stream.peek(&mut b) {
            Ok(_) => true, // EOF, or unsolicited bytes: either way do not trust it
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        };
        self.stream.set_nonblocking(false).is_err() || closed
    }
}
