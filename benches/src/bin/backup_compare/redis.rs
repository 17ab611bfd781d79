//! Redis's side of the roll-forward comparison: redis-server with a pure AOF of the same
//! SETs (`appendonly yes`, `aof-use-rdb-preamble no`, `appendfsync no`, rewrites off),
//! restarted round by round to time the AOF reload. Skipped, with how to install it, when
//! redis-server is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duplex_benches::kv::{key, value};

use super::{dir_bytes, fresh_dir, loadavg, median, MIB};

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The installed redis-server's version, or why the Redis comparison is skipped: a
/// benchmark never installs packages by itself.
fn ensure_redis() -> Result<String, String> {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .ok_or_else(|| {
            "redis-server is not installed; to compare with Redis, install it \
             (Debian/Ubuntu: apt-get install redis-server redis-tools) and run again"
                .into()
        })
}

fn start_redis(dir: &Path, port: u16) -> Redis {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.to_str().expect("utf-8 dir"),
            "--appendonly",
            "yes",
            "--aof-use-rdb-preamble",
            "no",
            "--appendfsync",
            "no",
            "--auto-aof-rewrite-percentage",
            "0",
            "--save",
            "",
            "--logfile",
            "redis.log",
            "--daemonize",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    Redis { child, port }
}

/// Sends one command and reads one reply line (for PING / SHUTDOWN / INFO-less checks).
fn redis_cmd(port: u16, args: &[&[u8]]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut m = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        m.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        m.extend_from_slice(a);
        m.extend_from_slice(b"\r\n");
    }
    s.write_all(&m).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim().to_string())
}

/// Waits until redis answers PING with PONG; returns the seconds waited.
fn wait_pong(port: u16, start: Instant) -> f64 {
    loop {
        if redis_cmd(port, &[b"PING"]).as_deref() == Some("+PONG") {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "redis did not come up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Pipelines `SET key(i) value(i)` for `i` in `0..n`, a writer thread sending and this
/// thread counting `+OK` replies.
fn redis_load(port: u16, n: u64) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(1 << 20);
        for i in 0..n {
            buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$16\r\n");
            buf.extend_from_slice(&key(i));
            buf.extend_from_slice(b"\r\n$100\r\n");
            buf.extend_from_slice(&value(i));
            buf.extend_from_slice(b"\r\n");
            if buf.len() >= 1 << 20 {
                w.write_all(&buf).expect("send");
                buf.clear();
            }
        }
        w.write_all(&buf).expect("send");
    });
    let mut r = BufReader::with_capacity(1 << 20, s);
    let want = n * 5;
    let mut got = 0u64;
    let mut chunk = vec![0u8; 1 << 16];
    while got < want {
        let k = r.read(&mut chunk).expect("read replies");
        assert!(k > 0, "redis closed the connection");
        assert!(
            chunk[..k].iter().all(|&b| b"+OK\r\n".contains(&b)),
            "non-OK reply"
        );
        got += k as u64;
    }
    writer.join().expect("writer");
}

fn shutdown_redis(mut r: Redis) {
    let _ = redis_cmd(r.port, &[b"SHUTDOWN"]);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(_)) = r.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the "DB loaded from append only file: X seconds" line; returns X.
fn wait_aof_loaded(log: &Path, start: Instant) -> f64 {
    loop {
        if let Ok(s) = std::fs::read_to_string(log) {
            // The last start's line is the last one in the file.
            if let Some(line) = s
                .lines()
                .rfind(|l| l.contains("DB loaded from append only file:"))
            {
                let secs = line
                    .rsplit("append only file:")
                    .next()
                    .and_then(|t| t.split_whitespace().next())
                    .and_then(|x| x.parse().ok());
                if let Some(x) = secs {
                    return x;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no AOF load line"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug, Default)]
pub(super) struct RedisResult {
    pub(super) version: String,
    pub(super) aof_bytes: u64,
    pub(super) load_s: Vec<f64>,
    pub(super) wall_s: Vec<f64>,
    pub(super) write_s: f64,
}

/// Redis with the AOF of the SETs written, ready to be restarted (reloaded) round by round.
pub(super) struct RedisBench {
    dir: tempfile::TempDir,
    port: u16,
    n: u64,
    pub(super) res: RedisResult,
}

impl RedisBench {
    /// Starts redis-server, writes the `n` SETs into its AOF, stops it.
    pub(super) fn setup(n: u64) -> Result<RedisBench, String> {
        let version = ensure_redis()?;
        let dir = fresh_dir("redis");
        let port = duplex_testkit::free_port();
        let r = start_redis(dir.path(), port);
        wait_pong(port, Instant::now());
        let t = Instant::now();
        redis_load(port, n);
        let write_s = t.elapsed().as_secs_f64();
        shutdown_redis(r);
        let aof_bytes = dir_bytes(&dir.path().join("appendonlydir"));
        println!(
            "  redis: {n} SETs written in {write_s:.1} s; AOF directory {:.1} MiB",
            aof_bytes as f64 / MIB as f64
        );
        Ok(RedisBench {
            dir,
            port,
            n,
            res: RedisResult {
                version,
                aof_bytes,
                write_s,
                ..RedisResult::default()
            },
        })
    }

    /// One restart: times the AOF reload (by its log line and until PING answers).
    pub(super) fn round(&mut self, round: u64) -> f64 {
        let (port, n) = (self.port, self.n);
        let log = self.dir.path().join("redis.log");
        // Each start appends to the log: remember how many load lines came before.
        let before = std::fs::read_to_string(&log)
            .map(|s| s.matches("DB loaded from append only file:").count())
            .unwrap_or(0);
        let t = Instant::now();
        let r = start_redis(self.dir.path(), port);
        let wall = wait_pong(port, t);
        let loaded = loop {
            let c = std::fs::read_to_string(&log)
                .map(|s| s.matches("DB loaded from append only file:").count())
                .unwrap_or(0);
            if c > before {
                break wait_aof_loaded(&log, t);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let keys = redis_cmd(port, &[b"DBSIZE"]).unwrap_or_default();
        assert_eq!(keys, format!(":{n}"), "redis reloaded every key");
        self.res.load_s.push(loaded);
        self.res.wall_s.push(wall);
        println!(
            "  round {round}: redis AOF load {loaded:.3} s by its log ({:.0} SETs/s), {wall:.3} s until PONG, load {}",
            n as f64 / loaded,
            loadavg()
        );
        shutdown_redis(r);
        loaded
    }
}

impl RedisResult {
    /// SETs per second of the median AOF reload of `n` SETs.
    pub(super) fn records_rate(&self, n: u64) -> f64 {
        n as f64 / median(self.load_s.clone())
    }
}
