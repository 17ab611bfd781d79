//! The thread that writes a [`TreeWriter`](super::TreeWriter)'s full buffers while the
//! encoder fills the next one (double buffering), starting writeback as it goes so the
//! checkpoint's final fsync has little left to do.

use std::sync::Arc;

use crate::store_file::StoreFile;

/// Size at which the buffer is handed to the writing thread.
pub(super) const FLUSH_AT: usize = 4 << 20;

/// The writing thread starts writeback of what it wrote every this many bytes, so the
/// fsync at the end of a large checkpoint has little left to do and the disk works while
/// the tree is still being built.
const WRITEBACK_EVERY: u64 = 16 << 20;

/// Buffers in flight between the encoder and the writing thread (double buffering).
pub(super) const IN_FLIGHT: usize = 2;

/// The thread that writes full buffers of a [`TreeWriter`](super::TreeWriter).
#[derive(Debug)]
pub(super) struct BgWriter {
    /// Full buffers and their file offsets, to the thread; `None` once closed.
    pub(super) tx: Option<std::sync::mpsc::SyncSender<(Vec<u8>, u64)>>,
    /// Emptied buffers coming back, or the first write error.
    back: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    /// Buffers handed over and not yet back.
    pub(super) in_flight: usize,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl BgWriter {
    pub(super) fn start(file: Arc<StoreFile>, from: u64) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, u64)>(IN_FLIGHT);
        let (back_tx, back) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("duplex-tree-writer".into())
            .spawn(move || {
                let mut writeback_from = from;
                for (mut buf, off) in rx {
                    if let Err(e) = file.file.write_all_at(&buf, off) {
                        let _ = back_tx.send(Err(e));
                        return;
                    }
                    let end = off + buf.len() as u64;
                    if end - writeback_from >= WRITEBACK_EVERY {
                        // A hint: a failure here shows up at the fsync.
                        let _ = file
                            .file
                            .start_writeback(writeback_from, end - writeback_from);
                        writeback_from = end;
                    }
                    buf.clear();
                    if back_tx.send(Ok(buf)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(BgWriter {
            tx: Some(tx),
            back,
            in_flight: 0,
            handle: Some(handle),
        })
    }

    /// Waits for one buffer to come back.
    pub(super) fn wait_one(&mut self) -> std::io::Result<Vec<u8>> {
        let r = self
            .back
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the store writing thread stopped")));
        self.in_flight -= 1;
        r
    }
}

impl Drop for BgWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
