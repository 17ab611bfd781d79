//! Rebuilding a lost server from its healthy peer (issue 12, `--rebuild-from HOST:PORT`):
//! run at start, before the listener, when the data directory is gone.
//!
//! 1. The data directory must be absent or empty: a database is never overwritten.
//! 2. Over the authenticated peer link (this server's node id, the cluster secret) the
//!    peer is asked for a fresh backup (REBUILD); its files arrive in FILE frames into
//!    `<data>.rebuild-staging/backup` (names checked, each chunk where the previous one of
//!    its file ended, each file whole), then FILES_END. The peer serves its clients
//!    throughout. The backup is verified (`verify_backup`).
//! 3. Every other `--peer` is asked (a handshake, its opening ACK) how far it holds this
//!    node's own batches; the new incarnation lies above all of them and the rebuild peer's.
//!    What a peer holds beyond the backup source's mark is the gap ([`RebuildGap`]),
//!    logged (`rebuild_gap`, `rebuild_done`) and shown in INFO.
//! 4. Restore, roll forward as the peer's node, adopt as this node
//!    (`duplex_engine::adopt_restored`) into `<data>.rebuild-staging/db`, which is then
//!    renamed into place with the `REBUILDING` marker in it ([`Unfinished`]); the staging
//!    directory is removed.
//!
//! The server then starts in state `recovering` (writes refused, reads served), first pulls
//! the gap back from the peer holding it (`rejoin`), while its peer links catch up
//! what the peer wrote after its backup, and ends with the write hold
//! ([`spawn_hold`]): it asks the peer (HOLD, on a connection of its own) to delay new
//! writes for at most [`HOLD_MS`] and name its cut-off (HELD), waits until its mark of the
//! peer reaches it, releases (RELEASE) and turns `running` on a new epoch, holding
//! everything the peer held at the cut-off. A hold the peer cannot grant yet (too much to
//! ship) or that expires is asked for again. A failure part way leaves the data
//! directory untouched and the peer serving; the next attempt clears the staging directory
//! and starts over. A server stopped after the install and before `running` finds the
//! marker at its next start ([`marker_of`]) and resumes: `recovering`, catch-up, hold. While it copies and restores, [`crate::recovering`] answers clients on
//! the bound port: DUPLEX.STATE and INFO say `recovering`, everything else `-LOADING`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_engine::{adopt_restored, restore_chain, roll_forward, RollForwardOptions};
use duplex_proto::peer::{
    check_file_name, Decoded, FileChunk, FilesEnd, Frame, FrameDecoder, FrameLimits, Handshake,
    Hold, NodeIdentity, RebuildRequest, Release, Status, NONCE_LEN,
};
use duplex_wal::{StdStorage, Storage};

use crate::config::ServerConfig;
use crate::recovering::Progress;
use crate::shared::Shared;
use crate::state::OpState;
use crate::Error;

mod marker;
mod rejoin;
pub use marker::{Unfinished, MARKER_FILE};
pub use rejoin::spawn_hold;

/// How long the peer may be unreachable before the rebuild gives up.
const CONNECT_FOR: Duration = Duration::from_secs(10);
/// How long one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the peer may send nothing (it takes the backup before the first FILE).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long another peer has to tell its mark of this node.
const MARK_TIMEOUT: Duration = Duration::from_secs(3);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// Longest write hold asked of the peer, ms.
pub const HOLD_MS: u32 = 100;
/// Wait between hold attempts.
const HOLD_RETRY: Duration = Duration::from_millis(200);
/// Most files a backup may hold.
const MAX_FILES: u32 = 100_000;

/// How much of the lost server's own updates the rebuild could not recover, from the
/// marks its peers hold of it (each peer's high-water mark of this node's old incarnation).
///
/// The rebuilt database holds this node's old updates up to the backup source's mark
/// (`recovered_mark`). A surviving peer with a higher mark of the same incarnation holds
/// updates of this node the backup did not bring back; `rejoin::pull_missing` pulls them from
/// it when it still holds them in memory (then `pulled` and a raised `recovered_mark`),
/// else they are gone from this server and survive on that peer only. Their count is
/// bounded by the LSN span (`gone_at_most`): LSNs of the lost node also number the records
/// it applied from peers, so the true count may be lower. Updates the lost server
/// acknowledged that reached no peer cannot be counted at all (its log is gone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildGap {
    /// What the rebuild recovered of this node's old updates: the backup source's mark,
    /// raised by a pull.
    pub recovered_mark: u64,
    /// The highest mark any asked peer holds of this node (the source included).
    pub highest_mark: u64,
    /// The peer holding it (the source when no peer holds more).
    pub highest_peer: String,
    /// At most this many of this node's updates are on `highest_peer` but not here: the
    /// LSN span between the two marks. `None` when the peer's mark is of a later
    /// incarnation than the source's (the span cannot be counted).
    pub gone_at_most: Option<u64>,
    /// Peers that could not be asked (their marks are unknown).
    pub peers_unreachable: usize,
    /// Of this node's old updates, how many were pulled back from `highest_peer` after the
    /// restore (`rejoin::pull_missing`); `recovered_mark` then includes them.
    pub pulled: u64,
}

impl RebuildGap {
    /// The gap between the source's mark and the others' (`(peer, mark)`).
    pub fn of(
        source: &str,
        source_mark: u64,
        others: &[(String, u64)],
        unreachable: usize,
    ) -> RebuildGap {
        let (mut peer, mut mark) = (source.to_owned(), source_mark);
        for (p, m) in others {
            if *m > mark {
                (peer, mark) = (p.clone(), *m);
            }
        }
        let (hi_inc, hi_lsn) = duplex_engine::split_position(mark);
        let (src_inc, src_lsn) = duplex_engine::split_position(source_mark);
        let gone_at_most = if hi_inc == src_inc || (source_mark == 0 && hi_inc <= 1) {
            Some(hi_lsn.saturating_sub(src_lsn))
        } else {
            None
        };
        RebuildGap {
            recovered_mark: source_mark,
            highest_mark: mark,
            highest_peer: peer,
            gone_at_most,
            peers_unreachable: unreachable,
            pulled: 0,
        }
    }

    /// After `pulled` batches up to position `to` came back from `highest_peer`.
    pub fn after_pull(&mut self, pulled: u64, to: u64) {
        self.pulled += pulled;
        self.recovered_mark = self.recovered_mark.max(to);
        let (hi_inc, hi_lsn) = duplex_engine::split_position(self.highest_mark);
        let (inc, lsn) = duplex_engine::split_position(self.recovered_mark);
        self.gone_at_most = (hi_inc == inc).then(|| hi_lsn.saturating_sub(lsn));
    }

    /// One line for an operator.
    pub fn describe(&self) -> String {
        let (inc, lsn) = duplex_engine::split_position(self.recovered_mark);
        let base = format!(
            "recovered this node's old updates up to incarnation {inc} LSN {lsn} (the backup source's mark{})",
            if self.pulled > 0 {
                format!(", then {} pulled back from {}", self.pulled, self.highest_peer)
            } else {
                String::new()
            }
        );
        let gone = match self.gone_at_most {
            Some(0) => "no surviving peer holds more of them".to_owned(),
            Some(n) => format!(
                "{} holds up to {n} more of them (LSN span) that were not recovered: they are gone from this server unless pulled back, and survive on {}",
                self.highest_peer, self.highest_peer
            ),
            None => format!(
                "{} holds a later incarnation of this node (position {}) than the source: an uncounted number of its updates were not recovered",
                self.highest_peer, self.highest_mark
            ),
        };
        let unknown = if self.peers_unreachable > 0 {
            format!(
                "; {} peer(s) could not be asked and may hold more",
                self.peers_unreachable
            )
        } else {
            String::new()
        };
        format!("{base}; {gone}{unknown}; updates the lost server acknowledged that reached no peer cannot be counted")
    }

    /// INFO lines (`rebuild_*`), each ending in CRLF.
    pub fn info_lines(&self) -> String {
        format!(
            "rebuild_recovered_mark:{}\r\nrebuild_highest_peer_mark:{}\r\nrebuild_highest_peer:{}\r\nrebuild_updates_gone_at_most:{}\r\nrebuild_peers_unreachable:{}\r\nrebuild_updates_pulled:{}\r\n",
            self.recovered_mark,
            self.highest_mark,
            self.highest_peer,
            self.gone_at_most
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            self.peers_unreachable,
            self.pulled
        )
    }
}

/// What a rebuild did, as its last log line reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// Files copied.
    pub files: u32,
    /// Bytes copied.
    pub bytes: u64,
    /// Seconds from the request to FILES_END (the peer's backup included).
    pub copy_secs: f64,
    /// Seconds of verify, restore, roll-forward and adopt.
    pub restore_secs: f64,
    /// Seconds in all.
    pub total_secs: f64,
    /// This node's new incarnation.
    pub incarnation: u64,
    /// The node whose backup it was.
    pub from_node: u64,
    /// What of this node's old updates was not recovered.
    pub gap: RebuildGap,
    /// What the start must still do: the catch-up and the write hold (also in the data
    /// directory's `REBUILDING` marker until they are done).
    pub unfinished: Unfinished,
}

/// The staging directories of a rebuild of `data`.
#[derive(Debug, Clone)]
struct Staging {
    root: PathBuf,
    backup: PathBuf,
    db: PathBuf,
}

impl Staging {
    fn of(data: &Path) -> Staging {
        let data: PathBuf = data.components().collect();
        let mut root = data.into_os_string();
        root.push(".rebuild-staging");
        let root = PathBuf::from(root);
        Staging {
            backup: root.join("backup"),
            db: root.join("db"),
            root,
        }
    }

    /// Removes what an earlier attempt left and creates the backup directory.
    fn clear(&self) -> Result<(), Error> {
        if self.root.exists() {
            tracing::info!(event = "rebuild_clear", dir = %self.root.display(), "removing what an earlier rebuild attempt left");
            std::fs::remove_dir_all(&self.root).map_err(|source| Error::Io {
                op: "remove the rebuild staging directory",
                path: self.root.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(&self.backup).map_err(|source| Error::Io {
            op: "create the rebuild staging directory",
            path: self.backup.clone(),
            source,
        })
    }
}

/// Refuses a data directory that holds anything.
fn check_target(data: &Path) -> Result<(), Error> {
    let mut entries = match std::fs::read_dir(data) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                op: "list the data directory",
                path: data.to_path_buf(),
                source,
            })
        }
    };
    if entries.next().is_some() {
        return Err(Error::Config(format!(
            "--rebuild-from: the data directory {} is not empty: a rebuild never overwrites data; move it away (or start without --rebuild-from to use it)",
            data.display()
        )));
    }
    Ok(())
}

/// The unfinished rebuild the data directory's `REBUILDING` marker names, if any, logged:
/// the start resumes it (state `recovering`, catch-up, write hold) instead of copying again
/// (with `--rebuild-from`) or running at once (without). A `--rebuild-from` given again
/// names the peer to hold with (it may have moved); the node is the marker's.
pub fn marker_of(cfg: &ServerConfig) -> Result<Option<Unfinished>, Error> {
    let Some(mut u) = marker::load(&cfg.data)? else {
        return Ok(None);
    };
    if let Some(p) = cfg.rebuild_from.as_deref().filter(|p| *p != u.peer) {
        tracing::warn!(event = "rebuild_resume_peer", marker_peer = %u.peer, peer = p, "the unfinished rebuild named {}; holding with {p} as --rebuild-from says (it must still be node {})", u.peer, u.from_node);
        u.peer = p.to_owned();
    }
    tracing::warn!(event = "rebuild_resume", from_node = u.from_node, peer = %u.peer, incarnation = u.incarnation, data = %cfg.data.display(), "the data directory holds an unfinished rebuild (its {MARKER_FILE} marker: stopped before the write hold ended): resuming it, recovering until caught up with node {} at {} and its write hold", u.from_node, u.peer);
    Ok(Some(u))
}

/// Rebuilds `cfg.data` from the peer `cfg.rebuild_from` (see the module doc).
pub fn run(
    cfg: &ServerConfig,
    secret: Option<&[u8]>,
    progress: &Progress,
) -> Result<RebuildReport, Error> {
    let Some(peer) = cfg.rebuild_from.as_deref() else {
        return Err(Error::Config("rebuild without rebuild_from".into()));
    };
    let Some(secret) = secret else {
        return Err(Error::Config(
            "--rebuild-from needs --cluster-secret-file (the peer's secret)".into(),
        ));
    };
    check_target(&cfg.data)?;
    let staging = Staging::of(&cfg.data);
    let t0 = Instant::now();
    tracing::info!(event = "rebuild_start", state = "recovering", peer, data = %cfg.data.display(), node_id = cfg.node_id, "recovering: rebuilding the data directory from {peer}");
    staging.clear()?;
    progress.set_phase("copying");
    let end =
        fetch(cfg, secret, peer, &staging.backup, progress).map_err(|e| Error::rebuild(peer, e))?;
    let copy_secs = t0.elapsed().as_secs_f64();
    let (others, unreachable) = other_marks(cfg, secret, peer);
    let gap = RebuildGap::of(peer, end.lost_node_mark, &others, unreachable);
    progress.set_gap(gap.clone());
    if gap.highest_mark > gap.recovered_mark {
        tracing::warn!(event = "rebuild_gap", recovered_mark = gap.recovered_mark, highest_mark = gap.highest_mark, highest_peer = %gap.highest_peer, gone_at_most = ?gap.gone_at_most, "{}", gap.describe());
    }
    let mut marks = vec![(peer.to_owned(), end.lost_node_mark)];
    marks.extend(others);
    let held = marks
        .iter()
        .map(|(_, m)| duplex_engine::split_position(*m).0)
        .max()
        .unwrap_or(0);
    tracing::info!(event = "rebuild_marks", marks = ?marks, min_incarnation = held + 1, "peers hold this node's batches up to incarnation {held}");
    let t1 = Instant::now();
    progress.set_phase("restoring");
    let adopted =
        restore(cfg, &staging, &end, held + 1).map_err(|e| Error::rebuild(peer, e.to_string()))?;
    progress.set_phase("installing");
    let unfinished = Unfinished {
        from_node: adopted.from_node,
        incarnation: adopted.incarnation,
        peer: peer.to_owned(),
    };
    install(&staging, &cfg.data, &unfinished)?;
    let rep = RebuildReport {
        files: end.files,
        bytes: end.bytes,
        copy_secs,
        restore_secs: t1.elapsed().as_secs_f64(),
        total_secs: t0.elapsed().as_secs_f64(),
        incarnation: adopted.incarnation,
        from_node: adopted.from_node,
        gap,
        unfinished,
    };
    tracing::info!(
        event = "rebuild_done",
        peer,
        from_node = rep.from_node,
        files = rep.files,
        bytes = rep.bytes,
        copy_secs = rep.copy_secs,
        restore_secs = rep.restore_secs,
        total_secs = rep.total_secs,
        incarnation = rep.incarnation,
        recovered_mark = rep.gap.recovered_mark,
        highest_peer_mark = rep.gap.highest_mark,
        highest_peer = %rep.gap.highest_peer,
        updates_gone_at_most = ?rep.gap.gone_at_most,
        peers_unreachable = rep.gap.peers_unreachable,
        "rebuilt from node {} at {peer}: {} files, {} bytes copied in {:.2} s, restored and rolled forward in {:.2} s, {:.2} s in all; new incarnation {}; {}; starting",
        rep.from_node, rep.files, rep.bytes, rep.copy_secs, rep.restore_secs, rep.total_secs, rep.incarnation, rep.gap.describe()
    );
    Ok(rep)
}

/// Verifies the received backup, restores it, rolls it forward as its node and adopts it
/// as this node into the staging `db` directory.
fn restore(
    cfg: &ServerConfig,
    staging: &Staging,
    end: &FilesEnd,
    min_incarnation: u64,
) -> Result<duplex_engine::AdoptReport, Error> {
    let storage: Arc<dyn Storage> = Arc::new(StdStorage);
    let m = duplex_engine::verify_backup(&*storage, &staging.backup)?;
    if (m.node_id, m.timeline) != (end.source_node, end.source_timeline) {
        return Err(Error::Config(format!(
            "the backup received is of node {} timeline {}, but the peer announced node {} timeline {}",
            m.node_id, m.timeline, end.source_node, end.source_timeline
        )));
    }
    if m.node_id == cfg.node_id {
        return Err(Error::Config(format!(
            "the peer's backup is of node {}, this server's own node id: the peer must be another server",
            m.node_id
        )));
    }
    restore_chain(&storage, std::slice::from_ref(&staging.backup), &staging.db)?;
    let mut last = Instant::now();
    let rf = roll_forward(
        storage.clone(),
        &staging.db,
        &[],
        &RollForwardOptions {
            config: duplex_engine::Config {
                node_id: m.node_id,
                ..duplex_engine::Config::default()
            },
            ..RollForwardOptions::default()
        },
        &mut |p| {
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                tracing::info!(
                    event = "rebuild_roll_forward",
                    records = p.records,
                    bytes = p.bytes,
                    "rolling forward: {} records",
                    p.records
                );
            }
        },
    )?;
    tracing::info!(
        event = "rebuild_rolled_forward",
        records = rf.records,
        bytes = rf.bytes,
        seconds = rf.seconds,
        "rolled the peer's backup forward: {} records in {:.2} s",
        rf.records,
        rf.seconds
    );
    let db_cfg = crate::server::db_config(cfg);
    Ok(adopt_restored(
        storage,
        &staging.db,
        &db_cfg,
        rf.from_timeline,
        min_incarnation,
    )?)
}

/// Renames the rebuilt database into place as `data`, with the `REBUILDING` marker in it
/// (the catch-up and the write hold are still to come), and removes the staging directory.
fn install(staging: &Staging, data: &Path, unfinished: &Unfinished) -> Result<(), Error> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    marker::write(&staging.db, unfinished)?;
    check_target(data)?;
    if data.exists() {
        std::fs::remove_dir(data).map_err(io("remove the empty data directory", data))?;
    }
    std::fs::rename(&staging.db, data).map_err(io("move the rebuilt database into place", data))?;
    if let Some(parent) = data.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    std::fs::remove_dir_all(&staging.root)
        .map_err(io("remove the rebuild staging directory", &staging.root))
}

/// Asks the peer for a backup and receives its files into `into`.
fn fetch(
    cfg: &ServerConfig,
    secret: &[u8],
    peer: &str,
    into: &Path,
    progress: &Progress,
) -> Result<FilesEnd, String> {
    let mut conn = PeerConn::open(cfg, secret, peer, CONNECT_FOR)?;
    conn.send(&Frame::Rebuild(RebuildRequest { fresh: true }))?;
    tracing::info!(
        event = "rebuild_requested",
        peer,
        "asked {peer} for a fresh backup"
    );
    let mut rx = Receiving::new(into);
    loop {
        match conn.recv(Instant::now() + IDLE_TIMEOUT)? {
            Frame::Ack(_) => {}
            Frame::File(c) => {
                rx.on_file(c)?;
                progress
                    .bytes
                    .store(rx.bytes, std::sync::atomic::Ordering::Relaxed);
            }
            Frame::FilesEnd(end) => {
                rx.finish()?;
                if (end.files, end.bytes) != (rx.files, rx.bytes) {
                    return Err(format!(
                        "the peer announced {} files and {} bytes, {} files and {} bytes arrived",
                        end.files, end.bytes, rx.files, rx.bytes
                    ));
                }
                return Ok(end);
            }
            Frame::Error(e) => {
                return Err(format!("the peer reported {:?}: {}", e.code, e.message))
            }
            other => return Err(format!("the peer sent {} during the rebuild", other.kind())),
        }
    }
}

/// Every other `--peer`'s mark of this node's own batches (a handshake; its opening ACK),
/// and how many could not be asked (each is logged and left out).
fn other_marks(
    cfg: &ServerConfig,
    secret: &[u8],
    rebuild_peer: &str,
) -> (Vec<(String, u64)>, usize) {
    let mut out = Vec::new();
    let mut unreachable = 0;
    for entry in &cfg.peers {
        let (_, addr) = crate::config::split_peer(entry);
        if addr == rebuild_peer {
            continue;
        }
        let mark = PeerConn::open(cfg, secret, addr, Duration::ZERO).and_then(|mut c| {
            let deadline = Instant::now() + MARK_TIMEOUT;
            loop {
                match c.recv(deadline)? {
                    Frame::Ack(a) if a.origin == cfg.node_id => return Ok(a.durable_lsn),
                    _ => {}
                }
            }
        });
        match mark {
            Ok(m) => out.push((addr.to_owned(), m)),
            Err(e) => {
                unreachable += 1;
                tracing::warn!(event = "rebuild_peer_unreachable", peer = addr, error = %e, "cannot ask {addr} how far it holds this node's updates: {e}; if it holds more than the rebuild peer, this node's next updates may be taken for duplicates there until it is rebuilt too")
            }
        }
    }
    (out, unreachable)
}

/// A file being received.
#[derive(Debug)]
struct OpenFile {
    name: String,
    file: std::fs::File,
    next: u64,
    total: u64,
}

/// The backup's files as they arrive.
#[derive(Debug)]
struct Receiving {
    dir: PathBuf,
    open: Option<OpenFile>,
    files: u32,
    bytes: u64,
    started: Instant,
    last_log: Instant,
}

impl Receiving {
    fn new(dir: &Path) -> Receiving {
        Receiving {
            dir: dir.to_path_buf(),
            open: None,
            files: 0,
            bytes: 0,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    fn on_file(&mut self, c: FileChunk) -> Result<(), String> {
        if self.open.as_ref().is_some_and(|o| o.name != c.name) {
            self.finish()?;
        }
        if self.open.is_none() {
            self.open = Some(self.create(&c)?);
        }
        let Some(o) = self.open.as_mut() else {
            return Err("no file open".into());
        };
        if c.offset != o.next || c.total_len != o.total {
            return Err(format!(
                "FILE {} at offset {} of {} bytes, but {} of {} bytes were expected next",
                c.name, c.offset, c.total_len, o.next, o.total
            ));
        }
        o.file
            .write_all(&c.data)
            .map_err(|e| format!("cannot write {}: {e}", self.dir.join(&c.name).display()))?;
        o.next += c.data.len() as u64;
        self.bytes += c.data.len() as u64;
        if self.last_log.elapsed() >= PROGRESS_EVERY {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            tracing::info!(
                event = "rebuild_progress",
                files = self.files,
                bytes = self.bytes,
                seconds = secs,
                "recovering: {} bytes of the peer's backup received ({:.1} MB/s)",
                self.bytes,
                self.bytes as f64 / secs.max(1e-3) / 1e6
            );
        }
        Ok(())
    }

    /// Creates the file a first chunk names, inside the staging directory only.
    fn create(&self, c: &FileChunk) -> Result<OpenFile, String> {
        check_file_name(&c.name).map_err(|e| format!("FILE {:?}: {e}", c.name))?;
        let rel = Path::new(&c.name);
        if !rel.components().all(|p| matches!(p, Component::Normal(_))) {
            return Err(format!("FILE {:?} leaves the staging directory", c.name));
        }
        if c.offset != 0 {
            return Err(format!(
                "FILE {} starts at offset {}, not 0",
                c.name, c.offset
            ));
        }
        if self.files >= MAX_FILES {
            return Err(format!("more than {MAX_FILES} files in the backup"));
        }
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot create {} (sent twice?): {e}", path.display()))?;
        Ok(OpenFile {
            name: c.name.clone(),
            file,
            next: 0,
            total: c.total_len,
        })
    }

    /// Closes the open file, which must be whole.
    fn finish(&mut self) -> Result<(), String> {
        if let Some(o) = self.open.take() {
            if o.next != o.total {
                return Err(format!(
                    "FILE {} ended at {} of its {} bytes",
                    o.name, o.next, o.total
                ));
            }
            self.files += 1;
        }
        Ok(())
    }
}

/// A peer-link connection as initiator, established.
struct PeerConn {
    stream: TcpStream,
    decoder: FrameDecoder,
    limits: FrameLimits,
    chunk: Vec<u8>,
}

impl PeerConn {
    /// Connects to `addr` and runs the handshake as this node; retries a failed attempt
    /// for up to `retry_for` (a peer restarting, or still holding this node's old link).
    fn open(
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

    fn send(&mut self, f: &Frame) -> Result<(), String> {
        let bytes = f.to_bytes(&self.limits).map_err(|e| e.to_string())?;
        self.stream
            .write_all(&bytes)
            .map_err(|e| format!("write to the peer: {e}"))
    }

    fn recv(&mut self, deadline: Instant) -> Result<Frame, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_is_the_span_a_surviving_peer_holds_beyond_the_source() {
        use duplex_engine::position;
        let others = vec![
            ("c:3".to_owned(), position(1, 120)),
            ("d:4".to_owned(), position(1, 90)),
        ];
        let g = RebuildGap::of("b:2", position(1, 100), &others, 1);
        assert_eq!(g.recovered_mark, position(1, 100));
        assert_eq!(
            (g.highest_peer.as_str(), g.highest_mark),
            ("c:3", position(1, 120))
        );
        assert_eq!(g.gone_at_most, Some(20));
        let d = g.describe();
        assert!(
            d.contains("c:3 holds up to 20 more") && d.contains("1 peer(s)"),
            "{d}"
        );
        assert!(g
            .info_lines()
            .contains("rebuild_updates_gone_at_most:20\r\n"));
        // Pulled back up to 115 of C's 120: 5 still gone.
        let mut p = g.clone();
        p.after_pull(15, position(1, 115));
        assert_eq!(
            (p.pulled, p.recovered_mark, p.gone_at_most),
            (15, position(1, 115), Some(5))
        );
        assert!(p.info_lines().contains("rebuild_updates_pulled:15\r\n"));
        // Nobody holds more: nothing gone that a peer knows of.
        let g = RebuildGap::of("b:2", position(1, 100), &others[1..], 0);
        assert_eq!((g.gone_at_most, g.highest_peer.as_str()), (Some(0), "b:2"));
        // The source never heard of this node: a peer's span of its first incarnation.
        let g = RebuildGap::of("b:2", 0, &others, 0);
        assert_eq!(g.gone_at_most, Some(120));
        // A later incarnation on a peer: not countable.
        let g = RebuildGap::of(
            "b:2",
            position(1, 100),
            &[("c:3".into(), position(2, 5))],
            0,
        );
        assert_eq!(g.gone_at_most, None);
        assert!(g
            .info_lines()
            .contains("rebuild_updates_gone_at_most:unknown"));
    }

    #[test]
    fn staging_sits_next_to_the_data_directory() {
        let s = Staging::of(Path::new("./d2/"));
        assert_eq!(s.root, PathBuf::from("./d2.rebuild-staging"));
        assert_eq!(s.backup, PathBuf::from("./d2.rebuild-staging/backup"));
        assert_eq!(s.db, PathBuf::from("./d2.rebuild-staging/db"));
    }

    #[test]
    fn a_data_directory_with_anything_in_it_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_target(&d.path().join("absent")).is_ok());
        assert!(check_target(d.path()).is_ok(), "empty");
        std::fs::write(d.path().join("x"), b"1").unwrap();
        let e = check_target(d.path()).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("move it away"), "{e}");
    }

    fn chunk(name: &str, offset: u64, total_len: u64, data: &[u8]) -> FileChunk {
        FileChunk {
            name: name.into(),
            offset,
            total_len,
            data: data.to_vec(),
        }
    }

    #[test]
    fn files_arrive_whole_in_order_and_inside_the_staging_directory() {
        let d = tempfile::tempdir().unwrap();
        let mut rx = Receiving::new(d.path());
        rx.on_file(chunk("wal/a", 0, 5, b"abc")).unwrap();
        rx.on_file(chunk("wal/a", 3, 5, b"de")).unwrap();
        rx.on_file(chunk("BACKUP", 0, 0, b"")).unwrap();
        rx.finish().unwrap();
        assert_eq!((rx.files, rx.bytes), (2, 5));
        assert_eq!(std::fs::read(d.path().join("wal/a")).unwrap(), b"abcde");
        let mut rx = Receiving::new(d.path());
        let e = rx.on_file(chunk("wal/a", 0, 1, b"x")).unwrap_err();
        assert!(e.contains("sent twice"), "{e}");
        let mut rx = Receiving::new(&d.path().join("other"));
        rx.on_file(chunk("b", 0, 4, b"ab")).unwrap();
        assert!(rx.on_file(chunk("b", 3, 4, b"c")).is_err(), "a hole");
        let mut rx = Receiving::new(&d.path().join("third"));
        rx.on_file(chunk("c", 0, 4, b"ab")).unwrap();
        assert!(rx.on_file(chunk("d", 0, 1, b"x")).is_err(), "c cut short");
        let mut rx = Receiving::new(&d.path().join("fourth"));
        assert!(rx.on_file(chunk("../escape", 0, 1, b"x")).is_err());
        assert!(rx.on_file(chunk("/abs", 0, 1, b"x")).is_err());
        assert!(rx.on_file(chunk("late", 2, 4, b"x")).is_err());
        assert!(!d.path().join("escape").exists());
    }
}
