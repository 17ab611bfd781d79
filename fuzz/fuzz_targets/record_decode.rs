//! Decodes arbitrary bytes as a record and as a segment header.
//!
//! Properties: no panic; a decoded record re-encodes (`encode_record`) to exactly the bytes
//! it was decoded from, padding included; a decoded header re-encodes to its 64 bytes;
//! `Empty` means a zero header, `Short` asks for more bytes than were given and no more than
//! the largest record. Each input is decoded again with its record checksum (and its header
//! checksum) recomputed, where a checksum mismatch is then impossible.
#![no_main]

use duplex_fuzz::{fix_record_crc, MAX_RECORD};
use duplex_wal::format::{
    decode_record, encode_record, record_size, Decoded, SegmentHeader, FLAG_BATCH_CONTINUES,
    RECORD_ALIGN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use duplex_wal::CorruptKind;
use libfuzzer_sys::fuzz_target;

fn check_record(b: &[u8], crc_fixed: bool) {
    match decode_record(b, MAX_RECORD) {
        Decoded::Record(r) => {
            assert_eq!(r.size, record_size(r.payload.len()));
            assert_eq!(r.size % RECORD_ALIGN, 0);
            assert!(r.size <= b.len());
            assert_ne!(r.kind, 0);
            assert_eq!(r.flags & !FLAG_BATCH_CONTINUES, 0);
            let mut out = Vec::new();
            encode_record(&mut out, r.lsn, r.kind, r.flags, r.payload);
            assert_eq!(out, b[..r.size], "record does not round-trip");
        }
        Decoded::Empty => {
            let n = b.len().min(RECORD_HEADER_LEN);
            assert!(
                n > 0 && b[..n].iter().all(|&x| x == 0),
                "Empty on non-zero bytes"
            );
        }
        Decoded::Short { needed } => {
            assert!(
                needed > b.len(),
                "Short although {} bytes are there",
                b.len()
            );
            assert!(needed <= record_size(MAX_RECORD as usize));
        }
        Decoded::Bad(kind) => {
            if crc_fixed {
                assert!(
                    !matches!(kind, CorruptKind::CrcMismatch { .. }),
                    "CRC mismatch after the CRC was recomputed"
                );
            }
        }
    }
}

fn check_header(b: &[u8]) {
    if let Ok(h) = SegmentHeader::decode(b) {
        // Each version re-encodes with its own encoder (a version 1 header has no timeline
        // and no intended length: they read as 1 and 0).
        let again = if b.get(8..12) == Some(&1u32.to_le_bytes()[..]) {
            h.encode_v1()
        } else {
            h.encode()
        };
        assert_eq!(
            again[..],
            b[..SEGMENT_HEADER_LEN as usize],
            "header does not round-trip"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check_record(data, false);
    check_header(data);
    let mut fixed = data.to_vec();
    if fix_record_crc(&mut fixed) {
        check_record(&fixed, true);
    }
    if fixed.len() >= SEGMENT_HEADER_LEN as usize {
        let hl = SEGMENT_HEADER_LEN as usize;
        let crc = crc32c::crc32c(&fixed[..hl - 4]).to_le_bytes();
        fixed[hl - 4..hl].copy_from_slice(&crc);
        check_header(&fixed);
    }
});
