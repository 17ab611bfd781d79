//! Reading the tree: a [`TreeView`] of one checkpoint over the mapped committed bytes of its
//! store file, and a [`TreeCursor`] walking its entries in key order. Every block is
//! checked against its CRC the first time the open file meets it ([`crate::verified`]:
//! the committed bytes never change), its lengths and header every time.

use std::ops::Bound;
use std::sync::Arc;

use duplex_wal::le::u32_at;
use duplex_wal::Mapped;

use super::{TreeVersion, MAX_DEPTH};
use crate::error::{CorruptKind, Error, Result};
use crate::format::{decode_block, kind, Branch, Checkpoint, Leaf, ValueRef, BLOCK_ALIGN};
use crate::store_file::StoreFile;

/// A key's stamp and value (`None`: a tombstone) borrowed from a [`TreeView`].
pub type TreeRef<'a> = (crate::hlc::Stamp, Option<&'a [u8]>);

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
    pub(crate) fn corrupt(&self, offset: u64, kind: CorruptKind) -> Error {
        Error::corrupt(&self.file.path, offset, kind)
    }

    /// The checked block at `off`: its kind and body. Its CRC is checked the first time the
    /// open file meets it ([`crate::verified`]); after that its lengths and header.
    pub fn block(&self, off: u64) -> Result<(u8, &[u8])> {
        let bytes = self.map.bytes();
        if !off.is_multiple_of(BLOCK_ALIGN as u64) || off >= self.ckpt_offset {
            return Err(self.corrupt(off, CorruptKind::Invalid("block offset")));
        }
        let b = &bytes[off as usize..self.ckpt_offset as usize];
        if self.file.verified.contains(off) {
            return crate::format::decode_block_checked_before(b).map_err(|k| self.corrupt(off, k));
        }
        let r = decode_block(b).map_err(|k| self.corrupt(off, k))?;
        self.file.verified.insert(off);
        Ok(r)
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
        let len = u32_at(b, 4) as usize;
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
        Ok(self
            .get_ref(key)?
            .map(|(stamp, v)| (stamp, v.map(<[u8]>::to_vec))))
    }

    /// The stamp and value (`None`: a tombstone) of `key` in the tree, the value borrowed
    /// from the mapped file; `None` if the tree does not hold `key`.
    pub fn get_ref(&self, key: &[u8]) -> Result<Option<TreeRef<'_>>> {
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
        Ok(Some((e.stamp, self.value_bytes(off, e.value)?)))
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
    /// Offset of the leaf the last entry came from (or the next one will), if any.
    pub(crate) fn leaf_offset(&self) -> Option<u64> {
        self.leaf.map(|(off, _)| off)
    }

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

/// A view of `file` as of the checkpoint block at `offset`, which must end at `committed`.
pub fn view_at(file: Arc<StoreFile>, offset: u64, committed: u64) -> Result<TreeView> {
    let map = file
        .file
        .map(committed)
        .map_err(|e| Error::io("map", &file.path, e))?;
    let bytes = map.bytes();
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let b = bytes
        .get(start..)
        .ok_or_else(|| Error::corrupt(&file.path, offset, CorruptKind::Truncated))?;
    let (k, body) = decode_block(b).map_err(|kd| Error::corrupt(&file.path, offset, kd))?;
    if k != kind::CHECKPOINT {
        return Err(Error::corrupt(
            &file.path,
            offset,
            CorruptKind::WrongBlock {
                expected: "checkpoint",
                found: k,
            },
        ));
    }
    let end = offset + crate::format::block_size(body.len()) as u64;
    if end != committed {
        return Err(Error::corrupt(
            &file.path,
            offset,
            CorruptKind::Invalid("checkpoint does not end at the committed length"),
        ));
    }
    let ckpt = Checkpoint::decode(body).map_err(|kd| Error::corrupt(&file.path, offset, kd))?;
    if ckpt.root >= offset {
        return Err(Error::corrupt(
            &file.path,
            offset,
            CorruptKind::Invalid("root after its checkpoint"),
        ));
    }
    Ok(TreeView {
        file,
        map,
        ckpt,
        ckpt_offset: offset,
        committed,
    })
}
