//! `duplexd`: the Duplex server daemon. Speaks RESP (redis-cli, redis-benchmark and Redis
//! client libraries work unchanged) over the Duplex engine.
//!
//! With no arguments it listens on 127.0.0.1:7379 with its data in `./duplex-data`,
//! backups in `./duplex-backups` and the WAL archive in `./duplex-archive`. Flags override
//! the TOML file given with `--config`, which overrides the defaults (see
//! `duplex_server::config::ServerConfig`). Exit status: 0 after a clean stop (SIGTERM or
//! SIGINT), 1 on an error or a second signal.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// mimalloc in place of glibc's malloc: a SET profile at pipeline 16 spent about a quarter
/// of duplexd's time in glibc's allocator (`_int_malloc`, `malloc_consolidate`,
/// `unlink_chunk`); see docs/BENCHMARKS.md for the CPU per request before and after.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use duplex_server::config::{IoMode, ServerConfig, SyncMode, TimeOfDay};

/// `duplexd --version`: the package version, the git commit it was built from, and the
/// Duplex on-disk format it writes and reads (`duplex_engine::FORMAT_VERSION`; a test
/// checks that the two agree).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DUPLEX_GIT_COMMIT"),
    "; on-disk format 2, reads formats 1 to 2)"
);

/// duplexd: the Duplex server daemon (RESP over the Duplex engine). A flag given twice takes
/// its last value.
#[derive(Debug, Parser)]
#[command(name = "duplexd", version = VERSION, about, args_override_self = true)]
struct Args {
    /// TOML configuration file (every key optional; flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory [default: ./duplex-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// TCP port [default: 7379].
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1]; a non-loopback address needs --requirepass.
    #[arg(long)]
    bind: Option<String>,
    /// Password clients must AUTH with [default: none].
    #[arg(long)]
    requirepass: Option<String>,
    /// always | interval:MS | never [default: always].
    #[arg(long)]
    sync: Option<SyncMode>,
    /// Node id of this server [default: 1].
    #[arg(long)]
    node_id: Option<u64>,
    /// Backup directory [default: ./duplex-backups].
    #[arg(long)]
    backup_dir: Option<PathBuf>,
    /// Seconds between scheduled backups, 0 for none, counted from the last backup in
    /// --backup-dir [default: 86400].
    #[arg(long)]
    backup_interval: Option<u64>,
    /// UTC time of day HH:MM the scheduled backups fall on [default: none: every interval
    /// after the last backup].
    #[arg(long)]
    backup_at: Option<TimeOfDay>,
    /// Backups kept by retention [default: 7].
    #[arg(long)]
    keep_backups: Option<usize>,
    /// Restore each new backup in the background and compare it with the live data at its
    /// end LSN before retention prunes anything [default: true].
    #[arg(long)]
    backup_drill: Option<bool>,
    /// How fast the backup taken for a lost peer's rebuild copies, MB/s; 0 = as fast as
    /// the disk goes [default: the adaptive pace of every backup].
    #[arg(long)]
    rebuild_backup_rate_mb: Option<u64>,
    /// WAL archive directory, "" for none [default: ./duplex-archive].
    #[arg(long, value_parser = any_path)]
    archive_dir: Option<PathBuf>,
    /// Milliseconds the archive may trail the WAL; 0 = synchronous: a write is acknowledged
    /// only once the archive holds it too (slower) [default: 1000].
    #[arg(long)]
    archive_lag_ms: Option<u64>,
    /// Most simultaneous clients; lowered at start to fit the descriptor limit
    /// [default: 1000].
    #[arg(long)]
    max_clients: Option<usize>,
    /// Seconds before an idle client is closed (also one that does not read its replies),
    /// 0 for never [default: 0, as Redis].
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Most unsent reply bytes a client may leave; past it the client is disconnected
    /// [default: 67108864 (64 MiB)].
    #[arg(long)]
    client_output_limit_bytes: Option<usize>,
    /// Log filter, e.g. info or debug [default: info; RUST_LOG overrides].
    #[arg(long)]
    log: Option<String>,
    /// Connection layer: events (epoll event loop) | threads (one per connection)
    /// [default: events].
    #[arg(long)]
    io: Option<IoMode>,
    /// Event-loop threads with --io events [default: 1].
    #[arg(long)]
    io_threads: Option<usize>,
    /// Another server of the cluster, HOST:PORT (its RESP port); repeat for each. Replaces
    /// the file's `peers` list [default: none].
    #[arg(long = "peer")]
    peer: Vec<String>,
    /// File holding the cluster secret, the same on every server; required with --peer.
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// The cluster's id; peers of another cluster are refused [default: 1].
    #[arg(long)]
    cluster_id: Option<u64>,
    /// Milliseconds between a peer link's looks for batches to send [default: 100].
    #[arg(long)]
    transfer_interval_ms: Option<u64>,
    /// Whether peer links send as soon as a commit lands [default: true].
    #[arg(long)]
    transfer_on_commit: Option<bool>,
    /// A peer whose clock is further ahead (ms) is refused [default: 500].
    #[arg(long)]
    max_clock_offset_ms: Option<u64>,
    /// Unacknowledged bytes in flight per peer [default: 8388608].
    #[arg(long)]
    peer_window_bytes: Option<u64>,
    /// Recent local batches kept in memory for peers, bytes [default: 67108864].
    #[arg(long)]
    replication_backlog_bytes: Option<u64>,
    /// Archive kept for peers beyond the backups' needs, bytes [default: 17179869184].
    #[arg(long)]
    peer_retention_bytes: Option<u64>,
    /// WAL kept for peers beyond the checkpoint, bytes [default: 1073741824].
    #[arg(long)]
    peer_wal_retention_bytes: Option<u64>,
    /// Rebuild this server's lost data directory from the peer at HOST:PORT (its RESP
    /// port) before starting: the data directory must be absent or empty. Remove the flag
    /// once the server runs again [default: none].
    #[arg(long)]
    rebuild_from: Option<String>,
}

/// A path flag that may be empty (`--archive-dir ""`: no archive).
fn any_path(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

fn main() {
    if let Err(e) = real_main() {
        tracing::error!(event = "fatal", error = %format!("{e:#}"), "duplexd exits");
        eprintln!("duplexd: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut c = match &a.config {
        Some(p) => ServerConfig::from_file(p)?,
        None => ServerConfig::default(),
    };
    macro_rules! over {
        ($($f:ident => $g:ident),*) => { $( if let Some(v) = a.$f.clone() { c.$g = v; } )* };
    }
    if let Some(r) = a.rebuild_backup_rate_mb {
        c.rebuild_backup_rate_mb = Some(r);
    }
    over!(data => data, port => port, bind => bind, sync => sync, node_id => node_id,
          backup_dir => backup_dir, backup_interval => backup_interval_secs,
          keep_backups => keep_backups, backup_drill => backup_drill, archive_dir => archive_dir, archive_lag_ms => archive_lag_ms, max_clients => max_clients,
          idle_timeout => idle_timeout_secs,
          client_output_limit_bytes => client_output_limit_bytes, log => log, io => io, io_threads => io_threads,
          cluster_id => cluster_id, transfer_interval_ms => transfer_interval_ms,
          transfer_on_commit => transfer_on_commit, max_clock_offset_ms => max_clock_offset_ms,
          peer_window_bytes => peer_window_bytes, replication_backlog_bytes => replication_backlog_bytes,
          peer_retention_bytes => peer_retention_bytes,
          peer_wal_retention_bytes => peer_wal_retention_bytes);
    if !a.peer.is_empty() {
        c.peers = a.peer.clone();
    }
    if let Some(p) = a.cluster_secret_file.clone() {
        c.cluster_secret_file = Some(p);
    }
    if let Some(t) = a.backup_at {
        c.backup_at = Some(t);
    }
    if let Some(r) = a.rebuild_from.clone() {
        c.rebuild_from = Some(r);
    }
    if let Some(p) = a.requirepass.clone() {
        c.requirepass = Some(p);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&c.log))
        .context("invalid log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // main prefixes the message with "duplexd: " once.
    duplex_server::server::run(c)?;
    Ok(())
}
