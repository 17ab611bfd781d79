//! The optional parts of the fault model ([`super::Model`]), each with the invariant it
//! checks as it goes:
//! - **clock skew**: a node's clock set off by up to 200 ms either way (any two within the
//!   500 ms `max_clock_offset_ms`: never refused) or 600-1500 ms ahead (beyond it: its
//!   batches and heartbeats are refused, `LinkError::ClockSkew`, and wait until the clocks
//!   agree); all clocks are put right when the load stops. A clock-skew refusal while no
//!   clock was ever beyond the bound fails the seed; nothing may be lost (the end checks).
//! - **clients that switch servers with a session token**: after a write on one server a
//!   client moves to another and, as `DUPLEX.WAIT` does, waits there until that server's
//!   mark of the first one reaches its token, then reads its key: it must see its write or
//!   a later version (read-your-writes across the switch). A wait longer than 2 s is the
//!   client's `OwnWritesNotVisible` (counted, allowed: its first server may be down).
//! - **I/O errors other than power loss**: EIO on a WAL write or fsync (the log is
//!   poisoned: every later write on that node must fail, nothing acknowledged after it;
//!   the operator power-cycles the node) and a full disk (`ENOSPC`: refused, not applied;
//!   the operator frees space). What was acknowledged before survives (the end checks).
//! - **memory bounds**, every tick: the backlog and each origin's forwarding memory within
//!   `replication_backlog_bytes`, the conflict journal within its entries (recorded = held
//!   + dropped).

use duplex_engine::{split_position, Stamp};
use duplex_wal::Clock;

use super::world::{World, MAX_OFFSET_MS, NODES, TICK_MS};

/// An I/O fault armed on a node's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoFault {
    /// A WAL write or fsync fails with EIO (a reboot disarms it).
    Eio,
    /// The file system is full.
    NoSpace,
}

/// A client that wrote on one server and switched to another.
#[derive(Debug, Clone)]
pub struct Session {
    /// The server it switched to.
    pub to: usize,
    /// The server it wrote on (its node id) and its session token there.
    pub origin: u64,
    pub token: u64,
    /// The key it wrote last and that write's stamp.
    pub key: Vec<u8>,
    pub stamp: Stamp,
    /// The tick its wait gives up.
    pub deadline: u64,
    /// Whether a read at the switch, without the token, would have missed the write.
    pub behind_at_switch: bool,
}

impl World {
    /// Sets every node's clock to the simulated time plus its skew.
    pub fn set_clocks(&mut self) {
        let now = self.clock.now_ms();
        for n in &self.nodes {
            n.clock.set(now.saturating_add_signed(n.skew_ms));
        }
    }

    /// Skews one clock now and then (model `skew`); puts every clock right once `calm`.
    pub fn skew_clocks(&mut self, calm: bool) {
        if !self.model.skew {
            return;
        }
        if calm {
            if self.nodes.iter().any(|n| n.skew_ms != 0) {
                for n in &mut self.nodes {
                    n.skew_ms = 0;
                }
                self.set_clocks();
                self.fault("clocks put right");
            }
            return;
        }
        if !self.frng.chance(3) {
            return;
        }
        let n = self.frng.below(NODES as u64) as usize;
        let kind = self.frng.below(10);
        let skew = if kind < 6 {
            self.fault("clock skewed within the bound");
            self.frng.below(401) as i64 - 200
        } else if kind < 8 {
            self.ever_beyond = true;
            self.fault("clock skewed beyond the bound");
            (MAX_OFFSET_MS + 100 + self.frng.below(900)) as i64
        } else {
            0
        };
        self.nodes[n].skew_ms = skew;
        self.note(skew as u64);
        self.set_clocks();
    }

    /// Arms an EIO or fills a disk now and then (model `io_errors`).
    pub fn io_faults(&mut self, calm: bool) {
        if calm || !self.model.io_errors || !self.frng.chance(2) {
            return;
        }
        let n = self.frng.below(NODES as u64) as usize;
        if self.nodes[n].db.is_none() || self.nodes[n].io.is_some() {
            return;
        }
        let until = self.tick + 20 + self.frng.below(60);
        let kind = match self.frng.below(3) {
            0 => {
                self.nodes[n].sim.fail_sync_after(1 + self.frng.below(4));
                self.fault("EIO on fsync armed");
                IoFault::Eio
            }
            1 => {
                self.nodes[n].sim.fail_write_after(1 + self.frng.below(8));
                self.fault("EIO on write armed");
                IoFault::Eio
            }
            _ => {
                self.nodes[n]
                    .sim
                    .set_free_space(Some(self.frng.below(32 << 10)));
                self.fault("disk full (ENOSPC)");
                IoFault::NoSpace
            }
        };
        // A full disk stays full long enough for the log to need its next segment (the
        // current one is preallocated: writes into it go on).
        let until = match kind {
            IoFault::Eio => until,
            IoFault::NoSpace => until + 200 + self.frng.below(300),
        };
        self.nodes[n].io = Some((kind, until));
    }

    /// A client write on node `n` failed: a fatal error poisons its log (nothing more may
    /// be acknowledged there until it restarts); a refusal for want of space is not fatal.
    pub fn write_failed(&mut self, n: usize, e: &duplex_engine::Error) {
        let armed = self.nodes[n].io.map(|(k, _)| k);
        assert!(
            armed.is_some() || self.nodes[n].poisoned_at.is_some(),
            "node {} refused a write with no I/O fault armed: {e}",
            n + 1
        );
        if e.is_fatal() {
            if self.nodes[n].poisoned_at.is_none() {
                self.nodes[n].poisoned_at = Some(self.tick);
                self.fault("log poisoned by an I/O error");
            }
        } else if e.is_resource() {
            self.fault("write refused for want of space");
        } else {
            self.fault("write failed (other)");
        }
    }

    /// The operator: once an I/O fault's time is up, frees the space or power-cycles the
    /// node (an EIO, whether or not it struck: only a reboot disarms it).
    pub fn operator(&mut self) {
        for n in 0..NODES {
            let Some((kind, until)) = self.nodes[n].io else {
                continue;
            };
            if self.tick < until {
                continue;
            }
            match kind {
                IoFault::NoSpace => {
                    self.nodes[n].sim.give_back();
                    self.nodes[n].io = None;
                    self.fault("space freed");
                }
                IoFault::Eio => {
                    self.nodes[n].io = None;
                    if let Some(db) = self.nodes[n].db.take() {
                        let seed = self.frng.next();
                        self.power_cycle(n, db, seed, 10);
                        self.fault("restarted after an I/O error");
                    }
                }
            }
        }
    }

    /// Maybe (model `sessions`) the client that just wrote `key` (stamped `stamp`) on
    /// node `n` switches to another server, with its session token.
    pub fn maybe_switch(&mut self, n: usize, key: Vec<u8>, stamp: Stamp) {
        if !self.model.sessions || !self.frng.chance(100) {
            return;
        }
        let to = (n + 1 + self.frng.below(NODES as u64 - 1) as usize) % NODES;
        let (Some(from), Some(there)) = (self.nodes[n].db.as_ref(), self.nodes[to].db.as_ref())
        else {
            return;
        };
        let token = from.last_local_position();
        let origin = from.node_id();
        let behind_at_switch = there.origin_hwm(origin) < token;
        self.sessions.push(Session {
            to,
            origin,
            token,
            key,
            stamp,
            deadline: self.tick + 2000 / TICK_MS,
            behind_at_switch,
        });
        self.fault("client switched servers");
    }

    /// Advances the waiting sessions: a session whose server's mark reached its token
    /// reads its key there and must see its own write (or a later version).
    pub fn sessions_step(&mut self) {
        let sessions = std::mem::take(&mut self.sessions);
        for s in sessions {
            let Some(db) = self.nodes[s.to].db.as_ref() else {
                self.fault("session's server went down (the client switches again)");
                continue;
            };
            let origin_inc = self.nodes[s.origin as usize - 1]
                .db
                .as_ref()
                .map(duplex_engine::Database::incarnation);
            let lost = !self
                .acked
                .get(&s.key)
                .is_some_and(|v| v.iter().any(|(st, _)| *st == s.stamp));
            if lost
                || self.stranded.contains(&s.to)
                || origin_inc.is_some_and(|i| split_position(s.token).0 < i)
            {
                // Its write was lost with a disk, or its server was rebuilt since, or the
                // server it moved to is stranded: not a read-your-writes case any more.
                self.fault("session dropped (its write or server was rebuilt)");
                continue;
            }
            if db.origin_hwm(s.origin) >= s.token {
                let got = db.version(&s.key).expect("version");
                let seen = got.map(|v| v.stamp);
                assert!(
                    seen.is_some_and(|v| (v.ts, v.origin) >= (s.stamp.ts, s.stamp.origin)),
                    "read-your-writes broken: node {} reached the token {} of node {} but holds {seen:?} of {}, older than the client's write {:?}",
                    s.to + 1,
                    s.token,
                    s.origin,
                    String::from_utf8_lossy(&s.key),
                    s.stamp
                );
                self.fault("session read its own write after the switch");
                if s.behind_at_switch {
                    self.fault("... which a read without the token would have missed");
                }
            } else if self.tick > s.deadline {
                self.fault("session token wait timed out (OwnWritesNotVisible)");
            } else {
                self.sessions.push(s);
            }
        }
    }

    /// Memory stays within its bounds on every live node.
    pub fn check_memory(&mut self) {
        for n in &self.nodes {
            let Some(db) = n.db.as_ref() else {
                continue;
            };
            let m = db.repl_memory();
            assert!(
                m.backlog_bytes <= m.cap_bytes
                    && m.forward_bytes_max <= m.cap_bytes
                    && m.forward_origins < NODES
                    && m.conflicts_held <= m.conflicts_cap
                    && m.conflicts_recorded == m.conflicts_held as u64 + m.conflicts_dropped,
                "node {}: replication memory out of its bounds: {m:?}",
                n.id
            );
        }
    }
}
