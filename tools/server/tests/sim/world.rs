//! The simulated cluster: servers on simulated disks, links over a simulated network, the
//! seeded generator, client writes, faults and the step that advances time.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use duplex_engine::{Config, Database, Stamp, SyncPolicy};
use duplex_proto::peer::{decode_frame, Decoded, Frame, FrameLimits};
use duplex_server::net::peer::link::{LinkError, Receiver, SendLimits, Sender};

use super::faults::{IoFault, Session};
use super::Model;
use duplex_wal::sim::{CrashMode, SimStorage};
use duplex_wal::{Clock, ManualClock, Storage};

pub const NODES: usize = 3;

/// A version written with an unknown outcome: its origin and value (`None`: a delete).
pub type UnknownVersion = (u64, Option<Vec<u8>>);

/// A version acknowledged to a client: its stamp and value (`None`: a delete).
pub type AckedVersion = (Stamp, Option<Vec<u8>>);
pub const TICK_MS: u64 = 10;
pub const DB_DIR: &str = "/db";
/// Where a node archives its WAL segments when the model has an archive (on the same
/// simulated disk: a destroyed disk takes it too).
pub const ARCHIVE_DIR: &str = "/archive";

/// A seeded generator (SplitMix64): the only source of randomness.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// One server: its storage survives crashes, its database does not.
pub struct Node {
    pub id: u64,
    pub sim: SimStorage,
    pub db: Option<Database>,
    /// Ticks until a crashed server restarts.
    pub down_for: u64,
    /// Its own clock: the simulated time plus its skew.
    pub clock: Arc<ManualClock>,
    /// How far its clock is off (ms; 0 unless the model skews clocks).
    pub skew_ms: i64,
    /// An I/O fault armed on its disk, and the tick the operator deals with it.
    pub io: Option<(IoFault, u64)>,
    /// The tick a write failed fatally on it (the log is poisoned: nothing more may be
    /// acknowledged until it restarts).
    pub poisoned_at: Option<u64>,
}

/// One direction of a connection: frames in flight with their delivery tick.
#[derive(Default)]
pub struct Pipe {
    pub queue: VecDeque<(u64, Vec<u8>)>,
}

/// The link from `from` to `to` (sender on `from`, receiver on `to`).
pub struct Link {
    pub from: usize,
    pub to: usize,
    pub conn: Option<(Sender, Receiver)>,
    pub fwd: Pipe,
    pub back: Pipe,
    /// Ticks before a reconnect is tried.
    pub backoff: u64,
    /// The last data frame sent on the previous connection (replayed once on the next).
    pub last_frame: Option<Vec<u8>>,
    /// The last error that reset it.
    pub last_error: String,
    /// The position of `from` that `to` last acknowledged (kept across connections).
    pub acked: u64,
    /// The batches (origin, count) of an apply on `to` that failed, outcome unknown.
    pub unknown: Option<(u64, u64)>,
}

pub struct World {
    pub rng: Rng,
    pub clock: Arc<ManualClock>,
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
    /// Backups taken for rebuilds (names them).
    pub tick_backups: u64,
    /// Pairs that cannot talk (either direction).
    pub partitioned: Vec<(usize, usize)>,
    pub tick: u64,
    /// Acknowledged versions per key: (stamp, value; None for a delete).
    pub acked: BTreeMap<Vec<u8>, Vec<AckedVersion>>,
    /// A trace of what happened, for the same-seed check.
    pub trace: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// The stamps of the batches each origin's clients had acknowledged (one per write).
    pub written: BTreeMap<u64, Vec<u64>>,
    /// Nodes rebuilt from a peer after a destroyed disk (their applied counts restart).
    pub rebuilt: std::collections::BTreeSet<u64>,
    /// Nodes that said they are stranded (needs-rebuild: below a rebuilt origin's base,
    /// and no other member holds the rest): clients leave them, and once every batch of
    /// their own is acknowledged by both peers the operator rebuilds them from a peer.
    pub stranded: std::collections::BTreeSet<usize>,
    /// Acknowledged batches lost with a destroyed disk (never applied by any survivor).
    pub lost: u64,
    /// Which parts of the fault model this run uses.
    pub model: Model,
    /// The generator of the optional parts of the fault model (clock skew, sessions, I/O
    /// errors), so the main stream, and the seeds found with it, stay as they were when
    /// those parts are off.
    pub frng: Rng,
    /// Whether a clock was ever set beyond `max_clock_offset_ms` (a clock-skew refusal
    /// before that is a bug).
    pub ever_beyond: bool,
    /// Client writes whose outcome is unknown (a fatal I/O error), per origin: they may
    /// have survived the restart and been sent on.
    pub unknown_writes: BTreeMap<u64, u64>,
    /// Their versions per key: (origin, value; None for a delete).
    pub unknown_versions: BTreeMap<Vec<u8>, Vec<UnknownVersion>>,
    /// Batches of each origin an apply that failed (outcome unknown) carried, per
    /// (node, origin): logged perhaps, never counted in `applied`.
    pub unknown_applies: BTreeMap<(u64, u64), u64>,
    /// Clients that switched servers and wait (with their session token) to read their
    /// own last write there.
    pub sessions: Vec<Session>,
    /// Batches a node never applies because it gets them as taken-back copies instead
    /// (the lost server's earlier batches it lacked): (node, origin) -> count.
    pub exempt: BTreeMap<(u64, u64), u64>,
    /// Batches of a rebuilt origin given back to it (each becomes a copy everyone applies).
    pub given: BTreeMap<u64, u64>,
    /// Batches of each origin each node applied (harvested from `Database::origins`
    /// before every crash and at the end): (node, origin) -> count.
    pub applied: BTreeMap<(u64, u64), u64>,
    /// What the harness read of the conflict journals.
    pub journal: super::journal::Journal,
    pub limits: FrameLimits,
}

/// The configuration of node `id` under `model` (small memory bounds, an archive).
pub fn cfg(id: u64, clock: &Arc<ManualClock>, model: Model) -> Config {
    let small = model.small_memory;
    Config {
        archive_dir: model.archive.then(|| std::path::PathBuf::from(ARCHIVE_DIR)),
        node_id: id,
        sync: SyncPolicy::Always,
        background: false,
        scrub_bytes_per_sec: 0,
        segment_size: 64 << 10,
        checkpoint_wal_bytes: 16 << 10,
        replication_backlog_bytes: if small { 64 << 10 } else { 4 << 20 },
        // Small: its bound is hit (what it drops is counted); otherwise large enough that
        // the harness, reading it every tick, sees every entry (the accounting is exact).
        conflict_journal_entries: if small { 16 } else { 4096 },
        max_clock_offset_ms: MAX_OFFSET_MS,
        clock: clock.clone(),
        ..Config::default()
    }
}

pub fn open(sim: &SimStorage, id: u64, clock: &Arc<ManualClock>, model: Model) -> Database {
    let s: Arc<dyn Storage> = Arc::new(sim.clone());
    Database::open_with(s, DB_DIR, cfg(id, clock, model))
        .unwrap_or_else(|e| panic!("node {id} open: {e}"))
}

/// `max_clock_offset_ms` of every node.
pub const MAX_OFFSET_MS: u64 = 500;

pub fn send_limits() -> SendLimits {
    SendLimits {
        frame: FrameLimits::default(),
        max_batches_per_frame: 64,
        frame_bytes: 64 << 10,
        window_bytes: 256 << 10,
        heartbeat_ms: 50,
        forward_after_ms: 1000,
    }
}

impl World {
    pub fn new(seed: u64, model: Model) -> World {
        let clock = Arc::new(ManualClock::new(1_750_000_000_000));
        let nodes = (0..NODES)
            .map(|i| {
                let sim = SimStorage::new();
                let own = Arc::new(ManualClock::new(clock.now_ms()));
                let db = open(&sim, i as u64 + 1, &own, model);
                Node {
                    id: i as u64 + 1,
                    sim,
                    db: Some(db),
                    down_for: 0,
                    clock: own,
                    skew_ms: 0,
                    io: None,
                    poisoned_at: None,
                }
            })
            .collect();
        let mut links = Vec::new();
        for from in 0..NODES {
            for to in 0..NODES {
                if from != to {
                    links.push(Link {
                        from,
                        to,
                        conn: None,
                        fwd: Pipe::default(),
                        back: Pipe::default(),
                        backoff: 0,
                        last_frame: None,
                        last_error: String::new(),
                        acked: 0,
                        unknown: None,
                    });
                }
            }
        }
        World {
            rng: Rng(seed),
            clock,
            nodes,
            links,
            partitioned: Vec::new(),
            tick_backups: 0,
            tick: 0,
            acked: BTreeMap::new(),
            trace: seed,
            faults: BTreeMap::new(),
            written: BTreeMap::new(),
            rebuilt: std::collections::BTreeSet::new(),
            stranded: std::collections::BTreeSet::new(),
            lost: 0,
            model,
            frng: Rng(seed ^ 0x005e_ed0f_fa17),
            ever_beyond: false,
            unknown_writes: BTreeMap::new(),
            unknown_versions: BTreeMap::new(),
            unknown_applies: BTreeMap::new(),
            sessions: Vec::new(),
            exempt: BTreeMap::new(),
            given: BTreeMap::new(),
            applied: BTreeMap::new(),
            journal: super::journal::Journal::default(),
            limits: FrameLimits::default(),
        }
    }

    pub fn note(&mut self, v: u64) {
        self.trace = self.trace.rotate_left(7) ^ v.wrapping_mul(0x100_0000_01b3);
    }

    pub fn fault(&mut self, what: &'static str) {
        if std::env::var("DUPLEX_SIM_DEBUG").is_ok() {
            eprintln!("tick {}: {what}", self.tick);
        }
        *self.faults.entry(what).or_default() += 1;
    }

    pub fn cut(&self, a: usize, b: usize) -> bool {
        self.partitioned.contains(&(a.min(b), a.max(b)))
    }

    /// A client write on a random live server: a put, a delete or a batch.
    pub fn client_write(&mut self) {
        let n = self.rng.below(NODES as u64) as usize;
        let Some(db) = self.nodes[n]
            .db
            .as_ref()
            .filter(|_| !self.stranded.contains(&n))
        else {
            return;
        };
        let key = format!("k{:03}", self.rng.below(120)).into_bytes();
        let kind = self.rng.below(10);
        let value = format!("n{}-t{}-{}", n + 1, self.tick, self.rng.below(1000)).into_bytes();
        // What the write tries: (key, value; None for a delete).
        let mut attempt = vec![(key.clone(), (kind != 0).then(|| value.clone()))];
        // What the writer had applied of every other origin (its marks).
        let seen: BTreeMap<u64, u64> = db.origins().iter().map(|(o, s)| (*o, s.hwm)).collect();
        let res = if kind == 0 {
            db.delete(&key).map(|_| None)
        } else if kind == 1 {
            let key2 = format!("k{:03}", self.rng.below(120)).into_bytes();
            attempt.push((key2.clone(), Some(value.clone())));
            let mut b = duplex_engine::WriteBatch::new();
            b.put(key.clone(), value.clone())
                .put(key2.clone(), value.clone());
            db.write(b).map(|_| Some(Some(key2)))
        } else {
            db.put(&key, &value).map(|_| None)
        };
        let extra = match res {
            Ok(extra) => extra,
            Err(e) => {
                if e.outcome_unknown() {
                    // Not acknowledged, but its bytes may survive the restart: it may or
                    // may not exist, anywhere (and win where it does).
                    *self.unknown_writes.entry(n as u64 + 1).or_default() += 1;
                    for (k, v) in attempt {
                        self.unknown_versions
                            .entry(k)
                            .or_default()
                            .push((n as u64 + 1, v));
                    }
                }
                self.write_failed(n, &e);
                return;
            }
        };
        assert!(
            self.nodes[n].poisoned_at.is_none(),
            "node {} acknowledged a write after its log was poisoned at tick {:?}",
            n + 1,
            self.nodes[n].poisoned_at
        );
        let batch_ts = db
            .version(&key)
            .expect("version")
            .map_or(0, |v| v.stamp.ts.0);
        self.written.entry(n as u64 + 1).or_default().push(batch_ts);
        let mut keys = vec![key];
        if let Some(Some(k2)) = extra {
            keys.push(k2);
        }
        let versions: Vec<_> = keys
            .into_iter()
            .map(|k| {
                let v = db.version(&k).expect("version").expect("just written");
                (k, v)
            })
            .collect();
        let last = versions.first().map(|(k, v)| (k.clone(), v.stamp));
        if let Some((_, stamp)) = &last {
            self.journal.wrote(*stamp, db.last_local_position(), seen);
        }
        for (k, v) in versions {
            self.note(v.stamp.ts.0 ^ v.stamp.origin);
            self.acked.entry(k).or_default().push((v.stamp, v.value));
        }
        if let Some((key, stamp)) = last {
            self.maybe_switch(n, key, stamp);
        }
    }

    pub fn reset(&mut self, li: usize, why: &'static str) {
        let l = &mut self.links[li];
        if l.conn.is_some() {
            l.conn = None;
            l.fwd.queue.clear();
            l.back.queue.clear();
            l.backoff = 5 + self.rng.below(20);
            self.fault(why);
        }
    }

    /// Connects idle links whose ends are up and not partitioned.
    pub fn connect(&mut self, li: usize) {
        let (from, to) = (self.links[li].from, self.links[li].to);
        if self.links[li].conn.is_some() || self.cut(from, to) {
            return;
        }
        if self.links[li].backoff > 0 {
            self.links[li].backoff -= 1;
            return;
        }
        let (Some(a), Some(b)) = (self.nodes[from].db.as_ref(), self.nodes[to].db.as_ref()) else {
            return;
        };
        b.note_origin_incarnation(a.node_id(), a.incarnation());
        let mut s = Sender::new(a.node_id(), send_limits()).to_peer(b.node_id());
        let (r, first) = Receiver::open(b, a.node_id());
        let mut opening = vec![first];
        opening.extend(Receiver::other_marks(b, a.node_id()));
        for f in &opening {
            s.on_frame(f).expect("opening frames");
        }
        let replay = self.links[li].last_frame.take();
        let l = &mut self.links[li];
        l.conn = Some((s, r));
        // A frame of the previous connection arrives again on the new one (a duplicate).
        if let Some(bytes) = replay.filter(|_| self.rng.chance(300)) {
            l.fwd.queue.push_back((self.tick, bytes));
            *self.faults.entry("duplicate on reconnect").or_default() += 1;
        }
    }

    /// One link's step: the sender polls, due frames are delivered both ways.
    pub fn step_link(&mut self, li: usize, delay: u64) {
        if self.links[li].conn.is_none() {
            return;
        }
        if let Err((why, detail)) = self.exchange(li, delay) {
            self.note(why.len() as u64);
            assert!(
                why != "clock skew refused" || self.ever_beyond,
                "a link was refused for clock skew though no clock was ever set beyond {MAX_OFFSET_MS} ms: {detail}"
            );
            self.links[li].last_error = detail;
            if let Some((origin, n)) = self.links[li].unknown.take() {
                let to = self.links[li].to as u64 + 1;
                *self.unknown_applies.entry((to, origin)).or_default() += n;
            }
            self.reset(li, why);
        }
    }

    pub fn exchange(&mut self, li: usize, delay: u64) -> Result<(), (&'static str, String)> {
        let (from, to) = (self.links[li].from, self.links[li].to);
        // Each end on its own clock.
        let (now, now_b) = (
            self.nodes[from].clock.now_ms(),
            self.nodes[to].clock.now_ms(),
        );
        let (tick, limits) = (self.tick, self.limits);
        let (Some(a), Some(b)) = (self.nodes[from].db.as_ref(), self.nodes[to].db.as_ref()) else {
            return Err(("end down", String::new()));
        };
        let link = &mut self.links[li];
        let Some((s, r)) = link.conn.as_mut() else {
            return Ok(());
        };
        let frames = s
            .poll(a, now)
            .map_err(|e| ("sender error", e.to_string()))?;
        for f in &frames {
            let bytes = f.to_bytes(&limits).expect("encode");
            if matches!(f, Frame::Batches(_)) {
                link.last_frame = Some(bytes.clone());
            }
            link.fwd.queue.push_back((tick + delay, bytes));
        }
        // Deliver to the receiver what is due, in order, and its replies back.
        while link.fwd.queue.front().is_some_and(|(t, _)| *t <= tick) {
            let Some((_, bytes)) = link.fwd.queue.pop_front() else {
                break;
            };
            let frame = decode(&bytes, &limits);
            let replies = r.on_frame(&frame, b, now_b).map_err(|e| match e {
                LinkError::ClockSkew(m) => ("clock skew refused", m),
                LinkError::Local(m) => {
                    // A local failure mid-apply: the batches' outcome is unknown.
                    if let Frame::Batches(f) = &frame {
                        link.unknown = Some((f.origin, f.batches.len() as u64));
                    }
                    ("apply failed (outcome unknown)", m)
                }
                other => ("receiver error", other.to_string()),
            })?;
            for rep in replies {
                link.back
                    .queue
                    .push_back((tick + delay, rep.to_bytes(&limits).expect("encode")));
            }
        }
        while link.back.queue.front().is_some_and(|(t, _)| *t <= tick) {
            let Some((_, bytes)) = link.back.queue.pop_front() else {
                break;
            };
            s.on_frame(&decode(&bytes, &limits))
                .map_err(|e| ("sender error", e.to_string()))?;
        }
        link.acked = link.acked.max(s.progress(now).acked);
        Ok(())
    }

    /// Faults of this tick (none once `calm`).
    pub fn inject(&mut self, calm: bool) {
        if calm {
            return;
        }
        if self.rng.chance(4) {
            let li = self.rng.below(self.links.len() as u64) as usize;
            self.reset(li, "connection dropped");
        }
        if self.rng.chance(2) && self.partitioned.is_empty() {
            let a = self.rng.below(NODES as u64) as usize;
            let b = (a + 1 + self.rng.below(NODES as u64 - 1) as usize) % NODES;
            self.partitioned.push((a.min(b), a.max(b)));
            for li in 0..self.links.len() {
                if self.cut(self.links[li].from, self.links[li].to) {
                    self.reset(li, "partitioned");
                }
            }
            self.fault("partition");
        } else if self.rng.chance(8) && !self.partitioned.is_empty() {
            self.partitioned.clear();
            self.fault("heal");
        }
        if self.model.destroy
            && self.rng.chance(1)
            && self.rebuilt.is_empty()
            && self.nodes.iter().all(|n| n.db.is_some() && n.io.is_none())
        {
            let n = self.rng.below(NODES as u64) as usize;
            self.destroy_and_rebuild(n);
        }
        if self.rng.chance(2) {
            let n = self.rng.below(NODES as u64) as usize;
            if let Some(db) = self.nodes[n].db.take() {
                // Half the crashes come right after a checkpoint: the log after it is
                // short, and the marks must come from the checkpoint itself.
                if self.rng.chance(500) {
                    if let Err(e) = db.checkpoint() {
                        assert!(self.nodes[n].io.is_some(), "checkpoint: {e}");
                    }
                }
                let seed = self.rng.next();
                let down = 10 + self.rng.below(50);
                self.power_cycle(n, db, seed, down);
                self.fault("power loss");
            }
        }
    }

    pub fn restarts(&mut self) {
        for n in 0..NODES {
            let node = &mut self.nodes[n];
            if node.db.is_none() {
                if node.down_for > 0 {
                    node.down_for -= 1;
                } else {
                    node.db = Some(open(&node.sim, node.id, &node.clock, self.model));
                }
            }
        }
    }

    pub fn step(&mut self, writes: bool, calm: bool) {
        self.tick += 1;
        self.clock.advance(TICK_MS);
        self.set_clocks();
        self.inject(calm);
        self.skew_clocks(calm);
        self.io_faults(calm);
        self.operator();
        self.restarts();
        if writes {
            for _ in 0..self.rng.below(4) {
                self.client_write();
            }
        }
        for li in 0..self.links.len() {
            self.connect(li);
            let delay = if calm { 0 } else { self.rng.below(4) };
            self.step_link(li, delay);
        }
        // As the server does: checkpoints keep the WAL the peers still need (this node's
        // batches they did not acknowledge, other origins' batches after their marks).
        for n in 0..NODES {
            let floor = self
                .links
                .iter()
                .filter(|l| l.from == n)
                .map(|l| l.acked)
                .min();
            if let Some(db) = self.nodes[n].db.as_ref() {
                db.set_peer_floor(floor);
                let floors: Vec<(u64, u64)> = db
                    .origins()
                    .keys()
                    .filter_map(|&o| {
                        self.links
                            .iter()
                            .filter(|l| l.from == n && l.to as u64 + 1 != o)
                            .map(|l| {
                                l.conn
                                    .as_ref()
                                    .and_then(|(s, _)| s.peer_marks().get(&o).copied())
                                    .unwrap_or(0)
                            })
                            .min()
                            .map(|m| (o, m))
                    })
                    .collect();
                db.set_forward_floors(floors);
            }
        }
        self.stranded_nodes();
        self.read_journals();
        if let Some(n) = std::env::var("DUPLEX_SIM_DEBUG")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        {
            let sim = &self.nodes[n - 1].sim;
            let mut files = sim
                .list(std::path::Path::new(DB_DIR).join("wal").as_path())
                .unwrap_or_default();
            for sub in sim
                .list(std::path::Path::new(ARCHIVE_DIR))
                .unwrap_or_default()
            {
                let p = std::path::Path::new(ARCHIVE_DIR).join(&sub);
                files.extend(sim.list(&p).unwrap_or_default().into_iter().map(|f| {
                    format!(
                        "A/{sub}/{f}:{}",
                        sim.contents(&p.join(&f)).map_or(0, |c| c.len())
                    )
                }));
            }
            let status = self.nodes[n - 1].db.as_ref().map(|d| {
                let a = d.wal().archive_status();
                (a.archived_lsn, a.durable_lsn, a.last_error)
            });
            eprintln!("tick {} node {n}: {files:?} {status:?}", self.tick);
        }
        self.sessions_step();
        self.check_memory();
        if self.tick.is_multiple_of(50) {
            for n in 0..NODES {
                if let Some(db) = self.nodes[n].db.as_ref() {
                    if let Err(e) = db.run_maintenance() {
                        assert!(self.nodes[n].io.is_some(), "maintenance: {e}");
                        self.fault("maintenance failed (I/O fault)");
                    }
                }
            }
        }
    }

    /// Power loss of node `n` (its database `db` taken out): what it applied is harvested,
    /// its disk keeps what was synced and a torn prefix of the rest (seeded by `seed`), an
    /// armed EIO is gone with the reboot, and it restarts `down` ticks later.
    pub fn power_cycle(&mut self, n: usize, db: Database, seed: u64, down: u64) {
        self.harvest(n as u64 + 1, &db);
        drop(db);
        self.nodes[n].sim.crash(CrashMode::Torn { seed });
        self.nodes[n].down_for = down;
        self.nodes[n].poisoned_at = None;
        if matches!(self.nodes[n].io, Some((IoFault::Eio, _))) {
            self.nodes[n].io = None;
        }
    }

    /// Adds what `db` (node `node`) applied of each origin since it opened.
    pub fn harvest(&mut self, node: u64, db: &Database) {
        self.journal.close(node, db);
        for (o, st) in db.origins() {
            *self.applied.entry((node, o)).or_default() += st.applied;
        }
        let m = db.repl_memory();
        *self.faults.entry("conflict entries recorded").or_default() += m.conflicts_recorded;
        *self
            .faults
            .entry("conflict entries dropped by the bound")
            .or_default() += m.conflicts_dropped;
    }

    pub fn digests(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                n.db.as_ref()
                    .expect("up")
                    .stamped_digest(Bound::Unbounded, Bound::Unbounded)
                    .expect("digest")
                    .to_string()
            })
            .collect()
    }
}

pub fn decode(b: &[u8], limits: &FrameLimits) -> Frame {
    match decode_frame(b, limits).expect("decode") {
        Decoded::Frame { frame, .. } => frame,
        Decoded::Incomplete { .. } => panic!("a whole frame was queued"),
    }
}
