//! `duplexctl`: the operator's view of running Duplex servers over RESP: `status` of
//! several servers, `compare` two databases down to the differing keys, the `conflicts`
//! journal, `backup` on request, and the `rebuild` of a lost server from its peer.
//!
//! This binary parses arguments, shows progress and prints; the work is in the
//! `duplex_cli` library ([`duplex_cli::status`], [`duplex_cli::compare`],
//! [`duplex_cli::conflicts`], [`duplex_cli::resp`]). Exit codes are those of
//! [`duplex_cli::exit`], as `--help` lists them.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use duplex_cli::compare::{compare, Progress, Report};
use duplex_cli::ctl_help::{
    BACKUP_HELP, COMPARE_HELP, CONFLICTS_HELP, DEMO_HELP, MAIN_HELP, REBUILD_HELP, STATUS_HELP,
};
use duplex_cli::exit::{Code, ToolError};
use duplex_cli::resp::{text, Conn, ConnectOptions};
use duplex_cli::{conflicts, status};

/// Inspect and compare running Duplex servers.
#[derive(Debug, Parser)]
#[command(name = "duplexctl", version, after_help = MAIN_HELP)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args)]
struct ConnArgs {
    /// Password sent with AUTH (default: the DUPLEX_PASSWORD environment variable).
    #[arg(long, global = true, value_name = "PASSWORD")]
    password: Option<String>,
    /// Seconds to wait for a connection, and for each reply (x 30).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 2)]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Each server's state, epoch, node id, LSN, archive, last backup, conflicts, peers.
    #[command(after_help = STATUS_HELP)]
    Status {
        /// Servers, as HOST:PORT.
        #[arg(required = true, value_name = "HOST:PORT")]
        servers: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compare two servers' databases; print the differing keys.
    #[command(after_help = COMPARE_HELP)]
    Compare {
        /// Server A, as HOST:PORT.
        #[arg(value_name = "A")]
        a: String,
        /// Server B, as HOST:PORT.
        #[arg(value_name = "B")]
        b: String,
    },
    /// Show a server's conflict journal.
    #[command(after_help = CONFLICTS_HELP)]
    Conflicts {
        /// The server, as HOST:PORT.
        #[arg(value_name = "HOST:PORT")]
        server: String,
        /// How many entries, newest first.
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The film-line showcase: two servers, six clients, a destroyed disk, a rebuild.
    #[command(after_help = DEMO_HELP)]
    Demo {
        /// The duplexd binary (default: next to duplexctl).
        #[arg(long, value_name = "PATH")]
        duplexd: Option<std::path::PathBuf>,
        /// Seconds of work before production control's disk is destroyed.
        #[arg(long, default_value_t = 4)]
        before: u64,
        /// Seconds of work after production control runs again.
        #[arg(long, default_value_t = 3)]
        after: u64,
        /// Keep the servers' directories and logs (the path is printed).
        #[arg(long)]
        keep: bool,
    },
    /// Rebuild a lost server from a healthy peer (optionally starting it) and follow it.
    #[command(after_help = REBUILD_HELP)]
    Rebuild {
        /// The server being rebuilt, as HOST:PORT.
        #[arg(value_name = "HOST:PORT")]
        server: String,
        /// Start duplexd for the rebuild (needs --from and the server's arguments after --).
        #[arg(long, requires = "from")]
        start: bool,
        /// The healthy peer to rebuild from, as HOST:PORT.
        #[arg(long, value_name = "PEER")]
        from: Option<String>,
        /// The duplexd binary for --start (default: next to duplexctl).
        #[arg(long, value_name = "PATH")]
        duplexd: Option<std::path::PathBuf>,
        /// Where the started duplexd's output goes.
        #[arg(long, value_name = "FILE", default_value = "duplexd-rebuild.log")]
        log: std::path::PathBuf,
        /// Seconds to follow before giving up (the rebuild itself goes on).
        #[arg(long, value_name = "SECS", default_value_t = 3600)]
        wait: u64,
        /// The started server's own arguments (after `--`).
        #[arg(last = true, value_name = "DUPLEXD_ARGS")]
        args: Vec<String>,
    },
    /// Ask a server to take a backup now.
    #[command(after_help = BACKUP_HELP)]
    Backup {
        /// The server, as HOST:PORT.
        #[arg(value_name = "HOST:PORT")]
        server: String,
        /// The backup's directory name under the server's backup directory.
        name: Option<String>,
        /// Copy only what the store gained since the newest complete backup of the
        /// server's lineage (DUPLEX.BACKUP ... INCREMENTAL).
        #[arg(long, conflicts_with = "base")]
        incremental: bool,
        /// Build an incremental backup on this backup (a name in the server's backup
        /// directory).
        #[arg(long, value_name = "NAME")]
        base: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = ConnectOptions {
        password: cli.conn.password.or_else(|| {
            std::env::var("DUPLEX_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
        }),
        connect_timeout: Duration::from_secs(cli.conn.timeout.max(1)),
        io_timeout: Duration::from_secs(cli.conn.timeout.max(1) * 30),
    };
    let res = match cli.cmd {
        Cmd::Status { servers, json } => run_status(&servers, json, &opts),
        Cmd::Compare { a, b } => run_compare(&a, &b, &opts),
        Cmd::Conflicts {
            server,
            count,
            json,
        } => run_conflicts(&server, count, json, &opts),
        Cmd::Backup {
            server,
            name,
            incremental,
            base,
        } => {
            let base = match (incremental, base) {
                (true, _) => Some(BackupOn::Newest),
                (false, Some(b)) => Some(BackupOn::Named(b)),
                (false, None) => None,
            };
            run_backup(&server, name.as_deref(), base, &opts)
        }
        Cmd::Demo {
            duplexd,
            before,
            after,
            keep,
        } => run_demo(duplexd, before, after, keep),
        Cmd::Rebuild {
            server,
            start,
            from,
            duplexd,
            log,
            wait,
            args,
        } => {
            let spec = match (start, from) {
                (true, Some(from)) => Some((duplexd, from, args, log)),
                _ => None,
            };
            run_rebuild(&server, spec, Duration::from_secs(wait), &opts)
        }
    };
    match res {
        Ok(code) => ExitCode::from(code.as_u8()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code.as_u8())
        }
    }
}

/// What `--start` starts: the binary, the peer, the server's arguments, the log.
type StartArgs = (
    Option<std::path::PathBuf>,
    String,
    Vec<String>,
    std::path::PathBuf,
);

fn run_rebuild(
    server: &str,
    start: Option<StartArgs>,
    wait: Duration,
    opts: &ConnectOptions,
) -> Result<Code, ToolError> {
    use duplex_cli::rebuild::{follow, Stage, StartSpec};
    let mut child = match start {
        Some((duplexd, from, args, log)) => {
            let spec = StartSpec {
                duplexd: duplexd_path(duplexd)?,
                from,
                args,
                log,
            };
            let c = duplex_cli::rebuild::start(server, &spec, opts)?;
            eprintln!(
                "started duplexd (pid {}) to rebuild {server} from {}; its log: {}",
                c.id(),
                spec.from,
                spec.log.display()
            );
            Some((c, spec.log))
        }
        None => None,
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut on = |s: &Stage| {
        bar.set_message(match s {
            Stage::Waiting => format!("{server}: waiting for it to answer"),
            Stage::Copying { phase, bytes } => format!(
                "{server}: {phase}, {} received",
                indicatif::HumanBytes(*bytes)
            ),
            Stage::CatchingUp { attempts } => format!(
                "{server}: recovering, catching up with the peer ({attempts} write hold attempt(s))"
            ),
            Stage::Running => format!("{server}: running"),
        });
    };
    let res = follow(
        server,
        opts,
        child.as_mut().map(|(c, l)| (c, l.as_path())),
        wait,
        &mut on,
    );
    bar.finish_and_clear();
    let outcome = res?;
    println!("{server}: rebuilt");
    for l in outcome.summary() {
        println!("  {l}");
    }
    Ok(outcome.code())
}

/// The duplexd binary: the one given, else the one next to this binary.
fn duplexd_path(given: Option<std::path::PathBuf>) -> Result<std::path::PathBuf, ToolError> {
    match given {
        Some(p) => Ok(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("duplexd")))
            .ok_or_else(|| ToolError::operational("cannot find duplexd: pass --duplexd PATH")),
    }
}

fn run_demo(
    duplexd: Option<std::path::PathBuf>,
    before: u64,
    after: u64,
    keep: bool,
) -> Result<Code, ToolError> {
    let duplexd = duplexd_path(duplexd)?;
    let o = duplex_cli::demo::DemoOptions {
        duplexd,
        before_secs: before,
        after_secs: after,
        keep,
    };
    let s = duplex_cli::demo::run(&o, &mut |line| println!("{line}"))?;
    println!();
    println!("summary");
    println!("  writes acknowledged      {}", s.writes);
    println!(
        "  writes lost              {} ({} acknowledged by production control in its last second, not yet replicated when its disk was destroyed: the loss the method allows)",
        s.lost, s.lost_allowed
    );
    println!(
        "  outcome unknown          {} (the connection broke mid-write; never resent)",
        s.unknown
    );
    println!("  client switch time       {} ms (loss to a planning desk's first write on process control)", s.switch_ms);
    println!("  rebuild time             {:.1} s (restart to running, process control serving throughout)", s.rebuild_ms as f64 / 1000.0);
    println!(
        "  write hold               {}",
        s.hold
            .as_deref()
            .unwrap_or("not found in process control's log")
    );
    println!(
        "  compare                  {}",
        if s.identical {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    if !s.identical || s.lost > s.lost_allowed {
        return Ok(Code::Damaged);
    }
    Ok(Code::Ok)
}

fn print_json(v: &serde_json::Value) -> Result<(), ToolError> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| ToolError::operational(format!("cannot write JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

fn run_status(servers: &[String], json: bool, opts: &ConnectOptions) -> Result<Code, ToolError> {
    let rows: Vec<status::ServerStatus> = std::thread::scope(|s| {
        let handles: Vec<_> = servers
            .iter()
            .map(|a| s.spawn(move || status::fetch(a, opts)))
            .collect();
        handles
            .into_iter()
            .zip(servers)
            .map(|(h, a)| {
                h.join().unwrap_or_else(|_| status::ServerStatus {
                    addr: a.clone(),
                    error: Some("internal error while asking it".into()),
                    ..status::ServerStatus::default()
                })
            })
            .collect()
    });
    if json {
        print_json(&status::to_json(&rows))?;
    } else {
        print!("{}", status::render_table(&rows));
    }
    let down = rows.iter().filter(|r| !r.answered()).count();
    if down > 0 {
        eprintln!("{down} of {} servers could not be asked", rows.len());
        return Ok(Code::Operational);
    }
    Ok(Code::Ok)
}

/// A spinner on standard error (hidden when it is not a terminal) showing the comparison's
/// progress.
struct Spinner(ProgressBar);

impl Progress for Spinner {
    fn update(&mut self, r: &Report, pending: usize) {
        self.0.set_message(format!(
            "{} digest calls, {} ranges pending, {} differences so far",
            r.digest_calls,
            pending,
            r.differences.len()
        ));
        self.0.tick();
    }
}

fn run_compare(a: &str, b: &str, opts: &ConnectOptions) -> Result<Code, ToolError> {
    let mut ca = Conn::open(a, opts)?;
    let mut cb = Conn::open(b, opts)?;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} comparing [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut spin = Spinner(bar);
    let rep = compare(&mut ca, &mut cb, &mut spin);
    spin.0.finish_and_clear();
    let rep = rep?;
    println!("A {a}: {}", rep.a);
    println!("B {b}: {}", rep.b);
    if rep.differences.is_empty() {
        println!("identical: {} keys", rep.a.count);
        return Ok(Code::Ok);
    }
    for d in &rep.differences {
        println!("{}", d.line());
    }
    println!(
        "{} differences ({} digest calls per server, {} ranges listed key by key)",
        rep.differences.len(),
        rep.digest_calls,
        rep.leaves
    );
    Ok(Code::Damaged)
}

fn run_conflicts(
    server: &str,
    count: u64,
    json: bool,
    opts: &ConnectOptions,
) -> Result<Code, ToolError> {
    let mut c = Conn::open(server, opts)?;
    let n = count.to_string();
    let j = conflicts::parse(&c.call(&[b"DUPLEX.CONFLICTS", n.as_bytes()])?)?;
    if json {
        print_json(&conflicts::to_json(server, &j))?;
    } else {
        print!("{}", conflicts::render(server, &j));
    }
    Ok(Code::Ok)
}

/// What an incremental backup builds on.
enum BackupOn {
    /// The newest complete backup of the server's lineage.
    Newest,
    /// A named backup.
    Named(String),
}

fn run_backup(
    server: &str,
    name: Option<&str>,
    base: Option<BackupOn>,
    opts: &ConnectOptions,
) -> Result<Code, ToolError> {
    let mut c = Conn::open(server, opts)?;
    let mut args: Vec<&[u8]> = vec![b"DUPLEX.BACKUP"];
    if let Some(n) = name {
        args.push(n.as_bytes());
    }
    match &base {
        Some(BackupOn::Newest) => args.push(b"INCREMENTAL"),
        Some(BackupOn::Named(b)) => args.extend([&b"BASE"[..], b.as_bytes()]),
        None => {}
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_message(format!("backing up {server}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let r = c.call(&args);
    bar.finish_and_clear();
    println!("{server}: {}", text(&r?));
    Ok(Code::Ok)
}
