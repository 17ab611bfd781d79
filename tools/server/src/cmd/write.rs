//! SET, MSET and DEL, committed in runs: [`write_groups`] takes the runs of writes of one
//! or more connections and commits them with ONE `Database::write_many` (one WAL append,
//! one durability wait), each command its own atomic batch; the replies come once the
//! commit is durable (or failed).
//!
//! Exactness under concurrency comes from the key stripes ([`crate::shared::Stripes`]):
//! every key of the runs is locked at once, exclusive where a command reads (SET NX/XX and
//! DEL must see the current value), and when any command reads, all are evaluated in order
//! against one view that includes the earlier commands' effects, so SET NX/XX and DEL
//! counts are exact across the runs too. [`crate::cmd::txn`] evaluates EXEC with the same
//! pieces.

use std::collections::{HashMap, HashSet};

use duplex_engine::{Snapshot, WriteBatch};
use duplex_proto::{codes, error, Reply};

use super::{arity_error, lookup, lossy, Cmd, ErrLine};
use crate::shared::Shared;

/// What a write does: (key, new value or `None` for a deletion).
pub(crate) type Effects = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A parsed write command.
#[derive(Debug)]
pub(crate) enum WriteOp<'a> {
    Set {
        key: &'a [u8],
        val: &'a [u8],
        cond: Cond,
    },
    MSet(Vec<(&'a [u8], &'a [u8])>),
    Del(Vec<&'a [u8]>),
}

/// SET's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    Always,
    Nx,
    Xx,
}

impl WriteOp<'_> {
    /// Whether it must read current values (and so lock its stripes exclusively).
    fn reads(&self) -> bool {
        matches!(
            self,
            WriteOp::Set {
                cond: Cond::Nx | Cond::Xx,
                ..
            } | WriteOp::Del(_)
        )
    }

    fn keys(&self) -> Vec<&[u8]> {
        match self {
            WriteOp::Set { key, .. } => vec![key],
            WriteOp::MSet(p) => p.iter().map(|(k, _)| *k).collect(),
            WriteOp::Del(k) => k.clone(),
        }
    }
}

fn check_key(sh: &Shared, k: &[u8]) -> Result<(), ErrLine> {
    let max = sh.db().config().max_key_size;
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

fn check_val(sh: &Shared, v: &[u8]) -> Result<(), ErrLine> {
    let max = sh.db().config().max_value_size;
    if v.len() > max {
        return Err(ErrLine::err(format!(
            "value of {} bytes exceeds the maximum of {max} bytes",
            v.len()
        )));
    }
    Ok(())
}

fn parse_set_cond(opts: &[&[u8]]) -> Result<Cond, ErrLine> {
    let mut cond = Cond::Always;
    for o in opts {
        let u = o.to_ascii_uppercase();
        match u.as_slice() {
            b"NX" if cond == Cond::Always => cond = Cond::Nx,
            b"XX" if cond == Cond::Always => cond = Cond::Xx,
            // There is no expiry in duplexd, so "keep the TTL" is what happens anyway.
            b"KEEPTTL" => {}
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                return Err(ErrLine::err(format!(
                    "SET option '{}' is not supported: duplexd has no key expiry",
                    lossy(o)
                )))
            }
            b"GET" => return Err(ErrLine::err("SET option 'GET' is not supported by duplexd")),
            _ => return Err(ErrLine::err("syntax error")),
        }
    }
    Ok(cond)
}

/// Parses a well-formed SET, MSET or DEL (name and arity already checked).
pub(crate) fn parse_write<'a>(sh: &Shared, args: &[&'a [u8]]) -> Result<WriteOp<'a>, ErrLine> {
    match lookup(args[0]).0 {
        Cmd::Set => {
            check_key(sh, args[1])?;
            check_val(sh, args[2])?;
            Ok(WriteOp::Set {
                key: args[1],
                val: args[2],
                cond: parse_set_cond(&args[3..])?,
            })
        }
        Cmd::MSet => {
            if !(args.len() - 1).is_multiple_of(2) {
                return Err(arity_error(args[0]));
            }
            let mut pairs = Vec::with_capacity(args.len() / 2);
            for p in args[1..].chunks(2) {
                check_key(sh, p[0])?;
                check_val(sh, p[1])?;
                pairs.push((p[0], p[1]));
            }
            Ok(WriteOp::MSet(pairs))
        }
        _ => {
            for k in &args[1..] {
                check_key(sh, k)?;
            }
            Ok(WriteOp::Del(args[1..].to_vec()))
        }
    }
}

/// Reads through a snapshot (taken lazily, after the locks) and the writes made so far.
pub(crate) struct View<'a> {
    sh: &'a Shared,
    snap: Option<Snapshot>,
    /// The writes made so far, by key (`None`: deleted).
    pub(crate) overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> View<'a> {
    /// A view whose snapshot is taken at the first read.
    pub(crate) fn lazy(sh: &'a Shared) -> View<'a> {
        View {
            sh,
            snap: None,
            overlay: HashMap::new(),
        }
    }

    /// A view with its snapshot taken now.
    pub(crate) fn now(sh: &'a Shared) -> View<'a> {
        View {
            sh,
            snap: Some(sh.db().snapshot()),
            overlay: HashMap::new(),
        }
    }

    pub(crate) fn get(&mut self, k: &[u8]) -> Result<Option<Vec<u8>>, duplex_engine::Error> {
        if let Some(v) = self.overlay.get(k) {
            return Ok(v.clone());
        }
        let sh = self.sh;
        self.snap.get_or_insert_with(|| sh.db().snapshot()).get(k)
    }

    pub(crate) fn exists(&mut self, k: &[u8]) -> Result<bool, duplex_engine::Error> {
        if let Some(v) = self.overlay.get(k) {
            return Ok(v.is_some());
        }
        let sh = self.sh;
        Ok(self
            .snap
            .get_or_insert_with(|| sh.db().snapshot())
            .get(k)?
            .is_some())
    }
}

/// Evaluates a write: its reply and its effects (key, new value or deletion). With
/// `track`, the effects also go into the view's overlay for later commands to see.
pub(crate) fn eval_write(
    op: &WriteOp<'_>,
    view: &mut View<'_>,
    track: bool,
) -> Result<(Reply, Effects), duplex_engine::Error> {
    let ok = || Reply::Simple("OK".into());
    let (reply, effects) = match op {
        WriteOp::Set { key, val, cond } => {
            let go = match cond {
                Cond::Always => true,
                Cond::Nx => !view.exists(key)?,
                Cond::Xx => view.exists(key)?,
            };
            if go {
                (ok(), vec![(key.to_vec(), Some(val.to_vec()))])
            } else {
                (Reply::Null, Vec::new())
            }
        }
        WriteOp::MSet(pairs) => {
            // Last one wins for a key given twice; one entry per key in the batch.
            let mut seen: HashMap<&[u8], usize> = HashMap::new();
            let mut eff: Effects = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                match seen.get(k) {
                    Some(&i) => eff[i].1 = Some(v.to_vec()),
                    None => {
                        seen.insert(k, eff.len());
                        eff.push((k.to_vec(), Some(v.to_vec())));
                    }
                }
            }
            (ok(), eff)
        }
        WriteOp::Del(keys) => {
            // A key named twice counts once: a set, so DEL of n keys is O(n).
            let mut seen: HashSet<&[u8]> = HashSet::with_capacity(keys.len());
            let mut eff: Effects = Vec::new();
            for k in keys {
                if !seen.insert(k) {
                    continue;
                }
                if view.exists(k)? {
                    eff.push((k.to_vec(), None));
                }
            }
            (Reply::Integer(eff.len() as i64), eff)
        }
    };
    if track {
        for (k, v) in &effects {
            view.overlay.insert(k.clone(), v.clone());
        }
    }
    Ok((reply, effects))
}

/// The batch that applies `effects`.
pub(crate) fn batch_of(effects: Effects) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in effects {
        match v {
            Some(v) => b.put(k, v),
            None => b.delete(k),
        };
    }
    b
}

/// One command's reply: final now, or once the commit is known.
enum Slot {
    Done(Reply),
    Pending(Reply),
}

/// Runs of write commands (SET, MSET, DEL; see [`super::is_write`]), one run per
/// connection, committed together (see the module docs). Returns each run's encoded
/// replies, in order, once the commit is durable (or failed).
pub fn write_groups(sh: &Shared, groups: &[&[Vec<&[u8]>]]) -> Vec<Vec<u8>> {
    // Delayed while a rebuilt peer's write hold is on; counted under way until replied.
    let _hold = sh.write_hold().enter();
    let st = sh.state().get().state;
    if !st.accepts_writes() {
        return refuse_all(groups, &st.refusal());
    }
    let ops: Vec<Vec<Result<WriteOp<'_>, ErrLine>>> = groups
        .iter()
        .map(|g| g.iter().map(|r| parse_write(sh, r)).collect())
        .collect();
    let conditional = ops
        .iter()
        .flatten()
        .any(|o| o.as_ref().is_ok_and(WriteOp::reads));
    let guard = sh
        .stripes()
        .lock(ops.iter().flatten().flatten().flat_map(|o| {
            let x = o.reads();
            o.keys().into_iter().map(move |k| (k, x))
        }));
    let mut view = View::lazy(sh);
    let mut batches = Vec::new();
    let slots: Vec<Vec<Slot>> = ops
        .iter()
        .map(|g| {
            g.iter()
                .map(|op| evaluate(op, &mut view, conditional, &mut batches))
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
fn refuse_all(groups: &[&[Vec<&[u8]>]], msg: &str) -> Vec<Vec<u8>> {
    groups
        .iter()
        .map(|g| {
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
    view: &mut View<'_>,
    track: bool,
    batches: &mut Vec<WriteBatch>,
) -> Slot {
    match op {
        Err(e) => Slot::Done(Reply::Error(e.0.clone())),
        Ok(op) => match eval_write(op, view, track) {
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
