//! The event-loop connection layer (`io = "events"`): a few I/O threads, each an epoll loop
//! (`mio`) owning many non-blocking connections. The accept loop hands each admitted
//! connection to one of them, round-robin.
//!
//! One loop turn:
//! 1. wait for readiness (no wait when work is left from the last turn);
//! 2. read every readable socket (up to [`READ_PER_TURN_BYTES`] each, the rest next turn);
//! 3. step every connection's [`Session`] in rounds: each session runs its requests in
//!    order up to its next run of writes, which it hands back; then the runs of ALL the
//!    connections go to the engine as ONE commit ([`session::commit`]: one WAL append, one
//!    fsync under `always`), each connection gets its replies, and the next round continues
//!    after those writes, until no complete request is left;
//!    A slow request ([`Step::Slow`]) goes to a worker thread ([`Workers`]); its
//!    connection waits (neither read nor run) until the reply comes back through the
//!    loop's channel of finished jobs, which wakes the loop; the others go on;
//! 4. write every connection's replies; what the socket does not take stays in that
//!    connection's output buffer until it is writable again. A connection with more than
//!    [`OUT_BYTES_MAX`] unsent bytes is not read or run further until its client has read
//!    them (nor read while it holds [`READ_PER_TURN_BYTES`] of requests not yet run), so a
//!    client that pipelines without reading costs about [`OUT_BYTES_MAX`] plus one reply.
//!    One whose unsent replies pass `client_output_limit_bytes` (a single huge reply) is
//!    disconnected and logged.
//!
//! Idle clients are closed after the idle timeout: no bytes from them, and none of their
//! replies taken (a client that stopped reading is logged as such). On shutdown a loop
//! stops reading, runs the requests it has already read, sends the replies (up to
//! [`DRAIN`]) and closes its connections; connections handed over after that are closed at
//! once.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use duplex_proto::peer::MAGIC;

use crate::limits::{CHUNK_BYTES, DRAIN, OUT_BYTES_MAX, POLL, READ_PER_TURN_BYTES};
use crate::net::workers::{Job, Workers};
use crate::session::{self, Session, Slow, Step};
use crate::shared::Shared;
use crate::Error;

/// The token of each loop's waker (connections get 1, 2, ...).
const WAKER: Token = Token(0);

/// The event-loop threads, as seen by the accept loop.
#[derive(Debug)]
pub struct Pool {
    loops: Vec<(Sender<StdStream>, Arc<Waker>)>,
    next: usize,
}

impl Pool {
    /// Starts `n` event-loop threads (at least one).
    pub fn start(sh: &Arc<Shared>, n: usize) -> Result<Pool, Error> {
        let mut loops = Vec::with_capacity(n.max(1));
        let workers = Workers::start(sh)?;
        for i in 0..n.max(1) {
            let poll = Poll::new().map_err(Error::Net)?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(Error::Net)?);
            let (tx, rx) = channel();
            let (done_tx, done_rx) = channel();
            let el = EventLoop {
                sh: sh.clone(),
                poll,
                rx,
                workers: workers.clone(),
                waker: waker.clone(),
                done_tx,
                done_rx,
                conns: HashMap::new(),
                next_token: 1,
                stopping_since: None,
            };
            std::thread::Builder::new()
                .name(format!("io-{i}"))
                .spawn(move || el.run())
                .map_err(Error::Net)?;
            loops.push((tx, waker));
        }
        Ok(Pool { loops, next: 0 })
    }

    /// Gives an admitted connection (already counted in `clients`) to the next loop.
    pub fn hand_over(&mut self, sh: &Arc<Shared>, stream: StdStream) {
        let (tx, waker) = &self.loops[self.next % self.loops.len()];
        self.next = self.next.wrapping_add(1);
        if tx.send(stream).is_err() {
            // The loop is gone (it never exits while the process serves; belt and braces).
            sh.conn_closed();
            return;
        }
        if let Err(e) = waker.wake() {
            tracing::warn!(event = "wake_failed", error = %e, "cannot wake an event loop");
        }
    }
}

/// One connection owned by an event loop.
struct Conn {
    stream: TcpStream,
    session: Session,
    /// Bytes read and not yet consumed by the parser.
    buf: Vec<u8>,
    /// Bytes of `buf` consumed this turn (dropped after the turn).
    pos: usize,
    /// Replies not yet sent, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// A readiness edge was seen and the socket may have more to read.
    readable: bool,
    /// `buf` may hold complete requests not yet run.
    dirty: bool,
    /// The peer closed its side.
    eof: bool,
    /// Close once `out` is sent (QUIT, protocol error, end of input).
    close: bool,
    /// A socket error: close now.
    dead: bool,
    /// A slow request of this connection is with the workers: nothing more is read or run
    /// until its reply is back.
    waiting: bool,
    /// Last time bytes arrived or the client took some of its replies.
    last: Instant,
    /// The client's address, for the log.
    peer: Option<SocketAddr>,
    /// Nothing has been read from it yet.
    fresh: bool,
    /// Its first byte was the frame magic: a peer link, handed to [`crate::net::peer`].
    peer_link: bool,
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    fn held_back(&self) -> bool {
        self.unsent() > OUT_BYTES_MAX
    }

    fn wants_turn(&self) -> bool {
        !self.dead
            && !self.close
            && !self.waiting
            && !self.held_back()
            && (self.readable || self.dirty)
    }
}

/// One connection's view during the rounds of a turn.
struct Work<'a> {
    token: usize,
    buf: &'a [u8],
    pos: &'a mut usize,
    session: &'a mut Session,
    out: &'a mut Vec<u8>,
    close: &'a mut bool,
    dirty: &'a mut bool,
    waiting: &'a mut bool,
    /// Nothing more to run this turn.
    done: bool,
}

impl<'a> Work<'a> {
    /// Steps the session: its next run of writes, or `None` (and `done`) when nothing more
    /// can run this turn (input incomplete, closing, output held back, or a slow request
    /// put in `slow` for the workers).
    fn step(&mut self, sh: &Shared, slow: &mut Vec<(usize, Slow)>) -> Option<Vec<Vec<&'a [u8]>>> {
        let buf: &'a [u8] = self.buf;
        match self.session.step(sh, buf, self.pos, self.out) {
            Step::Writes(run) => return Some(run),
            Step::Slow(job) => {
                slow.push((self.token, job));
                *self.waiting = true;
            }
            Step::NeedInput => *self.dirty = false,
            // The rest runs once the client has read its replies.
            Step::Flush => {}
            Step::Close => *self.close = true,
        }
        self.done = true;
        None
    }
}

struct EventLoop {
    sh: Arc<Shared>,
    poll: Poll,
    rx: Receiver<StdStream>,
    workers: Workers,
    waker: Arc<Waker>,
    /// Replies of finished slow requests, by connection token.
    done_tx: Sender<(usize, Vec<u8>)>,
    done_rx: Receiver<(usize, Vec<u8>)>,
    conns: HashMap<usize, Conn>,
    next_token: usize,
    stopping_since: Option<Instant>,
}

impl EventLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let busy = self.conns.values().any(Conn::wants_turn);
            let timeout = if busy { Duration::ZERO } else { POLL };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::warn!(event = "poll_failed", error = %e, "epoll wait failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let mut new_conns = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    new_conns = true;
                } else if let Some(c) = self.conns.get_mut(&ev.token().0) {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        c.readable = true;
                    }
                }
            }
            let stopping = self.sh.stopping();
            if stopping && self.stopping_since.is_none() {
                self.stopping_since = Some(Instant::now());
            }
            if new_conns || stopping {
                self.adopt(stopping);
            }
            self.take_done();
            if !stopping {
                self.read_all();
                self.hand_peers();
            }
            self.run_requests();
            self.enforce_output_limit();
            self.send_all();
            self.reap(stopping);
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                self.sweep_idle();
            }
        }
    }

    /// Registers the connections the accept loop handed over (closes them when stopping).
    fn adopt(&mut self, stopping: bool) {
        while let Ok(stream) = self.rx.try_recv() {
            if stopping {
                drop(stream);
                self.sh.conn_closed();
                continue;
            }
            let prepared = stream
                .set_nonblocking(true)
                .and_then(|()| stream.set_nodelay(true));
            if let Err(e) = prepared {
                tracing::debug!(error = %e, "cannot prepare a connection");
                self.sh.conn_closed();
                continue;
            }
            let peer = stream.peer_addr().ok();
            let mut stream = TcpStream::from_std(stream);
            let token = self.next_token;
            self.next_token = self.next_token.wrapping_add(1).max(1);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(event = "register_failed", error = %e, "cannot watch a connection");
                self.sh.conn_closed();
                continue;
            }
            let session = Session::new(&self.sh);
            session.set_peer(&self.sh, stream.peer_addr().ok());
            self.conns.insert(
                token,
                Conn {
                    stream,
                    session,
                    buf: Vec::with_capacity(CHUNK_BYTES),
                    pos: 0,
                    out: Vec::new(),
                    out_pos: 0,
                    // Bytes may have arrived before the registration.
                    readable: true,
                    dirty: false,
                    eof: false,
                    close: false,
                    dead: false,
                    waiting: false,
                    last: Instant::now(),
                    peer,
                    fresh: true,
                    peer_link: false,
                },
            );
        }
    }

    /// Reads what every readable connection has (up to [`READ_PER_TURN_BYTES`] each).
    fn read_all(&mut self) {
        for c in self.conns.values_mut() {
            // Requests already read and not yet run are enough to go on with.
            let backlog = c.dirty && c.buf.len() - c.pos >= READ_PER_TURN_BYTES;
            if !c.readable || c.dead || c.close || c.waiting || c.held_back() || backlog {
                continue;
            }
            let mut got = 0;
            while got < READ_PER_TURN_BYTES {
                let len = c.buf.len();
                c.buf.resize(len + CHUNK_BYTES, 0);
                match c.stream.read(&mut c.buf[len..]) {
                    Ok(0) => {
                        c.buf.truncate(len);
                        c.eof = true;
                        c.readable = false;
                        break;
                    }
                    Ok(n) => {
                        c.buf.truncate(len + n);
                        got += n;
                        c.dirty = true;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => c.buf.truncate(len),
                    Err(e) => {
                        c.buf.truncate(len);
                        c.readable = false;
                        if e.kind() != ErrorKind::WouldBlock {
                            tracing::debug!(client = c.session.id(), error = %e, "read failed");
                            c.dead = true;
                        }
                        break;
                    }
                }
            }
            if got > 0 {
                c.last = Instant::now();
                if c.fresh && c.buf.first() == Some(&MAGIC[0]) {
                    c.peer_link = true;
                    c.dirty = false;
                }
                c.fresh = false;
            }
        }
    }

    /// Hands the connections that turned out to be peer links to threads of their own
    /// ([`crate::net::peer::conn::spawn_inbound`]), with the bytes already read.
    fn hand_peers(&mut self) {
        let peers: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer_link)
            .map(|(&t, _)| t)
            .collect();
        for t in peers {
            let Some(mut c) = self.conns.remove(&t) else {
                continue;
            };
            let _ = self.poll.registry().deregister(&mut c.stream);
            let stream: StdStream = c.stream.into();
            crate::net::peer::conn::spawn_inbound(&self.sh, stream, c.buf);
        }
    }

    /// Runs every complete request read so far, in rounds of one commit each.
    fn run_requests(&mut self) {
        let sh = &*self.sh;
        let mut slow: Vec<(usize, Slow)> = Vec::new();
        let mut works: Vec<Work<'_>> = self
            .conns
            .iter_mut()
            .filter(|(_, c)| c.dirty && !c.dead && !c.close && !c.waiting && !c.held_back())
            .map(|(&token, c)| Work {
                token,
                buf: &c.buf,
                pos: &mut c.pos,
                session: &mut c.session,
                out: &mut c.out,
                close: &mut c.close,
                dirty: &mut c.dirty,
                waiting: &mut c.waiting,
                done: false,
            })
            .collect();
        loop {
            let mut groups: Vec<(usize, Vec<Vec<&[u8]>>)> = Vec::new();
            for (i, w) in works.iter_mut().enumerate() {
                if !w.done {
                    if let Some(run) = w.step(sh, &mut slow) {
                        groups.push((i, run));
                    }
                }
            }
            if groups.is_empty() {
                break;
            }
            let runs: Vec<&[Vec<&[u8]>]> = groups.iter().map(|(_, r)| r.as_slice()).collect();
            let replies = session::commit(sh, &runs);
            for ((i, _), r) in groups.iter().zip(replies) {
                works[*i].out.extend_from_slice(&r);
            }
        }
        drop(works);
        for (token, job) in slow {
            self.submit(token, job);
        }
        for c in self.conns.values_mut() {
            if c.pos > 0 {
                c.buf.drain(..c.pos);
                c.pos = 0;
                if c.buf.capacity() > 4 * CHUNK_BYTES && c.buf.len() < CHUNK_BYTES {
                    c.buf.shrink_to(CHUNK_BYTES);
                }
            }
        }
    }

    /// Hands one connection's slow request to the workers.
    fn submit(&mut self, token: usize, slow: Slow) {
        let job = Job {
            slow,
            token,
            done: self.done_tx.clone(),
            waker: self.waker.clone(),
        };
        if !self.workers.submit(job) {
            // No workers (never while the process serves): the connection cannot go on.
            if let Some(c) = self.conns.get_mut(&token) {
                c.dead = true;
            }
        }
    }

    /// Appends the replies of finished slow requests; their connections go on.
    fn take_done(&mut self) {
        while let Ok((token, reply)) = self.done_rx.try_recv() {
            // A connection closed meanwhile has no one to answer.
            if let Some(c) = self.conns.get_mut(&token) {
                c.out.extend_from_slice(&reply);
                c.waiting = false;
                c.dirty = true;
                c.last = Instant::now();
            }
        }
    }

    /// Lets go of the clients whose unsent replies passed `client_output_limit_bytes`
    /// (before anything more is sent: the limit is on what the server holds).
    fn enforce_output_limit(&mut self) {
        let limit = self.sh.cfg().client_output_limit_bytes;
        for c in self.conns.values_mut() {
            if c.unsent() > limit && !c.dead {
                output_disconnect(
                    &self.sh,
                    c,
                    "its unsent replies passed client_output_limit_bytes",
                );
                c.dead = true;
                c.out.clear();
                c.out_pos = 0;
            }
        }
    }

    /// Sends what every connection has pending, as far as its socket takes it.
    fn send_all(&mut self) {
        for c in self.conns.values_mut() {
            while c.out_pos < c.out.len() && !c.dead {
                match c.stream.write(&c.out[c.out_pos..]) {
                    Ok(0) => c.dead = true,
                    Ok(n) => {
                        c.out_pos += n;
                        c.last = Instant::now();
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(client = c.session.id(), error = %e, "write failed");
                        c.dead = true;
                    }
                }
            }
            if c.out_pos == c.out.len() && c.out_pos > 0 {
                c.out.clear();
                c.out_pos = 0;
                if c.out.capacity() > 4 * OUT_BYTES_MAX {
                    c.out.shrink_to(CHUNK_BYTES);
                }
            } else if c.out_pos >= OUT_BYTES_MAX {
                // A client that reads slowly but never all: what it took is dropped, so
                // the buffer holds only what is unsent.
                c.out.drain(..c.out_pos);
                c.out_pos = 0;
            }
        }
    }

    /// Closes the connections that are done: errors, QUIT or end of input once the replies
    /// are out, and every connection once stopping (after its replies, or [`DRAIN`]).
    fn reap(&mut self, stopping: bool) {
        let drain_over = self.stopping_since.is_some_and(|t| t.elapsed() >= DRAIN);
        let gone: Vec<usize> = self
            .conns
            .iter_mut()
            .filter_map(|(&t, c)| {
                if c.eof && !c.dirty && !c.waiting {
                    c.close = true;
                }
                let flushed = c.unsent() == 0;
                let finished = (!c.dirty || c.close) && !c.waiting;
                let close = c.dead
                    || (c.close && flushed)
                    || (stopping && ((flushed && finished) || drain_over));
                close.then_some(t)
            })
            .collect();
        for t in gone {
            self.close(t);
        }
    }

    /// Closes clients idle longer than the idle timeout.
    fn sweep_idle(&mut self) {
        let Some(idle) = self.sh.cfg().idle_timeout() else {
            return;
        };
        let gone: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.waiting && c.last.elapsed() >= idle)
            .map(|(&t, _)| t)
            .collect();
        for t in gone {
            if let Some(c) = self.conns.get(&t) {
                if c.unsent() > 0 {
                    output_disconnect(
                        &self.sh,
                        c,
                        "it has not read its replies for the idle timeout",
                    );
                } else {
                    tracing::debug!(client = c.session.id(), "idle client closed");
                }
            }
            self.close(t);
        }
    }

    fn close(&mut self, token: usize) {
        if let Some(mut c) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            drop(c);
            self.sh.conn_closed();
        }
    }
}

/// Logs and counts a client disconnected for its unsent replies.
fn output_disconnect(sh: &Shared, c: &Conn, why: &str) {
    sh.count_output_disconnect();
    tracing::warn!(
        event = "client_output_disconnect",
        client = c.session.id(),
        addr = ?c.peer,
        unsent_bytes = c.unsent(),
        limit = sh.cfg().client_output_limit_bytes,
        "client {} ({}) disconnected: {why} ({} bytes unsent)",
        c.session.id(),
        c.peer.map_or_else(|| "unknown address".to_owned(), |a| a.to_string()),
        c.unsent()
    );
}
