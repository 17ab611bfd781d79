//! Opens arbitrary bytes as the one segment file of a WAL directory.
//!
//! The input is the segment file, byte for byte. It is stored in simulated storage under the
//! name of first LSN 1 and, if different, under the name its header claims; each directory is
//! read with a `WalReader`, opened with `Wal::open_with` (recovery), and if it opens, appended
//! to, closed, reopened and read back (see `duplex_fuzz::check_dir` for the properties).
//! Every input is run a second time with its header and record checksums recomputed
//! (`duplex_fuzz::fix_crcs`), so mutations behind a checksum are explored too.
//!
//! No panic is allowed, and no allocation above `duplex_fuzz::ALLOC_LIMIT` (a length field
//! must never be trusted). Errors are fine.
#![no_main]

use duplex_fuzz::{candidate_names, check_one_segment, fix_crcs};
use libfuzzer_sys::fuzz_target;

fn run(seg: &[u8]) {
    for name in candidate_names(seg) {
        check_one_segment(name, seg);
    }
}

fuzz_target!(|data: &[u8]| {
    run(data);
    let mut fixed = data.to_vec();
    if fix_crcs(&mut fixed) {
        run(&fixed);
    }
});
