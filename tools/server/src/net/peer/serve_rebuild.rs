//! The healthy side of a rebuild (issue 12): an inbound peer connection whose first frame
//! after the handshake is REBUILD gets the files of one backup of this server, in FILE
//! frames of at most 1 MiB, then FILES_END with what the lost server needs to adopt them
//! (the backup's node and timeline, and this server's mark of the lost server's batches).
//!
//! It runs on the connection's own thread: this server keeps serving its clients and its
//! other links throughout. A fresh backup is taken with the server's backup service (state
//! `backing-up` meanwhile), or, when the request allows it, the newest complete backup of
//! this server's lineage is sent. Progress is logged every few seconds.
//!
//! A connection whose first frame is HOLD (`serve_hold`) gets the short write hold that
//! ends a rebuild: new client writes wait, the cut-off is named (HELD) and the hold ends at
//! RELEASE or by itself.
//!
//! A connection whose first frame is a RESYNC naming the connecting node itself
//! (`serve_pull`) gets that node's batches this server holds for forwarding after the
//! RESYNC's position (a rebuilt node pulling back its old updates the backup lacked), in
//! BATCHES frames, then an ACK of that node with the last position sent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use duplex_proto::peer::{FileChunk, FilesEnd, Frame, RebuildRequest, MAX_FILE_CHUNK};

use super::conn::{Fail, FrameIo};
use super::link::LinkError;
use crate::shared::{newest_backup, Shared};
use crate::Error;

/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long a fresh backup waits for one already running to finish.
const BACKUP_BUSY_WAIT: Duration = Duration::from_secs(120);
/// How long the lost server has to close the connection after FILES_END.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// One file of a backup: its name inside the backup (`/`-separated), its path, its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// Relative path inside the backup directory.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its length when listed.
    pub len: u64,
}

/// Every regular file under `dir`, sorted by name, the `BACKUP` manifest last (a copy cut
/// short never holds a manifest). Names that are not UTF-8 are an error.
pub fn backup_files(dir: &Path) -> Result<Vec<BackupFile>, String> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot list {}: {e}", d.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("cannot list {}: {e}", d.display()))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| format!("{}: a file name that is not UTF-8: {n:?}", d.display()))?;
            let rel = format!("{prefix}{name}");
            let ty = e
                .file_type()
                .map_err(|err| format!("cannot stat {}: {err}", e.path().display()))?;
            if ty.is_dir() {
                todo.push((e.path(), format!("{rel}/")));
            } else if ty.is_file() {
                let len = e
                    .metadata()
                    .map_err(|err| format!("cannot stat {}: {err}", e.path().display()))?
                    .len();
                out.push(BackupFile {
                    name: rel,
                    path: e.path(),
                    len,
                });
            }
        }
    }
    let manifest = duplex_engine::backup::BACKUP_MANIFEST;
    out.sort_by(|a, b| (a.name == manifest, &a.name).cmp(&(b.name == manifest, &b.name)));
    Ok(out)
}

/// Serves a REBUILD from node `origin` on `io`: picks or takes the backup, streams it and
/// waits for the lost server to close. [`Fail::Done`] when all went well.
pub(super) fn serve(sh: &Shared, io: &mut FrameIo, origin: u64, req: RebuildRequest) -> Fail {
    let started = Instant::now();
    tracing::info!(
        event = "rebuild_serve_start",
        node = origin,
        fresh = req.fresh,
        "node {origin} asks for a backup to rebuild from ({}); this server keeps serving",
        if req.fresh {
            "a fresh one"
        } else {
            "the newest will do"
        }
    );
    let dir = match pick_backup(sh, req.fresh) {
        Ok(d) => d,
        Err(e) => return local(format!("no backup to rebuild node {origin} from: {e}")),
    };
    let manifest = match duplex_engine::backup::read_backup_manifest(&duplex_wal::StdStorage, &dir)
    {
        Ok(m) => m,
        Err(e) => return local(format!("backup {}: {e}", dir.display())),
    };
    let files = match backup_files(&dir) {
        Ok(f) => f,
        Err(e) => return local(e),
    };
    let lost_node_mark = sh.db().origin_hwm(origin);
    let (count, bytes) = match stream_files(sh, io, &files, origin) {
        Ok(x) => x,
        Err(f) => return f,
    };
    let end = Frame::FilesEnd(FilesEnd {
        files: count,
        bytes,
        source_node: manifest.node_id,
        source_timeline: manifest.timeline,
        lost_node_mark,
    });
    if let Err(f) = io.send(&[end]) {
        return f;
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(event = "rebuild_served", node = origin, backup = %dir.display(), files = count, bytes, seconds = secs, "sent backup {} ({count} files, {bytes} bytes) to node {origin} in {secs:.1} s", dir.display());
    // The lost server closes once it has the files; anything it sends is ignored.
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        match io.recv(sh, deadline) {
            Ok(_) => {}
            Err(Fail::Stopped) => return Fail::Stopped,
            Err(_) => return Fail::Done,
        }
    }
}

fn local(msg: String) -> Fail {
    tracing::warn!(event = "rebuild_serve_failed", error = %msg, "{msg}");
    Fail::Link(LinkError::Local(msg))
}

/// The newest complete backup of this server's lineage (unless `fresh`), else a new one.
fn pick_backup(sh: &Shared, fresh: bool) -> Result<PathBuf, String> {
    let db = sh.db();
    if !fresh {
        if let Some((dir, _)) =
            newest_backup(&sh.cfg().backup_dir, (db.node_id(), db.incarnation()))
        {
            return Ok(dir);
        }
    }
    let until = Instant::now() + BACKUP_BUSY_WAIT;
    loop {
        match sh.backup_at(
            None,
            crate::shared::BackupBase::None,
            sh.cfg().rebuild_backup_rate(),
        ) {
            Ok(rep) => return Ok(rep.dir),
            Err(Error::BackupRunning) if Instant::now() < until && !sh.stopping() => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Sends every file in FILE frames; returns (files, bytes).
fn stream_files(
    sh: &Shared,
    io: &mut FrameIo,
    files: &[BackupFile],
    origin: u64,
) -> Result<(u32, u64), Fail> {
    let total: u64 = files.iter().map(|f| f.len).sum();
    let mut sent = 0u64;
    let mut last_log = Instant::now();
    let mut buf = vec![0u8; MAX_FILE_CHUNK];
    for f in files {
        let mut file = std::fs::File::open(&f.path)
            .map_err(|e| local(format!("cannot open {}: {e}", f.path.display())))?;
        let mut offset = 0u64;
        loop {
            if sh.stopping() {
                return Err(Fail::Stopped);
            }
            let want = usize::try_from(f.len - offset).map_or(buf.len(), |n| n.min(buf.len()));
            let n = read_full(&mut file, &mut buf[..want])
                .map_err(|e| local(format!("cannot read {}: {e}", f.path.display())))?;
            if n < want {
                return Err(local(format!(
                    "{} shrank while it was sent (a backup is never changed): take another",
                    f.path.display()
                )));
            }
            io.send(&[Frame::File(FileChunk {
                name: f.name.clone(),
                offset,
                total_len: f.len,
                data: buf[..n].to_vec(),
            })])?;
            offset += n as u64;
            sent += n as u64;
            if last_log.elapsed() >= PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(
                    event = "rebuild_serve_progress",
                    node = origin,
                    bytes = sent,
                    total,
                    "rebuild of node {origin}: {sent} of {total} bytes sent"
                );
            }
            if offset >= f.len {
                break;
            }
        }
    }
    let count = u32::try_from(files.len())
        .map_err(|_| local("a backup of more than 4 billion files".into()))?;
    Ok((count, sent))
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Most batches of one BATCHES frame of a pull.
const PULL_FRAME_BATCHES: usize = 256;
/// Most payload bytes of one BATCHES frame of a pull (one larger batch goes alone).
const PULL_FRAME_BYTES: usize = 512 << 10;

/// Serves a pull from the rebuilt node `origin` (see the module doc): its batches held
/// here for forwarding after `after`, then ACK(origin, the last position sent); an ERROR
/// when they are no longer held in memory.
pub(super) fn serve_pull(sh: &Shared, io: &mut FrameIo, origin: u64, after: u64) -> Fail {
    use duplex_proto::peer::{Ack, Batches};
    let db = sh.db();
    let (mut at, mut sent) = (after, 0u64);
    loop {
        if sh.stopping() {
            return Fail::Stopped;
        }
        let Some(got) = duplex_engine::FeedCursor::read_forward(
            db,
            origin,
            at,
            PULL_FRAME_BATCHES,
            PULL_FRAME_BYTES,
        ) else {
            return local(format!(
                "node {origin} asks for its batches after position {at}: they are no longer held here (only the last replication_backlog_bytes of each origin are)"
            ));
        };
        let Some(last) = got.last().map(|b| b.origin_lsn) else {
            break;
        };
        sent += got.len() as u64;
        let batches = got.iter().map(super::link::frame_batch).collect();
        if let Err(f) = io.send(&[Frame::Batches(Batches { origin, batches })]) {
            return f;
        }
        at = last;
    }
    if let Err(f) = io.send(&[Frame::Ack(Ack {
        origin,
        durable_lsn: at,
    })]) {
        return f;
    }
    tracing::info!(
        event = "rebuild_pull_served",
        node = origin,
        after,
        to = at,
        batches = sent,
        "sent rebuilt node {origin} {sent} of its old batches (positions {after} to {at})"
    );
    let deadline = Instant::now() + CLOSE_WAIT;
    loop {
        match io.recv(sh, deadline) {
            Ok(_) => {}
            Err(Fail::Stopped) => return Fail::Stopped,
            Err(_) => return Fail::Done,
        }
    }
}

/// Most of this server's own batches a rebuilt peer may still lack when it asks for the
/// hold: more could not be shipped within it, and the HOLD is answered not granted.
const HOLD_MAX_PENDING: u64 = 128;

/// Serves a HOLD from the rebuilt node `origin`: holds new client writes (at most the
/// HOLD's `max_ms`), waits for the writes under way, answers HELD with the position of its
/// last own batch (the cut-off) and releases at RELEASE, when the connection ends, or when
/// the time is up. Logs the pause and the writes it held.
pub(super) fn serve_hold(
    sh: &Shared,
    io: &mut FrameIo,
    origin: u64,
    h: duplex_proto::peer::Hold,
) -> Fail {
    use duplex_proto::peer::Held;
    let db = sh.db();
    let (ahead, pending) = match own_batches_after(db, h.mark, HOLD_MAX_PENDING) {
        Ok(x) => x,
        Err(e) => return local(format!("write hold for node {origin}: {e}")),
    };
    if pending > HOLD_MAX_PENDING {
        let held = Held {
            cutoff: ahead,
            pending,
            granted: false,
        };
        return io.send(&[Frame::Held(held)]).err().unwrap_or(Fail::Done);
    }
    let max = Duration::from_millis(u64::from(h.max_ms));
    let t0 = Instant::now();
    if !sh.write_hold().hold(max) {
        let held = Held {
            cutoff: ahead,
            pending,
            granted: false,
        };
        return io.send(&[Frame::Held(held)]).err().unwrap_or(Fail::Done);
    }
    let drained_ms = t0.elapsed().as_secs_f64() * 1e3;
    let res = held_cutoff(sh, h.mark).and_then(|(cutoff, pending)| {
        let held = Held {
            cutoff,
            pending,
            granted: true,
        };
        io.send(&[Frame::Held(held)]).map_err(|f| f.to_string())?;
        Ok((cutoff, pending))
    });
    let held_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (cutoff, pending) = match res {
        Ok(c) => c,
        Err(e) => {
            sh.write_hold().release();
            return local(format!("write hold for node {origin}: {e}"));
        }
    };
    let reached = loop {
        match io.recv(sh, t0 + max) {
            Ok(Frame::Release(r)) => break Some(r.reached),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    let rep = sh.write_hold().release();
    let us = |ms: f64| (ms * 1e3).round() as u64;
    // The rebuilt server reports it; a connection already gone is no matter here.
    let _ = io.send(&[Frame::HoldEnded(duplex_proto::peer::HoldEnded {
        pause_us: us(rep.pause_ms),
        writes_held: rep.writes_held,
        held_p50_us: us(rep.p50_ms),
        held_max_us: us(rep.max_ms),
    })]);
    tracing::info!(event = "write_hold", node = origin, cutoff, pending, idle_wait_ms = rep.idle_wait_ms, forced = rep.forced, drained_ms, held_ms, reached = ?reached, pause_ms = rep.pause_ms, writes_held = rep.writes_held, held_p50_ms = rep.p50_ms, held_max_ms = rep.max_ms, "write hold for rebuilt node {origin}: writes paused {:.1} ms ({} held, p50 {:.1} ms, max {:.1} ms); {}", rep.pause_ms, rep.writes_held, rep.p50_ms, rep.max_ms, match reached { Some(true) => "it reached the cut-off", Some(false) => "it did not reach the cut-off", None => "it expired" });
    Fail::Done
}

/// With writes held: the WAL made durable, the cut-off (this server's last own batch
/// after `mark`, or `mark`) and how many batches lie between.
fn held_cutoff(sh: &Shared, mark: u64) -> Result<(u64, u64), String> {
    let db = sh.db();
    db.wal()
        .sync()
        .map_err(|e| format!("WAL sync at the cut-off: {e}"))?;
    own_batches_after(db, mark, u64::MAX)
}

/// This server's own durable batches after position `after`: the last one's position (or
/// `after`) and their count, reading no further once the count passes `limit`.
fn own_batches_after(
    db: &duplex_engine::Database,
    after: u64,
    limit: u64,
) -> Result<(u64, u64), String> {
    let mut cursor = duplex_engine::FeedCursor::new();
    let (mut last, mut n) = (after, 0u64);
    loop {
        let got = cursor
            .read(db, last, 1024, 4 << 20)
            .map_err(|e| e.to_string())?;
        let Some(b) = got.last() else {
            return Ok((last, n));
        };
        last = b.origin_lsn;
        n += got.len() as u64;
        if n > limit {
            return Ok((last, n));
        }
    }
}
