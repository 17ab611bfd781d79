//! The process side of a `duplexd` under test, shared by the server's and the client's
//! integration tests (the client's include this file by path): spawn it with its files under
//! one directory and its log appended to `duplexd.log` there, signal it, wait for it, and
//! kill it when dropped. Readiness (what "started" means) is each suite's own.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `duplexd` child process and the directory its files live in.
pub struct DaemonProcess {
    /// The child process (None once reaped).
    pub child: Option<Child>,
    /// The directory holding data/, backups/, archive/ and duplexd.log.
    pub root: PathBuf,
}

impl DaemonProcess {
    /// Nothing running yet, files under `root`.
    pub fn new(root: &Path) -> DaemonProcess {
        DaemonProcess {
            child: None,
            root: root.to_path_buf(),
        }
    }

    /// Spawns `bin` on `port` with data, backups and archive under the root, then `args`.
    pub fn spawn(&mut self, bin: &Path, port: u16, args: &[String]) {
        std::fs::create_dir_all(&self.root).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("duplexd.log"))
            .unwrap();
        let child = Command::new(bin)
            .arg("--port")
            .arg(port.to_string())
            .arg("--data")
            .arg(self.root.join("data"))
            .arg("--backup-dir")
            .arg(self.root.join("backups"))
            .arg("--archive-dir")
            .arg(self.root.join("archive"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Polls `ready` every 20 ms until it says yes; fails the test if the daemon exits or
    /// 20 s pass first.
    pub fn wait_until(&mut self, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ready() {
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

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
