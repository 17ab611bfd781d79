//! SCAN, KEYS and DBSIZE: walks over one database's keys from a snapshot (flushed and expired
//! keys are skipped: [`Reader::scan`]). A SCAN cursor is an id in
//! [`crate::shared::Cursors`] naming the last key returned; cursor 0 starts (and ends) a
//! scan.

use duplex_proto::{array_len, bulk, error, integer, null_bulk};

use super::{bulk_str, ErrLine};
use crate::glob::glob_match;
use crate::keyspace::{ReadError, Reader};
use crate::limits::{SCAN_COUNT_MAX, SCAN_INLINE_MAX};
use crate::shared::Shared;

/// DBSIZE: counts every live key of database `db` in a snapshot.
pub fn dbsize(sh: &Shared, db: u8, out: &mut Vec<u8>) {
    match count(sh, db) {
        Ok(n) => integer(out, n),
        Err(e) => ErrLine::err(e.to_string()).send(out),
    }
}

/// The number of live keys of database `db` now.
pub(crate) fn count(sh: &Shared, db: u8) -> Result<i64, ReadError> {
    let mut r = Reader::new(sh.db().snapshot(), sh.clock().now_ms());
    let mut it = r.scan(db, None)?;
    let mut n = 0i64;
    while it.next_key()?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// `RANDOMKEY`: a live key of database `db` (nil when it has none): the first key after a
/// random point of the key space, or the first key when none follows it. Not uniform over
/// the keys (a key after a wide gap comes more often), as Redis's is not either.
pub fn randomkey(sh: &Shared, db: u8, out: &mut Vec<u8>) {
    let mut seed = [0u8; 4];
    if getrandom::getrandom(&mut seed).is_err() {
        seed = (sh.clock().now_ms() as u32).to_le_bytes();
    }
    let pick = || -> Result<Option<Vec<u8>>, ReadError> {
        let mut r = Reader::new(sh.db().snapshot(), sh.clock().now_ms());
        if let Some(k) = r.scan(db, Some(&seed))?.next_key()? {
            return Ok(Some(k));
        }
        r.scan(db, None)?.next_key()
    };
    match pick() {
        Ok(Some(k)) => bulk(out, &k),
        Ok(None) => null_bulk(out),
        Err(e) => ErrLine::err(e.to_string()).send(out),
    }
}

/// `KEYS pattern`: every live key of database `db` matching the glob, in key order.
pub fn keys(sh: &Shared, db: u8, pattern: &[u8], out: &mut Vec<u8>) {
    let walk = || -> Result<Vec<Vec<u8>>, ReadError> {
        let mut r = Reader::new(sh.db().snapshot(), sh.clock().now_ms());
        let mut it = r.scan(db, None)?;
        let mut keys = Vec::new();
        while let Some(k) = it.next_key()? {
            if glob_match(pattern, &k) {
                keys.push(k);
            }
        }
        Ok(keys)
    };
    match walk() {
        Ok(keys) => {
            array_len(out, keys.len());
            for k in &keys {
                bulk(out, k);
            }
        }
        Err(e) => ErrLine::err(e.to_string()).send(out),
    }
}

/// Whether a SCAN asks for more than [`SCAN_INLINE_MAX`] keys (slow work: see
/// [`super::is_slow`]). A malformed one is not: it is refused at once.
pub fn is_large(args: &[&[u8]]) -> bool {
    parse_scan(args).is_ok_and(|a| a.count > SCAN_INLINE_MAX)
}

/// SCAN's options.
struct ScanArgs<'a> {
    cursor: u64,
    pattern: Option<&'a [u8]>,
    count: usize,
    type_ok: bool,
}

fn parse_scan<'a>(args: &[&'a [u8]]) -> Result<ScanArgs<'a>, &'static str> {
    let cursor = std::str::from_utf8(args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("ERR invalid cursor")?;
    let mut a = ScanArgs {
        cursor,
        pattern: None,
        count: 10,
        type_ok: true,
    };
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err("ERR syntax error");
        }
        match args[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => a.pattern = Some(args[i + 1]),
            b"COUNT" => match std::str::from_utf8(args[i + 1])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            {
                Some(n) if n >= 1 => a.count = n.min(SCAN_COUNT_MAX),
                _ => return Err("ERR value is out of range, must be positive"),
            },
            b"TYPE" => a.type_ok = args[i + 1].eq_ignore_ascii_case(b"string"),
            _ => return Err("ERR syntax error"),
        }
        i += 2;
    }
    Ok(a)
}

/// One page of a scan: the matching keys, the last key examined, and whether nothing
/// follows it.
type Page = (Vec<Vec<u8>>, Option<Vec<u8>>, bool);

/// Examines up to `a.count` keys of database `db` after `start`.
fn page(sh: &Shared, db: u8, a: &ScanArgs<'_>, start: Option<&[u8]>) -> Result<Page, ReadError> {
    let mut r = Reader::new(sh.db().snapshot(), sh.clock().now_ms());
    let mut it = r.scan(db, start)?;
    let mut keys = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    let mut examined = 0;
    while examined < a.count {
        let Some(k) = it.next_key()? else {
            return Ok((keys, last, true));
        };
        examined += 1;
        if a.type_ok && a.pattern.is_none_or(|p| glob_match(p, &k)) {
            keys.push(k.clone());
        }
        last = Some(k);
    }
    // Peek: if nothing follows, this was the last page.
    let done = it.next_key()?.is_none();
    Ok((keys, last, done))
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]` over database `db`.
pub fn scan(sh: &Shared, db: u8, args: &[&[u8]], out: &mut Vec<u8>) {
    let a = match parse_scan(args) {
        Ok(a) => a,
        Err(m) => return error(out, m),
    };
    let start: Option<Vec<u8>> = if a.cursor == 0 {
        None
    } else {
        match sh.cursors().resume(a.cursor) {
            Some(k) => Some(k),
            None => return error(out, "ERR invalid cursor (unknown or expired: duplexd SCAN cursors live 10 minutes unused)"),
        }
    };
    let (keys, last, done) = match page(sh, db, &a, start.as_deref()) {
        Ok(p) => p,
        Err(e) => return ErrLine::err(e.to_string()).send(out),
    };
    let next = match (done, last) {
        (false, Some(k)) => sh.cursors().save(k),
        _ => 0,
    };
    array_len(out, 2);
    bulk_str(out, &next.to_string());
    array_len(out, keys.len());
    for k in &keys {
        bulk(out, k);
    }
}
