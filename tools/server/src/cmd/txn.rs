//! MULTI, EXEC and DISCARD. MULTI queues the queueable commands (reads and writes of keys,
//! FLUSHDB, FLUSHALL, PING, ECHO); EXEC evaluates them in order, in the connection's
//! database, against one snapshot plus the transaction's own writes, under exclusive stripes
//! on every key touched (every stripe when it flushes), and applies every write as ONE
//! `WriteBatch`. A refused command while queueing makes EXEC abort (`EXECABORT`); so does
//! a queue past [`MULTI_QUEUE_MAX`] commands or [`MULTI_QUEUE_BYTES_MAX`] bytes.

use duplex_proto::{array_len, codes, error, null_array, simple, Reply};

use super::keys::flush_effects;
use super::read::read;
use super::watch::{self, Watched};
use super::write::{batch_of, eval_write, parse_write, View};
use super::{lookup, lossy, Cmd, ConnState, ErrLine};
use crate::limits::{MULTI_QUEUE_BYTES_MAX, MULTI_QUEUE_MAX};
use crate::shared::Shared;

/// Whether `c` acts on the transaction itself (and so is not queued after MULTI).
pub fn controls(c: Cmd) -> bool {
    matches!(
        c,
        Cmd::Exec | Cmd::Discard | Cmd::Multi | Cmd::Quit | Cmd::Watch
    )
}

/// Queues a command after MULTI (`QUEUED`), or refuses one MULTI may not queue (EXEC then
/// aborts).
pub fn queue(conn: &mut ConnState, args: &[&[u8]], queueable: bool, out: &mut Vec<u8>) {
    let Some(q) = conn.multi.as_mut() else {
        return error(out, "ERR internal: queue without MULTI");
    };
    let bytes: usize = args.iter().map(|a| a.len()).sum();
    if queueable && (q.len() >= MULTI_QUEUE_MAX || conn.multi_bytes + bytes > MULTI_QUEUE_BYTES_MAX)
    {
        // The queue is dropped now (its memory freed); MULTI stays open so the commands
        // the client sends next are not run outside the transaction, and EXEC aborts.
        q.clear();
        q.shrink_to_fit();
        conn.multi_dirty = true;
        ErrLine::err(format!(
            "MULTI queue limit reached ({MULTI_QUEUE_MAX} commands or {MULTI_QUEUE_BYTES_MAX} bytes): the transaction will be discarded at EXEC; split it into smaller ones"
        ))
        .send(out);
    } else if queueable && conn.multi_dirty {
        // Already doomed: answer as queued without keeping it.
        simple(out, "QUEUED");
    } else if queueable {
        conn.multi_bytes += bytes;
        q.push(args.iter().map(|a| a.to_vec()).collect());
        simple(out, "QUEUED");
    } else {
        conn.multi_dirty = true;
        ErrLine::err(format!(
            "'{}' is not allowed inside MULTI in duplexd",
            lossy(args[0]).to_ascii_lowercase()
        ))
        .send(out);
    }
}

/// MULTI.
pub fn multi(conn: &mut ConnState, out: &mut Vec<u8>) {
    if conn.multi.is_some() {
        error(out, "ERR MULTI calls can not be nested");
    } else {
        conn.multi = Some(Vec::new());
        conn.multi_dirty = false;
        conn.multi_bytes = 0;
        simple(out, "OK");
    }
}

/// DISCARD.
pub fn discard(conn: &mut ConnState, out: &mut Vec<u8>) {
    if conn.multi.take().is_some() {
        conn.watched = Vec::new();
        simple(out, "OK");
    } else {
        error(out, "ERR DISCARD without MULTI");
    }
}

/// EXEC.
pub fn exec_cmd(sh: &Shared, conn: &mut ConnState, out: &mut Vec<u8>) {
    let Some(q) = conn.multi.take() else {
        return error(out, "ERR EXEC without MULTI");
    };
    // EXEC forgets the watched keys whatever its outcome.
    let watched = std::mem::take(&mut conn.watched);
    match q {
        _ if conn.multi_dirty => error(
            out,
            &codes::line(
                codes::EXECABORT,
                "Transaction discarded because of previous errors.",
            ),
        ),
        q => conn.db = exec(sh, conn.db, q, &watched, out),
    }
}

/// Every key the queued requests read or write, whether any writes, and whether one
/// flushes (then every stripe is locked).
fn keys_of<'a>(sh: &Shared, reqs: &[Vec<&'a [u8]>]) -> (Vec<&'a [u8]>, bool, bool) {
    let (mut has_write, mut flush) = (false, false);
    let mut keys: Vec<&[u8]> = Vec::new();
    for r in reqs {
        let c = lookup(r[0]).0;
        if c.is_write() {
            has_write = true;
            if let Ok(op) = parse_write(sh, r, 0) {
                keys.extend(op.keys());
            }
        } else if c.is_read() {
            match c {
                Cmd::MGet | Cmd::Exists | Cmd::Touch => keys.extend(&r[1..]),
                Cmd::Object => keys.extend(r.get(2)),
                _ => keys.push(r[1]),
            }
        } else if matches!(c, Cmd::FlushDb | Cmd::FlushAll) {
            has_write = true;
            flush = true;
        }
    }
    (keys, has_write, flush)
}

/// Evaluates every queued command (from database `db`) against one view, then applies the
/// writes as one batch; a changed watched key aborts it first (a nil reply). Returns the
/// connection's database afterwards (a queued SELECT changes it, as in Redis).
fn exec(
    sh: &Shared,
    db: u8,
    queued: Vec<Vec<Vec<u8>>>,
    watched: &[Watched],
    out: &mut Vec<u8>,
) -> u8 {
    let reqs: Vec<Vec<&[u8]>> = queued
        .iter()
        .map(|r| r.iter().map(Vec::as_slice).collect())
        .collect();
    let (keys, has_write, flush) = keys_of(sh, &reqs);
    let _hold = has_write.then(|| sh.write_hold().enter());
    let st = sh.state().get().state;
    if has_write && !st.accepts_writes() {
        error(
            out,
            &codes::line(
                codes::EXECABORT,
                &format!("Transaction discarded: {}", st.refusal()),
            ),
        );
        return db;
    }
    let guard = if flush {
        sh.stripes().lock_all()
    } else {
        sh.stripes().lock(
            keys.iter()
                .copied()
                .chain(watch::keys(watched))
                .map(|k| (k, true)),
        )
    };
    match watch::changed(sh, watched) {
        Ok(false) => {}
        Ok(true) => {
            null_array(out);
            return db;
        }
        Err(e) => {
            ErrLine::err(e.to_string()).send(out);
            return db;
        }
    }
    let mut view = View::now(sh);
    let mut cur = db;
    let replies: Vec<Vec<u8>> = reqs
        .iter()
        .map(|r| {
            let mut o = Vec::new();
            eval_queued(sh, &mut cur, r, &mut view, &mut o);
            o
        })
        .collect();
    if !view.is_clean() {
        let batch = batch_of(view.into_effects());
        if let Err(e) = sh.db().write(batch) {
            sh.note_write_error(&e);
            drop(guard);
            // A refusal aborts the transaction; a failure whose meaning has its own code
            // (out of space, the synchronous archive, an unknown outcome) keeps it, since
            // "not applied" would not be true of all of them.
            let line = super::write::failure_line(&e);
            if codes::code_of(&line) != codes::ERR {
                error(out, &line);
                return cur;
            }
            error(
                out,
                &codes::line(codes::EXECABORT, &format!("Transaction not applied: {e}")),
            );
            return cur;
        }
    }
    drop(guard);
    array_len(out, replies.len());
    for r in replies {
        out.extend_from_slice(&r);
    }
    cur
}

/// One queued command's reply inside EXEC, appended to `out`.
fn eval_queued(sh: &Shared, db: &mut u8, r: &[&[u8]], view: &mut View<'_>, out: &mut Vec<u8>) {
    let c = lookup(r[0]).0;
    if c == Cmd::Select {
        let mut conn = ConnState::new(0, true);
        super::conn::select(&mut conn, r, out);
        if !out.starts_with(b"-") {
            *db = conn.db;
        }
        return;
    }
    let db = *db;
    if c.is_read() {
        // Reads see the transaction's own writes: answered from the view.
        return read(view, db, c, r, out);
    }
    let reply = if c.is_write() {
        match parse_write(sh, r, view.now_ms()) {
            Err(m) => Reply::Error(m.0),
            Ok(op) => match eval_write(&op, db, view, true) {
                Ok((rep, _)) => rep,
                Err(e) => Reply::Error(ErrLine::err(e.to_string()).0),
            },
        }
    } else {
        other_queued(sh, db, c, r, view)
    };
    reply.encode(out);
}

/// A queued command that neither reads nor writes keys.
fn other_queued(sh: &Shared, db: u8, c: Cmd, r: &[&[u8]], view: &mut View<'_>) -> Reply {
    match c {
        Cmd::FlushDb | Cmd::FlushAll => match flush_effects(db, r) {
            Ok(eff) => {
                view.track(&eff);
                Reply::Simple("OK".into())
            }
            Err(e) => Reply::Error(e.0),
        },
        Cmd::Ping => r
            .get(1)
            .map_or_else(|| Reply::Simple("PONG".into()), |m| Reply::Bulk(m.to_vec())),
        Cmd::Echo => Reply::Bulk(r[1].to_vec()),
        Cmd::Unwatch => Reply::Simple("OK".into()),
        Cmd::Time => super::conn::time_reply(),
        Cmd::LastSave => Reply::Integer(super::persist::lastsave(sh)),
        _ => Reply::Error("ERR command not allowed inside MULTI".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multi_queue_is_bounded() {
        let mut conn = ConnState::new(1, true);
        let mut out = Vec::new();
        multi(&mut conn, &mut out);
        for i in 0..MULTI_QUEUE_MAX {
            let k = i.to_string();
            queue(&mut conn, &[b"SET", k.as_bytes(), b"v"], true, &mut out);
        }
        assert_eq!(conn.multi.as_ref().map(Vec::len), Some(MULTI_QUEUE_MAX));
        out.clear();
        queue(&mut conn, &[b"SET", b"one-more", b"v"], true, &mut out);
        let reply = String::from_utf8_lossy(&out);
        assert!(
            reply.starts_with("-ERR MULTI queue limit reached"),
            "{reply}"
        );
        // Still in MULTI (later commands are not run outside it), holding nothing, doomed.
        assert_eq!(conn.multi.as_ref().map(Vec::len), Some(0));
        out.clear();
        queue(&mut conn, &[b"SET", b"later", b"v"], true, &mut out);
        assert_eq!(out, b"+QUEUED\r\n");
        assert_eq!(conn.multi.as_ref().map(Vec::len), Some(0));
        // EXEC aborts; it touches nothing, so no database is needed to see it.
        assert!(conn.multi_dirty);
        // Bytes count too.
        let mut conn = ConnState::new(2, true);
        multi(&mut conn, &mut out);
        let big = vec![b'x'; MULTI_QUEUE_BYTES_MAX / 2];
        out.clear();
        queue(&mut conn, &[b"SET", b"a", &big], true, &mut out);
        queue(&mut conn, &[b"SET", b"b", &big], true, &mut out);
        assert!(String::from_utf8_lossy(&out).contains("-ERR MULTI queue limit"));
    }
}
