//! Write batches and their encoding as one WAL record.
//!
//! A batch is the unit of atomicity: all its operations share one stamp (timestamp and
//! origin) and one WAL record, so after a crash either all are applied or none. The record
//! also carries the LSN the batch had on its origin node, for replication's high-water
//! marks (0 when the batch is local: its LSN is the record's own).

use crate::error::CorruptKind;
use crate::hlc::{Stamp, Timestamp};
use duplex_wal::le::Cursor;

/// WAL record kind of an engine write batch.
pub const KIND_BATCH: u8 = 1;
/// WAL record kind of a fencing epoch change ([`crate::Database::log_epoch`]): the
/// payload is the epoch, a little-endian u64, exactly 8 bytes.
pub const KIND_EPOCH: u8 = 2;

/// The payload of an epoch record.
pub fn encode_epoch(epoch: u64) -> [u8; 8] {
    epoch.to_le_bytes()
}

/// Decodes the payload of an epoch record; any length but 8 is a bad record.
pub fn decode_epoch(payload: &[u8]) -> Result<u64, CorruptKind> {
    let b: [u8; 8] = payload
        .try_into()
        .map_err(|_| CorruptKind::BadRecord("epoch record length"))?;
    Ok(u64::from_le_bytes(b))
}

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const HEADER_LEN: usize = 8 + 8 + 8 + 4;

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` (a tombstone with the batch's stamp).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The key this operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }

    /// The value written, `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Put { value, .. } => Some(value),
            Op::Delete { .. } => None,
        }
    }
}

/// An atomic group of puts and deletes, applied all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order. A later operation on the same key wins.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Bytes the batch takes as a WAL record payload.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + self
                .ops
                .iter()
                .map(|op| 1 + 4 + op.key().len() + op.value().map_or(0, |v| 4 + v.len()))
                .sum::<usize>()
    }
}

/// A batch as logged: its stamp, its origin LSN and its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedBatch {
    /// Timestamp and origin shared by every operation.
    pub stamp: Stamp,
    /// LSN of the batch on its origin node; 0 for a local batch.
    pub origin_lsn: u64,
    /// The operations.
    pub ops: Vec<Op>,
    /// The seen list (section 24 of docs/FORMAT.md); empty when absent.
    pub seen: Vec<(u64, u64)>,
}

/// Offset of the timestamp in a batch payload (patched under the WAL's append lock).
pub const TS_OFFSET: usize = 8;
/// Offset of the origin LSN in a batch payload.
pub const ORIGIN_LSN_OFFSET: usize = 16;
/// Most entries of a batch's seen list (one per other origin of the cluster).
pub const MAX_SEEN: usize = 1024;

/// Encodes a batch as a WAL payload.
// Format: origin:u64 ts:u64 origin_lsn:u64 count:u32 then count x (op:u8 key_len:u32 key [val_len:u32 val])
pub fn encode_batch(stamp: Stamp, origin_lsn: u64, batch: &WriteBatch) -> Vec<u8> {
    encode_batch_seen(stamp, origin_lsn, batch, &[])
}

/// Encodes a batch with its seen list: for each other origin, the largest timestamp of its
/// batches applied here before this one (the causal context a receiver uses to tell a
/// concurrent overwrite from a later one). An empty list adds no byte, so a database that
/// never applied a remote batch writes the same bytes as before replication existed.
// Trailer when not empty: seen_count:u16 then seen_count x (origin:u64 ts:u64)
pub fn encode_batch_seen(
    stamp: Stamp,
    origin_lsn: u64,
    batch: &WriteBatch,
    seen: &[(u64, u64)],
) -> Vec<u8> {
    let seen = &seen[..seen.len().min(MAX_SEEN)];
    let trailer = if seen.is_empty() {
        0
    } else {
        2 + 16 * seen.len()
    };
    let mut out = Vec::with_capacity(batch.encoded_len() + trailer);
    out.extend_from_slice(&stamp.origin.to_le_bytes());
    out.extend_from_slice(&stamp.ts.0.to_le_bytes());
    out.extend_from_slice(&origin_lsn.to_le_bytes());
    out.extend_from_slice(&(batch.ops.len() as u32).to_le_bytes());
    for op in &batch.ops {
        match op {
            Op::Put { key, value } => {
                out.push(OP_PUT);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
            Op::Delete { key } => {
                out.push(OP_DELETE);
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
        }
    }
    if !seen.is_empty() {
        out.extend_from_slice(&(seen.len() as u16).to_le_bytes());
        for (o, ts) in seen {
            out.extend_from_slice(&o.to_le_bytes());
            out.extend_from_slice(&ts.to_le_bytes());
        }
    }
    out
}

/// Decodes a WAL payload into a batch, checking every length against the limits and the
/// bytes present before allocating.
pub fn decode_batch(
    payload: &[u8],
    max_key: usize,
    max_value: usize,
) -> Result<LoggedBatch, CorruptKind> {
    let b = BatchRef::decode(payload, max_key, max_value)?;
    Ok(LoggedBatch {
        stamp: b.stamp,
        origin_lsn: b.origin_lsn,
        seen: b.seen().collect(),
        ops: b
            .ops()
            .map(|op| match op.value {
                Some(v) => Op::Put {
                    key: op.key.to_vec(),
                    value: v.to_vec(),
                },
                None => Op::Delete {
                    key: op.key.to_vec(),
                },
            })
            .collect(),
    })
}

/// One operation of a [`BatchRef`], borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRef<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value; `None` for a delete.
    pub value: Option<&'a [u8]>,
}

/// A batch payload checked whole but not copied: replay and roll-forward read millions of
/// them and keep the bytes, not one allocation per key and value.
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a> {
    /// Stamp shared by every operation.
    pub stamp: Stamp,
    /// LSN on the origin node (0 for a local batch).
    pub origin_lsn: u64,
    /// Number of operations.
    pub count: usize,
    /// The operations' bytes, already checked.
    ops: &'a [u8],
    /// The seen list's entries (16 bytes each), already checked; empty if none.
    seen: &'a [u8],
}

impl<'a> BatchRef<'a> {
    /// Checks a WAL payload: header, every operation's tag and lengths against the limits
    /// and the bytes present, and that nothing trails the last operation.
    pub fn decode(
        payload: &'a [u8],
        max_key: usize,
        max_value: usize,
    ) -> Result<Self, CorruptKind> {
        let bad = CorruptKind::BadRecord;
        let mut c = Cursor::new(payload);
        let origin = c.u64().ok_or(bad("short header"))?;
        let ts = c.u64().ok_or(bad("short header"))?;
        let origin_lsn = c.u64().ok_or(bad("short header"))?;
        let count = c.u32().ok_or(bad("short header"))? as usize;
        if ts >= crate::hlc::MAX_TIMESTAMP {
            return Err(bad("timestamp out of range"));
        }
        // Every op takes at least 5 bytes: a count beyond that is a lie.
        if count > c.remaining() / 5 {
            return Err(bad("operation count exceeds the payload"));
        }
        let ops = payload.get(HEADER_LEN..).unwrap_or_default();
        for _ in 0..count {
            let tag = c.u8().ok_or(bad("truncated operation"))?;
            let klen = c.u32().ok_or(bad("truncated operation"))? as usize;
            if klen == 0 || klen > max_key {
                return Err(bad("key length out of range"));
            }
            c.take(klen).ok_or(bad("truncated key"))?;
            match tag {
                OP_PUT => {
                    let vlen = c.u32().ok_or(bad("truncated value length"))? as usize;
                    if vlen > max_value {
                        return Err(bad("value length out of range"));
                    }
                    c.take(vlen).ok_or(bad("truncated value"))?;
                }
                OP_DELETE => {}
                _ => return Err(bad("unknown operation")),
            }
        }
        let ops_len = payload.len() - HEADER_LEN - c.remaining();
        let ops = &ops[..ops_len];
        let mut seen: &[u8] = &[];
        if c.remaining() != 0 {
            let n = c.u16().ok_or(bad("truncated seen list"))? as usize;
            if n == 0 || n > MAX_SEEN || c.remaining() != n * 16 {
                return Err(bad("seen list length does not match the bytes left"));
            }
            seen = c.take(n * 16).ok_or(bad("truncated seen list"))?;
        }
        Ok(BatchRef {
            stamp: Stamp {
                ts: Timestamp(ts),
                origin,
            },
            origin_lsn,
            count,
            ops,
            seen,
        })
    }

    /// The seen list: (origin, largest timestamp of its batches applied before this one).
    pub fn seen(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.seen.chunks_exact(16).map(|e| {
            let mut o = [0u8; 8];
            let mut t = [0u8; 8];
            o.copy_from_slice(&e[..8]);
            t.copy_from_slice(&e[8..]);
            (u64::from_le_bytes(o), u64::from_le_bytes(t))
        })
    }

    /// A payload that [`BatchRef::decode`] already accepted, read again without checking
    /// its operations: only the header is read. `None` if even that is short.
    pub(crate) fn checked_before(payload: &'a [u8]) -> Option<Self> {
        let mut c = Cursor::new(payload);
        let origin = c.u64()?;
        let ts = c.u64()?;
        let origin_lsn = c.u64()?;
        let count = c.u32()? as usize;
        Some(BatchRef {
            stamp: Stamp {
                ts: Timestamp(ts),
                origin,
            },
            origin_lsn,
            count,
            ops: payload.get(HEADER_LEN..).unwrap_or_default(),
            seen: &[],
        })
    }

    /// The operations in batch order.
    pub fn ops(&self) -> impl Iterator<Item = OpRef<'a>> + 'a {
        let mut c = Cursor::new(self.ops);
        // The bytes were checked by `decode`: the walk cannot fail; if it did it would
        // end early rather than read out of bounds. It stops after `count` operations, so
        // a seen list after them is never read as one.
        let mut left = self.count;
        std::iter::from_fn(move || {
            left = left.checked_sub(1)?;
            let tag = c.u8()?;
            let klen = c.u32()? as usize;
            let key = c.take(klen)?;
            let value = if tag == OP_PUT {
                let vlen = c.u32()? as usize;
                Some(c.take(vlen)?)
            } else {
                None
            };
            Some(OpRef { key, value })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips() {
        let mut b = WriteBatch::new();
        b.put("k1", "v1").delete("k2").put(vec![0u8; 3], vec![]);
        let stamp = Stamp {
            ts: Timestamp(77),
            origin: 3,
        };
        let enc = encode_batch(stamp, 9, &b);
        assert_eq!(enc.len(), b.encoded_len());
        let d = decode_batch(&enc, 4096, 1 << 20).expect("decode");
        assert_eq!(d.stamp, stamp);
        assert_eq!(d.origin_lsn, 9);
        assert_eq!(d.ops, b.ops);
        for cut in 0..enc.len() {
            assert!(
                decode_batch(&enc[..cut], 4096, 1 << 20).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn huge_counts_and_lengths_are_refused_without_allocation() {
        let mut enc = encode_batch(Stamp::default(), 0, &WriteBatch::new());
        enc[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_batch(&enc, 4096, 1 << 20).is_err());
        let mut b = WriteBatch::new();
        b.put("k", "v");
        let mut enc = encode_batch(Stamp::default(), 0, &b);
        enc[29..33].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_batch(&enc, 4096, 1 << 20).is_err());
    }
}
