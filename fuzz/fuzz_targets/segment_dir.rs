//! Opens arbitrary bytes as a WAL directory of several segments.
//!
//! The input is cut before every occurrence of the segment magic (`DPLXWAL\0`), at most 8
//! pieces; bytes before the first magic are dropped. Each piece becomes a segment file named
//! by the first LSN its header claims (a piece whose name is taken is dropped). This reaches
//! what one segment cannot: LSN continuity between segments, gaps, and the rule that damage
//! in any segment but the last is corruption. Each input runs as given and again with every
//! checksum recomputed. Properties: those of `duplex_fuzz::check_dir`.
#![no_main]

use duplex_fuzz::{check_dir, claimed_first_lsn, fix_crcs, node_id_of, storage_with};
use duplex_wal::format::{segment_file_name, SEGMENT_MAGIC};
use libfuzzer_sys::fuzz_target;

const MAX_SEGMENTS: usize = 8;

fn split(data: &[u8]) -> Vec<Vec<u8>> {
    let m = SEGMENT_MAGIC.len();
    let starts: Vec<usize> = (0..data.len().saturating_sub(m - 1))
        .filter(|&i| data[i..i + m] == SEGMENT_MAGIC)
        .take(MAX_SEGMENTS)
        .collect();
    let mut pieces = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let e = starts.get(k + 1).copied().unwrap_or(data.len());
        pieces.push(data[s..e].to_vec());
    }
    pieces
}

fn run(pieces: &[Vec<u8>]) {
    let mut files: Vec<(String, &[u8])> = Vec::new();
    for p in pieces {
        let name = segment_file_name(claimed_first_lsn(p).unwrap_or(1));
        if files.iter().all(|(n, _)| *n != name) {
            files.push((name, p));
        }
    }
    if files.is_empty() {
        return;
    }
    let sim = storage_with(&files);
    let segs: Vec<&[u8]> = files.iter().map(|(_, b)| *b).collect();
    check_dir(&sim, node_id_of(&segs));
}

fuzz_target!(|data: &[u8]| {
    let mut pieces = split(data);
    run(&pieces);
    let mut changed = false;
    for p in pieces.iter_mut() {
        changed |= fix_crcs(p);
    }
    if changed {
        run(&pieces);
    }
});
