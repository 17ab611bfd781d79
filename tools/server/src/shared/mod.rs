//! The state every thread of the daemon shares, behind methods: the database, the
//! configuration in force, the operation state table, the key stripes, the SCAN cursors,
//! the backup service and the counters INFO reports. Nothing here knows about sockets or
//! RESP; the layers above ask, this answers.
//!
//! - [`Stripes`]: the key locks of conditional writes and transactions.
//! - [`Cursors`]: SCAN cursors.
//! - [`BackupInfo`]: what the backups taken since start did ([`Shared::backup`] takes one).
//! - [`PeerTable`]: what the peer links report ([`Shared::peers`]).
//! - [`WriteHold`]: the short write hold of a rebuild ([`Shared::write_hold`]).

mod backup;
pub mod clients;
mod cursors;
mod drill;
mod hold;
mod peers;
mod stripes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_engine::{BackupReport, Database};
use duplex_proto::Limits;
use duplex_wal::Clock;
use parking_lot::{Condvar, Mutex, MutexGuard};

use backup::Backups;
pub use backup::{newest_backup, timestamp_name, BackupBase, BackupInfo};
pub use cursors::Cursors;
pub use drill::{chain_of, DrillInfo, DRILL_DIR};
pub use hold::{Entered, HoldReport, WriteHold};
pub use peers::{ClusterSecret, InboundStatus, LagHistogram, LinkState, PeerStatus, PeerTable};
pub use stripes::{StripeGuard, Stripes};

use crate::config::ServerConfig;
use crate::disks::Disks;
use crate::state::{OpState, StateTable};
use crate::Error;

/// Counters INFO reports, read with [`Shared::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Connected clients.
    pub clients: usize,
    /// Connections accepted since start.
    pub total_connections: u64,
    /// Commands processed since start.
    pub total_commands: u64,
    /// Connections refused at `max_clients`, or while the process was out of descriptors.
    pub rejected_connections: u64,
    /// Clients disconnected for their unsent replies: past `client_output_limit_bytes`, or
    /// not reading them for the idle timeout.
    pub output_disconnects: u64,
}

/// State shared by every thread of the daemon.
#[derive(Debug)]
pub struct Shared {
    db: Database,
    cfg: ServerConfig,
    limits: Limits,
    state: StateTable,
    clock: Arc<dyn Clock>,
    stripes: Stripes,
    cursors: Mutex<Cursors>,
    backups: Backups,
    addr: SocketAddr,
    started: Instant,
    shutdown: AtomicBool,
    /// Set once the clients drained and the peers were given what they wrote: the peer
    /// links stop then, not when the shutdown begins.
    links_stop: AtomicBool,
    clients: AtomicUsize,
    total_connections: AtomicU64,
    total_commands: AtomicU64,
    rejected_connections: AtomicU64,
    output_disconnects: AtomicU64,
    next_client_id: AtomicU64,
    conns_done: Condvar,
    conns_lock: Mutex<()>,
    failed_here: AtomicBool,
    disks: Mutex<Disks>,
    peers: PeerTable,
    write_hold: WriteHold,
    /// What the rebuild this server started with could not recover (INFO).
    rebuild_gap: Mutex<Option<crate::rebuild::RebuildGap>>,
    /// How the rebuild this server started with went, so far (INFO).
    rebuild_run: Mutex<Option<crate::rebuild::RebuildRun>>,
    /// The connected clients (CLIENT LIST).
    client_table: Arc<clients::ClientTable>,
    /// INFO's last `# Keyspace` lines: when counted, how long the count took, the lines.
    keyspace_info: Mutex<Option<(Instant, Duration, String)>>,
}

impl Shared {
    /// Records what the rebuild this server started with could not recover (INFO shows it).
    pub fn set_rebuild_gap(&self, gap: crate::rebuild::RebuildGap) {
        *self.rebuild_gap.lock() = Some(gap);
    }

    /// What the rebuild this server started with could not recover, if it was rebuilt.
    pub fn rebuild_gap(&self) -> Option<crate::rebuild::RebuildGap> {
        self.rebuild_gap.lock().clone()
    }

    /// Changes the record of the rebuild this server started with (created empty first).
    pub fn update_rebuild_run(&self, f: impl FnOnce(&mut crate::rebuild::RebuildRun)) {
        f(self.rebuild_run.lock().get_or_insert_with(Default::default));
    }

    /// How the rebuild this server started with went, if it was rebuilt (or resumed one).
    pub fn rebuild_run(&self) -> Option<crate::rebuild::RebuildRun> {
        self.rebuild_run.lock().clone()
    }

    /// The shared state of a daemon serving `db` on `addr`.
    pub fn new(
        db: Database,
        cfg: ServerConfig,
        state: StateTable,
        clock: Arc<dyn Clock>,
        addr: SocketAddr,
    ) -> Shared {
        let lineage = (cfg.node_id, db.wal().options().timeline);
        let backups = Backups::found_in(&cfg.backup_dir, lineage);
        Shared {
            limits: cfg.limits(),
            cursors: Mutex::new(Cursors::new(clock.now_ms() & 0xffff_ffff)),
            db,
            cfg,
            state,
            clock,
            stripes: Stripes::default(),
            backups,
            addr,
            started: Instant::now(),
            shutdown: AtomicBool::new(false),
            links_stop: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
            total_connections: AtomicU64::new(0),
            total_commands: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            output_disconnects: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            conns_done: Condvar::new(),
            conns_lock: Mutex::new(()),
            failed_here: AtomicBool::new(false),
            disks: Mutex::new(Disks::default()),
            rebuild_gap: Mutex::new(None),
            rebuild_run: Mutex::new(None),
            peers: PeerTable::default(),
            write_hold: WriteHold::default(),
            client_table: Arc::default(),
            keyspace_info: Mutex::new(None),
        }
    }

    /// INFO's `# Keyspace` lines: `count` runs (a walk over every key) unless lines counted
    /// less than ten times as long ago as their count took (one of 100 ms or more) are at
    /// hand: a monitor polling INFO costs at most about a tenth of one worker, and a small
    /// database is counted afresh every time.
    pub fn keyspace_info(&self, count: impl FnOnce() -> String) -> String {
        if let Some((at, took, lines)) = self.keyspace_info.lock().as_ref() {
            if *took >= Duration::from_millis(100) && at.elapsed() < *took * 10 {
                return lines.clone();
            }
        }
        let start = Instant::now();
        let lines = count();
        *self.keyspace_info.lock() = Some((Instant::now(), start.elapsed(), lines.clone()));
        lines
    }

    /// The connected clients (CLIENT LIST).
    pub fn client_table(&self) -> &Arc<clients::ClientTable> {
        &self.client_table
    }

    /// The write hold a rebuilt peer may ask for: every client write passes
    /// [`WriteHold::enter`].
    pub fn write_hold(&self) -> &WriteHold {
        &self.write_hold
    }

    /// What the peer links report.
    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The configuration in force.
    pub fn cfg(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The protocol limits requests are parsed with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The operation state table.
    pub fn state(&self) -> &StateTable {
        &self.state
    }

    /// The clock schedules and timestamps read.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The key stripes.
    pub fn stripes(&self) -> &Stripes {
        &self.stripes
    }

    /// The SCAN cursors (locked while the guard lives).
    pub fn cursors(&self) -> MutexGuard<'_, Cursors> {
        self.cursors.lock()
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How long the daemon has been serving.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The counters INFO reports.
    pub fn stats(&self) -> Counters {
        Counters {
            clients: self.clients.load(Ordering::Relaxed),
            total_connections: self.total_connections.load(Ordering::Relaxed),
            total_commands: self.total_commands.load(Ordering::Relaxed),
            rejected_connections: self.rejected_connections.load(Ordering::Relaxed),
            output_disconnects: self.output_disconnects.load(Ordering::Relaxed),
        }
    }

    /// Counts `n` commands processed.
    pub fn count_commands(&self, n: usize) {
        self.total_commands.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A fresh client id (CLIENT ID).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the shutdown sequence has begun.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Whether the peer links must stop: set by [`Shared::stop_links`] after the clients
    /// drained, so writes acknowledged while the server drains still reach the peers.
    pub fn links_stopping(&self) -> bool {
        self.links_stop.load(Ordering::SeqCst)
    }

    /// Tells the peer links to stop.
    pub fn stop_links(&self) {
        self.links_stop.store(true, Ordering::SeqCst);
    }

    /// Begins the shutdown sequence; returns whether it had already begun.
    pub fn begin_shutdown(&self) -> bool {
        self.shutdown.swap(true, Ordering::SeqCst)
    }

    /// Counts an accepted connection and admits it unless `max_clients` are connected.
    /// An admitted connection must end with [`Shared::conn_closed`].
    pub fn admit(&self) -> bool {
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        if self.clients.load(Ordering::SeqCst) >= self.cfg.max_clients {
            self.rejected_connections.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.clients.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Counts a connection accepted only to be refused, while the process was out of
    /// descriptors (it was never admitted).
    pub fn count_refused(&self) {
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        self.rejected_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a client disconnected for its unsent replies.
    pub fn count_output_disconnect(&self) {
        self.output_disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted connection has closed: one client fewer, and the shutdown sequence
    /// (waiting for the clients to finish) is told.
    pub fn conn_closed(&self) {
        self.clients.fetch_sub(1, Ordering::SeqCst);
        let _g = self.conns_lock.lock();
        self.conns_done.notify_all();
    }

    /// Waits until every admitted connection has closed or `timeout` has passed; returns
    /// how many are still open.
    pub fn wait_for_clients(&self, timeout: Duration, poll: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut g = self.conns_lock.lock();
        while self.clients.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            self.conns_done.wait_for(&mut g, poll);
        }
        self.clients.load(Ordering::SeqCst)
    }

    /// Records an engine error met on the write path: a poisoned or failing WAL or store
    /// moves the server to `failed` (writes refused from then on; a fenced server stays
    /// fenced, refusing them already).
    pub fn note_write_error(&self, e: &duplex_engine::Error) {
        if e.is_fatal() {
            self.note_failure();
            let serving = [
                OpState::Running,
                OpState::BackingUp,
                OpState::Stopping,
                OpState::Starting,
            ];
            if self.state.get().state != OpState::Failed {
                tracing::error!(event = "failed", error = %e, "write path failed; refusing writes");
            }
            let _ = self.state.move_to(&serving, OpState::Failed, false);
        }
    }

    /// Remembers that this process met a disk failure: `failed` cannot be lifted before a
    /// restart (the WAL or the store may be poisoned).
    pub fn note_failure(&self) {
        self.failed_here.store(true, Ordering::SeqCst);
    }

    /// Whether this process met a disk failure (see [`Shared::note_failure`]).
    pub fn failed_here(&self) -> bool {
        self.failed_here.load(Ordering::SeqCst)
    }

    /// Records what the start-up check of the disks found ([`crate::disks::check`]).
    pub fn set_disks(&self, d: Disks) {
        *self.disks.lock() = d;
    }

    /// Whether the archive and backups share the data's file system.
    pub fn disks(&self) -> Disks {
        *self.disks.lock()
    }

    /// Takes a backup into `backup_dir/<name>` (a UTC timestamp if `name` is `None`), then
    /// applies retention. State `backing-up` meanwhile (if it was `running`).
    pub fn backup(&self, name: Option<&str>, base: BackupBase) -> Result<BackupReport, Error> {
        self.backup_at(name, base, duplex_engine::BackupRate::Adaptive)
    }

    /// [`Shared::backup`] at the given pace (a rebuild's backup: `rebuild_backup_rate_mb`).
    pub fn backup_at(
        &self,
        name: Option<&str>,
        base: BackupBase,
        rate: duplex_engine::BackupRate,
    ) -> Result<BackupReport, Error> {
        let cx = backup::BackupCtx {
            db: &self.db,
            state: &self.state,
            cfg: &self.cfg,
            clock: &*self.clock,
            peer_floor: self.peer_floor(),
            rate,
        };
        self.backups.take(cx, name, base)
    }

    /// What backup retention must keep of this server's archive for its peers: the least
    /// LSN of this incarnation any `--peer` acknowledged (0 for a peer that holds none of
    /// it yet, or an earlier incarnation); `None` without peers.
    fn peer_floor(&self) -> Option<duplex_engine::PeerFloor> {
        let peers = self.peers().outbound();
        if peers.is_empty() {
            return None;
        }
        let inc = self.db.incarnation();
        let lsn = peers
            .iter()
            .map(|p| match duplex_engine::split_position(p.acked) {
                (i, lsn) if i == inc => lsn,
                _ => 0,
            })
            .min()
            .unwrap_or(0);
        Some(duplex_engine::PeerFloor {
            node: self.db.node_id(),
            timeline: inc,
            lsn,
            max_bytes: self.cfg.peer_retention_bytes,
        })
    }

    /// The backup service (object storage settings, INFO).
    pub fn backups(&self) -> &Backups {
        &self.backups
    }

    /// What is known about the restore drills of the backups taken since start.
    pub fn drill_info(&self) -> DrillInfo {
        self.backups.drill_info()
    }

    /// What is known about the backups (taken since start, or the newest found at start).
    pub fn backup_info(&self) -> BackupInfo {
        self.backups.info()
    }

    /// Records when the next scheduled backup is due (the scheduler, for INFO).
    pub fn set_next_backup_ms(&self, ms: u64) {
        self.backups.set_next_ms(ms);
    }

    /// When the next scheduled backup is due, Unix ms; `None` without a schedule.
    pub fn next_backup_ms(&self) -> Option<u64> {
        self.backups.next_ms()
    }
}

/// A `Shared` over a fresh database in `dir`, without sockets, for the unit tests of the
/// command and background modules: `clock` drives the database and the server; `cfg` may
/// change the defaults (its `data` is set to `dir/data`).
#[cfg(test)]
pub(crate) fn test_shared(
    dir: &std::path::Path,
    clock: Arc<duplex_wal::ManualClock>,
    cfg: ServerConfig,
) -> Shared {
    use crate::state::{OpState, StateRecord};
    let db = Database::open(
        dir.join("data"),
        duplex_engine::Config {
            sync: duplex_engine::SyncPolicy::Never,
            background: false,
            clock: clock.clone(),
            ..duplex_engine::Config::default()
        },
    )
    .expect("open a test database");
    let rec = StateRecord {
        state: OpState::Running,
        epoch: 1,
        node_id: 1,
        updated_ms: 0,
    };
    let table = StateTable::new(dir, rec).expect("create a test state table");
    let cfg = ServerConfig {
        data: dir.join("data"),
        ..cfg
    };
    Shared::new(
        db,
        cfg,
        table,
        clock,
        "127.0.0.1:0".parse().expect("an address"),
    )
}
