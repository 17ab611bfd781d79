//! FLUSHDB and FLUSHALL: each ONE stamped write of a flush marker per database flushed
//! ([`crate::keyspace`]), never a tombstone per key: durable in the WAL and the archive,
//! rolled forward and replicated like any put, and ordered by last-writer-wins (a write
//! stamped after the flush survives it on every server; one stamped before is hidden
//! everywhere, even if it arrives later from a peer). The keys' space is not reclaimed.

use duplex_proto::{error, simple};

use super::view::{batch_of, Effect};
use super::write::failure_line;
use super::{check, Cmd, ErrLine};
use crate::keyspace::DBS;
use crate::shared::Shared;

/// The effects of a FLUSHDB (of `db`) or FLUSHALL, or the reply to bad options
/// (`ASYNC` and `SYNC` are accepted; the flush is one record either way).
pub(crate) fn flush_effects(db: u8, args: &[&[u8]]) -> Result<Vec<Effect>, ErrLine> {
    if let Some(o) = args.get(1) {
        if !o.eq_ignore_ascii_case(b"ASYNC") && !o.eq_ignore_ascii_case(b"SYNC") {
            return Err(ErrLine::err("syntax error"));
        }
    }
    Ok(match check(args) {
        Ok((Cmd::FlushAll, _)) => (0..DBS).map(Effect::Flush).collect(),
        _ => vec![Effect::Flush(db)],
    })
}

/// `FLUSHDB [ASYNC|SYNC]` (of database `db`) and `FLUSHALL [ASYNC|SYNC]`.
pub fn flush_cmd(sh: &Shared, db: u8, args: &[&[u8]], out: &mut Vec<u8>) {
    let eff = match flush_effects(db, args) {
        Ok(e) => e,
        Err(e) => return e.send(out),
    };
    let _hold = sh.write_hold().enter();
    let st = sh.state().get().state;
    if !st.accepts_writes() {
        return error(out, &st.refusal());
    }
    // No conditional write (INCR, SET NX, ...) evaluates across the flush.
    let _all = sh.stripes().lock_all();
    match sh.db().write(batch_of(eff)) {
        Ok(_) => simple(out, "OK"),
        Err(e) => {
            sh.note_write_error(&e);
            error(out, &failure_line(&e));
        }
    }
}

/// `SWAPDB a b`: refused. A database is a prefix of the stored keys in one replicated key
/// space; a swap would rewrite every key of both databases in one batch (unbounded, past
/// the WAL's 16 MiB record), and a peer's write to either database, concurrent with it,
/// could not be ordered against it key by key by last-writer-wins.
pub fn swapdb(args: &[&[u8]], out: &mut Vec<u8>) {
    for (a, which) in [(args[1], "first"), (args[2], "second")] {
        if super::parse::db_arg(a).is_err() {
            return error(out, &format!("ERR invalid {which} DB index"));
        }
    }
    error(
        out,
        "ERR SWAPDB is not supported by duplexd: a swap would rewrite both databases in one unbounded write that replication could not order against concurrent writes (see docs/COMMANDS.md)",
    );
}
