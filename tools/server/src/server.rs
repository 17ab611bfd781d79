//! The daemon around the engine: start-up (state file, database open), the listener, the
//! connection layer (`io = "threads"`: one thread per connection with blocking I/O, here;
//! `io = "events"`: epoll event loops, [`crate::events`]), the backup scheduler, and the
//! shutdown sequence.
//!
//! A connection thread reads whatever bytes are available, parses every complete request
//! in the buffer, executes them together ([`crate::exec::execute`]: consecutive writes go to
//! the engine as one `write_many`, one group commit) and answers them all with one write.
//!
//! Shutdown (first SIGTERM or SIGINT): state `stopping`, stop accepting, let every
//! connection finish the requests it has already read (up to 10 s), checkpoint, sync the
//! WAL, state `stopped`, exit 0. A second signal exits at once with status 1 (the WAL makes
//! that safe: every acknowledged write is in it).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_engine::{Config as DbConfig, Database};
use duplex_proto::{parse_request, Limits, Parsed};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::ServerConfig;
use crate::exec::{self, ConnState};
use crate::state::{self, now_ms, OpState, StateRecord, StateTable};
use crate::Error;

/// Number of key stripes for conditional writes (see [`crate::exec`]).
pub const STRIPES: usize = 1024;
/// Most live SCAN cursors; the oldest is dropped beyond this.
pub const MAX_CURSORS: usize = 10_000;
/// How long an unused SCAN cursor lives.
pub const CURSOR_TTL: Duration = Duration::from_secs(600);
/// How often blocked threads look at the shutdown flag.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// What is known about the last backup, for INFO.
#[derive(Debug, Clone, Default)]
pub struct BackupInfo {
    /// Backups completed since start.
    pub taken: u64,
    /// Backups failed since start.
    pub failed: u64,
    /// Directory of the last completed backup.
    pub last_dir: Option<PathBuf>,
    /// When it completed, Unix ms.
    pub last_ms: u64,
    /// Last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// SCAN cursors: id -> (last key returned, last use).
#[derive(Debug, Default)]
pub struct Cursors {
    /// Live cursors.
    pub map: HashMap<u64, (Vec<u8>, Instant)>,
    /// Next id to hand out.
    pub next: u64,
}

/// State shared by every thread of the daemon.
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub db: Database,
    /// The configuration in force.
    pub cfg: ServerConfig,
    /// Protocol limits.
    pub limits: Limits,
    /// The operation state table.
    pub state: StateTable,
    /// Key stripes: plain writes take them shared, conditional writes and transactions
    /// exclusive, always in ascending order.
    pub stripes: Box<[RwLock<()>]>,
    /// SCAN cursors.
    pub cursors: Mutex<Cursors>,
    /// Connected clients.
    pub clients: AtomicUsize,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Commands processed since start.
    pub total_commands: AtomicU64,
    /// Connections refused at max_clients.
    pub rejected_connections: AtomicU64,
    /// Client ids.
    pub next_client_id: AtomicU64,
    /// Set by the first signal.
    pub shutdown: AtomicBool,
    /// Start time.
    pub started: Instant,
    /// One backup at a time; last backup info.
    pub backups: Mutex<BackupInfo>,
    backup_running: Mutex<()>,
    /// Address actually bound.
    pub addr: SocketAddr,
    conns_done: Condvar,
    conns_lock: Mutex<()>,
}

impl Shared {
    /// Records an engine error met on the write path: a poisoned or failing WAL or store
    /// moves the server to `failed` (writes refused from then on).
    pub fn note_write_error(&self, e: &duplex_engine::Error) {
        if e.is_fatal() && self.state.get().state != OpState::Failed {
            tracing::error!(event = "failed", error = %e, "write path failed; refusing writes");
            let _ = self.state.set(OpState::Failed, false);
        }
    }

    /// A connection admitted by the accept loop has closed: one client fewer, and the
    /// shutdown sequence (waiting for the clients to finish) is told.
    pub(crate) fn conn_closed(&self) {
        self.clients.fetch_sub(1, Ordering::SeqCst);
        let _g = self.conns_lock.lock();
        self.conns_done.notify_all();
    }

    /// Takes a backup into `backup_dir/<name>` (a timestamp if `name` is `None`), then
    /// applies retention. State `backing-up` meanwhile (if it was `running`).
    pub fn backup(&self, name: Option<&str>) -> Result<duplex_engine::BackupReport, String> {
        let Some(_one) = self.backup_running.try_lock() else {
            return Err("a backup is already running".into());
        };
        let root = &self.cfg.backup_dir;
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create backup directory {}: {e}", root.display()))?;
        let dest = match name {
            Some(n) => {
                if n.is_empty()
                    || n.contains('/')
                    || n.contains('\\')
                    || n.starts_with('.')
                    || n.ends_with(".tmp")
                {
                    return Err(format!("backup name {n:?} must be a plain directory name"));
                }
                root.join(n)
            }
            None => unique_dir(root, &timestamp_name(now_ms())),
        };
        if dest.exists() {
            return Err(format!("{} already exists", dest.display()));
        }
        let moved = self.state.transition(OpState::Running, OpState::BackingUp);
        tracing::info!(event = "backup_start", dir = %dest.display(), "backup started");
        let res = self.db.backup(&dest, None);
        if moved {
            self.state.transition(OpState::BackingUp, OpState::Running);
        }
        let mut info = self.backups.lock();
        match res {
            Ok(rep) => {
                info.taken += 1;
                info.last_dir = Some(rep.dir.clone());
                info.last_ms = now_ms();
                info.last_error = None;
                tracing::info!(event = "backup_done", dir = %rep.dir.display(), bytes = rep.bytes_copied, seconds = rep.seconds, "backup completed");
                drop(info);
                match duplex_engine::apply_retention(
                    &duplex_wal::StdStorage,
                    root,
                    self.cfg.archive(),
                    self.cfg.keep_backups,
                ) {
                    Ok(r) => tracing::info!(
                        event = "retention",
                        backups_removed = r.backups_removed.len(),
                        segments_removed = r.segments_removed.len(),
                        "retention applied"
                    ),
                    Err(e) => {
                        tracing::warn!(event = "retention_failed", error = %e, "retention failed")
                    }
                }
                Ok(rep)
            }
            Err(e) => {
                info.failed += 1;
                info.last_error = Some(e.to_string());
                tracing::error!(event = "backup_failed", error = %e, "backup failed");
                Err(e.to_string())
            }
        }
    }
}

/// `name`, or `name-2`, `name-3`, ... whichever does not exist under `root`.
fn unique_dir(root: &Path, name: &str) -> PathBuf {
    let mut p = root.join(name);
    let mut i = 2;
    while p.exists() {
        p = root.join(format!("{name}-{i}"));
        i += 1;
    }
    p
}

/// `YYYYMMDDTHHMMSS.mmmZ` (UTC) for Unix milliseconds.
pub fn timestamp_name(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Opens everything and serves until a signal; returns once stopped cleanly.
pub fn run(cfg: ServerConfig) -> Result<(), Error> {
    cfg.validate()?;
    let sync = cfg.sync_policy()?;
    std::fs::create_dir_all(&cfg.data).map_err(|e| Error::Io {
        op: "create data directory",
        path: cfg.data.clone(),
        source: e,
    })?;
    if let Some(a) = cfg.archive() {
        std::fs::create_dir_all(a).map_err(|e| Error::Io {
            op: "create archive directory",
            path: a.to_path_buf(),
            source: e,
        })?;
    }
    let prev = state::load(&cfg.data)?;
    let epoch = prev.map_or(1, |p| p.epoch.max(1));
    match prev {
        None => {
            tracing::info!(event = "fresh", data = %cfg.data.display(), "no state file: new data directory")
        }
        Some(p) if p.state == OpState::Stopped => tracing::info!(
            event = "previous_state",
            state = p.state.name(),
            epoch = p.epoch,
            "previous run stopped cleanly"
        ),
        Some(p) => tracing::warn!(
            event = "previous_state",
            state = p.state.name(),
            epoch = p.epoch,
            "previous run did not stop cleanly; recovering from the WAL"
        ),
    }
    let table = StateTable::new(
        &cfg.data,
        StateRecord {
            state: OpState::Starting,
            epoch,
            node_id: cfg.node_id,
            updated_ms: now_ms(),
        },
    )?;
    tracing::info!(event = "opening", data = %cfg.data.display(), sync = %cfg.sync, node_id = cfg.node_id, "opening the database");
    let t0 = Instant::now();
    let db = match Database::open(
        cfg.data.clone(),
        DbConfig {
            node_id: cfg.node_id,
            sync,
            archive_dir: cfg.archive().map(Path::to_path_buf),
            ..DbConfig::default()
        },
    ) {
        Ok(db) => db,
        Err(e) => {
            let _ = table.set(OpState::Failed, false);
            return Err(e.into());
        }
    };
    let st = db.stats();
    tracing::info!(
        event = "opened",
        last_lsn = st.last_lsn,
        checkpoint_lsn = st.checkpoint_lsn,
        ms = t0.elapsed().as_millis() as u64,
        "database open"
    );

    let listener = TcpListener::bind((cfg.bind.as_str(), cfg.port)).map_err(Error::Net)?;
    let addr = listener.local_addr().map_err(Error::Net)?;
    let shared = Arc::new(Shared {
        db,
        limits: cfg.limits(),
        state: table,
        stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        cursors: Mutex::new(Cursors {
            map: HashMap::new(),
            next: (now_ms() & 0xffff_ffff) | 1,
        }),
        clients: AtomicUsize::new(0),
        total_connections: AtomicU64::new(0),
        total_commands: AtomicU64::new(0),
        rejected_connections: AtomicU64::new(0),
        next_client_id: AtomicU64::new(1),
        shutdown: AtomicBool::new(false),
        started: Instant::now(),
        backups: Mutex::new(BackupInfo::default()),
        backup_running: Mutex::new(()),
        addr,
        conns_done: Condvar::new(),
        conns_lock: Mutex::new(()),
        cfg,
    });
    let next = if prev.is_some_and(|p| p.state == OpState::Fenced) {
        tracing::warn!(event = "fenced", "the server was fenced before it stopped; it stays fenced (DUPLEX.UNFENCE to serve writes)");
        OpState::Fenced
    } else {
        OpState::Running
    };
    shared.state.set(next, false)?;

    spawn_signal_thread(&shared)?;
    if shared.cfg.backup_interval_secs > 0 {
        let s = shared.clone();
        std::thread::Builder::new()
            .name("backup-scheduler".into())
            .spawn(move || backup_scheduler(&s))
            .map_err(Error::Net)?;
    }
    tracing::info!(event = "listening", addr = %addr, pid = std::process::id(), io = %shared.cfg.io, "duplexd ready");
    if shared.cfg.io == "events" {
        let mut pool = crate::events::Pool::start(&shared, shared.cfg.io_threads)?;
        accept_loop(&shared, &listener, &mut |s, stream| {
            pool.hand_over(s, stream)
        });
    } else {
        accept_loop(&shared, &listener, &mut spawn_conn_thread);
    }
    drop(listener);
    tracing::info!(
        event = "draining",
        clients = shared.clients.load(Ordering::SeqCst),
        "stopped accepting; finishing in-flight requests"
    );
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut g = shared.conns_lock.lock();
        while shared.clients.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            shared.conns_done.wait_for(&mut g, POLL);
        }
    }
    let res = shared
        .db
        .checkpoint()
        .and_then(|()| shared.db.wal().sync().map(|_| ()).map_err(Into::into));
    match &res {
        Ok(()) => tracing::info!(
            event = "checkpointed",
            last_lsn = shared.db.stats().last_lsn,
            "final checkpoint done"
        ),
        Err(e) => {
            tracing::error!(event = "checkpoint_failed", error = %e, "final checkpoint failed (the WAL still holds every acknowledged write)")
        }
    }
    shared.state.set(
        if res.is_ok() {
            OpState::Stopped
        } else {
            OpState::Failed
        },
        false,
    )?;
    tracing::info!(event = "stopped", "duplexd stopped");
    res.map_err(Into::into)
}

fn spawn_signal_thread(shared: &Arc<Shared>) -> Result<(), Error> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(Error::Net)?;
    let s = shared.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if s.shutdown.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        event = "exit_now",
                        signal = sig,
                        "second signal: exiting at once"
                    );
                    std::process::exit(1);
                }
                tracing::info!(
                    event = "shutdown",
                    signal = sig,
                    "signal received; stopping"
                );
                let _ = s.state.set(OpState::Stopping, false);
                // Wake the blocking accept.
                let _ = TcpStream::connect_timeout(&wake_addr(s.addr), Duration::from_secs(1));
            }
        })
        .map_err(Error::Net)?;
    Ok(())
}

/// The bound address, with an unspecified IP replaced by loopback (to connect to ourselves).
fn wake_addr(mut a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

fn backup_scheduler(s: &Shared) {
    let every = Duration::from_secs(s.cfg.backup_interval_secs);
    let mut next = Instant::now() + every;
    while !s.shutdown.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            let _ = s.backup(None);
            next = Instant::now() + every;
        }
        std::thread::sleep(POLL.min(every));
    }
}

/// Accepts until shutdown; counts each admitted client in `clients` and hands it to
/// `dispatch`, which owns it from then on (and calls [`Shared::conn_closed`] once done).
fn accept_loop(
    shared: &Arc<Shared>,
    listener: &TcpListener,
    dispatch: &mut dyn FnMut(&Arc<Shared>, TcpStream),
) {
    for conn in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(event = "accept_failed", error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.total_connections.fetch_add(1, Ordering::Relaxed);
        if shared.clients.load(Ordering::SeqCst) >= shared.cfg.max_clients {
            shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            continue;
        }
        shared.clients.fetch_add(1, Ordering::SeqCst);
        dispatch(shared, stream);
    }
}

/// Serves `stream` on a thread of its own (`io = "threads"`).
fn spawn_conn_thread(shared: &Arc<Shared>, stream: TcpStream) {
    let s = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("conn".into())
        .stack_size(256 << 10)
        .spawn(move || {
            let peer = stream.peer_addr().ok();
            if let Err(e) = serve(&s, stream) {
                tracing::debug!(peer = ?peer, error = %e, "connection ended with an error");
            }
            s.conn_closed();
        });
    if let Err(e) = spawned {
        shared.clients.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(event = "spawn_failed", error = %e, "cannot start a connection thread");
    }
}

/// Most reply bytes gathered before they are written out mid-pipeline.
pub(crate) const MAX_OUT: usize = 1 << 20;
/// Read chunk.
pub(crate) const CHUNK: usize = 16 << 10;
/// Most requests executed together.
pub(crate) const MAX_GROUP: usize = 1024;

/// Serves one connection until it closes, QUITs, errs, idles out or the server stops.
fn serve(shared: &Shared, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    let mut conn = ConnState::new(
        shared.next_client_id.fetch_add(1, Ordering::Relaxed),
        shared.cfg.requirepass.is_none(),
    );
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut idle_since = Instant::now();
    let idle = shared.cfg.idle_timeout();
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return Ok(());
        }
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
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
        // Parse and execute every complete request in the buffer.
        let mut pos = 0;
        let mut close = false;
        loop {
            let mut reqs: Vec<Vec<&[u8]>> = Vec::new();
            let mut proto_err = None;
            while reqs.len() < MAX_GROUP {
                match parse_request(&buf[pos..], &shared.limits) {
                    Ok(Parsed::Incomplete) => break,
                    Ok(Parsed::Request { args, consumed }) => {
                        pos += consumed;
                        if !args.is_empty() {
                            reqs.push(args);
                        }
                    }
                    Err(e) => {
                        proto_err = Some(e);
                        break;
                    }
                }
            }
            let more = reqs.len() == MAX_GROUP;
            if !reqs.is_empty() {
                shared
                    .total_commands
                    .fetch_add(reqs.len() as u64, Ordering::Relaxed);
                close |= exec::execute(shared, &mut conn, &reqs, &mut out);
            }
            if let Some(e) = proto_err {
                duplex_proto::error(&mut out, &e.reply_text());
                tracing::debug!(client = conn.id, error = %e, "protocol error; closing");
                close = true;
            }
            if (close || !more || out.len() >= MAX_OUT) && !out.is_empty() {
                stream.write_all(&out)?;
                out.clear();
            }
            if close || !more {
                break;
            }
        }
        if close {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
        buf.drain(..pos);
        if buf.capacity() > 4 * CHUNK && buf.len() < CHUNK {
            buf.shrink_to(CHUNK);
        }
    }
}
