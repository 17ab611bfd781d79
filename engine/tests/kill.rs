//! Real-process crash test of the engine (issue 3, "Proof"): a child process opens the
//! [`Database`] under `SyncPolicy::Always` with small segments and low checkpoint and
//! compaction thresholds, and writes from several threads (puts, deletes, multi-operation
//! batches, some larger than a WAL segment, values stored inline and out of line, now and
//! then an explicit checkpoint or compaction) while background checkpoints and compactions
//! run. It reports every acknowledged write on a pipe. The parent kills it with SIGKILL at a
//! random moment (now and then during start-up, i.e. exec, open and WAL replay), reopens the
//! database, which must succeed, and checks it against a model of the acknowledged writes:
//!
//! - every key holds the value of the last acknowledged operation on it, except that each
//!   writer thread may have one more, unacknowledged batch in flight, which is either wholly
//!   visible or not at all (never partly);
//! - a full scan returns exactly the model's live pairs, and [`Database::digest`] equals the
//!   digest computed from the model;
//! - acknowledged LSNs are unique, increase per thread and across rounds, and are covered by
//!   the reopened WAL.
//!
//! Every round continues the same database, so what earlier rounds wrote is checked again.
//! Each writer thread owns the keys `id % WRITERS == thread`: the expected value of a key
//! follows from its owner's acknowledged operations in order, whatever the interleaving of
//! threads. Every operation is a pure function of (round, thread, seq), so the child reports
//! only `@ack <lsn> <round> <thread> <seq>`.
//!
//! The test binary re-runs itself as the child: `child_main` is ignored and does nothing
//! unless `DUPLEX_ENGINE_KILL_CHILD_DIR` is set.
//!
//! Knobs: `DUPLEX_KILL_ROUNDS` (default 25), `DUPLEX_KILL_SEED` (kill timing; printed) and
//! `DUPLEX_KILL_VERBOSE` (a line per round).
//! On failure the database directory as the child left it (before the parent reopened it),
//! as it is after the reopen, and notes (seed, round, message, the child's output, its
//! acknowledgements) are kept in `/tmp/engine-killfail-*`.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use duplex_testkit::child::{self, Ack, AckOutput, KillAt, Knobs, Spec};
use duplex_testkit::copy_tree;
use duplex_testkit::dirs::listing;
use duplex_testkit::kv::{fill, mix};
use duplex_wal::le;

use duplex_engine::format::{parse_store_file_name, store_file_name};
use duplex_engine::{
    entry_hash, Config, Database, Digest, Snapshot, Stats as DbStats, SyncPolicy, WriteBatch,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_ROUNDS: u32 = 25;
/// How long the child writes before the kill, in milliseconds (inclusive range).
const RUN_MS: (u64, u64) = (50, 400);
/// Writer threads in the child.
const WRITERS: u8 = 4;
/// Keys in the database; thread `t` owns the ids `id % WRITERS == t`.
const KEYS: u32 = 2000;
/// Small, so that segments rotate all the time, also while the kill lands.
const SEGMENT_SIZE: u64 = 64 << 10;
/// Small, so that background checkpoints (and WAL segment removal) happen often.
const CHECKPOINT_WAL_BYTES: u64 = 256 << 10;
/// Small, so that background compactions happen too.
const COMPACTION_MIN_BYTES: u64 = 1 << 20;
/// The child's variables (its directory and round), writers and time limits: it gives
/// up on its own after 60 s, in case the parent vanished, and must have opened the database
/// within 20 s.
const CHILD: Spec = Spec {
    dir_env: "DUPLEX_ENGINE_KILL_CHILD_DIR",
    round_env: "DUPLEX_ENGINE_KILL_CHILD_ROUND",
    writers: WRITERS,
    deadline: Duration::from_secs(60),
    ready_timeout: Duration::from_secs(20),
};
/// Marker of a finished explicit checkpoint or compaction: `@maint <round> <what>`.
const MAINT_MARK: &str = "@maint ";
/// One round in this many kills the child at a random moment of its start-up (between the
/// spawn and a little after the moment the database is usually open: exec, lock, store
/// open, WAL recovery and replay) instead of while it writes.
const STARTUP_KILL_EVERY: u32 = 6;
/// One round in this many, the parent closes the database cleanly after its checks (a
/// checkpoint); otherwise it only drops it, so that the next child replays the WAL.
const CLEAN_CLOSE_EVERY: u32 = 5;
/// Most recent acknowledged operations remembered per key, for failure messages.
const HISTORY: usize = 6;

fn db_config() -> Config {
    Config {
        sync: SyncPolicy::Always,
        segment_size: SEGMENT_SIZE,
        checkpoint_wal_bytes: CHECKPOINT_WAL_BYTES,
        compaction_min_bytes: COMPACTION_MIN_BYTES,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// The workload: every operation is a pure function of (round, thread, seq, idx).
// ---------------------------------------------------------------------------------------

fn unit_hash(round: u32, thread: u8, seq: u64) -> u64 {
    mix(mix(mix(u64::from(round) ^ 0xd1b5_4a32) ^ u64::from(thread)) ^ seq)
}

/// The bytes of key `id`: `k` and five digits, a quarter of them followed by up to 199
/// filler bytes, so keys differ in length too.
fn key_bytes(id: u32) -> Vec<u8> {
    let mut k = format!("k{id:05}").into_bytes();
    let h = mix(u64::from(id) ^ 0x6b65_7973);
    if h & 3 == 0 {
        let pad = ((h >> 8) % 200) as usize;
        k.extend((0..pad).map(|i| b'a' + ((h >> (i % 48)) % 26) as u8));
    }
    k
}

/// The thread that owns key `id`.
fn owner(id: u32) -> u8 {
    (id % u32::from(WRITERS)) as u8
}

/// Identifies a value: operation `idx` of unit `seq` of `thread` in `round`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValId {
    round: u32,
    thread: u8,
    seq: u64,
    idx: u16,
    /// Values of a big batch are all out of line.
    big: bool,
}

const VAL_MAGIC: [u8; 2] = *b"DV";
/// magic, round u32, thread u8, seq u64, idx u16.
const VAL_HEADER: usize = 2 + 4 + 1 + 8 + 2;

impl ValId {
    fn hash(&self) -> u64 {
        mix(unit_hash(self.round, self.thread, self.seq) ^ ((u64::from(self.idx) + 1) << 40))
    }

    /// 0 bytes (1/16), 1..64, 64..=1024 (inline in the tree) or 1025..=3072 (out of line);
    /// always out of line in a big batch.
    fn len(&self) -> usize {
        let h = self.hash();
        let r = (h >> 8) as usize;
        if self.big {
            return 1025 + r % 2048;
        }
        match h % 16 {
            0 => 0,
            1..=5 => 1 + r % 63,
            6..=10 => 64 + r % 961,
            _ => 1025 + r % 2048,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let len = self.len();
        let mut v = Vec::with_capacity(len);
        if len >= VAL_HEADER {
            v.extend_from_slice(&VAL_MAGIC);
            v.extend_from_slice(&self.round.to_le_bytes());
            v.push(self.thread);
            v.extend_from_slice(&self.seq.to_le_bytes());
            v.extend_from_slice(&self.idx.to_le_bytes());
        }
        fill(&mut v, len, self.hash());
        v
    }
}

fn describe_expected(v: Option<ValId>) -> String {
    match v {
        None => "absent".into(),
        Some(id) => format!("the value of {id:?} ({} bytes)", id.len()),
    }
}

/// What a value read back is, as far as it can tell: whose it is and whether it is intact.
fn describe_value(v: Option<&[u8]>) -> String {
    let Some(v) = v else {
        return "absent".into();
    };
    if v.len() >= VAL_HEADER && v[..2] == VAL_MAGIC {
        let round = le::u32_at(v, 2);
        let thread = v[6];
        let seq = le::u64_at(v, 7);
        let idx = le::u16_at(v, 15);
        for big in [false, true] {
            let id = ValId {
                round,
                thread,
                seq,
                idx,
                big,
            };
            if id.bytes() == v {
                return format!("the value of {id:?} ({} bytes)", v.len());
            }
        }
        return format!(
            "{} bytes with the header of round {round} thread {thread} seq {seq} idx {idx} \
             but not its bytes (corrupt or mixed)",
            v.len()
        );
    }
    format!(
        "{} bytes without a header, starting {:02x?}",
        v.len(),
        &v[..v.len().min(16)]
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitKind {
    /// `Database::put`.
    Put,
    /// `Database::delete`.
    Delete,
    /// `Database::write` of 2..=8 puts and deletes (a key may repeat: the later op wins).
    Batch,
    /// `Database::write` of 24..=40 out-of-line puts (and a few deletes): 25..120 KiB, often
    /// more than a WAL segment.
    BigBatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Maintenance {
    None,
    Checkpoint,
    Compact,
}

/// Unit `seq` of `thread` in `round`: one acknowledged write (one WAL record).
struct Unit {
    kind: UnitKind,
    /// Key id and the value written (`None`: a delete), in order.
    ops: Vec<(u32, Option<ValId>)>,
    /// What the thread does after the write is acknowledged (thread 0 only).
    after: Maintenance,
}

fn unit(round: u32, thread: u8, seq: u64) -> Unit {
    let h = unit_hash(round, thread, seq);
    let kind = match h % 100 {
        0..=49 => UnitKind::Put,
        50..=61 => UnitKind::Delete,
        62..=96 => UnitKind::Batch,
        _ => UnitKind::BigBatch,
    };
    let n = match kind {
        UnitKind::Put | UnitKind::Delete => 1,
        UnitKind::Batch => 2 + (h >> 8) % 7,
        UnitKind::BigBatch => 24 + (h >> 8) % 17,
    } as u16;
    let per_thread = u64::from(KEYS / u32::from(WRITERS));
    let ops = (0..n)
        .map(|idx| {
            let oh = mix(h ^ ((u64::from(idx) + 1) << 32) ^ 0x6f70);
            let id = (oh % per_thread) as u32 * u32::from(WRITERS) + u32::from(thread);
            debug_assert_eq!(owner(id), thread);
            let delete = match kind {
                UnitKind::Put => false,
                UnitKind::Delete => true,
                UnitKind::Batch => (oh >> 32) & 3 == 0,
                UnitKind::BigBatch => (oh >> 32) & 7 == 0,
            };
            let val = (!delete).then_some(ValId {
                round,
                thread,
                seq,
                idx,
                big: kind == UnitKind::BigBatch,
            });
            (id, val)
        })
        .collect();
    let m = mix(h ^ 0x6d61_696e) % 240;
    let after = match (thread, m) {
        (0, 0) => Maintenance::Compact,
        (0, 1..=6) => Maintenance::Checkpoint,
        _ => Maintenance::None,
    };
    Unit { kind, ops, after }
}

// ---------------------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------------------

/// The child opens the database in its directory.
fn open_db(dir: &Path) -> Database {
    Database::open(dir, db_config())
        .unwrap_or_else(|e| panic!("child: opening the database in {dir:?}: {e}"))
}

fn child_writer(db: &Database, round: u32, thread: u8) {
    for seq in 0u64.. {
        let u = unit(round, thread, seq);
        let res = match u.kind {
            UnitKind::Put => {
                let (id, v) = u.ops[0];
                let v = v.expect("a put has a value");
                db.put(&key_bytes(id), &v.bytes())
            }
            UnitKind::Delete => db.delete(&key_bytes(u.ops[0].0)),
            UnitKind::Batch | UnitKind::BigBatch => {
                let mut b = WriteBatch::new();
                for &(id, v) in &u.ops {
                    match v {
                        Some(v) => b.put(key_bytes(id), v.bytes()),
                        None => b.delete(key_bytes(id)),
                    };
                }
                db.write(b)
            }
        };
        let lsn = res
            .unwrap_or_else(|e| panic!("child: {:?} {round}/{thread}/{seq} failed: {e}", u.kind));
        child::say_ack(lsn, round, thread, seq);
        let what = match u.after {
            Maintenance::None => continue,
            Maintenance::Checkpoint => ("checkpoint", db.checkpoint()),
            Maintenance::Compact => ("compact", db.compact()),
        };
        if let Err(e) = what.1 {
            panic!("child: {} after {round}/{thread}/{seq} failed: {e}", what.0);
        }
        child::say(&format!("{MAINT_MARK}{round} {}\n", what.0));
    }
}

/// The child process: runs only when the parent sets `DUPLEX_ENGINE_KILL_CHILD_DIR`.
#[test]
#[ignore = "the child process of sigkill_rounds_lose_no_acknowledged_write"]
fn child_main() {
    child::child_main(&CHILD, open_db, child_writer);
}

// ---------------------------------------------------------------------------------------
// The parent: running a child.
// ---------------------------------------------------------------------------------------

/// Explicit checkpoints and compactions the child finished (its `@maint` lines).
#[derive(Debug, Default)]
struct Maint {
    checkpoints: u32,
    compactions: u32,
}

/// What the child reported: acknowledgements and maintenance.
type ChildOutput = AckOutput<Maint>;

fn read_child_stdout(r: std::process::ChildStdout, ready: mpsc::Sender<()>) -> ChildOutput {
    child::read_acks(r, &ready, WRITERS, |line, m: &mut Maint| {
        let at = line.find(MAINT_MARK)?;
        Some(
            match line[at + MAINT_MARK.len()..]
                .split_ascii_whitespace()
                .nth(1)
            {
                Some("checkpoint") => {
                    m.checkpoints += 1;
                    Ok(())
                }
                Some("compact") => {
                    m.compactions += 1;
                    Ok(())
                }
                _ => Err("unknown maintenance".into()),
            },
        )
    })
}

/// One run of the child: see `duplex_testkit::child::run_child`.
type ChildRun = child::ChildRun<ChildOutput>;

/// Runs the child for `round` on `dir` and kills it per `kill_at`.
fn run_child(dir: &Path, round: u32, kill_at: KillAt) -> ChildRun {
    child::run_round(&CHILD, dir, round, kill_at, read_child_stdout)
}

// ---------------------------------------------------------------------------------------
// The parent: the model and the checks.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Stats {
    rounds: u32,
    acks: u64,
    ops: u64,
    /// In-flight (unacknowledged) units found applied after the reopen / not applied /
    /// undecidable (applying them would change nothing).
    inflight_applied: u32,
    inflight_absent: u32,
    inflight_moot: u32,
    explicit_checkpoints: u32,
    explicit_compactions: u32,
    /// Rounds after which the checkpoint LSN / the store generation had moved on.
    checkpoint_moved: u32,
    generation_moved: u32,
    startup_kills: u32,
    rounds_without_ack: u32,
    clean_closes: u32,
    /// WAL recoveries that cut a torn tail or removed header-less segments.
    wal_repairs: u32,
    /// Kills that left a store file longer than its committed length (a checkpoint was
    /// being appended) / more than one store generation (a compaction was under way).
    mid_checkpoint: u32,
    mid_compaction: u32,
    run_ms: u128,
    max_open: Duration,
    last_events: String,
}

struct Verifier {
    dir: PathBuf,
    /// A copy of `dir` as the child left it, taken before each reopen.
    pre_open: PathBuf,
    seed: u64,
    /// Current value of every key by id, per the acknowledged (and decided) writes.
    vals: Vec<Option<ValId>>,
    /// The last few operations on each key: (lsn or 0 if unacknowledged, value).
    history: Vec<Vec<(u64, Option<ValId>)>>,
    /// Last LSN of the WAL after the previous round's reopen.
    last_lsn: u64,
    checkpoint_lsn: u64,
    generation: u64,
    stats: Stats,
}

struct Context<'a> {
    round: u32,
    run: &'a ChildRun,
    /// What the parent learnt from the reopen, if it got that far.
    opened: String,
}

impl Verifier {
    fn fail(&self, cx: &Context<'_>, msg: String) -> ! {
        let keep = PathBuf::from(format!(
            "/tmp/engine-killfail-{}-round{}",
            std::process::id(),
            cx.round
        ));
        let _ = fs::remove_dir_all(&keep);
        let _ = copy_tree(&self.pre_open, &keep.join("before-reopen"));
        let _ = copy_tree(&self.dir, &keep.join("after-reopen"));
        let mut notes = String::new();
        let _ = writeln!(notes, "seed {} round {}: {msg}", self.seed, cx.round);
        let _ = writeln!(
            notes,
            "child: {:?} after {:?} (ready after {:?})",
            cx.run.status,
            cx.run.ran_for,
            cx.run.since_start(cx.run.out.ready_at)
        );
        let _ = writeln!(notes, "reopen: {}", cx.opened);
        let _ = writeln!(
            notes,
            "before this round: last LSN {}, checkpoint LSN {}, generation {}",
            self.last_lsn, self.checkpoint_lsn, self.generation
        );
        let _ = writeln!(notes, "files before the reopen:");
        listing(&self.pre_open, &mut notes);
        let _ = writeln!(
            notes,
            "child explicit checkpoints {}, compactions {}",
            cx.run.out.extra.checkpoints, cx.run.out.extra.compactions
        );
        cx.run.write_notes(&mut notes);
        let headline = format!(
            "engine kill test failed (seed {}, round {}): {msg}\nreopen: {}",
            self.seed, cx.round, cx.opened
        );
        child::fail_round(cx.run, &keep, &notes, &headline)
    }

    fn record(&mut self, id: u32, lsn: u64, v: Option<ValId>) {
        self.vals[id as usize] = v;
        let h = &mut self.history[id as usize];
        if h.len() == HISTORY {
            h.remove(0);
        }
        h.push((lsn, v));
    }

    fn model_digest(&self) -> Digest {
        let mut d = Digest::default();
        for (id, v) in self.vals.iter().enumerate() {
            if let Some(v) = v {
                d.sum = d
                    .sum
                    .wrapping_add(entry_hash(&key_bytes(id as u32), &v.bytes()));
                d.count += 1;
            }
        }
        d
    }

    fn check_round(&mut self, round: u32, run: &ChildRun, clean_close: bool) {
        let mut cx = Context {
            round,
            run,
            opened: "not yet".into(),
        };
        if let Some(msg) = run.first_problem(&CHILD, round, "the database") {
            self.fail(&cx, msg);
        }
        let (acked, lsns) = self.check_ack_order(&cx);

        // Reopen: recovery and replay must succeed.
        let _ = fs::remove_dir_all(&self.pre_open);
        let _ = copy_tree(&self.dir, &self.pre_open);
        let open_start = Instant::now();
        let db = match Database::open(&self.dir, db_config()) {
            Ok(db) => db,
            Err(e) => self.fail(&cx, format!("reopening the database failed: {e}")),
        };
        let open_took = open_start.elapsed();
        self.stats.max_open = self.stats.max_open.max(open_took);
        let st = db.stats();
        let report = db.wal().recovery_report().clone();
        cx.opened = format!("took {open_took:?}; {st:?}; WAL recovery {report:?}");
        if report.truncated.is_some() || !report.removed_segments.is_empty() {
            self.stats.wal_repairs += 1;
            let _ = write!(
                self.stats.last_events,
                " [WAL recovery: truncated {:?}, removed {:?}]",
                report.truncated, report.removed_segments
            );
        }
        self.note_kill_moment(&st);
        self.check_reopened(&cx, &st, &lsns);

        // Acknowledged units: the model follows them in per-thread order.
        for t in &acked {
            for a in t {
                let u = unit(a.round, a.thread, a.seq);
                self.stats.ops += u.ops.len() as u64;
                for (id, v) in u.ops {
                    self.record(id, a.lsn, v);
                }
            }
        }

        // Every key, thread by thread: each thread's in-flight unit wholly applied or not.
        let snap = db.snapshot();
        for thread in 0..WRITERS {
            let next = acked[thread as usize].len() as u64;
            self.check_thread(&cx, &snap, thread, next);
        }
        let live = self.check_scan(&cx, &snap);
        let digest = match db.digest() {
            Ok(d) => d,
            Err(e) => self.fail(&cx, format!("digest failed: {e}")),
        };
        let model = self.model_digest();
        if digest != model {
            self.fail(
                &cx,
                format!("digest {digest} differs from the model's {model}"),
            );
        }

        if st.checkpoint_lsn > self.checkpoint_lsn {
            self.stats.checkpoint_moved += 1;
        }
        if st.generation > self.generation {
            self.stats.generation_moved += 1;
        }
        self.last_lsn = st.last_lsn;
        self.checkpoint_lsn = st.checkpoint_lsn;
        self.generation = st.generation;
        drop(snap);
        if clean_close {
            self.stats.clean_closes += 1;
            if let Err(e) = db.close() {
                self.fail(&cx, format!("closing the reopened database failed: {e}"));
            }
        } else {
            drop(db);
        }

        self.stats.rounds += 1;
        self.stats.acks += run.out.acks.len() as u64;
        self.stats.explicit_checkpoints += run.out.extra.checkpoints;
        self.stats.explicit_compactions += run.out.extra.compactions;
        self.stats.run_ms += run.ran_for.as_millis();
        let _ = write!(
            self.stats.last_events,
            " [reopen {open_took:?}: last LSN {}, checkpoint LSN {}, generation {}, store {} \
             bytes, {live} live keys]",
            st.last_lsn, st.checkpoint_lsn, st.generation, st.store_bytes,
        );
    }

    /// Per thread, units 0, 1, 2, ... in order with increasing LSNs; all LSNs new. The
    /// acknowledgements by thread, and every acknowledged LSN in order.
    fn check_ack_order(&self, cx: &Context<'_>) -> (Vec<Vec<Ack>>, Vec<u64>) {
        let mut acked: Vec<Vec<Ack>> = vec![Vec::new(); WRITERS as usize];
        let mut lsns: Vec<u64> = Vec::with_capacity(cx.run.out.acks.len());
        for a in &cx.run.out.acks {
            let t = &mut acked[a.thread as usize];
            if a.seq != t.len() as u64 {
                self.fail(
                    cx,
                    format!("ack {a:?} out of order: expected unit {}", t.len()),
                );
            }
            if let Some(p) = t.last() {
                if a.lsn <= p.lsn {
                    self.fail(cx, format!("ack {a:?} has an LSN not above {p:?}"));
                }
            }
            if a.lsn <= self.last_lsn {
                self.fail(
                    cx,
                    format!(
                        "ack {a:?} has an LSN not above {}, the last LSN before this round",
                        self.last_lsn
                    ),
                );
            }
            t.push(*a);
            lsns.push(a.lsn);
        }
        lsns.sort_unstable();
        if let Some(w) = lsns.windows(2).find(|w| w[0] == w[1]) {
            self.fail(cx, format!("LSN {} acknowledged twice", w[0]));
        }
        (acked, lsns)
    }

    /// Notes whether the kill landed during a compaction (more than one store generation
    /// left) or a checkpoint (a store file longer than its committed length).
    fn note_kill_moment(&mut self, st: &DbStats) {
        let generations: Vec<u64> = fs::read_dir(&self.pre_open)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| parse_store_file_name(e.file_name().to_str()?))
                    .collect()
            })
            .unwrap_or_default();
        if generations.len() > 1 {
            self.stats.mid_compaction += 1;
            let _ = write!(
                self.stats.last_events,
                " [killed during a compaction: generations {generations:?}]"
            );
        }
        let store_len =
            fs::metadata(self.pre_open.join(store_file_name(st.generation))).map_or(0, |m| m.len());
        if store_len > st.store_bytes {
            self.stats.mid_checkpoint += 1;
            let _ = write!(
                self.stats.last_events,
                " [killed during a checkpoint: store file {store_len} bytes, {} committed]",
                st.store_bytes
            );
        }
    }

    /// The reopened WAL covers every acknowledged LSN; the checkpoint is within it and has
    /// not gone back.
    fn check_reopened(&self, cx: &Context<'_>, st: &DbStats, lsns: &[u64]) {
        if let Some(&max) = lsns.last() {
            if st.last_lsn < max {
                self.fail(
                    cx,
                    format!(
                        "the reopened WAL ends at LSN {} but LSN {max} was acknowledged",
                        st.last_lsn
                    ),
                );
            }
        }
        if st.checkpoint_lsn > st.last_lsn {
            self.fail(
                cx,
                format!(
                    "checkpoint LSN {} beyond the last LSN {}",
                    st.checkpoint_lsn, st.last_lsn
                ),
            );
        }
        if st.checkpoint_lsn < self.checkpoint_lsn || st.generation < self.generation {
            self.fail(
                cx,
                format!(
                    "the checkpoint went back: LSN {} generation {} after LSN {} generation {}",
                    st.checkpoint_lsn, st.generation, self.checkpoint_lsn, self.generation
                ),
            );
        }
    }

    /// Every key `thread` owns holds its last acknowledged value, except the keys of the
    /// thread's in-flight unit `next`, which is wholly applied (the model follows it) or
    /// not at all.
    fn check_thread(&mut self, cx: &Context<'_>, snap: &Snapshot, thread: u8, next: u64) {
        let inflight = unit(cx.round, thread, next);
        // The state with the in-flight unit applied, for the keys it touches.
        let with: BTreeMap<u32, Option<ValId>> = inflight.ops.iter().copied().collect();
        let mut applied: Vec<u32> = Vec::new();
        let mut not_applied: Vec<u32> = Vec::new();
        for id in (0..KEYS).filter(|&id| owner(id) == thread) {
            let got = match snap.get(&key_bytes(id)) {
                Ok(g) => g,
                Err(e) => self.fail(cx, format!("reading key {id}: {e}")),
            };
            let before = self.vals[id as usize];
            let matches = |v: Option<ValId>| got.as_deref() == v.map(|v| v.bytes()).as_deref();
            let expected = match with.get(&id) {
                // Different values can have equal bytes (two empty ones): only a change
                // of bytes says whether the unit was applied.
                Some(&after) if after.map(|v| v.bytes()) != before.map(|v| v.bytes()) => {
                    if matches(before) {
                        not_applied.push(id);
                        continue;
                    } else if matches(after) {
                        applied.push(id);
                        continue;
                    }
                    format!(
                        "{} (last acknowledged) or {} (in-flight unit {next}, {:?})",
                        describe_expected(before),
                        describe_expected(after),
                        inflight.kind,
                    )
                }
                _ if matches(before) => continue,
                _ => format!(
                    "{} (last acknowledged write; {next} units of this thread acknowledged \
                     this round)",
                    describe_expected(before),
                ),
            };
            let msg = format!(
                "key {id} (thread {thread}): got {}, expected {expected}; recent history {:?}; \
                 engine version {:?}",
                describe_value(got.as_deref()),
                self.history[id as usize],
                snap.version(&key_bytes(id)).map(|v| v.map(|v| v.stamp))
            );
            self.fail(cx, msg);
        }
        match (applied.is_empty(), not_applied.is_empty()) {
            (false, false) => self.fail(
                cx,
                format!(
                    "in-flight unit {next} of thread {thread} ({:?}, ops {:?}) is partly visible: \
                     applied to keys {applied:?}, not to keys {not_applied:?}",
                    inflight.kind, inflight.ops
                ),
            ),
            (false, true) => {
                self.stats.inflight_applied += 1;
                for (id, v) in inflight.ops {
                    self.record(id, 0, v);
                }
            }
            (true, false) => self.stats.inflight_absent += 1,
            (true, true) => self.stats.inflight_moot += 1,
        }
    }

    /// A full scan holds exactly the model's live pairs; how many there are.
    fn check_scan(&self, cx: &Context<'_>, snap: &Snapshot) -> usize {
        let mut want: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (id, v) in self.vals.iter().enumerate() {
            if let Some(v) = v {
                want.insert(key_bytes(id as u32), v.bytes());
            }
        }
        let mut scanned = 0usize;
        let scan = match snap.scan(Bound::Unbounded, Bound::Unbounded) {
            Ok(s) => s,
            Err(e) => self.fail(cx, format!("scan failed: {e}")),
        };
        let mut want_iter = want.iter();
        for item in scan {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => self.fail(cx, format!("scan failed after {scanned} pairs: {e}")),
            };
            match want_iter.next() {
                Some((wk, wv)) if *wk == k && *wv == v => {}
                w => self.fail(
                    cx,
                    format!(
                        "scan pair {scanned}: got key {:?} = {}, expected {:?}",
                        String::from_utf8_lossy(&k),
                        describe_value(Some(&v)),
                        w.map(|(k, v)| (String::from_utf8_lossy(k), describe_value(Some(v))))
                    ),
                ),
            }
            scanned += 1;
        }
        if scanned != want.len() {
            self.fail(
                cx,
                format!(
                    "scan returned {scanned} pairs, the model has {}",
                    want.len()
                ),
            );
        }
        want.len()
    }
}

/// The real-process test (issue 3, "Proof"): many rounds of write, SIGKILL, reopen, check.
#[test]
fn sigkill_rounds_lose_no_acknowledged_write() {
    let (knobs, tmp) = Knobs::start("engine kill test", DEFAULT_ROUNDS);
    let mut rng = StdRng::seed_from_u64(knobs.seed);
    let mut v = Verifier {
        dir: tmp.path().join("db"),
        pre_open: tmp.path().join("pre-open"),
        seed: knobs.seed,
        vals: vec![None; KEYS as usize],
        history: vec![Vec::new(); KEYS as usize],
        last_lsn: 0,
        checkpoint_lsn: 0,
        generation: 0,
        stats: Stats::default(),
    };
    // How long the child usually takes to open the database (spawn to ready): start-up
    // kills land anywhere up to a little past it.
    let mut ready_est = Duration::from_millis(80);
    for round in 1..=knobs.rounds {
        let kill_at = if rng.gen_range(0..STARTUP_KILL_EVERY) == 0 {
            v.stats.startup_kills += 1;
            let max = ready_est.as_millis() as u64 * 5 / 4 + 5;
            KillAt::AfterSpawn(Duration::from_millis(rng.gen_range(0..=max)))
        } else {
            KillAt::AfterReady(Duration::from_millis(rng.gen_range(RUN_MS.0..=RUN_MS.1)))
        };
        let clean_close = rng.gen_range(0..CLEAN_CLOSE_EVERY) == 0;
        let run = run_child(&v.dir, round, kill_at);
        if let Some(r) = run.since_start(run.out.ready_at) {
            ready_est = (ready_est * 3 + r) / 4;
        }
        if run.out.acks.is_empty() {
            v.stats.rounds_without_ack += 1;
        }
        v.stats.last_events.clear();
        let check_start = Instant::now();
        v.check_round(round, &run, clean_close);
        if knobs.verbose {
            println!(
                "round {round}: {kill_at:?}: killed after {:?}, ready after {:?}, {} acks, {} \
                 checkpoints and {} compactions asked for, check took {:?}{}{}",
                run.ran_for,
                run.since_start(run.out.ready_at),
                run.out.acks.len(),
                run.out.extra.checkpoints,
                run.out.extra.compactions,
                check_start.elapsed(),
                v.stats.last_events,
                if clean_close { " [clean close]" } else { "" }
            );
        }
    }
    print_summary(&v, knobs.started);
    child::assert_tested(v.stats.acks, v.stats.rounds);
}

fn print_summary(v: &Verifier, started: Instant) {
    let s = &v.stats;
    println!(
        "engine kill test: {} rounds in {:.1?} (children ran {} ms in total, {} killed during \
         start-up, {} rounds without any ack): {} acknowledged writes ({} operations); in-flight \
         writes found applied {}, absent {}, moot {}; killed during a checkpoint {} times, \
         during a compaction {} times; {} explicit checkpoints and {} compactions \
         finished; checkpoint LSN moved in {} rounds, store generation in {} (now {}); {} WAL \
         repairs; {} clean closes; slowest reopen {:?}",
        s.rounds,
        started.elapsed(),
        s.run_ms,
        s.startup_kills,
        s.rounds_without_ack,
        s.acks,
        s.ops,
        s.inflight_applied,
        s.inflight_absent,
        s.inflight_moot,
        s.mid_checkpoint,
        s.mid_compaction,
        s.explicit_checkpoints,
        s.explicit_compactions,
        s.checkpoint_moved,
        s.generation_moved,
        v.generation,
        s.wal_repairs,
        s.clean_closes,
        s.max_open
    );
}
