//! A real S3-compatible server on loopback for the object-storage tests: moto's server
//! mode (`pip install 'moto[server]'`, binary `moto_server`), started by the test itself.
//!
//! Where it must exist: `.ci/run` installs it and sets `DUPLEX_TEST_S3=required`; with that
//! (or `CI` set to anything but `0`/`false`) a missing `moto_server` fails the test with the
//! install command. Elsewhere a missing binary skips the test with a printed reason.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket every test server is created with.
pub const BUCKET: &str = "duplex-test";

/// A running moto server (killed on drop).
#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// True when the environment says the S3 test server must be present.
pub fn required() -> bool {
    let set = |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty() && v != "0" && v != "false")
    };
    set("DUPLEX_TEST_S3").is_some_and(|v| v == "required") || set("CI").is_some()
}

fn find_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DUPLEX_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}

impl S3Server {
    /// Starts one on a free port with [`BUCKET`] created; `None` (after printing why) when
    /// `moto_server` is missing and not [`required`].
    ///
    /// # Panics
    /// If it is required and missing, or does not start within 30 s.
    pub fn start(test: &str) -> Option<S3Server> {
        let Some(bin) = find_bin() else {
            assert!(
                !required(),
                "{test}: moto_server is not installed but this environment requires the S3 tests (DUPLEX_TEST_S3=required or CI set): pip install 'moto[server]'"
            );
            eprintln!("SKIPPED {test}: moto_server not found on PATH (pip install 'moto[server]' to run the object-storage tests)");
            return None;
        };
        let mut s = S3Server {
            child: None,
            bin,
            port: crate::free_port(),
        };
        s.restart();
        Some(s)
    }

    /// (Re)starts the server on its port (a killed moto forgets everything: the bucket is
    /// created again, empty).
    ///
    /// # Panics
    /// If it does not answer within 30 s.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if self
                .request("PUT", &format!("/{BUCKET}"))
                .is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
            {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "moto_server on port {} did not start within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs the server (what it held is gone).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pid of the server process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a client of this server needs (endpoint, region, test
    /// credentials, plain HTTP).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret-do-not-log".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// `s3://duplex-test/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// One raw HTTP request with no body; the response head, if any.
    pub fn request(&self, method: &str, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
