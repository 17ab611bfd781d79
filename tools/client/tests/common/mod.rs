//! Test helpers: find (or build) the real `duplexd` binary, spawn it on a chosen port with a
//! temporary data directory, wait until it is `running`, signal it, and kill it when dropped.
//!
//! Finding the binary: `env!("CARGO_BIN_EXE_duplexd")` only exists inside the
//! `duplex-server` package, so these tests locate it themselves. `DUPLEXD_BIN` wins if set;
//! otherwise, once per test process, they run `cargo build -p duplex-server --bin duplexd`
//! (a no-op of a fraction of a second when it is up to date; `--release` when the tests
//! themselves are a release build) and use `target/<profile>/duplexd`, found next to the
//! test binary (`target/<profile>/deps/failover-*`). If cargo cannot run, an existing binary
//! there is used as it is.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `duplexd` binary (see the module docs).
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

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:<port>`.
pub fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A running daemon.
pub struct Daemon {
    /// The child process (None once reaped).
    pub child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// The directory holding data/, backups/, archive/ and duplexd.log.
    pub root: PathBuf,
    node_id: u64,
    extra: Vec<String>,
}

impl Daemon {
    /// Starts `duplexd` with its files under `root`, on `port`, as node `node_id`; waits
    /// until it reports a state other than `starting`.
    pub fn start(root: &Path, port: u16, node_id: u64) -> Daemon {
        Daemon::start_with(root, port, node_id, &[])
    }

    /// [`Daemon::start`] with extra flags.
    pub fn start_with(root: &Path, port: u16, node_id: u64, extra: &[&str]) -> Daemon {
        let mut d = Daemon {
            child: None,
            port,
            root: root.to_path_buf(),
            node_id,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.root).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("duplexd.log"))
            .unwrap();
        let child = Command::new(duplexd())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--data")
            .arg(self.root.join("data"))
            .arg("--backup-dir")
            .arg(self.root.join("backups"))
            .arg("--archive-dir")
            .arg(self.root.join("archive"))
            .arg("--backup-interval")
            .arg("0")
            .arg("--node-id")
            .arg(self.node_id.to_string())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    /// Starts it again on the same directory and port.
    pub fn restart(&mut self) {
        self.spawn();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.state();
            if st.as_deref().is_some_and(|s| s != "starting") {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("duplexd exited at start-up with {st}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "duplexd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its state name, read with an inline DUPLEX.STATE, or None if unreachable.
    pub fn state(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"DUPLEX.STATE\r\n").ok()?;
        let mut got = Vec::new();
        let mut b = [0u8; 512];
        // The reply is `*8` then 8 elements; `$` lines and values: the state is the 4th line
        // after the header.
        while got.iter().filter(|&&c| c == b'\n').count() < 5 {
            let n = s.read(&mut b).ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&b[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        text.split("\r\n").nth(4).map(str::to_owned)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("duplexd.log")).unwrap_or_default()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits for the daemon to exit (at most `secs`).
    pub fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "duplexd did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
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

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}
