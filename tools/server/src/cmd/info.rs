//! What a client may ask about the server: INFO (Redis sections plus `# Duplex`), CONFIG
//! GET (a read-only view of the configuration in Redis names) and COMMAND ([`super::docs`]).

use std::fmt::Write as _;

use duplex_proto::{bulk, error};

use super::{arity_error, bulk_str};
use crate::glob::glob_match;
use crate::keyspace::{ReadError, Reader};
use crate::shared::Shared;
use crate::state::OpState;

/// `INFO [section...]`.
pub fn info_cmd(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    let text = info(sh, &args[1..]);
    bulk(out, text.as_bytes());
}

/// The Redis version duplexd answers as (INFO's `redis_version`, HELLO's `version`): the
/// Redis whose commands and replies it follows.
pub const REDIS_VERSION: &str = "7.0.0";

/// `COMMAND [sub...]`: see [`super::docs`].
pub fn command(resp3: bool, args: &[&[u8]], out: &mut Vec<u8>) {
    super::docs::command(resp3, args, out);
}

/// CONFIG GET pattern...: the configuration under the Redis parameter names tools ask for.
pub fn config(sh: &Shared, resp3: bool, args: &[&[u8]], out: &mut Vec<u8>) {
    let sub = args[1].to_ascii_uppercase();
    if sub != b"GET" {
        return error(
            out,
            "ERR only CONFIG GET is supported; duplexd is configured by its TOML file and flags",
        );
    }
    if args.len() < 3 {
        return arity_error(b"config|get").send(out);
    }
    let c = sh.cfg();
    let params: Vec<(&str, String)> = vec![
        // No RDB snapshots (every write is in the WAL; SAVE and BGSAVE take a backup).
        ("save", String::new()),
        ("appendonly", "yes".into()),
        ("appendfsync", c.sync.appendfsync().into()),
        ("databases", crate::keyspace::DBS.to_string()),
        // duplexd keeps every key on disk and evicts nothing.
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("requirepass", String::new()),
        ("tcp-keepalive", "0".into()),
        ("cluster-enabled", "no".into()),
        ("lua-time-limit", "5000".into()),
        ("busy-reply-threshold", "5000".into()),
        ("notify-keyspace-events", String::new()),
        ("slowlog-log-slower-than", "10000".into()),
        ("slowlog-max-len", "128".into()),
        ("maxmemory-samples", "5".into()),
        ("lfu-log-factor", "10".into()),
        ("lfu-decay-time", "1".into()),
        ("replica-read-only", "yes".into()),
        ("min-replicas-to-write", "0".into()),
        ("hz", "10".into()),
        ("port", c.port.to_string()),
        ("bind", c.bind.clone()),
        ("maxclients", c.max_clients.to_string()),
        ("timeout", c.idle_timeout_secs.to_string()),
        (
            "client-output-buffer-limit",
            format!("normal {} 0 0", c.client_output_limit_bytes),
        ),
        ("proto-max-bulk-len", c.max_bulk_len.to_string()),
        ("dir", c.data.display().to_string()),
    ];
    let mut hits: Vec<&(&str, String)> = Vec::new();
    for pat in &args[2..] {
        let p = pat.to_ascii_lowercase();
        for kv in &params {
            if glob_match(&p, kv.0.as_bytes()) && !hits.iter().any(|h| h.0 == kv.0) {
                hits.push(kv);
            }
        }
    }
    super::docs::map_len(out, hits.len(), resp3);
    for (k, v) in hits {
        bulk_str(out, k);
        bulk_str(out, v);
    }
}

/// The INFO text for `sections` (all of them when empty, or for `all`, `everything`,
/// `default`).
pub fn info(sh: &Shared, sections: &[&[u8]]) -> String {
    let want = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| {
                s.eq_ignore_ascii_case(name.as_bytes())
                    || s.eq_ignore_ascii_case(b"all")
                    || s.eq_ignore_ascii_case(b"everything")
                    || s.eq_ignore_ascii_case(b"default")
            })
    };
    let mut t = String::new();
    let parts: [(&str, Section); 7] = [
        ("server", server),
        ("clients", clients),
        ("stats", stats),
        ("persistence", persistence),
        ("replication", replication),
        ("duplex", duplex),
        ("keyspace", keyspace),
    ];
    for (name, write) in parts {
        if want(name) {
            write(sh, &mut t);
        }
    }
    t
}

/// Writes one INFO section.
type Section = fn(&Shared, &mut String);

fn server(sh: &Shared, t: &mut String) {
    let _ = write!(
        t,
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nduplex_version:{}\r\nduplex_commit:{}\r\nduplex_format:{}\r\nduplex_oldest_format_read:{}\r\nredis_mode:standalone\r\nos:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nbind:{}\r\nuptime_in_seconds:{}\r\nexecutable:duplexd\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        env!("DUPLEX_GIT_COMMIT"),
        duplex_engine::FORMAT_VERSION,
        duplex_engine::OLDEST_FORMAT_READ,
        std::env::consts::OS,
        std::process::id(),
        sh.addr().port(),
        sh.cfg().bind,
        sh.uptime().as_secs()
    );
}

fn clients(sh: &Shared, t: &mut String) {
    let n = sh.stats();
    let c = sh.cfg();
    let _ = write!(
        t,
        "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nrejected_connections:{}\r\nfd_limit:{}\r\nfds_reserved:{}\r\nclient_output_limit_bytes:{}\r\n\r\n",
        n.clients,
        c.max_clients,
        n.rejected_connections,
        crate::fds::current_limit(),
        crate::fds::reserve(c),
        c.client_output_limit_bytes
    );
}

fn stats(sh: &Shared, t: &mut String) {
    let n = sh.stats();
    let _ = write!(
        t,
        "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nclient_output_buffer_limit_disconnections:{}\r\n\r\n",
        n.total_connections, n.total_commands, n.rejected_connections, n.output_disconnects
    );
}

fn persistence(sh: &Shared, t: &mut String) {
    let c = sh.cfg();
    let s = sh.db().stats();
    let b = sh.backup_info();
    let now = sh.clock().now_ms();
    let disks = sh.disks();
    let secs = |ms: u64| i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let age = if b.last_ms > 0 {
        secs(now.saturating_sub(b.last_ms))
    } else {
        -1
    };
    let next = sh
        .next_backup_ms()
        .map_or(-1, |n| secs(n.saturating_sub(now)));
    let _ = write!(
        t,
        "# Persistence\r\nloading:{}\r\naof_enabled:1\r\nappendfsync:{}\r\nsync_policy:{}\r\nlast_lsn:{}\r\ncheckpoint_lsn:{}\r\ncheckpoints:{}\r\nwal_bytes_since_checkpoint:{}\r\n",
        u8::from(sh.state().get().state == OpState::Starting),
        c.sync.appendfsync(),
        c.sync,
        s.last_lsn,
        s.checkpoint_lsn,
        s.checkpoints,
        s.wal_bytes_since_checkpoint,
    );
    let _ = write!(
        t,
        "backups_taken:{}\r\nbackups_failed:{}\r\nlast_backup_dir:{}\r\nlast_backup_time_ms:{}\r\nlast_backup_age_secs:{age}\r\nnext_backup_in_secs:{next}\r\nlast_backup_error:{}\r\nbackup_dir:{}\r\nbackup_interval_secs:{}\r\nbackup_at:{}\r\nkeep_backups:{}\r\nbackup_same_fs:{}\r\narchive_dir:{}\r\narchive_same_fs:{}\r\n",
        b.taken,
        b.failed,
        b.last_dir.map(|d| d.display().to_string()).unwrap_or_default(),
        b.last_ms,
        b.last_error.unwrap_or_default().replace(['\r', '\n'], " "),
        c.backup_dir.display(),
        c.backup_interval_secs,
        c.backup_at.map(|a| a.to_string()).unwrap_or_default(),
        c.keep_backups,
        u8::from(disks.backup_same_fs),
        c.archive().map(|a| a.display().to_string()).unwrap_or_default(),
        u8::from(disks.archive_same_fs),
    );
    let d = sh.drill_info();
    let _ = write!(
        t,
        "backup_drill:{}\r\ndrill_status:{}\r\ndrill_backup:{}\r\ndrill_lsn:{}\r\ndrill_seconds:{:.3}\r\ndrill_digest:{}\r\ndrill_error:{}\r\ndrills_passed:{}\r\ndrills_failed:{}\r\ndrills_skipped:{}\r\n",
        u8::from(c.backup_drill),
        d.status,
        d.backup.map(|b| b.display().to_string()).unwrap_or_default(),
        d.lsn,
        d.seconds,
        d.digest.unwrap_or_default(),
        d.error.unwrap_or_default().replace(['\r', '\n'], " "),
        d.passed,
        d.failed,
        d.skipped,
    );
    archive_and_space(sh, t);
}

/// The archive's position and health and the WAL's free space (part of `# Persistence`).
fn archive_and_space(sh: &Shared, t: &mut String) {
    let wal = sh.db().wal();
    let a = wal.archive_status();
    let s = wal.space_status();
    let c = sh.cfg();
    let opt = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    let one_line = |v: Option<&str>| v.unwrap_or("").replace(['\r', '\n'], " ");
    let _ = write!(
        t,
        "archive_status:{}\r\narchive_lsn:{}\r\narchive_durable_lsn:{}\r\narchive_lag_ms:{}\r\narchive_lag_limit_ms:{}\r\narchive_last_error:{}\r\narchive_failing_since_ms:{}\r\n",
        crate::health::archive_state(c.archive().is_some(), &a),
        a.archived_lsn,
        a.durable_lsn,
        a.lag_ms,
        c.archive_lag_ms,
        one_line(a.last_error.as_deref()),
        opt(a.failing_since_ms),
    );
    remote_info(sh, t);
    let _ = write!(
        t,
        "wal_free_bytes:{}\r\nwal_reserve_bytes:{}\r\nwal_needed_bytes:{}\r\nwrites_refused:{}\r\nwrites_refused_reason:{}\r\nwrites_refused_since_ms:{}\r\n\r\n",
        opt(s.available_bytes),
        s.reserve_bytes,
        s.needed_bytes,
        u8::from(s.refused.is_some()),
        one_line(s.refused.as_deref()),
        opt(s.refused_since_ms),
    );
}

/// Object storage: where backups and the archive go and how the uploads fare (never a
/// credential: the URLs are bucket and prefix only).
fn remote_info(sh: &Shared, t: &mut String) {
    let r = sh.backups().remote();
    let one_line = |v: Option<&str>| v.unwrap_or("").replace(['\r', '\n'], " ");
    let u = r.upload_info();
    let _ = write!(
        t,
        "backup_store:{}\r\nbackup_uploads:{}\r\nbackup_upload_last_bytes:{}\r\nbackup_upload_last_seconds:{:.3}\r\nbackup_upload_last_error:{}\r\narchive_store:{}\r\n",
        r.backup_url().unwrap_or(""),
        u.uploaded,
        u.last_bytes,
        u.last_seconds,
        one_line(u.last_error.as_deref()),
        r.archive_url().unwrap_or(""),
    );
    let m = r.mirror_status();
    let _ = write!(
        t,
        "archive_upload_status:{}\r\narchive_upload_lag_ms:{}\r\narchive_upload_pending_bytes:{}\r\narchive_upload_bytes:{}\r\narchive_upload_objects:{}\r\narchive_upload_sealed:{}\r\narchive_upload_last_error:{}\r\narchive_upload_failing_since_ms:{}\r\n",
        m.as_ref().map_or("off", |m| m.status),
        m.as_ref().map_or(0, |m| m.lag_ms),
        m.as_ref().map_or(0, |m| m.pending_bytes),
        m.as_ref().map_or(0, |m| m.uploaded_bytes),
        m.as_ref().map_or(0, |m| m.objects),
        m.as_ref().map_or(0, |m| m.sealed),
        one_line(m.as_ref().and_then(|m| m.last_error.as_deref())),
        m.as_ref().map_or(-1, |m| m.failing_since_ms),
    );
}

fn replication(sh: &Shared, t: &mut String) {
    super::peers::info_section(sh, t);
}

fn duplex(sh: &Shared, t: &mut String) {
    let s = sh.db().stats();
    let st = sh.state().get();
    let _ = write!(
        t,
        "# Duplex\r\nstate:{}\r\nepoch:{}\r\nnode_id:{}\r\nlast_lsn:{}\r\ncheckpoint_lsn:{}\r\ngeneration:{}\r\nstore_bytes:{}\r\nlive_bytes:{}\r\ntree_entries:{}\r\nmemtable_entries:{}\r\ncompactions:{}\r\ndata_dir:{}\r\n",
        st.state.name(),
        st.epoch,
        st.node_id,
        s.last_lsn,
        s.checkpoint_lsn,
        s.generation,
        s.store_bytes,
        s.live_bytes,
        s.tree_entries,
        s.memtable_entries,
        s.compactions,
        sh.cfg().data.display()
    );
    if let Some(r) = sh.rebuild_run() {
        t.push_str(&r.info_lines());
    }
    if let Some(g) = sh.rebuild_gap() {
        t.push_str(&g.info_lines());
    }
    store_health(sh, t);
}

/// The background scrub of the store's blocks and the last maintenance failure (part of
/// `# Duplex`): damage found by the scrub names its file and offset.
fn store_health(sh: &Shared, t: &mut String) {
    let db = sh.db();
    let sc = db.scrub_status();
    let one_line = |v: String| v.replace(['\r', '\n'], " ");
    let damage = sc.damage.as_ref().map_or(String::new(), |d| {
        one_line(format!(
            "{} at offset {}: {}",
            d.file.display(),
            d.offset,
            d.problem
        ))
    });
    let _ = write!(
        t,
        "scrub_status:{}\r\nscrub_bytes_checked:{}\r\nscrub_total_bytes:{}\r\nscrub_damage:{}\r\nmaintenance_error:{}\r\n\r\n",
        match (sc.enabled, sc.damage.is_some(), sc.done) {
            (false, _, _) => "off",
            (true, true, _) => "damage",
            (true, false, true) => "done",
            (true, false, false) => "running",
        },
        sc.bytes_checked,
        sc.total_bytes,
        damage,
        one_line(db.maintenance_error().unwrap_or_default()),
    );
}

/// `# Keyspace` as Redis fills it: a line per database holding keys,
/// `db0:keys=N,expires=M,avg_ttl=0` (duplexd does not sample TTLs: avg_ttl is 0, as Redis
/// reports it when it has none). Counting walks every database from one snapshot (INFO is
/// slow work, run off the event loop); a count less than ten times as old as it took is
/// answered again ([`Shared::keyspace_info`]: a large database is not walked for every INFO).
fn keyspace(sh: &Shared, t: &mut String) {
    t.push_str("# Keyspace\r\n");
    t.push_str(&sh.keyspace_info(|| count_keyspace(sh)));
    t.push_str("\r\n");
}

/// The `dbN:keys=...` lines, counted now.
fn count_keyspace(sh: &Shared) -> String {
    let mut t = String::new();
    let mut r = Reader::new(sh.db().snapshot(), sh.clock().now_ms());
    for db in 0..crate::keyspace::DBS {
        let counted = (|| -> Result<(u64, u64), ReadError> {
            let mut it = r.scan(db, None)?;
            let (mut keys, mut expires) = (0u64, 0u64);
            while let Some((_, exp)) = it.next_entry()? {
                keys += 1;
                expires += u64::from(exp);
            }
            Ok((keys, expires))
        })();
        match counted {
            Ok((0, _)) => {}
            Ok((keys, expires)) => {
                let _ = write!(t, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
            }
            Err(e) => {
                let _ = write!(
                    t,
                    "db{db}:error={}\r\n",
                    e.to_string().replace(['\r', '\n'], " ")
                );
            }
        }
    }
    t
}
