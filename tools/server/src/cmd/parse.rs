//! Parsing of the write commands into [`WriteOp`]s, with Redis 7's option rules and error
//! texts (clients parse some of them: "ERR value is not an integer or out of range").
//! Relative expiry times become absolute here, at the server's clock.

use super::{arity_error, lookup, Cmd, ErrLine};
use crate::shared::Shared;

/// Redis's reply to a number it cannot take.
pub(crate) const NOT_INT: &str = "value is not an integer or out of range";
/// Redis's reply to a float it cannot take.
pub(crate) const NOT_FLOAT: &str = "value is not a valid float";

/// SET's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    Always,
    Nx,
    Xx,
}

/// What a write does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    /// The key loses its expiry (a plain SET; GETEX PERSIST).
    Clear,
    /// The key keeps its expiry (KEEPTTL; GETEX without option).
    Keep,
    /// The key expires at this time, ms since the Unix epoch.
    At(u64),
}

/// EXPIRE's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpCond {
    Always,
    Nx,
    Xx,
    Gt,
    Lt,
}

/// A parsed write command (keys are the client's, in the connection's database).
#[derive(Debug)]
pub(crate) enum WriteOp<'a> {
    Set {
        key: &'a [u8],
        val: &'a [u8],
        cond: Cond,
        ttl: Ttl,
        get: bool,
    },
    /// MSET (`nx`: MSETNX).
    MSet(Vec<(&'a [u8], &'a [u8])>, bool),
    /// DEL and UNLINK.
    Del(Vec<&'a [u8]>),
    IncrBy(&'a [u8], i64),
    IncrByFloat(&'a [u8], f64),
    Append(&'a [u8], &'a [u8]),
    SetRange(&'a [u8], usize, &'a [u8]),
    /// GETSET: SET with GET.
    GetDel(&'a [u8]),
    GetEx(&'a [u8], Ttl),
    /// EXPIRE and friends: the absolute time (ms; at or before now deletes the key).
    Expire(&'a [u8], i64, ExpCond),
    Persist(&'a [u8]),
    /// MOVE key db.
    Move(&'a [u8], u8),
    /// RENAME (`nx`: RENAMENX) src dst.
    Rename(&'a [u8], &'a [u8], bool),
    /// COPY src dst [DB db] [REPLACE]: (src, dst, destination db or the connection's,
    /// replace).
    Copy(&'a [u8], &'a [u8], Option<u8>, bool),
}

impl<'a> WriteOp<'a> {
    /// Whether it must read current values (and so lock its stripes exclusively).
    pub(crate) fn reads(&self) -> bool {
        !matches!(
            self,
            WriteOp::Set {
                cond: Cond::Always,
                ttl: Ttl::Clear | Ttl::At(_),
                get: false,
                ..
            } | WriteOp::MSet(_, false)
        )
    }

    /// The keys it touches.
    pub(crate) fn keys(&self) -> Vec<&'a [u8]> {
        match self {
            WriteOp::Set { key, .. }
            | WriteOp::IncrBy(key, _)
            | WriteOp::IncrByFloat(key, _)
            | WriteOp::Append(key, _)
            | WriteOp::SetRange(key, _, _)
            | WriteOp::GetDel(key)
            | WriteOp::GetEx(key, _)
            | WriteOp::Expire(key, _, _)
            | WriteOp::Persist(key)
            | WriteOp::Move(key, _) => vec![*key],
            WriteOp::Rename(a, b, _) | WriteOp::Copy(a, b, _, _) => vec![*a, *b],
            WriteOp::MSet(p, _) => p.iter().map(|(k, _)| *k).collect(),
            WriteOp::Del(k) => k.clone(),
        }
    }
}

pub(crate) use crate::keyspace::parse_i64;

/// An integer argument, or Redis's error.
pub(crate) fn int_arg(b: &[u8]) -> Result<i64, ErrLine> {
    parse_i64(b).ok_or_else(|| ErrLine::err(NOT_INT))
}

/// Redis's `strtold` reading: no leading space, no trailing bytes, not NaN.
pub(crate) fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    (!v.is_nan()).then_some(v)
}

fn check_key(sh: &Shared, k: &[u8]) -> Result<(), ErrLine> {
    // Room for the longest stored form: a counter contribution's 13 more bytes.
    let max = sh.db().config().max_key_size.saturating_sub(16);
    if k.is_empty() {
        return Err(ErrLine::err("empty keys are not supported by duplexd"));
    }
    if k.len() > max {
        return Err(ErrLine::err(format!(
            "key of {} bytes exceeds the maximum of {max} bytes",
            k.len()
        )));
    }
    Ok(())
}

/// Checks a value's size (10 bytes are kept for the expiry header).
pub(crate) fn check_len(sh: &Shared, len: usize) -> Result<(), ErrLine> {
    let max = sh.db().config().max_value_size.saturating_sub(10);
    if len > max {
        return Err(ErrLine::err(format!(
            "value of {len} bytes exceeds the maximum of {max} bytes"
        )));
    }
    Ok(())
}

/// An expiry argument as an absolute time in ms: `unit` is 1000 for seconds, 1 for ms;
/// `now` is added for a relative one. Redis's checks and texts.
pub(crate) fn expire_at(
    arg: &[u8],
    unit: i64,
    now: Option<u64>,
    cmd: &str,
) -> Result<u64, ErrLine> {
    let v = int_arg(arg)?;
    let invalid = || ErrLine::err(format!("invalid expire time in '{cmd}' command"));
    if v <= 0 {
        return Err(invalid());
    }
    let ms = v.checked_mul(unit).ok_or_else(invalid)?;
    let base = now.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let at = ms.checked_add(base).ok_or_else(invalid)?;
    u64::try_from(at).map_err(|_| invalid())
}

/// A database index argument (MOVE, COPY ... DB), with Redis's replies.
pub(crate) fn db_arg(b: &[u8]) -> Result<u8, ErrLine> {
    let db = parse_i64(b).ok_or_else(|| ErrLine::err(NOT_INT))?;
    u8::try_from(db)
        .ok()
        .filter(|d| *d < crate::keyspace::DBS)
        .ok_or_else(|| ErrLine::err("DB index is out of range"))
}

/// SET's options after key and value: (condition, expiry, GET).
fn parse_set_opts(opts: &[&[u8]], now: u64) -> Result<(Cond, Ttl, bool), ErrLine> {
    let syntax = || ErrLine::err("syntax error");
    let (mut cond, mut ttl, mut get, mut keep) = (Cond::Always, None, false, false);
    let mut i = 0;
    while i < opts.len() {
        let u = opts[i].to_ascii_uppercase();
        match u.as_slice() {
            b"NX" if cond != Cond::Xx => cond = Cond::Nx,
            b"XX" if cond != Cond::Nx => cond = Cond::Xx,
            b"GET" => get = true,
            b"KEEPTTL" if ttl.is_none() => keep = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if ttl.is_none() && !keep => {
                let arg = opts.get(i + 1).ok_or_else(syntax)?;
                ttl = Some((u, *arg));
                i += 1;
            }
            _ => return Err(syntax()),
        }
        i += 1;
    }
    let ttl = match ttl {
        None if keep => Ttl::Keep,
        None => Ttl::Clear,
        Some((u, arg)) => {
            let (unit, rel) = match u.as_slice() {
                b"EX" => (1000, true),
                b"PX" => (1, true),
                b"EXAT" => (1000, false),
                _ => (1, false),
            };
            Ttl::At(expire_at(arg, unit, rel.then_some(now), "set")?)
        }
    };
    Ok((cond, ttl, get))
}

/// GETEX's options.
fn parse_getex_opts(opts: &[&[u8]], now: u64) -> Result<Ttl, ErrLine> {
    let syntax = || ErrLine::err("syntax error");
    let Some(first) = opts.first() else {
        return Ok(Ttl::Keep);
    };
    let u = first.to_ascii_uppercase();
    let (unit, rel) = match u.as_slice() {
        b"PERSIST" if opts.len() == 1 => return Ok(Ttl::Clear),
        b"EX" => (1000, true),
        b"PX" => (1, true),
        b"EXAT" => (1000, false),
        b"PXAT" => (1, false),
        _ => return Err(syntax()),
    };
    if opts.len() != 2 {
        return Err(syntax());
    }
    Ok(Ttl::At(expire_at(
        opts[1],
        unit,
        rel.then_some(now),
        "getex",
    )?))
}

/// EXPIRE's options.
fn parse_exp_cond(opts: &[&[u8]]) -> Result<ExpCond, ErrLine> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in opts {
        match o.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(ErrLine::err(format!(
                    "Unsupported option {}",
                    super::lossy(o)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(ErrLine::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(ErrLine::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => ExpCond::Nx,
        (_, _, true, _) => ExpCond::Gt,
        (_, _, _, true) => ExpCond::Lt,
        (_, true, ..) => ExpCond::Xx,
        _ => ExpCond::Always,
    })
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: the absolute time in ms (Redis lets it be in
/// the past: the key is then deleted).
fn parse_expire<'a>(c: Cmd, args: &[&'a [u8]], now: u64) -> Result<WriteOp<'a>, ErrLine> {
    let v = int_arg(args[2])?;
    let (unit, rel, name) = match c {
        Cmd::Expire => (1000, true, "expire"),
        Cmd::PExpire => (1, true, "pexpire"),
        Cmd::ExpireAt => (1000, false, "expireat"),
        _ => (1, false, "pexpireat"),
    };
    let invalid = || ErrLine::err(format!("invalid expire time in '{name}' command"));
    let base = if rel {
        i64::try_from(now).unwrap_or(i64::MAX)
    } else {
        0
    };
    let at = v
        .checked_mul(unit)
        .and_then(|ms| ms.checked_add(base))
        .ok_or_else(invalid)?;
    let cond = parse_exp_cond(&args[3..])?;
    Ok(WriteOp::Expire(args[1], at, cond))
}

/// Parses a well-formed write command (name and arity already checked); `now` is the
/// server's time in ms, for relative expiry times.
pub(crate) fn parse_write<'a>(
    sh: &Shared,
    args: &[&'a [u8]],
    now: u64,
) -> Result<WriteOp<'a>, ErrLine> {
    let c = lookup(args[0]).0;
    if !matches!(c, Cmd::MSet | Cmd::MSetNx | Cmd::Del) {
        check_key(sh, args[1])?;
    }
    let op = match c {
        Cmd::Set => {
            check_len(sh, args[2].len())?;
            let (cond, ttl, get) = parse_set_opts(&args[3..], now)?;
            WriteOp::Set {
                key: args[1],
                val: args[2],
                cond,
                ttl,
                get,
            }
        }
        // SETNX answers 1 or 0, as MSETNX of one key does.
        Cmd::SetNx => {
            check_len(sh, args[2].len())?;
            WriteOp::MSet(vec![(args[1], args[2])], true)
        }
        Cmd::GetSet => {
            check_len(sh, args[2].len())?;
            WriteOp::Set {
                key: args[1],
                val: args[2],
                cond: Cond::Always,
                ttl: Ttl::Clear,
                get: true,
            }
        }
        Cmd::SetEx | Cmd::PSetEx => {
            check_len(sh, args[3].len())?;
            let (unit, name) = if c == Cmd::SetEx {
                (1000, "setex")
            } else {
                (1, "psetex")
            };
            WriteOp::Set {
                key: args[1],
                val: args[3],
                cond: Cond::Always,
                ttl: Ttl::At(expire_at(args[2], unit, Some(now), name)?),
                get: false,
            }
        }
        Cmd::MSet | Cmd::MSetNx => {
            if !(args.len() - 1).is_multiple_of(2) {
                return Err(arity_error(args[0]));
            }
            let mut pairs = Vec::with_capacity(args.len() / 2);
            for p in args[1..].chunks(2) {
                check_key(sh, p[0])?;
                check_len(sh, p[1].len())?;
                pairs.push((p[0], p[1]));
            }
            WriteOp::MSet(pairs, c == Cmd::MSetNx)
        }
        Cmd::Incr | Cmd::Decr => WriteOp::IncrBy(args[1], if c == Cmd::Incr { 1 } else { -1 }),
        Cmd::IncrBy => WriteOp::IncrBy(args[1], int_arg(args[2])?),
        Cmd::DecrBy => {
            let by = int_arg(args[2])?;
            let by = by
                .checked_neg()
                .ok_or_else(|| ErrLine::err("decrement would overflow"))?;
            WriteOp::IncrBy(args[1], by)
        }
        Cmd::IncrByFloat => WriteOp::IncrByFloat(
            args[1],
            parse_f64(args[2]).ok_or_else(|| ErrLine::err(NOT_FLOAT))?,
        ),
        Cmd::Append => WriteOp::Append(args[1], args[2]),
        Cmd::SetRange => {
            let off = int_arg(args[2])?;
            let off = usize::try_from(off).map_err(|_| ErrLine::err("offset is out of range"))?;
            WriteOp::SetRange(args[1], off, args[3])
        }
        Cmd::GetDel => WriteOp::GetDel(args[1]),
        Cmd::GetEx => WriteOp::GetEx(args[1], parse_getex_opts(&args[2..], now)?),
        Cmd::Expire | Cmd::PExpire | Cmd::ExpireAt | Cmd::PExpireAt => parse_expire(c, args, now)?,
        Cmd::Persist => WriteOp::Persist(args[1]),
        Cmd::Move => WriteOp::Move(args[1], db_arg(args[2])?),
        Cmd::Rename | Cmd::RenameNx => {
            check_key(sh, args[2])?;
            WriteOp::Rename(args[1], args[2], c == Cmd::RenameNx)
        }
        Cmd::Copy => {
            check_key(sh, args[2])?;
            let (mut to, mut replace) = (None, false);
            let mut i = 3;
            while i < args.len() {
                let o = args[i].to_ascii_uppercase();
                if o == b"REPLACE" {
                    replace = true;
                } else if o == b"DB" && i + 1 < args.len() {
                    to = Some(db_arg(args[i + 1])?);
                    i += 1;
                } else {
                    return Err(ErrLine::err("syntax error"));
                }
                i += 1;
            }
            WriteOp::Copy(args[1], args[2], to, replace)
        }
        _ => {
            for k in &args[1..] {
                check_key(sh, k)?;
            }
            WriteOp::Del(args[1..].to_vec())
        }
    };
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_f64(b"5.0e3"), Some(5000.0));
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"nan"), None);
    }

    #[test]
    fn set_options_follow_redis() {
        assert_eq!(
            parse_set_opts(&[b"nx", b"get"], 0).ok(),
            Some((Cond::Nx, Ttl::Clear, true))
        );
        assert_eq!(
            parse_set_opts(&[b"EX", b"10"], 5).ok(),
            Some((Cond::Always, Ttl::At(10_005), false))
        );
        assert_eq!(
            parse_set_opts(&[b"KEEPTTL"], 5).ok(),
            Some((Cond::Always, Ttl::Keep, false))
        );
        for bad in [
            &[&b"NX"[..], b"XX"][..],
            &[b"EX", b"1", b"PX", b"1"],
            &[b"KEEPTTL", b"EX", b"1"],
            &[b"EX"],
            &[b"BOGUS"],
        ] {
            assert_eq!(
                parse_set_opts(bad, 0).err().map(|e| e.0),
                Some("ERR syntax error".to_string())
            );
        }
        assert_eq!(
            parse_set_opts(&[b"EX", b"0"], 0).err().map(|e| e.0),
            Some("ERR invalid expire time in 'set' command".to_string())
        );
        assert_eq!(
            parse_set_opts(&[b"EX", b"x"], 0).err().map(|e| e.0),
            Some(format!("ERR {NOT_INT}"))
        );
    }
}
