//! The replication suites' harness: `duplexd` servers that name each other with `--peer`
//! (each with its own data, archive and backup directories under one root, its own node id,
//! the cluster secret in a file), concurrent writers that remember what was acknowledged,
//! and the checks: equal `DUPLEX.DIGEST` everywhere, every acknowledged key readable
//! everywhere, the peer links' rows from `DUPLEX.PEERS` (or `INFO replication`).
//!
//! A server without the peer link fails these tests loudly: `duplexd` refuses the unknown
//! `--peer` flag at start-up, and [`require_peer_link`] names what is missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duplex_testkit::daemon::{Daemon, Spec};
use duplex_testkit::free_port;
use redis::{Commands, Value};

/// How long servers get to converge once the load stops.
pub const CONVERGE: Duration = Duration::from_secs(40);

/// A free port no other server of this test process was given (the tests of a suite run
/// in parallel, and the kernel may offer a just-released port again).
pub fn fresh_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let p = free_port();
        if GIVEN.lock().unwrap().insert(p) {
            return p;
        }
    }
}

/// One server of a test cluster: how to (re)start it.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Its node id.
    pub id: u64,
    /// Its RESP port (the peer link shares it).
    pub port: u16,
    /// Its root: data/, archive/, backups/, duplexd.log.
    pub root: PathBuf,
    /// The `--peer` addresses.
    pub peers: Vec<String>,
    /// The secret file.
    pub secret: PathBuf,
}

impl NodeSpec {
    /// A node `id` under `dir/n<id>` on a free port, no peers yet.
    pub fn new(dir: &Path, id: u64, secret: &Path) -> NodeSpec {
        NodeSpec {
            id,
            port: fresh_port(),
            root: dir.join(format!("n{id}")),
            peers: Vec::new(),
            secret: secret.to_path_buf(),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it and waits until it answers.
    pub fn start(&self) -> Daemon {
        let mut args = super::io_flags();
        args.extend(["--node-id".to_string(), self.id.to_string()]);
        args.extend([
            "--cluster-secret-file".to_string(),
            self.secret.display().to_string(),
        ]);
        for p in &self.peers {
            args.extend(["--peer".to_string(), p.clone()]);
        }
        let d = Daemon::launch(Spec {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_duplexd")),
            root: self.root.clone(),
            port: self.port,
            args,
            ready: super::answers,
        });
        require_peer_link(self.port, &d);
        d
    }
}

/// Writes a cluster secret file (mode 0600) holding `secret`.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `n` nodes (ids 1..=n) in a full mesh: each names every other.
pub fn mesh(dir: &Path, n: u64, secret: &Path) -> Vec<NodeSpec> {
    let mut nodes: Vec<NodeSpec> = (1..=n).map(|id| NodeSpec::new(dir, id, secret)).collect();
    let addrs: Vec<String> = nodes.iter().map(NodeSpec::addr).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        node.peers = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| a.clone())
            .collect();
    }
    nodes
}

/// Fails the test, loudly, if the server on `port` has no peer link.
pub fn require_peer_link(port: u16, d: &Daemon) {
    let r: redis::RedisResult<Value> = redis::cmd("DUPLEX.PEERS").query(&mut conn(port));
    if let Err(e) = r {
        panic!(
            "the peer link (issue 11) is missing: DUPLEX.PEERS answers {e}; log: {}",
            d.log()
        );
    }
}

/// A `redis` connection to `port`.
pub fn conn(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let c = c.get_connection().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// `DUPLEX.DIGEST` of the server on `port`.
pub fn digest(port: u16) -> String {
    redis::cmd("DUPLEX.DIGEST")
        .query(&mut conn(port))
        .unwrap_or_else(|e| panic!("DUPLEX.DIGEST on {port}: {e}"))
}

/// The `last_lsn` field of `DUPLEX.STATE`.
pub fn last_lsn(port: u16) -> u64 {
    let st: Vec<Value> = redis::cmd("DUPLEX.STATE").query(&mut conn(port)).unwrap();
    let st: Vec<String> = st
        .iter()
        .map(|v| redis::from_redis_value::<String>(v).unwrap())
        .collect();
    let i = st.iter().position(|f| f == "last_lsn").unwrap();
    st[i + 1].parse().unwrap()
}

/// One peer link's fields, as `DUPLEX.PEERS` (or `INFO replication`) shows them.
pub type PeerRow = BTreeMap<String, String>;

fn text(v: &Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        Value::Nil => String::new(),
        other => redis::from_redis_value::<String>(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}

/// Parses one row: field/value pairs (an array or a map) or a `k=v,k=v` line.
fn row(v: &Value) -> Option<PeerRow> {
    match v {
        Value::Array(items) if items.len() % 2 == 0 && !items.is_empty() => Some(
            items
                .chunks(2)
                .map(|kv| (text(&kv[0]), text(&kv[1])))
                .collect(),
        ),
        Value::Map(kv) => Some(kv.iter().map(|(k, v)| (text(k), text(v))).collect()),
        Value::BulkString(_) | Value::SimpleString(_) => {
            let s = text(v);
            let s = s.split_once(':').map_or(s.as_str(), |(_, r)| r);
            Some(kv_line(s))
        }
        _ => None,
    }
}

fn kv_line(s: &str) -> PeerRow {
    s.split(',')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Every peer link of the server on `port`: the rows of `DUPLEX.PEERS`, else the `peerN:`
/// lines of `INFO replication`.
pub fn peers(port: u16) -> Vec<PeerRow> {
    let mut c = conn(port);
    if let Ok(Value::Array(items)) = redis::cmd("DUPLEX.PEERS").query::<Value>(&mut c) {
        let rows: Vec<PeerRow> = items.iter().filter_map(row).collect();
        if !rows.is_empty() {
            return rows;
        }
    }
    info_replication(port)
        .lines()
        .filter(|l| l.starts_with("peer") && l.contains(':') && l.contains('='))
        .filter_map(|l| l.split_once(':').map(|(_, r)| kv_line(r)))
        .collect()
}

/// `INFO replication`.
pub fn info_replication(port: u16) -> String {
    redis::cmd("INFO")
        .arg("replication")
        .query(&mut conn(port))
        .unwrap_or_default()
}

/// What the servers on `ports` say about their links, for a failure message.
pub fn status(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| {
            format!(
                "server {p}: digest {} peers {:?}\n{}",
                digest(*p),
                peers(*p),
                info_replication(*p)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every server on `ports` answers the same digest twice in a row (500 ms
/// apart), at most `within`; returns it. Fails with every server's status otherwise.
pub fn converge(ports: &[u16], within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut last: Option<String> = None;
    loop {
        let ds: Vec<String> = ports.iter().map(|p| digest(*p)).collect();
        let same = ds.windows(2).all(|w| w[0] == w[1]);
        if same && last.as_deref() == Some(ds[0].as_str()) {
            return ds[0].clone();
        }
        last = same.then(|| ds[0].clone());
        assert!(
            Instant::now() < deadline,
            "no convergence within {within:?}: {ds:?}\n{}",
            status(ports)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What writers had acknowledged: key -> last acknowledged value.
pub type Acked = Arc<Mutex<HashMap<String, String>>>;

/// Concurrent writers: `per_server` threads on each port, each with its own keys
/// (`<tag>-s<port index>-w<n>-k<i % keys>`) and rising values `v<i>` (so a key's last
/// acknowledged value is its newest), until stopped. A writer whose server fails it stops.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    /// (server index, writer thread).
    handles: Vec<(usize, JoinHandle<u64>)>,
    servers: usize,
    /// Every acknowledged write's key and value.
    pub acked: Acked,
}

impl Load {
    /// Starts the writers.
    pub fn start(ports: &[u16], per_server: usize, tag: &str, keys: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Acked = Arc::default();
        let mut handles = Vec::new();
        for (s, &port) in ports.iter().enumerate() {
            for w in 0..per_server {
                let (stop, acked) = (stop.clone(), acked.clone());
                let prefix = format!("{tag}-s{s}-w{w}");
                handles.push((
                    s,
                    std::thread::spawn(move || writer(port, &prefix, keys, &stop, &acked)),
                ));
            }
        }
        Load {
            stop,
            handles,
            servers: ports.len(),
            acked,
        }
    }

    /// Stops the writers; returns the acknowledged writes (key -> last value) and how many
    /// writes each server acknowledged.
    pub fn stop(self) -> (HashMap<String, String>, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut per = vec![0u64; self.servers];
        for (s, h) in self.handles {
            per[s] += h.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, per)
    }
}

fn writer(port: u16, prefix: &str, keys: u64, stop: &AtomicBool, acked: &Acked) -> u64 {
    let Ok(c) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return 0;
    };
    let Ok(mut c) = c.get_connection() else {
        return 0;
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = format!("{prefix}-k{}", i % keys);
        let v = format!("v{i}");
        if c.set::<_, _, ()>(&k, &v).is_err() {
            break;
        }
        acked.lock().unwrap().insert(k, v);
        i += 1;
    }
    i
}

/// Checks that every acknowledged key holds its value (or, with `newer_ok`, a newer one
/// of the same writer: a write in flight at a kill) on the server on `port`.
pub fn assert_readable(port: u16, acked: &HashMap<String, String>, newer_ok: bool) {
    let mut c = conn(port);
    let keys: Vec<&String> = acked.keys().collect();
    for chunk in keys.chunks(500) {
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut c).unwrap();
        for (k, g) in chunk.iter().zip(got) {
            let want = &acked[*k];
            let g = g.unwrap_or_else(|| panic!("server {port}: acknowledged key {k} missing"));
            let n = |s: &str| s[1..].parse::<u64>().unwrap();
            let ok = if newer_ok {
                n(&g) >= n(want)
            } else {
                &g == want
            };
            assert!(ok, "server {port}: {k} is {g}, acknowledged {want}");
        }
    }
}

/// The count part of a digest `<sum>/<count>`.
pub fn digest_count(d: &str) -> u64 {
    d.split_once('/')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("not a digest: {d}"))
}

/// Polls `f` every 100 ms until it holds, at most `within`; fails with `what` otherwise.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET on the server on `port`.
pub fn get(port: u16, key: &str) -> Option<String> {
    conn(port).get(key).unwrap()
}

/// SET on the server on `port`.
pub fn set(port: u16, key: &str, value: &str) {
    let _: () = conn(port).set(key, value).unwrap();
}

/// One DUPLEX.CONFLICTS entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRow {
    /// The key.
    pub key: String,
    /// Winner's timestamp and origin.
    pub winner: (u64, u64),
    /// Loser's timestamp and origin.
    pub loser: (u64, u64),
    /// Whether the loser was a delete.
    pub loser_deleted: bool,
    /// The losing value, if kept.
    pub loser_value: Option<String>,
}

/// `DUPLEX.CONFLICTS 1000` on `port`: (recorded, dropped, entries).
pub fn conflicts(port: u16) -> (u64, u64, Vec<ConflictRow>) {
    let (rec, dropped, entries): (u64, u64, Vec<Vec<Value>>) = redis::cmd("DUPLEX.CONFLICTS")
        .arg(1000)
        .query(&mut conn(port))
        .unwrap();
    let int = |v: &Value| redis::from_redis_value::<u64>(v).unwrap();
    let rows = entries
        .iter()
        .map(|e| ConflictRow {
            key: redis::from_redis_value(&e[0]).unwrap(),
            winner: (int(&e[1]), int(&e[2])),
            loser: (int(&e[3]), int(&e[4])),
            loser_deleted: int(&e[5]) == 1,
            loser_value: redis::from_redis_value(&e[6]).unwrap(),
        })
        .collect();
    (rec, dropped, rows)
}

/// Every batch record in the live WAL of the server whose root is `root` and whose node
/// id is `node`, as (origin, origin LSN): a local batch is (`node`, its LSN), an applied
/// one (its origin, the LSN of its origin position; the incarnation is left out, as no test
/// here restores a server). Read while the server runs: its unfinished tail ends the read.
///
/// # Panics
/// If the log does not start at LSN 1 (a checkpoint released its start: the comparison
/// needs the whole log).
pub fn logged_batches(root: &Path, node: u64) -> Vec<(u64, u64)> {
    use duplex_engine::batch::{BatchRef, KIND_BATCH};
    let dir = root.join("data").join(duplex_engine::WAL_DIR);
    let mut r = duplex_wal::WalReader::open_dir(Arc::new(duplex_wal::StdStorage), &dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut out = Vec::new();
    let mut first = None;
    while let Some(rec) = r.next_record().unwrap() {
        first.get_or_insert(rec.lsn);
        if rec.kind != KIND_BATCH {
            continue;
        }
        let b = BatchRef::decode(
            &rec.payload,
            duplex_engine::MAX_KEY_SIZE,
            duplex_engine::MAX_VALUE_SIZE,
        )
        .unwrap_or_else(|e| panic!("{}: LSN {}: {e:?}", dir.display(), rec.lsn));
        if b.origin_lsn == 0 {
            assert_eq!(b.stamp.origin, node, "a local batch of another origin");
            out.push((node, rec.lsn));
        } else {
            out.push((
                b.stamp.origin,
                duplex_engine::split_position(b.origin_lsn).1,
            ));
        }
    }
    assert_eq!(
        first,
        Some(1),
        "{}: the log no longer starts at LSN 1",
        dir.display()
    );
    out
}

/// Checks the servers' logs (each `(root, node id)`): every server logged each batch of
/// every origin exactly once, and exactly the batches its origin logged as its own. Waits
/// up to `within` for the last ones to arrive.
pub fn assert_logged_once(servers: &[(PathBuf, u64)], within: Duration) {
    let check = || -> Result<(), String> {
        let logs: Vec<Vec<(u64, u64)>> = servers
            .iter()
            .map(|(root, node)| logged_batches(root, *node))
            .collect();
        for ((_, node), log) in servers.iter().zip(&logs) {
            let set: BTreeSet<&(u64, u64)> = log.iter().collect();
            if set.len() != log.len() {
                let mut seen = BTreeSet::new();
                let dup = log.iter().find(|b| !seen.insert(*b));
                return Err(format!("node {node} logged {dup:?} twice"));
            }
        }
        for ((_, origin), own_log) in servers.iter().zip(&logs) {
            let own: BTreeSet<u64> = own_log
                .iter()
                .filter(|(o, _)| o == origin)
                .map(|b| b.1)
                .collect();
            for ((_, node), log) in servers.iter().zip(&logs) {
                let got: BTreeSet<u64> = log
                    .iter()
                    .filter(|(o, _)| o == origin)
                    .map(|b| b.1)
                    .collect();
                if got != own {
                    return Err(format!(
                        "node {node} holds {} batches of origin {origin}, which logged {} (missing {:?}, extra {:?})",
                        got.len(),
                        own.len(),
                        own.difference(&got).take(5).collect::<Vec<_>>(),
                        got.difference(&own).take(5).collect::<Vec<_>>()
                    ));
                }
            }
        }
        Ok(())
    };
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if e.contains("twice") || Instant::now() >= deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
