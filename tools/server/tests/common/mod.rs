//! The server suites' side of the `duplexd` harness (`duplex_testkit::daemon`): start the
//! binary this package builds on a free port, ready once it answers a DUPLEX.STATE, with
//! the connection layer `DUPLEXD_IO` names; `redis` crate clients; raw TCP; and for the
//! replication suites, servers that name each other as peers ([`cluster`]).
#![allow(dead_code)]

pub mod cluster;
pub mod rebuild;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use duplex_testkit::daemon::Daemon;
use duplex_testkit::daemon::Spec;
use duplex_testkit::free_port;

/// `--io MODE` when the environment variable `DUPLEXD_IO` names a connection layer
/// (`threads` or `events`), so the whole suite runs against either; nothing otherwise (the
/// daemon's default).
pub fn io_flags() -> Vec<String> {
    match std::env::var("DUPLEXD_IO") {
        Ok(m) if !m.is_empty() => vec!["--io".into(), m],
        _ => Vec::new(),
    }
}

/// Ready once it answers a DUPLEX.STATE (allowed before AUTH).
pub fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = [0u8; 256];
    s.write_all(b"DUPLEX.STATE\r\n").is_ok() && s.read(&mut b).is_ok_and(|n| n > 0)
}

/// What the server suites add to a daemon.
pub trait ServerDaemon {
    /// Starts `duplexd` in `root` (data in root/data) on a free port with extra flags;
    /// waits until it answers.
    fn start_in(root: &Path, extra: &[&str]) -> Daemon;
    /// A `redis` crate client.
    fn client(&self) -> redis::Client;
    /// A connection.
    fn conn(&self) -> redis::Connection;
}

impl ServerDaemon for Daemon {
    fn start_in(root: &Path, extra: &[&str]) -> Daemon {
        let mut args = io_flags();
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::launch(Spec {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_duplexd")),
            root: root.to_path_buf(),
            port: free_port(),
            args,
            ready: answers,
        })
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap()
    }

    fn conn(&self) -> redis::Connection {
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
