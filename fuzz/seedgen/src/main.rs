//! Writes small seed inputs for the fuzz targets into `fuzz/seeds/<target>/`, made by the
//! real WAL on simulated storage: empty, short and batched segments, a pre-allocated one, a
//! torn tail, mid-segment damage, multi-segment logs, single records and a header; and, for
//! the engine targets, one of each engine structure and damage aimed at the blocks of the
//! `engine_open` base databases (see `engine.rs`).
//!
//! Deterministic (creation times are pinned). Run from the repository root or anywhere:
//! `cargo run --manifest-path fuzz/seedgen/Cargo.toml`.

mod engine;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::format::{encode_record, SegmentHeader};
use duplex_wal::sim::SimStorage;
use duplex_wal::{list_segments, Entry, Wal, WalOptions};

const DIR: &str = "/wal";

fn opts(segment_size: u64, preallocate: bool) -> WalOptions {
    WalOptions {
        segment_size,
        max_record_size: 1 << 20,
        preallocate,
        ..WalOptions::default()
    }
}

/// Runs `f` against a fresh log and returns the bytes of its segments, oldest first.
fn make_log(o: WalOptions, f: impl FnOnce(&Wal)) -> Vec<Vec<u8>> {
    let sim = SimStorage::new();
    let wal = Wal::open_with(Arc::new(sim.clone()), DIR, o).expect("open");
    f(&wal);
    wal.close().expect("close");
    let segs = list_segments(&sim, &[PathBuf::from(DIR)]).expect("list");
    segs.iter()
        .map(|(_, p)| sim.contents(p).expect("segment contents"))
        .collect()
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8 | 1).collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let open_dir = root.join("segment_open");
    let dir_dir = root.join("segment_dir");
    let rec_dir = root.join("record_decode");
    let blocks_dir = root.join("engine_blocks");
    let engine_open_dir = root.join("engine_open");
    for d in [&open_dir, &dir_dir, &rec_dir, &blocks_dir, &engine_open_dir] {
        fs::create_dir_all(d).expect("create seed dir");
    }

    let empty = make_log(opts(4096, false), |_| {});
    write(&open_dir, "empty", &empty[0]);

    let one = make_log(opts(4096, false), |w| {
        w.append(1, b"hello, duplex").expect("append");
    });
    write(&open_dir, "one-record", &one[0]);

    let mixed = make_log(opts(4096, false), |w| {
        w.append(1, &payload(1, 5)).expect("append");
        w.append(2, &[]).expect("append");
        let a = payload(2, 17);
        let b = payload(3, 40);
        w.append_batch(&[
            Entry {
                kind: 3,
                payload: &a,
            },
            Entry {
                kind: 4,
                payload: &b,
            },
            Entry {
                kind: 5,
                payload: b"c",
            },
        ])
        .expect("batch");
        w.append(255, &payload(4, 64)).expect("append");
    });
    write(&open_dir, "records-and-batch", &mixed[0]);

    // Pre-allocated: the records, then zeros to the segment size.
    let pre = make_log(opts(4096, true), |w| {
        w.append(9, &payload(5, 30)).expect("append");
        w.append(9, &payload(6, 30)).expect("append");
    });
    write(&open_dir, "preallocated", &pre[0]);

    // Torn tail: the last record cut in the middle.
    let m = &mixed[0];
    write(&open_dir, "torn-tail", &m[..m.len() - 37]);
    // A batch cut short: ends after the first record of the batch.
    let batch_start = 64 + 32 + 24;
    write(&open_dir, "torn-batch", &m[..batch_start + 48]);
    // Damage in the middle, valid records after it: corruption.
    let mut mid = m.clone();
    mid[64 + 24 + 2] ^= 0x40;
    write(&open_dir, "corrupt-middle", &mid);
    // Zeroed record in the middle.
    let mut zeroed = m.clone();
    for b in &mut zeroed[64..64 + 32] {
        *b = 0;
    }
    write(&open_dir, "zeroed-middle", &zeroed);

    // Several segments: small segments, records that fill them.
    let multi = make_log(opts(4096, false), |w| {
        for i in 0..40 {
            w.append(1 + (i % 3) as u8, &payload(i, 200))
                .expect("append");
        }
    });
    assert!(multi.len() >= 2, "expected rotation");
    write(
        &dir_dir,
        "three-segments",
        &multi[..3.min(multi.len())].concat(),
    );
    write(&dir_dir, "two-segments", &multi[..2].concat());
    let rotated = make_log(opts(4096, false), |w| {
        w.append(1, b"first").expect("append");
        w.rotate().expect("rotate");
        w.append(2, b"second").expect("append");
        w.rotate().expect("rotate");
    });
    write(&dir_dir, "rotated", &rotated.concat());
    // A gap: the middle segment missing.
    if multi.len() >= 3 {
        write(
            &dir_dir,
            "gap",
            &[multi[0].clone(), multi[2].clone()].concat(),
        );
    }
    write(&dir_dir, "one-segment", &mixed[0]);

    // Records and a header on their own.
    let mut r = Vec::new();
    encode_record(&mut r, 1, 1, 0, b"hello");
    write(&rec_dir, "record", &r);
    let mut r = Vec::new();
    encode_record(&mut r, 42, 3, 1, &[]);
    write(&rec_dir, "record-empty-batch", &r);
    let h = SegmentHeader {
        node_id: 1,
        first_lsn: 1,
        created_ms: 1_700_000_000_000,
        timeline: 2,
        intended_len: 64 << 20,
    };
    write(&rec_dir, "header", &h.encode());
    write(&rec_dir, "header-v1", &h.encode_v1());
    write(&rec_dir, "zeros", &[0u8; 24]);

    // Keep the header bytes of the segment seeds reproducible: fix created_ms.
    for d in [&open_dir, &dir_dir] {
        for e in fs::read_dir(d).expect("list seeds") {
            let p = e.expect("entry").path();
            let mut b = fs::read(&p).expect("read seed");
            pin_created_ms(&mut b);
            fs::write(&p, b).expect("rewrite seed");
        }
    }
    engine::blocks(&blocks_dir);
    engine::open(&engine_open_dir);
    println!("seeds written under {}", root.display());
}

/// Sets created_ms of every segment header in `b` to a fixed time and recomputes its CRC.
fn pin_created_ms(b: &mut [u8]) {
    let magic = duplex_wal::format::SEGMENT_MAGIC;
    let mut i = 0;
    while i + 64 <= b.len() {
        if b[i..i + 8] == magic && SegmentHeader::decode(&b[i..i + 64]).is_ok() {
            b[i + 32..i + 40].copy_from_slice(&1_700_000_000_000u64.to_le_bytes());
            let crc = crc32c::crc32c(&b[i..i + 60]);
            b[i + 60..i + 64].copy_from_slice(&crc.to_le_bytes());
            i += 64;
        } else {
            i += 8;
        }
    }
}
