//! WAL records made readable: one line of text, or one JSON object, per record.
//!
//! Engine batches (kind 1) are decoded: their stamp (wall time as RFC 3339 in UTC, the
//! logical counter, the origin node), the LSN the batch had on its origin (0 for a local
//! write) and every operation. Keys and shown value bytes are escaped with
//! [`escape_bytes`] (printable ASCII as is, `\xNN` otherwise), in JSON too.
//! Epoch records (kind 2, [`duplex_engine::Database::log_epoch`]) show their epoch.

use duplex_engine::batch::{decode_batch, decode_epoch, LoggedBatch, KIND_BATCH, KIND_EPOCH};
use duplex_engine::Op;
use duplex_wal::Record;
use serde_json::{json, Value};

use crate::text::{escape_bytes, format_time_ms};
use duplex_engine::{MAX_KEY_SIZE, MAX_VALUE_SIZE};

/// Longest key shown in full; longer keys are cut (`…`).
pub const KEY_SHOWN: usize = 256;

/// A record with its payload decoded where it is an engine batch.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// The record.
    pub record: &'a Record,
    /// For an engine batch: the batch, or why it does not decode.
    pub batch: Option<Result<LoggedBatch, duplex_engine::CorruptKind>>,
    /// For an epoch record (kind 2): the fencing epoch, or why it does not decode.
    pub epoch: Option<Result<u64, duplex_engine::CorruptKind>>,
}

/// Decodes `record` (with the widest limits any configuration allows).
pub fn decode(record: &Record) -> Decoded<'_> {
    let batch = (record.kind == KIND_BATCH)
        .then(|| decode_batch(&record.payload, MAX_KEY_SIZE, MAX_VALUE_SIZE));
    let epoch = (record.kind == KIND_EPOCH).then(|| decode_epoch(&record.payload));
    Decoded {
        record,
        batch,
        epoch,
    }
}

impl Decoded<'_> {
    /// True for an engine batch whose payload does not decode (roll-forward would refuse
    /// it as damage).
    pub fn is_bad(&self) -> bool {
        matches!(self.batch, Some(Err(_))) || matches!(self.epoch, Some(Err(_)))
    }

    /// One line: LSN, kind, payload size, then for a batch its stamp, origin LSN and every
    /// operation; at most `value_bytes` bytes of each value are shown.
    pub fn text(&self, value_bytes: usize) -> String {
        let r = self.record;
        let mut s = format!("lsn={} ", r.lsn);
        match (&self.batch, &self.epoch) {
            (_, Some(Ok(epoch))) => s.push_str(&format!(
                "kind=epoch size={} epoch={epoch}",
                r.payload.len()
            )),
            (_, Some(Err(e))) => s.push_str(&format!(
                "kind=epoch size={} UNDECODABLE ({e}) payload=\"{}\"",
                r.payload.len(),
                escape_bytes(&r.payload, value_bytes)
            )),
            (None, None) => s.push_str(&format!(
                "kind={} size={} payload=\"{}\"",
                r.kind,
                r.payload.len(),
                escape_bytes(&r.payload, value_bytes)
            )),
            (Some(Err(e)), None) => s.push_str(&format!(
                "kind=batch size={} UNDECODABLE ({e}) payload=\"{}\"",
                r.payload.len(),
                escape_bytes(&r.payload, value_bytes)
            )),
            (Some(Ok(b)), None) => {
                s.push_str(&format!(
                    "kind=batch size={} time={} logical={} origin={} origin_lsn={} ops={}",
                    r.payload.len(),
                    format_time_ms(b.stamp.ts.wall_ms()),
                    b.stamp.ts.logical(),
                    b.stamp.origin,
                    b.origin_lsn,
                    b.ops.len()
                ));
                for op in &b.ops {
                    match op {
                        Op::Put { key, value } => s.push_str(&format!(
                            " | PUT key=\"{}\" value={}B\"{}\"",
                            escape_bytes(key, KEY_SHOWN),
                            value.len(),
                            escape_bytes(value, value_bytes)
                        )),
                        Op::Delete { key } => {
                            s.push_str(&format!(" | DEL key=\"{}\"", escape_bytes(key, KEY_SHOWN)))
                        }
                    }
                }
            }
        }
        s
    }

    /// One JSON object with the same content as [`Decoded::text`]: `lsn`, `kind`, `type`
    /// (`batch`, `epoch` or `other`), `size`; for an epoch record `epoch`; for a batch `time`, `wall_ms`, `logical`, `origin`,
    /// `origin_lsn`, `ops` (each `{"op":"put","key","value_len","value","value_truncated"}`
    /// or `{"op":"del","key"}`); for an undecodable batch `error`; for other kinds
    /// `payload`.
    pub fn json(&self, value_bytes: usize) -> Value {
        let r = self.record;
        if let Some(epoch) = &self.epoch {
            return match epoch {
                Ok(epoch) => json!({
                    "lsn": r.lsn,
                    "kind": r.kind,
                    "type": "epoch",
                    "size": r.payload.len(),
                    "epoch": epoch,
                }),
                Err(e) => json!({
                    "lsn": r.lsn,
                    "kind": r.kind,
                    "type": "epoch",
                    "size": r.payload.len(),
                    "error": e.to_string(),
                    "payload": escape_bytes(&r.payload, value_bytes),
                }),
            };
        }
        match &self.batch {
            None => json!({
                "lsn": r.lsn,
                "kind": r.kind,
                "type": "other",
                "size": r.payload.len(),
                "payload": escape_bytes(&r.payload, value_bytes),
            }),
            Some(Err(e)) => json!({
                "lsn": r.lsn,
                "kind": r.kind,
                "type": "batch",
                "size": r.payload.len(),
                "error": e.to_string(),
                "payload": escape_bytes(&r.payload, value_bytes),
            }),
            Some(Ok(b)) => {
                let ops: Vec<Value> = b
                    .ops
                    .iter()
                    .map(|op| match op {
                        Op::Put { key, value } => json!({
                            "op": "put",
                            "key": escape_bytes(key, KEY_SHOWN),
                            "value_len": value.len(),
                            "value": escape_bytes(value, value_bytes),
                            "value_truncated": value.len() > value_bytes,
                        }),
                        Op::Delete { key } => json!({
                            "op": "del",
                            "key": escape_bytes(key, KEY_SHOWN),
                        }),
                    })
                    .collect();
                json!({
                    "lsn": r.lsn,
                    "kind": r.kind,
                    "type": "batch",
                    "size": r.payload.len(),
                    "time": format_time_ms(b.stamp.ts.wall_ms()),
                    "wall_ms": b.stamp.ts.wall_ms(),
                    "logical": b.stamp.ts.logical(),
                    "origin": b.stamp.origin,
                    "origin_lsn": b.origin_lsn,
                    "ops": ops,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_engine::batch::encode_batch;
    use duplex_engine::{Stamp, Timestamp, WriteBatch};

    #[test]
    fn batches_read_well_as_text_and_json() {
        let mut b = WriteBatch::new();
        b.put("k\x01", vec![b'v'; 40]).delete("gone");
        let ts = Timestamp((1_795_600_800_123 << 16) | 7);
        let payload = encode_batch(Stamp { ts, origin: 2 }, 9, &b);
        let rec = Record {
            lsn: 42,
            kind: KIND_BATCH,
            payload,
        };
        let d = decode(&rec);
        assert!(!d.is_bad());
        let line = d.text(4);
        assert!(line.starts_with("lsn=42 kind=batch"), "{line}");
        assert!(
            line.contains("logical=7 origin=2 origin_lsn=9 ops=2"),
            "{line}"
        );
        assert!(
            line.contains("PUT key=\"k\\x01\" value=40B\"vvvv…\""),
            "{line}"
        );
        assert!(line.contains("DEL key=\"gone\""), "{line}");
        let j = d.json(4);
        assert_eq!(j["lsn"], 42);
        assert_eq!(j["wall_ms"], 1_795_600_800_123u64);
        assert_eq!(j["ops"][0]["value_len"], 40);
        assert_eq!(j["ops"][0]["value_truncated"], true);
        assert_eq!(j["ops"][1]["op"], "del");
        let text = j.to_string();
        let back: Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, j);
    }

    #[test]
    fn damaged_and_foreign_records_are_shown_not_hidden() {
        let bad = Record {
            lsn: 1,
            kind: KIND_BATCH,
            payload: vec![1, 2, 3],
        };
        let d = decode(&bad);
        assert!(d.is_bad());
        assert!(d.text(8).contains("UNDECODABLE"));
        assert!(d.json(8)["error"].is_string());
        let other = Record {
            lsn: 2,
            kind: 9,
            payload: b"hello".to_vec(),
        };
        assert_eq!(
            decode(&other).text(3),
            "lsn=2 kind=9 size=5 payload=\"hel…\""
        );
    }
}
