//! RESP command execution against the engine.
//!
//! [`execute`] takes every request a connection had buffered and answers them in order:
//! - a run of consecutive writes (SET, MSET, DEL) becomes one `Database::write_many`: one
//!   WAL append and one durability wait for the whole run, each command its own atomic
//!   batch; the replies come once the run is durable;
//! - a run of consecutive reads (GET, MGET, EXISTS) is answered from one snapshot, taken
//!   after the connection's earlier writes were applied;
//! - MULTI queues commands; EXEC evaluates them in order against one snapshot plus the
//!   transaction's own writes and applies every write as ONE `WriteBatch`.
//!
//! Concurrency: keys hash to [`crate::server::STRIPES`] reader-writer stripes, always locked
//! in ascending order. Plain SET and MSET take their stripes shared (they never read, so
//! any number run together and share a group commit); SET NX/XX and DEL (which must see the
//! current value) and EXEC (every key it reads or writes) take them exclusive, so no other
//! write to those keys can land between their check and their write. This makes SET NX/XX,
//! DEL's count and transactions correct under any concurrency.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::time::Instant;

use duplex_engine::{Snapshot, WriteBatch};
use duplex_proto::{array_len, bulk, error, integer, null_bulk, simple, Reply};
use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

use crate::config::appendfsync_name;
use crate::glob::glob_match;
use crate::server::{Shared, CURSOR_TTL, MAX_CURSORS, STRIPES};
use crate::state::OpState;

/// Per-connection state.
#[derive(Debug)]
pub struct ConnState {
    /// Client id (CLIENT ID).
    pub id: u64,
    /// Whether AUTH succeeded (or no password is set).
    pub authed: bool,
    /// CLIENT SETNAME.
    pub name: Option<Vec<u8>>,
    /// Commands queued since MULTI.
    pub multi: Option<Vec<Vec<Vec<u8>>>>,
    /// A queued command was refused: EXEC will abort.
    pub multi_dirty: bool,
}

impl ConnState {
    /// A new connection; `authed` when no password is configured.
    pub fn new(id: u64, authed: bool) -> ConnState {
        ConnState {
            id,
            authed,
            name: None,
            multi: None,
            multi_dirty: false,
        }
    }
}

/// The commands duplexd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// PING [msg]
    Ping,
    /// ECHO msg
    Echo,
    /// HELLO [proto [AUTH u p] [SETNAME n]]
    Hello,
    /// AUTH [user] pass
    Auth,
    /// SELECT db
    Select,
    /// GET k
    Get,
    /// SET k v [NX|XX] [KEEPTTL]
    Set,
    /// DEL k...
    Del,
    /// EXISTS k...
    Exists,
    /// MGET k...
    MGet,
    /// MSET k v...
    MSet,
    /// SCAN cursor [MATCH p] [COUNT n] [TYPE t]
    Scan,
    /// DBSIZE
    DbSize,
    /// MULTI
    Multi,
    /// EXEC
    Exec,
    /// DISCARD
    Discard,
    /// INFO [section...]
    Info,
    /// CLIENT sub...
    Client,
    /// COMMAND [sub...]
    Command,
    /// QUIT
    Quit,
    /// CONFIG GET p...
    Config,
    /// DUPLEX.STATE
    DState,
    /// DUPLEX.BACKUP [name]
    DBackup,
    /// DUPLEX.CHECKPOINT
    DCheckpoint,
    /// DUPLEX.FENCE
    DFence,
    /// DUPLEX.UNFENCE
    DUnfence,
    /// Anything else.
    Unknown,
}

/// Every known command: name, min args, max args (command name included; `usize::MAX` for
/// any), and whether MULTI may queue it.
const TABLE: &[(&str, Cmd, usize, usize, bool)] = &[
    ("PING", Cmd::Ping, 1, 2, true),
    ("ECHO", Cmd::Echo, 2, 2, true),
    ("HELLO", Cmd::Hello, 1, 7, false),
    ("AUTH", Cmd::Auth, 2, 3, false),
    ("SELECT", Cmd::Select, 2, 2, false),
    ("GET", Cmd::Get, 2, 2, true),
    ("SET", Cmd::Set, 3, 6, true),
    ("DEL", Cmd::Del, 2, usize::MAX, true),
    ("EXISTS", Cmd::Exists, 2, usize::MAX, true),
    ("MGET", Cmd::MGet, 2, usize::MAX, true),
    ("MSET", Cmd::MSet, 3, usize::MAX, true),
    ("SCAN", Cmd::Scan, 2, 8, false),
    ("DBSIZE", Cmd::DbSize, 1, 1, false),
    ("MULTI", Cmd::Multi, 1, 1, false),
    ("EXEC", Cmd::Exec, 1, 1, false),
    ("DISCARD", Cmd::Discard, 1, 1, false),
    ("INFO", Cmd::Info, 1, usize::MAX, false),
    ("CLIENT", Cmd::Client, 2, usize::MAX, false),
    ("COMMAND", Cmd::Command, 1, usize::MAX, false),
    ("QUIT", Cmd::Quit, 1, usize::MAX, false),
    ("CONFIG", Cmd::Config, 2, usize::MAX, false),
    ("DUPLEX.STATE", Cmd::DState, 1, 1, false),
    ("DUPLEX.BACKUP", Cmd::DBackup, 1, 2, false),
    ("DUPLEX.CHECKPOINT", Cmd::DCheckpoint, 1, 1, false),
    ("DUPLEX.FENCE", Cmd::DFence, 1, 1, false),
    ("DUPLEX.UNFENCE", Cmd::DUnfence, 1, 1, false),
];

/// Looks a command name up (case-insensitive): (command, min args, max args, queueable).
pub fn lookup(name: &[u8]) -> (Cmd, usize, usize, bool) {
    for &(n, c, lo, hi, q) in TABLE {
        if n.as_bytes().eq_ignore_ascii_case(name) {
            return (c, lo, hi, q);
        }
    }
    (Cmd::Unknown, 0, usize::MAX, false)
}

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 128 {
        format!(
            "{}...",
            &s[..s
                .char_indices()
                .take_while(|(i, _)| *i < 128)
                .last()
                .map_or(0, |(i, c)| i + c.len_utf8())]
        )
    } else {
        s.into_owned()
    }
}

fn arity_error(name: &[u8]) -> String {
    format!(
        "ERR wrong number of arguments for '{}' command",
        lossy(name).to_ascii_lowercase()
    )
}

/// Checks a request's name and arity: the command or the error to send.
fn check(args: &[&[u8]]) -> Result<(Cmd, bool), String> {
    let (c, lo, hi, q) = lookup(args[0]);
    if c == Cmd::Unknown {
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with:",
            lossy(args[0])
        );
        for a in args.iter().skip(1).take(3) {
            let _ = write!(msg, " '{}'", lossy(a));
        }
        return Err(msg);
    }
    if args.len() < lo || args.len() > hi {
        return Err(arity_error(args[0]));
    }
    Ok((c, q))
}

fn allowed_before_auth(c: Cmd) -> bool {
    matches!(c, Cmd::Auth | Cmd::Hello | Cmd::Quit | Cmd::DState)
}

/// Executes `reqs` in order, appending every reply to `out`. Returns true when the
/// connection must close afterwards (QUIT).
pub fn execute(sh: &Shared, conn: &mut ConnState, reqs: &[Vec<&[u8]>], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < reqs.len() {
        let args = &reqs[i];
        let (cmd, queueable) = match check(args) {
            Ok(c) => c,
            Err(msg) => {
                if conn.multi.is_some() {
                    conn.multi_dirty = true;
                }
                error(out, &msg);
                i += 1;
                continue;
            }
        };
        if !conn.authed && !allowed_before_auth(cmd) {
            error(out, "NOAUTH Authentication required.");
            i += 1;
            continue;
        }
        if let Some(q) = conn.multi.as_mut() {
            if !matches!(cmd, Cmd::Exec | Cmd::Discard | Cmd::Multi | Cmd::Quit) {
                if queueable {
                    q.push(args.iter().map(|a| a.to_vec()).collect());
                    simple(out, "QUEUED");
                } else {
                    conn.multi_dirty = true;
                    error(
                        out,
                        &format!(
                            "ERR '{}' is not allowed inside MULTI in duplexd",
                            lossy(args[0]).to_ascii_lowercase()
                        ),
                    );
                }
                i += 1;
                continue;
            }
        }
        match cmd {
            Cmd::Set | Cmd::MSet | Cmd::Del => {
                let mut j = i + 1;
                let mut bytes: usize = args.iter().map(|a| a.len()).sum();
                while j < reqs.len() && j - i < 1024 && bytes < (8 << 20) {
                    match check(&reqs[j]) {
                        Ok((Cmd::Set | Cmd::MSet | Cmd::Del, _)) => {
                            bytes += reqs[j].iter().map(|a| a.len()).sum::<usize>();
                            j += 1;
                        }
                        _ => break,
                    }
                }
                write_group(sh, &reqs[i..j], out);
                i = j;
            }
            Cmd::Get | Cmd::MGet | Cmd::Exists => {
                let snap = sh.db.snapshot();
                let mut j = i;
                while j < reqs.len() {
                    match check(&reqs[j]) {
                        Ok((c @ (Cmd::Get | Cmd::MGet | Cmd::Exists), _)) => {
                            read(&snap, c, &reqs[j], out)
                        }
                        _ => break,
                    }
                    j += 1;
                }
                i = j;
            }
            _ => {
                if other(sh, conn, cmd, args, out) {
                    return true;
                }
                i += 1;
            }
        }
    }
    false
}

fn engine_err(out: &mut Vec<u8>, e: &duplex_engine::Error) {
    error(out, &format!("ERR {e}"));
}

fn read(snap: &Snapshot, c: Cmd, args: &[&[u8]], out: &mut Vec<u8>) {
    match c {
        Cmd::Get => match snap.get(args[1]) {
            Ok(Some(v)) => bulk(out, &v),
            Ok(None) => null_bulk(out),
            Err(e) => engine_err(out, &e),
        },
        Cmd::MGet => {
            let mut vals = Vec::with_capacity(args.len() - 1);
            for k in &args[1..] {
                match snap.get(k) {
                    Ok(v) => vals.push(v),
                    Err(e) => return engine_err(out, &e),
                }
            }
            array_len(out, vals.len());
            for v in vals {
                match v {
                    Some(v) => bulk(out, &v),
                    None => null_bulk(out),
                }
            }
        }
        _ => {
            let mut n = 0;
            for k in &args[1..] {
                match snap.get(k) {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => {}
                    Err(e) => return engine_err(out, &e),
                }
            }
            integer(out, n);
        }
    }
}

/// What a write does: (key, new value or `None` for a deletion).
type Effects = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A parsed write command.
#[derive(Debug)]
enum WriteOp<'a> {
    Set {
        key: &'a [u8],
        val: &'a [u8],
        cond: Cond,
    },
    MSet(Vec<(&'a [u8], &'a [u8])>),
    Del(Vec<&'a [u8]>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
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

fn check_key(sh: &Shared, k: &[u8]) -> Result<(), String> {
    let max = sh.db.config().max_key_size;
    if k.is_empty() {
        return Err("ERR empty keys are not supported by duplexd".into());
    }
    if k.len() > max {
        return Err(format!(
            "ERR key of {} bytes exceeds the maximum of {max} bytes",
            k.len()
        ));
    }
    Ok(())
}

fn check_val(sh: &Shared, v: &[u8]) -> Result<(), String> {
    let max = sh.db.config().max_value_size;
    if v.len() > max {
        return Err(format!(
            "ERR value of {} bytes exceeds the maximum of {max} bytes",
            v.len()
        ));
    }
    Ok(())
}

fn parse_write<'a>(sh: &Shared, args: &[&'a [u8]]) -> Result<WriteOp<'a>, String> {
    let (c, _, _, _) = lookup(args[0]);
    match c {
        Cmd::Set => {
            check_key(sh, args[1])?;
            check_val(sh, args[2])?;
            let mut cond = Cond::Always;
            for o in &args[3..] {
                let u = o.to_ascii_uppercase();
                match u.as_slice() {
                    b"NX" if cond == Cond::Always => cond = Cond::Nx,
                    b"XX" if cond == Cond::Always => cond = Cond::Xx,
                    // There is no expiry in duplexd, so "keep the TTL" is what happens anyway.
                    b"KEEPTTL" => {}
                    b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                        return Err(format!(
                            "ERR SET option '{}' is not supported: duplexd has no key expiry",
                            lossy(o)
                        ))
                    }
                    b"GET" => return Err("ERR SET option 'GET' is not supported by duplexd".into()),
                    _ => return Err("ERR syntax error".into()),
                }
            }
            Ok(WriteOp::Set {
                key: args[1],
                val: args[2],
                cond,
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

fn stripe_of(key: &[u8]) -> usize {
    // FNV-1a: fixed across threads and runs.
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        x ^= u64::from(b);
        x = x.wrapping_mul(0x0100_0000_01b3);
    }
    (x % STRIPES as u64) as usize
}

/// Held stripe locks (released on drop).
enum Guard<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Excl(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

/// Locks the stripes of `keys` (exclusive where the flag says) in ascending order.
fn lock<'a>(sh: &'a Shared, keys: impl Iterator<Item = (usize, bool)>) -> Vec<Guard<'a>> {
    let mut want: Vec<(usize, bool)> = keys.collect();
    want.sort_unstable();
    // After sorting, (i, true) follows (i, false): keep the last of each stripe.
    let mut merged: Vec<(usize, bool)> = Vec::with_capacity(want.len());
    for (s, x) in want {
        match merged.last_mut() {
            Some(last) if last.0 == s => last.1 |= x,
            _ => merged.push((s, x)),
        }
    }
    merged
        .into_iter()
        .map(|(s, x)| {
            if x {
                Guard::Excl(sh.stripes[s].write())
            } else {
                Guard::Shared(sh.stripes[s].read())
            }
        })
        .collect()
}

/// Reads through a snapshot (taken lazily, after the locks) and the writes made so far.
struct View<'a> {
    sh: &'a Shared,
    snap: Option<Snapshot>,
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl View<'_> {
    fn get(&mut self, k: &[u8]) -> Result<Option<Vec<u8>>, duplex_engine::Error> {
        if let Some(v) = self.overlay.get(k) {
            return Ok(v.clone());
        }
        let sh = self.sh;
        self.snap.get_or_insert_with(|| sh.db.snapshot()).get(k)
    }

    fn exists(&mut self, k: &[u8]) -> Result<bool, duplex_engine::Error> {
        if let Some(v) = self.overlay.get(k) {
            return Ok(v.is_some());
        }
        let sh = self.sh;
        Ok(self
            .snap
            .get_or_insert_with(|| sh.db.snapshot())
            .get(k)?
            .is_some())
    }
}

/// Evaluates a write: its reply and its effects (key, new value or deletion). With
/// `track`, the effects also go into the view's overlay for later commands to see.
fn eval_write(
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
            let mut eff: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(pairs.len());
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
            let mut eff = Vec::new();
            for k in keys {
                if eff.iter().any(|(e, _): &(Vec<u8>, _)| e.as_slice() == *k) {
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

fn batch_of(effects: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in effects {
        match v {
            Some(v) => b.put(k, v),
            None => b.delete(k),
        };
    }
    b
}

/// A run of write commands: one `write_many`, replies once durable.
fn write_group(sh: &Shared, reqs: &[Vec<&[u8]>], out: &mut Vec<u8>) {
    if let Some(r) = write_groups(sh, &[reqs]).pop() {
        out.extend_from_slice(&r);
    }
}

/// Whether a request is a well-formed SET, MSET or DEL (name and arity): one that
/// [`write_groups`] can take. Authentication and MULTI are the caller's business.
pub fn is_write(args: &[&[u8]]) -> bool {
    matches!(check(args), Ok((Cmd::Set | Cmd::MSet | Cmd::Del, _)))
}

/// Runs of write commands (SET, MSET, DEL; see [`is_write`]), one run per connection,
/// committed together: ONE `Database::write_many` (one WAL append, one durability wait) for
/// every run, each command its own atomic batch. The stripes of every key are locked at
/// once (ascending, exclusive where a command reads: SET NX/XX, DEL); when any command
/// reads, all are evaluated in order against one view that includes the earlier commands'
/// effects, so SET NX/XX and DEL counts are exact across the runs too. Returns each run's
/// encoded replies, in order, once the commit is durable (or failed).
pub fn write_groups(sh: &Shared, groups: &[&[Vec<&[u8]>]]) -> Vec<Vec<u8>> {
    let st = sh.state.get().state;
    if !st.accepts_writes() {
        let msg = st.refusal();
        return groups
            .iter()
            .map(|g| {
                let mut out = Vec::new();
                for _ in g.iter() {
                    error(&mut out, &msg);
                }
                out
            })
            .collect();
    }
    let ops: Vec<Vec<Result<WriteOp<'_>, String>>> = groups
        .iter()
        .map(|g| g.iter().map(|r| parse_write(sh, r)).collect())
        .collect();
    let conditional = ops
        .iter()
        .flatten()
        .any(|o| o.as_ref().is_ok_and(WriteOp::reads));
    let guards = lock(
        sh,
        ops.iter().flatten().flatten().flat_map(|o| {
            let x = o.reads();
            o.keys().into_iter().map(move |k| (stripe_of(k), x))
        }),
    );
    let mut view = View {
        sh,
        snap: None,
        overlay: HashMap::new(),
    };
    enum Slot {
        Done(Reply),
        Pending(Reply),
    }
    let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(ops.len());
    let mut batches = Vec::new();
    for g in &ops {
        let mut gs = Vec::with_capacity(g.len());
        for op in g {
            match op {
                Err(msg) => gs.push(Slot::Done(Reply::Error(msg.clone()))),
                Ok(op) => match eval_write(op, &mut view, conditional) {
                    Err(e) => gs.push(Slot::Done(Reply::Error(format!("ERR {e}")))),
                    Ok((r, eff)) if eff.is_empty() => gs.push(Slot::Done(r)),
                    Ok((r, eff)) => {
                        batches.push(batch_of(eff));
                        gs.push(Slot::Pending(r));
                    }
                },
            }
        }
        slots.push(gs);
    }
    let failed = if batches.is_empty() {
        None
    } else {
        match sh.db.write_many(batches) {
            Ok(_) => None,
            Err(e) => {
                sh.note_write_error(&e);
                // A refused write (limits) never reached the log; a failed one may have:
                // its fsync failed, so whether it survives a restart is unknown.
                Some(if e.outcome_unknown() {
                    format!(
                        "IOERR write outcome unknown, the disk failed and this server now refuses writes: {e}"
                    )
                } else {
                    format!("ERR write refused, not applied: {e}")
                })
            }
        }
    };
    drop(guards);
    slots
        .into_iter()
        .map(|gs| {
            let mut out = Vec::new();
            for s in gs {
                match s {
                    Slot::Done(r) => r.encode(&mut out),
                    Slot::Pending(r) => match &failed {
                        None => r.encode(&mut out),
                        Some(m) => error(&mut out, m),
                    },
                }
            }
            out
        })
        .collect()
}

/// EXEC: every queued command against one snapshot plus the transaction's own writes,
/// under exclusive locks on every key touched; all writes as one batch.
fn exec(sh: &Shared, queued: Vec<Vec<Vec<u8>>>, out: &mut Vec<u8>) {
    let reqs: Vec<Vec<&[u8]>> = queued
        .iter()
        .map(|r| r.iter().map(Vec::as_slice).collect())
        .collect();
    let mut has_write = false;
    let mut keys: Vec<&[u8]> = Vec::new();
    for r in &reqs {
        match lookup(r[0]).0 {
            Cmd::Set => {
                has_write = true;
                keys.push(r[1]);
            }
            Cmd::MSet => {
                has_write = true;
                keys.extend(r[1..].iter().step_by(2));
            }
            Cmd::Del => {
                has_write = true;
                keys.extend(&r[1..]);
            }
            Cmd::Get | Cmd::MGet | Cmd::Exists => keys.extend(&r[1..]),
            _ => {}
        }
    }
    let st = sh.state.get().state;
    if has_write && !st.accepts_writes() {
        return error(
            out,
            &format!("EXECABORT Transaction discarded: {}", st.refusal()),
        );
    }
    let guards = lock(sh, keys.iter().map(|k| (stripe_of(k), true)));
    let mut view = View {
        sh,
        snap: Some(sh.db.snapshot()),
        overlay: HashMap::new(),
    };
    let mut replies = Vec::with_capacity(reqs.len());
    for r in &reqs {
        let (c, ..) = lookup(r[0]);
        let reply = match c {
            Cmd::Set | Cmd::MSet | Cmd::Del => match parse_write(sh, r) {
                Err(m) => Reply::Error(m),
                Ok(op) => match eval_write(&op, &mut view, true) {
                    Ok((rep, _)) => rep,
                    Err(e) => Reply::Error(format!("ERR {e}")),
                },
            },
            Cmd::Get => match view.get(r[1]) {
                Ok(v) => v.map_or(Reply::Null, Reply::Bulk),
                Err(e) => Reply::Error(format!("ERR {e}")),
            },
            Cmd::MGet => {
                let vals: Result<Vec<Reply>, _> = r[1..]
                    .iter()
                    .map(|k| view.get(k).map(|v| v.map_or(Reply::Null, Reply::Bulk)))
                    .collect();
                vals.map_or_else(|e| Reply::Error(format!("ERR {e}")), Reply::Array)
            }
            Cmd::Exists => {
                let mut n = 0;
                let mut err = None;
                for k in &r[1..] {
                    match view.exists(k) {
                        Ok(true) => n += 1,
                        Ok(false) => {}
                        Err(e) => err = Some(e),
                    }
                }
                err.map_or(Reply::Integer(n), |e| Reply::Error(format!("ERR {e}")))
            }
            Cmd::Ping => r
                .get(1)
                .map_or_else(|| Reply::Simple("PONG".into()), |m| Reply::Bulk(m.to_vec())),
            Cmd::Echo => Reply::Bulk(r[1].to_vec()),
            _ => Reply::Error("ERR command not allowed inside MULTI".into()),
        };
        replies.push(reply);
    }
    if !view.overlay.is_empty() {
        let batch = batch_of(view.overlay.into_iter().collect());
        if let Err(e) = sh.db.write(batch) {
            sh.note_write_error(&e);
            drop(guards);
            return error(out, &format!("EXECABORT Transaction not applied: {e}"));
        }
    }
    drop(guards);
    Reply::Array(replies).encode(out);
}

fn bulk_str(out: &mut Vec<u8>, s: &str) {
    bulk(out, s.as_bytes());
}

/// Every other command. Returns true to close the connection.
fn other(sh: &Shared, conn: &mut ConnState, cmd: Cmd, args: &[&[u8]], out: &mut Vec<u8>) -> bool {
    match cmd {
        Cmd::Ping => match args.get(1) {
            Some(m) => bulk(out, m),
            None => simple(out, "PONG"),
        },
        Cmd::Echo => bulk(out, args[1]),
        Cmd::Quit => {
            simple(out, "OK");
            return true;
        }
        Cmd::Auth => {
            let (user, pass) = if args.len() == 3 {
                (args[1], args[2])
            } else {
                (&b"default"[..], args[1])
            };
            auth(sh, conn, user, pass, out, true);
        }
        Cmd::Hello => hello(sh, conn, args, out),
        Cmd::Select => {
            if args[1] == b"0" {
                simple(out, "OK");
            } else {
                error(
                    out,
                    "ERR DB index is out of range (duplexd has only database 0)",
                );
            }
        }
        Cmd::Multi => {
            if conn.multi.is_some() {
                error(out, "ERR MULTI calls can not be nested");
            } else {
                conn.multi = Some(Vec::new());
                conn.multi_dirty = false;
                simple(out, "OK");
            }
        }
        Cmd::Discard => {
            if conn.multi.take().is_some() {
                simple(out, "OK");
            } else {
                error(out, "ERR DISCARD without MULTI");
            }
        }
        Cmd::Exec => match conn.multi.take() {
            None => error(out, "ERR EXEC without MULTI"),
            Some(_) if conn.multi_dirty => error(
                out,
                "EXECABORT Transaction discarded because of previous errors.",
            ),
            Some(q) => exec(sh, q, out),
        },
        Cmd::DbSize => {
            let snap = sh.db.snapshot();
            match snap.scan(Bound::Unbounded, Bound::Unbounded) {
                Ok(it) => {
                    let mut n = 0i64;
                    for e in it {
                        if let Err(e) = e {
                            engine_err(out, &e);
                            return false;
                        }
                        n += 1;
                    }
                    integer(out, n);
                }
                Err(e) => engine_err(out, &e),
            }
        }
        Cmd::Scan => scan(sh, args, out),
        Cmd::Info => {
            let text = info(sh, &args[1..]);
            bulk(out, text.as_bytes());
        }
        Cmd::Client => client(sh, conn, args, out),
        Cmd::Command => {
            let sub = args.get(1).map(|s| s.to_ascii_uppercase());
            match sub.as_deref() {
                None | Some(b"DOCS") | Some(b"LIST") => array_len(out, 0),
                Some(b"COUNT") => integer(out, TABLE.len() as i64),
                Some(b"INFO") => {
                    array_len(out, args.len() - 2);
                    for _ in 2..args.len() {
                        duplex_proto::null_array(out);
                    }
                }
                Some(_) => error(
                    out,
                    "ERR unknown COMMAND subcommand (duplexd knows DOCS, COUNT, INFO, LIST)",
                ),
            }
        }
        Cmd::Config => config(sh, args, out),
        Cmd::DState => {
            let s = sh.state.get();
            array_len(out, 8);
            bulk_str(out, "state");
            bulk_str(out, s.state.name());
            bulk_str(out, "epoch");
            integer(out, s.epoch as i64);
            bulk_str(out, "node_id");
            integer(out, s.node_id as i64);
            bulk_str(out, "last_lsn");
            integer(out, sh.db.wal().last_lsn() as i64);
        }
        Cmd::DBackup => {
            let name = args.get(1).map(|n| String::from_utf8_lossy(n).into_owned());
            match sh.backup(name.as_deref()) {
                Ok(r) => bulk_str(
                    out,
                    &format!(
                        "dir={} checkpoint_lsn={} bytes_copied={} seconds={:.3}",
                        r.dir.display(),
                        r.manifest.checkpoint_lsn,
                        r.bytes_copied,
                        r.seconds
                    ),
                ),
                Err(m) => error(out, &format!("ERR backup failed: {m}")),
            }
        }
        Cmd::DCheckpoint => match sh.db.checkpoint() {
            Ok(()) => {
                tracing::info!(
                    event = "checkpoint",
                    lsn = sh.db.stats().checkpoint_lsn,
                    "checkpoint on request"
                );
                simple(out, "OK");
            }
            Err(e) => {
                sh.note_write_error(&e);
                engine_err(out, &e);
            }
        },
        Cmd::DFence => {
            let cur = sh.state.get().state;
            if matches!(cur, OpState::Running | OpState::BackingUp | OpState::Fenced) {
                match sh.state.set(OpState::Fenced, true) {
                    Ok(r) => integer(out, r.epoch as i64),
                    Err(e) => error(out, &format!("ERR fenced in memory but not persisted: {e}")),
                }
            } else {
                error(
                    out,
                    &format!("ERR cannot fence a server that is {}", cur.name()),
                );
            }
        }
        Cmd::DUnfence => {
            if sh.state.transition(OpState::Fenced, OpState::Running) {
                simple(out, "OK");
            } else {
                error(
                    out,
                    &format!(
                        "ERR the server is {}, not fenced",
                        sh.state.get().state.name()
                    ),
                );
            }
        }
        Cmd::Set | Cmd::MSet | Cmd::Del | Cmd::Get | Cmd::MGet | Cmd::Exists | Cmd::Unknown => {
            // Handled by the caller.
            error(out, "ERR internal dispatch error");
        }
    }
    false
}

fn auth(
    sh: &Shared,
    conn: &mut ConnState,
    user: &[u8],
    pass: &[u8],
    out: &mut Vec<u8>,
    reply_ok: bool,
) -> bool {
    let Some(want) = sh.cfg.requirepass.as_deref() else {
        error(out, "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        return false;
    };
    // Compare without an early exit on the first differing byte.
    let w = want.as_bytes();
    let mut diff = (w.len() ^ pass.len()) as u8 | u8::from(w.len() != pass.len());
    for (i, &b) in pass.iter().enumerate() {
        diff |= b ^ w.get(i).copied().unwrap_or(0);
    }
    if diff == 0 && user == b"default" {
        conn.authed = true;
        if reply_ok {
            simple(out, "OK");
        }
        true
    } else {
        error(
            out,
            "WRONGPASS invalid username-password pair or user is disabled.",
        );
        false
    }
}

fn hello(sh: &Shared, conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    if let Some(v) = args.get(1) {
        match *v {
            b"2" => {}
            b"3" => {
                return error(
                    out,
                    "NOPROTO sorry, this protocol version is not supported (duplexd speaks RESP2)",
                )
            }
            _ => return error(out, "NOPROTO unsupported protocol version"),
        }
    }
    let mut i = 2;
    while i < args.len() {
        let o = args[i].to_ascii_uppercase();
        if o == b"AUTH" && i + 2 < args.len() {
            if !auth(sh, conn, args[i + 1], args[i + 2], out, false) {
                return;
            }
            i += 3;
        } else if o == b"SETNAME" && i + 1 < args.len() {
            conn.name = Some(args[i + 1].to_vec());
            i += 2;
        } else {
            return error(out, "ERR syntax error in HELLO option");
        }
    }
    if !conn.authed {
        return error(out, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    array_len(out, 14);
    bulk_str(out, "server");
    bulk_str(out, "duplexd");
    bulk_str(out, "version");
    bulk_str(out, env!("CARGO_PKG_VERSION"));
    bulk_str(out, "proto");
    integer(out, 2);
    bulk_str(out, "id");
    integer(out, conn.id as i64);
    bulk_str(out, "mode");
    bulk_str(out, "standalone");
    bulk_str(out, "role");
    bulk_str(out, "master");
    bulk_str(out, "modules");
    array_len(out, 0);
}

fn client(sh: &Shared, conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) {
    let sub = args[1].to_ascii_uppercase();
    match sub.as_slice() {
        b"SETNAME" if args.len() == 3 => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                error(
                    out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            } else {
                conn.name = (!args[2].is_empty()).then(|| args[2].to_vec());
                simple(out, "OK");
            }
        }
        b"GETNAME" => match &conn.name {
            Some(n) => bulk(out, n),
            None => null_bulk(out),
        },
        b"ID" => integer(out, conn.id as i64),
        b"SETINFO" | b"NO-EVICT" | b"NO-TOUCH" | b"REPLY" => simple(out, "OK"),
        b"INFO" | b"LIST" => {
            let name = conn.name.as_deref().map(lossy).unwrap_or_default();
            bulk_str(
                out,
                &format!(
                    "id={} name={} db=0 clients={}\n",
                    conn.id,
                    name,
                    sh.clients.load(Ordering::Relaxed)
                ),
            );
        }
        _ => error(
            out,
            &format!(
                "ERR unknown subcommand '{}' for CLIENT in duplexd",
                lossy(args[1])
            ),
        ),
    }
}

fn config(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    let sub = args[1].to_ascii_uppercase();
    if sub != b"GET" {
        return error(
            out,
            "ERR only CONFIG GET is supported; duplexd is configured by its TOML file and flags",
        );
    }
    if args.len() < 3 {
        return error(out, &arity_error(b"config|get"));
    }
    let c = &sh.cfg;
    let sync = c.sync_policy().map(appendfsync_name).unwrap_or("always");
    let params: Vec<(&str, String)> = vec![
        ("save", String::new()),
        ("appendonly", "yes".into()),
        ("appendfsync", sync.into()),
        ("databases", "1".into()),
        ("port", c.port.to_string()),
        ("bind", c.bind.clone()),
        ("maxclients", c.max_clients.to_string()),
        ("timeout", c.idle_timeout_secs.to_string()),
        ("proto-max-bulk-len", c.max_bulk_len.to_string()),
        ("dir", c.data.display().to_string()),
    ];
    let mut hits: Vec<&(&str, String)> = Vec::new();
    for pat in &args[2..] {
        let p = pat.to_ascii_lowercase();
        for kv in &params {
            if glob_match(&p, kv.0.as_bytes()) && !hits.iter().any(|h| h.0 == kv.0) {
                hits.push(kv);
            }
        }
    }
    array_len(out, hits.len() * 2);
    for (k, v) in hits {
        bulk_str(out, k);
        bulk_str(out, v);
    }
}

fn scan(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    let Some(cursor) = std::str::from_utf8(args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return error(out, "ERR invalid cursor");
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count: usize = 10;
    let mut type_ok = true;
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return error(out, "ERR syntax error");
        }
        match args[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(args[i + 1]),
            b"COUNT" => match std::str::from_utf8(args[i + 1])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            {
                Some(n) if n >= 1 => count = n.min(100_000),
                _ => return error(out, "ERR value is out of range, must be positive"),
            },
            b"TYPE" => type_ok = args[i + 1].eq_ignore_ascii_case(b"string"),
            _ => return error(out, "ERR syntax error"),
        }
        i += 2;
    }
    let start: Option<Vec<u8>> = if cursor == 0 {
        None
    } else {
        let mut c = sh.cursors.lock();
        match c.map.get_mut(&cursor) {
            Some((k, used)) => {
                *used = Instant::now();
                Some(k.clone())
            }
            None => return error(out, "ERR invalid cursor (unknown or expired: duplexd SCAN cursors live 10 minutes unused)"),
        }
    };
    let snap = sh.db.snapshot();
    let lower = match &start {
        Some(k) => Bound::Excluded(k.as_slice()),
        None => Bound::Unbounded,
    };
    let mut it = match snap.scan(lower, Bound::Unbounded) {
        Ok(it) => it,
        Err(e) => return engine_err(out, &e),
    };
    let mut keys = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    let mut done = true;
    let mut examined = 0;
    loop {
        if examined == count {
            done = false;
            break;
        }
        match it.next() {
            None => break,
            Some(Err(e)) => return engine_err(out, &e),
            Some(Ok((k, _))) => {
                examined += 1;
                if type_ok && pattern.is_none_or(|p| glob_match(p, &k)) {
                    keys.push(k.clone());
                }
                last = Some(k);
            }
        }
    }
    // Peek: if nothing follows, this was the last page.
    if !done {
        match it.next() {
            None => done = true,
            Some(Err(e)) => return engine_err(out, &e),
            Some(Ok(_)) => {}
        }
    }
    let next = match (done, last) {
        (false, Some(k)) => {
            let mut c = sh.cursors.lock();
            if c.map.len() >= MAX_CURSORS {
                c.map.retain(|_, (_, t)| t.elapsed() < CURSOR_TTL);
                if c.map.len() >= MAX_CURSORS {
                    if let Some(oldest) =
                        c.map.iter().min_by_key(|(_, (_, t))| *t).map(|(id, _)| *id)
                    {
                        c.map.remove(&oldest);
                    }
                }
            }
            let id = c.next;
            c.next = c.next.wrapping_add(1).max(1);
            c.map.insert(id, (k, Instant::now()));
            id
        }
        _ => 0,
    };
    array_len(out, 2);
    bulk_str(out, &next.to_string());
    array_len(out, keys.len());
    for k in &keys {
        bulk(out, k);
    }
}

fn info(sh: &Shared, sections: &[&[u8]]) -> String {
    let want = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                s.eq_ignore_ascii_case(name.as_bytes())
                    || s.eq_ignore_ascii_case(b"all")
                    || s.eq_ignore_ascii_case(b"everything")
                    || s.eq_ignore_ascii_case(b"default")
            })
    };
    let mut t = String::new();
    let c = &sh.cfg;
    let st = sh.state.get();
    if want("server") {
        let _ = write!(
            t,
            "# Server\r\nredis_version:7.0.0\r\nduplex_version:{}\r\nredis_mode:standalone\r\nos:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nbind:{}\r\nuptime_in_seconds:{}\r\nexecutable:duplexd\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            sh.addr.port(),
            c.bind,
            sh.started.elapsed().as_secs()
        );
    }
    if want("clients") {
        let _ = write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nrejected_connections:{}\r\n\r\n",
            sh.clients.load(Ordering::Relaxed),
            c.max_clients,
            sh.rejected_connections.load(Ordering::Relaxed)
        );
    }
    if want("stats") {
        let _ = write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\r\n",
            sh.total_connections.load(Ordering::Relaxed),
            sh.total_commands.load(Ordering::Relaxed)
        );
    }
    if want("persistence") {
        let s = sh.db.stats();
        let b = sh.backups.lock().clone();
        let _ = write!(
            t,
            "# Persistence\r\nloading:{}\r\naof_enabled:1\r\nappendfsync:{}\r\nsync_policy:{}\r\nlast_lsn:{}\r\ncheckpoint_lsn:{}\r\ncheckpoints:{}\r\nwal_bytes_since_checkpoint:{}\r\nbackups_taken:{}\r\nbackups_failed:{}\r\nlast_backup_dir:{}\r\nlast_backup_time_ms:{}\r\nlast_backup_error:{}\r\nbackup_dir:{}\r\nbackup_interval_secs:{}\r\nkeep_backups:{}\r\narchive_dir:{}\r\n\r\n",
            u8::from(st.state == OpState::Starting),
            c.sync_policy().map(appendfsync_name).unwrap_or("always"),
            c.sync,
            s.last_lsn,
            s.checkpoint_lsn,
            s.checkpoints,
            s.wal_bytes_since_checkpoint,
            b.taken,
            b.failed,
            b.last_dir.map(|d| d.display().to_string()).unwrap_or_default(),
            b.last_ms,
            b.last_error.unwrap_or_default().replace(['\r', '\n'], " "),
            c.backup_dir.display(),
            c.backup_interval_secs,
            c.keep_backups,
            c.archive().map(|a| a.display().to_string()).unwrap_or_default(),
        );
    }
    if want("replication") {
        let _ = write!(
            t,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nduplex_peers:0\r\n\r\n"
        );
    }
    if want("duplex") {
        let s = sh.db.stats();
        let _ = write!(
            t,
            "# Duplex\r\nstate:{}\r\nepoch:{}\r\nnode_id:{}\r\nlast_lsn:{}\r\ncheckpoint_lsn:{}\r\ngeneration:{}\r\nstore_bytes:{}\r\nlive_bytes:{}\r\ntree_entries:{}\r\nmemtable_entries:{}\r\ncompactions:{}\r\ndata_dir:{}\r\n\r\n",
            st.state.name(),
            st.epoch,
            st.node_id,
            s.last_lsn,
            s.checkpoint_lsn,
            s.generation,
            s.store_bytes,
            s.live_bytes,
            s.tree_entries,
            s.memtable_entries,
            s.compactions,
            c.data.display()
        );
    }
    if want("keyspace") {
        t.push_str("# Keyspace\r\n\r\n");
    }
    t
}
