//! The archive mirror: a thread that uploads what the WAL archiver writes into a local
//! spool directory (the on-disk archive layout, docs/FORMAT.md section 11) to object
//! storage, as fragments and seals ([`crate::archive`]).
//!
//! Every round (each `period`, the archive lag's half): for each lineage directory of the
//! spool, in LSN order, the bytes of each segment file not yet uploaded go up as fragments
//! of at most [`crate::PART_SIZE`]; a closed segment (no `.partial`) then gets its seal,
//! and its spool file is removed once the listing shows every byte. The local WAL keeps a
//! segment until the archiver copied it into the spool, and the spool keeps it until it is
//! sealed in the store: a slow or failing store costs local disk, never a local write.
//! A failing round stops at the first failure (so a later segment is never uploaded before
//! an earlier one is sealed) and is retried after a pause doubling from `period` to 10 s.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::archive::{frag_name, list_segments, seal_name, segment_lsn};
use crate::{Error, Result, Store, PART_SIZE};

/// Longest pause between failing rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The mirror's state, for INFO.
#[derive(Debug, Clone, Default)]
pub struct MirrorStatus {
    /// `ok` or `failing`.
    pub status: &'static str,
    /// Bytes uploaded since start.
    pub uploaded_bytes: u64,
    /// Objects uploaded since start.
    pub objects: u64,
    /// Segments sealed since start.
    pub sealed: u64,
    /// Bytes in the spool not yet uploaded, at the end of the last round.
    pub pending_bytes: u64,
    /// How long bytes have been waiting in the spool without a round that emptied it, ms.
    pub lag_ms: u64,
    /// The last error, while failing.
    pub last_error: Option<String>,
    /// Since when it fails (Unix ms), -1 while it works.
    pub failing_since_ms: i64,
    /// Rounds completed.
    pub rounds: u64,
}

struct Shared {
    status: Mutex<MirrorStatus>,
    pending_since: Mutex<Option<Instant>>,
    stop: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
}

/// The running mirror.
pub struct Mirror {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mirror")
    }
}

impl Mirror {
    /// Starts mirroring `spool` into `store` every `period`.
    pub fn start(store: Store, spool: PathBuf, period: Duration) -> Mirror {
        let shared = Arc::new(Shared {
            status: Mutex::new(MirrorStatus {
                status: "ok",
                failing_since_ms: -1,
                ..MirrorStatus::default()
            }),
            pending_since: Mutex::new(None),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
        });
        let sh = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("archive-upload".into())
            .spawn(move || run(&store, &spool, period, &sh))
            .ok();
        Mirror { shared, handle }
    }

    /// The current status.
    pub fn status(&self) -> MirrorStatus {
        let mut s = self.shared.status.lock().clone();
        if let Some(t) = *self.shared.pending_since.lock() {
            s.lag_ms = t.elapsed().as_millis() as u64;
        }
        s
    }

    /// Stops after one last round (what the spool holds then goes up, if the store takes
    /// it).
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn run(store: &Store, spool: &Path, period: Duration, sh: &Shared) {
    let mut known: HashMap<String, u64> = HashMap::new();
    let mut pause = period;
    loop {
        let stopping = sh.stop.load(Ordering::SeqCst);
        let res = round(store, spool, &mut known, sh);
        {
            let mut s = sh.status.lock();
            s.rounds += 1;
            match &res {
                Ok(pending) => {
                    s.status = "ok";
                    s.last_error = None;
                    s.failing_since_ms = -1;
                    s.pending_bytes = *pending;
                    let mut ps = sh.pending_since.lock();
                    if *pending == 0 {
                        *ps = None;
                    }
                    pause = period;
                }
                Err(e) => {
                    if s.status != "failing" {
                        s.failing_since_ms = now_ms();
                    }
                    s.status = "failing";
                    s.last_error = Some(e.to_string());
                    // After a failure the cached offsets are re-read from the store.
                    known.clear();
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
        if stopping {
            return;
        }
        let mut g = sh.wake_lock.lock();
        if !sh.stop.load(Ordering::SeqCst) {
            sh.wake.wait_for(&mut g, pause);
        }
    }
}

/// One pass over the spool; returns the bytes left pending.
fn round(
    store: &Store,
    spool: &Path,
    known: &mut HashMap<String, u64>,
    sh: &Shared,
) -> Result<u64> {
    let mut work = Vec::new();
    let mut pending = 0u64;
    let rd = match std::fs::read_dir(spool) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("read directory", spool, e)),
    };
    let mut lineages: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| duplex_wal::parse_archive_subdir(n).is_some())
        .collect();
    lineages.sort();
    for lin in lineages {
        let dir = spool.join(&lin);
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
        let mut files: Vec<(u64, String, bool, u64)> = Vec::new();
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            let (seg, closed) = match n.strip_suffix(".partial") {
                Some(s) => (s.to_owned(), false),
                None => (n.clone(), true),
            };
            let Some(lsn) = segment_lsn(&seg) else {
                continue; // .tmp and .broken files are not archive
            };
            let len = e
                .metadata()
                .map_err(|er| Error::io("stat", &e.path(), er))?
                .len();
            files.push((lsn, n, closed, len));
        }
        files.sort();
        for (_, n, closed, len) in files {
            let seg = n.trim_end_matches(".partial").to_owned();
            work.push((lin.clone(), seg, dir.join(&n), closed, len));
        }
    }
    for (lin, seg, _, _, len) in &work {
        pending += len.saturating_sub(known.get(&format!("{lin}/{seg}")).copied().unwrap_or(0));
    }
    if pending > 0 {
        sh.pending_since.lock().get_or_insert_with(Instant::now);
    }
    sh.status.lock().pending_bytes = pending;
    for (lin, seg, path, closed, len) in work {
        let rel = format!("{lin}/{seg}");
        upload_segment(store, &rel, &path, closed, len, known, sh)?;
    }
    // Everything the spool held at the start of the round is in the store.
    Ok(0)
}

fn upload_segment(
    store: &Store,
    rel: &str,
    path: &Path,
    closed: bool,
    len: u64,
    known: &mut HashMap<String, u64>,
    sh: &Shared,
) -> Result<()> {
    let key = rel.to_owned();
    let (mut off, sealed) = match known.get(&key) {
        Some(&o) => (o, None),
        None => {
            let lin = rel.split('/').next().unwrap_or_default();
            let segs = list_segments(store, lin)?;
            match segs.into_iter().find(|s| s.rel == rel) {
                Some(s) => (s.chain().0, s.sealed),
                None => (0, None),
            }
        }
    };
    let f = match File::open(path) {
        Ok(f) => f,
        // The archiver completed the segment (renamed its .partial) since the listing:
        // the next round finds it closed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !closed => return Ok(()),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    if let Some((slen, scrc)) = sealed {
        // Sealed before (a restart re-copied it into the spool): the same bytes, or a conflict.
        let crc = file_crc(&f, path, len)?;
        if closed && (slen, scrc) == (len, crc) {
            remove(path)?;
            known.remove(&key);
            return Ok(());
        }
        return Err(Error::Malformed {
            object: store.object_url(&format!("{rel}/{}", seal_name(slen, scrc))),
            reason: format!(
                "the store holds this segment sealed at {slen} bytes (CRC32C {scrc:08x}), the spool file {} differs ({len} bytes{}); neither is changed",
                path.display(),
                if closed { "" } else { ", still growing" }
            ),
        });
    }
    if off > len {
        return Err(Error::Malformed {
            object: store.object_url(rel),
            reason: format!(
                "the store holds {off} bytes of this segment, the spool file {} only {len}: it is not the same segment",
                path.display()
            ),
        });
    }
    while off < len {
        let n = (len - off).min(PART_SIZE);
        let mut buf = vec![0u8; n as usize];
        f.read_exact_at(&mut buf, off)
            .map_err(|e| Error::io("read", path, e))?;
        let crc = crc32c::crc32c(&buf);
        store.put_bytes(
            &format!("{rel}/{}", frag_name(off, n, crc)),
            Bytes::from(buf),
        )?;
        off += n;
        known.insert(key.clone(), off);
        let mut s = sh.status.lock();
        s.uploaded_bytes += n;
        s.objects += 1;
    }
    known.insert(key.clone(), off);
    if closed {
        let crc = file_crc(&f, path, len)?;
        store.put_bytes(&format!("{rel}/{}", seal_name(len, crc)), Bytes::new())?;
        // Verified by the listing: every byte in fragments, the seal in place.
        let lin = rel.split('/').next().unwrap_or_default();
        let seg = list_segments(store, lin)?
            .into_iter()
            .find(|s| s.rel == rel);
        match seg {
            Some(s) if s.chain().0 >= len && s.sealed == Some((len, crc)) => {}
            _ => {
                known.remove(&key);
                return Err(Error::Missing {
                    object: store.object_url(rel),
                    hint: ": its fragments or seal are not listed after the upload (will retry)",
                });
            }
        }
        remove(path)?;
        known.remove(&key);
        let mut s = sh.status.lock();
        s.sealed += 1;
        s.objects += 1;
    }
    Ok(())
}

fn file_crc(f: &File, path: &Path, len: u64) -> Result<u32> {
    let mut crc = 0;
    let mut off = 0;
    let mut buf = vec![0u8; PART_SIZE as usize];
    while off < len {
        let n = (len - off).min(PART_SIZE) as usize;
        f.read_exact_at(&mut buf[..n], off)
            .map_err(|e| Error::io("read", path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        off += n as u64;
    }
    Ok(crc)
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
    if let Some(d) = path.parent() {
        if let Ok(f) = File::open(d) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}
