//! Damages one file of a small, valid engine data directory and opens it.
//!
//! The input chooses a base database (checkpointed and closed, a WAL tail to replay, a
//! compacted store, or WAL only), a file (the store, `MANIFEST`, the last WAL segment, or a
//! stale file open must ignore), an offset, and the bytes written there (or a cut), with or
//! without recomputed checksums. The database is opened, every key read, scanned and
//! digested, then written to, checkpointed or compacted, closed and reopened. See
//! `duplex_fuzz::engine` for the input layout and the properties: in short, no panic, no
//! allocation above `duplex_fuzz::ALLOC_LIMIT`, and either a corruption error or exactly
//! the data that was written.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    duplex_fuzz::engine::check_engine_open(data);
});
