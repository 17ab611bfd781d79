//! `duplexd` configuration: a TOML file (every field optional, with the defaults below) and
//! command-line flags that override it. See [`ServerConfig`] for each field and its default.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use duplex_engine::SyncPolicy;
use duplex_proto::Limits;
use serde::{Deserialize, Serialize};

use crate::limits::{IO_THREADS_MAX, OUT_BYTES_MAX};
use crate::Error;

/// Default TCP port: 7379, so that `duplexd` never clashes with a real Redis on 6379.
pub const DEFAULT_PORT: u16 = 7379;

/// Everything `duplexd` can be told. In a TOML file every key is optional; unknown keys are
/// refused (a typo must not silently keep a default).
///
/// ```toml
/// bind = "127.0.0.1"          # address to listen on
/// port = 7379                 # TCP port
/// data = "./duplex-data"      # data directory (WAL, page store, STATE file)
/// # requirepass = "secret"    # clients must AUTH; required for a non-loopback bind
/// sync = "always"             # always | interval:MS | never
/// node_id = 1                 # this server's node id (distinct per server)
/// backup_dir = "./duplex-backups"
/// backup_interval_secs = 86400  # 0 = no scheduled backups; counted from the last backup
/// # backup_at = "02:30"       # UTC time of day the scheduled backups fall on
/// keep_backups = 7
/// backup_drill = true         # restore each new backup in the background and compare it
/// # rebuild_backup_rate_mb = 0  # a peer's rebuild backup: none = adaptive pace, 0 = unlimited, N MB/s
/// archive_dir = "./duplex-archive"  # "" = no archive
/// archive_lag_ms = 1000       # how far the archive may trail the WAL; 0 = synchronous
/// # backup_dir and archive_dir may be s3://bucket/prefix; then, unless in the environment:
/// # [s3]
/// # endpoint = "http://10.0.0.9:9000"   # AWS_ENDPOINT_URL
/// # region = "us-east-1"                # AWS_REGION
/// # access_key_id = "..."               # AWS_ACCESS_KEY_ID
/// # secret_access_key = "..."           # AWS_SECRET_ACCESS_KEY (never logged or shown)
/// # allow_http = false                  # AWS_ALLOW_HTTP
/// max_clients = 1000          # lowered at start to what the descriptor limit allows
/// client_output_limit_bytes = 67108864  # a client's unsent replies past this: disconnected
/// idle_timeout_secs = 0       # 0 = never close idle clients (as Redis's timeout 0)
/// max_bulk_len = 16781312     # longest argument, bytes (16 MiB + 4 KiB)
/// max_args = 1048576          # most arguments in one request
/// max_inline_len = 65536      # longest inline command line
/// max_request_len = 67108864  # most bytes one request may span
/// log = "info"                # tracing filter (RUST_LOG overrides)
/// io = "events"               # events (epoll event loop, default) | threads (one per connection)
/// io_threads = 1              # event-loop threads when io = "events"
/// # peers = ["10.0.0.2:7379"] # the other servers of the cluster (the peer link)
/// # cluster_secret_file = "/etc/duplex/secret"  # required with peers
/// cluster_id = 1
/// transfer_interval_ms = 100  # how often each peer link looks for batches to send
/// transfer_on_commit = true   # and at once after each commit
/// max_clock_offset_ms = 500   # a peer whose clock is further ahead is refused
/// peer_window_bytes = 8388608 # unacknowledged bytes in flight per peer
/// replication_backlog_bytes = 67108864  # recent batches kept in memory for peers
/// peer_retention_bytes = 17179869184    # archive kept for peers beyond the backups' needs
/// peer_wal_retention_bytes = 1073741824 # WAL kept for peers beyond the checkpoint
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1`. A non-loopback address needs `requirepass`.
    pub bind: String,
    /// TCP port. Default 7379.
    pub port: u16,
    /// Data directory. Default `./duplex-data`.
    pub data: PathBuf,
    /// Password clients must give with AUTH. Default none.
    pub requirepass: Option<String>,
    /// Sync policy: `always` (default; a write is answered after fsync), `interval:MS`
    /// (fsync every MS milliseconds; a power loss may lose that much), `never`.
    pub sync: SyncMode,
    /// Node id stamped on local writes. Default 1.
    pub node_id: u64,
    /// Where backups go, one directory each. Default `./duplex-backups`.
    pub backup_dir: PathBuf,
    /// Seconds between scheduled backups; 0 for none. Default 86400 (daily). Counted from
    /// the newest complete backup in `backup_dir` (so restarts do not put it off); one
    /// overdue at start is taken at once.
    pub backup_interval_secs: u64,
    /// UTC time of day (`"HH:MM"`) the scheduled backups fall on: at that time, then every
    /// `backup_interval_secs` after it (daily with the default interval). Default none:
    /// every interval after the last backup.
    pub backup_at: Option<TimeOfDay>,
    /// Complete backups kept by retention. Default 7.
    pub keep_backups: usize,
    /// The restore drill: after each backup, restore it into `backup_dir/.drill` in the
    /// background, roll it forward to its end LSN and compare it, version for version, with
    /// a snapshot of the live data taken at that LSN; retention (which prunes older backups
    /// and their archive) runs only once the drill passed. Default true.
    pub backup_drill: bool,
    /// How fast this server copies the fresh backup it takes when a lost peer rebuilds
    /// from it: none (the default) for the adaptive pace of every backup (as fast as the
    /// disk goes while no writer commits, about a tenth of the disk's time while writers
    /// commit: the clients keep their latency, the rebuild takes longer), 0 for as fast as
    /// the disk goes (the rebuild is over sooner, the clients' writes wait behind the
    /// copy), N for at most N MB/s.
    pub rebuild_backup_rate_mb: Option<u64>,
    /// WAL archive (closed segments copied aside). Default `./duplex-archive`; empty for none.
    pub archive_dir: PathBuf,
    /// How far the archive may fall behind the durable WAL, in milliseconds: the archiver
    /// copies the newly durable bytes of the segment being written (a growing `.partial`
    /// in the archive) at least this often. Default 1000, which costs nothing measurable.
    ///
    /// 0 makes the archive synchronous: a write is acknowledged only once its bytes are
    /// fsynced in the archive too. That costs one archive write and fsync per group
    /// commit: durable appends ran at 0.26x with the archive on the same disk as the data,
    /// 0.785x with it on a separate fast device. A write whose archive copy fails is then
    /// answered `-NOARCHIVE` (see docs/OPERATIONS.md); with a lag above 0 a failing archive
    /// never holds up local writes (it is reported in INFO and `DUPLEX.STATE`).
    pub archive_lag_ms: u64,
    /// Client settings for `s3://` backup and archive locations (`[s3]`); what is not set
    /// here comes from the `AWS_*` environment variables.
    pub s3: S3Config,
    /// Most simultaneous clients. Default 1000. At start the soft descriptor limit is
    /// raised toward `max_clients` plus the descriptors kept for the engine
    /// ([`crate::fds::FDS_RESERVED`]); when the hard limit does not allow it, `max_clients`
    /// is lowered to fit, with a warning. A client past it is answered
    /// `-ERR max number of clients reached` and closed.
    pub max_clients: usize,
    /// Close a client idle this many seconds (nothing read from it and nothing of its
    /// replies taken by it; a client that does not read its replies is closed so, logged);
    /// 0 for never. Default 0, as Redis's `timeout` (clients such as connection pools
    /// keep idle connections open and do not expect them closed).
    pub idle_timeout_secs: u64,
    /// Most bytes of replies a client may leave unsent (Redis's `client-output-buffer-limit`
    /// hard limit): past it the client is disconnected and logged, and the replies are not
    /// sent. Default 64 MiB; at least [`crate::limits::OUT_BYTES_MAX`].
    ///
    /// A connection is neither read nor run while more than [`crate::limits::OUT_BYTES_MAX`]
    /// bytes of its replies wait, and a group of requests stops at that budget, so pipelined
    /// requests cost a connection about [`crate::limits::OUT_BYTES_MAX`] plus one reply: the
    /// total is about `max_clients` x [`crate::limits::OUT_BYTES_MAX`] plus the replies in
    /// flight. Only a single reply larger than this limit (an MGET or EXEC of many large
    /// values) reaches it: that reply is built whole, then dropped with its client.
    pub client_output_limit_bytes: usize,
    /// Longest bulk argument in bytes. Default 16 MiB + 4 KiB.
    pub max_bulk_len: usize,
    /// Most arguments in a request. Default 1,048,576.
    pub max_args: usize,
    /// Longest inline command. Default 64 KiB.
    pub max_inline_len: usize,
    /// Most bytes one request may span. Default 64 MiB.
    pub max_request_len: usize,
    /// Log filter (tracing `EnvFilter` syntax). Default `info`.
    pub log: String,
    /// Connection layer: `events` (default: epoll event-loop threads, each batching the
    /// writes of all its connections into one commit per loop turn) or `threads` (one
    /// blocking thread per connection: uses every core when many clients pipeline without
    /// fsync). Under `events` a slow command (DUPLEX.BACKUP, DUPLEX.CHECKPOINT, DBSIZE, a
    /// large SCAN) runs on a worker thread: only its own connection waits for it.
    pub io: IoMode,
    /// Event-loop threads when `io = "events"`. Default 1.
    pub io_threads: usize,
    /// The other servers of the cluster, `HOST:PORT` (their RESP ports): each gets this
    /// server's updates over a peer link this server opens. Default none (no replication).
    pub peers: Vec<String>,
    /// File holding the cluster secret (its bytes, a trailing newline dropped), shared by
    /// every server of the cluster. Required when `peers` is not empty. Default none.
    pub cluster_secret_file: Option<PathBuf>,
    /// The cluster's id; a peer of another cluster is refused. Default 1.
    pub cluster_id: u64,
    /// Milliseconds between a peer link's looks for batches to send (and its heartbeats
    /// when idle). Default 100.
    pub transfer_interval_ms: u64,
    /// Whether a peer link also sends as soon as a commit lands (not only every
    /// `transfer_interval_ms`). Default true.
    pub transfer_on_commit: bool,
    /// A peer whose clock is further ahead than this (milliseconds) is refused until its
    /// clock is back. Default 500.
    pub max_clock_offset_ms: u64,
    /// Most payload bytes sent to one peer and not yet acknowledged: a slow peer slows its
    /// own link, never the local writes. Default 8 MiB.
    pub peer_window_bytes: u64,
    /// Bytes of recent local batches kept in memory for the peer links (older ones are
    /// read from the WAL or the archive). Used only with peers. Default 64 MiB.
    pub replication_backlog_bytes: u64,
    /// Bytes of archive that backup retention keeps beyond what the backups need, for a
    /// peer that has not yet acknowledged this server's batches (down, partitioned).
    /// Past it the archive is pruned as if no peer needed it and that peer must be
    /// rebuilt (its link says `needs-rebuild`). Default 16 GiB.
    pub peer_retention_bytes: u64,
    /// Bytes of WAL a checkpoint keeps beyond what recovery needs, for a peer that has not
    /// yet acknowledged this server's batches, so it catches up from the log when it comes
    /// back, and for a peer that lacks another origin's batches this server holds (to
    /// forward them, or give them back to that origin if it is rebuilt); past it the WAL
    /// is released (the peer reads the archive, or needs a rebuild; INFO
    /// `peer_wal_dropped:1`). Default 1 GiB.
    pub peer_wal_retention_bytes: u64,
    /// `HOST:PORT` (a peer's RESP port): rebuild this server's lost data directory from
    /// that peer's backup at start (issue 12), then start as usual. The data directory must
    /// not exist or be empty (a database is never overwritten); needs the cluster secret.
    /// Remove it once the server runs again. Default none.
    pub rebuild_from: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let l = Limits::default();
        ServerConfig {
            bind: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            data: PathBuf::from("./duplex-data"),
            requirepass: None,
            sync: SyncMode::Always,
            node_id: 1,
            backup_dir: PathBuf::from("./duplex-backups"),
            backup_interval_secs: 86_400,
            backup_at: None,
            keep_backups: 7,
            backup_drill: true,
            rebuild_backup_rate_mb: None,
            archive_dir: PathBuf::from("./duplex-archive"),
            archive_lag_ms: 1000,
            s3: S3Config::default(),
            max_clients: 1000,
            idle_timeout_secs: 0,
            client_output_limit_bytes: 64 << 20,
            max_bulk_len: l.max_bulk_len,
            max_args: l.max_args,
            max_inline_len: l.max_inline_len,
            max_request_len: l.max_request_len,
            log: "info".into(),
            io: IoMode::Events,
            io_threads: 1,
            peers: Vec::new(),
            cluster_secret_file: None,
            cluster_id: 1,
            transfer_interval_ms: 100,
            transfer_on_commit: true,
            max_clock_offset_ms: 500,
            peer_window_bytes: 8 << 20,
            peer_retention_bytes: 16 << 30,
            peer_wal_retention_bytes: 1 << 30,
            replication_backlog_bytes: 64 << 20,
            rebuild_from: None,
        }
    }
}

/// The `[s3]` section: client settings for `s3://` locations (endpoint, region,
/// access key id, secret access key, allow_http; each unset one comes from the `AWS_*`
/// environment). `Debug` never shows the secret.
pub type S3Config = duplex_objstore::S3Settings;

impl ServerConfig {
    /// Reads a TOML file; absent keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<ServerConfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The engine's sync policy for [`ServerConfig::sync`].
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync.policy()
    }

    /// The protocol limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_bulk_len: self.max_bulk_len,
            max_args: self.max_args,
            max_inline_len: self.max_inline_len,
            max_request_len: self.max_request_len,
        }
    }

    /// The archive directory, `None` when disabled.
    pub fn archive(&self) -> Option<&Path> {
        (!self.archive_dir.as_os_str().is_empty()).then_some(self.archive_dir.as_path())
    }

    /// Idle timeout, `None` for never.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }

    /// The pace of a backup taken for a peer's rebuild (`rebuild_backup_rate_mb`).
    pub fn rebuild_backup_rate(&self) -> duplex_engine::BackupRate {
        match self.rebuild_backup_rate_mb {
            None => duplex_engine::BackupRate::Adaptive,
            Some(0) => duplex_engine::BackupRate::Unlimited,
            Some(mb) => duplex_engine::BackupRate::BytesPerSec(mb.saturating_mul(1_000_000)),
        }
    }

    /// Checks what can be checked before starting: limits are positive, and a non-loopback
    /// bind has a password. (`sync` and `io` were checked when they were parsed.)
    pub fn validate(&self) -> Result<(), Error> {
        let ip: IpAddr = self.bind.parse().map_err(|_| {
            Error::Config(format!("bind address {:?} is not an IP address", self.bind))
        })?;
        if !ip.is_loopback() && self.requirepass.as_deref().is_none_or(str::is_empty) {
            return Err(Error::Config(format!(
                "refusing to listen on non-loopback address {ip} without requirepass: set a password (--requirepass or requirepass in the config file)"
            )));
        }
        if self.max_clients == 0
            || self.max_args == 0
            || self.max_bulk_len == 0
            || self.max_inline_len == 0
            || self.max_request_len == 0
        {
            return Err(Error::Config("max_clients, max_args, max_bulk_len, max_inline_len and max_request_len must be positive".into()));
        }
        if self.io_threads == 0 || self.io_threads > IO_THREADS_MAX {
            return Err(Error::Config(format!(
                "io_threads must be between 1 and {IO_THREADS_MAX}"
            )));
        }
        if self.client_output_limit_bytes < OUT_BYTES_MAX {
            return Err(Error::Config(format!(
                "client_output_limit_bytes must be at least {OUT_BYTES_MAX} (the reply bytes a connection gathers before it waits for its client)"
            )));
        }
        if self.backup_at.is_some() && self.backup_interval_secs == 0 {
            return Err(Error::Config(
                "backup_at needs scheduled backups: set backup_interval_secs above 0 (86400 for daily)".into(),
            ));
        }
        if self.keep_backups == 0 {
            return Err(Error::Config("keep_backups must be at least 1".into()));
        }
        self.validate_peers()
    }

    /// The peer settings: addresses `HOST:PORT`, a secret file with peers, positive
    /// interval and window.
    fn validate_peers(&self) -> Result<(), Error> {
        let pinned = self
            .peers
            .iter()
            .filter(|p| split_peer(p).0.is_some())
            .count();
        if pinned != 0 && pinned != self.peers.len() {
            return Err(Error::Config(
                "some peers name their node id (ID@HOST:PORT) and some do not: pin every peer (then only those node ids may connect) or none".into(),
            ));
        }
        for p in &self.peers {
            let (id, addr) = split_peer(p);
            if p.contains('@') && id.is_none_or(|n| n == 0) {
                return Err(Error::Config(format!(
                    "peer {p:?}: the part before '@' must be the peer's node id, a number of at least 1"
                )));
            }
            if id == Some(self.node_id) {
                return Err(Error::Config(format!(
                    "peer {p:?} names this server's own node id {}: every server needs its own --node-id",
                    self.node_id
                )));
            }
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
            if !port_ok {
                return Err(Error::Config(format!(
                    "peer {p:?} is not HOST:PORT (the peer's RESP port, e.g. 10.0.0.2:7379)"
                )));
            }
        }
        if !self.peers.is_empty() && self.cluster_secret_file.is_none() {
            return Err(Error::Config(
                "peers are given but no cluster secret: pass --cluster-secret-file PATH (the same file contents on every server; e.g. head -c 32 /dev/urandom | base64 > secret)".into(),
            ));
        }
        if let Some(r) = &self.rebuild_from {
            let ok = r
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
            if !ok {
                return Err(Error::Config(format!(
                    "rebuild_from {r:?} is not HOST:PORT (the healthy peer's RESP port, e.g. 10.0.0.1:7379)"
                )));
            }
            if self.cluster_secret_file.is_none() {
                return Err(Error::Config(
                    "rebuild_from needs the cluster secret: pass --cluster-secret-file PATH (the file the peer uses)".into(),
                ));
            }
        }
        if self.transfer_interval_ms == 0 {
            return Err(Error::Config(
                "transfer_interval_ms must be at least 1".into(),
            ));
        }
        if self.peer_window_bytes < 64 << 10 {
            return Err(Error::Config(
                "peer_window_bytes must be at least 65536".into(),
            ));
        }
        Ok(())
    }

    /// The cluster's membership when every peer is pinned (`ID@HOST:PORT`): the node ids
    /// allowed to connect. `None` when peers are given as addresses only (any server with
    /// the secret and cluster id may connect; it shows as `inbound-only` if not a peer).
    pub fn members(&self) -> Option<std::collections::BTreeSet<u64>> {
        let ids: Option<std::collections::BTreeSet<u64>> =
            self.peers.iter().map(|p| split_peer(p).0).collect();
        ids.filter(|s| !s.is_empty())
    }

    /// Reads the cluster secret from `cluster_secret_file` (a trailing newline dropped);
    /// `None` when no file is configured. An unreadable or empty file is an error that
    /// names it.
    pub fn cluster_secret(&self) -> Result<Option<Vec<u8>>, Error> {
        let Some(path) = &self.cluster_secret_file else {
            return Ok(None);
        };
        let mut bytes = std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the cluster secret file {}: {e}; create it (the same contents on every server of the cluster) or fix --cluster-secret-file",
                path.display()
            ))
        })?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(Error::Config(format!(
                "the cluster secret file {} is empty: put a secret in it (e.g. head -c 32 /dev/urandom | base64 > {})",
                path.display(),
                path.display()
            )));
        }
        Ok(Some(bytes))
    }
}

/// When a write is acknowledged (`sync` in the file, `--sync` on the command line):
/// `always`, `interval:MS` or `never`. Parsed once, from the file or the flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SyncMode {
    /// A write is answered after fsync (the default).
    Always,
    /// fsync every this many milliseconds (more than 0); a power loss may lose that much.
    IntervalMs(u64),
    /// Never fsync on a write's behalf (rotation, checkpoints and shutdown still do).
    Never,
}

impl SyncMode {
    /// The engine's sync policy.
    pub fn policy(self) -> SyncPolicy {
        match self {
            SyncMode::Always => SyncPolicy::Always,
            SyncMode::IntervalMs(ms) => SyncPolicy::Interval(Duration::from_millis(ms)),
            SyncMode::Never => SyncPolicy::Never,
        }
    }

    /// The Redis `appendfsync` word closest to this mode (for CONFIG GET and INFO).
    pub fn appendfsync(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::IntervalMs(_) => "everysec",
            SyncMode::Never => "no",
        }
    }
}

impl FromStr for SyncMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<SyncMode, Error> {
        match s {
            "always" => Ok(SyncMode::Always),
            "never" => Ok(SyncMode::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(|m| m.parse::<u64>().ok())
                .filter(|&m| m > 0)
                .map(SyncMode::IntervalMs)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "sync {s:?}: expected always, never or interval:MS with MS > 0"
                    ))
                }),
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncMode::Always => f.write_str("always"),
            SyncMode::IntervalMs(ms) => write!(f, "interval:{ms}"),
            SyncMode::Never => f.write_str("never"),
        }
    }
}

impl TryFrom<String> for SyncMode {
    type Error = Error;
    fn try_from(s: String) -> Result<SyncMode, Error> {
        s.parse()
    }
}

impl From<SyncMode> for String {
    fn from(m: SyncMode) -> String {
        m.to_string()
    }
}

/// A UTC time of day, `"HH:MM"` (`backup_at` in the file, `--backup-at` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay {
    minutes: u32,
}

impl TimeOfDay {
    /// Milliseconds after midnight UTC.
    pub fn ms_of_day(self) -> u64 {
        u64::from(self.minutes) * 60_000
    }
}

impl FromStr for TimeOfDay {
    type Err = Error;

    fn from_str(s: &str) -> Result<TimeOfDay, Error> {
        let bad = || {
            Error::Config(format!(
                "time of day {s:?}: expected HH:MM (UTC), 00:00 to 23:59"
            ))
        };
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u32 = h.parse().map_err(|_| bad())?;
        let m: u32 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(TimeOfDay {
            minutes: h * 60 + m,
        })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = Error;
    fn try_from(s: String) -> Result<TimeOfDay, Error> {
        s.parse()
    }
}

impl From<TimeOfDay> for String {
    fn from(t: TimeOfDay) -> String {
        t.to_string()
    }
}

/// The connection layer (`io` in the file, `--io` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum IoMode {
    /// epoll event-loop threads (`io_threads` of them), each committing the writes of all
    /// its connections of one loop turn together (the default).
    Events,
    /// One blocking thread per connection.
    Threads,
}

impl IoMode {
    /// The mode's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            IoMode::Events => "events",
            IoMode::Threads => "threads",
        }
    }
}

impl FromStr for IoMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<IoMode, Error> {
        match s {
            "events" => Ok(IoMode::Events),
            "threads" => Ok(IoMode::Threads),
            _ => Err(Error::Config(format!(
                "io {s:?}: expected threads or events"
            ))),
        }
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for IoMode {
    type Error = Error;
    fn try_from(s: String) -> Result<IoMode, Error> {
        s.parse()
    }
}

impl From<IoMode> for String {
    fn from(m: IoMode) -> String {
        m.name().to_owned()
    }
}

/// A `--peer` entry's pinned node id (`ID@HOST:PORT`), if any, and its address.
pub fn split_peer(p: &str) -> (Option<u64>, &str) {
    match p.split_once('@') {
        Some((id, addr)) => (id.parse().ok(), addr),
        None => (None, p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_archive_lag_ms() {
        let c: ServerConfig = toml::from_str(include_str!("../../../deploy/duplexd.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.archive_lag_ms, 1000);
        assert_eq!(ServerConfig::default().archive_lag_ms, 1000);
        let c: ServerConfig = toml::from_str("archive_lag_ms = 0").unwrap();
        assert_eq!(c.archive_lag_ms, 0);
    }

    #[test]
    fn defaults_and_toml() {
        let c: ServerConfig = toml::from_str("port = 9000\nsync = \"interval:5\"").unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.bind, "127.0.0.1");
        assert_eq!(
            c.sync_policy(),
            SyncPolicy::Interval(Duration::from_millis(5))
        );
        assert_eq!(c.sync.to_string(), "interval:5");
        assert!(toml::from_str::<ServerConfig>("prot = 1").is_err());
        let e = toml::from_str::<ServerConfig>("sync = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("expected always, never"), "{e}");
        let e = toml::from_str::<ServerConfig>("io = \"epoll\"").unwrap_err();
        assert!(e.to_string().contains("expected threads or events"), "{e}");
        let c: ServerConfig = toml::from_str("io = \"threads\"").unwrap();
        assert_eq!(c.io, IoMode::Threads);
        c.validate().unwrap();
        use duplex_engine::BackupRate;
        assert_eq!(c.rebuild_backup_rate(), BackupRate::Adaptive);
        for (toml, rate) in [
            ("rebuild_backup_rate_mb = 0", BackupRate::Unlimited),
            (
                "rebuild_backup_rate_mb = 200",
                BackupRate::BytesPerSec(200_000_000),
            ),
        ] {
            let c: ServerConfig = toml::from_str(toml).unwrap();
            assert_eq!(c.rebuild_backup_rate(), rate, "{toml}");
        }
    }

    #[test]
    fn backup_at_and_an_empty_archive_dir() {
        let c: ServerConfig = toml::from_str("backup_at = \"02:30\"\narchive_dir = \"\"").unwrap();
        assert_eq!(c.backup_at.map(TimeOfDay::ms_of_day), Some(9_000_000));
        assert_eq!(c.backup_at.unwrap().to_string(), "02:30");
        assert_eq!(c.archive(), None);
        c.validate().unwrap();
        for bad in ["2:30", "24:00", "02:60", "0230", "aa:bb"] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
        let c = ServerConfig {
            backup_interval_secs: 0,
            ..c
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn pinned_peers_are_the_membership_and_pinning_is_all_or_none() {
        let base = ServerConfig {
            cluster_secret_file: Some("secret".into()),
            ..ServerConfig::default()
        };
        let with = |peers: &[&str]| ServerConfig {
            peers: peers.iter().map(|p| p.to_string()).collect(),
            ..base.clone()
        };
        let c = with(&["2@10.0.0.2:7379", "3@10.0.0.3:7379"]);
        c.validate().unwrap();
        assert_eq!(c.members(), Some([2, 3].into_iter().collect()));
        assert_eq!(split_peer("2@10.0.0.2:7379"), (Some(2), "10.0.0.2:7379"));
        assert_eq!(with(&["10.0.0.2:7379"]).members(), None);
        let e = with(&["2@10.0.0.2:7379", "10.0.0.3:7379"])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("pin every peer"), "{e}");
        for bad in ["x@10.0.0.2:7379", "0@10.0.0.2:7379", "1@10.0.0.2:7379"] {
            assert!(with(&[bad]).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_need_a_secret_file() {
        let c: ServerConfig =
            toml::from_str("peers = [\"127.0.0.1:7380\"]\ncluster_id = 3").unwrap();
        assert_eq!(c.cluster_id, 3);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--cluster-secret-file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        let c = ServerConfig {
            cluster_secret_file: Some(f.clone()),
            ..c
        };
        c.validate().unwrap();
        assert!(c
            .cluster_secret()
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
        std::fs::write(&f, "\n").unwrap();
        assert!(c
            .cluster_secret()
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(c.cluster_secret().unwrap().unwrap(), b"s3cret");
        let bad = ServerConfig {
            peers: vec!["nohost".into()],
            ..c
        };
        assert!(bad.validate().is_err());
        let d = ServerConfig::default();
        assert_eq!(
            (
                d.transfer_interval_ms,
                d.transfer_on_commit,
                d.max_clock_offset_ms
            ),
            (100, true, 500)
        );
        assert_eq!(d.peer_window_bytes, 8 << 20);
    }

    #[test]
    fn non_loopback_needs_password() {
        let mut c = ServerConfig {
            bind: "0.0.0.0".into(),
            ..ServerConfig::default()
        };
        assert!(c.validate().is_err());
        c.requirepass = Some("x".into());
        c.validate().unwrap();
        assert!("interval:0".parse::<SyncMode>().is_err());
        assert!("sometimes".parse::<SyncMode>().is_err());
        assert_eq!("never".parse::<SyncMode>().unwrap().appendfsync(), "no");
        assert_eq!(
            "always".parse::<SyncMode>().unwrap().appendfsync(),
            "always"
        );
        assert!("epoll".parse::<IoMode>().is_err());
        c.client_output_limit_bytes = OUT_BYTES_MAX - 1;
        assert!(c.validate().is_err());
        c.client_output_limit_bytes = OUT_BYTES_MAX;
        c.validate().unwrap();
        c.io_threads = 0;
        assert!(c.validate().is_err());
    }
}
