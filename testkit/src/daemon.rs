//! A real `duplexd` under test, shared by the server's and the client's integration tests:
//! spawn it on a port with its files under one directory (data, backups, archive, and its
//! log appended to `duplexd.log`), wait until the suite's readiness check passes, signal it,
//! wait for it, and kill it when dropped. What "ready" means and which flags a suite adds
//! are the suite's own.
//!
//! [`duplexd`] finds the binary from outside the `duplex-server` package, where
//! `env!("CARGO_BIN_EXE_duplexd")` does not exist.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a daemon may take to start or to exit before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(20);

/// The signal that asks `duplexd` to stop cleanly.
pub const SIGTERM: i32 = libc::SIGTERM;

/// Sends signal `sig` to process `pid` (for a test that signals from another thread, where
/// the [`Daemon`] is not at hand).
///
/// # Panics
/// If `kill` cannot run or refuses (no such process).
pub fn signal_pid(pid: i32, sig: i32) {
    // Through kill(1) rather than kill(2): this crate forbids unsafe code.
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("running kill -{sig} {pid}: {e}"));
    assert!(st.success(), "kill -{sig} {pid} failed: {st}");
}

/// How to start a daemon: the same every time it is (re)started.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The `duplexd` binary.
    pub bin: PathBuf,
    /// The directory holding data/, backups/, archive/ and duplexd.log.
    pub root: PathBuf,
    /// Its port.
    pub port: u16,
    /// Flags after `--port`, `--data`, `--backup-dir` and `--archive-dir`.
    pub args: Vec<String>,
    /// True once the daemon on this port counts as started.
    pub ready: fn(u16) -> bool,
}

/// A `duplexd` child process and the directory its files live in.
#[derive(Debug)]
pub struct Daemon {
    /// The child process (None once reaped).
    pub child: Option<Child>,
    /// The directory holding data/, backups/, archive/ and duplexd.log.
    pub root: PathBuf,
    /// Its port.
    pub port: u16,
    spec: Spec,
}

impl Daemon {
    /// Starts the daemon `spec` describes and waits until it is ready.
    ///
    /// # Panics
    /// If it cannot be spawned, exits at start-up or is not ready within 20 s (its log is
    /// in the message).
    pub fn launch(spec: Spec) -> Daemon {
        let mut d = Daemon {
            child: None,
            root: spec.root.clone(),
            port: spec.port,
            spec,
        };
        d.spawn();
        d
    }

    /// Starts it again on the same directory, port and flags (after a stop or a kill).
    pub fn restart(&mut self) {
        self.spawn();
    }

    fn spawn(&mut self) {
        fs::create_dir_all(&self.root)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.root.display()));
        let log_path = self.root.join("duplexd.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
        let child = Command::new(&self.spec.bin)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--data")
            .arg(self.root.join("data"))
            .arg("--backup-dir")
            .arg(self.root.join("backups"))
            .arg("--archive-dir")
            .arg(self.root.join("archive"))
            .args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.spec.bin.display()));
        self.child = Some(child);
        let (ready, port) = (self.spec.ready, self.port);
        self.wait_until(|| ready(port));
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("duplexd is not running (already reaped)")
    }

    /// Polls `ready` every 20 ms until it says yes; fails the test if the daemon exits or
    /// 20 s pass first.
    pub fn wait_until(&mut self, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready() {
                return;
            }
            if let Some(st) = self.child_mut().try_wait().expect("try_wait on duplexd") {
                panic!("duplexd exited at start-up with {st}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "duplexd did not start: {}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("duplexd.log")).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> i32 {
        let id = self
            .child
            .as_ref()
            .expect("duplexd is not running (already reaped)")
            .id();
        i32::try_from(id).expect("a pid fits in pid_t")
    }

    /// Sends signal `sig` to the daemon.
    pub fn signal(&self, sig: i32) {
        signal_pid(self.pid(), sig);
    }

    /// Waits for the daemon to exit (at most `secs`).
    pub fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child_mut().try_wait().expect("try_wait on duplexd") {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "duplexd did not exit: {}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let st = self.wait(20);
        assert!(st.success(), "duplexd exit status {st}: {}", self.log());
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `duplexd` binary, for tests outside the `duplex-server` package. `DUPLEXD_BIN` wins
/// if set; otherwise, once per test process, `cargo build -p duplex-server --bin duplexd`
/// runs (a no-op of a fraction of a second when it is up to date; `--release` when the tests
/// themselves are a release build) and `target/<profile>/duplexd` is used, found next to the
/// test binary (`target/<profile>/deps/<test>-*`). If cargo cannot run, an existing binary
/// there is used as it is.
///
/// # Panics
/// If no binary is found.
pub fn duplexd() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("DUPLEXD_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps")
            .to_path_buf();
        let bin = profile_dir.join(format!("duplexd{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "duplex-server", "--bin", "duplexd"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        match cmd.status() {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("warning: building duplexd failed ({other:?}); using {bin:?} as it is")
            }
        }
        assert!(
            bin.exists(),
            "duplexd not found at {bin:?}; build it with `cargo build -p duplex-server --bin duplexd` or set DUPLEXD_BIN"
        );
        bin
    })
}
