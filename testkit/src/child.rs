//! The SIGKILL crash tests' harness, shared by the WAL's and the engine's: the test binary
//! runs again as a child process (one of its own ignored tests), writes and reports every
//! acknowledged write on its stdout, and the parent kills it with SIGKILL at a chosen
//! moment, then reopens what it left and checks it.
//!
//! What the child writes and what the parent checks is each test's own; the harness owns the
//! process (spawn, readiness, kill, reaping), the report protocol (`@ready`, then one
//! `@ack <lsn> <round> <thread> <seq>` line per acknowledged write, one `write` each so a
//! pipe never shows half a line), the checks every round starts with (killed by SIGKILL,
//! ready in time, every line parsed, nothing torn) and the knobs read from the environment.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dirs::{temp_dir, TempDir};

/// SIGKILL's number: how a killed child's status must read.
pub const SIGKILL: i32 = 9;
/// Marker of an acknowledgement line on the child's stdout: `@ack <lsn> <round> <thread> <seq>`.
pub const ACK_MARK: &str = "@ack ";
/// Printed by the child once what it writes to is open.
pub const READY_LINE: &str = "@ready\n";
/// Number of rounds (`DUPLEX_KILL_ROUNDS`).
pub const ROUNDS_ENV: &str = "DUPLEX_KILL_ROUNDS";
/// Seed of the kill timing (`DUPLEX_KILL_SEED`); printed so a failing run can be repeated.
pub const SEED_ENV: &str = "DUPLEX_KILL_SEED";
/// A line per round when set (`DUPLEX_KILL_VERBOSE`).
pub const VERBOSE_ENV: &str = "DUPLEX_KILL_VERBOSE";
/// Exit code of a child whose parent is gone (its stdout closed).
const EXIT_PARENT_GONE: i32 = 5;
/// Exit code of a child nobody killed in time.
const EXIT_NOT_KILLED: i32 = 3;
/// Exit code of a child whose writer thread panicked.
const EXIT_WRITER_PANICKED: i32 = 4;

/// How a kill test's parent and child find each other: the environment variables that
/// carry the child's directory and round (unset, the child test does nothing), how many
/// writer threads it runs, when it gives up on its own, and how long the parent waits for
/// it to be ready.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The variable naming the child's directory.
    pub dir_env: &'static str,
    /// The variable naming the child's round.
    pub round_env: &'static str,
    /// Writer threads in the child.
    pub writers: u8,
    /// The child exits on its own after this, in case the parent vanished.
    pub deadline: Duration,
    /// The child must have opened what it writes to by then.
    pub ready_timeout: Duration,
}

/// When the parent kills the child.
#[derive(Debug, Clone, Copy)]
pub enum KillAt {
    /// This long after spawn, ready or not.
    AfterSpawn(Duration),
    /// This long after the child said it is ready (its `read_stdout` signalled it).
    AfterReady(Duration),
}

/// One run of the child, up to its death.
#[derive(Debug)]
pub struct ChildRun<O> {
    /// How it ended.
    pub status: ExitStatus,
    /// The child had exited before the parent came to kill it.
    pub exited_early: bool,
    /// The child did not say it was ready within the timeout.
    pub ready_timed_out: bool,
    /// When it was spawned.
    pub started: Instant,
    /// From spawn to the kill.
    pub ran_for: Duration,
    /// What `read_stdout` made of its standard output.
    pub out: O,
    /// Its standard error.
    pub stderr: String,
}

impl<O> ChildRun<O> {
    /// From spawn to `t`.
    pub fn since_start(&self, t: Option<Instant>) -> Option<Duration> {
        t.map(|t| t.duration_since(self.started))
    }
}

/// Runs the ignored test `test` of this test binary in a child process with `env` set,
/// hands its stdout to `read_stdout` on a thread (which sends on the channel once the child
/// is ready), and SIGKILLs it per `kill_at` (waiting at most `ready_timeout` for ready).
///
/// # Panics
/// If the child cannot be spawned, killed or reaped (the test cannot go on).
pub fn run_child<O: Send + 'static>(
    test: &str,
    env: &[(&str, String)],
    kill_at: KillAt,
    ready_timeout: Duration,
    read_stdout: fn(ChildStdout, mpsc::Sender<()>) -> O,
) -> ChildRun<O> {
    let exe = env::current_exe().expect("parent: current_exe() to re-run the test binary");
    let started = Instant::now();
    let mut cmd = Command::new(&exe);
    cmd.args([
        test,
        "--exact",
        "--nocapture",
        "--ignored",
        "--test-threads=1",
    ])
    .env_remove("RUST_TEST_THREADS")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("parent: spawning the child {exe:?}: {e}"));
    let stdout = child.stdout.take().expect("child stdout is piped");
    let mut stderr = child.stderr.take().expect("child stderr is piped");
    let (ready_tx, ready_rx) = mpsc::channel();
    let out_reader = thread::spawn(move || read_stdout(stdout, ready_tx));
    let err_reader = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    });
    let mut ready_timed_out = false;
    match kill_at {
        KillAt::AfterSpawn(d) => thread::sleep(d),
        KillAt::AfterReady(d) => match ready_rx.recv_timeout(ready_timeout) {
            Ok(()) => thread::sleep(d),
            Err(mpsc::RecvTimeoutError::Timeout) => ready_timed_out = true,
            // The child closed its stdout (it died): the checks say how.
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        },
    }
    let early = child.try_wait().expect("parent: try_wait on the child");
    if early.is_none() {
        child.kill().expect("parent: SIGKILL the child");
    }
    let ran_for = started.elapsed();
    let status = child.wait().expect("parent: wait for the child");
    let out = out_reader.join().expect("stdout reader thread panicked");
    let stderr = err_reader.join().expect("stderr reader thread panicked");
    ChildRun {
        status,
        exited_early: early.is_some(),
        ready_timed_out,
        started,
        ran_for,
        out,
        stderr,
    }
}

/// Runs round `round` of a kill test on `dir`: the ignored test `child_main` of this test
/// binary with the variables of `spec` set, killed per `kill_at` (see [`run_child`]).
pub fn run_round<O: Send + 'static>(
    spec: &Spec,
    dir: &Path,
    round: u32,
    kill_at: KillAt,
    read_stdout: fn(ChildStdout, mpsc::Sender<()>) -> O,
) -> ChildRun<O> {
    run_child(
        "child_main",
        &[
            (spec.dir_env, dir.display().to_string()),
            (spec.round_env, round.to_string()),
        ],
        kill_at,
        spec.ready_timeout,
        read_stdout,
    )
}

// ---------------------------------------------------------------------------------------
// The child's side.
// ---------------------------------------------------------------------------------------

/// The child's arguments: its directory (`dir_env`) and round (`round_env`), or `None` when
/// this test binary runs as the parent (the variable is unset: the ignored child test then
/// does nothing).
///
/// # Panics
/// If the directory is set but the round is missing or not a number.
pub fn child_args(dir_env: &str, round_env: &str) -> Option<(PathBuf, u32)> {
    let dir = env::var_os(dir_env)?;
    let round = env::var(round_env)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("child: {round_env} missing or not a number"));
    Some((PathBuf::from(dir), round))
}

/// Writes one line with one `write` (atomic on a pipe, so the parent never sees half of
/// it); exits if the parent is gone.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(line.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(EXIT_PARENT_GONE);
    }
}

/// Reports an acknowledged write: unit `seq` of `thread` in `round` got `lsn`.
pub fn say_ack(lsn: u64, round: u32, thread: u8, seq: u64) {
    say(&format!("{ACK_MARK}{lsn} {round} {thread} {seq}\n"));
}

/// The whole child test: does nothing unless the parent set `spec.dir_env` (see
/// [`child_args`]); otherwise opens what it writes to with `open(dir)` and runs
/// `writer(&opened, round, thread)` on `spec.writers` threads until the kill (see
/// [`run_writers`]).
pub fn child_main<T: Send + Sync + 'static>(
    spec: &Spec,
    open: fn(&Path) -> T,
    writer: fn(&T, u32, u8),
) {
    let Some((dir, round)) = child_args(spec.dir_env, spec.round_env) else {
        return;
    };
    let opened = std::sync::Arc::new(open(&dir));
    run_writers(spec.writers, spec.deadline, move |thread| {
        writer(&opened, round, thread);
    });
}

/// The child's body once it is open: says it is ready, exits on its own after `deadline`
/// (in case the parent vanished), and runs `writer(thread)` on `writers` threads until the
/// kill; exits if a writer panics.
pub fn run_writers(writers: u8, deadline: Duration, writer: impl Fn(u8) + Send + Sync + 'static) {
    say(READY_LINE);
    thread::spawn(move || {
        thread::sleep(deadline);
        eprintln!("child: not killed within {deadline:?}, exiting");
        std::process::exit(EXIT_NOT_KILLED);
    });
    let writer = std::sync::Arc::new(writer);
    let handles: Vec<_> = (0..writers)
        .map(|thread| {
            let writer = writer.clone();
            thread::spawn(move || writer(thread))
        })
        .collect();
    for h in handles {
        if h.join().is_err() {
            std::process::exit(EXIT_WRITER_PANICKED);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The parent's side.
// ---------------------------------------------------------------------------------------

/// An acknowledgement reported by the child: unit `seq` of `thread` in `round` got `lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The LSN the write returned (the last of its batch).
    pub lsn: u64,
    /// The round (child run) it was written in.
    pub round: u32,
    /// The writer thread.
    pub thread: u8,
    /// The thread's unit number in the round, from 0.
    pub seq: u64,
}

/// Parses the fields after [`ACK_MARK`]; `thread` must be below `writers`.
pub fn parse_ack(s: &str, writers: u8) -> Result<Ack, String> {
    let f: Vec<&str> = s.split_ascii_whitespace().collect();
    if f.len() != 4 {
        return Err(format!("expected 4 fields, got {}", f.len()));
    }
    let num = |i: usize, what: &str| {
        f[i].parse::<u64>()
            .map_err(|e| format!("{what} {:?}: {e}", f[i]))
    };
    let ack = Ack {
        lsn: num(0, "lsn")?,
        round: u32::try_from(num(1, "round")?).map_err(|e| e.to_string())?,
        thread: u8::try_from(num(2, "thread")?).map_err(|e| e.to_string())?,
        seq: num(3, "seq")?,
    };
    if ack.thread >= writers {
        return Err(format!("thread {} out of range", ack.thread));
    }
    Ok(ack)
}

/// What the parent made of the child's stdout.
#[derive(Debug, Default)]
pub struct AckOutput<X> {
    /// Every acknowledgement, in the order reported.
    pub acks: Vec<Ack>,
    /// When the first one arrived.
    pub first_ack: Option<Instant>,
    /// When the child said it was ready.
    pub ready_at: Option<Instant>,
    /// Lines that carry a marker but do not parse.
    pub bad_lines: Vec<String>,
    /// Anything else (the test harness's own chatter).
    pub other: String,
    /// Bytes after the last newline.
    pub partial: String,
    /// What the test's own markers added (see [`read_acks`]).
    pub extra: X,
}

/// Reads the child's stdout to its end: the ready line (signalled on `ready`), ack lines,
/// and lines that `extra_line` recognises (it returns `None` for a line that is not its
/// own, `Some(Err(..))` for one of its own that does not parse).
pub fn read_acks<X: Default>(
    stdout: impl Read,
    ready: &mpsc::Sender<()>,
    writers: u8,
    mut extra_line: impl FnMut(&str, &mut X) -> Option<Result<(), String>>,
) -> AckOutput<X> {
    let mut out = AckOutput::<X>::default();
    let mut r = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                out.bad_lines.push(format!("<read error: {e}>"));
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        if !line.ends_with('\n') {
            out.partial = line;
            break;
        }
        // The harness may have printed "test child_main ... " without a newline first.
        if line.ends_with(READY_LINE) {
            out.other.push_str(&line[..line.len() - READY_LINE.len()]);
            out.ready_at = Some(Instant::now());
            let _ = ready.send(());
            continue;
        }
        if let Some(at) = line.find(ACK_MARK) {
            match parse_ack(&line[at + ACK_MARK.len()..], writers) {
                Ok(a) => {
                    out.first_ack.get_or_insert_with(Instant::now);
                    out.other.push_str(&line[..at]);
                    out.acks.push(a);
                }
                Err(e) => out.bad_lines.push(format!("{:?}: {e}", line.trim_end())),
            }
            continue;
        }
        match extra_line(&line, &mut out.extra) {
            Some(Ok(())) => {}
            Some(Err(e)) => out.bad_lines.push(format!("{:?}: {e}", line.trim_end())),
            None => out.other.push_str(&line),
        }
    }
    out
}

impl<X> ChildRun<AckOutput<X>> {
    /// The first thing wrong with this run before any data is looked at, if any: the child
    /// was not killed by SIGKILL, did not open `what` within `spec.ready_timeout`, printed
    /// lines that do not parse, died halfway through an ack line, or acknowledged for
    /// another round.
    pub fn first_problem(&self, spec: &Spec, round: u32, what: &str) -> Option<String> {
        let ready_timeout = spec.ready_timeout;
        if self.exited_early || self.status.signal() != Some(SIGKILL) {
            return Some(format!(
                "the child was not killed by SIGKILL but ended {:?} on its own",
                self.status
            ));
        }
        if self.ready_timed_out {
            return Some(format!(
                "the child did not open {what} within {ready_timeout:?}"
            ));
        }
        if !self.out.bad_lines.is_empty() {
            return Some(format!(
                "unparsable lines from the child: {:?}",
                self.out.bad_lines
            ));
        }
        if self.out.partial.contains(ACK_MARK) {
            return Some(format!(
                "the child's last ack line is torn: {:?}",
                self.out.partial
            ));
        }
        self.out
            .acks
            .iter()
            .find(|a| a.round != round)
            .map(|a| format!("ack {a:?} names another round"))
    }
}

impl<X> ChildRun<AckOutput<X>> {
    /// Appends the child's stderr, the rest of its stdout and every acknowledgement of the
    /// round to a failure's notes.
    pub fn write_notes(&self, notes: &mut String) {
        let _ = writeln!(notes, "child stderr:\n{}", self.stderr);
        let _ = writeln!(notes, "child other stdout:\n{}", self.out.other);
        let _ = writeln!(notes, "acks of this round (lsn round thread seq):");
        for a in &self.out.acks {
            let _ = writeln!(notes, "{} {} {} {}", a.lsn, a.round, a.thread, a.seq);
        }
    }
}

/// Fails a round: writes `notes` to `keep/notes.txt` (beside the copies the test kept
/// there) and panics with `headline`, how the child ended and where the files are.
#[track_caller]
pub fn fail_round<O>(run: &ChildRun<O>, keep: &Path, notes: &str, headline: &str) -> ! {
    let _ = fs::create_dir_all(keep);
    let _ = fs::write(keep.join("notes.txt"), notes);
    panic!(
        "{headline}\nchild {:?}, stderr: {}\nfiles and notes kept in {}",
        run.status,
        run.stderr.trim_end(),
        keep.display()
    );
}

/// Fails the test if no round acknowledged anything: it would have tested nothing.
pub fn assert_tested(acks: u64, rounds: u32) {
    assert!(
        acks > 0,
        "the child never acknowledged anything in {rounds} rounds: the test tests nothing"
    );
}

/// The knobs of a kill test, from the environment.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    /// Rounds to run ([`ROUNDS_ENV`], else the test's default).
    pub rounds: u32,
    /// Seed of the kill timing ([`SEED_ENV`], else the clock).
    pub seed: u64,
    /// A line per round ([`VERBOSE_ENV`] set).
    pub verbose: bool,
    /// When the test started (when the knobs were read).
    pub started: Instant,
}

impl Knobs {
    /// Reads the knobs; `default_rounds` when [`ROUNDS_ENV`] is unset.
    ///
    /// # Panics
    /// If a variable is set but not a number.
    pub fn from_env(default_rounds: u32) -> Knobs {
        let rounds = match env::var(ROUNDS_ENV) {
            Ok(s) => s
                .parse()
                .unwrap_or_else(|e| panic!("{ROUNDS_ENV}={s:?} is not a number: {e}")),
            Err(_) => default_rounds,
        };
        let seed = match env::var(SEED_ENV) {
            Ok(s) => s
                .parse()
                .unwrap_or_else(|e| panic!("{SEED_ENV}={s:?} is not a number: {e}")),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        };
        Knobs {
            rounds,
            seed,
            verbose: env::var_os(VERBOSE_ENV).is_some(),
            started: Instant::now(),
        }
    }

    /// The start of a kill test called `name`: its knobs and a fresh temporary directory
    /// for its files, announced on stdout with the seed (to repeat a failing run).
    pub fn start(name: &str, default_rounds: u32) -> (Knobs, TempDir) {
        let knobs = Knobs::from_env(default_rounds);
        let tmp = temp_dir();
        println!(
            "{name}: {} rounds, {SEED_ENV}={}, dir {}",
            knobs.rounds,
            knobs.seed,
            tmp.path().display()
        );
        (knobs, tmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_lines_parse_and_bad_ones_are_kept() {
        assert_eq!(
            parse_ack("12 3 1 40", 4),
            Ok(Ack {
                lsn: 12,
                round: 3,
                thread: 1,
                seq: 40
            })
        );
        assert!(parse_ack("12 3 4 40", 4).is_err(), "thread out of range");
        assert!(parse_ack("12 3 1", 4).is_err(), "a field missing");
        assert!(parse_ack("12 x 1 40", 4).is_err(), "not a number");
    }

    #[test]
    fn read_acks_splits_ready_acks_own_lines_chatter_and_a_torn_tail() {
        let out = "test child_main ... @ready\n@ack 5 1 0 0\n@maint 1\nnoise\n@ack 9 1 7 1\n@ack 1";
        let (tx, rx) = mpsc::channel();
        let got = read_acks(out.as_bytes(), &tx, 4, |line, n: &mut u32| {
            line.starts_with("@maint").then(|| {
                *n += 1;
                Ok(())
            })
        });
        assert!(rx.try_recv().is_ok(), "ready was signalled");
        assert_eq!(got.acks.len(), 1);
        assert_eq!(got.acks[0].lsn, 5);
        assert_eq!(got.extra, 1);
        assert_eq!(got.bad_lines.len(), 1, "{:?}", got.bad_lines);
        assert_eq!(got.other, "test child_main ... noise\n");
        assert_eq!(got.partial, "@ack 1");
        assert!(got.ready_at.is_some() && got.first_ack.is_some());
    }
}
