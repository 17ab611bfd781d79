//! [`Client`]: one connection at a time to the first usable server of the list, with the
//! state checks, switching, failback and epoch rule described in the crate docs.

use std::fmt;
use std::time::Instant;

use duplex_proto::codes::{self, ErrorClass};
use duplex_proto::Reply;

use crate::config::{ClientConfig, SwitchMode};
use crate::conn::{Conn, ConnError};
use crate::error::{Error, Result};
use crate::state::{describe, ServerStatus, StateInfo, Unavailable};
use crate::token::{wants_token, Tokens};

/// Something the client did on its own that the application may want to log or show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// First connection, made by [`Client::connect`].
    Connected {
        /// The server.
        server: String,
        /// Its epoch.
        epoch: u64,
    },
    /// The current server was found down; the client stopped sending to it.
    Down {
        /// The server.
        server: String,
        /// Why.
        reason: Unavailable,
    },
    /// The client moved to another server (automatically, or by [`Client::switch`]).
    Switched {
        /// The server it left.
        from: String,
        /// The server it uses now.
        to: String,
        /// The new server's epoch.
        epoch: u64,
    },
    /// The connection to the current server was lost but the same server was usable again,
    /// so the client reconnected to it.
    Reconnected {
        /// The server.
        server: String,
    },
    /// Failback: a more preferred server is usable again and the client moved back to it.
    FailedBack {
        /// The backup it left.
        from: String,
        /// The preferred server it uses now.
        to: String,
        /// The new server's epoch.
        epoch: u64,
    },
    /// After a switch, the new server did not show the client's own earlier writes within
    /// `token_wait`, and `token_timeout_proceeds` is set: the client went on there.
    OwnWritesNotVisible {
        /// The server switched to.
        server: String,
        /// Its `DUPLEX.WAIT` reply.
        message: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connected { server, epoch } => {
                write!(f, "connected to {server} (epoch {epoch})")
            }
            Event::Down { server, reason } => write!(f, "{server} is down: {reason}"),
            Event::Switched { from, to, epoch } => {
                write!(f, "switched from {from} to {to} (epoch {epoch})")
            }
            Event::Reconnected { server } => write!(f, "reconnected to {server}"),
            Event::FailedBack { from, to, epoch } => write!(
                f,
                "failback: {to} is running again (epoch {epoch}); moved back from {from}"
            ),
            Event::OwnWritesNotVisible { server, message } => write!(
                f,
                "went on at {server} although the client's own writes are not visible there \
                 yet: {message}"
            ),
        }
    }
}

/// What the client remembers per configured server.
#[derive(Debug, Default, Clone)]
struct Slot {
    /// The highest epoch ever seen from this address.
    highest_epoch: Option<u64>,
}

/// The connection in use.
#[derive(Debug)]
struct Active {
    idx: usize,
    conn: Conn,
    last_poll: Instant,
}

/// A blocking Duplex client with failover (see the crate docs). Not thread-safe by itself
/// (`&mut self` everywhere); give each thread its own client.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    slots: Vec<Slot>,
    /// Exactly one of `active` and `down` is `Some` once connected.
    active: Option<Active>,
    /// The server found down, why, and whether a switch should try it again first (a lost
    /// connection to a server that may still be running).
    down: Option<(usize, Unavailable, bool)>,
    events: Vec<Event>,
    switches: u64,
    /// The session token (see [`crate::token`]).
    tokens: Tokens,
    /// A MULTI is open on the connection: no token request goes behind its commands.
    in_multi: bool,
}

/// Commands safe to send again after a switch when their reply was lost.
const IDEMPOTENT: &[&str] = &[
    "GET",
    "MGET",
    "EXISTS",
    "DBSIZE",
    "PING",
    "ECHO",
    "INFO",
    "COMMAND",
    "DUPLEX.STATE",
];

/// How a command is treated when its reply is lost: (is a write, may be retried).
fn classify(name: &str, args: &[&[u8]]) -> (bool, bool) {
    if IDEMPOTENT.contains(&name) {
        return (false, true);
    }
    if name == "SCAN" {
        // A cursor belongs to the server that issued it; only a scan from the start can be
        // sent to another server.
        return (false, args.get(1).is_some_and(|c| c == b"0"));
    }
    // Everything else (SET, DEL, MSET, MULTI/EXEC, admin commands, unknown commands) may
    // change data: never resent when its outcome is unknown.
    (true, false)
}

/// Whether an error reply means "write refused, not applied" because of the server's state
/// or a resource it lacks for now (`-NORESOURCE`).
fn is_refusal(msg: &str) -> bool {
    codes::classify(msg) == ErrorClass::Refused
}

impl Client {
    /// Reads the state of each server in order and connects to the first usable one
    /// (serving state, epoch not older than seen, AUTH accepted). Fails with
    /// [`Error::NoServer`] listing every server and why when none is.
    pub fn connect(cfg: ClientConfig) -> Result<Client> {
        cfg.validate()?;
        let n = cfg.servers.len();
        let mut c = Client {
            cfg,
            slots: vec![Slot::default(); n],
            active: None,
            down: None,
            events: Vec::new(),
            switches: 0,
            tokens: Tokens::default(),
            in_multi: false,
        };
        match c.select((0..n).collect()) {
            Ok((idx, epoch)) => {
                c.events.push(Event::Connected {
                    server: c.addr(idx).to_owned(),
                    epoch,
                });
                Ok(c)
            }
            Err(e) => Err(e),
        }
    }

    /// The address of the server in use, or `None` while the client is not connected (its
    /// server is down and no switch has happened yet).
    pub fn current_server(&self) -> Option<&str> {
        self.active.as_ref().map(|a| self.addr(a.idx))
    }

    /// The position in the server list of the server in use (0 = default).
    pub fn current_index(&self) -> Option<usize> {
        self.active.as_ref().map(|a| a.idx)
    }

    /// How many times the client has moved to a different server (switches and failbacks).
    pub fn switch_count(&self) -> u64 {
        self.switches
    }

    /// Forgets the session token: the next server switched to is not asked to wait for
    /// this client's earlier writes. For an application that got
    /// [`Error::OwnWritesNotVisible`] (say, its last writes were acknowledged by a server
    /// that died before they reached any other) and accepts reading without them.
    pub fn clear_session_token(&mut self) {
        self.tokens = Tokens::default();
    }

    /// Takes the events recorded since the last call (oldest first).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Moves to the next usable server in list order after the current one (wrapping round;
    /// the current one is tried last) and returns its address. This is how a
    /// [`SwitchMode::Manual`] application resumes after [`Error::ServerDown`]; in automatic
    /// mode it forces a move. If the current server is healthy and no other server is
    /// usable, the client stays where it is and returns the current address.
    pub fn switch(&mut self) -> Result<String> {
        if let Some(a) = &self.active {
            let from = a.idx;
            let order: Vec<usize> = self.rotation(from, false);
            for i in order.into_iter().filter(|&i| i != from) {
                if let Ok((conn, info)) = self.open_usable(i) {
                    self.activate(i, conn);
                    self.record_move(from, i, info.epoch, false);
                    return Ok(self.addr(i).to_owned());
                }
            }
            return Ok(self.addr(from).to_owned());
        }
        self.failover(false)?;
        self.current_server()
            .map(str::to_owned)
            .ok_or_else(|| Error::Config("internal: no server after a switch".into()))
    }

    /// Reads every configured server's state over short-lived connections (no AUTH needed)
    /// and says which the client would use. Epochs seen here count for the epoch rule.
    pub fn server_states(&mut self) -> Vec<ServerStatus> {
        let cur = self.current_index();
        (0..self.cfg.servers.len())
            .map(|i| {
                let (info, unavailable) = match self.probe(i) {
                    Ok((_, info)) => (Some(info), None),
                    Err((u, info)) => (info, Some(u)),
                };
                ServerStatus {
                    addr: self.addr(i).to_owned(),
                    index: i,
                    info,
                    highest_epoch_seen: self.slots[i].highest_epoch,
                    unavailable,
                    current: cur == Some(i),
                }
            })
            .collect()
    }

    /// Sends one command (name and arguments) and returns its reply; a top-level error
    /// reply becomes [`Error::Server`]. Before sending, the client makes sure it has a usable
    /// server (switching in automatic mode) and re-reads the state when the poll interval
    /// has passed. If the reply is lost, idempotent reads (GET, MGET, EXISTS, DBSIZE, PING,
    /// ECHO, INFO, SCAN from cursor 0, ...) are retried once after a switch; anything else
    /// is reported as [`Error::OutcomeUnknown`] and never resent. A write refused because
    /// of the server's state (`-FENCED`, `-FAILED`, `-LOADING`: not applied) is sent once to
    /// the next server in automatic mode, or reported as [`Error::ServerDown`] in manual
    /// mode.
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let Some(first) = args.first() else {
            return Err(Error::Config(
                "command() needs at least a command name".into(),
            ));
        };
        let name = String::from_utf8_lossy(first).to_ascii_uppercase();
        let (is_write, retryable) = classify(&name, args);
        let mut retried = false;
        loop {
            let idx = self.ready()?;
            if !self.settle(idx)? {
                continue;
            }
            let Some(res) = self.send(&name, args) else {
                continue;
            };
            let server = self.addr(idx).to_owned();
            match res {
                Ok(Reply::Error(msg)) if is_refusal(&msg) => {
                    let reason = Unavailable::Refused(msg.clone());
                    self.mark_down(idx, reason.clone(), false);
                    if self.cfg.switch_mode == SwitchMode::Manual {
                        return Err(Error::ServerDown { server, reason });
                    }
                    if !retried {
                        // The server guarantees the write was not applied: sending it to
                        // the next server cannot duplicate it.
                        retried = true;
                        continue;
                    }
                    return Err(Error::Server {
                        server,
                        message: msg,
                    });
                }
                Ok(Reply::Error(msg)) if codes::classify(&msg) == ErrorClass::OutcomeUnknown => {
                    // The server's disk failed during this write: it may or may not have
                    // been made durable. Never resend; move away from the failed server.
                    self.mark_down(idx, Unavailable::Refused(msg.clone()), false);
                    if self.cfg.switch_mode == SwitchMode::Automatic {
                        let _ = self.failover(true);
                    }
                    return Err(Error::OutcomeUnknown {
                        server,
                        command: name,
                        cause: msg,
                    });
                }
                Ok(Reply::Error(message)) => return Err(Error::Server { server, message }),
                Ok(r) => return Ok(r),
                Err(e) => {
                    let cause = e.to_string();
                    self.mark_down(idx, Unavailable::Unreachable(cause.clone()), true);
                    if retryable && !retried {
                        retried = true;
                        continue;
                    }
                    if self.cfg.switch_mode == SwitchMode::Automatic {
                        // Move on now so that current_server() tells where the next command
                        // goes; a failure here is reported by the next command.
                        let _ = self.failover(true);
                    }
                    return Err(if is_write {
                        Error::OutcomeUnknown {
                            server,
                            command: name,
                            cause,
                        }
                    } else {
                        Error::ConnectionLost {
                            server,
                            command: name,
                            cause: if retryable {
                                cause
                            } else {
                                format!("{cause}; a SCAN cursor is valid only on the server that issued it: restart the scan from cursor 0")
                            },
                        }
                    });
                }
            }
        }
    }

    /// GET: the value, or `None` if the key does not exist.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        match self.command(&[b"GET", key.as_ref()])? {
            Reply::Bulk(v) => Ok(Some(v)),
            Reply::Null => Ok(None),
            other => Err(self.unexpected("GET", &other)),
        }
    }

    /// SET key value.
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        match self.command(&[b"SET", key.as_ref(), value.as_ref()])? {
            Reply::Simple(s) if s == "OK" => Ok(()),
            other => Err(self.unexpected("SET", &other)),
        }
    }

    /// DEL: how many of the keys existed.
    pub fn del<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<u64> {
        let args = with_name(b"DEL", keys.iter().map(AsRef::as_ref));
        self.integer("DEL", &args)
    }

    /// EXISTS: how many of the keys exist (a key named twice counts twice).
    pub fn exists<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<u64> {
        let args = with_name(b"EXISTS", keys.iter().map(AsRef::as_ref));
        self.integer("EXISTS", &args)
    }

    /// MGET: one value (or `None`) per key, in order.
    pub fn mget<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        let args = with_name(b"MGET", keys.iter().map(AsRef::as_ref));
        match self.command(&args)? {
            Reply::Array(items) if items.len() == keys.len() => items
                .into_iter()
                .map(|r| match r {
                    Reply::Bulk(v) => Ok(Some(v)),
                    Reply::Null => Ok(None),
                    other => Err(self.unexpected("MGET", &other)),
                })
                .collect(),
            other => Err(self.unexpected("MGET", &other)),
        }
    }

    /// MSET: sets every pair atomically (one batch on the server).
    pub fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, pairs: &[(K, V)]) -> Result<()> {
        let args = with_name(
            b"MSET",
            pairs.iter().flat_map(|(k, v)| [k.as_ref(), v.as_ref()]),
        );
        match self.command(&args)? {
            Reply::Simple(s) if s == "OK" => Ok(()),
            other => Err(self.unexpected("MSET", &other)),
        }
    }

    fn integer(&mut self, name: &str, args: &[&[u8]]) -> Result<u64> {
        match self.command(args)? {
            Reply::Integer(n) if n >= 0 => Ok(n as u64),
            other => Err(self.unexpected(name, &other)),
        }
    }

    fn unexpected(&self, command: &str, r: &Reply) -> Error {
        Error::UnexpectedReply {
            server: self.current_server().unwrap_or("?").to_owned(),
            command: command.to_owned(),
            reply: describe(r),
        }
    }

    fn addr(&self, idx: usize) -> &str {
        &self.cfg.servers[idx]
    }

    /// Servers in the order a switch away from `from` tries them: the ones after it, wrapping
    /// round, then `from` itself (or `from` first when `same_first`: a lost connection to a
    /// server that is still running should not move the client).
    fn rotation(&self, from: usize, same_first: bool) -> Vec<usize> {
        let n = self.cfg.servers.len();
        let mut v: Vec<usize> = (1..n).map(|k| (from + k) % n).collect();
        if same_first {
            v.insert(0, from);
        } else {
            v.push(from);
        }
        v
    }

    /// Applies the state and epoch rules to what server `idx` reported, remembering its
    /// epoch. Epochs are compared per address only: each node counts its own.
    fn judge(&mut self, idx: usize, info: &StateInfo) -> Result<(), Unavailable> {
        let slot = &mut self.slots[idx];
        if let Some(seen) = slot.highest_epoch {
            if info.epoch < seen {
                return Err(Unavailable::StaleEpoch {
                    seen,
                    reported: info.epoch,
                });
            }
        }
        slot.highest_epoch = Some(info.epoch);
        if !info.state.is_serving() {
            return Err(Unavailable::NotServing(info.state.clone()));
        }
        Ok(())
    }

    /// A fresh connection to server `idx` with its state read (before AUTH) and judged.
    fn probe(&mut self, idx: usize) -> Result<(Conn, StateInfo), (Unavailable, Option<StateInfo>)> {
        let unreachable = |e: &dyn fmt::Display| (Unavailable::Unreachable(e.to_string()), None);
        let mut c = Conn::open(
            self.addr(idx),
            self.cfg.connect_timeout,
            self.cfg.read_timeout,
        )
        .map_err(|e| unreachable(&e))?;
        let r = c.call(&[b"DUPLEX.STATE"]).map_err(|e| unreachable(&e))?;
        let info = match &r {
            Reply::Error(m) => {
                return Err((Unavailable::BadReply(format!("DUPLEX.STATE: {m}")), None))
            }
            r => StateInfo::from_reply(r).map_err(|m| (Unavailable::BadReply(m), None))?,
        };
        match self.judge(idx, &info) {
            Ok(()) => Ok((c, info)),
            Err(u) => Err((u, Some(info))),
        }
    }

    /// A usable connection to server `idx`: state checked, then AUTH if configured.
    fn open_usable(&mut self, idx: usize) -> Result<(Conn, StateInfo), Unavailable> {
        let (mut c, info) = self.probe(idx).map_err(|(u, _)| u)?;
        if let Some(p) = &self.cfg.password {
            match c.call(&[b"AUTH", p.as_bytes()]) {
                Ok(Reply::Simple(s)) if s == "OK" => {}
                Ok(Reply::Error(m)) => return Err(Unavailable::AuthFailed(m)),
                Ok(other) => {
                    return Err(Unavailable::BadReply(format!(
                        "AUTH answered {}",
                        describe(&other)
                    )))
                }
                Err(e) => return Err(Unavailable::Unreachable(e.to_string())),
            }
        }
        Ok((c, info))
    }

    fn activate(&mut self, idx: usize, conn: Conn) {
        self.active = Some(Active {
            idx,
            conn,
            last_poll: Instant::now(),
        });
        self.down = None;
        self.tokens.unsettled = true;
        self.in_multi = false;
    }

    /// Sends one command on the active connection (`None`: there is none); a data write
    /// outside MULTI carries `DUPLEX.TOKEN` in the same pipeline (session tokens on), whose
    /// reply is recorded. Tracks MULTI.
    fn send(&mut self, name: &str, args: &[&[u8]]) -> Option<Result<Reply, ConnError>> {
        let a = self.active.as_mut()?;
        // EXEC closes the MULTI: its token request runs after the transaction.
        let open_multi = self.in_multi && name != "EXEC";
        let res = if self.cfg.session_tokens && !open_multi && wants_token(name) {
            a.conn.call_pair(args, &[b"DUPLEX.TOKEN"]).map(|(r, t)| {
                // A token lost with the connection: the next command finds it closed.
                if let Ok(t) = t {
                    self.tokens.record(&t);
                }
                r
            })
        } else {
            a.conn.call(args)
        };
        match (name, &res) {
            ("MULTI", Ok(Reply::Simple(_))) => self.in_multi = true,
            ("EXEC" | "DISCARD", _) | (_, Err(_)) => self.in_multi = false,
            _ => {}
        }
        Some(res)
    }

    /// Before the first command on a connection made by a switch (or a reconnect): asks the
    /// server to wait for the client's own writes (`DUPLEX.WAIT` per origin of the session
    /// token). `Ok(true)`: go on; `Ok(false)`: the server was marked down, choose again;
    /// [`Error::OwnWritesNotVisible`] when they did not arrive in time (unless
    /// `token_timeout_proceeds`).
    fn settle(&mut self, idx: usize) -> Result<bool> {
        if !self.tokens.unsettled {
            return Ok(true);
        }
        if !self.cfg.session_tokens {
            self.tokens.unsettled = false;
            return Ok(true);
        }
        let ms = self.cfg.effective_token_wait().as_millis().to_string();
        for (origin, pos) in self.tokens.marks().to_vec() {
            let Some(a) = self.active.as_mut() else {
                return Ok(false);
            };
            let (o, p) = (origin.to_string(), pos.to_string());
            match a
                .conn
                .call(&[b"DUPLEX.WAIT", o.as_bytes(), p.as_bytes(), ms.as_bytes()])
            {
                Ok(Reply::Error(m))
                    if matches!(codes::code_of(&m), codes::TIMEOUT | codes::TOKENLOST) =>
                {
                    let server = self.addr(idx).to_owned();
                    if !self.cfg.token_timeout_proceeds {
                        return Err(Error::OwnWritesNotVisible { server, message: m });
                    }
                    self.events
                        .push(Event::OwnWritesNotVisible { server, message: m });
                    break;
                }
                // +OK, -NOREPL (a server that does not replicate: the writes cannot come),
                // or a server that does not know the command: nothing to wait for.
                Ok(_) => {}
                Err(e) => {
                    self.mark_down(idx, Unavailable::Unreachable(e.to_string()), true);
                    return Ok(false);
                }
            }
        }
        self.tokens.unsettled = false;
        Ok(true)
    }

    fn record_move(&mut self, from: usize, to: usize, epoch: u64, failback: bool) {
        if from == to {
            self.events.push(Event::Reconnected {
                server: self.addr(to).to_owned(),
            });
            return;
        }
        self.switches += 1;
        let (from, to) = (self.addr(from).to_owned(), self.addr(to).to_owned());
        self.events.push(if failback {
            Event::FailedBack { from, to, epoch }
        } else {
            Event::Switched { from, to, epoch }
        });
    }

    /// Connects to the first usable server of `order`: its index and epoch, or
    /// [`Error::NoServer`] listing every server in list order.
    fn select(&mut self, order: Vec<usize>) -> Result<(usize, u64)> {
        let mut failures = Vec::with_capacity(order.len());
        for i in order {
            match self.open_usable(i) {
                Ok((conn, info)) => {
                    self.activate(i, conn);
                    return Ok((i, info.epoch));
                }
                Err(u) => failures.push((i, u)),
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        Err(Error::NoServer {
            servers: failures
                .into_iter()
                .map(|(i, u)| (self.addr(i).to_owned(), u))
                .collect(),
        })
    }

    /// Stops using server `idx`; `retry_same`: a switch tries it again first.
    fn mark_down(&mut self, idx: usize, reason: Unavailable, retry_same: bool) {
        self.active = None;
        self.events.push(Event::Down {
            server: self.addr(idx).to_owned(),
            reason: reason.clone(),
        });
        self.down = Some((idx, reason, retry_same));
    }

    /// Moves from the down server to the next usable one.
    fn failover(&mut self, same_first: bool) -> Result<()> {
        let (from, same_first) = match (&self.active, &self.down) {
            (Some(a), _) => (a.idx, same_first),
            (None, Some((i, _, retry))) => (*i, same_first && *retry),
            (None, None) => (0, true),
        };
        let (to, epoch) = self.select(self.rotation(from, same_first))?;
        self.record_move(from, to, epoch, false);
        Ok(())
    }

    /// Makes sure a usable server is connected (switching in automatic mode, or failing with
    /// [`Error::ServerDown`] in manual mode), polling its state when due. Returns its index.
    fn ready(&mut self) -> Result<usize> {
        // Each pass either returns or marks a server down; a few passes bound flapping.
        let n = self.cfg.servers.len();
        for _ in 0..=2 * n + 1 {
            if self.active.is_none() {
                match (&self.down, self.cfg.switch_mode) {
                    (Some((i, reason, _)), SwitchMode::Manual) => {
                        return Err(Error::ServerDown {
                            server: self.addr(*i).to_owned(),
                            reason: reason.clone(),
                        })
                    }
                    _ => self.failover(true)?,
                }
            }
            let Some(a) = self.active.as_mut() else {
                continue;
            };
            let idx = a.idx;
            if a.conn.is_closed() {
                // Closed while idle (idle timeout, restart): nothing was in flight, so a
                // fresh connection to the same server is fine if it is still usable.
                self.active = None;
                match self.open_usable(idx) {
                    Ok((conn, _)) => {
                        self.activate(idx, conn);
                        self.events.push(Event::Reconnected {
                            server: self.addr(idx).to_owned(),
                        });
                    }
                    Err(u) => {
                        let u = match u {
                            Unavailable::Unreachable(why) => Unavailable::Unreachable(format!(
                                "it closed the connection and reconnecting failed: {why}"
                            )),
                            u => u,
                        };
                        self.mark_down(idx, u, false);
                        continue;
                    }
                }
            }
            let Some(a) = self.active.as_mut() else {
                continue;
            };
            if a.last_poll.elapsed() < self.cfg.poll_interval {
                return Ok(idx);
            }
            let polled = match a.conn.call(&[b"DUPLEX.STATE"]) {
                Err(e) => Err(Unavailable::Unreachable(e.to_string())),
                Ok(Reply::Error(m)) => Err(Unavailable::BadReply(format!("DUPLEX.STATE: {m}"))),
                Ok(r) => StateInfo::from_reply(&r).map_err(Unavailable::BadReply),
            };
            a.last_poll = Instant::now();
            match polled.and_then(|info| self.judge(idx, &info)) {
                Err(u) => {
                    let retry = matches!(u, Unavailable::Unreachable(_));
                    self.mark_down(idx, u, retry);
                    continue;
                }
                Ok(()) => {
                    if self.cfg.switch_mode == SwitchMode::Automatic && self.cfg.failback {
                        self.try_failback(idx);
                    }
                    return Ok(self.current_index().unwrap_or(idx));
                }
            }
        }
        let (server, reason) = match &self.down {
            Some((i, u, _)) => (self.addr(*i).to_owned(), u.clone()),
            None => (
                self.addr(0).to_owned(),
                Unavailable::Unreachable("servers keep changing state".into()),
            ),
        };
        Err(Error::ServerDown { server, reason })
    }

    /// Moves to the most preferred usable server before `cur`, if any.
    fn try_failback(&mut self, cur: usize) {
        for j in 0..cur {
            if let Ok((conn, info)) = self.open_usable(j) {
                self.activate(j, conn);
                self.record_move(cur, j, info.epoch, true);
                return;
            }
        }
    }
}

/// `[name, parts...]`.
fn with_name<'a>(name: &'a [u8], parts: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    std::iter::once(name).chain(parts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("GET", &[b"GET", b"k"]), (false, true));
        assert_eq!(classify("SET", &[b"SET", b"k", b"v"]), (true, false));
        assert_eq!(classify("SCAN", &[b"SCAN", b"0"]), (false, true));
        assert_eq!(classify("SCAN", &[b"SCAN", b"17"]), (false, false));
        assert_eq!(classify("FLUSHALL", &[b"FLUSHALL"]), (true, false));
        assert!(is_refusal("FENCED this server is fenced"));
        assert!(is_refusal("LOADING this server is starting"));
        assert!(is_refusal("FAILED x"));
        assert!(is_refusal("NORESOURCE out of disk space"));
        assert!(!is_refusal("NOARCHIVE the archive failed"));
        assert!(!is_refusal("IOERR write outcome unknown"));
        assert!(!is_refusal("FENCEDX"));
    }

    #[test]
    fn no_server_at_all() {
        // Port 1 on loopback: nothing listens there in a test environment.
        let e = Client::connect(
            ClientConfig::new(["127.0.0.1:1"])
                .connect_timeout(std::time::Duration::from_millis(200)),
        )
        .unwrap_err();
        assert!(matches!(e, Error::NoServer { .. }), "{e}");
        assert!(
            e.to_string().contains("127.0.0.1:1 (default) unreachable"),
            "{e}"
        );
    }
}
