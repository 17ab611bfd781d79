//! A fault-injecting TCP proxy for the replication tests: it listens on a free loopback port
//! and forwards every connection to one target, and a [`Proxy`] handle injects the faults a
//! network between two servers has, per direction: delay, a partition and its heal, a cut
//! after N more bytes (in the middle of a frame), dropped connections, a chunk sent twice,
//! a chunk of an earlier connection replayed on the next one. It counts what it forwarded.
//!
//! Threads and `std::net` only: one accept thread, and per connection one pump thread per
//! direction. A "chunk" is what one `read` returned; the proxy knows nothing of frames.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// Largest chunk one read takes.
const CHUNK: usize = 16 * 1024;

/// A direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the connecting client to the target.
    ToTarget,
    /// From the target back to the client.
    ToClient,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ToTarget => 0,
            Dir::ToClient => 1,
        }
    }
}

/// One direction's faults and counters.
#[derive(Debug, Default)]
struct DirState {
    /// Every chunk waits this long before it is written.
    delay_ms: u64,
    /// Bytes still forwarded before the connection carrying them is cut.
    cut_after: Option<u64>,
    /// Send the next chunk twice.
    duplicate_next: bool,
    /// On the next connection, after this many chunks, send `last_chunk` once more.
    replay_after: Option<u64>,
    /// The last chunk forwarded, with the connection it went over.
    last_chunk: Option<(u64, Vec<u8>)>,
    /// Bytes forwarded.
    bytes: u64,
    /// Chunks forwarded.
    chunks: u64,
    /// Connections cut by `cut_after`.
    cuts: u64,
}

/// What the handle and the threads share.
#[derive(Debug, Default)]
struct State {
    dirs: [DirState; 2],
    partitioned: bool,
    /// Open connections: id and both sockets (to shut them down).
    conns: Vec<(u64, TcpStream, TcpStream)>,
    next_id: u64,
    accepted: u64,
}

#[derive(Debug)]
struct Inner {
    target: SocketAddr,
    state: Mutex<State>,
    healed: Condvar,
    stop: AtomicBool,
    /// Connections refused because the target could not be reached.
    target_failures: AtomicU64,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Shuts both sockets of every open connection (the pumps see it and end).
    fn close_all(st: &mut State) {
        for (_, a, b) in st.conns.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    fn close(&self, id: u64) {
        let mut st = self.lock();
        if let Some(i) = st.conns.iter().position(|c| c.0 == id) {
            let (_, a, b) = st.conns.swap_remove(i);
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

/// A running proxy: listens on `127.0.0.1:<port()>` and forwards to its target until
/// dropped. Faults apply from the moment they are set.
#[derive(Debug)]
pub struct Proxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `target`.
    ///
    /// # Errors
    /// If no loopback port can be bound or the accept thread cannot start.
    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            target,
            state: Mutex::new(State::default()),
            healed: Condvar::new(),
            stop: AtomicBool::new(false),
            target_failures: AtomicU64::new(0),
        });
        let i = inner.clone();
        thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(&i, &listener))?;
        Ok(Proxy { inner, addr })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:<port>`, for a `--peer` flag.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Every chunk in `dir` waits `ms` before it is written (0: none). Order is kept.
    pub fn set_delay(&self, dir: Dir, ms: u64) {
        self.inner.lock().dirs[dir.index()].delay_ms = ms;
    }

    /// Cuts the network: every open connection is closed, and new connections are accepted
    /// but held (nothing reaches the target, nothing comes back) until [`Proxy::heal`].
    pub fn partition(&self) {
        let mut st = self.inner.lock();
        st.partitioned = true;
        Inner::close_all(&mut st);
    }

    /// Ends a partition: held connections go through to the target.
    pub fn heal(&self) {
        self.inner.lock().partitioned = false;
        self.inner.healed.notify_all();
    }

    /// Whether a partition is on.
    pub fn is_partitioned(&self) -> bool {
        self.inner.lock().partitioned
    }

    /// After `bytes` more bytes are forwarded in `dir` (over any connection), the connection
    /// carrying the last of them is closed at once: a chunk that crosses the mark is cut
    /// there, so the receiver gets a partial frame. Once; then forwarding goes on normally
    /// for new connections.
    pub fn cut_after(&self, dir: Dir, bytes: u64) {
        self.inner.lock().dirs[dir.index()].cut_after = Some(bytes);
    }

    /// Closes every open connection now (new ones go through).
    pub fn drop_connections(&self) {
        Inner::close_all(&mut self.inner.lock());
    }

    /// The next chunk forwarded in `dir` is written twice, back to back, on its connection.
    pub fn duplicate_next(&self, dir: Dir) {
        self.inner.lock().dirs[dir.index()].duplicate_next = true;
    }

    /// On the next connection accepted from now, once `after_chunks` chunks have gone in
    /// `dir`, the last chunk forwarded in `dir` on an earlier connection is written once
    /// more (a frame resent on reconnect). Nothing if no earlier chunk exists.
    pub fn replay_on_reconnect(&self, dir: Dir, after_chunks: u64) {
        self.inner.lock().dirs[dir.index()].replay_after = Some(after_chunks);
    }

    /// Bytes forwarded in `dir` so far (duplicates and replays included).
    pub fn bytes(&self, dir: Dir) -> u64 {
        self.inner.lock().dirs[dir.index()].bytes
    }

    /// Chunks forwarded in `dir` so far.
    pub fn chunks(&self, dir: Dir) -> u64 {
        self.inner.lock().dirs[dir.index()].chunks
    }

    /// Connections `cut_after` closed in `dir`.
    pub fn cuts(&self, dir: Dir) -> u64 {
        self.inner.lock().dirs[dir.index()].cuts
    }

    /// Connections accepted so far (held ones included).
    pub fn accepted(&self) -> u64 {
        self.inner.lock().accepted
    }

    /// Connections open through to the target now.
    pub fn open_connections(&self) -> usize {
        self.inner.lock().conns.len()
    }

    /// Connections closed at once because the target refused them.
    pub fn target_failures(&self) -> u64 {
        self.inner.target_failures.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        {
            let mut st = self.inner.lock();
            st.partitioned = false;
            Inner::close_all(&mut st);
        }
        self.inner.healed.notify_all();
        // Wake the accept thread so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener) {
    for conn in listener.incoming() {
        if inner.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = conn else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let i = inner.clone();
        let id = {
            let mut st = inner.lock();
            st.accepted += 1;
            st.next_id += 1;
            st.next_id
        };
        let spawned = thread::Builder::new()
            .name(format!("proxy-conn-{id}"))
            .spawn(move || connect_through(&i, id, client));
        if spawned.is_err() {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Holds a new connection while partitioned, then connects it to the target and starts its
/// two pumps.
fn connect_through(inner: &Arc<Inner>, id: u64, client: TcpStream) {
    {
        let mut st = inner.lock();
        while st.partitioned && !inner.stop.load(Ordering::Relaxed) {
            st = inner
                .healed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
    if inner.stop.load(Ordering::Relaxed) {
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&inner.target, Duration::from_secs(2)) else {
        inner.target_failures.fetch_add(1, Ordering::Relaxed);
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    );
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    let replays;
    {
        let mut st = inner.lock();
        // A partition that began while this one was connecting closes it too.
        if st.partitioned {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        st.conns.push((id, c3, u3));
        replays = [Dir::ToTarget, Dir::ToClient].map(|d| {
            let ds = &mut st.dirs[d.index()];
            let after = ds.replay_after.take()?;
            let (_, chunk) = ds.last_chunk.clone()?;
            Some((after, chunk))
        });
    }
    let [up_replay, down_replay] = replays;
    let i = inner.clone();
    let ends = Arc::new(AtomicU64::new(0));
    let e = ends.clone();
    let up = thread::Builder::new()
        .name(format!("proxy-up-{id}"))
        .spawn(move || pump(&i, (id, &e), Dir::ToTarget, client, u2, up_replay));
    if up.is_err() {
        inner.close(id);
        return;
    }
    pump(inner, (id, &ends), Dir::ToClient, upstream, c2, down_replay);
}

/// What to write for one chunk read, decided under the lock.
struct Plan {
    delay_ms: u64,
    /// How much of the chunk to write (less than all when a cut falls inside it).
    take: usize,
    /// Write it twice.
    twice: bool,
    /// Close the connection after writing.
    cut: bool,
}

fn plan(inner: &Inner, id: u64, dir: Dir, chunk: &[u8]) -> Plan {
    let mut st = inner.lock();
    let d = &mut st.dirs[dir.index()];
    let mut p = Plan {
        delay_ms: d.delay_ms,
        take: chunk.len(),
        twice: std::mem::take(&mut d.duplicate_next),
        cut: false,
    };
    if let Some(left) = d.cut_after {
        let n = chunk.len() as u64;
        if n >= left {
            p.take = usize::try_from(left).unwrap_or(chunk.len());
            p.cut = true;
            p.twice = false;
            d.cut_after = None;
            d.cuts += 1;
        } else {
            d.cut_after = Some(left - n);
        }
    }
    let sent = &chunk[..p.take];
    d.bytes += sent.len() as u64 * if p.twice { 2 } else { 1 };
    d.chunks += 1;
    if !sent.is_empty() {
        d.last_chunk = Some((id, sent.to_vec()));
    }
    p
}

/// Forwards `from` to `to` until `from` closes, applying the faults set for `dir`. An end
/// of stream is passed on as one (a half-close); the connection leaves the proxy's list once
/// both directions have ended. A cut or a failed write closes both directions at once.
fn pump(
    inner: &Inner,
    (id, ends): (u64, &AtomicU64),
    dir: Dir,
    mut from: TcpStream,
    mut to: TcpStream,
    mut replay: Option<(u64, Vec<u8>)>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut chunks = 0u64;
    loop {
        if let Some((_, chunk)) = replay.take_if(|r| r.0 <= chunks) {
            inner.lock().dirs[dir.index()].bytes += chunk.len() as u64;
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                if ends.fetch_add(1, Ordering::Relaxed) == 1 {
                    inner.close(id);
                }
                return;
            }
            Err(_) => break,
            Ok(n) => n,
        };
        chunks += 1;
        let p = plan(inner, id, dir, &buf[..n]);
        if p.delay_ms > 0 {
            thread::sleep(Duration::from_millis(p.delay_ms));
        }
        let mut ok = to.write_all(&buf[..p.take]).is_ok();
        if ok && p.twice {
            ok = to.write_all(&buf[..p.take]).is_ok();
        }
        if !ok || p.cut {
            break;
        }
    }
    inner.close(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server that also records every byte it received, per connection.
    struct Echo {
        addr: SocketAddr,
        got: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Echo {
        fn start() -> Echo {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
            let g = got.clone();
            thread::spawn(move || {
                for c in l.incoming() {
                    let Ok(mut c) = c else { return };
                    let g = g.clone();
                    thread::spawn(move || {
                        let slot = {
                            let mut v = g.lock().unwrap();
                            v.push(Vec::new());
                            v.len() - 1
                        };
                        let mut b = [0u8; 4096];
                        while let Ok(n @ 1..) = c.read(&mut b) {
                            g.lock().unwrap()[slot].extend_from_slice(&b[..n]);
                            if c.write_all(&b[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            Echo { addr, got }
        }

        /// What connection `i` delivered to the target.
        fn got(&self, i: usize) -> Vec<u8> {
            self.got.lock().unwrap().get(i).cloned().unwrap_or_default()
        }

        fn connections(&self) -> usize {
            self.got.lock().unwrap().len()
        }
    }

    fn connect(p: &Proxy) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", p.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        s.read_exact(&mut b).unwrap();
        b
    }

    /// Reads until the proxy closes the connection (a reset counts as closed).
    fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        loop {
            match s.read(&mut b) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("the connection stayed open: {e}"),
            }
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn forwards_both_ways_and_counts() {
        let echo = Echo::start();
        let p = Proxy::start(echo.addr).unwrap();
        let mut s = connect(&p);
        s.write_all(b"hello").unwrap();
        assert_eq!(read_n(&mut s, 5), b"hello");
        s.write_all(b" world").unwrap();
        assert_eq!(read_n(&mut s, 6), b" world");
        assert_eq!(echo.got(0), b"hello world");
        assert_eq!(p.bytes(Dir::ToTarget), 11);
        assert_eq!(p.bytes(Dir::ToClient), 11);
        assert_eq!(p.accepted(), 1);
        assert_eq!(p.open_connections(), 1);
        drop(s);
        wait_for("the connection to leave", || p.open_connections() == 0);
    }

    #[test]
    fn delay_holds_each_chunk_in_its_direction() {
        let echo = Echo::start();
        let p = Proxy::start(echo.addr).unwrap();
        p.set_delay(Dir::ToClient, 150);
        let mut s = connect(&p);
        let t = Instant::now();
        s.write_all(b"abc").unwrap();
        assert_eq!(read_n(&mut s, 3), b"abc");
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        p.set_delay(Dir::ToClient, 0);
        let t = Instant::now();
        s.write_all(b"de").unwrap();
        assert_eq!(read_n(&mut s, 2), b"de");
        assert!(
            t.elapsed() < Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn cut_after_closes_inside_a_chunk_then_new_connections_work() {
        let echo = Echo::start();
        let p = Proxy::start(echo.addr).unwrap();
        let mut s = connect(&p);
        s.write_all(b"12").unwrap();
        assert_eq!(read_n(&mut s, 2), b"12");
        p.cut_after(Dir::ToTarget, 3);
        s.write_all(b"abcdef").unwrap();
        let back = read_to_close(&mut s);
        assert!(b"abc".starts_with(&back), "{back:?}");
        wait_for("the cut bytes at the target", || echo.got(0) == b"12abc");
        assert_eq!(p.cuts(Dir::ToTarget), 1);
        assert_eq!(p.open_connections(), 0);
        let mut s = connect(&p);
        s.write_all(b"whole").unwrap();
        assert_eq!(read_n(&mut s, 5), b"whole");
        assert_eq!(echo.got(1), b"whole");
    }

    #[test]
    fn partition_closes_and_holds_until_heal() {
        let echo = Echo::start();
        let p = Proxy::start(echo.addr).unwrap();
        let mut before = connect(&p);
        before.write_all(b"a").unwrap();
        assert_eq!(read_n(&mut before, 1), b"a");
        p.partition();
        assert!(p.is_partitioned());
        assert_eq!(read_to_close(&mut before), b"");
        let mut held = connect(&p);
        held.write_all(b"held").unwrap();
        held.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 8];
        assert!(
            held.read(&mut b).is_err(),
            "a reply came through the partition"
        );
        assert_eq!(echo.connections(), 1, "the target saw a connection");
        p.heal();
        held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(read_n(&mut held, 4), b"held");
        assert_eq!(echo.got(1), b"held");
    }

    #[test]
    fn drop_connections_closes_the_open_ones_only() {
        let echo = Echo::start();
        let p = Proxy::start(echo.addr).unwrap();
        let mut s = connect(&p);
        s.write_all(b"x").unwrap();
        assert_eq!(read_n(&mut s, 1), b"x");
        p.drop_connections();
        assert_eq!(read_to_close(&mut s), b"");
        let mut s = connect(&p);
        s.write_all(b"y").unwrap();
        assert_eq!(read_n(&mut s, 1), b"y");
    }

    #[test]
    fn duplicate_next_sends_one_chunk_twice() {
        let echo = Echo::start();
        let p = Proxy::start(echo.addr).unwrap();
        let mut s = connect(&p);
        s.write_all(b"a").unwrap();
        assert_eq!(read_n(&mut s, 1), b"a");
        p.duplicate_next(Dir::ToTarget);
        s.write_all(b"ping").unwrap();
        assert_eq!(read_n(&mut s, 8), b"pingping");
        s.write_all(b"!").unwrap();
        assert_eq!(read_n(&mut s, 1), b"!");
        assert_eq!(echo.got(0), b"apingping!");
        assert_eq!(p.bytes(Dir::ToTarget), 10);
    }

    #[test]
    fn replay_on_reconnect_resends_the_last_chunk_of_the_previous_connection() {
        let echo = Echo::start();
        let p = Proxy::start(echo.addr).unwrap();
        let mut s = connect(&p);
        s.write_all(b"one").unwrap();
        assert_eq!(read_n(&mut s, 3), b"one");
        drop(s);
        wait_for("the first connection to end", || p.open_connections() == 0);
        p.replay_on_reconnect(Dir::ToTarget, 1);
        let mut s = connect(&p);
        s.write_all(b"two").unwrap();
        assert_eq!(read_n(&mut s, 6), b"twoone");
        assert_eq!(echo.got(1), b"twoone");
        // Once only.
        let mut s = connect(&p);
        s.write_all(b"three").unwrap();
        assert_eq!(read_n(&mut s, 5), b"three");
    }
}
