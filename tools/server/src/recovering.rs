//! Answering clients while a rebuild copies (issue 12): before the database exists, the
//! port is already bound and a small responder answers `DUPLEX.STATE` (state
//! `recovering`) and `INFO` (state, the peer, the phase and the bytes received), `QUIT`,
//! and every other command `-LOADING` (clients go to another server). Peer-link
//! connections are closed (the peer's link retries). Once the rebuild is done the
//! responder stops and the ordinary connection layer takes the listener over.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duplex_proto::{array_len, bulk, integer, Limits, Parsed, RequestParser};
use parking_lot::Mutex;

use crate::Error;

/// Most connections answered at once; more are closed.
const MAX_CONNS: usize = 64;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// How far a rebuild is, for the responder.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the peer's backup received.
    pub bytes: AtomicU64,
    /// What it is doing: `connecting`, `copying`, `restoring`, `installing`.
    pub phase: Mutex<&'static str>,
    /// What of this node's old updates will not be recovered, once the peers were asked.
    pub gap: Mutex<Option<crate::rebuild::RebuildGap>>,
}

impl Progress {
    /// Records the gap the peers' marks show.
    pub fn set_gap(&self, gap: crate::rebuild::RebuildGap) {
        *self.gap.lock() = Some(gap);
    }

    /// Sets the phase.
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock() = phase;
    }
}

/// What the answers say.
#[derive(Debug, Clone)]
struct Who {
    node_id: u64,
    peer: String,
}

/// The responder thread; [`Responder::stop`] ends it.
#[derive(Debug)]
pub struct Responder {
    stop: Arc<AtomicBool>,
    wake: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Starts answering on a clone of `listener`.
    pub fn start(
        listener: &TcpListener,
        node_id: u64,
        peer: &str,
        progress: Arc<Progress>,
    ) -> Result<Responder, Error> {
        let l = listener.try_clone().map_err(Error::Net)?;
        let wake = listener.local_addr().map_err(Error::Net)?;
        let stop = Arc::new(AtomicBool::new(false));
        let who = Who {
            node_id,
            peer: peer.to_owned(),
        };
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("recovering".into())
            .spawn(move || accept_loop(&l, &s, &who, &progress))
            .map_err(Error::Net)?;
        Ok(Responder {
            stop,
            wake: crate::server::wake_addr(wake),
            thread: Some(thread),
        })
    }

    /// Stops answering; connections it holds close within a fraction of a second.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(l: &TcpListener, stop: &Arc<AtomicBool>, who: &Who, progress: &Arc<Progress>) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in l.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
            open.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (stop, who, progress, open) =
            (stop.clone(), who.clone(), progress.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name("recovering-conn".into())
            .spawn(move || {
                serve(conn, &stop, &who, &progress);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::debug!("cannot start a thread for a client while recovering");
        }
    }
}

fn serve(mut conn: TcpStream, stop: &AtomicBool, who: &Who, progress: &Progress) {
    if conn
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
    {
        return;
    }
    let lim = Limits::default();
    let mut parser = RequestParser::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) && last.elapsed() < IDLE {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                last = Instant::now();
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        // A peer link (its frames open with a byte no RESP request starts with).
        if buf.first() == Some(&duplex_proto::peer::MAGIC[0]) {
            return;
        }
        let mut out = Vec::new();
        loop {
            match parser.parse(&buf, &lim) {
                Ok(Parsed::Request { args, consumed }) => {
                    let quit = answer(&args, who, progress, &mut out);
                    buf.drain(..consumed);
                    parser.reset();
                    if quit {
                        let _ = conn.write_all(&out);
                        return;
                    }
                }
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    duplex_proto::error(&mut out, &format!("ERR {e}"));
                    let _ = conn.write_all(&out);
                    return;
                }
            }
        }
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

/// Appends the answer to one request; true for QUIT.
fn answer(args: &[&[u8]], who: &Who, progress: &Progress, out: &mut Vec<u8>) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let phase = *progress.phase.lock();
    let bytes = progress.bytes.load(Ordering::Relaxed);
    match name.as_str() {
        "DUPLEX.STATE" => {
            array_len(out, 12);
            bulk(out, b"state");
            bulk(out, b"recovering");
            bulk(out, b"epoch");
            integer(out, 0);
            bulk(out, b"node_id");
            integer(out, i64::try_from(who.node_id).unwrap_or(i64::MAX));
            bulk(out, b"last_lsn");
            integer(out, 0);
            bulk(out, b"archive");
            bulk(out, b"off");
            bulk(out, b"scrub");
            bulk(out, b"ok");
        }
        "INFO" => {
            let mut text = format!(
                "# Duplex\r\nstate:recovering\r\nepoch:0\r\nnode_id:{}\r\nrebuild_from:{}\r\nrebuild_phase:{phase}\r\nrebuild_bytes:{bytes}\r\n",
                who.node_id, who.peer
            );
            if let Some(g) = progress.gap.lock().as_ref() {
                text.push_str(&g.info_lines());
            }
            bulk(out, text.as_bytes());
        }
        "QUIT" => {
            duplex_proto::simple(out, "OK");
            return true;
        }
        _ => duplex_proto::error(
            out,
            &duplex_proto::codes::line(duplex_proto::codes::LOADING, &format!(
                "this server is recovering (rebuilding from {}, {phase}, {bytes} bytes so far): use another server",
                who.peer
            )),
        ),
    }
    false
}
