//! Feeds arbitrary bytes to every decoder of the engine's on-disk formats.
//!
//! The input is decoded as a block (`decode_block`, then its body by kind), as a leaf body,
//! a branch body, a checkpoint body, the manifest, a store header and a write batch (WAL
//! payload of kind 1), and as a store file name. Each is done again with the checksum
//! recomputed (block CRC at bytes 0..4, file-header CRC at bytes 60..64), so that the checks
//! behind a checksum are reached.
//!
//! Properties: no panic, no allocation above `duplex_fuzz::ALLOC_LIMIT`; whatever decodes
//! re-encodes to the bytes it came from (a block's header and body; a leaf's and a branch's
//! every entry, byte for byte at the offset its table names; a checkpoint body, the
//! manifest, a store header and a batch exactly); the searches agree with the order of the
//! keys when the keys are sorted (`lower_bound` finds every key at its index, `route`
//! sends every first key to its child); a recomputed checksum is never reported wrong.
#![no_main]

use duplex_engine::batch::{decode_batch, encode_batch_seen};
use duplex_engine::format::{
    block_size, decode_block, encode_block, encode_branch, encode_leaf, kind,
    parse_store_file_name, store_file_name, Branch, Checkpoint, Leaf, LeafEntry, Manifest,
    StoreHeader, ValueRef, BLOCK_HEADER_LEN, FILE_HEADER_LEN, FLAG_EXTERNAL, FLAG_TOMBSTONE,
    MAX_ORIGINS,
};
use duplex_engine::{CorruptKind, Stamp, Timestamp, WriteBatch};
use duplex_wal::le::{u32_at, u64_at};
use libfuzzer_sys::fuzz_target;

const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 1 << 20;

/// The `u32` field at `at` (an offset or a length), as a `usize`. The caller checked that
/// `b` holds `at + 4` bytes.
fn usize_at(b: &[u8], at: usize) -> usize {
    u32_at(b, at) as usize
}

/// The key just after `k` in byte order.
fn successor(k: &[u8]) -> Vec<u8> {
    let mut s = k.to_vec();
    s.push(0);
    s
}

fn check_leaf(body: &[u8]) {
    let Ok(leaf) = Leaf::parse(body) else {
        return;
    };
    let n = leaf.len();
    assert!(
        4 + 4 * n <= body.len(),
        "leaf count beyond its offset table"
    );
    assert_eq!(leaf.is_empty(), n == 0);
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        match leaf.entry(i) {
            Ok(e) => {
                // The flags byte is the 3rd byte of the entry.
                let off = usize_at(body, 4 + 4 * i);
                let flags = body[off + 2];
                match e.value {
                    ValueRef::Tombstone => assert_eq!(flags, FLAG_TOMBSTONE),
                    ValueRef::Inline(_) => assert_eq!(flags, 0),
                    ValueRef::External { .. } => assert_eq!(flags, FLAG_EXTERNAL),
                }
                entries.push((off, e));
            }
            Err(_) => return,
        }
    }
    // Searches never fail once every entry decodes, and agree with sorted keys.
    let sorted = entries.windows(2).all(|w| w[0].1.key < w[1].1.key);
    for (i, (_, e)) in entries.iter().enumerate() {
        let at = leaf
            .lower_bound(e.key)
            .expect("lower_bound over decodable entries");
        let next = leaf
            .lower_bound(&successor(e.key))
            .expect("lower_bound over decodable entries");
        if sorted {
            assert_eq!(at, i, "lower_bound misses a key of a sorted leaf");
            assert_eq!(next, i + 1, "lower_bound past a key of a sorted leaf");
        }
    }
    let lb = leaf.lower_bound(&[]).expect("lower_bound of the empty key");
    assert_eq!(lb, 0, "lower_bound of the empty key");
    // Re-encode: every entry's bytes equal the bytes at its offset in the original.
    let plain: Vec<LeafEntry<'_>> = entries.iter().map(|(_, e)| *e).collect();
    let enc = encode_leaf(&plain);
    assert_eq!(
        enc.len(),
        4 + plain.iter().map(|e| e.encoded_len()).sum::<usize>(),
        "encoded_len disagrees with encode_leaf"
    );
    let again = Leaf::parse(&enc).expect("parse a re-encoded leaf");
    assert_eq!(again.len(), n);
    for (i, (off, e)) in entries.iter().enumerate() {
        assert_eq!(again.entry(i).expect("re-encoded entry"), *e);
        let eoff = usize_at(&enc, 4 + 4 * i);
        let len = e.encoded_len() - 4;
        assert_eq!(
            body[*off..*off + len],
            enc[eoff..eoff + len],
            "leaf entry {i} does not re-encode to its bytes"
        );
    }
}

fn check_branch(body: &[u8]) {
    let Ok(br) = Branch::parse(body) else {
        return;
    };
    let n = br.len();
    assert!(n >= 1 && 4 + 4 * n <= body.len(), "branch count");
    assert!(!br.is_empty());
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        match br.child(i) {
            Ok(c) => children.push((usize_at(body, 4 + 4 * i), c)),
            Err(_) => return,
        }
    }
    let sorted = children.windows(2).all(|w| w[0].1 .0 < w[1].1 .0);
    for (i, (_, (k, _))) in children.iter().enumerate() {
        let r = br.route(k).expect("route over decodable children");
        let r2 = br
            .route(&successor(k))
            .expect("route over decodable children");
        assert!(r < n && r2 < n, "route out of range");
        if sorted {
            // Child i holds keys >= its first key and < the next child's first key.
            assert_eq!(r, i, "route sends a child's first key elsewhere");
            let next_is_successor = children
                .get(i + 1)
                .is_some_and(|(_, (nk, _))| *nk == &successor(k)[..]);
            if !next_is_successor {
                assert_eq!(
                    r2, i,
                    "route sends the key after a child's first key elsewhere"
                );
            }
        }
    }
    let r = br.route(&[]).expect("route of the empty key");
    if sorted {
        assert_eq!(r, 0, "child 0 also holds keys below its first key");
    }
    let plain: Vec<(&[u8], u64)> = children.iter().map(|(_, c)| *c).collect();
    let enc = encode_branch(&plain);
    let again = Branch::parse(&enc).expect("parse a re-encoded branch");
    for (i, (off, (k, child))) in children.iter().enumerate() {
        assert_eq!(again.child(i).expect("re-encoded child"), (*k, *child));
        let eoff = usize_at(&enc, 4 + 4 * i);
        let len = 8 + 2 + k.len();
        assert_eq!(
            body[*off..*off + len],
            enc[eoff..eoff + len],
            "branch child {i} does not re-encode to its bytes"
        );
    }
}

fn check_checkpoint(body: &[u8]) {
    if let Ok(c) = Checkpoint::decode(body) {
        assert!(c.origins.len() <= MAX_ORIGINS);
        assert_eq!(c.encode(), body, "checkpoint does not round-trip");
    }
}

fn check_block(b: &[u8], crc_fixed: bool) {
    match decode_block(b) {
        Ok((k, body)) => {
            let end = BLOCK_HEADER_LEN + body.len();
            let mut out = Vec::new();
            encode_block(&mut out, k, body);
            assert_eq!(out.len(), block_size(body.len()));
            assert_eq!(out[..end], b[..end], "block does not round-trip");
            match k {
                kind::LEAF => check_leaf(body),
                kind::BRANCH => check_branch(body),
                kind::CHECKPOINT => check_checkpoint(body),
                _ => {}
            }
        }
        Err(e) => {
            if crc_fixed {
                assert!(
                    !matches!(e, CorruptKind::CrcMismatch { .. }),
                    "CRC mismatch after the CRC was recomputed"
                );
            }
        }
    }
}

fn check_headers(b: &[u8]) {
    if let Ok(m) = Manifest::decode(b) {
        assert!(m.checkpoint_offset >= FILE_HEADER_LEN as u64);
        assert!(m.committed_len > m.checkpoint_offset);
        assert_eq!(m.encode()[..], b[..FILE_HEADER_LEN], "manifest round trip");
        assert!(
            StoreHeader::decode(b).is_err(),
            "a manifest is a store header"
        );
    }
    if let Ok(h) = StoreHeader::decode(b) {
        assert_eq!(
            h.encode()[..],
            b[..FILE_HEADER_LEN],
            "store header round trip"
        );
    }
}

fn check_batch(b: &[u8]) {
    let Ok(lb) = decode_batch(b, MAX_KEY, MAX_VALUE) else {
        return;
    };
    let mut wb = WriteBatch::new();
    for op in &lb.ops {
        assert!((1..=MAX_KEY).contains(&op.key().len()), "key length");
        match op.value() {
            Some(v) => {
                assert!(v.len() <= MAX_VALUE, "value length");
                wb.put(op.key(), v);
            }
            None => {
                wb.delete(op.key());
            }
        }
    }
    assert_eq!(wb.ops(), &lb.ops[..]);
    let trailer = if lb.seen.is_empty() {
        0
    } else {
        2 + 16 * lb.seen.len()
    };
    assert_eq!(
        wb.encoded_len() + trailer,
        b.len(),
        "encoded_len of a decoded batch"
    );
    assert_eq!(
        encode_batch_seen(lb.stamp, lb.origin_lsn, &wb, &lb.seen),
        b,
        "batch does not round-trip"
    );
}

/// Timestamp packing and the last-writer-wins order, on stamps taken from the input.
fn check_stamps(b: &[u8]) {
    if b.len() < 32 {
        return;
    }
    let word = |i: usize| u64_at(b, i * 8);
    let s = Stamp {
        ts: Timestamp(word(0)),
        origin: word(1),
    };
    let t = Stamp {
        ts: Timestamp(word(2)),
        origin: word(3),
    };
    let ts = s.ts;
    assert_eq!(Timestamp::from_parts(ts.wall_ms(), ts.logical()), ts);
    assert_eq!(ts.0, (ts.wall_ms() << 16) | ts.logical() as u64);
    assert!(!(s.wins_over(&t) && t.wins_over(&s)), "both stamps win");
    assert!(!s.wins_over(&s), "a stamp wins over itself");
    if s != t {
        assert!(s.wins_over(&t) || t.wins_over(&s), "distinct stamps tie");
    }
}

fn check_name(b: &[u8]) {
    if let Ok(name) = std::str::from_utf8(b) {
        if let Some(g) = parse_store_file_name(name) {
            assert_eq!(parse_store_file_name(&store_file_name(g)), Some(g));
        }
    }
}

fn check_all(b: &[u8], crc_fixed: bool) {
    check_block(b, crc_fixed);
    check_leaf(b);
    check_branch(b);
    check_checkpoint(b);
    check_headers(b);
    check_batch(b);
}

fuzz_target!(|data: &[u8]| {
    check_all(data, false);
    check_stamps(data);
    check_name(data);
    // Block checksum recomputed, if the length field fits the input.
    if data.len() >= BLOCK_HEADER_LEN {
        let len = usize_at(data, 4);
        if len <= data.len() - BLOCK_HEADER_LEN {
            let mut fixed = data.to_vec();
            let crc = crc32c::crc32c(&fixed[4..BLOCK_HEADER_LEN + len]).to_le_bytes();
            fixed[0..4].copy_from_slice(&crc);
            check_block(&fixed, true);
        }
    }
    // File-header checksum recomputed.
    if data.len() >= FILE_HEADER_LEN {
        let mut fixed = data.to_vec();
        duplex_fuzz::engine::fix_header_crc(&mut fixed);
        check_headers(&fixed);
        let errors = [
            Manifest::decode(&fixed).err(),
            StoreHeader::decode(&fixed).err(),
        ];
        for e in errors.iter().flatten() {
            assert!(
                !matches!(e, CorruptKind::CrcMismatch { .. }),
                "header CRC mismatch after the CRC was recomputed"
            );
        }
    }
});
