//! The thread-per-connection layer (`io = "threads"`): each connection has a thread of its
//! own with blocking I/O. It reads what is available, steps its session over every complete
//! request (committing each write run on its own: concurrent connections still share group
//! commits inside the WAL), and writes the replies with one write. A client whose unsent
//! replies pass `client_output_limit_bytes`, or that takes none of them for the idle
//! timeout, is disconnected and logged; the session's reply budget keeps what one waiting
//! connection holds to about [`crate::limits::OUT_BYTES_MAX`] plus one reply.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use duplex_proto::peer::MAGIC;

use crate::limits::{CHUNK_BYTES, CONN_STACK_BYTES, DRAIN, POLL};
use crate::session::{self, Session, Step};
use crate::shared::Shared;

/// Serves `stream` on a thread of its own.
pub fn spawn(shared: &Arc<Shared>, stream: TcpStream) {
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("conn".into())
        .stack_size(CONN_STACK_BYTES)
        .spawn(move || {
            let peer = stream.peer_addr().ok();
            if let Err(e) = serve(&s, stream) {
                tracing::debug!(peer = ?peer, error = %e, "connection ended with an error");
            }
            s.conn_closed();
        });
    if let Err(e) = spawned {
        shared.conn_closed();
        tracing::warn!(event = "spawn_failed", error = %e, "cannot start a connection thread");
    }
}

/// Serves one connection until it closes, QUITs, errs, idles out or the server stops.
fn serve(sh: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    // Writes wake up as often, so that a client that does not read is seen (and let go).
    stream.set_write_timeout(Some(POLL))?;
    let mut session = Session::new(sh);
    let peer = stream.peer_addr().ok();
    session.set_peer(sh, peer);
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut idle_since = Instant::now();
    let idle = sh.cfg().idle_timeout();
    let mut session_fresh = true;
    loop {
        if sh.stopping() {
            return Ok(());
        }
        let len = buf.len();
        buf.resize(len + CHUNK_BYTES, 0);
        let n = match stream.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                buf.truncate(len);
                if idle.is_some_and(|d| idle_since.elapsed() >= d) {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        buf.truncate(len + n);
        if n == 0 {
            return Ok(());
        }
        idle_since = Instant::now();
        // A peer link, not a client: its first byte is the frame magic.
        if len == 0 && buf.first() == Some(&MAGIC[0]) && session_fresh {
            crate::net::peer::conn::serve_inbound(sh, stream, &buf);
            return Ok(());
        }
        session_fresh = false;
        let mut pos = 0;
        let mut conn = Out {
            stream: &mut stream,
            out: &mut out,
            id: session.id(),
            peer,
        };
        if !run(sh, &mut session, &buf, &mut pos, &mut conn)? {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        buf.drain(..pos);
        if buf.capacity() > 4 * CHUNK_BYTES && buf.len() < CHUNK_BYTES {
            buf.shrink_to(CHUNK_BYTES);
        }
    }
}

/// One connection's replies on their way out.
struct Out<'a> {
    stream: &'a mut TcpStream,
    out: &'a mut Vec<u8>,
    id: u64,
    peer: Option<SocketAddr>,
}

impl Out<'_> {
    /// Sends the replies gathered. A client whose replies pass `client_output_limit_bytes`,
    /// or that takes none of them for the idle timeout, is disconnected (logged, and an
    /// error here); a stopping server gives a client that does not read [`DRAIN`].
    fn flush(&mut self, sh: &Shared) -> std::io::Result<()> {
        if self.out.len() > sh.cfg().client_output_limit_bytes {
            return Err(self.disconnect(sh, "its unsent replies passed client_output_limit_bytes"));
        }
        let idle = sh.cfg().idle_timeout();
        let mut off = 0;
        let mut since = Instant::now();
        while off < self.out.len() {
            match self.stream.write(&self.out[off..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    off += n;
                    since = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    let stalled = since.elapsed();
                    if idle.is_some_and(|d| stalled >= d) {
                        return Err(
                            self.disconnect(sh, "it has not read its replies for the idle timeout")
                        );
                    }
                    if sh.stopping() && stalled >= DRAIN {
                        return Err(std::io::Error::other(
                            "stopping: the client does not read its replies",
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Logs and counts a disconnection for unsent replies; the error that ends the
    /// connection.
    fn disconnect(&self, sh: &Shared, why: &str) -> std::io::Error {
        sh.count_output_disconnect();
        let addr = self
            .peer
            .map_or_else(|| "unknown address".to_owned(), |a| a.to_string());
        tracing::warn!(
            event = "client_output_disconnect",
            client = self.id,
            addr = %addr,
            unsent_bytes = self.out.len(),
            limit = sh.cfg().client_output_limit_bytes,
            "client {} ({addr}) disconnected: {why} ({} bytes unsent)",
            self.id,
            self.out.len()
        );
        std::io::Error::other(format!("client disconnected: {why}"))
    }
}

/// Steps the session over every complete request of `buf`, writing replies as they
/// gather. Returns false when the connection must close (its replies are sent).
fn run(
    sh: &Shared,
    session: &mut Session,
    buf: &[u8],
    pos: &mut usize,
    conn: &mut Out<'_>,
) -> std::io::Result<bool> {
    let open = loop {
        match session.step(sh, buf, pos, conn.out) {
            Step::Writes(run) => {
                if let Some(r) = session::commit(sh, &[&run]).pop() {
                    conn.out.extend_from_slice(&r);
                }
            }
            // This thread is the connection's own: the slow request runs here.
            Step::Slow(job) => conn.out.extend(job.run(sh)),
            Step::Flush => conn.flush(sh)?,
            Step::NeedInput => break true,
            Step::Close => break false,
        }
    };
    if !conn.out.is_empty() {
        conn.flush(sh)?;
    }
    Ok(open)
}
