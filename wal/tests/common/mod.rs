//! Helpers shared by the WAL integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::sim::SimStorage;
use duplex_wal::{ReadOptions, Record, Storage, Wal, WalOptions, WalReader};

/// A deterministic payload for (`tag`, `len`): verifiable after recovery.
pub fn payload(tag: u64, len: usize) -> Vec<u8> {
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&tag.to_le_bytes());
    while out.len() < len + 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

/// Recovers the tag from a payload made by [`payload`], checking every byte.
pub fn check_payload(p: &[u8]) -> Option<u64> {
    let tag = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    (payload(tag, p.len() - 8) == p).then_some(tag)
}

/// Small segments and records so tests rotate often and run fast.
pub fn small_opts() -> WalOptions {
    WalOptions {
        segment_size: 8192,
        max_record_size: 4096,
        ..WalOptions::default()
    }
}

pub fn sim_open(sim: &SimStorage, dir: &str, opts: WalOptions) -> duplex_wal::Result<Wal> {
    Wal::open_with(Arc::new(sim.clone()), dir, opts)
}

/// Every record in `dirs`, from the first.
pub fn read_all(storage: Arc<dyn Storage>, dirs: &[PathBuf]) -> duplex_wal::Result<Vec<Record>> {
    WalReader::open(storage, dirs, 0, ReadOptions::default())?.collect()
}

pub fn read_dir(sim: &SimStorage, dir: &str) -> Vec<Record> {
    read_all(Arc::new(sim.clone()), &[PathBuf::from(dir)]).expect("read log")
}

/// Offsets of every record in a segment file image (from its header on).
pub fn record_offsets(image: &[u8], max: u32) -> Vec<(u64, usize)> {
    use duplex_wal::format::{decode_record, Decoded, SEGMENT_HEADER_LEN};
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN as usize;
    while off < image.len() {
        match decode_record(&image[off..], max) {
            Decoded::Record(r) => {
                out.push((off as u64, r.size));
                off += r.size;
            }
            _ => break,
        }
    }
    out
}

pub fn last_segment(wal: &Wal) -> PathBuf {
    wal.segments().last().expect("a segment").path.clone()
}

pub fn p(s: &str) -> &Path {
    Path::new(s)
}
