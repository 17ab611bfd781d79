//! WATCH and UNWATCH: optimistic locking as in Redis. WATCH remembers a mark of each key
//! ([`crate::keyspace::WatchMark`]: the stamps of its stored versions and whether it is
//! live); EXEC takes the marks again under its locks and aborts (a nil reply, nothing
//! applied) if any changed: the key was written by any client (this one included), by a
//! peer's replicated write, expired, or was flushed while it existed. EXEC, DISCARD and
//! UNWATCH forget the watched keys. As every MULTI/EXEC, this holds per server: a peer's
//! write that reaches this server after the EXEC's check is concurrent with it and ordered
//! by last-writer-wins like any other.

use duplex_proto::{error, simple};

use super::{ConnState, ErrLine};
use crate::keyspace::{ReadError, Reader, WatchMark};
use crate::limits::{WATCH_BYTES_MAX, WATCH_KEYS_MAX};
use crate::shared::Shared;

/// One watched key.
#[derive(Debug, Clone)]
pub struct Watched {
    db: u8,
    key: Vec<u8>,
    mark: WatchMark,
}

/// `WATCH key...` (in the connection's database).
pub fn watch(sh: &Shared, conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    if conn.multi.is_some() {
        return error(out, "ERR WATCH inside MULTI is not allowed");
    }
    let bytes: usize = conn.watched.iter().map(|w| w.key.len()).sum::<usize>()
        + args[1..].iter().map(|a| a.len()).sum::<usize>();
    if conn.watched.len() + args.len() - 1 > WATCH_KEYS_MAX || bytes > WATCH_BYTES_MAX {
        return ErrLine::err(format!(
            "too many watched keys (duplexd watches at most {WATCH_KEYS_MAX} keys or {WATCH_BYTES_MAX} bytes per connection)"
        ))
        .send(out);
    }
    let mut r = Reader::new(sh.db().snapshot(), sh.clock().now_ms());
    let db = conn.db;
    for k in &args[1..] {
        if conn.watched.iter().any(|w| w.db == db && w.key == *k) {
            continue;
        }
        match r.watch_mark(db, k) {
            Ok(mark) => conn.watched.push(Watched {
                db,
                key: k.to_vec(),
                mark,
            }),
            Err(e) => return ErrLine::err(e.to_string()).send(out),
        }
    }
    simple(out, "OK");
}

/// `UNWATCH`.
pub fn unwatch(conn: &mut ConnState, out: &mut Vec<u8>) {
    conn.watched = Vec::new();
    simple(out, "OK");
}

/// The keys watched, for EXEC to lock.
pub fn keys(watched: &[Watched]) -> impl Iterator<Item = &[u8]> {
    watched.iter().map(|w| w.key.as_slice())
}

/// Whether any watched key changed since WATCH (EXEC must abort); call it under the
/// locks of the watched keys' stripes.
pub fn changed(sh: &Shared, watched: &[Watched]) -> Result<bool, ReadError> {
    if watched.is_empty() {
        return Ok(false);
    }
    let mut r = Reader::new(sh.db().snapshot(), sh.clock().now_ms());
    for w in watched {
        if r.watch_mark(w.db, &w.key)? != w.mark {
            return Ok(true);
        }
    }
    Ok(false)
}
