//! Running the test binary again as a child process and killing it with SIGKILL: the
//! harness of the real-process crash tests of the WAL and of the engine (the engine's
//! includes this file by path). What the child prints, and what the parent makes of it, is
//! each test's own (`read_stdout`).
#![allow(dead_code)]

use std::io::Read;
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

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
    pub status: ExitStatus,
    /// The child had exited before the parent came to kill it.
    pub exited_early: bool,
    /// The child did not say it was ready within the timeout.
    pub ready_timed_out: bool,
    /// When it was spawned.
    pub started: Instant,
    pub ran_for: Duration,
    /// What `read_stdout` made of its standard output.
    pub out: O,
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
pub fn run_child<O: Send + 'static>(
    test: &str,
    env: &[(&str, String)],
    kill_at: KillAt,
    ready_timeout: Duration,
    read_stdout: fn(ChildStdout, mpsc::Sender<()>) -> O,
) -> ChildRun<O> {
    let exe = std::env::current_exe().expect("parent: current_exe() to re-run the test binary");
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
