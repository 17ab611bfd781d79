//! Helpers for the integration tests: spawn the real `duplexd` binary on a free port with a
//! temporary data directory, wait until it answers PING, and kill it when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running daemon.
pub struct Daemon {
    /// The child process (None once waited for).
    pub child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// The temp directory holding data/, backups/, archive/.
    pub root: PathBuf,
    extra: Vec<String>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `--io MODE` when the environment variable `DUPLEXD_IO` names a connection layer
/// (`threads` or `events`), so the whole suite runs against either; nothing otherwise (the
/// daemon's default).
pub fn io_flags() -> Vec<String> {
    match std::env::var("DUPLEXD_IO") {
        Ok(m) if !m.is_empty() => vec!["--io".into(), m],
        _ => Vec::new(),
    }
}

impl Daemon {
    /// Starts `duplexd` in `root` (data in root/data) with extra flags; waits for PING.
    pub fn start_in(root: &Path, extra: &[&str]) -> Daemon {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut d = Daemon {
            child: None,
            port: free_port(),
            root: root.to_path_buf(),
            extra,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("duplexd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_duplexd"))
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--data")
            .arg(self.root.join("data"))
            .arg("--backup-dir")
            .arg(self.root.join("backups"))
            .arg("--archive-dir")
            .arg(self.root.join("archive"))
            .args(io_flags())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    /// Restarts on the same directory and port.
    pub fn restart(&mut self) {
        self.spawn();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                if s.write_all(b"DUPLEX.STATE\r\n").is_ok() {
                    let mut b = [0u8; 256];
                    if let Ok(n) = s.read(&mut b) {
                        if n > 0 {
                            return;
                        }
                    }
                }
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

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("duplexd.log")).unwrap_or_default()
    }

    /// A `redis` crate client.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap()
    }

    /// A connection.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
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

/// Sends raw bytes and reads until the server closes or `secs` pass.
pub fn raw(port: u16, bytes: &[u8], secs: u64) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut b = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => {}
        }
    }
    (got, false)
}
