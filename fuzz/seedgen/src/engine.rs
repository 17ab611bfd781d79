//! Seeds of the engine targets.
//!
//! - `engine_blocks/`: one of each structure, encoded by the engine with fixed stamps and
//!   times: leaf, branch, value and checkpoint blocks, bare bodies, a manifest, a store
//!   header, a write-batch payload and a store file name.
//! - `engine_open/`: damage descriptions (layout in `fuzz/src/engine.rs`) aimed at the
//!   blocks, manifest fields and WAL records of the bases of `duplex_fuzz::engine_base`
//!   (`fuzz/src/engine_base.rs`), whose layout is the same on every build. Each seed is
//!   named after what it does.

use std::fs;
use std::path::Path;

use duplex_engine::batch::encode_batch;
use duplex_engine::format::{
    decode_block, encode_block, encode_branch, encode_leaf, kind, Checkpoint, LeafEntry, Manifest,
    StoreHeader, ValueRef, BLOCK_HEADER_LEN, FILE_HEADER_LEN,
};
use duplex_engine::{Stamp, Timestamp, WriteBatch};
use duplex_wal::format::{decode_record, Decoded, MAX_RECORD_SIZE_LIMIT, SEGMENT_HEADER_LEN};

use duplex_fuzz::engine_base::{self, Base, VARIANT_NAMES};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn stamp(ms: u64, origin: u64) -> Stamp {
    Stamp {
        ts: Timestamp::from_parts(ms, 3),
        origin,
    }
}

fn block(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_block(&mut out, kind, body);
    out
}

/// Seeds of `engine_blocks`.
pub fn blocks(dir: &Path) {
    let entries = [
        LeafEntry {
            key: b"alpha",
            stamp: stamp(1_700_000_000_000, 1),
            value: ValueRef::Inline(b"first value"),
        },
        LeafEntry {
            key: b"beta",
            stamp: stamp(1_700_000_000_001, 2),
            value: ValueRef::Tombstone,
        },
        LeafEntry {
            key: b"gamma",
            stamp: stamp(1_700_000_000_002, 1),
            value: ValueRef::External {
                offset: 4096,
                len: 2000,
            },
        },
        LeafEntry {
            key: b"gamma\0",
            stamp: stamp(1_700_000_000_003, 1),
            value: ValueRef::Inline(b""),
        },
    ];
    let leaf = encode_leaf(&entries);
    write(dir, "leaf-body", &leaf);
    write(dir, "leaf-block", &block(kind::LEAF, &leaf));
    let branch = encode_branch(&[(b"", 64), (b"beta", 512), (b"m", 1024), (b"m\0", 2048)]);
    write(dir, "branch-body", &branch);
    write(dir, "branch-block", &block(kind::BRANCH, &branch));
    write(dir, "value-block", &block(kind::VALUE, &[0xA5; 40]));
    let ckpt = Checkpoint {
        lsn: 42,
        root: 4096,
        entries: 120,
        live_bytes: 30_000,
        max_ts: Timestamp::from_parts(1_700_000_000_000, 9).0,
        prev: 1024,
        origins: vec![(1, 42), (7, 13)],
        max_epoch: 0,
    };
    write(dir, "checkpoint-body", &ckpt.encode());
    write(
        dir,
        "checkpoint-block",
        &block(kind::CHECKPOINT, &ckpt.encode()),
    );
    let with_epoch = Checkpoint {
        max_epoch: 5,
        ..ckpt.clone()
    };
    write(dir, "checkpoint-body-epoch", &with_epoch.encode());
    let m = Manifest {
        node_id: 1,
        generation: 3,
        checkpoint_offset: 8192,
        committed_len: 8256,
        checkpoint_lsn: 42,
    };
    write(dir, "manifest", &m.encode());
    let h = StoreHeader {
        node_id: 1,
        generation: 3,
        created_ms: 1_700_000_000_000,
    };
    write(dir, "store-header", &h.encode());
    let mut b = WriteBatch::new();
    b.put(&b"key"[..], &b"value"[..])
        .delete(&b"gone"[..])
        .put(&b"empty"[..], &b""[..]);
    write(
        dir,
        "batch",
        &encode_batch(stamp(1_700_000_000_000, 1), 0, &b),
    );
    write(
        dir,
        "batch-replicated",
        &encode_batch(stamp(1_700_000_000_005, 4), 77, &b),
    );
    write(dir, "store-file-name", b"store-000042.dpx");
}

/// One `engine_open` input: flags, offset, window.
struct Seed {
    variant: usize,
    /// 0 store, 1 manifest, 2 last WAL segment, 3 stale file.
    target: u8,
    truncate: bool,
    fix: bool,
    compact: bool,
    offset: usize,
    window: Vec<u8>,
}

impl Seed {
    fn new(variant: usize, target: u8, offset: usize, window: &[u8]) -> Self {
        Seed {
            variant,
            target,
            truncate: false,
            fix: false,
            compact: false,
            offset,
            window: window.to_vec(),
        }
    }

    /// A seed that flips the bits of `mask` in the byte at `offset` of `file`.
    fn flip(variant: usize, target: u8, file: &[u8], offset: usize, mask: u8) -> Self {
        Seed::new(variant, target, offset, &[file[offset] ^ mask])
    }

    fn fixed(mut self) -> Self {
        self.fix = true;
        self
    }

    fn compacting(mut self) -> Self {
        self.compact = true;
        self
    }

    fn truncating(mut self) -> Self {
        self.truncate = true;
        self
    }

    fn encode(&self) -> Vec<u8> {
        let flags = self.variant as u8
            | (self.target << 2)
            | if self.truncate { 0x10 } else { 0 }
            | if self.fix { 0x20 } else { 0 }
            | if self.compact { 0x40 } else { 0 };
        let mut out = vec![flags];
        out.extend_from_slice(&(self.offset as u32).to_le_bytes());
        out.extend_from_slice(&self.window);
        out
    }
}

/// (offset, kind, body length) of every block of a store file.
fn store_blocks(b: &[u8]) -> Vec<(usize, u8, usize)> {
    let mut out = Vec::new();
    let mut p = FILE_HEADER_LEN;
    while let Ok((k, body)) = decode_block(&b[p..]) {
        out.push((p, k, body.len()));
        p += (BLOCK_HEADER_LEN + body.len()).next_multiple_of(8);
        if p >= b.len() {
            break;
        }
    }
    out
}

/// (LSN, offset, size) of every record of a WAL segment.
fn wal_records(seg: &[u8]) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    let mut p = SEGMENT_HEADER_LEN as usize;
    while let Decoded::Record(r) = decode_record(&seg[p..], MAX_RECORD_SIZE_LIMIT) {
        out.push((r.lsn, p, r.size));
        p += r.size;
    }
    out
}

fn seeds_for(variant: usize, base: &Base) -> Vec<(String, Seed)> {
    let v = variant;
    let store = base.file(&base.store);
    let mani = base.file(&base.manifest);
    let seg = base.file(&base.wal_last);
    let manifest = Manifest::decode(mani).expect("base manifest");
    let blocks = store_blocks(store);
    let ck = manifest.checkpoint_offset as usize;
    let ck_body = ck + BLOCK_HEADER_LEN;
    let (_, ckpt_body) = decode_block(&store[ck..]).expect("checkpoint block");
    let ckpt = Checkpoint::decode(ckpt_body).expect("checkpoint");
    let first = |k: u8| blocks.iter().find(|b| b.1 == k).copied();
    let mut out = vec![
        ("none".to_string(), Seed::new(v, 0, 0, &[])),
        (
            "none-compact".to_string(),
            Seed::new(v, 0, 0, &[]).compacting(),
        ),
        (
            "store-checkpoint-root-flip".to_string(),
            Seed::flip(v, 0, store, ck_body + 8, 0x08),
        ),
        (
            "store-header-flip".to_string(),
            Seed::flip(v, 0, store, 24, 0x02),
        ),
        (
            "store-after-committed-length".to_string(),
            Seed::new(v, 0, store.len() + 8, b"bytes after the committed length"),
        ),
        (
            "store-truncated".to_string(),
            Seed::new(v, 0, store.len() - 12, &[]).truncating(),
        ),
        (
            "store-checkpoint-lsn-fixed".to_string(),
            Seed::new(v, 0, ck_body, &(ckpt.lsn + 1).to_le_bytes()).fixed(),
        ),
        (
            "store-checkpoint-max-ts-fixed".to_string(),
            Seed::new(v, 0, ck_body + 32, &(1u64 << 62).to_le_bytes()).fixed(),
        ),
        (
            "manifest-flip".to_string(),
            Seed::flip(v, 1, mani, 40, 0x01),
        ),
        (
            "manifest-committed-fixed".to_string(),
            Seed::new(v, 1, 40, &(manifest.committed_len + 8).to_le_bytes()).fixed(),
        ),
        (
            "manifest-generation-fixed".to_string(),
            Seed::new(v, 1, 24, &(manifest.generation + 1).to_le_bytes()).fixed(),
        ),
        (
            "stale-file".to_string(),
            Seed::new(v, 3, 3, b"stale bytes are never read"),
        ),
    ];
    if let Some((off, _, len)) = first(kind::LEAF) {
        // A byte of the first entry's key (timestamps differ from build to build; keys do
        // not): entry offset from the table, then 2+1+8+8+4 bytes of fixed fields.
        let body = off + BLOCK_HEADER_LEN;
        let entry = u32::from_le_bytes(store[body + 4..body + 8].try_into().expect("4"));
        let key_at = body + entry as usize + 23;
        assert!(key_at < body + len, "first key inside the leaf");
        out.push((
            "store-leaf-flip".into(),
            Seed::flip(v, 0, store, key_at + 1, 0x40),
        ));
        // Entry count of the first leaf halved, checksum fixed: a leaf that lost entries.
        let count = u32::from_le_bytes(store[off + 16..off + 20].try_into().expect("four bytes"));
        out.push((
            "store-leaf-count-fixed".into(),
            Seed::new(v, 0, off + BLOCK_HEADER_LEN, &(count / 2).to_le_bytes()).fixed(),
        ));
    }
    if let Some((off, _, _)) = first(kind::VALUE) {
        out.push((
            "store-value-flip".into(),
            Seed::flip(v, 0, store, off + BLOCK_HEADER_LEN + 3, 0x80),
        ));
    }
    if let Some((off, _, _)) = blocks
        .iter()
        .rev()
        .find(|b| b.1 == kind::BRANCH && b.0 < ck)
        .copied()
    {
        // First child pointer of the root-most branch, aimed at the branch itself (fixed
        // checksum): the child-below-parent check must stop the descent.
        let child_table = off + BLOCK_HEADER_LEN + 4;
        let first_child =
            u32::from_le_bytes(store[child_table..child_table + 4].try_into().expect("4")) as usize;
        out.push((
            "store-branch-self-pointer-fixed".into(),
            Seed::new(
                v,
                0,
                off + BLOCK_HEADER_LEN + first_child,
                &(off as u64).to_le_bytes(),
            )
            .fixed(),
        ));
        out.push((
            "store-branch-flip".into(),
            Seed::flip(v, 0, store, off + BLOCK_HEADER_LEN + first_child + 9, 0x01),
        ));
    }
    if ckpt.prev != 0 {
        // The previous checkpoint block is dead: damage there must change nothing.
        out.push((
            "store-dead-checkpoint".into(),
            Seed::new(v, 0, ckpt.prev as usize + 20, &[0xFF; 8]),
        ));
        // The manifest pointed back at the previous checkpoint (checksum fixed).
        let (_, prev_body) = decode_block(&store[ckpt.prev as usize..]).expect("prev");
        let prev_end =
            ckpt.prev as usize + (BLOCK_HEADER_LEN + prev_body.len()).next_multiple_of(8);
        let mut w = ckpt.prev.to_le_bytes().to_vec();
        w.extend_from_slice(&(prev_end as u64).to_le_bytes());
        out.push((
            "manifest-previous-checkpoint-fixed".into(),
            Seed::new(v, 1, 32, &w).fixed(),
        ));
    }
    let recs = wal_records(seg);
    if let (Some(mid), Some(last)) = (recs.get(recs.len() / 2), recs.last()) {
        let end = last.1 + last.2;
        out.push((
            "wal-middle-record-flip".into(),
            Seed::flip(v, 2, seg, mid.1 + 30, 0x10),
        ));
        out.push((
            "wal-last-record-flip".into(),
            Seed::flip(v, 2, seg, last.1 + 30, 0x10),
        ));
        out.push((
            "wal-junk-after-records".into(),
            Seed::new(v, 2, end + 40, b"stray bytes after empty space"),
        ));
        out.push((
            "wal-truncated-in-last-record".into(),
            Seed::new(v, 2, last.1 + 10, &[]).truncating(),
        ));
        out.push(("wal-header-flip".into(), Seed::flip(v, 2, seg, 17, 0x01)));
        // The first key of the last batch renamed (checksum fixed): a valid record that
        // says something else.
        out.push((
            "wal-last-record-key-fixed".into(),
            Seed::new(v, 2, last.1 + 24 + 28 + 5, b"z").fixed(),
        ));
    }
    out
}

/// Seeds of `engine_open`.
pub fn open(dir: &Path) {
    for (v, variant) in VARIANT_NAMES.iter().enumerate() {
        let base = engine_base::build(v);
        for (name, seed) in seeds_for(v, &base) {
            write(dir, &format!("{variant}-{name}"), &seed.encode());
        }
    }
}
