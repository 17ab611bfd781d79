//! The on-disk tree: an append-only, copy-on-write B+tree in a store file.
//!
//! Reading ([`TreeView`], [`TreeCursor`]) works on a read-only map of the committed bytes;
//! every block is checked against its CRC when read. Writing ([`TreeWriter`]) appends new
//! blocks after the committed length: a checkpoint merges sorted updates into the tree by
//! rewriting only the leaves and branches they touch (children before parents, so a child's
//! offset is always below its parent's: that bounds every descent), and compaction writes a
//! whole new tree into a new file.

use std::ops::Bound;
use std::sync::Arc;

use duplex_wal::Mapped;

use crate::error::{CorruptKind, Error, Result};
use crate::format::{
    block_size, decode_block, encode_block, encode_block_with, encode_branch, encode_leaf_into,
    kind, Branch, Checkpoint, Leaf, LeafEntry, ValueRef, BLOCK_ALIGN,
};
use crate::hlc::Stamp;
use crate::store::StoreFile;

/// Target size of a leaf or branch body.
pub const NODE_TARGET: usize = 4096;
/// Values longer than this go to their own value block.
pub const INLINE_MAX: usize = 1024;
/// Deepest tree accepted when reading (a guard against damaged child pointers).
const MAX_DEPTH: usize = 48;

/// A version as read from the tree: its stamp and its value (`None` for a tombstone).
pub type TreeVersion = (Stamp, Option<Vec<u8>>);

/// A consistent, read-only view of the tree as of one checkpoint.
#[derive(Debug)]
pub struct TreeView {
    /// The store file (kept open, and undeleted, while the view lives).
    pub file: Arc<StoreFile>,
    /// The committed bytes.
    pub map: Mapped,
    /// The checkpoint this view shows.
    pub ckpt: Checkpoint,
    /// Offset of that checkpoint block.
    pub ckpt_offset: u64,
    /// Committed length: the end of that checkpoint block.
    pub committed: u64,
}

impl TreeView {
    fn corrupt(&self, offset: u64, kind: CorruptKind) -> Error {
        Error::Corrupt {
            file: self.file.path.clone(),
            offset,
            kind,
        }
    }

    /// The checked block at `off`: its kind and body.
    pub fn block(&self, off: u64) -> Result<(u8, &[u8])> {
        let bytes = self.map.bytes();
        if !off.is_multiple_of(BLOCK_ALIGN as u64) || off >= self.ckpt_offset {
            return Err(self.corrupt(off, CorruptKind::Invalid("block offset")));
        }
        let b = &bytes[off as usize..self.ckpt_offset as usize];
        decode_block(b).map_err(|k| self.corrupt(off, k))
    }

    fn leaf(&self, off: u64) -> Result<Leaf<'_>> {
        match self.block(off)? {
            (kind::LEAF, body) => Leaf::parse(body).map_err(|k| self.corrupt(off, k)),
            (found, _) => Err(self.corrupt(
                off,
                CorruptKind::WrongBlock {
                    expected: "leaf",
                    found,
                },
            )),
        }
    }

    /// The leaf at `off`, whose CRC the caller already checked in this view (bytes below
    /// the committed length never change): the lengths are checked again, the CRC is not.
    fn leaf_checked_before(&self, off: u64) -> Result<Leaf<'_>> {
        let bytes = self.map.bytes();
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        let end = usize::try_from(self.ckpt_offset).unwrap_or(0);
        let b = bytes
            .get(start..end)
            .filter(|b| b.len() >= crate::format::BLOCK_HEADER_LEN)
            .ok_or_else(|| self.corrupt(off, CorruptKind::Truncated))?;
        let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let body = b
            .get(crate::format::BLOCK_HEADER_LEN..crate::format::BLOCK_HEADER_LEN + len)
            .ok_or_else(|| self.corrupt(off, CorruptKind::Truncated))?;
        Leaf::parse(body).map_err(|k| self.corrupt(off, k))
    }

    /// The value an entry refers to.
    pub fn value(&self, leaf_off: u64, v: ValueRef<'_>) -> Result<Option<Vec<u8>>> {
        Ok(self.value_bytes(leaf_off, v)?.map(<[u8]>::to_vec))
    }

    /// The value an entry refers to, borrowed from the mapped file (or the entry).
    pub fn value_bytes<'a>(&'a self, leaf_off: u64, v: ValueRef<'a>) -> Result<Option<&'a [u8]>> {
        match v {
            ValueRef::Tombstone => Ok(None),
            ValueRef::Inline(b) => Ok(Some(b)),
            ValueRef::External { offset, len } => {
                if offset >= leaf_off {
                    return Err(self.corrupt(leaf_off, CorruptKind::Invalid("value pointer")));
                }
                match self.block(offset)? {
                    (kind::VALUE, body) if body.len() == len as usize => Ok(Some(body)),
                    (kind::VALUE, _) => {
                        Err(self.corrupt(offset, CorruptKind::Invalid("value length")))
                    }
                    (found, _) => Err(self.corrupt(
                        offset,
                        CorruptKind::WrongBlock {
                            expected: "value",
                            found,
                        },
                    )),
                }
            }
        }
    }

    /// Descends from the root to the leaf whose range holds `key`, recording the path as
    /// (branch offset, child index) pairs.
    fn descend(&self, key: &[u8], path: &mut Vec<(u64, usize)>) -> Result<Option<u64>> {
        let mut off = self.ckpt.root;
        if off == 0 {
            return Ok(None);
        }
        loop {
            if path.len() > MAX_DEPTH {
                return Err(self.corrupt(off, CorruptKind::Invalid("tree too deep")));
            }
            match self.block(off)? {
                (kind::LEAF, _) => return Ok(Some(off)),
                (kind::BRANCH, body) => {
                    let br = Branch::parse(body).map_err(|k| self.corrupt(off, k))?;
                    let i = br.route(key).map_err(|k| self.corrupt(off, k))?;
                    let (_, child) = br.child(i).map_err(|k| self.corrupt(off, k))?;
                    if child >= off {
                        return Err(self.corrupt(off, CorruptKind::Invalid("child pointer")));
                    }
                    path.push((off, i));
                    off = child;
                }
                (found, _) => {
                    return Err(self.corrupt(
                        off,
                        CorruptKind::WrongBlock {
                            expected: "tree node",
                            found,
                        },
                    ))
                }
            }
        }
    }

    /// The version of `key` in the tree, tombstones included.
    pub fn get(&self, key: &[u8]) -> Result<Option<TreeVersion>> {
        let mut path = Vec::new();
        let Some(off) = self.descend(key, &mut path)? else {
            return Ok(None);
        };
        let leaf = self.leaf(off)?;
        let i = leaf.lower_bound(key).map_err(|k| self.corrupt(off, k))?;
        if i >= leaf.len() {
            return Ok(None);
        }
        let e = leaf.entry(i).map_err(|k| self.corrupt(off, k))?;
        if e.key != key {
            return Ok(None);
        }
        Ok(Some((e.stamp, self.value(off, e.value)?)))
    }

    /// A cursor at the first entry at or after `start`.
    pub fn cursor(self: &Arc<Self>, start: Bound<&[u8]>) -> Result<TreeCursor> {
        let key: &[u8] = match start {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => &[],
        };
        let mut path = Vec::new();
        let leaf = self.descend(key, &mut path)?;
        let mut c = TreeCursor {
            view: self.clone(),
            path,
            leaf: None,
            checked: None,
        };
        if let Some(off) = leaf {
            let l = self.leaf(off)?;
            let mut i = l.lower_bound(key).map_err(|k| self.corrupt(off, k))?;
            if let Bound::Excluded(k) = start {
                if i < l.len() && l.key(i).map_err(|kd| self.corrupt(off, kd))? == k {
                    i += 1;
                }
            }
            c.leaf = Some((off, i));
        }
        Ok(c)
    }
}

/// A forward cursor over the tree's entries (tombstones included), in key order.
#[derive(Debug)]
pub struct TreeCursor {
    view: Arc<TreeView>,
    path: Vec<(u64, usize)>,
    leaf: Option<(u64, usize)>,
    /// The leaf whose CRC this cursor has checked: each leaf is checked once per visit,
    /// not once per entry.
    checked: Option<u64>,
}

impl TreeCursor {
    /// The next entry: key, stamp and value (`None` for a tombstone).
    pub fn next_entry(&mut self) -> Result<Option<(Vec<u8>, TreeVersion)>> {
        loop {
            let Some((off, i)) = self.leaf else {
                return Ok(None);
            };
            let v = &*self.view;
            let leaf = if self.checked == Some(off) {
                v.leaf_checked_before(off)?
            } else {
                let l = v.leaf(off)?;
                self.checked = Some(off);
                l
            };
            if i < leaf.len() {
                let e = leaf.entry(i).map_err(|k| v.corrupt(off, k))?;
                self.leaf = Some((off, i + 1));
                let value = v.value(off, e.value)?;
                return Ok(Some((e.key.to_vec(), (e.stamp, value))));
            }
            self.leaf = self.next_leaf()?.map(|o| (o, 0));
        }
    }

    /// Moves up the path to the next sibling subtree and down to its first leaf.
    fn next_leaf(&mut self) -> Result<Option<u64>> {
        let v = self.view.clone();
        while let Some((boff, i)) = self.path.pop() {
            let (_, body) = v.block(boff)?;
            let br = Branch::parse(body).map_err(|k| v.corrupt(boff, k))?;
            if i + 1 < br.len() {
                self.path.push((boff, i + 1));
                let (_, mut off) = br.child(i + 1).map_err(|k| v.corrupt(boff, k))?;
                loop {
                    if self.path.len() > MAX_DEPTH {
                        return Err(v.corrupt(off, CorruptKind::Invalid("tree too deep")));
                    }
                    match v.block(off)? {
                        (kind::LEAF, _) => return Ok(Some(off)),
                        (kind::BRANCH, body) => {
                            let b = Branch::parse(body).map_err(|k| v.corrupt(off, k))?;
                            let (_, child) = b.child(0).map_err(|k| v.corrupt(off, k))?;
                            if child >= off {
                                return Err(v.corrupt(off, CorruptKind::Invalid("child pointer")));
                            }
                            self.path.push((off, 0));
                            off = child;
                        }
                        (found, _) => {
                            return Err(v.corrupt(
                                off,
                                CorruptKind::WrongBlock {
                                    expected: "tree node",
                                    found,
                                },
                            ))
                        }
                    }
                }
            }
        }
        Ok(None)
    }
}

/// One update for a checkpoint merge: key, stamp, value (`None` = tombstone).
pub type Update<'a> = (&'a [u8], Stamp, Option<&'a [u8]>);

/// Appends blocks to a store file after `base` and keeps the tree's accounting.
///
/// Blocks are encoded into a 4 MiB buffer; full buffers are written by a second thread
/// (started at the first full buffer) while this one encodes the next, so a large
/// checkpoint or compaction costs the encoding, not encoding plus the copy into the page
/// cache. A write error is returned by the next `append` that hands over a buffer, or by
/// `finish`.
#[derive(Debug)]
pub struct TreeWriter {
    file: Arc<StoreFile>,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
    /// Bytes of blocks that the new tree no longer reaches.
    pub dead: u64,
    /// Bytes of blocks written.
    pub written: u64,
    /// Entries added (keys new to the tree).
    pub added: u64,
    bg: Option<BgWriter>,
}

/// Size at which the buffer is handed to the writing thread.
const FLUSH_AT: usize = 4 << 20;

/// The writing thread starts writeback of what it wrote every this many bytes, so the
/// fsync at the end of a large checkpoint has little left to do and the disk works while
/// the tree is still being built.
const WRITEBACK_EVERY: u64 = 16 << 20;

/// Buffers in flight between the encoder and the writing thread (double buffering).
const IN_FLIGHT: usize = 2;

/// The thread that writes full buffers of a [`TreeWriter`].
#[derive(Debug)]
struct BgWriter {
    tx: Option<std::sync::mpsc::SyncSender<(Vec<u8>, u64)>>,
    /// Emptied buffers coming back, or the first write error.
    back: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    in_flight: usize,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl BgWriter {
    fn start(file: Arc<StoreFile>, from: u64) -> std::io::Result<Self> {
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
    fn wait_one(&mut self) -> std::io::Result<Vec<u8>> {
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

impl TreeWriter {
    /// A writer appending at `end` (the committed length).
    pub fn new(file: &Arc<StoreFile>, end: u64) -> Self {
        TreeWriter {
            file: file.clone(),
            buf: Vec::with_capacity(FLUSH_AT + NODE_TARGET * 2),
            base: end,
            dead: 0,
            written: 0,
            added: 0,
            bg: None,
        }
    }

    fn append(&mut self, kind: u8, body: &[u8]) -> Result<u64> {
        let off = self.base + self.buf.len() as u64;
        encode_block(&mut self.buf, kind, body);
        self.written += block_size(body.len()) as u64;
        if self.buf.len() >= FLUSH_AT {
            self.hand_over()?;
        }
        Ok(off)
    }

    /// Appends a leaf block, encoding it straight into the buffer.
    fn append_leaf(&mut self, entries: &[LeafEntry<'_>]) -> Result<u64> {
        let off = self.end();
        encode_block_with(&mut self.buf, kind::LEAF, |out| {
            encode_leaf_into(out, entries)
        });
        self.written += self.end() - off;
        if self.buf.len() >= FLUSH_AT {
            self.hand_over()?;
        }
        Ok(off)
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        Error::io("write", &self.file.path, e)
    }

    /// Hands the full buffer to the writing thread (starting it the first time) and takes
    /// an empty one back.
    fn hand_over(&mut self) -> Result<()> {
        if self.bg.is_none() {
            let bg = BgWriter::start(self.file.clone(), self.base).map_err(|e| self.io_err(e))?;
            self.bg = Some(bg);
        }
        let Some(bg) = self.bg.as_mut() else {
            return Ok(());
        };
        let next = if bg.in_flight >= IN_FLIGHT {
            bg.wait_one()
        } else {
            Ok(Vec::with_capacity(self.buf.capacity()))
        };
        let next = match next {
            Ok(b) => b,
            Err(e) => return Err(self.io_err(e)),
        };
        let full = std::mem::replace(&mut self.buf, next);
        let len = full.len() as u64;
        let sent = bg.tx.as_ref().map(|tx| tx.send((full, self.base)));
        if !matches!(sent, Some(Ok(()))) {
            // The thread stopped after a failed write: find why among what it sent back.
            let mut err = std::io::Error::other("the store writing thread stopped");
            while bg.in_flight > 0 {
                if let Err(e) = bg.wait_one() {
                    err = e;
                    break;
                }
            }
            return Err(self.io_err(err));
        }
        bg.in_flight += 1;
        self.base += len;
        Ok(())
    }

    /// Writes everything appended so far to the file (no fsync) and waits for it.
    fn flush(&mut self) -> Result<()> {
        if let Some(mut bg) = self.bg.take() {
            while bg.in_flight > 0 {
                if let Err(e) = bg.wait_one() {
                    return Err(self.io_err(e));
                }
            }
        }
        if !self.buf.is_empty() {
            self.file
                .file
                .write_all_at(&self.buf, self.base)
                .map_err(|e| self.io_err(e))?;
            self.base += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Offset where the next block goes.
    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Writes the checkpoint block, flushes and fsyncs; returns (offset, committed length).
    pub fn finish(mut self, ckpt: &Checkpoint) -> Result<(u64, u64)> {
        let off = self.end();
        encode_block(&mut self.buf, kind::CHECKPOINT, &ckpt.encode());
        self.written += self.end() - off;
        self.flush()?;
        self.file
            .file
            .sync_data()
            .map_err(|e| Error::io("fsync", &self.file.path, e))?;
        Ok((off, self.base))
    }

    fn value_ref<'a>(&mut self, v: Option<&'a [u8]>) -> Result<ValueRef<'a>> {
        Ok(match v {
            None => ValueRef::Tombstone,
            Some(b) if b.len() <= INLINE_MAX => ValueRef::Inline(b),
            Some(b) => ValueRef::External {
                offset: self.append(kind::VALUE, b)?,
                len: b.len() as u32,
            },
        })
    }

    /// Writes sorted entries as leaves; returns (first key, offset) per leaf.
    fn write_leaves(&mut self, entries: &[LeafEntry<'_>]) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut size = 4;
        for (i, e) in entries.iter().enumerate() {
            let n = e.encoded_len();
            if i > start && size + n > NODE_TARGET {
                out.push((
                    entries[start].key.to_vec(),
                    self.append_leaf(&entries[start..i])?,
                ));
                start = i;
                size = 4;
            }
            size += n;
        }
        if start < entries.len() {
            out.push((
                entries[start].key.to_vec(),
                self.append_leaf(&entries[start..])?,
            ));
        }
        Ok(out)
    }

    /// Writes children as branches (at least two children each when there are two);
    /// returns (first key, offset) per branch.
    fn write_branches(&mut self, children: &[(Vec<u8>, u64)]) -> Result<Vec<(Vec<u8>, u64)>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut size = 4;
        for (i, (k, _)) in children.iter().enumerate() {
            let n = crate::format::branch_child_len(k.len());
            if i >= start + 2 && size + n > NODE_TARGET {
                out.push((children[start].0.clone(), self.branch(&children[start..i])?));
                start = i;
                size = 4;
            }
            size += n;
        }
        if start < children.len() {
            out.push((children[start].0.clone(), self.branch(&children[start..])?));
        }
        Ok(out)
    }

    fn branch(&mut self, children: &[(Vec<u8>, u64)]) -> Result<u64> {
        let refs: Vec<(&[u8], u64)> = children.iter().map(|(k, o)| (k.as_slice(), *o)).collect();
        self.append(kind::BRANCH, &encode_branch(&refs))
    }

    /// Stacks branch levels until one root remains; returns its offset (0 if empty).
    fn root(&mut self, mut level: Vec<(Vec<u8>, u64)>) -> Result<u64> {
        while level.len() > 1 {
            level = self.write_branches(&level)?;
        }
        Ok(level.first().map(|(_, o)| *o).unwrap_or(0))
    }

    /// Merges sorted, distinct-key `updates` into the tree of `view` (last writer wins per
    /// key) and returns the new root.
    pub fn merge(&mut self, view: &TreeView, updates: &[Update<'_>]) -> Result<u64> {
        if updates.is_empty() {
            return Ok(view.ckpt.root);
        }
        let level = if view.ckpt.root == 0 {
            let mut entries = Vec::with_capacity(updates.len());
            for (k, s, v) in updates {
                entries.push(LeafEntry {
                    key: k,
                    stamp: *s,
                    value: self.value_ref(*v)?,
                });
            }
            self.added += updates.len() as u64;
            self.write_leaves(&entries)?
        } else {
            self.merge_node(view, view.ckpt.root, updates, 0)?
        };
        self.root(level)
    }

    fn merge_node(
        &mut self,
        view: &TreeView,
        off: u64,
        ups: &[Update<'_>],
        depth: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>> {
        if depth > MAX_DEPTH {
            return Err(view.corrupt(off, CorruptKind::Invalid("tree too deep")));
        }
        let (k, body) = view.block(off)?;
        self.dead += block_size(body.len()) as u64;
        match k {
            kind::LEAF => {
                let leaf = Leaf::parse(body).map_err(|kd| view.corrupt(off, kd))?;
                let mut out = Vec::with_capacity(leaf.len() + ups.len());
                let (mut i, mut j) = (0, 0);
                while i < leaf.len() || j < ups.len() {
                    let old = if i < leaf.len() {
                        Some(leaf.entry(i).map_err(|kd| view.corrupt(off, kd))?)
                    } else {
                        None
                    };
                    let up = ups.get(j);
                    match (old, up) {
                        (Some(o), Some(u)) if o.key == u.0 => {
                            // Equal stamps: the update is the later write (one batch).
                            if !o.stamp.wins_over(&u.1) {
                                if let ValueRef::External { len, .. } = o.value {
                                    self.dead += block_size(len as usize) as u64;
                                }
                                out.push(LeafEntry {
                                    key: u.0,
                                    stamp: u.1,
                                    value: self.value_ref(u.2)?,
                                });
                            } else {
                                out.push(o);
                            }
                            i += 1;
                            j += 1;
                        }
                        (Some(o), Some(u)) if o.key < u.0 => {
                            out.push(o);
                            i += 1;
                        }
                        (Some(o), None) => {
                            out.push(o);
                            i += 1;
                        }
                        (_, Some(u)) => {
                            out.push(LeafEntry {
                                key: u.0,
                                stamp: u.1,
                                value: self.value_ref(u.2)?,
                            });
                            self.added += 1;
                            j += 1;
                        }
                        (None, None) => break,
                    }
                }
                self.write_leaves(&out)
            }
            kind::BRANCH => {
                let br = Branch::parse(body).map_err(|kd| view.corrupt(off, kd))?;
                let mut out = Vec::with_capacity(br.len() + 1);
                let mut u = 0;
                for c in 0..br.len() {
                    let (key, child) = br.child(c).map_err(|kd| view.corrupt(off, kd))?;
                    let end = if c + 1 < br.len() {
                        Some(br.child(c + 1).map_err(|kd| view.corrupt(off, kd))?.0)
                    } else {
                        None
                    };
                    let n = ups[u..].partition_point(|x| end.is_none_or(|e| x.0 < e));
                    if n == 0 {
                        out.push((key.to_vec(), child));
                        continue;
                    }
                    if child >= off {
                        return Err(view.corrupt(off, CorruptKind::Invalid("child pointer")));
                    }
                    out.extend(self.merge_node(view, child, &ups[u..u + n], depth + 1)?);
                    u += n;
                }
                self.write_branches(&out)
            }
            found => Err(view.corrupt(
                off,
                CorruptKind::WrongBlock {
                    expected: "tree node",
                    found,
                },
            )),
        }
    }

    /// Writes the merge of the tree of `view` with sorted, distinct-key `updates` (last
    /// writer wins per key) as a whole new tree with full leaves, in key order, and returns
    /// its root: compaction, and the merge of a batch of updates that would touch most
    /// leaves anyway. Every old block's CRC is checked; old values are copied over.
    pub fn rebuild<'a>(&mut self, view: &'a TreeView, updates: &'a [Update<'a>]) -> Result<u64> {
        let mut st = Rebuild {
            level: Vec::new(),
            pending: Vec::new(),
            size: 4,
            next: 0,
        };
        if view.ckpt.root != 0 {
            self.rebuild_node(view, view.ckpt.root, updates, &mut st, 0)?;
        }
        for (i, u) in updates.iter().enumerate().skip(st.next) {
            prefetch(updates, i + PREFETCH_AHEAD);
            self.rebuild_push(&mut st, u.0, u.1, u.2)?;
        }
        if !st.pending.is_empty() {
            let first = st.pending[0].key.to_vec();
            let off = self.append_leaf(&st.pending)?;
            st.level.push((first, off));
        }
        self.root(st.level)
    }

    fn rebuild_node<'a>(
        &mut self,
        view: &'a TreeView,
        off: u64,
        ups: &'a [Update<'a>],
        st: &mut Rebuild<'a>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(view.corrupt(off, CorruptKind::Invalid("tree too deep")));
        }
        match view.block(off)? {
            (kind::LEAF, body) => {
                let leaf = Leaf::parse(body).map_err(|kd| view.corrupt(off, kd))?;
                for i in 0..leaf.len() {
                    let e = leaf.entry(i).map_err(|kd| view.corrupt(off, kd))?;
                    // The leaf being filled is never empty once anything was pushed, so
                    // this sees every pair of neighbours.
                    if st.pending.last().is_some_and(|p| p.key >= e.key) {
                        return Err(view.corrupt(off, CorruptKind::Invalid("keys out of order")));
                    }
                    while let Some(u) = ups.get(st.next).filter(|u| u.0 < e.key) {
                        prefetch(ups, st.next + PREFETCH_AHEAD);
                        self.rebuild_push(st, u.0, u.1, u.2)?;
                        st.next += 1;
                    }
                    match ups.get(st.next).filter(|u| u.0 == e.key) {
                        // Equal stamps: the update is the later write (one batch).
                        Some(u) if !e.stamp.wins_over(&u.1) => {
                            self.rebuild_push(st, u.0, u.1, u.2)?;
                            st.next += 1;
                        }
                        found => {
                            if found.is_some() {
                                st.next += 1;
                            }
                            let v = view.value_bytes(off, e.value)?;
                            self.rebuild_push(st, e.key, e.stamp, v)?;
                        }
                    }
                }
                Ok(())
            }
            (kind::BRANCH, body) => {
                let br = Branch::parse(body).map_err(|kd| view.corrupt(off, kd))?;
                for c in 0..br.len() {
                    let (_, child) = br.child(c).map_err(|kd| view.corrupt(off, kd))?;
                    if child >= off {
                        return Err(view.corrupt(off, CorruptKind::Invalid("child pointer")));
                    }
                    self.rebuild_node(view, child, ups, st, depth + 1)?;
                }
                Ok(())
            }
            (found, _) => Err(view.corrupt(
                off,
                CorruptKind::WrongBlock {
                    expected: "tree node",
                    found,
                },
            )),
        }
    }

    /// Adds one entry to the leaf being filled, writing the leaf out first when the entry
    /// would not fit.
    fn rebuild_push<'a>(
        &mut self,
        st: &mut Rebuild<'a>,
        key: &'a [u8],
        stamp: Stamp,
        value: Option<&'a [u8]>,
    ) -> Result<()> {
        let e = LeafEntry {
            key,
            stamp,
            value: self.value_ref(value)?,
        };
        let n = e.encoded_len();
        if !st.pending.is_empty() && st.size + n > NODE_TARGET {
            let first = st.pending[0].key.to_vec();
            let off = self.append_leaf(&st.pending)?;
            st.level.push((first, off));
            st.pending.clear();
            st.size = 4;
        }
        st.size += n;
        st.pending.push(e);
        self.added += 1;
        Ok(())
    }
}

/// How many updates ahead [`TreeWriter::rebuild`] asks for the next keys and values.
const PREFETCH_AHEAD: usize = 12;

/// Asks the CPU to start loading update `i`'s key and value: after a replay's sort they sit
/// at random places in its arena, and waiting for each in turn would dominate the merge.
#[inline]
pub(crate) fn prefetch(ups: &[Update<'_>], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some((k, _, v)) = ups.get(i) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = k.as_ptr();
        // Keys and values are adjacent in the arena: touch every line of both (up to 4).
        let len = k.len() + v.map_or(0, <[u8]>::len);
        let mut off = 0;
        while off < len.min(256) {
            // SAFETY: a prefetch is a hint: it never faults and has no effect on memory,
            // whatever the address (this one is inside the slices anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(off).cast()) };
            off += 64;
        }
    }
}

/// State of [`TreeWriter::rebuild`]: the leaves written so far and the one being filled.
struct Rebuild<'a> {
    /// (first key, offset) of every leaf written.
    level: Vec<(Vec<u8>, u64)>,
    /// Entries of the leaf being filled.
    pending: Vec<LeafEntry<'a>>,
    /// Its encoded size.
    size: usize,
    /// Index of the first update not yet merged.
    next: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use crate::store::{create_store, view_at};
    use duplex_wal::sim::SimStorage;
    use duplex_wal::Storage;
    use std::path::Path;

    fn updates(n: u32, value: &[u8]) -> Vec<(Vec<u8>, Stamp, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let s = Stamp {
                    ts: Timestamp(u64::from(i) + 1),
                    origin: 1,
                };
                (format!("key{i:08}").into_bytes(), s, value.to_vec())
            })
            .collect()
    }

    type Owned = Vec<(Vec<u8>, Stamp, Vec<u8>)>;

    /// A store in the simulation holding an empty tree, and 40,000 entries of 300 bytes
    /// (about 13 MiB of leaves: several buffers through the writing thread).
    fn empty_store() -> (SimStorage, Arc<StoreFile>, TreeView, Owned) {
        let sim = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        storage.create_dir_all(Path::new("/d")).expect("dir");
        let file = create_store(&storage, Path::new("/d"), 1, 1).expect("store");
        let w = TreeWriter::new(&file, crate::format::FILE_HEADER_LEN as u64);
        let (off, len) = w.finish(&Checkpoint::default()).expect("empty");
        let empty = view_at(file.clone(), off, len).expect("view");
        (sim, file, empty, updates(40_000, &[7u8; 300]))
    }

    fn as_updates(owned: &Owned) -> Vec<Update<'_>> {
        owned
            .iter()
            .map(|(k, s, v)| (k.as_slice(), *s, Some(v.as_slice())))
            .collect()
    }

    /// Enough blocks to go through the writing thread several times, then every entry
    /// read back through a view of the checkpoint.
    #[test]
    fn a_large_rebuild_goes_through_the_writing_thread_and_reads_back() {
        let (_sim, file, empty, owned) = empty_store();
        let ups = as_updates(&owned);
        let mut w = TreeWriter::new(&file, empty.committed);
        let root = w.rebuild(&empty, &ups).expect("rebuild");
        assert!(
            w.written > 3 * FLUSH_AT as u64,
            "the test must fill several buffers"
        );
        let ckpt = Checkpoint {
            root,
            lsn: 1,
            ..Checkpoint::default()
        };
        let (off, len) = w.finish(&ckpt).expect("finish");
        let view = Arc::new(view_at(file.clone(), off, len).expect("view"));
        let mut c = view.cursor(Bound::Unbounded).expect("cursor");
        for (k, s, v) in &owned {
            let (ck, (cs, cv)) = c.next_entry().expect("entry").expect("present");
            assert_eq!((&ck, cs, cv.as_ref()), (k, *s, Some(v)));
        }
        assert!(c.next_entry().expect("end").is_none());
    }

    /// A write that fails in the writing thread is returned to the encoder, naming the file.
    #[test]
    fn a_failed_write_in_the_writing_thread_is_reported() {
        // Writes 1-3 are full buffers (the thread), 4 the rest at finish (this thread).
        for nth in [1, 2, 3, 4] {
            let (sim, file, empty, owned) = empty_store();
            let ups = as_updates(&owned);
            sim.fail_write_after(nth);
            let mut w = TreeWriter::new(&file, empty.committed);
            let res = w.rebuild(&empty, &ups).and_then(|root| {
                w.finish(&Checkpoint {
                    root,
                    ..Checkpoint::default()
                })
            });
            let err = res.expect_err("the write failure must surface").to_string();
            assert!(err.contains("/d/store-"), "nth={nth}: {err}");
        }
    }
}
