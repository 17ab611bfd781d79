//! Writing the tree: [`TreeWriter`] appends blocks after a store file's committed length
//! and keeps the accounting a checkpoint records (bytes written, bytes no longer reached,
//! entries added). A checkpoint [`merge`](TreeWriter::merge)s sorted updates by rewriting
//! only the leaves and branches they touch; compaction and large merges
//! [`rebuild`](TreeWriter::rebuild) the whole tree with full leaves. Children are written
//! before their parents, so a child's offset is always below its parent's.

use std::sync::Arc;

use super::prefetch::{prefetch, PREFETCH_AHEAD};
use super::read::TreeView;
use super::writeback::{BgWriter, FLUSH_AT, IN_FLIGHT};
use super::{Update, INLINE_MAX, MAX_DEPTH, NODE_TARGET};
use crate::error::{CorruptKind, Error, Result};
use crate::format::{
    block_size, encode_block, encode_block_with, encode_branch, encode_leaf_into, kind, Branch,
    Checkpoint, Leaf, LeafEntry, ValueRef,
};
use crate::hlc::Stamp;
use crate::store_file::StoreFile;

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
    /// leaves anyway. Every old block is checked (its CRC once per open file); old values
    /// are copied over.
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
    use crate::store_file::create_store;
    use crate::tree::view_at;
    use duplex_wal::sim::SimStorage;
    use duplex_wal::Storage;
    use std::ops::Bound;
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
        let file = create_store(&storage, Path::new("/d"), 1, 1, 0).expect("store");
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
