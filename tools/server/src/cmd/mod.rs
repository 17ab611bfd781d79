//! The RESP commands: the command table, per-connection command state, and the dispatch of
//! one group of requests. Each command lives in the submodule of its kind; a new command is
//! a row in [`TABLE`], a [`Cmd`] variant and a function in one of them:
//! - [`mod@read`]: GET, MGET, EXISTS, STRLEN, GETRANGE, TTL, TOUCH, OBJECT, ... (a run of reads shares one
//!   snapshot);
//! - [`mod@write`]: SET, MSET, DEL, INCR, EXPIRE and every other write of keys, committed
//!   as runs ([`write_groups`]: one `write_many`); parsed in `parse`, evaluated in `eval`
//!   against a `view` (the snapshot under the run's earlier writes); RENAME, RENAMENX,
//!   COPY and MOVE among them;
//! - [`keys`]: FLUSHDB and FLUSHALL (one stamped marker each: [`crate::keyspace`]), SWAPDB
//!   (refused);
//! - [`txn`]: MULTI, EXEC, DISCARD (EXEC is one atomic batch); [`watch`]: WATCH, UNWATCH;
//! - [`conn`]: PING, ECHO, QUIT, AUTH, HELLO, SELECT, CLIENT, TIME;
//! - [`scan`]: SCAN, KEYS, DBSIZE, RANDOMKEY;
//! - [`info`]: INFO, CONFIG GET; [`docs`]: COMMAND;
//! - [`persist`]: SAVE, BGSAVE, LASTSAVE (backups);
//! - [`admin`]: DUPLEX.STATE, DUPLEX.BACKUP, DUPLEX.CHECKPOINT, DUPLEX.FENCE, DUPLEX.UNFENCE,
//!   DUPLEX.DIGEST, DUPLEX.CONFLICTS;
//! - [`peers`]: DUPLEX.PEERS and INFO's `# Replication` (the peer links);
//! - [`token`]: DUPLEX.TOKEN and DUPLEX.WAIT (session tokens: a client reads its own
//!   writes across a switch).
//!
//! This layer knows requests and replies, not sockets: [`crate::session`] decides which
//! requests run together and calls [`execute`] and [`write_groups`].

pub mod admin;
pub mod conn;
pub mod docs;
mod eval;
pub mod info;
pub mod keys;
mod parse;
pub mod peers;
pub mod persist;
pub mod read;
pub mod scan;
pub mod token;
pub mod txn;
mod view;
pub mod watch;
pub mod write;

use std::fmt::Write as _;

use duplex_proto::{bulk, codes, error, integer, simple};

use crate::shared::Shared;

pub use write::{write_groups, write_groups_in};

/// Per-connection command state.
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
    /// Argument bytes queued since MULTI.
    pub multi_bytes: usize,
    /// The selected database (SELECT), 0..16.
    pub db: u8,
    /// The keys WATCHed (forgotten by EXEC, DISCARD and UNWATCH).
    pub watched: Vec<watch::Watched>,
    /// HELLO 3 was accepted: replies are RESP3.
    pub resp3: bool,
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
            multi_bytes: 0,
            db: 0,
            watched: Vec::new(),
            resp3: false,
        }
    }
}

/// The commands duplexd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// `PING [msg]`
    Ping,
    /// `ECHO msg`
    Echo,
    /// `HELLO [proto [AUTH u p] [SETNAME n]]`
    Hello,
    /// `AUTH [user] pass`
    Auth,
    /// `SELECT db`
    Select,
    /// `GET k`
    Get,
    /// `SET k v [NX|XX] [KEEPTTL]`
    Set,
    /// `DEL k...`
    Del,
    /// `EXISTS k...`
    Exists,
    /// `MGET k...`
    MGet,
    /// `MSET k v...`
    MSet,
    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`
    Scan,
    /// `DBSIZE`
    DbSize,
    /// `MULTI`
    Multi,
    /// `EXEC`
    Exec,
    /// `DISCARD`
    Discard,
    /// `INFO [section...]`
    Info,
    /// `CLIENT sub...`
    Client,
    /// `COMMAND [sub...]`
    Command,
    /// `QUIT`
    Quit,
    /// `CONFIG GET p...`
    Config,
    /// `DUPLEX.STATE`
    DState,
    /// `DUPLEX.BACKUP [name]`
    DBackup,
    /// `DUPLEX.CHECKPOINT`
    DCheckpoint,
    /// `DUPLEX.FENCE`
    DFence,
    /// `DUPLEX.UNFENCE`
    DUnfence,
    /// `DUPLEX.DIGEST [start end]`
    DDigest,
    /// `DUPLEX.CONFLICTS [count]`
    DConflicts,
    /// `DUPLEX.PEERS`
    DPeers,
    /// `DUPLEX.TOKEN`
    DToken,
    /// `DUPLEX.WAIT origin position timeout_ms`
    DWait,
    /// `SETNX k v`
    SetNx,
    /// `GETSET k v`
    GetSet,
    /// `SETEX k s v`
    SetEx,
    /// `PSETEX k ms v`
    PSetEx,
    /// `MSETNX k v...`
    MSetNx,
    /// `INCR k`
    Incr,
    /// `DECR k`
    Decr,
    /// `INCRBY k n`
    IncrBy,
    /// `DECRBY k n`
    DecrBy,
    /// `INCRBYFLOAT k f`
    IncrByFloat,
    /// `APPEND k v`
    Append,
    /// `SETRANGE k off v`
    SetRange,
    /// `GETDEL k`
    GetDel,
    /// `GETEX k [EX s|PX ms|EXAT t|PXAT t|PERSIST]`
    GetEx,
    /// `EXPIRE k s [NX|XX|GT|LT]`
    Expire,
    /// `PEXPIRE k ms [NX|XX|GT|LT]`
    PExpire,
    /// `EXPIREAT k t [NX|XX|GT|LT]`
    ExpireAt,
    /// `PEXPIREAT k t [NX|XX|GT|LT]`
    PExpireAt,
    /// `PERSIST k`
    Persist,
    /// `MOVE k db`
    Move,
    /// `UNLINK k...`
    Unlink,
    /// `STRLEN k`
    StrLen,
    /// `GETRANGE k start end`
    GetRange,
    /// `TTL k`
    Ttl,
    /// `PTTL k`
    PTtl,
    /// `EXPIRETIME k`
    ExpireTime,
    /// `PEXPIRETIME k`
    PExpireTime,
    /// `TYPE k`
    Type,
    /// `FLUSHDB [ASYNC|SYNC]`
    FlushDb,
    /// `FLUSHALL [ASYNC|SYNC]`
    FlushAll,
    /// `KEYS pattern`
    Keys,
    /// `RENAME src dst`
    Rename,
    /// `RENAMENX src dst`
    RenameNx,
    /// `COPY src dst [DB db] [REPLACE]`
    Copy,
    /// `TOUCH k...`
    Touch,
    /// `RANDOMKEY`
    RandomKey,
    /// `OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT|HELP [k]`
    Object,
    /// `SWAPDB a b` (refused: see docs/COMMANDS.md)
    SwapDb,
    /// `WATCH k...`
    Watch,
    /// `UNWATCH`
    Unwatch,
    /// `TIME`
    Time,
    /// `SAVE`
    Save,
    /// `BGSAVE [SCHEDULE]`
    BgSave,
    /// `LASTSAVE`
    LastSave,
    /// Anything else.
    Unknown,
}

impl Cmd {
    /// A write of keys (SET, MSET, DEL, INCR, EXPIRE, ...): committed in runs by
    /// [`write_groups`]. FLUSHDB and FLUSHALL are not: they lock every key.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Cmd::Set
                | Cmd::MSet
                | Cmd::Del
                | Cmd::SetNx
                | Cmd::GetSet
                | Cmd::SetEx
                | Cmd::PSetEx
                | Cmd::MSetNx
                | Cmd::Incr
                | Cmd::Decr
                | Cmd::IncrBy
                | Cmd::DecrBy
                | Cmd::IncrByFloat
                | Cmd::Append
                | Cmd::SetRange
                | Cmd::GetDel
                | Cmd::GetEx
                | Cmd::Expire
                | Cmd::PExpire
                | Cmd::ExpireAt
                | Cmd::PExpireAt
                | Cmd::Persist
                | Cmd::Move
                | Cmd::Unlink
                | Cmd::Rename
                | Cmd::RenameNx
                | Cmd::Copy
        )
    }

    /// A read of keys (GET, MGET, EXISTS, STRLEN, TTL, ...): answered from a snapshot by
    /// [`read::read`].
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Cmd::Get
                | Cmd::MGet
                | Cmd::Exists
                | Cmd::StrLen
                | Cmd::GetRange
                | Cmd::Ttl
                | Cmd::PTtl
                | Cmd::ExpireTime
                | Cmd::PExpireTime
                | Cmd::Type
                | Cmd::Touch
                | Cmd::Object
        )
    }
}

/// Every known command: name, min args, max args (command name included; `usize::MAX` for
/// any), and whether MULTI may queue it.
pub const TABLE: &[(&str, Cmd, usize, usize, bool)] = &[
    ("PING", Cmd::Ping, 1, 2, true),
    ("ECHO", Cmd::Echo, 2, 2, true),
    ("HELLO", Cmd::Hello, 1, 7, false),
    ("AUTH", Cmd::Auth, 2, 3, false),
    ("SELECT", Cmd::Select, 2, 2, true),
    ("GET", Cmd::Get, 2, 2, true),
    ("SET", Cmd::Set, 3, usize::MAX, true),
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
    ("DUPLEX.BACKUP", Cmd::DBackup, 1, 4, false),
    ("DUPLEX.CHECKPOINT", Cmd::DCheckpoint, 1, 1, false),
    ("DUPLEX.FENCE", Cmd::DFence, 1, 1, false),
    ("DUPLEX.UNFENCE", Cmd::DUnfence, 1, 1, false),
    ("DUPLEX.DIGEST", Cmd::DDigest, 1, 3, false),
    ("DUPLEX.CONFLICTS", Cmd::DConflicts, 1, 2, false),
    ("DUPLEX.PEERS", Cmd::DPeers, 1, 1, false),
    ("DUPLEX.TOKEN", Cmd::DToken, 1, 1, false),
    ("DUPLEX.WAIT", Cmd::DWait, 4, 4, false),
    ("SETNX", Cmd::SetNx, 3, 3, true),
    ("GETSET", Cmd::GetSet, 3, 3, true),
    ("SETEX", Cmd::SetEx, 4, 4, true),
    ("PSETEX", Cmd::PSetEx, 4, 4, true),
    ("MSETNX", Cmd::MSetNx, 3, usize::MAX, true),
    ("INCR", Cmd::Incr, 2, 2, true),
    ("DECR", Cmd::Decr, 2, 2, true),
    ("INCRBY", Cmd::IncrBy, 3, 3, true),
    ("DECRBY", Cmd::DecrBy, 3, 3, true),
    ("INCRBYFLOAT", Cmd::IncrByFloat, 3, 3, true),
    ("APPEND", Cmd::Append, 3, 3, true),
    ("SETRANGE", Cmd::SetRange, 4, 4, true),
    ("GETDEL", Cmd::GetDel, 2, 2, true),
    ("GETEX", Cmd::GetEx, 2, 4, true),
    ("EXPIRE", Cmd::Expire, 3, usize::MAX, true),
    ("PEXPIRE", Cmd::PExpire, 3, usize::MAX, true),
    ("EXPIREAT", Cmd::ExpireAt, 3, usize::MAX, true),
    ("PEXPIREAT", Cmd::PExpireAt, 3, usize::MAX, true),
    ("PERSIST", Cmd::Persist, 2, 2, true),
    ("MOVE", Cmd::Move, 3, 3, true),
    ("UNLINK", Cmd::Unlink, 2, usize::MAX, true),
    ("STRLEN", Cmd::StrLen, 2, 2, true),
    ("GETRANGE", Cmd::GetRange, 4, 4, true),
    ("TTL", Cmd::Ttl, 2, 2, true),
    ("PTTL", Cmd::PTtl, 2, 2, true),
    ("EXPIRETIME", Cmd::ExpireTime, 2, 2, true),
    ("PEXPIRETIME", Cmd::PExpireTime, 2, 2, true),
    ("TYPE", Cmd::Type, 2, 2, true),
    ("FLUSHDB", Cmd::FlushDb, 1, 2, true),
    ("FLUSHALL", Cmd::FlushAll, 1, 2, true),
    ("KEYS", Cmd::Keys, 2, 2, false),
    ("RENAME", Cmd::Rename, 3, 3, true),
    ("RENAMENX", Cmd::RenameNx, 3, 3, true),
    ("COPY", Cmd::Copy, 3, 6, true),
    ("TOUCH", Cmd::Touch, 2, usize::MAX, true),
    ("RANDOMKEY", Cmd::RandomKey, 1, 1, false),
    ("OBJECT", Cmd::Object, 2, 3, true),
    ("SWAPDB", Cmd::SwapDb, 3, 3, false),
    ("WATCH", Cmd::Watch, 2, usize::MAX, false),
    ("UNWATCH", Cmd::Unwatch, 1, 1, true),
    ("TIME", Cmd::Time, 1, 1, true),
    ("SAVE", Cmd::Save, 1, 1, false),
    ("BGSAVE", Cmd::BgSave, 1, 2, false),
    ("LASTSAVE", Cmd::LastSave, 1, 1, true),
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

/// An error reply's text, code first (`ERR ...`, `NOAUTH ...`): what a command answers
/// when it refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrLine(pub String);

impl ErrLine {
    /// An `ERR` reply with `msg`.
    pub fn err(msg: impl AsRef<str>) -> ErrLine {
        ErrLine(codes::line(codes::ERR, msg.as_ref()))
    }

    /// Appends the reply to `out`.
    pub fn send(&self, out: &mut Vec<u8>) {
        error(out, &self.0);
    }
}

/// `b` as text for an error message, cut to about 128 bytes.
pub(crate) fn lossy(b: &[u8]) -> String {
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

/// The reply to a request with the wrong number of arguments.
pub(crate) fn arity_error(name: &[u8]) -> ErrLine {
    ErrLine::err(format!(
        "wrong number of arguments for '{}' command",
        lossy(name).to_ascii_lowercase()
    ))
}

/// Redis 7's reply to an unknown command, byte for byte: the name (at most 128 bytes),
/// then each argument quoted and followed by a space while the list is under 128 bytes
/// (each cut to what is left of the 128), newlines turned into spaces.
pub(crate) fn unknown_command(args: &[&[u8]]) -> ErrLine {
    let cut = |b: &[u8], n: usize| String::from_utf8_lossy(&b[..b.len().min(n)]).into_owned();
    let mut list = String::new();
    for a in &args[1..] {
        if list.len() >= 128 {
            break;
        }
        let _ = write!(list, "'{}' ", cut(a, 128 - list.len()));
    }
    let msg = format!(
        "unknown command '{}', with args beginning with: {list}",
        cut(args[0], 128)
    );
    ErrLine::err(msg.replace(['\r', '\n'], " "))
}

/// Checks a request's name and arity: the command and whether MULTI may queue it, or the
/// error to send.
pub fn check(args: &[&[u8]]) -> Result<(Cmd, bool), ErrLine> {
    let (c, lo, hi, q) = lookup(args[0]);
    if c == Cmd::Unknown {
        return Err(unknown_command(args));
    }
    if args.len() < lo || args.len() > hi {
        return Err(arity_error(args[0]));
    }
    Ok((c, q))
}

/// Whether a request is a well-formed write of keys (name and arity; [`Cmd::is_write`]): one that
/// [`write_groups`] can take. Authentication and MULTI are the caller's business.
pub fn is_write(args: &[&[u8]]) -> bool {
    check(args).is_ok_and(|(c, _)| c.is_write())
}

/// Whether a well-formed request is slow work (a copy or a walk over the whole database):
/// DUPLEX.BACKUP, SAVE, BGSAVE, DUPLEX.CHECKPOINT, DUPLEX.DIGEST, DUPLEX.WAIT (it may wait
/// for a peer's batches), DBSIZE, KEYS, INFO (its `# Keyspace` counts every key),
/// RANDOMKEY, and SCAN with a COUNT above
/// [`crate::limits::SCAN_INLINE_MAX`]. A session hands it to its layer
/// ([`crate::session::Step::Slow`]) to run off the event loop; [`run_slow`] runs it.
pub fn is_slow(args: &[&[u8]]) -> bool {
    // Every request passes here: names that cannot be slow (GET, SET, ...) are told apart
    // by length and first letter before the table is searched.
    let name = args[0];
    let maybe = matches!(name.len(), 4 | 6 | 9 | 11 | 13 | 17)
        && matches!(
            name[0].to_ascii_uppercase(),
            b'D' | b'S' | b'K' | b'B' | b'I' | b'R'
        );
    if !maybe {
        return false;
    }
    match check(args) {
        Ok((
            Cmd::DBackup
            | Cmd::DCheckpoint
            | Cmd::DDigest
            | Cmd::DbSize
            | Cmd::DWait
            | Cmd::Keys
            | Cmd::Save
            | Cmd::BgSave
            | Cmd::Info
            | Cmd::RandomKey,
            _,
        )) => true,
        Ok((Cmd::Scan, _)) => scan::is_large(args),
        _ => false,
    }
}

/// Runs one request [`is_slow`] picked (its connection is authenticated and not in
/// MULTI, its database `db`), appending its reply to `out`.
pub fn run_slow(sh: &Shared, db: u8, args: &[&[u8]], out: &mut Vec<u8>) {
    match check(args) {
        Ok((Cmd::DBackup, _)) => admin::backup(sh, args, out),
        Ok((Cmd::DCheckpoint, _)) => admin::checkpoint(sh, out),
        Ok((Cmd::DDigest, _)) => admin::digest(sh, args, out),
        Ok((Cmd::DbSize, _)) => scan::dbsize(sh, db, out),
        Ok((Cmd::Scan, _)) => scan::scan(sh, db, args, out),
        Ok((Cmd::Keys, _)) => scan::keys(sh, db, args[1], out),
        Ok((Cmd::DWait, _)) => token::wait(sh, args, out),
        Ok((Cmd::Save, _)) => persist::save(sh, out),
        Ok((Cmd::BgSave, _)) => persist::bgsave(sh, args, out),
        Ok((Cmd::Info, _)) => info::info_cmd(sh, args, out),
        Ok((Cmd::RandomKey, _)) => scan::randomkey(sh, db, out),
        Ok(_) => error(out, "ERR internal: not a slow command"),
        Err(e) => e.send(out),
    }
}

fn allowed_before_auth(c: Cmd) -> bool {
    matches!(c, Cmd::Auth | Cmd::Hello | Cmd::Quit | Cmd::DState)
}

/// What [`execute`] did with a group of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    /// How many requests of the group ran (from the front); the rest are for later.
    pub ran: usize,
    /// The connection must close afterwards (QUIT).
    pub close: bool,
}

/// Executes `reqs` in order, appending every reply to `out`: a run of consecutive reads
/// shares one snapshot (taken after this connection's earlier writes); a write that gets
/// here (the session commits runs of writes itself) is committed on its own.
///
/// Once `out` holds more than `budget` bytes, no further request starts (the first always
/// runs): a group of GETs of large values costs one budget of memory, not one value per
/// request. The caller keeps the requests that did not run for a later step.
pub fn execute(
    sh: &Shared,
    conn: &mut ConnState,
    reqs: &[Vec<&[u8]>],
    out: &mut Vec<u8>,
    budget: usize,
) -> Executed {
    let mut i = 0;
    while i < reqs.len() {
        if i > 0 && out.len() > budget {
            break;
        }
        let args = &reqs[i];
        let Some((cmd, queueable)) = admit(conn, args, out) else {
            i += 1;
            continue;
        };
        if conn.multi.is_some() && !txn::controls(cmd) {
            txn::queue(conn, args, queueable, out);
            i += 1;
            continue;
        }
        if cmd.is_read() {
            i += read::read_run(sh, conn.db, &reqs[i..], out, budget);
            continue;
        }
        if cmd.is_write() {
            if let Some(r) = write_groups_in(sh, &[(conn.db, &reqs[i..=i])]).pop() {
                out.extend_from_slice(&r);
            }
        } else {
            let close = dispatch(sh, conn, cmd, args, out);
            if matches!(cmd, Cmd::Select | Cmd::Client | Cmd::Hello | Cmd::Exec) {
                conn::publish(sh, conn);
            }
            if close {
                return Executed {
                    ran: i + 1,
                    close: true,
                };
            }
        }
        i += 1;
    }
    Executed {
        ran: i,
        close: false,
    }
}

/// Name, arity and authentication: the command, or `None` once the refusal is in `out`.
fn admit(conn: &mut ConnState, args: &[&[u8]], out: &mut Vec<u8>) -> Option<(Cmd, bool)> {
    match check(args) {
        Err(e) => {
            if conn.multi.is_some() {
                conn.multi_dirty = true;
            }
            e.send(out);
            None
        }
        Ok((cmd, _)) if !conn.authed && !allowed_before_auth(cmd) => {
            error(out, &codes::line(codes::NOAUTH, "Authentication required."));
            None
        }
        Ok(c) => Some(c),
    }
}

/// Every command but the reads and writes. Returns true to close the connection.
fn dispatch(
    sh: &Shared,
    conn: &mut ConnState,
    cmd: Cmd,
    args: &[&[u8]],
    out: &mut Vec<u8>,
) -> bool {
    match cmd {
        Cmd::Ping => conn::ping(args, out),
        Cmd::Echo => bulk(out, args[1]),
        Cmd::Quit => {
            simple(out, "OK");
            return true;
        }
        Cmd::Auth => conn::auth_cmd(sh, conn, args, out),
        Cmd::Hello => conn::hello(sh, conn, args, out),
        Cmd::Select => conn::select(conn, args, out),
        Cmd::Client => conn::client(sh, conn, args, out),
        Cmd::Multi => txn::multi(conn, out),
        Cmd::Discard => txn::discard(conn, out),
        Cmd::Exec => txn::exec_cmd(sh, conn, out),
        Cmd::DbSize => scan::dbsize(sh, conn.db, out),
        Cmd::Scan => scan::scan(sh, conn.db, args, out),
        Cmd::Keys => scan::keys(sh, conn.db, args[1], out),
        Cmd::FlushDb | Cmd::FlushAll => keys::flush_cmd(sh, conn.db, args, out),
        Cmd::Info => info::info_cmd(sh, args, out),
        Cmd::Command => info::command(conn.resp3, args, out),
        Cmd::Config => info::config(sh, conn.resp3, args, out),
        Cmd::Watch => watch::watch(sh, conn, args, out),
        Cmd::Unwatch => watch::unwatch(conn, out),
        Cmd::Time => conn::time_reply().encode(out),
        Cmd::RandomKey => scan::randomkey(sh, conn.db, out),
        Cmd::SwapDb => keys::swapdb(args, out),
        Cmd::Save => persist::save(sh, out),
        Cmd::BgSave => persist::bgsave(sh, args, out),
        Cmd::LastSave => integer(out, persist::lastsave(sh)),
        Cmd::DState => admin::state(sh, out),
        Cmd::DBackup => admin::backup(sh, args, out),
        Cmd::DCheckpoint => admin::checkpoint(sh, out),
        Cmd::DFence => admin::fence(sh, out),
        Cmd::DUnfence => admin::unfence(sh, out),
        Cmd::DDigest => admin::digest(sh, args, out),
        Cmd::DConflicts => admin::conflicts(sh, args, out),
        Cmd::DPeers => peers::peers_cmd(sh, out),
        Cmd::DToken => token::token(sh, out),
        // Reached only where slow work cannot be handed off: checks once, never waits.
        Cmd::DWait => {
            let mut once = args.to_vec();
            once[3] = b"0";
            token::wait(sh, &once, out);
        }
        _ => {
            // Reads and writes of keys: handled by the caller.
            error(out, "ERR internal dispatch error");
        }
    }
    false
}

/// Appends `s` as a bulk string.
pub(crate) fn bulk_str(out: &mut Vec<u8>, s: &str) {
    bulk(out, s.as_bytes());
}

/// Appends an engine error as an `ERR` reply.
pub(crate) fn engine_err(out: &mut Vec<u8>, e: &duplex_engine::Error) {
    ErrLine::err(e.to_string()).send(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_slow_work_and_conflicts_is_not() {
        assert!(is_slow(&[b"duplex.digest"]));
        assert!(is_slow(&[b"DUPLEX.DIGEST", b"a", b"b"]));
        // A malformed one is refused at once, not queued as slow work.
        assert!(!is_slow(&[b"DUPLEX.DIGEST", b"a", b"b", b"c"]));
        assert!(!is_slow(&[b"DUPLEX.CONFLICTS"]));
        assert!(is_slow(&[b"duplex.wait", b"1", b"2", b"3"]));
        assert!(!is_slow(&[b"DUPLEX.WAIT", b"1"]));
        assert!(!is_slow(&[b"DUPLEX.TOKEN"]));
        assert_eq!(lookup(b"duplex.conflicts").0, Cmd::DConflicts);
        assert!(check(&[b"DUPLEX.CONFLICTS", b"1", b"2"]).is_err());
    }
}
