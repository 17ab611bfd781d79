//! `duplexctl conflicts`: the conflict journal of one server (`DUPLEX.CONFLICTS [count]`),
//! decoded into [`Conflict`]s and shown readably ([`render`]: key, winner and loser as
//! time and origin node, the loser's value or its length and digest, when it was recorded)
//! or as JSON ([`to_json`]).

use duplex_engine::Timestamp;
use duplex_proto::Reply;
use serde_json::{json, Value};

use crate::exit::ToolError;
use crate::text::{escape_bytes, format_time_ms};

/// One journal entry: a version that lost to a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The key.
    pub key: Vec<u8>,
    /// The winner's hybrid-logical-clock timestamp.
    pub winner_ts: u64,
    /// The node that wrote the winner.
    pub winner_origin: u64,
    /// The loser's timestamp.
    pub loser_ts: u64,
    /// The node that wrote the loser.
    pub loser_origin: u64,
    /// The loser was a delete.
    pub loser_deleted: bool,
    /// The loser's value when the journal kept it (short values only).
    pub loser_value: Option<Vec<u8>>,
    /// The loser's value length.
    pub loser_len: u64,
    /// 16 hex digits of the loser value's xxh3-64.
    pub loser_digest: String,
    /// When the server recorded it, ms since the epoch.
    pub recorded_ms: u64,
}

/// The journal as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Journal {
    /// Conflicts recorded since the server started.
    pub recorded: u64,
    /// Entries dropped because the journal was full.
    pub dropped: u64,
    /// The newest entries, newest first.
    pub entries: Vec<Conflict>,
}

fn bad(why: &str) -> ToolError {
    ToolError::operational(format!(
        "unexpected DUPLEX.CONFLICTS reply ({why}); is the server a duplexd of this version?"
    ))
}

fn int(r: &Reply) -> Result<u64, ToolError> {
    match r {
        Reply::Integer(n) => u64::try_from(*n).map_err(|_| bad("a negative number")),
        _ => Err(bad("a field is not an integer")),
    }
}

fn entry(r: &Reply) -> Result<Conflict, ToolError> {
    let Reply::Array(f) = r else {
        return Err(bad("an entry is not an array"));
    };
    if f.len() < 10 {
        return Err(bad("an entry has fewer than 10 fields"));
    }
    let bytes = |r: &Reply| match r {
        Reply::Bulk(b) => Some(b.clone()),
        _ => None,
    };
    Ok(Conflict {
        key: bytes(&f[0]).ok_or_else(|| bad("the key is not a string"))?,
        winner_ts: int(&f[1])?,
        winner_origin: int(&f[2])?,
        loser_ts: int(&f[3])?,
        loser_origin: int(&f[4])?,
        loser_deleted: int(&f[5])? != 0,
        loser_value: bytes(&f[6]),
        loser_len: int(&f[7])?,
        loser_digest: crate::resp::text(&f[8]),
        recorded_ms: int(&f[9])?,
    })
}

/// Decodes a `DUPLEX.CONFLICTS` reply: `[recorded, dropped, [entry...]]`.
pub fn parse(r: &Reply) -> Result<Journal, ToolError> {
    let Reply::Array(top) = r else {
        return Err(bad("not an array"));
    };
    let [rec, dropped, Reply::Array(entries), ..] = top.as_slice() else {
        return Err(bad("not [recorded, dropped, entries]"));
    };
    Ok(Journal {
        recorded: int(rec)?,
        dropped: int(dropped)?,
        entries: entries.iter().map(entry).collect::<Result<_, _>>()?,
    })
}

/// A stamp for people: `2026-11-25T10:00:00.123Z+3 node 2` (the `+N` is the logical
/// counter, shown when not 0).
pub fn stamp_text(ts: u64, origin: u64) -> String {
    let t = Timestamp(ts);
    let logical = match t.logical() {
        0 => String::new(),
        l => format!("+{l}"),
    };
    format!("{}{logical} node {origin}", format_time_ms(t.wall_ms()))
}

fn loser_text(c: &Conflict) -> String {
    if c.loser_deleted {
        return "a delete".to_owned();
    }
    match &c.loser_value {
        Some(v) => format!(
            "value \"{}\" ({} B, xxh3 {})",
            escape_bytes(v, 200),
            c.loser_len,
            c.loser_digest
        ),
        None => format!(
            "a value of {} B (too long to keep; xxh3 {})",
            c.loser_len, c.loser_digest
        ),
    }
}

/// The journal as text: a summary line, then three lines per entry.
pub fn render(addr: &str, j: &Journal) -> String {
    let mut out = format!(
        "{addr}: {} conflicts recorded since start, {} dropped (journal full); {} shown, newest first\n",
        j.recorded,
        j.dropped,
        j.entries.len()
    );
    for c in &j.entries {
        out.push_str(&format!(
            "\nkey \"{}\"  recorded {}\n  winner {}\n  loser  {}: {}\n",
            escape_bytes(&c.key, 200),
            format_time_ms(c.recorded_ms),
            stamp_text(c.winner_ts, c.winner_origin),
            stamp_text(c.loser_ts, c.loser_origin),
            loser_text(c)
        ));
    }
    out
}

/// The journal as JSON. Keys and values are escaped text ([`escape_bytes`]).
pub fn to_json(addr: &str, j: &Journal) -> Value {
    let entries: Vec<Value> = j
        .entries
        .iter()
        .map(|c| {
            json!({
                "key": escape_bytes(&c.key, usize::MAX),
                "winner": {"ts": c.winner_ts, "time": format_time_ms(Timestamp(c.winner_ts).wall_ms()),
                           "logical": Timestamp(c.winner_ts).logical(), "origin": c.winner_origin},
                "loser": {"ts": c.loser_ts, "time": format_time_ms(Timestamp(c.loser_ts).wall_ms()),
                          "logical": Timestamp(c.loser_ts).logical(), "origin": c.loser_origin,
                          "deleted": c.loser_deleted,
                          "value": c.loser_value.as_ref().map(|v| escape_bytes(v, usize::MAX)),
                          "len": c.loser_len, "digest": c.loser_digest},
                "recorded_ms": c.recorded_ms,
                "recorded": format_time_ms(c.recorded_ms),
            })
        })
        .collect();
    json!({"server": addr, "recorded": j.recorded, "dropped": j.dropped, "entries": entries})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Reply {
        let ts = |ms: u64, l: u64| {
            Reply::Integer(i64::try_from(Timestamp::from_parts(ms, l as u16).0).unwrap())
        };
        Reply::Array(vec![
            Reply::Integer(2),
            Reply::Integer(0),
            Reply::Array(vec![
                Reply::Array(vec![
                    Reply::Bulk(b"line1:speed".to_vec()),
                    ts(2000, 1),
                    Reply::Integer(2),
                    ts(1000, 0),
                    Reply::Integer(1),
                    Reply::Integer(0),
                    Reply::Bulk(b"42".to_vec()),
                    Reply::Integer(2),
                    Reply::Bulk(b"00000000000000ab".to_vec()),
                    Reply::Integer(3000),
                ]),
                Reply::Array(vec![
                    Reply::Bulk(b"big".to_vec()),
                    ts(2000, 0),
                    Reply::Integer(1),
                    ts(1500, 0),
                    Reply::Integer(2),
                    Reply::Integer(0),
                    Reply::Null,
                    Reply::Integer(5000),
                    Reply::Bulk(b"00000000000000cd".to_vec()),
                    Reply::Integer(3000),
                ]),
            ]),
        ])
    }

    #[test]
    fn entries_render_readably() {
        let j = parse(&sample()).unwrap();
        assert_eq!(j.entries.len(), 2);
        let t = render("127.0.0.1:7379", &j);
        assert!(
            t.contains("2 conflicts recorded since start, 0 dropped"),
            "{t}"
        );
        assert!(
            t.contains("key \"line1:speed\"  recorded 1970-01-01T00:00:03Z"),
            "{t}"
        );
        assert!(t.contains("winner 1970-01-01T00:00:02Z+1 node 2"), "{t}");
        assert!(
            t.contains(
                "loser  1970-01-01T00:00:01Z node 1: value \"42\" (2 B, xxh3 00000000000000ab)"
            ),
            "{t}"
        );
        assert!(
            t.contains("a value of 5000 B (too long to keep; xxh3 00000000000000cd)"),
            "{t}"
        );
        let js = to_json("x", &j);
        assert_eq!(js["entries"][0]["loser"]["value"], "42");
        assert_eq!(js["entries"][0]["winner"]["logical"], 1);
        assert_eq!(js["entries"][1]["loser"]["value"], Value::Null);
    }

    #[test]
    fn a_malformed_reply_is_an_error() {
        assert!(parse(&Reply::Integer(1)).is_err());
        assert!(parse(&Reply::Array(vec![Reply::Integer(1)])).is_err());
    }
}
