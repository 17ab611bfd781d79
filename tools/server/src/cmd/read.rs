//! GET, MGET, EXISTS, STRLEN, GETRANGE, TTL, PTTL, EXPIRETIME, PEXPIRETIME and TYPE:
//! answered from one snapshot per run of consecutive reads, taken after the connection's
//! earlier writes were applied (so a connection reads its writes), through
//! [`Reader`] (flushed and expired keys are invisible).

use duplex_proto::{array_len, bulk, error, integer, null_bulk, simple};

use super::parse::{int_arg, NOT_INT};
use super::{check, Cmd, ErrLine};
use crate::keyspace::{Entry, ReadError, Reader, Source};
use crate::shared::Shared;

/// Answers the run of reads at the front of `reqs` (the first is known to be one) in
/// database `db` from one snapshot, stopping before the next read once `out` holds more
/// than `budget` bytes; returns how many requests it answered (at least one).
pub fn read_run(
    sh: &Shared,
    db: u8,
    reqs: &[Vec<&[u8]>],
    out: &mut Vec<u8>,
    budget: usize,
) -> usize {
    let mut r = Reader::new(sh.db().snapshot(), sh.clock().now_ms());
    let mut n = 0;
    for req in reqs {
        if n > 0 && out.len() > budget {
            break;
        }
        match check(req) {
            Ok((c, _)) if c.is_read() => read(&mut r, db, c, req, out),
            _ => break,
        }
        n += 1;
    }
    n
}

fn fail(out: &mut Vec<u8>, e: &ReadError) {
    ErrLine::err(e.to_string()).send(out);
}

/// Answers one read command in database `db` from `r`.
pub fn read(r: &mut impl Source, db: u8, c: Cmd, args: &[&[u8]], out: &mut Vec<u8>) {
    if let Err(e) = answer(r, db, c, args, out) {
        fail(out, &e);
    }
}

fn answer(
    r: &mut impl Source,
    db: u8,
    c: Cmd,
    args: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), ReadError> {
    match c {
        Cmd::Get => match r.get(db, args[1])? {
            Some(e) => bulk(out, &e.data),
            None => null_bulk(out),
        },
        Cmd::MGet => {
            let mut vals = Vec::with_capacity(args.len() - 1);
            for k in &args[1..] {
                vals.push(r.get(db, k)?);
            }
            array_len(out, vals.len());
            for v in vals {
                match v {
                    Some(e) => bulk(out, &e.data),
                    None => null_bulk(out),
                }
            }
        }
        Cmd::Object => object(r, db, args, out)?,
        Cmd::Exists | Cmd::Touch => {
            let mut n = 0;
            for k in &args[1..] {
                n += i64::from(r.get(db, k)?.is_some());
            }
            integer(out, n);
        }
        Cmd::StrLen => integer(out, r.get(db, args[1])?.map_or(0, |e| e.data.len() as i64)),
        Cmd::GetRange => {
            let (Ok(start), Ok(end)) = (int_arg(args[2]), int_arg(args[3])) else {
                error(out, &format!("ERR {NOT_INT}"));
                return Ok(());
            };
            let v = r.get(db, args[1])?.map(|e| e.data).unwrap_or_default();
            bulk(out, getrange(&v, start, end));
        }
        Cmd::Type => {
            if r.get(db, args[1])?.is_some() {
                simple(out, "string");
            } else {
                simple(out, "none");
            }
        }
        _ => integer(out, ttl_reply(c, r.get(db, args[1])?, r.now_ms())),
    }
    Ok(())
}

/// Redis's reply to OBJECT FREQ without an LFU policy (duplexd has none).
const NO_LFU: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";

/// `OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key` and `OBJECT HELP`. duplexd keeps no
/// objects: ENCODING answers what Redis would for the string (`int`, `embstr` up to 44
/// bytes, `raw`), IDLETIME 0 (no access times are kept), REFCOUNT 1; a missing key is nil.
fn object(r: &mut impl Source, db: u8, args: &[&[u8]], out: &mut Vec<u8>) -> Result<(), ReadError> {
    let sub = args[1].to_ascii_uppercase();
    if sub == b"HELP" && args.len() == 2 {
        let lines = [
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
            "HELP",
            "    Print this help.",
        ];
        array_len(out, lines.len());
        for l in lines {
            simple(out, l);
        }
        return Ok(());
    }
    let known = matches!(
        sub.as_slice(),
        b"ENCODING" | b"FREQ" | b"IDLETIME" | b"REFCOUNT"
    );
    if !known || args.len() != 3 {
        error(
            out,
            &format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try OBJECT HELP.",
                super::lossy(args[1])
            ),
        );
        return Ok(());
    }
    let Some(e) = r.get(db, args[2])? else {
        null_bulk(out);
        return Ok(());
    };
    match sub.as_slice() {
        b"ENCODING" => bulk(out, encoding(&e.data).as_bytes()),
        b"FREQ" => error(out, NO_LFU),
        b"IDLETIME" => integer(out, 0),
        _ => integer(out, 1),
    }
    Ok(())
}

/// The encoding Redis 7 reports for a string value.
pub(crate) fn encoding(v: &[u8]) -> &'static str {
    if v.len() <= 20 && crate::keyspace::parse_i64(v).is_some() {
        "int"
    } else if v.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

/// TTL, PTTL, EXPIRETIME and PEXPIRETIME of an entry (absent: -2; no expiry: -1).
fn ttl_reply(c: Cmd, e: Option<Entry>, now: u64) -> i64 {
    let Some(e) = e else { return -2 };
    let Some(at) = e.expire_ms else { return -1 };
    let at = i64::try_from(at).unwrap_or(i64::MAX);
    let left = at.saturating_sub(i64::try_from(now).unwrap_or(0)).max(0);
    match c {
        // Redis rounds TTL to the nearest second.
        Cmd::Ttl => (left + 500) / 1000,
        Cmd::PTtl => left,
        Cmd::ExpireTime => at / 1000,
        _ => at,
    }
}

/// GETRANGE's slice, with Redis's handling of negative and out-of-range indexes.
pub(crate) fn getrange(v: &[u8], start: i64, end: i64) -> &[u8] {
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    s = s.max(0);
    e = e.max(0);
    if e >= len {
        e = len - 1;
    }
    if s > e || len == 0 {
        return &[];
    }
    &v[s as usize..=e as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_follows_redis() {
        let v = b"This is a string";
        assert_eq!(getrange(v, 0, 3), b"This");
        assert_eq!(getrange(v, -3, -1), b"ing");
        assert_eq!(getrange(v, 0, -1), v);
        assert_eq!(getrange(v, 10, 100), b"string");
        assert_eq!(getrange(v, 5, 3), b"");
        assert_eq!(getrange(v, -1, -5), b"");
        assert_eq!(getrange(b"", 0, -1), b"");
    }
}
