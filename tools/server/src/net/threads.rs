//! The thread-per-connection layer (`io = "threads"`): each connection has a thread of its
//! own with blocking I/O. It reads what is available, steps its session over every complete
//! request (committing each write run on its own: concurrent connections still share group
//! commits inside the WAL), and writes the replies with one write.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use crate::limits::{CHUNK_BYTES, CONN_STACK_BYTES, POLL};
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
    let mut session = Session::new(sh);
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
    let mut idle_since = Instant::now();
    let idle = sh.cfg().idle_timeout();
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
        let mut pos = 0;
        if !run(sh, &mut session, &buf, &mut pos, &mut out, &mut stream)? {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        buf.drain(..pos);
        if buf.capacity() > 4 * CHUNK_BYTES && buf.len() < CHUNK_BYTES {
            buf.shrink_to(CHUNK_BYTES);
        }
    }
}

/// Steps the session over every complete request of `buf`, writing replies as they
/// gather. Returns false when the connection must close (its replies are sent).
fn run(
    sh: &Shared,
    session: &mut Session,
    buf: &[u8],
    pos: &mut usize,
    out: &mut Vec<u8>,
    stream: &mut TcpStream,
) -> std::io::Result<bool> {
    let open = loop {
        match session.step(sh, buf, pos, out) {
            Step::Writes(run) => {
                if let Some(r) = session::commit(sh, &[&run]).pop() {
                    out.extend_from_slice(&r);
                }
            }
            // This thread is the connection's own: the slow request runs here.
            Step::Slow(job) => out.extend(job.run(sh)),
            Step::Flush => {
                stream.write_all(out)?;
                out.clear();
            }
            Step::NeedInput => break true,
            Step::Close => break false,
        }
    };
    if !out.is_empty() {
        stream.write_all(out)?;
        out.clear();
    }
    Ok(open)
}
