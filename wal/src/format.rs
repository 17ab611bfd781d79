//! Byte layouts of a segment header and a record, with their encoders and decoders.
//! `docs/FORMAT.md` is the specification; this module is its only implementation.
//!
//! Invariants kept here:
//! - every multi-byte integer is little-endian;
//! - a decoder never allocates from a length field: it checks the length against the
//!   configured maximum and against the bytes actually present first;
//! - a record of all-zero bytes is "empty space" (pre-allocated, never written), never a record.

use crate::error::CorruptKind;

/// Magic bytes that open every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"DPLXWAL\0";
/// The segment format version this build writes; it reads this one and every older one
/// down to [`OLDEST_FORMAT_VERSION`].
pub const FORMAT_VERSION: u32 = 2;
/// The oldest segment format version this build still reads (version 1: no timeline, no
/// intended length).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Size of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 24;
/// Records start on multiples of this many bytes.
pub const RECORD_ALIGN: usize = 8;
/// Record flag: more records of the same atomic batch follow this one.
pub const FLAG_BATCH_CONTINUES: u8 = 0x01;
/// Largest LSN a log may reach: far beyond any real log, and far enough below `u64::MAX`
/// that LSN arithmetic never overflows.
pub const MAX_LSN: u64 = 1 << 62;
/// Hard ceiling on `max_record_size`, so lengths always fit the `u32` field.
pub const MAX_RECORD_SIZE_LIMIT: u32 = 1 << 30;

use crate::le::{u32_at, u64_at};

/// The fixed header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Node that wrote the segment.
    pub node_id: u64,
    /// LSN of the first record in the segment.
    pub first_lsn: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Timeline of the history the segment belongs to: 1 for a log that was never
    /// restored, a new one for every restore (as PostgreSQL's timelines). Version 1 headers
    /// read as timeline 1.
    pub timeline: u64,
    /// Size the file was preallocated to when it was created; 0 when it was not
    /// preallocated (and for version 1 headers, which do not say). A live segment shorter
    /// than this was cut by something other than a crash.
    pub intended_len: u64,
}

impl Default for SegmentHeader {
    /// Node 1, first LSN 1, created at time 0, timeline 1, not preallocated.
    fn default() -> Self {
        SegmentHeader {
            node_id: 1,
            first_lsn: 1,
            created_ms: 0,
            timeline: 1,
            intended_len: 0,
        }
    }
}

impl SegmentHeader {
    /// Encodes the header in the current format (version 2).
    // Format v2: magic[8] version:u32 header_len:u32 node_id:u64 first_lsn:u64 created_ms:u64
    //            timeline:u64 intended_len:u64 reserved[4]=0 crc32c(0..60):u32
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = self.encode_common(FORMAT_VERSION);
        b[40..48].copy_from_slice(&self.timeline.to_le_bytes());
        b[48..56].copy_from_slice(&self.intended_len.to_le_bytes());
        seal(&mut b);
        b
    }

    /// Encodes the header as format version 1 wrote it (no timeline, no intended length:
    /// those fields are dropped). For tests of reading old logs, and tools that must
    /// produce files an older build reads.
    // Format v1: magic[8] version:u32 header_len:u32 node_id:u64 first_lsn:u64 created_ms:u64 reserved[20]=0 crc32c(0..60):u32
    pub fn encode_v1(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = self.encode_common(1);
        seal(&mut b);
        b
    }

    fn encode_common(&self, version: u32) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&version.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.node_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        b
    }

    /// Decodes and checks a header of version 1 or 2. `b` shorter than the header is
    /// `Truncated`; a version above [`FORMAT_VERSION`] is `NewerVersion` (checked before the
    /// checksum: a newer format may lay its header out differently).
    pub fn decode(b: &[u8]) -> Result<Self, CorruptKind> {
        if b.len() < SEGMENT_HEADER_LEN as usize {
            return Err(CorruptKind::Truncated);
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(CorruptKind::BadMagic);
        }
        let version = u32_at(b, 8);
        if version > FORMAT_VERSION {
            return Err(CorruptKind::NewerVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let stored = u32_at(b, 60);
        let actual = crc32c::crc32c(&b[0..60]);
        if stored != actual {
            return Err(CorruptKind::HeaderCrc {
                expected: stored,
                actual,
            });
        }
        if version < OLDEST_FORMAT_VERSION {
            return Err(CorruptKind::UnsupportedVersion(version));
        }
        // Version 1 reserves bytes 40..60; version 2 uses 40..56 and reserves 56..60.
        let reserved_from = if version == 1 { 40 } else { 56 };
        if u32_at(b, 12) as u64 != SEGMENT_HEADER_LEN
            || b[reserved_from..60].iter().any(|&x| x != 0)
        {
            return Err(CorruptKind::NonZeroReserved);
        }
        let first_lsn = u64_at(b, 24);
        if first_lsn == 0 || first_lsn > MAX_LSN {
            return Err(CorruptKind::BadFirstLsn(first_lsn));
        }
        let (timeline, intended_len) = if version == 1 {
            (1, 0)
        } else {
            (u64_at(b, 40), u64_at(b, 48))
        };
        Ok(SegmentHeader {
            node_id: u64_at(b, 16),
            first_lsn,
            created_ms: u64_at(b, 32),
            timeline,
            intended_len,
        })
    }
}

/// Writes the header checksum over bytes 0..60 into 60..64.
fn seal(b: &mut [u8; SEGMENT_HEADER_LEN as usize]) {
    let crc = crc32c::crc32c(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes a record with a payload of `payload_len` bytes takes on disk, padding included.
pub fn record_size(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len).next_multiple_of(RECORD_ALIGN)
}

/// Appends one encoded record to `out`. One streaming CRC pass over header and payload
/// (at ~14 GB/s); combining a separately computed payload CRC costs far more (~2 µs).
// Format: crc32c:u32 len:u32 lsn:u64 kind:u8 flags:u8 reserved:u16=0 reserved:u32=0 payload[len] zero-pad to 8
pub fn encode_record(out: &mut Vec<u8>, lsn: u64, kind: u8, flags: u8, payload: &[u8]) {
    encode_record_patched(out, lsn, kind, flags, payload, None);
}

/// Like [`encode_record`], but with the 8 bytes at `patch.0` of the payload replaced by
/// `patch.1` (little-endian) in what is written and checksummed; the caller's payload is
/// left as it is. A patch that does not fit in the payload is ignored.
pub fn encode_record_patched(
    out: &mut Vec<u8>,
    lsn: u64,
    kind: u8,
    flags: u8,
    payload: &[u8],
    patch: Option<(usize, u64)>,
) {
    if let Some((at, v)) =
        patch.filter(|(at, _)| at.checked_add(8).is_some_and(|e| e <= payload.len()))
    {
        let start = out.len();
        encode_record_inner(out, lsn, kind, flags, payload);
        let p = start + RECORD_HEADER_LEN + at;
        out[p..p + 8].copy_from_slice(&v.to_le_bytes());
        let end = start + RECORD_HEADER_LEN + payload.len();
        let crc = crc32c::crc32c(&out[start + 4..end]);
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
        return;
    }
    encode_record_inner(out, lsn, kind, flags, payload);
}

fn encode_record_inner(out: &mut Vec<u8>, lsn: u64, kind: u8, flags: u8, payload: &[u8]) {
    let start = out.len();
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[8..16].copy_from_slice(&lsn.to_le_bytes());
    h[16] = kind;
    h[17] = flags;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[4..]), payload);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let padded = start + record_size(payload.len());
    out.resize(padded, 0);
}

/// A record decoded in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Log sequence number.
    pub lsn: u64,
    /// Caller-defined kind, 1..=255.
    pub kind: u8,
    /// Flag bits (`FLAG_*`).
    pub flags: u8,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// Bytes the record takes on disk, padding included.
    pub size: usize,
}

/// What the bytes at a record position hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record.
    Record(RawRecord<'a>),
    /// A zeroed record header: empty space, the end of the written data.
    Empty,
    /// `b` ends before the record does; `needed` bytes make the whole record.
    Short {
        /// Bytes needed from the record start.
        needed: usize,
    },
    /// The bytes are not a valid record.
    Bad(CorruptKind),
}

/// Decodes the record at the start of `b`, checking length, reserved bytes, CRC and padding.
pub fn decode_record(b: &[u8], max_record_size: u32) -> Decoded<'_> {
    if b.len() < RECORD_HEADER_LEN {
        if !b.is_empty() && b.iter().all(|&x| x == 0) {
            // A zero prefix at the very end of a file is empty space.
            return Decoded::Empty;
        }
        return Decoded::Short {
            needed: RECORD_HEADER_LEN,
        };
    }
    let h = &b[..RECORD_HEADER_LEN];
    if h.iter().all(|&x| x == 0) {
        return Decoded::Empty;
    }
    let len = u32_at(h, 4);
    if len > max_record_size {
        return Decoded::Bad(CorruptKind::LengthTooLarge {
            len: len as u64,
            max: max_record_size as u64,
        });
    }
    let size = record_size(len as usize);
    if b.len() < size {
        return Decoded::Short { needed: size };
    }
    let payload_end = RECORD_HEADER_LEN + len as usize;
    let stored = u32_at(h, 0);
    let actual = crc32c::crc32c(&b[4..payload_end]);
    if stored != actual {
        return Decoded::Bad(CorruptKind::CrcMismatch {
            expected: stored,
            actual,
        });
    }
    if h[18..24].iter().any(|&x| x != 0)
        || b[payload_end..size].iter().any(|&x| x != 0)
        || h[17] & !FLAG_BATCH_CONTINUES != 0
    {
        return Decoded::Bad(CorruptKind::NonZeroReserved);
    }
    if h[16] == 0 {
        return Decoded::Bad(CorruptKind::BadKind);
    }
    Decoded::Record(RawRecord {
        lsn: u64_at(h, 8),
        kind: h[16],
        flags: h[17],
        payload: &b[RECORD_HEADER_LEN..payload_end],
        size,
    })
}

/// File name of the segment whose first LSN is `first_lsn`: 20 decimal digits, so that a
/// directory listing sorts segments in log order.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

/// Suffix of a partial segment in an archive: the durable prefix of a segment that was
/// still being written when it was copied (see `docs/FORMAT.md` section 11).
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Name of the partial copy of the segment whose first LSN is `first_lsn`.
pub fn partial_file_name(first_lsn: u64) -> String {
    format!("{}{PARTIAL_SUFFIX}", segment_file_name(first_lsn))
}

/// Parses a partial segment's name (`<segment name>.partial`) into its first LSN.
pub fn parse_partial_file_name(name: &str) -> Option<u64> {
    parse_segment_file_name(name.strip_suffix(PARTIAL_SUFFIX)?)
}

/// Parses a segment file name back into its first LSN.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            node_id: 7,
            first_lsn: 42,
            created_ms: 1_700_000_000_000,
            timeline: 3,
            intended_len: 64 << 20,
        };
        let b = h.encode();
        assert_eq!(u32_at(&b, 8), 2);
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(SegmentHeader::decode(&d).is_err(), "flip at {i} undetected");
        }
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(CorruptKind::Truncated));
    }

    #[test]
    fn a_version_1_header_reads_as_timeline_1_of_unknown_length() {
        let h = SegmentHeader {
            node_id: 7,
            first_lsn: 42,
            created_ms: 5,
            timeline: 9,
            intended_len: 8192,
        };
        let b = h.encode_v1();
        assert_eq!(u32_at(&b, 8), 1);
        assert!(b[40..60].iter().all(|&x| x == 0));
        let read = SegmentHeader::decode(&b).expect("a version 1 header decodes");
        assert_eq!(
            read,
            SegmentHeader {
                timeline: 1,
                intended_len: 0,
                ..h
            }
        );
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(SegmentHeader::decode(&d).is_err(), "flip at {i} undetected");
        }
    }

    #[test]
    fn a_newer_version_is_refused_as_such() {
        let mut b = SegmentHeader::default().encode();
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        seal(&mut b);
        let err = SegmentHeader::decode(&b).expect_err("version 3");
        assert_eq!(
            err,
            CorruptKind::NewerVersion {
                found: 3,
                supported: 2
            }
        );
        assert!(err.to_string().contains("newer Duplex"), "{err}");
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        seal(&mut b);
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(CorruptKind::UnsupportedVersion(0))
        );
    }

    #[test]
    fn record_round_trips_and_detects_every_flipped_bit() {
        let payload = b"hello, duplex";
        let mut out = Vec::new();
        encode_record(&mut out, 9, 3, 0, payload);
        assert_eq!(out.len(), record_size(payload.len()));
        assert_eq!(out.len() % RECORD_ALIGN, 0);
        match decode_record(&out, 1024) {
            Decoded::Record(r) => {
                assert_eq!((r.lsn, r.kind, r.flags, r.payload), (9, 3, 0, &payload[..]));
                assert_eq!(r.size, out.len());
            }
            other => panic!("decoded {other:?}"),
        }
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut d = out.clone();
                d[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode_record(&d, 1024), Decoded::Record(_)),
                    "flip of bit {bit} in byte {byte} undetected"
                );
            }
        }
    }

    #[test]
    fn length_beyond_maximum_is_corruption_without_allocation() {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        b[16] = 1;
        assert!(matches!(
            decode_record(&b, 1 << 20),
            Decoded::Bad(CorruptKind::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn zeros_are_empty_and_short_input_asks_for_more() {
        assert_eq!(decode_record(&[0u8; 64], 100), Decoded::Empty);
        let mut out = Vec::new();
        encode_record(&mut out, 1, 1, 0, &[5u8; 40]);
        assert_eq!(
            decode_record(&out[..30], 100),
            Decoded::Short { needed: out.len() }
        );
    }

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("1.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.wal"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_partial_file_name(&partial_file_name(77)), Some(77));
        assert_eq!(parse_partial_file_name(&segment_file_name(77)), None);
        assert_eq!(parse_segment_file_name(&partial_file_name(77)), None);
    }
}
