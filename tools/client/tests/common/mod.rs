//! The client suite's side of the `duplexd` harness (`duplex_testkit::daemon`): start the
//! binary (`duplex_testkit::daemon::duplexd` finds it) on a chosen port as a given node,
//! with the backup scheduler off, ready once it reports a state other than `starting`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

pub use duplex_testkit::daemon::Daemon;
use duplex_testkit::daemon::{duplexd, Spec};
pub use duplex_testkit::{addr, free_port};

/// What the client suite adds to a daemon.
pub trait NodeDaemon {
    /// Starts `duplexd` with its files under `root`, on `port`, as node `node_id`; waits
    /// until it reports a state other than `starting`.
    fn start(root: &Path, port: u16, node_id: u64) -> Daemon;
    /// [`NodeDaemon::start`] with extra flags.
    fn start_with(root: &Path, port: u16, node_id: u64, extra: &[&str]) -> Daemon;
    /// Its state name, read with an inline DUPLEX.STATE, or None if unreachable.
    fn state(&self) -> Option<String>;
}

impl NodeDaemon for Daemon {
    fn start(root: &Path, port: u16, node_id: u64) -> Daemon {
        Daemon::start_with(root, port, node_id, &[])
    }

    fn start_with(root: &Path, port: u16, node_id: u64, extra: &[&str]) -> Daemon {
        let mut args: Vec<String> = vec![
            "--backup-interval".into(),
            "0".into(),
            "--node-id".into(),
            node_id.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon::launch(Spec {
            bin: duplexd().to_path_buf(),
            root: root.to_path_buf(),
            port,
            args,
            ready: |port| state_of(port).is_some_and(|s| s != "starting"),
        })
    }

    fn state(&self) -> Option<String> {
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
