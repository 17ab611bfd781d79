//! Feeds arbitrary bytes to the backup manifest decoder (`BACKUP`, docs/FORMAT.md
//! section 28), as given and with its trailing CRC32C recomputed so the checks behind the
//! checksum are reached.
//!
//! Properties: no panic, no allocation above `duplex_fuzz::ALLOC_LIMIT` (the file count is
//! bounded before anything is allocated from it); whatever decodes re-encodes to exactly the
//! bytes it came from (an older version: to a current one that decodes the same); a
//! recomputed checksum is never reported wrong.
#![no_main]

use duplex_engine::backup::BackupManifest;
// Links the allocation ceiling (the global allocator of duplex_fuzz).
use duplex_engine::CorruptKind;
use duplex_fuzz as _;
use libfuzzer_sys::fuzz_target;

fn check(b: &[u8]) {
    if let Ok(m) = BackupManifest::decode(b) {
        let again = m.encode();
        // The encoder writes the current version; an older manifest re-encodes to the
        // current layout, which must decode to the same manifest.
        if b.get(8..12) == again.get(8..12) {
            assert_eq!(again, b, "a decoded backup manifest must re-encode exactly");
        } else {
            assert_eq!(
                BackupManifest::decode(&again).ok(),
                Some(m),
                "an older manifest must survive re-encoding in the current version"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 4 {
        let mut fixed = data.to_vec();
        let n = fixed.len() - 4;
        let crc = crc32c::crc32c(&fixed[..n]);
        fixed[n..].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = BackupManifest::decode(&fixed) {
            assert!(
                !matches!(e, CorruptKind::CrcMismatch { .. }),
                "recomputed checksum reported wrong"
            );
        }
        check(&fixed);
    }
});
