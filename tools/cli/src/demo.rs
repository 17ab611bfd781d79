//! `duplexctl demo`: the showcase of the method on a film line (DESIGN.md; the patent's
//! process control and production control servers).
//!
//! Two `duplexd`s on loopback replicate to each other: *process control* (node 1) serves
//! the machines on the line (the slitter, the winder, the boxer, the packer), *production
//! control* (node 2) the two planning desks. Every client writes production instructions
//! and manufacturing history through `duplex-client`, with the other server as its backup
//! and failback on. After a while production control's data directory is destroyed (the
//! process killed with SIGKILL, the directory deleted); its clients fail over to process
//! control; production control is rebuilt from its peer (`--rebuild-from`) while everyone
//! keeps working; the clients fail back; the two databases are compared. The demo prints a
//! timeline and a summary (writes made and lost, switch time, rebuild time, the write hold's
//! pause) and removes what it created unless asked to keep it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex_client::{Client, ClientConfig};

use crate::exit::ToolError;
use crate::resp::{pairs, text, Conn, ConnectOptions};

/// The demo's settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `duplexd` binary.
    pub duplexd: PathBuf,
    /// Seconds of work before the disk is destroyed.
    pub before_secs: u64,
    /// Seconds of work after production control is running again.
    pub after_secs: u64,
    /// Keep the servers' directories (printed) instead of removing them.
    pub keep: bool,
}

/// What the demo measured.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Writes acknowledged to the clients.
    pub writes: u64,
    /// Acknowledged writes found on neither server at the end.
    pub lost: u64,
    /// Of those, acknowledged by production control in the last second before its disk
    /// was destroyed (the fault model's allowance: not yet replicated).
    pub lost_allowed: u64,
    /// Writes whose outcome the clients could not know (the connection broke mid-call).
    pub unknown: u64,
    /// Longest time from the destruction to a planning desk's first write on process
    /// control, ms.
    pub switch_ms: u64,
    /// From the restart with `--rebuild-from` to `running`, ms.
    pub rebuild_ms: u64,
    /// The write hold, as process control logged it.
    pub hold: Option<String>,
    /// Whether both servers ended with the same stamped digest.
    pub identical: bool,
}

/// One server of the demo.
struct Server {
    name: &'static str,
    node: u64,
    port: u16,
    peer_port: u16,
    root: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&mut self, duplexd: &Path, secret: &Path, rebuild: bool) -> Result<(), ToolError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("duplexd.log"))
            .map_err(|e| ToolError::operational(format!("cannot write the demo's log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| ToolError::operational(format!("cannot write the demo's log: {e}")))?;
        let mut cmd = Command::new(duplexd);
        cmd.args([
            "--node-id",
            &self.node.to_string(),
            "--port",
            &self.port.to_string(),
        ])
        .args(["--peer", &format!("127.0.0.1:{}", self.peer_port)])
        .arg("--cluster-secret-file")
        .arg(secret)
        .arg("--data")
        .arg(self.root.join("data"))
        .arg("--archive-dir")
        .arg(self.root.join("archive"))
        .arg("--backup-dir")
        .arg(self.root.join("backups"));
        if rebuild {
            cmd.args(["--rebuild-from", &format!("127.0.0.1:{}", self.peer_port)]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                ToolError::operational(format!(
                    "cannot start {} ({}): {e}; build it first (cargo build --release -p duplex-server) or pass --duplexd",
                    self.name,
                    duplexd.display()
                ))
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server answers `running`.
    fn wait_running(&mut self, within: Duration) -> Result<(), ToolError> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if state(&self.addr()).as_deref() == Some("running") {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                return Err(ToolError::operational(format!(
                    "{} exited ({st}) before it was running; its log: {}",
                    self.name,
                    self.root.join("duplexd.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ToolError::operational(format!(
            "{} did not reach state running within {} s; its log: {}",
            self.name,
            within.as_secs(),
            self.root.join("duplexd.log").display()
        )))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server cleanly (SIGTERM), SIGKILL after 20 s.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        password: None,
        connect_timeout: Duration::from_millis(500),
        io_timeout: Duration::from_secs(30),
    }
}

/// The server's state, `None` if it does not answer.
fn state(addr: &str) -> Option<String> {
    let mut c = Conn::connect(addr, &opts()).ok()?;
    let r = c.call(&[b"DUPLEX.STATE"]).ok()?;
    pairs(&r)?
        .into_iter()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v)
}

fn digest(addr: &str) -> Option<String> {
    let mut c = Conn::connect(addr, &opts()).ok()?;
    c.call(&[b"DUPLEX.DIGEST"]).ok().map(|r| text(&r))
}

fn free_port() -> Result<u16, ToolError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ToolError::operational(format!("no free loopback port: {e}")))
}

/// One acknowledged write: key, value, the server it went to (0 process control, 1
/// production control), when.
#[derive(Debug, Clone)]
struct Acked {
    key: String,
    value: String,
    server: usize,
    at: Instant,
}

/// What the clients share with the conductor.
#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    unknown: u64,
}

/// A client of the line: writes until `stop`, remembering what was acknowledged.
fn client(
    name: &'static str,
    servers: [String; 2],
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let cfg = ClientConfig::new(servers)
        .poll_interval(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(300))
        .read_timeout(Duration::from_secs(2))
        .failback(true);
    let mut c = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if c.is_none() {
            c = Client::connect(cfg.clone()).ok();
            if c.is_none() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let Some(cl) = c.as_mut() else { continue };
        seq += 1;
        let (key, value) = if seq.is_multiple_of(3) {
            (
                format!("instructions:{name}:{seq:06}"),
                format!("{name}: next roll #{seq}, 1,200 m, 35 mm"),
            )
        } else {
            (
                format!("history:{name}:{seq:06}"),
                format!("{name}: roll #{seq} done, no defects"),
            )
        };
        match cl.set(&key, &value) {
            Ok(()) => {
                let server = cl.current_index().unwrap_or(0);
                if let Ok(mut l) = ledger.lock() {
                    l.acked.push(Acked {
                        key,
                        value,
                        server,
                        at: Instant::now(),
                    });
                }
            }
            Err(duplex_client::Error::OutcomeUnknown { .. }) => {
                if let Ok(mut l) = ledger.lock() {
                    l.unknown += 1;
                }
            }
            Err(_) => {
                c = None;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the demo, printing the timeline through `say`.
pub fn run(o: &DemoOptions, say: &mut dyn FnMut(&str)) -> Result<Summary, ToolError> {
    let dir = tempfile::Builder::new()
        .prefix("duplex-demo-")
        .tempdir()
        .map_err(|e| ToolError::operational(format!("cannot create the demo's directory: {e}")))?;
    let secret = dir.path().join("cluster-secret");
    std::fs::write(&secret, "film line demo secret\n")
        .map_err(|e| ToolError::operational(format!("cannot write the demo's secret: {e}")))?;
    let (pa, pb) = (free_port()?, free_port()?);
    let mut servers = [
        new_server("process control", 1, pa, pb, dir.path())?,
        new_server("production control", 2, pb, pa, dir.path())?,
    ];
    let t0 = Instant::now();
    let mut at = |s: &str| say(&format!("t={:5.1} s  {s}", t0.elapsed().as_secs_f64()));
    for s in servers.iter_mut() {
        s.start(&o.duplexd, &secret, false)?;
    }
    for s in servers.iter_mut() {
        s.wait_running(Duration::from_secs(30))?;
    }
    at(&format!(
        "process control (node 1, {}) and production control (node 2, {}) running, replicating to each other",
        servers[0].addr(),
        servers[1].addr()
    ));
    let res = work(o, &mut servers, &secret, &mut at);
    if o.keep {
        let kept = dir.keep();
        at(&format!("kept: {}", kept.display()));
    }
    res
}

fn new_server(
    name: &'static str,
    node: u64,
    port: u16,
    peer_port: u16,
    root: &Path,
) -> Result<Server, ToolError> {
    let root = root.join(format!("node{node}"));
    std::fs::create_dir_all(&root)
        .map_err(|e| ToolError::operational(format!("cannot create {}: {e}", root.display())))?;
    Ok(Server {
        name,
        node,
        port,
        peer_port,
        root,
        child: None,
    })
}

/// The clients, the loss, the rebuild, the comparison.
fn work(
    o: &DemoOptions,
    servers: &mut [Server; 2],
    secret: &Path,
    at: &mut dyn FnMut(&str),
) -> Result<Summary, ToolError> {
    let (a, b) = (servers[0].addr(), servers[1].addr());
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let line = ["slitter", "winder", "boxer", "packer"];
    let desks = ["planning desk 1", "planning desk 2"];
    let mut threads = Vec::new();
    for name in line {
        let (s, l, list) = (stop.clone(), ledger.clone(), [a.clone(), b.clone()]);
        threads.push(std::thread::spawn(move || client(name, list, s, l)));
    }
    for name in desks {
        let (s, l, list) = (stop.clone(), ledger.clone(), [b.clone(), a.clone()]);
        threads.push(std::thread::spawn(move || client(name, list, s, l)));
    }
    at("the slitter, the winder, the boxer and the packer write to process control; the two planning desks to production control");
    std::thread::sleep(Duration::from_secs(o.before_secs));
    servers[1].kill9();
    let lost_at = Instant::now();
    let data = servers[1].root.join("data");
    std::fs::remove_dir_all(&data)
        .map_err(|e| ToolError::operational(format!("cannot delete {}: {e}", data.display())))?;
    at("production control's disk is destroyed: the process killed (SIGKILL), its data directory deleted");
    std::thread::sleep(Duration::from_secs(1));
    let switch_ms = switch_time(&ledger, lost_at);
    at(&format!("the planning desks now write to process control (first write there {switch_ms} ms after the loss)"));
    at("production control restarts with --rebuild-from process control, which keeps serving");
    let rebuild_start = Instant::now();
    servers[1].start(&o.duplexd, secret, true)?;
    servers[1].wait_running(Duration::from_secs(120))?;
    let rebuild_ms = rebuild_start.elapsed().as_millis() as u64;
    at(&format!(
        "production control is running again: rebuilt in {:.1} s",
        rebuild_ms as f64 / 1000.0
    ));
    std::thread::sleep(Duration::from_secs(o.after_secs));
    at("the planning desks are back on production control (failback)");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    at("the line stops; waiting for the two servers to agree");
    let identical = converge(&a, &b);
    let mut s = tally(&ledger, &a, &b, lost_at)?;
    s.switch_ms = switch_ms;
    s.rebuild_ms = rebuild_ms;
    s.identical = identical;
    s.hold = hold_line(&servers[0].root.join("duplexd.log"));
    at(if identical {
        "compare: both databases hold the same versions (DUPLEX.DIGEST equal)"
    } else {
        "compare: the databases differ (see duplexctl compare)"
    });
    servers[0].stop();
    servers[1].stop();
    Ok(s)
}

/// Longest time from the loss to a planning desk's first write acknowledged afterwards.
fn switch_time(ledger: &Arc<Mutex<Ledger>>, lost_at: Instant) -> u64 {
    let Ok(l) = ledger.lock() else { return 0 };
    let mut worst = 0u64;
    for desk in ["planning desk 1", "planning desk 2"] {
        if let Some(first) = l
            .acked
            .iter()
            .filter(|w| w.key.contains(desk) && w.at > lost_at)
            .map(|w| w.at.duration_since(lost_at).as_millis() as u64)
            .min()
        {
            worst = worst.max(first);
        }
    }
    worst
}

fn converge(a: &str, b: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match (digest(a), digest(b)) {
            (Some(x), Some(y)) if x == y => return true,
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    false
}

/// Every acknowledged write read back from both servers.
fn tally(
    ledger: &Arc<Mutex<Ledger>>,
    a: &str,
    b: &str,
    lost_at: Instant,
) -> Result<Summary, ToolError> {
    let l = ledger
        .lock()
        .map_err(|_| ToolError::operational("a client thread failed".to_string()))?;
    let mut ca = Conn::connect(a, &opts())?;
    let mut cb = Conn::connect(b, &opts())?;
    let mut s = Summary {
        writes: l.acked.len() as u64,
        unknown: l.unknown,
        ..Summary::default()
    };
    for w in &l.acked {
        let ga = text(&ca.call(&[b"GET", w.key.as_bytes()])?);
        let gb = text(&cb.call(&[b"GET", w.key.as_bytes()])?);
        if ga != w.value && gb != w.value {
            s.lost += 1;
            let recent = w.at <= lost_at && lost_at.duration_since(w.at) < Duration::from_secs(1);
            if w.server == 1 && recent {
                s.lost_allowed += 1;
            }
        }
    }
    Ok(s)
}

/// Process control's log line of the write hold, if any.
fn hold_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("write_hold"))?;
    let i = line.find("writes paused")?;
    Some(line[i..].trim_end_matches('"').to_string())
}
