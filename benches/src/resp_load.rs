//! A small RESP client and two SET loads for the process-level benchmarks (`repl_bench`):
//! one blocking TCP connection per thread, requests encoded with
//! `duplex_proto::encode_request`, replies read with `duplex_proto::parse_reply`.
//!
//! - [`paced_sets`]: a fixed rate split over several connections, each sending its SETs in
//!   time slots (the SETs whose slot has come go out together, pipelined); reports how far
//!   behind its schedule the load fell, so a server that cannot keep up shows.
//! - [`unpaced_sets`]: as fast as the server answers, redis-benchmark style (connections,
//!   pipeline depth, random keys out of a key space, fixed-size values).
//!
//! Every SET reply must be `+OK`: anything else is counted in [`LoadReport::bad`] with the
//! first one kept.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use duplex_proto::{encode_request, parse_reply, Limits, Reply};

/// Most SETs one connection sends in one write (a paced connection that fell behind sends
/// at most this many at once before reading their replies).
const MAX_PIPELINE: u64 = 256;

/// One blocking RESP connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
    lim: Limits,
}

fn bad_data(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Client {
    /// Connects to `addr` (no delay on).
    pub fn connect(addr: &str) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(64 << 10),
            start: 0,
            out: Vec::with_capacity(64 << 10),
            lim: Limits::default(),
        })
    }

    /// Sets how long a reply may take (default 30 s; `None`: forever), for slow commands
    /// such as a paced `DUPLEX.BACKUP` of a large store.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(d)
    }

    /// Queues one request (sent by [`Client::flush`]).
    pub fn queue<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        encode_request(&mut self.out, args);
    }

    /// Sends every queued request in one write.
    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// The next reply.
    pub fn reply(&mut self) -> io::Result<Reply> {
        loop {
            match parse_reply(&self.buf[self.start..], &self.lim) {
                Ok(Some((r, used))) => {
                    self.start += used;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(r);
                }
                Ok(None) => {}
                Err(e) => return Err(bad_data(format!("bad reply from the server: {e:?}"))),
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 64 << 10];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one request and waits for its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.queue(args);
        self.flush()?;
        self.reply()
    }

    /// `DUPLEX.PEERS`: one map of field to value per peer row.
    pub fn peers(&mut self) -> io::Result<Vec<HashMap<String, String>>> {
        let Reply::Array(rows) = self.call(&["DUPLEX.PEERS"])? else {
            return Err(bad_data("DUPLEX.PEERS did not answer an array".into()));
        };
        let mut out = Vec::new();
        for row in rows {
            let Reply::Array(items) = row else {
                return Err(bad_data("a DUPLEX.PEERS row is not an array".into()));
            };
            let text = |r: &Reply| match r {
                Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                Reply::Simple(s) => s.clone(),
                other => format!("{other:?}"),
            };
            let map = items
                .chunks(2)
                .filter(|p| p.len() == 2)
                .map(|p| (text(&p[0]), text(&p[1])))
                .collect();
            out.push(map);
        }
        Ok(out)
    }

    /// Reads `n` replies, counting `+OK` ones; keeps the first other reply in `first_bad`.
    fn expect_ok(&mut self, n: u64, report: &mut LoadReport) -> io::Result<()> {
        for _ in 0..n {
            match self.reply()? {
                Reply::Simple(s) if s == "OK" => report.ok += 1,
                other => {
                    report.bad += 1;
                    if report.first_bad.is_none() {
                        report.first_bad = Some(format!("{other:?}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// SETs answered `+OK`.
    pub ok: u64,
    /// SETs answered anything else.
    pub bad: u64,
    /// The first such answer.
    pub first_bad: Option<String>,
    /// Seconds from the start to the last reply.
    pub secs: f64,
    /// Paced loads: the furthest any connection fell behind its schedule, ms.
    pub max_behind_ms: f64,
    /// Paced loads: SETs not sent because the load ran out of time (the server could not
    /// take the rate).
    pub unsent: u64,
}

impl LoadReport {
    /// `+OK` SETs per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }

    fn merge(&mut self, o: LoadReport) {
        self.ok += o.ok;
        self.bad += o.bad;
        if self.first_bad.is_none() {
            self.first_bad = o.first_bad;
        }
        self.secs = self.secs.max(o.secs);
        self.max_behind_ms = self.max_behind_ms.max(o.max_behind_ms);
        self.unsent += o.unsent;
    }
}

/// A paced SET load.
#[derive(Debug, Clone)]
pub struct Paced {
    /// SETs per second, all connections together.
    pub rate: u64,
    /// How long, seconds.
    pub secs: f64,
    /// Connections (one thread each).
    pub conns: usize,
    /// Key prefix: key `i` of connection `c` is `<prefix>:<c>:<i>`, each written once.
    pub prefix: String,
    /// Value bytes.
    pub value_len: usize,
}

/// Runs `p` against `addr`: connection `c` sends its `i`-th SET at `start + i / (rate /
/// conns)`, every SET whose slot has come in one write, and reads their replies before the
/// next slot. A connection more than `2 * secs` late gives up on what is left (counted in
/// `unsent`).
pub fn paced_sets(addr: &str, p: &Paced) -> io::Result<LoadReport> {
    let per_conn = (p.rate as f64 * p.secs / p.conns as f64).round() as u64;
    let interval = p.conns as f64 / p.rate as f64;
    let start = Instant::now();
    let give_up = Duration::from_secs_f64(p.secs * 3.0);
    let results: Vec<io::Result<LoadReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..p.conns)
            .map(|c| {
                s.spawn(move || -> io::Result<LoadReport> {
                    let mut cl = Client::connect(addr)?;
                    let value = vec![b'v'; p.value_len];
                    let mut r = LoadReport::default();
                    let mut done = 0u64;
                    while done < per_conn {
                        let now = start.elapsed();
                        if now > give_up {
                            r.unsent = per_conn - done;
                            break;
                        }
                        let due = ((now.as_secs_f64() / interval) as u64 + 1).min(per_conn);
                        if due <= done {
                            let next = Duration::from_secs_f64(done as f64 * interval);
                            std::thread::sleep(next.saturating_sub(now));
                            continue;
                        }
                        let behind = now.as_secs_f64() - done as f64 * interval;
                        r.max_behind_ms = r.max_behind_ms.max(behind * 1000.0);
                        let n = (due - done).min(MAX_PIPELINE);
                        for i in done..done + n {
                            let key = format!("{}:{c}:{i}", p.prefix);
                            cl.queue(&[b"SET".as_slice(), key.as_bytes(), &value]);
                        }
                        cl.flush()?;
                        cl.expect_ok(n, &mut r)?;
                        done += n;
                    }
                    r.secs = start.elapsed().as_secs_f64();
                    Ok(r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a load thread panicked"))
            .collect()
    });
    let mut total = LoadReport::default();
    for r in results {
        total.merge(r?);
    }
    Ok(total)
}

/// An unpaced SET load, redis-benchmark style.
#[derive(Debug, Clone)]
pub struct Unpaced {
    /// Connections (one thread each).
    pub conns: usize,
    /// SETs in flight per connection.
    pub pipeline: u64,
    /// How long, seconds.
    pub secs: f64,
    /// Keys are `key:<n>` with `n` random below this.
    pub keyspace: u64,
    /// Value bytes.
    pub value_len: usize,
}

/// Runs `u` against `addr`: every connection sends `pipeline` SETs, reads their replies,
/// and again, until `secs` have passed.
pub fn unpaced_sets(addr: &str, u: &Unpaced) -> io::Result<LoadReport> {
    let start = Instant::now();
    let until = Duration::from_secs_f64(u.secs);
    let results: Vec<io::Result<LoadReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..u.conns)
            .map(|c| {
                s.spawn(move || -> io::Result<LoadReport> {
                    let mut cl = Client::connect(addr)?;
                    let value = vec![b'v'; u.value_len];
                    let mut rng = crate::engines::XorShift(0x2545_f491_4f6c_dd1d ^ (c as u64 + 1));
                    let mut r = LoadReport::default();
                    while start.elapsed() < until {
                        for _ in 0..u.pipeline {
                            let key = format!("key:{:012}", rng.next_u64() % u.keyspace);
                            cl.queue(&[b"SET".as_slice(), key.as_bytes(), &value]);
                        }
                        cl.flush()?;
                        cl.expect_ok(u.pipeline, &mut r)?;
                    }
                    r.secs = start.elapsed().as_secs_f64();
                    Ok(r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a load thread panicked"))
            .collect()
    });
    let mut total = LoadReport::default();
    for r in results {
        total.merge(r?);
    }
    Ok(total)
}
