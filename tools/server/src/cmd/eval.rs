//! Evaluation of a parsed write ([`WriteOp`]) against a [`View`]: its reply and its
//! [`Effects`], with Redis 7's replies (an INCR of a non-integer is an error reply and
//! writes nothing).

use std::collections::{HashMap, HashSet};

use duplex_proto::Reply;

use super::parse::{Cond, ExpCond, Ttl, WriteOp, NOT_FLOAT, NOT_INT};
use super::view::{Effect, Effects, Plan, View};
use super::ErrLine;
use crate::counter::Contribution;
use crate::keyspace::parse_i64;
use crate::keyspace::{Entry, ReadError};

/// Largest string SETRANGE and APPEND build, as Redis's `proto-max-bulk-len` default.
const MAX_STRING: usize = 512 * 1024 * 1024;

fn err(msg: &str) -> Reply {
    Reply::Error(ErrLine::err(msg).0)
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk_of(e: Option<Entry>) -> Reply {
    e.map_or(Reply::Null, |e| Reply::Bulk(e.data))
}

/// Evaluates a write in database `db`: its reply and its effects. With `track`, the
/// effects also go into the view for later commands to see.
pub(crate) fn eval_write(
    op: &WriteOp<'_>,
    db: u8,
    view: &mut View<'_>,
    track: bool,
) -> Result<(Reply, Effects), ReadError> {
    let (reply, effects) = eval(op, db, view)?;
    if track {
        view.track(&effects);
    }
    Ok((reply, effects))
}

fn eval(op: &WriteOp<'_>, db: u8, view: &mut View<'_>) -> Result<(Reply, Effects), ReadError> {
    let now = view.now_ms();
    Ok(match op {
        WriteOp::Set {
            key,
            val,
            cond,
            ttl,
            get,
        } => set(key, val, *cond, *ttl, *get, db, view)?,
        WriteOp::MSet(pairs, nx) => mset(pairs, *nx, db, view)?,
        WriteOp::Del(keys) => {
            // A key named twice counts once.
            let mut seen: HashSet<&[u8]> = HashSet::with_capacity(keys.len());
            let mut eff: Effects = Vec::new();
            for k in keys {
                if seen.insert(k) && view.exists(db, k)? {
                    eff.push(Effect::Del(db, k.to_vec()));
                }
            }
            (Reply::Integer(eff.len() as i64), eff)
        }
        WriteOp::IncrBy(key, by) => incr(key, *by, db, view)?,
        WriteOp::IncrByFloat(key, by) => {
            let old = view.get(db, key)?;
            let cur = match &old {
                None => 0.0,
                Some(e) => match super::parse::parse_f64(&e.data) {
                    Some(v) => v,
                    None => return Ok((err(NOT_FLOAT), Vec::new())),
                },
            };
            let new = cur + by;
            if !new.is_finite() {
                return Ok((err("increment would produce NaN or Infinity"), Vec::new()));
            }
            let text = format_float(new).into_bytes();
            let e = Entry {
                data: text.clone(),
                expire_ms: old.and_then(|e| e.expire_ms),
            };
            (Reply::Bulk(text), vec![put_or_del(db, key, e, now)])
        }
        WriteOp::Append(key, val) => {
            let mut e = view
                .get(db, key)?
                .unwrap_or_else(|| Entry::plain(Vec::new()));
            if e.data.len() + val.len() > MAX_STRING {
                return Ok((
                    err("string exceeds maximum allowed size (proto-max-bulk-len)"),
                    Vec::new(),
                ));
            }
            e.data.extend_from_slice(val);
            (
                Reply::Integer(e.data.len() as i64),
                vec![put_or_del(db, key, e, now)],
            )
        }
        WriteOp::SetRange(key, off, val) => setrange(key, *off, val, db, view)?,
        WriteOp::GetDel(key) => match view.get(db, key)? {
            Some(e) => (Reply::Bulk(e.data), vec![Effect::Del(db, key.to_vec())]),
            None => (Reply::Null, Vec::new()),
        },
        WriteOp::GetEx(key, ttl) => getex(key, *ttl, db, view)?,
        WriteOp::Expire(key, at, cond) => expire(key, *at, *cond, db, view)?,
        WriteOp::Persist(key) => match view.get(db, key)? {
            Some(mut e) if e.expire_ms.is_some() => {
                e.expire_ms = None;
                (Reply::Integer(1), vec![put_or_del(db, key, e, now)])
            }
            _ => (Reply::Integer(0), Vec::new()),
        },
        WriteOp::Move(key, to) => move_key(key, *to, db, view)?,
        WriteOp::Rename(src, dst, nx) => rename(src, dst, *nx, db, view)?,
        WriteOp::Copy(src, dst, to, replace) => {
            copy(src, dst, to.unwrap_or(db), *replace, db, view)?
        }
    })
}

/// SET and its variants (SETEX, PSETEX, GETSET).
fn set(
    key: &[u8],
    val: &[u8],
    cond: Cond,
    ttl: Ttl,
    get: bool,
    db: u8,
    view: &mut View<'_>,
) -> Result<(Reply, Effects), ReadError> {
    let old = if get || cond != Cond::Always || ttl == Ttl::Keep {
        view.get(db, key)?
    } else {
        None
    };
    let go = match cond {
        Cond::Always => true,
        Cond::Nx => old.is_none(),
        Cond::Xx => old.is_some(),
    };
    let expire_ms = match ttl {
        Ttl::Clear => None,
        Ttl::Keep => old.as_ref().and_then(|e| e.expire_ms),
        Ttl::At(t) => Some(t),
    };
    let e = Entry {
        data: val.to_vec(),
        expire_ms,
    };
    let eff = if go {
        vec![put_or_del(db, key, e, view.now_ms())]
    } else {
        Vec::new()
    };
    let reply = match (get, go) {
        (true, _) => bulk_of(old),
        (false, true) => ok(),
        (false, false) => Reply::Null,
    };
    Ok((reply, eff))
}

/// A put of `e`, or a deletion when `e` has already expired (Redis: SET with an EXAT in
/// the past).
fn put_or_del(db: u8, key: &[u8], e: Entry, now: u64) -> Effect {
    if e.expired(now) {
        Effect::Del(db, key.to_vec())
    } else {
        Effect::Put(db, key.to_vec(), e)
    }
}

/// GETEX: the value, and its expiry changed if asked.
fn getex(key: &[u8], ttl: Ttl, db: u8, view: &mut View<'_>) -> Result<(Reply, Effects), ReadError> {
    let Some(mut e) = view.get(db, key)? else {
        return Ok((Reply::Null, Vec::new()));
    };
    let reply = Reply::Bulk(e.data.clone());
    let eff = match ttl {
        Ttl::Keep => Vec::new(),
        Ttl::Clear if e.expire_ms.is_none() => Vec::new(),
        Ttl::Clear => {
            e.expire_ms = None;
            vec![Effect::Put(db, key.to_vec(), e)]
        }
        Ttl::At(t) => {
            e.expire_ms = Some(t);
            vec![put_or_del(db, key, e, view.now_ms())]
        }
    };
    Ok((reply, eff))
}

/// MOVE: to a database that does not hold the key.
fn move_key(
    key: &[u8],
    to: u8,
    db: u8,
    view: &mut View<'_>,
) -> Result<(Reply, Effects), ReadError> {
    if to == db {
        return Ok((
            err("source and destination objects are the same"),
            Vec::new(),
        ));
    }
    Ok(match view.get(db, key)? {
        Some(e) if !view.exists(to, key)? => (
            Reply::Integer(1),
            vec![
                Effect::Del(db, key.to_vec()),
                Effect::Put(to, key.to_vec(), e),
            ],
        ),
        _ => (Reply::Integer(0), Vec::new()),
    })
}

/// RENAME and RENAMENX: the value and its expiry move (a counter's value is written as
/// its sum: a reset of the destination). Redis: a missing source is an error; renaming a
/// key to itself answers OK (RENAMENX: 0) and changes nothing.
fn rename(
    src: &[u8],
    dst: &[u8],
    nx: bool,
    db: u8,
    view: &mut View<'_>,
) -> Result<(Reply, Effects), ReadError> {
    let Some(e) = view.get(db, src)? else {
        return Ok((err("no such key"), Vec::new()));
    };
    let done = || if nx { Reply::Integer(1) } else { ok() };
    if src == dst {
        return Ok((if nx { Reply::Integer(0) } else { ok() }, Vec::new()));
    }
    if nx && view.exists(db, dst)? {
        return Ok((Reply::Integer(0), Vec::new()));
    }
    Ok((
        done(),
        vec![
            Effect::Del(db, src.to_vec()),
            Effect::Put(db, dst.to_vec(), e),
        ],
    ))
}

/// COPY src dst [DB to] [REPLACE]: 1 when copied, 0 when the source is missing or the
/// destination exists without REPLACE. The expiry is copied too.
fn copy(
    src: &[u8],
    dst: &[u8],
    to: u8,
    replace: bool,
    db: u8,
    view: &mut View<'_>,
) -> Result<(Reply, Effects), ReadError> {
    if src == dst && to == db {
        return Ok((
            err("source and destination objects are the same"),
            Vec::new(),
        ));
    }
    let Some(e) = view.get(db, src)? else {
        return Ok((Reply::Integer(0), Vec::new()));
    };
    if !replace && view.exists(to, dst)? {
        return Ok((Reply::Integer(0), Vec::new()));
    }
    Ok((Reply::Integer(1), vec![Effect::Put(to, dst.to_vec(), e)]))
}

/// INCRBY and friends: this server's own contribution grows (see [`crate::counter`]),
/// or, for a key that expired, the result is written as a plain value.
fn incr(key: &[u8], by: i64, db: u8, view: &mut View<'_>) -> Result<(Reply, Effects), ReadError> {
    let (old, plan) = view.counter(db, key)?;
    let cur = match &old {
        None => 0,
        Some(e) => match parse_i64(&e.data) {
            Some(v) => v,
            None => return Ok((err(NOT_INT), Vec::new())),
        },
    };
    let overflow = || Ok((err("increment or decrement would overflow"), Vec::new()));
    let Some(new) = cur.checked_add(by) else {
        return overflow();
    };
    let value = Entry {
        data: new.to_string().into_bytes(),
        expire_ms: old.and_then(|e| e.expire_ms),
    };
    let eff = match plan {
        Plan::Reset => Effect::Put(db, key.to_vec(), value),
        Plan::Contrib { base, own, root } => {
            let contrib = match own {
                Some(o) => match o.delta.checked_add(by) {
                    Some(delta) => Contribution {
                        delta,
                        base,
                        first: o.first,
                    },
                    None => return overflow(),
                },
                None => Contribution {
                    delta: by,
                    base,
                    first: None,
                },
            };
            Effect::Incr {
                db,
                key: key.to_vec(),
                origin: view.node_id(),
                value,
                contrib,
                root,
            }
        }
    };
    Ok((Reply::Integer(new), vec![eff]))
}

/// MSET and MSETNX: the last value of a key given twice wins; one effect per key.
fn mset(
    pairs: &[(&[u8], &[u8])],
    nx: bool,
    db: u8,
    view: &mut View<'_>,
) -> Result<(Reply, Effects), ReadError> {
    if nx {
        for (k, _) in pairs {
            if view.exists(db, k)? {
                return Ok((Reply::Integer(0), Vec::new()));
            }
        }
    }
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    let mut eff: Effects = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let e = Effect::Put(db, k.to_vec(), Entry::plain(v.to_vec()));
        match seen.get(k) {
            Some(&i) => eff[i] = e,
            None => {
                seen.insert(k, eff.len());
                eff.push(e);
            }
        }
    }
    Ok((if nx { Reply::Integer(1) } else { ok() }, eff))
}

/// SETRANGE: Redis pads with zero bytes; an empty value changes nothing.
fn setrange(
    key: &[u8],
    off: usize,
    val: &[u8],
    db: u8,
    view: &mut View<'_>,
) -> Result<(Reply, Effects), ReadError> {
    let old = view.get(db, key)?;
    if val.is_empty() {
        let len = old.map_or(0, |e| e.data.len());
        return Ok((Reply::Integer(len as i64), Vec::new()));
    }
    if off.saturating_add(val.len()) > MAX_STRING {
        return Ok((
            err("string exceeds maximum allowed size (proto-max-bulk-len)"),
            Vec::new(),
        ));
    }
    let mut e = old.unwrap_or_else(|| Entry::plain(Vec::new()));
    if e.data.len() < off + val.len() {
        e.data.resize(off + val.len(), 0);
    }
    e.data[off..off + val.len()].copy_from_slice(val);
    let len = e.data.len() as i64;
    Ok((Reply::Integer(len), vec![Effect::Put(db, key.to_vec(), e)]))
}

/// EXPIRE and friends at the absolute time `at` (ms), under Redis 7's conditions: a key
/// without expiry counts as an infinite one for GT and LT; a time not after now deletes.
fn expire(
    key: &[u8],
    at: i64,
    cond: ExpCond,
    db: u8,
    view: &mut View<'_>,
) -> Result<(Reply, Effects), ReadError> {
    let Some(mut e) = view.get(db, key)? else {
        return Ok((Reply::Integer(0), Vec::new()));
    };
    let cur = e.expire_ms;
    let at_u = u64::try_from(at).unwrap_or(0);
    let go = match cond {
        ExpCond::Always => true,
        ExpCond::Nx => cur.is_none(),
        ExpCond::Xx => cur.is_some(),
        ExpCond::Gt => cur.is_some_and(|c| at > 0 && at_u > c),
        ExpCond::Lt => cur.is_none_or(|c| at < 0 || at_u < c),
    };
    if !go {
        return Ok((Reply::Integer(0), Vec::new()));
    }
    if at <= 0 || at_u <= view.now_ms() {
        return Ok((Reply::Integer(1), vec![Effect::Del(db, key.to_vec())]));
    }
    e.expire_ms = Some(at_u);
    Ok((Reply::Integer(1), vec![Effect::Put(db, key.to_vec(), e)]))
}

/// A float as INCRBYFLOAT answers it: decimal, no exponent, no trailing zeros.
pub(crate) fn format_float(v: f64) -> String {
    // Rust's shortest round-trip form never uses an exponent in `Display`.
    let s = format!("{v}");
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_redis_prints_them() {
        assert_eq!(format_float(10.5 + 0.1), "10.6");
        assert_eq!(format_float(5200.0), "5200");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(format_float(1e21), "1000000000000000000000");
    }
}
