//! Helpers for the integration tests: spawn the real `duplexd` binary on a free port with a
//! temporary data directory, wait until it answers PING, and kill it when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

mod process;
pub use process::{free_port, DaemonProcess};

/// A running daemon (its process: `log`, `signal`, `wait`, `kill9`, through `Deref`).
pub struct Daemon {
    proc_: DaemonProcess,
    /// Its port.
    pub port: u16,
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
        let mut flags = io_flags();
        flags.extend(extra.iter().map(|s| s.to_string()));
        let mut d = Daemon {
            proc_: DaemonProcess::new(root),
            port: free_port(),
            extra: flags,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let (port, extra) = (self.port, self.extra.clone());
        self.proc_
            .spawn(Path::new(env!("CARGO_BIN_EXE_duplexd")), port, &extra);
        // Ready once it answers a DUPLEX.STATE (allowed before AUTH).
        self.proc_.wait_until(|| {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut b = [0u8; 256];
            s.write_all(b"DUPLEX.STATE\r\n").is_ok() && s.read(&mut b).is_ok_and(|n| n > 0)
        });
    }

    /// Restarts on the same directory and port.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// A `redis` crate client.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap()
    }

    /// A connection.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
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
