//! What the `duplex-recover` suites share: running the binary this package builds and
//! reading its exit code and output.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::process::Command;

/// The `duplex-recover` binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_duplex-recover");

/// One run's exit code and output.
pub struct Out {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// Standard output followed by standard error.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `duplex-recover` with `args` and waits for it.
pub fn run<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("spawn duplex-recover");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
