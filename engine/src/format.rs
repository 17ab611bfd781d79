//! Byte layouts of the page store: file header, blocks (leaf, branch, value, checkpoint) and
//! the manifest. `docs/FORMAT.md` is the specification; this module is its implementation.
//!
//! Invariants: little-endian integers; every block carries a CRC32C over its header and
//! body; every length is checked against the bytes present before anything is sliced or
//! allocated; blocks start on 8-byte boundaries.

use crate::error::CorruptKind;
use crate::hlc::{Stamp, Timestamp};
use duplex_wal::le::Cursor;

/// Magic bytes opening a store file.
pub const STORE_MAGIC: [u8; 8] = *b"DPLXSTOR";
/// Magic bytes opening the manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"DPLXMANI";
/// Format version of store files and the manifest.
pub const STORE_VERSION: u32 = 1;
/// Size of the store file header and of the manifest.
pub const FILE_HEADER_LEN: usize = 64;
/// Size of a block header.
pub const BLOCK_HEADER_LEN: usize = 16;
/// Blocks start on multiples of this.
pub const BLOCK_ALIGN: usize = 8;
/// Largest block body accepted when reading.
pub const MAX_BLOCK_BODY: usize = 1 << 30;

/// Block kinds.
pub mod kind {
    /// Sorted key/version entries.
    pub const LEAF: u8 = 1;
    /// Sorted separator keys and child offsets.
    pub const BRANCH: u8 = 2;
    /// One large value, referenced from a leaf.
    pub const VALUE: u8 = 3;
    /// A checkpoint record.
    pub const CHECKPOINT: u8 = 4;
}

/// Leaf entry flag: the entry is a tombstone.
pub const FLAG_TOMBSTONE: u8 = 0x01;
/// Leaf entry flag: the value lives in a value block.
pub const FLAG_EXTERNAL: u8 = 0x02;

fn crc_check(stored: u32, actual: u32) -> Result<(), CorruptKind> {
    if stored == actual {
        Ok(())
    } else {
        Err(CorruptKind::CrcMismatch {
            expected: stored,
            actual,
        })
    }
}

use duplex_wal::le::{u32_at, u64_at};

/// Header of a 64-byte file (store header or manifest): magic + fields + CRC.
fn encode_fixed(magic: &[u8; 8], fields: &[u64; 5]) -> [u8; FILE_HEADER_LEN] {
    let mut b = [0u8; FILE_HEADER_LEN];
    b[0..8].copy_from_slice(magic);
    b[8..12].copy_from_slice(&STORE_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(FILE_HEADER_LEN as u32).to_le_bytes());
    for (i, f) in fields.iter().enumerate() {
        b[16 + i * 8..24 + i * 8].copy_from_slice(&f.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_fixed(magic: &[u8; 8], b: &[u8]) -> Result<[u64; 5], CorruptKind> {
    if b.len() < FILE_HEADER_LEN {
        return Err(CorruptKind::Truncated);
    }
    if &b[0..8] != magic {
        return Err(CorruptKind::BadMagic);
    }
    crc_check(u32_at(b, 60), crc32c::crc32c(&b[0..60]))?;
    let version = u32_at(b, 8);
    if version > STORE_VERSION {
        return Err(CorruptKind::NewerFormat {
            found: version,
            supported: STORE_VERSION,
        });
    }
    if version != STORE_VERSION {
        return Err(CorruptKind::UnsupportedVersion(version));
    }
    if u32_at(b, 12) as usize != FILE_HEADER_LEN || b[56..60].iter().any(|&x| x != 0) {
        return Err(CorruptKind::Invalid("header length or reserved bytes"));
    }
    let mut f = [0u64; 5];
    for (i, v) in f.iter_mut().enumerate() {
        *v = u64_at(b, 16 + i * 8);
    }
    Ok(f)
}

/// The header at the start of a store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHeader {
    /// Node that owns the store.
    pub node_id: u64,
    /// Generation (bumped by every compaction).
    pub generation: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
}

impl StoreHeader {
    /// Encodes the header.
    // Format: magic[8]="DPLXSTOR" version:u32 len:u32=64 node_id:u64 generation:u64 created_ms:u64 0:u64 0:u64 0[4] crc32c(0..60):u32
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        encode_fixed(
            &STORE_MAGIC,
            &[self.node_id, self.generation, self.created_ms, 0, 0],
        )
    }

    /// Decodes and checks the header.
    pub fn decode(b: &[u8]) -> Result<Self, CorruptKind> {
        let f = decode_fixed(&STORE_MAGIC, b)?;
        if f[3] != 0 || f[4] != 0 {
            return Err(CorruptKind::Invalid("reserved header fields"));
        }
        Ok(StoreHeader {
            node_id: f[0],
            generation: f[1],
            created_ms: f[2],
        })
    }
}

/// The manifest: which store generation and checkpoint are current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// Node that owns the database.
    pub node_id: u64,
    /// Current store generation (file `store-<generation>.dpx`).
    pub generation: u64,
    /// Offset of the current checkpoint block.
    pub checkpoint_offset: u64,
    /// Committed length of the store file: the end of that checkpoint block.
    pub committed_len: u64,
    /// WAL LSN the checkpoint covers.
    pub checkpoint_lsn: u64,
}

impl Manifest {
    /// Encodes the manifest.
    // Format: magic[8]="DPLXMANI" version:u32 len:u32=64 node_id:u64 generation:u64 checkpoint_offset:u64 committed_len:u64 checkpoint_lsn:u64 0[4] crc32c(0..60):u32
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        encode_fixed(
            &MANIFEST_MAGIC,
            &[
                self.node_id,
                self.generation,
                self.checkpoint_offset,
                self.committed_len,
                self.checkpoint_lsn,
            ],
        )
    }

    /// Decodes and checks the manifest.
    pub fn decode(b: &[u8]) -> Result<Self, CorruptKind> {
        let f = decode_fixed(&MANIFEST_MAGIC, b)?;
        let m = Manifest {
            node_id: f[0],
            generation: f[1],
            checkpoint_offset: f[2],
            committed_len: f[3],
            checkpoint_lsn: f[4],
        };
        if m.checkpoint_offset < FILE_HEADER_LEN as u64
            || m.committed_len <= m.checkpoint_offset
            || m.checkpoint_lsn > duplex_wal::format::MAX_LSN
        {
            return Err(CorruptKind::Invalid(
                "checkpoint offset or committed length",
            ));
        }
        Ok(m)
    }
}

/// Bytes a block with a body of `body_len` bytes takes, padding included.
pub fn block_size(body_len: usize) -> usize {
    (BLOCK_HEADER_LEN + body_len).next_multiple_of(BLOCK_ALIGN)
}

/// Appends a block to `out` (which must end on a block boundary relative to the file).
// Format: crc32c:u32 body_len:u32 kind:u8 reserved[7]=0 body[body_len] zero-pad to 8
pub fn encode_block(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    encode_block_with(out, kind, |o| o.extend_from_slice(body));
}

/// Appends a block whose body `body` writes straight into `out` (no intermediate buffer).
pub fn encode_block_with(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; BLOCK_HEADER_LEN]);
    body(out);
    let len = out.len() - start - BLOCK_HEADER_LEN;
    out[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 8] = kind;
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + block_size(len), 0);
}

/// Decodes and checks the block at the start of `b`; returns its kind and body.
pub fn decode_block(b: &[u8]) -> Result<(u8, &[u8]), CorruptKind> {
    decode_block_with(b, true)
}

/// [`decode_block`] of a block whose CRC was checked before in this open file (bytes
/// below the committed length never change): lengths, kind and reserved bytes are checked
/// again, the CRC is not.
pub(crate) fn decode_block_checked_before(b: &[u8]) -> Result<(u8, &[u8]), CorruptKind> {
    decode_block_with(b, false)
}

fn decode_block_with(b: &[u8], check_crc: bool) -> Result<(u8, &[u8]), CorruptKind> {
    if b.len() < BLOCK_HEADER_LEN {
        return Err(CorruptKind::Truncated);
    }
    let len = u32_at(b, 4) as usize;
    if len > MAX_BLOCK_BODY {
        return Err(CorruptKind::Invalid("block length"));
    }
    let end = BLOCK_HEADER_LEN + len;
    if b.len() < end {
        return Err(CorruptKind::Truncated);
    }
    if check_crc {
        crc_check(u32_at(b, 0), crc32c::crc32c(&b[4..end]))?;
    }
    if b[9..16].iter().any(|&x| x != 0) {
        return Err(CorruptKind::Invalid("block reserved bytes"));
    }
    Ok((b[8], &b[BLOCK_HEADER_LEN..end]))
}

/// Where a leaf entry's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// A tombstone: no value.
    Tombstone,
    /// Stored in the leaf.
    Inline(&'a [u8]),
    /// Stored in the value block at `offset`, `len` bytes.
    External {
        /// Offset of the value block.
        offset: u64,
        /// Value length.
        len: u32,
    },
}

/// One decoded leaf entry, borrowing from the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafEntry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// Its version stamp.
    pub stamp: Stamp,
    /// Its value.
    pub value: ValueRef<'a>,
}

impl LeafEntry<'_> {
    /// Bytes this entry takes in a leaf body, offset slot included.
    pub fn encoded_len(&self) -> usize {
        4 + 2
            + 1
            + 8
            + 8
            + 4
            + self.key.len()
            + match self.value {
                ValueRef::Tombstone => 0,
                ValueRef::Inline(v) => v.len(),
                ValueRef::External { .. } => 8,
            }
    }
}

/// Encodes a leaf body from sorted entries.
// Format: count:u32 offsets:[u32;count] then per entry: key_len:u16 flags:u8 ts:u64 origin:u64 val_len:u32 key[key_len] (value[val_len] | value_offset:u64 | nothing)
pub fn encode_leaf(entries: &[LeafEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_leaf_into(&mut out, entries);
    out
}

/// Appends a leaf body for `entries` to `out`.
pub fn encode_leaf_into(out: &mut Vec<u8>, entries: &[LeafEntry<'_>]) {
    let base = out.len();
    let table = 4 + 4 * entries.len();
    out.resize(base + table, 0);
    out[base..base + 4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let off = (out.len() - base) as u32;
        out[base + 4 + 4 * i..base + 8 + 4 * i].copy_from_slice(&off.to_le_bytes());
        let (flags, vlen) = match e.value {
            ValueRef::Tombstone => (FLAG_TOMBSTONE, 0),
            ValueRef::Inline(v) => (0, v.len() as u32),
            ValueRef::External { len, .. } => (FLAG_EXTERNAL, len),
        };
        out.extend_from_slice(&(e.key.len() as u16).to_le_bytes());
        out.push(flags);
        out.extend_from_slice(&e.stamp.ts.0.to_le_bytes());
        out.extend_from_slice(&e.stamp.origin.to_le_bytes());
        out.extend_from_slice(&vlen.to_le_bytes());
        out.extend_from_slice(e.key);
        match e.value {
            ValueRef::Tombstone => {}
            ValueRef::Inline(v) => out.extend_from_slice(v),
            ValueRef::External { offset, .. } => out.extend_from_slice(&offset.to_le_bytes()),
        }
    }
}

/// A leaf body, checked on construction, read entry by entry.
#[derive(Debug, Clone, Copy)]
pub struct Leaf<'a> {
    body: &'a [u8],
    count: usize,
}

impl<'a> Leaf<'a> {
    /// Checks the offset table; entries are checked as they are read.
    pub fn parse(body: &'a [u8]) -> Result<Self, CorruptKind> {
        let count = table_count(body)?;
        Ok(Leaf { body, count })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the leaf holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Entry `i`.
    pub fn entry(&self, i: usize) -> Result<LeafEntry<'a>, CorruptKind> {
        let off = u32_at(self.body, 4 + 4 * i) as usize;
        let mut c = Cursor::new(self.body.get(off..).ok_or(CorruptKind::Truncated)?);
        let t = CorruptKind::Truncated;
        let klen = c.u16().ok_or(t.clone())? as usize;
        let flags = c.u8().ok_or(t.clone())?;
        let ts = c.u64().ok_or(t.clone())?;
        let origin = c.u64().ok_or(t.clone())?;
        let vlen = c.u32().ok_or(t.clone())?;
        let key = c.take(klen).ok_or(t.clone())?;
        let value = match flags {
            FLAG_TOMBSTONE if vlen == 0 => ValueRef::Tombstone,
            0 => ValueRef::Inline(c.take(vlen as usize).ok_or(t.clone())?),
            FLAG_EXTERNAL => ValueRef::External {
                offset: c.u64().ok_or(t)?,
                len: vlen,
            },
            _ => return Err(CorruptKind::Invalid("leaf entry flags")),
        };
        Ok(LeafEntry {
            key,
            stamp: Stamp {
                ts: Timestamp(ts),
                origin,
            },
            value,
        })
    }

    /// Key of entry `i`.
    pub fn key(&self, i: usize) -> Result<&'a [u8], CorruptKind> {
        self.entry(i).map(|e| e.key)
    }

    /// Index of the first entry whose key is >= `key`.
    pub fn lower_bound(&self, key: &[u8]) -> Result<usize, CorruptKind> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid)? < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Encodes a branch body from (first key, child offset) pairs.
// Format: count:u32 offsets:[u32;count] then per child: child_offset:u64 key_len:u16 key[key_len]
pub fn encode_branch(children: &[(&[u8], u64)]) -> Vec<u8> {
    let table = 4 + 4 * children.len();
    let mut out = vec![0u8; table];
    out[0..4].copy_from_slice(&(children.len() as u32).to_le_bytes());
    for (i, (key, child)) in children.iter().enumerate() {
        let off = out.len() as u32;
        out[4 + 4 * i..8 + 4 * i].copy_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&child.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
    }
    out
}

/// Bytes a branch child takes, offset slot included.
pub fn branch_child_len(key_len: usize) -> usize {
    4 + 8 + 2 + key_len
}

/// A branch body, read child by child.
#[derive(Debug, Clone, Copy)]
pub struct Branch<'a> {
    body: &'a [u8],
    count: usize,
}

impl<'a> Branch<'a> {
    /// Checks the offset table; a branch has at least one child.
    pub fn parse(body: &'a [u8]) -> Result<Self, CorruptKind> {
        let count = table_count(body)?;
        if count == 0 {
            return Err(CorruptKind::Invalid("empty branch"));
        }
        Ok(Branch { body, count })
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the branch has no child (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Child `i`: its first key and block offset.
    pub fn child(&self, i: usize) -> Result<(&'a [u8], u64), CorruptKind> {
        let off = u32_at(self.body, 4 + 4 * i) as usize;
        let mut c = Cursor::new(self.body.get(off..).ok_or(CorruptKind::Truncated)?);
        let child = c.u64().ok_or(CorruptKind::Truncated)?;
        let klen = c.u16().ok_or(CorruptKind::Truncated)? as usize;
        let key = c.take(klen).ok_or(CorruptKind::Truncated)?;
        Ok((key, child))
    }

    /// Index of the child whose range holds `key`: the last child whose first key is
    /// <= `key`, or 0.
    pub fn route(&self, key: &[u8]) -> Result<usize, CorruptKind> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.child(mid)?.0 <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo.saturating_sub(1))
    }
}

fn table_count(body: &[u8]) -> Result<usize, CorruptKind> {
    if body.len() < 4 {
        return Err(CorruptKind::Truncated);
    }
    let count = u32_at(body, 0) as usize;
    if count > (body.len() - 4) / 4 {
        return Err(CorruptKind::Invalid("entry count exceeds the block"));
    }
    Ok(count)
}

/// A checkpoint record: what the store holds as of a WAL LSN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Every WAL record up to this LSN is reflected in the tree.
    pub lsn: u64,
    /// Offset of the root block; 0 for an empty tree.
    pub root: u64,
    /// Entries in the tree, tombstones included.
    pub entries: u64,
    /// Bytes of blocks reachable from the root (for the dead-space ratio).
    pub live_bytes: u64,
    /// Largest timestamp in the store.
    pub max_ts: u64,
    /// Offset of the previous checkpoint block in this file; 0 if none.
    pub prev: u64,
    /// Per-origin high-water marks: (origin node, last origin LSN applied).
    pub origins: Vec<(u64, u64)>,
    /// Highest fencing epoch logged up to `lsn` ([`crate::batch::KIND_EPOCH`]); encoded
    /// only when not 0, so a store that never saw one keeps the version 1 layout.
    pub max_epoch: u64,
}

/// Most origins a checkpoint may list.
pub const MAX_ORIGINS: usize = 4096;

impl Checkpoint {
    /// Encodes the checkpoint body.
    // Format: lsn:u64 root:u64 entries:u64 live_bytes:u64 max_ts:u64 prev:u64 n:u32 n x (origin:u64 origin_lsn:u64) [max_epoch:u64 if not 0]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(52 + 16 * self.origins.len());
        for v in [
            self.lsn,
            self.root,
            self.entries,
            self.live_bytes,
            self.max_ts,
            self.prev,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.origins.len() as u32).to_le_bytes());
        for (o, l) in &self.origins {
            out.extend_from_slice(&o.to_le_bytes());
            out.extend_from_slice(&l.to_le_bytes());
        }
        if self.max_epoch != 0 {
            out.extend_from_slice(&self.max_epoch.to_le_bytes());
        }
        out
    }

    /// Decodes a checkpoint body.
    pub fn decode(body: &[u8]) -> Result<Self, CorruptKind> {
        let t = CorruptKind::Truncated;
        let mut c = Cursor::new(body);
        let mut f = [0u64; 6];
        for v in f.iter_mut() {
            *v = c.u64().ok_or(t.clone())?;
        }
        let n = c.u32().ok_or(t.clone())? as usize;
        if n > MAX_ORIGINS || (n * 16 != c.remaining() && n * 16 + 8 != c.remaining()) {
            return Err(CorruptKind::Invalid("origin count"));
        }
        let mut origins = Vec::with_capacity(n);
        for _ in 0..n {
            origins.push((c.u64().ok_or(t.clone())?, c.u64().ok_or(t.clone())?));
        }
        // Written only when not 0, so one value has one encoding (a present 0 is damage).
        let max_epoch = if c.remaining() == 8 {
            match c.u64().ok_or(t.clone())? {
                0 => return Err(CorruptKind::Invalid("checkpoint max_epoch present but 0")),
                e => e,
            }
        } else {
            0
        };
        // Counters far beyond any real store can only be damage or forgery; refusing them
        // keeps every later addition from overflowing.
        if f[0] > duplex_wal::format::MAX_LSN
            || f[2] > 1 << 62
            || f[3] > 1 << 62
            || f[4] >= crate::hlc::MAX_TIMESTAMP
        {
            return Err(CorruptKind::Invalid("checkpoint counter out of range"));
        }
        Ok(Checkpoint {
            lsn: f[0],
            root: f[1],
            entries: f[2],
            live_bytes: f[3],
            max_ts: f[4],
            prev: f[5],
            origins,
            max_epoch,
        })
    }
}

/// File name of store generation `generation`.
pub fn store_file_name(generation: u64) -> String {
    format!("store-{generation:06}.dpx")
}

/// Parses a store file name back into its generation.
pub fn parse_store_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("store-")?.strip_suffix(".dpx")?;
    if digits.len() < 6 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ts: u64) -> Stamp {
        Stamp {
            ts: Timestamp(ts),
            origin: 1,
        }
    }

    #[test]
    fn leaf_round_trips_and_searches() {
        let entries = [
            LeafEntry {
                key: b"a",
                stamp: stamp(1),
                value: ValueRef::Inline(b"one"),
            },
            LeafEntry {
                key: b"c",
                stamp: stamp(2),
                value: ValueRef::Tombstone,
            },
            LeafEntry {
                key: b"e",
                stamp: stamp(3),
                value: ValueRef::External {
                    offset: 4096,
                    len: 100_000,
                },
            },
        ];
        let body = encode_leaf(&entries);
        assert_eq!(
            body.len(),
            4 + entries.iter().map(|e| e.encoded_len()).sum::<usize>()
        );
        let leaf = Leaf::parse(&body).expect("parse");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(leaf.entry(i).expect("entry"), *e);
        }
        assert_eq!(leaf.lower_bound(b"b").expect("lb"), 1);
        assert_eq!(leaf.lower_bound(b"c").expect("lb"), 1);
        assert_eq!(leaf.lower_bound(b"z").expect("lb"), 3);
    }

    #[test]
    fn branch_routes() {
        let body = encode_branch(&[(b"", 100), (b"m", 200), (b"t", 300)]);
        let b = Branch::parse(&body).expect("parse");
        assert_eq!(b.route(b"a").expect("route"), 0);
        assert_eq!(b.route(b"m").expect("route"), 1);
        assert_eq!(b.route(b"s").expect("route"), 1);
        assert_eq!(b.route(b"zz").expect("route"), 2);
        assert_eq!(b.child(2).expect("child"), (&b"t"[..], 300));
    }

    #[test]
    fn block_detects_every_flipped_bit() {
        let mut out = Vec::new();
        encode_block(&mut out, kind::LEAF, b"some body bytes");
        assert_eq!(
            decode_block(&out),
            Ok((kind::LEAF, &b"some body bytes"[..]))
        );
        for i in 0..BLOCK_HEADER_LEN + 15 {
            for bit in 0..8 {
                let mut d = out.clone();
                d[i] ^= 1 << bit;
                assert!(decode_block(&d).is_err(), "flip {i}/{bit}");
            }
        }
    }

    #[test]
    fn manifest_and_header_round_trip() {
        let m = Manifest {
            node_id: 2,
            generation: 3,
            checkpoint_offset: 4096,
            committed_len: 5000,
            checkpoint_lsn: 77,
        };
        assert_eq!(Manifest::decode(&m.encode()), Ok(m));
        let h = StoreHeader {
            node_id: 2,
            generation: 3,
            created_ms: 9,
        };
        assert_eq!(StoreHeader::decode(&h.encode()), Ok(h));
        assert_eq!(StoreHeader::decode(&m.encode()), Err(CorruptKind::BadMagic));
        let c = Checkpoint {
            lsn: 5,
            root: 64,
            entries: 10,
            live_bytes: 1000,
            max_ts: 99,
            prev: 0,
            origins: vec![(1, 5), (2, 7)],
            max_epoch: 0,
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c.clone()));
        // An epoch adds 8 bytes after the origins; without one the layout is version 1's.
        let with_epoch = Checkpoint {
            max_epoch: 7,
            ..c.clone()
        };
        assert_eq!(with_epoch.encode().len(), c.encode().len() + 8);
        assert_eq!(Checkpoint::decode(&with_epoch.encode()), Ok(with_epoch));
        assert_eq!(parse_store_file_name(&store_file_name(12)), Some(12));
    }

    #[test]
    fn lying_counts_are_refused() {
        let mut body = encode_leaf(&[]);
        body[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Leaf::parse(&body).is_err());
        assert!(Branch::parse(&encode_branch(&[])).is_err());
        let mut c = Checkpoint::default().encode();
        let n = c.len() - 4;
        c[n..].copy_from_slice(&1000u32.to_le_bytes());
        assert!(Checkpoint::decode(&c).is_err());
    }
}
