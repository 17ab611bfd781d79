//! The daemon's life: start-up (directories, the `STATE` file, the database), the listener
//! and accept loop, the signal thread, and the shutdown sequence. Connections go to the
//! connection layer ([`crate::net`]); the backup schedule runs in [`crate::sched`].
//!
//! Start-up binds the port first, then creates the directories, warns when the archive or
//! backups share the data's file system ([`crate::disks`]), writes the `STATE` file and
//! opens the database.
//!
//! With `--rebuild-from`, the data directory is rebuilt from that peer's backup
//! ([`crate::rebuild`]) once the port is bound, a small responder answering clients
//! meanwhile ([`crate::recovering`]); the start then goes on as usual on the rebuilt
//! directory.
//!
//! With `--peer`s, the cluster secret is read before anything else is opened, and the peer
//! links ([`crate::net::peer`]) start with the connection layer and stop before the drain.
//!
//! Shutdown (first SIGTERM or SIGINT): state `stopping` (a fenced or failed server stays
//! fenced or failed, refusing writes, through the stop and the next start), stop accepting, let every
//! connection finish the requests it has already read (up to [`SHUTDOWN_WAIT`]),
//! checkpoint, sync the WAL, state `stopped` (or still `fenced` / `failed`), exit 0. A second signal exits at once with
//! status 1 (the WAL makes that safe: every acknowledged write is in it).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_engine::{Config as DbConfig, Database};
use duplex_wal::{Clock, SystemClock};

use crate::config::ServerConfig;
use crate::limits::{POLL, SHUTDOWN_WAIT};
use crate::net::accept::Acceptor;
use crate::net::peer::PeerLinks;
use crate::net::Layer;
use crate::shared::{ClusterSecret, Shared};
use crate::state::{self, OpState, StateRecord, StateTable};
use crate::Error;

/// Opens everything and serves until a signal; returns once stopped cleanly.
///
/// The port is bound first, before the data directory is touched: a busy port (another
/// `duplexd` on it, maybe on the same data) is found before any file changes.
pub fn run(cfg: ServerConfig) -> Result<(), Error> {
    // s3:// backup_dir and archive_dir: connected here, worked on through a local cache.
    let (cfg, remote) = crate::remote::resolve(cfg)?;
    let remote = Arc::new(remote);
    cfg.validate()?;
    // Read before anything is opened: a missing secret refuses the start at once.
    let secret = cfg.cluster_secret()?;
    let cfg = crate::fds::raise_and_fit(cfg)?;
    let listener = bind(&cfg)?;
    // A rebuild killed after its directory was installed but before its write hold ended
    // left the `REBUILDING` marker: resume it (recovering, catch up, hold) instead of
    // copying again or running on data that may lag the peer.
    let unfinished = crate::rebuild::marker_of(&cfg)?;
    let rebuilt = match (&cfg.rebuild_from, &unfinished) {
        // Clients get `recovering` answers (INFO, DUPLEX.STATE; LOADING to the rest).
        (Some(peer), None) => {
            let progress = Arc::new(crate::recovering::Progress::default());
            let answering = crate::recovering::Responder::start(
                &listener,
                cfg.node_id,
                peer,
                progress.clone(),
            )?;
            let res = crate::rebuild::run(&cfg, secret.as_deref(), &progress);
            answering.stop();
            Some(res?)
        }
        _ => None,
    };
    let rejoin = match &rebuilt {
        Some(r) => Some(r.unfinished.clone()),
        None => unfinished,
    };
    let addr = listener.local_addr().map_err(Error::Net)?;
    // Locked before anything in the data directory is written: a refused start writes nothing.
    let lock = duplex_engine::DirLock::acquire(&cfg.data)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    create_dirs(&cfg)?;
    let disks = crate::disks::check(&cfg);
    let prev = state::load(&cfg.data)?;
    log_previous(&cfg, prev);
    // A fenced or failed server stays so from the first byte written: a crash during the
    // start must not leave a `starting` record that would forget it.
    let first = prev
        .map(|p| p.state)
        .filter(|s| s.sticky())
        .unwrap_or(OpState::Starting);
    let table = StateTable::new(
        &cfg.data,
        StateRecord {
            state: first,
            epoch: prev.map_or(1, |p| p.epoch.max(1)),
            node_id: cfg.node_id,
            updated_ms: clock.now_ms(),
        },
    )?;
    let db = open_db(&cfg, &table, lock)?;
    settle_epoch(&table, &db, prev)?;
    let shared = Arc::new(Shared::new(db, cfg, table, clock, addr));
    shared.set_disks(disks);
    shared.backups().set_remote(remote.clone());
    remote.start_mirror(shared.cfg())?;
    if let Some(s) = secret {
        shared.peers().set_secret(ClusterSecret::new(s));
    }
    if let Some(r) = &rebuilt {
        shared.set_rebuild_gap(r.gap.clone());
        shared.update_rebuild_run(|run| {
            run.copy = Some(crate::rebuild::RebuildCopy {
                files: r.files,
                bytes: r.bytes,
                copy_secs: r.copy_secs,
                restore_secs: r.restore_secs,
                from_node: r.from_node,
            });
        });
    }
    come_up(&shared, rejoin.is_some())?;

    spawn_signal_thread(&shared)?;
    crate::sched::spawn(&shared)?;
    crate::reclaim::spawn(&shared)?;
    crate::health::spawn(&shared)?;
    let io = shared.cfg().io;
    tracing::info!(event = "listening", addr = %addr, pid = std::process::id(), io = %io, "duplexd ready");
    let mut layer = Layer::start(&shared, io)?;
    // After a rebuild the outbound links start once its write hold is done.
    let (links, hold) = match rejoin {
        Some(u) => (
            PeerLinks::default(),
            Some(crate::rebuild::spawn_hold(shared.clone(), u)?),
        ),
        None => (PeerLinks::start(&shared)?, None),
    };
    accept_loop(&shared, &listener, &mut layer);
    drop(listener);
    // The clients finish first, then the peers get what they wrote while the server
    // drained, and only then do the links stop: a write acknowledged during a clean stop
    // reaches the peers the clients fail over to.
    shared.wait_for_clients(SHUTDOWN_WAIT, POLL);
    flush_peers(&shared, PEER_FLUSH_WAIT);
    shared.stop_links();
    links.join();
    if let Some(h) = hold {
        let _ = h.join();
    }
    let res = shutdown(&shared);
    // A last upload round of what the archive spool holds.
    remote.stop_mirror();
    res
}

/// How long a clean stop waits for connected peers to acknowledge the last writes.
const PEER_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits (at most `within`) until every peer link that is up has acknowledged this
/// server's durable position; logs the peers still behind when the time is up.
fn flush_peers(shared: &Shared, within: std::time::Duration) {
    let target = shared.db().durable_position();
    let until = std::time::Instant::now() + within;
    loop {
        let behind: Vec<String> = shared
            .peers()
            .outbound()
            .into_iter()
            .filter(|p| p.state == crate::shared::LinkState::Up && p.acked < target)
            .map(|p| p.addr)
            .collect();
        if behind.is_empty() {
            return;
        }
        if std::time::Instant::now() >= until {
            tracing::warn!(event = "peers_behind_at_stop", peers = ?behind, "stopping while these peers have not acknowledged the last writes; they get them when this server runs again, or from the archive");
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// Binds the listening socket; a failure names the address and what to do.
fn bind(cfg: &ServerConfig) -> Result<TcpListener, Error> {
    TcpListener::bind((cfg.bind.as_str(), cfg.port)).map_err(|source| Error::Bind {
        addr: format!("{}:{}", cfg.bind, cfg.port),
        source,
    })
}

/// `starting` becomes `running` (`recovering` right after a rebuild, until its write
/// hold); a state kept from the previous run (fenced, failed) stays, and the log says what
/// lifts it.
fn come_up(shared: &Shared, rebuilt: bool) -> Result<(), Error> {
    let st = shared.state().get().state;
    match st {
        OpState::Fenced => tracing::warn!(event = "fenced", "the server was fenced before it stopped; it stays fenced (DUPLEX.UNFENCE to serve writes)"),
        OpState::Failed => tracing::warn!(event = "failed", "the previous run failed (a write, fsync or checkpoint error, or a full disk; its log says which): writes stay refused; check the disk, then DUPLEX.UNFENCE to serve writes"),
        _ => {
            let to = if rebuilt {
                OpState::Recovering
            } else {
                OpState::Running
            };
            shared.state().move_to(&[OpState::Starting], to, false)?;
        }
    }
    Ok(())
}

/// Takes the epoch to [`state::start_epoch`] of the `STATE` file's and the WAL's (above the
/// WAL's on a restored directory) and logs it in the WAL if the WAL lacks it.
fn settle_epoch(table: &StateTable, db: &Database, prev: Option<StateRecord>) -> Result<(), Error> {
    let wal_max = db.max_epoch();
    let epoch = state::start_epoch(prev.map(|p| p.epoch), wal_max);
    if epoch > wal_max && wal_max > 0 && prev.is_none_or(|p| p.epoch < wal_max) {
        tracing::warn!(
            event = "restored_epoch",
            state_file_epoch = prev.map_or(0, |p| p.epoch),
            wal_epoch = wal_max,
            epoch,
            "the WAL saw a higher epoch than the STATE file (a restored directory): starting above it, so clients that knew this server accept it and older copies stay refused"
        );
    }
    table.raise_epoch_to(epoch)?;
    state::log_epoch(db, epoch);
    Ok(())
}

/// Creates the data and archive directories.
fn create_dirs(cfg: &ServerConfig) -> Result<(), Error> {
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
    Ok(())
}

/// Logs how the previous run ended.
fn log_previous(cfg: &ServerConfig, prev: Option<StateRecord>) {
    match prev {
        None => {
            tracing::info!(event = "fresh", data = %cfg.data.display(), "no state file: a new or restored data directory")
        }
        // Fenced and failed are kept through a stop (sticky), so the file cannot say whether
        // that stop was clean: say what holds instead of guessing.
        Some(p) if p.state.sticky() => tracing::warn!(
            event = "previous_state",
            state = p.state.name(),
            epoch = p.epoch,
            "previous run left this server {}; it stays so until DUPLEX.UNFENCE (the WAL is replayed as after any stop)",
            p.state.name()
        ),
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
}

/// Opens the database (WAL replay); state `failed` if it cannot.
/// The engine configuration of this server's database.
pub(crate) fn db_config(cfg: &ServerConfig) -> DbConfig {
    DbConfig {
        node_id: cfg.node_id,
        sync: cfg.sync_policy(),
        archive_dir: cfg.archive().map(Path::to_path_buf),
        archive_lag_ms: cfg.archive_lag_ms,
        max_clock_offset_ms: cfg.max_clock_offset_ms,
        peer_wal_retention_bytes: cfg.peer_wal_retention_bytes,
        // Recent batches in memory only for the peer links that read them.
        replication_backlog_bytes: if cfg.peers.is_empty() {
            0
        } else {
            cfg.replication_backlog_bytes
        },
        ..DbConfig::default()
    }
}

fn open_db(
    cfg: &ServerConfig,
    table: &StateTable,
    lock: duplex_engine::DirLock,
) -> Result<Database, Error> {
    tracing::info!(event = "opening", data = %cfg.data.display(), sync = %cfg.sync, node_id = cfg.node_id, "opening the database");
    let t0 = Instant::now();
    let db = match Database::open_with_lock(lock, db_config(cfg)) {
        Ok(db) => db,
        Err(e) => {
            let _ = table.move_to(&[OpState::Starting], OpState::Failed, false);
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
    Ok(db)
}

/// After the accept loop: waits for the connections, checkpoints, syncs, records the
/// final state.
fn shutdown(shared: &Shared) -> Result<(), Error> {
    tracing::info!(
        event = "draining",
        clients = shared.stats().clients,
        "stopped accepting; finishing in-flight requests"
    );
    shared.wait_for_clients(SHUTDOWN_WAIT, POLL);
    let db = shared.db();
    let res = db
        .checkpoint()
        .and_then(|()| db.wal().sync().map(|_| ()).map_err(Into::into));
    match &res {
        Ok(()) => tracing::info!(
            event = "checkpointed",
            last_lsn = db.stats().last_lsn,
            "final checkpoint done"
        ),
        Err(e) => {
            tracing::error!(event = "checkpoint_failed", error = %e, "final checkpoint failed (the WAL still holds every acknowledged write)")
        }
    }
    if res.is_err() {
        shared.note_failure();
    }
    let last = if res.is_ok() {
        OpState::Stopped
    } else {
        OpState::Failed
    };
    // A fenced or failed server stays so: only a serving, stopping or recovering one ends
    // `stopped`.
    let moved = shared.state().move_to(
        &[
            OpState::Running,
            OpState::BackingUp,
            OpState::Stopping,
            OpState::Recovering,
        ],
        last,
        false,
    )?;
    if moved.is_none() {
        let st = shared.state().get().state;
        tracing::warn!(
            event = "stopped_as",
            state = st.name(),
            "stopping; the state stays {} until an operator runs DUPLEX.UNFENCE",
            st.name()
        );
    }
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
                if s.begin_shutdown() {
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
                // Fenced and failed stay: stopping would accept writes while draining.
                let _ = s.state().move_to(
                    &[OpState::Running, OpState::BackingUp],
                    OpState::Stopping,
                    false,
                );
                // Wake the blocking accept.
                let _ = TcpStream::connect_timeout(&wake_addr(s.addr()), Duration::from_secs(1));
            }
        })
        .map_err(Error::Net)?;
    Ok(())
}

/// The bound address, with an unspecified IP replaced by loopback (to connect to ourselves).
/// `a`, with an unspecified IP (a bind to all addresses) replaced by loopback: where to
/// connect to wake a blocking accept.
pub(crate) fn wake_addr(mut a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

/// Accepts until shutdown; hands each admitted client to the connection layer, which owns
/// it from then on ([`Acceptor`] refuses the others).
fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, layer: &mut Layer) {
    let mut acceptor = Acceptor::new();
    loop {
        let admitted = acceptor.next(shared, listener);
        if shared.stopping() {
            if admitted.is_some() {
                shared.conn_closed();
            }
            break;
        }
        if let Some(stream) = admitted {
            layer.hand_over(shared, stream);
        }
    }
}
