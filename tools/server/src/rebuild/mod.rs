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
//!    (`duplex_engine::adopt_restored`) into `<data>.rebuild-staging/db`.
//! 5. If this node's own archive survived (its archive root holds earlier lineages of this
//!    node), its own updates above the source's mark are taken back from it into the
//!    staging database (`archive::take_back`), to be sent to every peer.
//! 6. The staging database is renamed into place with the `REBUILDING` marker in it
//!    ([`Unfinished`]); the staging directory is removed.
//!
//! The server then starts in state `recovering` (writes refused, reads served), first pulls
//! the gap back from the peer holding it (`rejoin`), while its peer links catch up
//! what the peer wrote after its backup, and ends with the write hold
//! ([`spawn_hold`]): it asks the peer (HOLD, on a connection of its own) to delay new
//! writes for at most [`HOLD_MS`] and name its cut-off (HELD), waits until the peer's
//! batches up to it have arrived, releases (RELEASE), waits until they are applied and
//! durable, and turns `running` on a new epoch, holding everything the peer held at the
//! cut-off (the peer's clients wait for the shipping, not for this server's fsync). A hold the peer cannot grant yet (too much to
//! ship) or that expires is asked for again. A failure part way leaves the data
//! directory untouched and the peer serving; the next attempt clears the staging directory
//! and starts over. A server stopped after the install and before `running` finds the
//! marker at its next start ([`marker_of`]) and resumes: `recovering`, catch-up, hold.
//! While it copies and restores, [`crate::recovering`] answers clients on the bound port:
//! DUPLEX.STATE and INFO say `recovering`, everything else `-LOADING`.

use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_engine::{adopt_restored, restore_chain, roll_forward, RollForwardOptions};
use duplex_proto::peer::{
    check_file_name, FileChunk, FilesEnd, Frame, Hold, RebuildRequest, Release,
};
use duplex_wal::{StdStorage, Storage};

use crate::config::ServerConfig;
use crate::recovering::Progress;
use crate::shared::Shared;
use crate::state::OpState;
use crate::Error;

mod archive;
mod conn;
mod gap;
mod marker;
mod rejoin;
use conn::PeerConn;
pub use gap::RebuildGap;
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

/// What a rebuild did, as its last log line reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// Files copied.
    pub files: u32,
    /// Bytes copied.
    pub bytes: u64,
    /// Seconds from the request to FILES_END (the peer's backup included).
    pub copy_secs: f64,
    /// Seconds of verify, restore, roll-forward, adopt and the take-back from this node's own
    /// archive.
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

/// The record of the rebuild a server started with, for INFO (`rebuild_*` fields) and
/// `duplexctl rebuild`: the copy (absent when the start resumed an unfinished rebuild),
/// then the catch-up and the write hold once they end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RebuildRun {
    /// The copy, restore and install, when this start made them.
    pub copy: Option<RebuildCopy>,
    /// `catching-up` until the write hold succeeded, then `done`.
    pub done: bool,
    /// Write holds asked for so far.
    pub hold_attempts: u32,
    /// Seconds from the start of the catch-up to `running`.
    pub catch_up_secs: f64,
    /// The successful hold as this server measured it (HOLD to RELEASE), ms.
    pub hold_ms: f64,
    /// The peer's account of it (HOLD_ENDED), when it sent one.
    pub peer_hold: Option<duplex_proto::peer::HoldEnded>,
    /// The cut-off this server reached.
    pub cutoff: u64,
}

/// The copy part of a [`RebuildReport`], kept for INFO.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RebuildCopy {
    /// Files copied.
    pub files: u32,
    /// Bytes copied.
    pub bytes: u64,
    /// Seconds from the request to FILES_END.
    pub copy_secs: f64,
    /// Seconds of verify, restore, roll-forward, adopt and take-back.
    pub restore_secs: f64,
    /// The node whose backup it was.
    pub from_node: u64,
}

impl RebuildRun {
    /// The INFO lines (`# Duplex` section), each ending in CRLF.
    pub fn info_lines(&self) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        let _ = write!(
            t,
            "rebuild_status:{}\r\nrebuild_hold_attempts:{}\r\n",
            if self.done { "done" } else { "catching-up" },
            self.hold_attempts
        );
        if let Some(c) = &self.copy {
            let _ = write!(
                t,
                "rebuild_source_node:{}\r\nrebuild_files:{}\r\nrebuild_bytes:{}\r\nrebuild_copy_secs:{:.3}\r\nrebuild_restore_secs:{:.3}\r\n",
                c.from_node, c.files, c.bytes, c.copy_secs, c.restore_secs
            );
        }
        if self.done {
            let _ = write!(
                t,
                "rebuild_cutoff:{}\r\nrebuild_catch_up_secs:{:.3}\r\nrebuild_hold_ms:{:.3}\r\n",
                self.cutoff, self.catch_up_secs, self.hold_ms
            );
            if let Some(h) = &self.peer_hold {
                let ms = |us: u64| us as f64 / 1e3;
                let _ = write!(
                    t,
                    "rebuild_hold_peer_pause_ms:{:.3}\r\nrebuild_hold_writes_held:{}\r\nrebuild_hold_held_p50_ms:{:.3}\r\nrebuild_hold_held_max_ms:{:.3}\r\n",
                    ms(h.pause_us),
                    h.writes_held,
                    ms(h.held_p50_us),
                    ms(h.held_max_us)
                );
            }
        }
        t
    }
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
    let mut gap = RebuildGap::of(peer, end.lost_node_mark, &others, unreachable);
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
    progress.set_phase("archive");
    archive::take_back(cfg, &staging.db, &mut gap)
        .map_err(|e| Error::rebuild(peer, e.to_string()))?;
    progress.set_gap(gap.clone());
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
        updates_from_archive = rep.gap.from_archive,
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

#[cfg(test)]
mod tests {
    use super::*;

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
