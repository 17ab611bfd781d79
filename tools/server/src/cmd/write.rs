//! The writes of keys (SET and its options, MSET, DEL, INCR, EXPIRE, ...:
//! [`super::Cmd::is_write`]), committed in runs: [`write_groups`] takes the runs of writes of one or more connections
//! and commits them with ONE `Database::write_many` (one WAL append, one durability wait),
//! each command its own atomic batch; the replies come once the commit is durable (or
//! failed). A command is parsed in `parse`, evaluated in `eval` against a `view` (the
//! snapshot under the run's earlier writes), and its effects become one batch.
//!
//! Exactness under concurrency comes from the key stripes ([`crate::shared::Stripes`]):
//! every key of the runs is locked at once, exclusive where a command reads (SET NX/XX,
//! INCR, DEL, ... must see the current value), and when any command reads, all are evaluated in order
//! against one view that includes the earlier commands' effects, so SET NX/XX and DEL
//! counts are exact across the runs too. [`crate::cmd::txn`] evaluates EXEC with the same
//! pieces.

use duplex_engine::WriteBatch;
use duplex_proto::{codes, error, Reply};

pub(crate) use super::eval::eval_write;
pub(crate) use super::parse::{parse_write, WriteOp};
pub(crate) use super::view::{batch_of, View};
use super::ErrLine;
use crate::shared::Shared;

/// One command's reply: final now, or once the commit is known.
enum Slot {
    Done(Reply),
    Pending(Reply),
}

/// Runs of write commands of database 0 (see [`super::is_write`]), one run per
/// connection, committed together (see the module docs). Returns each run's encoded
/// replies, in order, once the commit is durable (or failed).
pub fn write_groups(sh: &Shared, groups: &[&[Vec<&[u8]>]]) -> Vec<Vec<u8>> {
    let groups: Vec<(u8, &[Vec<&[u8]>])> = groups.iter().map(|g| (0, *g)).collect();
    write_groups_in(sh, &groups)
}

/// [`write_groups`] with each run's database.
pub fn write_groups_in(sh: &Shared, groups: &[(u8, &[Vec<&[u8]>])]) -> Vec<Vec<u8>> {
    // Delayed while a rebuilt peer's write hold is on; counted under way until replied.
    let _hold = sh.write_hold().enter();
    let st = sh.state().get().state;
    if !st.accepts_writes() {
        return refuse_all(groups, &st.refusal());
    }
    let now = sh.clock().now_ms();
    let ops: Vec<(u8, Vec<Result<WriteOp<'_>, ErrLine>>)> = groups
        .iter()
        .map(|(db, g)| (*db, g.iter().map(|r| parse_write(sh, r, now)).collect()))
        .collect();
    let conditional = ops
        .iter()
        .flat_map(|(_, g)| g)
        .any(|o| o.as_ref().is_ok_and(WriteOp::reads));
    let guard = sh
        .stripes()
        .lock(ops.iter().flat_map(|(_, g)| g).flatten().flat_map(|o| {
            let x = o.reads();
            o.keys().into_iter().map(move |k| (k, x))
        }));
    let mut view = View::lazy(sh);
    let mut batches = Vec::new();
    let slots: Vec<Vec<Slot>> = ops
        .iter()
        .map(|(db, g)| {
            g.iter()
                .map(|op| evaluate(op, *db, &mut view, conditional, &mut batches))
                .collect()
        })
        .collect();
    let failed = commit(sh, batches);
    drop(guard);
    slots
        .into_iter()
        .map(|gs| {
            let mut out = Vec::new();
            for s in gs {
                match (s, &failed) {
                    (Slot::Done(r), _) | (Slot::Pending(r), None) => r.encode(&mut out),
                    (Slot::Pending(_), Some(m)) => error(&mut out, m),
                }
            }
            out
        })
        .collect()
}

/// Every command of every run refused with `msg`.
fn refuse_all(groups: &[(u8, &[Vec<&[u8]>])], msg: &str) -> Vec<Vec<u8>> {
    groups
        .iter()
        .map(|(_, g)| {
            let mut out = Vec::new();
            for _ in g.iter() {
                error(&mut out, msg);
            }
            out
        })
        .collect()
}

/// One command of a run: its reply now, or its batch added to `batches` and its reply
/// pending on the commit.
fn evaluate(
    op: &Result<WriteOp<'_>, ErrLine>,
    db: u8,
    view: &mut View<'_>,
    track: bool,
    batches: &mut Vec<WriteBatch>,
) -> Slot {
    match op {
        Err(e) => Slot::Done(Reply::Error(e.0.clone())),
        Ok(op) => match eval_write(op, db, view, track) {
            Err(e) => Slot::Done(Reply::Error(ErrLine::err(e.to_string()).0)),
            Ok((r, eff)) if eff.is_empty() => Slot::Done(r),
            Ok((r, eff)) => {
                batches.push(batch_of(eff));
                Slot::Pending(r)
            }
        },
    }
}

/// Commits `batches` with one `write_many`: `None` once durable, or the error every
/// pending command gets ([`failure_line`]).
fn commit(sh: &Shared, batches: Vec<WriteBatch>) -> Option<String> {
    if batches.is_empty() {
        return None;
    }
    let e = sh.db().write_many(batches).err()?;
    sh.note_write_error(&e);
    Some(failure_line(&e))
}

/// The error reply of a write the engine did not acknowledge, by what it means for the
/// write and the server:
/// - `NORESOURCE`: the WAL ran out of disk space, fell below its reserve or ran out of
///   descriptors before any of it was logged: refused whole; reads go on and writes resume
///   by themselves once the resource is back (the server does not move to `failed`);
/// - `NOARCHIVE`: with `archive_lag_ms` = 0, the archive could not take it: it is durable
///   in this server's log but not acknowledged; the server goes on;
/// - `IOERR`: a write or fsync failed: it may or may not survive a restart, and the server
///   now refuses writes (`failed`);
/// - `ERR`: refused (limits) and not applied.
pub(crate) fn failure_line(e: &duplex_engine::Error) -> String {
    if let duplex_engine::Error::Wal(w) = e {
        if w.is_resource() {
            return codes::line(
                codes::NORESOURCE,
                &format!("write refused, not applied; this server keeps serving reads: {w}"),
            );
        }
        if matches!(w, duplex_wal::Error::ArchiveFailed { .. }) {
            return codes::line(
                codes::NOARCHIVE,
                &format!("write not acknowledged (archive_lag_ms is 0: a write is acknowledged once the archive holds it too); this server goes on: {w}"),
            );
        }
    }
    if e.outcome_unknown() {
        codes::line(
            codes::IOERR,
            &format!(
                "write outcome unknown, the disk failed and this server now refuses writes: {e}"
            ),
        )
    } else {
        ErrLine::err(format!("write refused, not applied: {e}")).0
    }
}
