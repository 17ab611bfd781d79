//! Real-process crash test: a child process appends under `SyncPolicy::Always` from several
//! threads and reports every acknowledged LSN on a pipe; the parent kills it with SIGKILL at
//! a random moment, reopens the log (recovery), reads it back and checks it. Every round
//! continues the same log, so records from earlier rounds are checked again each time.
//!
//! The test binary re-runs itself as the child: `child_main` is ignored and does nothing
//! unless `DUPLEX_KILL_CHILD_DIR` is set.
//!
//! Knobs: `DUPLEX_KILL_ROUNDS` (default 30), `DUPLEX_KILL_SEED` (kill timing; printed) and
//! `DUPLEX_KILL_VERBOSE` (a line per round).
//! On failure the log directory (after recovery), a copy of its last segments taken before
//! recovery, the child's output and the recovery report are kept in `/tmp/killfail-*`.
#![cfg(unix)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use duplex_testkit::child::{self, Ack, AckOutput, KillAt, Knobs, Spec};
use duplex_testkit::copy_tree;
use duplex_testkit::kv::{fill, mix};

use duplex_wal::le;
use duplex_wal::{
    Entry, ReadOptions, Record, RecoveryReport, StdStorage, SyncPolicy, Wal, WalOptions, WalReader,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_ROUNDS: u32 = 30;
/// How long the child runs before the kill, in milliseconds (inclusive range).
const RUN_MS: (u64, u64) = (20, 200);
/// Writer threads in the child.
const WRITERS: u8 = 4;
/// Small, so that segments rotate all the time, also while the kill lands.
const SEGMENT_SIZE: u64 = 64 << 10;
/// Records in a "big" batch: with 3000..4000-byte bodies it is larger than a segment.
const BIG_BATCH: u8 = 24;
/// The child's variables (its directory and round), writers and time limits: it gives
/// up on its own after 60 s, in case the parent vanished, and must have opened the log
/// within 20 s.
const CHILD: Spec = Spec {
    dir_env: "DUPLEX_KILL_CHILD_DIR",
    round_env: "DUPLEX_KILL_CHILD_ROUND",
    writers: WRITERS,
    deadline: Duration::from_secs(60),
    ready_timeout: Duration::from_secs(20),
};
/// One round in this many kills the child at a random moment of its start-up (0..=60 ms
/// after spawn: exec, opening and recovering the log) instead of while it appends.
const STARTUP_KILL_EVERY: u32 = 8;
/// A fresh log after this many rounds or once it holds this many records, so that a round
/// (which re-reads the whole log, and whose child recovers it) stays cheap in long runs
/// (`DUPLEX_KILL_ROUNDS`); every log still spans many rounds.
const ROUNDS_PER_LOG: u32 = 40;
const MAX_LOG_RECORDS: usize = 25_000;

const MAGIC: [u8; 2] = *b"DK";
/// magic, round u32, thread u8, seq u64, idx u8, count u8, body length u16.
const HEADER_LEN: usize = 2 + 4 + 1 + 8 + 1 + 1 + 2;

fn wal_options() -> WalOptions {
    WalOptions {
        sync: SyncPolicy::Always,
        segment_size: SEGMENT_SIZE,
        ..WalOptions::default()
    }
}

// ---------------------------------------------------------------------------------------
// The workload: every record is a pure function of (round, thread, seq, idx).
// ---------------------------------------------------------------------------------------

fn unit_hash(round: u32, thread: u8, seq: u64) -> u64 {
    mix(mix(mix(u64::from(round)) ^ u64::from(thread)) ^ seq)
}

/// Number of records of unit `seq` of `thread` in `round`: mostly one (a plain `append`),
/// about a quarter batches of 2..=8, and one in 64 a batch larger than a whole segment.
fn unit_count(round: u32, thread: u8, seq: u64) -> u8 {
    let h = unit_hash(round, thread, seq);
    match h % 64 {
        0 => BIG_BATCH,
        1..=15 => 2 + ((h >> 8) % 7) as u8,
        _ => 1,
    }
}

/// One record: unit `seq` of `thread` in `round`, record `idx` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    round: u32,
    thread: u8,
    seq: u64,
    idx: u8,
    count: u8,
}

impl Key {
    fn hash(&self) -> u64 {
        mix(unit_hash(self.round, self.thread, self.seq) ^ ((u64::from(self.idx) + 1) << 40))
    }

    fn kind(&self) -> u8 {
        1 + (self.hash() % 255) as u8
    }

    /// 0 bytes (a quarter), 1..64, 64..512 or 512..4096; 3000..4000 in a big batch.
    fn body_len(&self) -> usize {
        let h = self.hash() >> 16;
        if self.count == BIG_BATCH {
            return 3000 + (h % 1000) as usize;
        }
        let r = (h >> 2) as usize;
        match h % 4 {
            0 => 0,
            1 => 1 + r % 63,
            2 => 64 + r % 448,
            _ => 512 + r % 3584,
        }
    }

    fn payload(&self) -> Vec<u8> {
        let body_len = self.body_len();
        let mut p = Vec::with_capacity(HEADER_LEN + body_len);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&self.round.to_le_bytes());
        p.push(self.thread);
        p.extend_from_slice(&self.seq.to_le_bytes());
        p.push(self.idx);
        p.push(self.count);
        p.extend_from_slice(&(body_len as u16).to_le_bytes());
        fill(&mut p, HEADER_LEN + body_len, self.hash());
        p
    }

    /// Decodes a payload read back and checks it is exactly what the writer of that key
    /// wrote (header, length and every body byte).
    fn decode(payload: &[u8]) -> Result<Key, String> {
        let key = Key::decode_header(payload)?;
        let expected = key.payload();
        if payload != expected.as_slice() {
            let at = payload
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(payload.len().min(expected.len()));
            return Err(format!(
                "{key:?}: payload differs from the expected one at byte {at} (length {} vs {})",
                payload.len(),
                expected.len()
            ));
        }
        Ok(key)
    }

    /// Decodes and checks the header only: for records whose bytes were checked in an
    /// earlier round (the record CRC, checked by the reader, covers the rest).
    fn decode_header(payload: &[u8]) -> Result<Key, String> {
        if payload.len() < HEADER_LEN {
            return Err(format!(
                "payload of {} bytes is shorter than the header",
                payload.len()
            ));
        }
        if payload[..2] != MAGIC {
            return Err(format!("bad magic {:02x?}", &payload[..2]));
        }
        let key = Key {
            round: le::u32_at(payload, 2),
            thread: payload[6],
            seq: le::u64_at(payload, 7),
            idx: payload[15],
            count: payload[16],
        };
        if key.thread >= WRITERS {
            return Err(format!("thread {} out of range in {key:?}", key.thread));
        }
        let want_count = unit_count(key.round, key.thread, key.seq);
        if key.count != want_count || key.idx >= key.count {
            return Err(format!("{key:?}: this unit has {want_count} records"));
        }
        if payload.len() != HEADER_LEN + key.body_len() {
            return Err(format!(
                "{key:?}: payload of {} bytes, expected {}",
                payload.len(),
                HEADER_LEN + key.body_len()
            ));
        }
        Ok(key)
    }
}

// ---------------------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------------------

/// The child opens the log in its directory.
fn open_wal(dir: &Path) -> Wal {
    Wal::open(dir, wal_options())
        .unwrap_or_else(|e| panic!("child: opening the log in {dir:?}: {e}"))
}

fn child_writer(wal: &Wal, round: u32, thread: u8) {
    for seq in 0u64.. {
        let count = unit_count(round, thread, seq);
        let keys: Vec<Key> = (0..count)
            .map(|idx| Key {
                round,
                thread,
                seq,
                idx,
                count,
            })
            .collect();
        let payloads: Vec<Vec<u8>> = keys.iter().map(Key::payload).collect();
        let lsn = if count == 1 {
            wal.append(keys[0].kind(), &payloads[0])
        } else {
            let entries: Vec<Entry<'_>> = keys
                .iter()
                .zip(&payloads)
                .map(|(k, p)| Entry {
                    kind: k.kind(),
                    payload: p,
                })
                .collect();
            wal.append_batch(&entries)
        }
        .unwrap_or_else(|e| panic!("child: append of {round}/{thread}/{seq} failed: {e}"));
        child::say_ack(lsn, round, thread, seq);
    }
}

/// The child process: runs only when the parent sets `DUPLEX_KILL_CHILD_DIR`.
#[test]
#[ignore = "the child process of sigkill_rounds_lose_no_acknowledged_record"]
fn child_main() {
    child::child_main(&CHILD, open_wal, child_writer);
}

// ---------------------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------------------

/// What the child reported: acknowledgements only.
type ChildOutput = AckOutput<()>;

fn read_child_stdout(r: std::process::ChildStdout, ready: mpsc::Sender<()>) -> ChildOutput {
    child::read_acks(r, &ready, WRITERS, |_, _| None)
}

/// One run of the child: see `duplex_testkit::child::run_child`.
type ChildRun = child::ChildRun<ChildOutput>;

/// Runs the child for `round` on `dir` and kills it per `kill_at`.
fn run_child(dir: &Path, round: u32, kill_at: KillAt) -> ChildRun {
    child::run_round(&CHILD, dir, round, kill_at, read_child_stdout)
}

/// What a reader returned: the records, whether it ended in an error, and the torn tail it
/// stopped at, if any.
type RawRead = (Vec<Record>, Result<(), String>, Option<String>);

/// Reads the log in `dir` from `from_lsn` (0: from the start).
fn read_log(dir: &Path, from_lsn: u64) -> RawRead {
    let mut records = Vec::new();
    let mut reader = match WalReader::open(
        Arc::new(StdStorage),
        &[dir.to_path_buf()],
        from_lsn,
        ReadOptions::default(),
    ) {
        Ok(r) => r,
        Err(e) => return (records, Err(format!("WalReader::open: {e}")), None),
    };
    loop {
        match reader.next_record() {
            Ok(Some(r)) => records.push(r),
            Ok(None) => break,
            Err(e) => {
                let at = records.last().map_or(0, |r: &Record| r.lsn);
                return (records, Err(format!("reading after LSN {at}: {e}")), None);
            }
        }
    }
    let torn = reader.torn_tail().map(|t| format!("{t:?}"));
    (records, Ok(()), torn)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[derive(Debug, Default)]
struct Stats {
    rounds: u32,
    acks: u64,
    /// Units found in the log that the child never reported (acknowledged or not, the kill
    /// came before the report).
    unreported_units: u64,
    truncations: u32,
    truncated_bytes: u64,
    removed_segments: usize,
    raw_read_errors: u32,
    raw_torn_tails: u32,
    rounds_without_ack: u32,
    /// Logs used (a fresh one every `ROUNDS_PER_LOG` rounds or `MAX_LOG_RECORDS` records).
    logs: u32,
    /// What happened in the last round, for verbose output.
    last_events: String,
    startup_kills: u32,
    segments: usize,
    records: u64,
    run_ms: u128,
}

struct Verifier {
    dir: PathBuf,
    pre_recovery: PathBuf,
    seed: u64,
    /// Key of every record in the log after the previous round, by LSN - 1.
    log: Vec<Key>,
    /// Every acknowledgement of every round.
    acks: Vec<Ack>,
    stats: Stats,
}

/// What a failure message carries about the round.
struct Context<'a> {
    round: u32,
    run: &'a ChildRun,
    report: Option<&'a RecoveryReport>,
}

impl Verifier {
    fn fail(&self, cx: &Context<'_>, msg: String) -> ! {
        let keep = PathBuf::from(format!(
            "/tmp/killfail-{}-round{}",
            std::process::id(),
            cx.round
        ));
        let _ = copy_tree(&self.dir, &keep.join("wal-after-recovery"));
        let _ = copy_tree(
            &self.pre_recovery,
            &keep.join("last-segments-before-recovery"),
        );
        let mut notes = String::new();
        let _ = writeln!(notes, "seed {} round {}: {msg}", self.seed, cx.round);
        let _ = writeln!(
            notes,
            "child: {:?} after {:?}",
            cx.run.status, cx.run.ran_for
        );
        let _ = writeln!(notes, "recovery report: {:#?}", cx.report);
        cx.run.write_notes(&mut notes);
        let headline = format!(
            "kill test failed (seed {}, round {}): {msg}\nrecovery report: {:?}",
            self.seed, cx.round, cx.report
        );
        child::fail_round(cx.run, &keep, &notes, &headline)
    }

    /// Copies the last two segments (the only ones recovery may touch) before recovery.
    fn snapshot_tail(&self) {
        let _ = fs::remove_dir_all(&self.pre_recovery);
        let _ = fs::create_dir_all(&self.pre_recovery);
        let files = segment_files(&self.dir);
        for f in files.iter().rev().take(2) {
            if let Some(name) = f.file_name() {
                let _ = fs::copy(f, self.pre_recovery.join(name));
            }
        }
    }

    fn check_round(&mut self, round: u32, run: &ChildRun) {
        let mut cx = Context {
            round,
            run,
            report: None,
        };
        if let Some(msg) = run.first_problem(&CHILD, round, "the log") {
            self.fail(&cx, msg);
        }

        // What a reader sees right after the crash, before any recovery, from the first
        // record this round may have added (checked after the main checks below).
        self.snapshot_tail();
        let prev_len = self.log.len();
        self.stats.last_events.clear();
        let raw = read_log(&self.dir, prev_len as u64 + 1);

        let (report, segments) = self.recover(&cx);
        cx.report = Some(&report);
        let records = self.read_recovered(&cx, &report);
        let (keys, units_this_round) = self.decode_log(&cx, &records);
        self.check_kept(&cx, &keys);
        self.check_acks(&cx, &keys, &units_this_round);
        self.check_raw_read(&cx, raw, &records[prev_len..], &report);

        self.stats.rounds += 1;
        self.stats.acks += run.out.acks.len() as u64;
        if let Some(t) = &report.truncated {
            self.stats.truncations += 1;
            self.stats.truncated_bytes += t.bytes;
        }
        self.stats.removed_segments += report.removed_segments.len();
        self.stats.segments = segments;
        self.stats.records += (keys.len() - prev_len) as u64;
        self.stats.run_ms += run.ran_for.as_millis();
        self.log = keys;
    }

    /// Recovery: opens and closes the log; its report and how many segments it holds.
    fn recover(&self, cx: &Context<'_>) -> (RecoveryReport, usize) {
        let wal = match Wal::open(&self.dir, wal_options()) {
            Ok(w) => w,
            Err(e) => self.fail(cx, format!("recovery (Wal::open) failed: {e}")),
        };
        let report = wal.recovery_report().clone();
        let segments = wal.segments().len();
        if let Err(e) = wal.close() {
            self.fail(cx, format!("closing the recovered log failed: {e}"));
        }
        (report, segments)
    }

    /// Every record of the recovered log, which must read to its end without a torn tail
    /// and agree with the recovery report.
    fn read_recovered(&self, cx: &Context<'_>, report: &RecoveryReport) -> Vec<Record> {
        let (records, res, torn) = read_log(&self.dir, 0);
        if let Err(e) = res {
            self.fail(cx, format!("reading the recovered log failed: {e}"));
        }
        if let Some(t) = torn {
            self.fail(
                cx,
                format!("the recovered log still ends in a torn tail: {t}"),
            );
        }
        let n = records.len() as u64;
        if report.first_lsn != 1 || report.last_lsn != n {
            self.fail(
                cx,
                format!(
                    "recovery report says LSNs {}..={} but the reader returned {n} records",
                    report.first_lsn, report.last_lsn
                ),
            );
        }
        records
    }

    /// (2) contiguous LSNs from 1; (3) every record is a valid, whole-batch record;
    /// (4) per thread, units in order with no hole. The key of every record, and how many
    /// units each thread has in the log from this round.
    fn decode_log(&self, cx: &Context<'_>, records: &[Record]) -> (Vec<Key>, HashMap<u8, u64>) {
        let mut keys: Vec<Key> = Vec::with_capacity(records.len());
        let mut open_batch: Option<Key> = None;
        let mut last_unit: HashMap<u8, (u32, u64)> = HashMap::new();
        let mut units_this_round: HashMap<u8, u64> = HashMap::new();
        let mut last_round = 0u32;
        for (i, r) in records.iter().enumerate() {
            let lsn = i as u64 + 1;
            let key = self.decode_record(cx, i, r);
            if key.round > cx.round || key.round < last_round {
                self.fail(cx, format!("LSN {lsn}: {key:?} out of round order (previous record from round {last_round})"));
            }
            last_round = key.round;
            match open_batch {
                Some(b) => {
                    let want = Key {
                        idx: b.idx + 1,
                        ..b
                    };
                    if key != want {
                        self.fail(
                            cx,
                            format!(
                                "LSN {lsn}: expected {want:?} (batch continues), found {key:?}"
                            ),
                        );
                    }
                }
                None => {
                    self.check_unit_start(cx, lsn, key, &last_unit);
                    last_unit.insert(key.thread, (key.round, key.seq));
                    if key.round == cx.round {
                        *units_this_round.entry(key.thread).or_default() += 1;
                    }
                }
            }
            open_batch = (key.idx + 1 < key.count).then_some(key);
            keys.push(key);
        }
        if let Some(b) = open_batch {
            self.fail(
                cx,
                format!("the log ends inside a batch: last record {b:?}"),
            );
        }
        (keys, units_this_round)
    }

    /// The key of record `i`, at LSN `i + 1`: its header only if an earlier round checked
    /// its bytes, else every byte; and its kind.
    fn decode_record(&self, cx: &Context<'_>, i: usize, r: &Record) -> Key {
        let lsn = i as u64 + 1;
        if r.lsn != lsn {
            self.fail(
                cx,
                format!(
                    "record {i} has LSN {}, expected {lsn} (LSNs not contiguous from 1)",
                    r.lsn
                ),
            );
        }
        let decoded = if i < self.log.len() {
            Key::decode_header(&r.payload)
        } else {
            Key::decode(&r.payload)
        };
        let key = match decoded {
            Ok(k) => k,
            Err(e) => self.fail(
                cx,
                format!(
                    "LSN {lsn}: garbage record ({e}); first bytes {:02x?}",
                    &r.payload[..r.payload.len().min(32)]
                ),
            ),
        };
        if r.kind != key.kind() {
            self.fail(
                cx,
                format!(
                    "LSN {lsn}: kind {} but {key:?} was written with kind {}",
                    r.kind,
                    key.kind()
                ),
            );
        }
        key
    }

    /// A unit starts at its first record and follows its thread's previous unit.
    fn check_unit_start(
        &self,
        cx: &Context<'_>,
        lsn: u64,
        key: Key,
        last_unit: &HashMap<u8, (u32, u64)>,
    ) {
        if key.idx != 0 {
            self.fail(
                cx,
                format!("LSN {lsn}: {key:?} starts in the middle of a batch"),
            );
        }
        let want_seq = match last_unit.get(&key.thread) {
            Some(&(r, s)) if r == key.round => s + 1,
            _ => 0,
        };
        if key.seq != want_seq {
            self.fail(
                cx,
                format!(
                    "LSN {lsn}: thread {} round {} unit {} follows {:?} (expected unit {want_seq})",
                    key.thread,
                    key.round,
                    key.seq,
                    last_unit.get(&key.thread)
                ),
            );
        }
        if let Some(&(r, _)) = last_unit.get(&key.thread) {
            if r > key.round {
                self.fail(
                    cx,
                    format!(
                        "LSN {lsn}: thread {} goes back from round {r} to {}",
                        key.thread, key.round
                    ),
                );
            }
        }
    }

    /// Nothing that was there after the previous round has gone or changed.
    fn check_kept(&self, cx: &Context<'_>, keys: &[Key]) {
        if keys.len() < self.log.len() {
            self.fail(
                cx,
                format!(
                    "the log shrank from {} to {} records",
                    self.log.len(),
                    keys.len()
                ),
            );
        }
        if let Some(i) = self.log.iter().zip(keys).position(|(a, b)| a != b) {
            self.fail(
                cx,
                format!(
                    "LSN {} changed since the previous round: was {:?}, now {:?}",
                    i + 1,
                    self.log[i],
                    keys[i]
                ),
            );
        }
    }

    /// (1) every acknowledged unit, of this round and all earlier ones, is there whole at
    /// the reported LSN with exactly the expected payload (checked by decode above); a
    /// thread has at most one unit in flight: the log holds at most one unit per thread
    /// beyond what the child reported.
    fn check_acks(&mut self, cx: &Context<'_>, keys: &[Key], units_this_round: &HashMap<u8, u64>) {
        self.acks.extend_from_slice(&cx.run.out.acks);
        for a in &self.acks {
            let count = unit_count(a.round, a.thread, a.seq);
            let want = Key {
                round: a.round,
                thread: a.thread,
                seq: a.seq,
                idx: count - 1,
                count,
            };
            match a.lsn.checked_sub(1).and_then(|i| keys.get(i as usize)) {
                Some(k) if *k == want => {}
                found => self.fail(cx, format!(
                    "acknowledged {a:?} lost: LSN {} holds {found:?}, expected {want:?} (log has {} records)",
                    a.lsn,
                    keys.len()
                )),
            }
        }
        let mut reported: HashMap<u8, u64> = HashMap::new();
        for a in &cx.run.out.acks {
            *reported.entry(a.thread).or_default() += 1;
        }
        for t in 0..WRITERS {
            let present = units_this_round.get(&t).copied().unwrap_or(0);
            let acked = reported.get(&t).copied().unwrap_or(0);
            if present < acked || present > acked + 1 {
                self.fail(
                    cx,
                    format!(
                        "thread {t}: {present} units in the log, {acked} reported by the child"
                    ),
                );
            }
            self.stats.unreported_units += present - acked;
        }
    }

    /// What the reader saw before recovery (`raw`, from the first record of this round)
    /// equals what recovery kept (`after`), unless recovery removed a segment whose header
    /// never reached the file, which may stop the reader after every kept record.
    fn check_raw_read(
        &mut self,
        cx: &Context<'_>,
        raw: RawRead,
        after: &[Record],
        report: &RecoveryReport,
    ) {
        let (raw, raw_res, raw_torn) = raw;
        let prev_len = self.log.len();
        match raw_res {
            Ok(()) => {
                if raw != after {
                    let diff = raw.iter().zip(after).position(|(a, b)| a != b);
                    self.fail(cx, format!(
                        "from LSN {} on, the reader returned {} records before recovery and {} after \
                         (first difference at LSN {:?})",
                        prev_len + 1,
                        raw.len(),
                        after.len(),
                        diff.map(|d| prev_len + 1 + d)
                    ));
                }
            }
            Err(e) => {
                if report.removed_segments.is_empty() || raw != after {
                    self.fail(
                        cx,
                        format!(
                            "reading before recovery failed after {} of the {} records from LSN {} \
                             ({e}); recovery removed {:?}",
                            raw.len(),
                            after.len(),
                            prev_len + 1,
                            report.removed_segments
                        ),
                    );
                }
                self.stats.raw_read_errors += 1;
                let _ = write!(self.stats.last_events, " [reader before recovery: {e}]");
            }
        }
        if let Some(t) = raw_torn {
            self.stats.raw_torn_tails += 1;
            let _ = write!(
                self.stats.last_events,
                " [reader before recovery: torn tail {t}]"
            );
        }
        if report.truncated.is_some() || !report.removed_segments.is_empty() {
            let _ = write!(
                self.stats.last_events,
                " [recovery: truncated {:?}, removed {:?}]",
                report.truncated, report.removed_segments
            );
        }
    }
}

/// The real-process test (issue 2, "Proof"): many rounds of append, SIGKILL, recover, check.
#[test]
fn sigkill_rounds_lose_no_acknowledged_record() {
    let (knobs, tmp) = Knobs::start("kill test", DEFAULT_ROUNDS);
    let mut rng = StdRng::seed_from_u64(knobs.seed);
    let mut v = Verifier {
        dir: tmp.path().join("wal"),
        pre_recovery: tmp.path().join("pre-recovery"),
        seed: knobs.seed,
        log: Vec::new(),
        acks: Vec::new(),
        stats: Stats {
            logs: 1,
            ..Stats::default()
        },
    };
    let mut log_since = 1;
    for round in 1..=knobs.rounds {
        if round - log_since >= ROUNDS_PER_LOG || v.log.len() >= MAX_LOG_RECORDS {
            log_since = round;
            v.stats.logs += 1;
            let _ = fs::remove_dir_all(&v.dir);
            v.dir = tmp.path().join(format!("wal-from-round-{round}"));
            v.log.clear();
            v.acks.clear();
        }
        let kill_at = if rng.gen_range(0..STARTUP_KILL_EVERY) == 0 {
            v.stats.startup_kills += 1;
            KillAt::AfterSpawn(Duration::from_millis(rng.gen_range(0..=60)))
        } else {
            KillAt::AfterReady(Duration::from_millis(rng.gen_range(RUN_MS.0..=RUN_MS.1)))
        };
        let run = run_child(&v.dir, round, kill_at);
        if run.out.acks.is_empty() {
            v.stats.rounds_without_ack += 1;
        }
        let check_start = Instant::now();
        v.check_round(round, &run);
        if knobs.verbose {
            println!(
                "round {round}: {kill_at:?}: killed after {:?}, first ack after {:?}, {} acks, log {} records, \
                 check took {:?}{}",
                run.ran_for,
                run.since_start(run.out.first_ack),
                run.out.acks.len(),
                v.log.len(),
                check_start.elapsed(),
                v.stats.last_events
            );
        }
    }
    print_summary(&v.stats, knobs.started);
    child::assert_tested(v.stats.acks, v.stats.rounds);
}

fn print_summary(s: &Stats, started: Instant) {
    println!(
        "kill test: {} rounds in {:.1?} (children ran {} ms in total, {} killed during start-up, \
         {} rounds without any ack): {} records, {} acknowledged units, {} units present but \
         unreported, {} logs, {} segments in the last log; recovery cut a torn tail {} times ({} bytes), \
         removed {} headerless segments; reader before recovery: {} torn tails, {} errors",
        s.rounds,
        started.elapsed(),
        s.run_ms,
        s.startup_kills,
        s.rounds_without_ack,
        s.records,
        s.acks,
        s.unreported_units,
        s.logs,
        s.segments,
        s.truncations,
        s.truncated_bytes,
        s.removed_segments,
        s.raw_torn_tails,
        s.raw_read_errors
    );
}
