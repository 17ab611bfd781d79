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
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

#[path = "../../../server/tests/common/process.rs"]
mod process;
pub use process::{free_port, DaemonProcess};

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

/// `127.0.0.1:<port>`.
pub fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A running daemon (its process: `child`, `root`, `log`, `signal`, `wait`, `stop`,
/// `kill9`, through `Deref`).
pub struct Daemon {
    proc_: DaemonProcess,
    /// Its port.
    pub port: u16,
    node_id: u64,
    extra: Vec<String>,
}

impl Deref for Daemon {
    type Target = DaemonProcess;
    fn deref(&self) -> &DaemonProcess {
        &self.proc_
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut DaemonProcess {
        &mut self.proc_
    }
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
            proc_: DaemonProcess::new(root),
            port,
            node_id,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let mut args: Vec<String> = vec![
            "--backup-interval".into(),
            "0".into(),
            "--node-id".into(),
            self.node_id.to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let port = self.port;
        self.proc_.spawn(duplexd(), port, &args);
        // Ready once it reports a state other than `starting`.
        self.proc_
            .wait_until(|| state_of(port).is_some_and(|s| s != "starting"));
    }

    /// Starts it again on the same directory and port.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Its state name, read with an inline DUPLEX.STATE, or None if unreachable.
    pub fn state(&self) -> Option<String> {
        state_of(self.port)
    }
}

/// The state name of the daemon on `port`, read with an inline DUPLEX.STATE, or None if
/// unreachable.
fn state_of(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
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
