//! Every command through the `redis` crate against the real `duplexd` binary: data
//! commands, pipelining, MULTI/EXEC (atomic under concurrency), SET NX under concurrency,
//! AUTH, state and admin commands, limits, malformed input over raw TCP.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{raw, Daemon, ServerDaemon};
use redis::{Commands, RedisResult, Value};

fn tmp() -> duplex_testkit::TempDir {
    duplex_testkit::temp_dir()
}

#[test]
fn data_commands() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    // One connection through every step, in this order: later steps count the keys
    // earlier ones wrote.
    basic_get_and_set(&mut c);
    set_conditions(&mut c);
    multi_key_commands(&mut c);
    dbsize_and_scan(&mut c);
    connection_and_info_commands(&mut c);
    errors_keep_the_connection(&mut c);
}

/// PING, ECHO, SET and GET.
fn basic_get_and_set(c: &mut redis::Connection) {
    let pong: String = redis::cmd("PING").query(c).unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO").arg("hi").query(c).unwrap();
    assert_eq!(echo, "hi");
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(
        c.get::<_, Option<String>>("k").unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(c.get::<_, Option<String>>("nope").unwrap(), None);
}

/// SET with NX / XX; unsupported options are refused, not ignored.
fn set_conditions(c: &mut redis::Connection) {
    let r: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .arg("NX")
        .query(c)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("w")
        .arg("XX")
        .query(c)
        .unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = redis::cmd("SET")
        .arg("new")
        .arg("1")
        .arg("XX")
        .query(c)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<String> = redis::cmd("SET")
        .arg("new")
        .arg("1")
        .arg("NX")
        .query(c)
        .unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    // Unknown options are refused, not ignored.
    let e: RedisResult<()> = redis::cmd("SET")
        .arg("k")
        .arg("x")
        .arg("EXX")
        .arg("10")
        .query(c);
    let e = e.unwrap_err();
    assert_eq!((e.code(), e.detail()), (Some("ERR"), Some("syntax error")));
    assert_eq!(c.get::<_, String>("k").unwrap(), "w");
}

/// MSET / MGET / EXISTS / DEL.
fn multi_key_commands(c: &mut redis::Connection) {
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(c)
        .unwrap();
    let v: Vec<Option<String>> = redis::cmd("MGET")
        .arg("a")
        .arg("b")
        .arg("zz")
        .query(c)
        .unwrap();
    assert_eq!(v, vec![Some("1".into()), Some("2".into()), None]);
    let n: i64 = redis::cmd("EXISTS")
        .arg("a")
        .arg("b")
        .arg("zz")
        .arg("a")
        .query(c)
        .unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("DEL")
        .arg("a")
        .arg("zz")
        .arg("a")
        .query(c)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("DEL").arg("a").query(c).unwrap();
    assert_eq!(n, 0);
}

/// DBSIZE and SCAN with MATCH / COUNT over many keys (3 keys exist before).
fn dbsize_and_scan(c: &mut redis::Connection) {
    for i in 0..150 {
        let _: () = c.set(format!("scan:{i:03}"), i).unwrap();
    }
    let n: i64 = redis::cmd("DBSIZE").query(c).unwrap();
    assert_eq!(n, 150 + 3);
    let mut cursor = 0u64;
    let mut seen = HashSet::new();
    let mut rounds = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("scan:*")
            .arg("COUNT")
            .arg(20)
            .query(c)
            .unwrap();
        for k in keys {
            assert!(k.starts_with("scan:"));
            assert!(seen.insert(k));
        }
        rounds += 1;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 150);
    assert!(rounds >= 7);
    let it: Vec<String> = c.scan_match("scan:1?9").unwrap().collect();
    assert_eq!(it.len(), 5);
    let e: RedisResult<Value> = redis::cmd("SCAN").arg(12345).query(c);
    assert!(e.is_err());
}

/// SELECT, HELLO, CLIENT, COMMAND, CONFIG, INFO.
fn connection_and_info_commands(c: &mut redis::Connection) {
    let _: () = redis::cmd("SELECT").arg(0).query(c).unwrap();
    assert!(redis::cmd("SELECT").arg(16).query::<()>(c).is_err());
    let e = redis::cmd("HELLO").arg(4).query::<Value>(c).unwrap_err();
    assert_eq!(e.code(), Some("NOPROTO"));
    let h: Vec<Value> = redis::cmd("HELLO").arg(2).query(c).unwrap();
    assert_eq!(h.len(), 14);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(c)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(c).unwrap();
    assert_eq!(name, "tester");
    let _: () = redis::cmd("CLIENT")
        .arg("SETINFO")
        .arg("LIB-NAME")
        .arg("x")
        .query(c)
        .unwrap();
    let n: i64 = redis::cmd("COMMAND").arg("COUNT").query(c).unwrap();
    assert!(n > 10);
    let docs: Vec<Value> = redis::cmd("COMMAND").arg("DOCS").query(c).unwrap();
    assert_eq!(
        docs.len() as i64,
        2 * n,
        "a name and its documentation per command"
    );
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(c)
        .unwrap();
    assert_eq!(cfg, vec!["save".to_string(), String::new()]);
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query(c)
        .unwrap();
    assert_eq!(cfg[1], "always");
    let info: String = redis::cmd("INFO").query(c).unwrap();
    for want in [
        "# Server",
        "# Clients",
        "# Persistence",
        "# Replication",
        "# Duplex",
        "state:running",
        "epoch:1",
        "connected_clients:1",
    ] {
        assert!(info.contains(want), "INFO lacks {want}: {info}");
    }
    let info: String = redis::cmd("INFO").arg("duplex").query(c).unwrap();
    assert!(!info.contains("# Server"));
}

/// Unknown commands and bad arities are errors, and the connection stays usable.
fn errors_keep_the_connection(c: &mut redis::Connection) {
    let e = redis::cmd("NOSUCHCMD").arg("a").query::<()>(c).unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown command 'NOSUCHCMD', with args beginning with: 'a'"),
        "{e}"
    );
    let e = redis::cmd("GET").query::<()>(c).unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    assert_eq!(c.get::<_, String>("k").unwrap(), "w");
    // Empty keys are refused clearly.
    assert!(c.set::<_, _, ()>("", "x").is_err());
}

#[test]
fn state_backup_checkpoint_fence() {
    let t = tmp();
    // Retention right after each backup: without the restore drill (restore_drill.rs).
    let d = Daemon::start_in(
        t.path(),
        &["--keep-backups", "2", "--backup-drill", "false"],
    );
    let mut c = d.conn();
    let _: () = c.set("x", "1").unwrap();
    let st: Vec<Value> = redis::cmd("DUPLEX.STATE").query(&mut c).unwrap();
    assert_eq!(st.len(), 12);
    let st: Vec<String> = st
        .iter()
        .map(|v| redis::from_redis_value::<String>(v).unwrap())
        .collect();
    assert_eq!(st[0..6], ["state", "running", "epoch", "1", "node_id", "1"]);
    assert!(st[7].parse::<u64>().unwrap() >= 1);
    assert_eq!(st[8..12], ["archive", "ok", "scrub", "ok"]);
    let _: () = redis::cmd("DUPLEX.CHECKPOINT").query(&mut c).unwrap();
    let r: String = redis::cmd("DUPLEX.BACKUP")
        .arg("first")
        .query(&mut c)
        .unwrap();
    assert!(r.contains("dir="), "{r}");
    assert!(t.path().join("backups/first/BACKUP").exists());
    let _: String = redis::cmd("DUPLEX.BACKUP").query(&mut c).unwrap();
    let _: String = redis::cmd("DUPLEX.BACKUP").query(&mut c).unwrap();
    // Retention keeps 2.
    let n = std::fs::read_dir(t.path().join("backups")).unwrap().count();
    assert_eq!(n, 2);
    assert!(redis::cmd("DUPLEX.BACKUP")
        .arg("../evil")
        .query::<String>(&mut c)
        .is_err());
    // Fencing bumps the epoch and refuses writes, reads go on.
    let epoch: i64 = redis::cmd("DUPLEX.FENCE").query(&mut c).unwrap();
    assert_eq!(epoch, 2);
    let e = c.set::<_, _, ()>("x", "2").unwrap_err();
    assert_eq!(e.code(), Some("FENCED"));
    assert_eq!(c.get::<_, String>("x").unwrap(), "1");
    let rec = duplex_server::state::load(&t.path().join("data"))
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, duplex_server::state::OpState::Fenced);
    assert_eq!(rec.epoch, 2);
    let _: () = redis::cmd("DUPLEX.UNFENCE").query(&mut c).unwrap();
    let _: () = c.set("x", "2").unwrap();
}

#[test]
fn scheduled_backups() {
    let t = tmp();
    let d = Daemon::start_in(
        t.path(),
        &[
            "--backup-interval",
            "1",
            "--keep-backups",
            "2",
            "--backup-drill",
            "false",
        ],
    );
    let mut c = d.conn();
    let _: () = c.set("x", "1").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    let taken: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("backups_taken:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(taken >= 2, "{info}");
    let n = std::fs::read_dir(t.path().join("backups")).unwrap().count();
    assert!(
        n <= 3,
        "retention keeps 2 (+1 in progress at most), found {n}"
    );
    assert!(d.log().contains("backup_done"));
}

#[test]
fn pipelining() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.set(format!("p{i}"), i).ignore();
        if i % 100 == 0 {
            p.get(format!("p{i}"));
        }
    }
    let got: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(got, (0..2000).step_by(100).collect::<Vec<i64>>());
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.get(format!("p{i}"));
    }
    let got: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(got, (0..2000).collect::<Vec<i64>>());
    // A bad command inside a pipeline fails alone.
    let r: Vec<Value> = redis::pipe()
        .set("q", 1)
        .cmd("NOSUCH")
        .get("q")
        .query(&mut c)
        .unwrap_or_default();
    let _ = r;
    assert_eq!(c.get::<_, i64>("q").unwrap(), 1);
}

#[test]
fn multi_exec_is_atomic() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let r: (String, Option<String>, i64) = redis::pipe()
        .atomic()
        .set("a", "1")
        .get("a")
        .del("a")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, ("OK".into(), Some("1".into()), 1));
    assert_eq!(c.get::<_, Option<String>>("a").unwrap(), None);
    // A bad queued command aborts the whole transaction.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let q: String = redis::cmd("SET").arg("t").arg("1").query(&mut c).unwrap();
    assert_eq!(q, "QUEUED");
    assert!(redis::cmd("NOSUCH").query::<()>(&mut c).is_err());
    let e = redis::cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert_eq!(e.code(), Some("EXECABORT"));
    assert_eq!(c.get::<_, Option<String>>("t").unwrap(), None);
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: () = redis::cmd("DISCARD").query(&mut c).unwrap();
    assert!(redis::cmd("EXEC").query::<Value>(&mut c).is_err());
    // Writers move a and b together in transactions; readers never see them differ.
    let _: () = c.set("a", 0).unwrap();
    let _: () = c.set("b", 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::new();
    for w in 0..3 {
        let cl = d.client();
        let stop = stop.clone();
        hs.push(std::thread::spawn(move || {
            let mut c = cl.get_connection().unwrap();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let v = i * 10 + w;
                let _: () = redis::pipe()
                    .atomic()
                    .set("a", v)
                    .set("b", v)
                    .query(&mut c)
                    .unwrap();
            }
        }));
    }
    let mut rc = d.conn();
    for _ in 0..300 {
        let (a, b): (i64, i64) = redis::pipe()
            .atomic()
            .get("a")
            .get("b")
            .query(&mut rc)
            .unwrap();
        assert_eq!(a, b);
        let v: Vec<i64> = redis::cmd("MGET").arg("a").arg("b").query(&mut rc).unwrap();
        assert_eq!(v[0], v[1]);
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn set_nx_is_exclusive_under_concurrency() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let wins = Arc::new(AtomicUsize::new(0));
    for round in 0..20 {
        let mut hs = Vec::new();
        for _ in 0..6 {
            let cl = d.client();
            let wins = wins.clone();
            hs.push(std::thread::spawn(move || {
                let mut c = cl.get_connection().unwrap();
                let r: Option<String> = redis::cmd("SET")
                    .arg(format!("nx{round}"))
                    .arg(1)
                    .arg("NX")
                    .query(&mut c)
                    .unwrap();
                if r.is_some() {
                    wins.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
    }
    assert_eq!(wins.load(Ordering::SeqCst), 20);
}

#[test]
fn auth_and_state_before_auth() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &["--requirepass", "s3cret"]);
    let mut c = d.conn();
    let e = c.get::<_, Option<String>>("k").unwrap_err();
    assert_eq!(e.code(), Some("NOAUTH"));
    // The state is readable before AUTH, so a client can choose a server.
    let st: Vec<Value> = redis::cmd("DUPLEX.STATE").query(&mut c).unwrap();
    assert_eq!(st.len(), 12);
    let e = redis::cmd("AUTH")
        .arg("wrong")
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGPASS"));
    let _: () = redis::cmd("AUTH").arg("s3cret").query(&mut c).unwrap();
    let _: () = c.set("k", "v").unwrap();
    // URL password: the crate sends AUTH on connect.
    let cl = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", d.port)).unwrap();
    let mut c2 = cl.get_connection().unwrap();
    assert_eq!(c2.get::<_, String>("k").unwrap(), "v");
    // HELLO 2 AUTH default <pass>
    let mut c3 = d.conn();
    let h: Vec<Value> = redis::cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("default")
        .arg("s3cret")
        .query(&mut c3)
        .unwrap();
    assert_eq!(h.len(), 14);
    assert_eq!(c3.get::<_, String>("k").unwrap(), "v");
}

#[test]
fn refuses_public_bind_without_password() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_duplexd"))
        .args(["--bind", "0.0.0.0", "--port", "0", "--data"])
        .arg(tmp().path().join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requirepass"));
}

#[test]
fn malformed_input_and_limits() {
    let t = tmp();
    std::fs::write(
        t.path().join("cfg.toml"),
        "max_bulk_len = 1000\nmax_args = 10\nmax_inline_len = 100\nmax_request_len = 5000\n",
    )
    .unwrap();
    let cfg = t.path().join("cfg.toml");
    let d = Daemon::start_in(
        t.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--max-clients",
            "3",
            "--idle-timeout",
            "1",
        ],
    );
    let p = d.port;
    // Inline commands work.
    let (got, _) = raw(p, b"SET a 1\r\nGET a\r\nPING\r\n", 1);
    assert_eq!(got, b"+OK\r\n$1\r\n1\r\n+PONG\r\n");
    // Protocol errors: one error reply, then the connection is closed.
    for bad in [
        &b"*1\r\n$2000\r\n"[..],
        b"*11\r\n",
        b"*1\r\n:5\r\n",
        b"*x\r\n",
        b"*1\r\n$1\r\nabc\r\n",
        b"*9223372036854775807\r\n",
        b"*1\r\n$-7\r\n",
        &[b'A'; 200][..],
    ] {
        let (got, closed) = raw(p, bad, 3);
        let s = String::from_utf8_lossy(&got);
        assert!(s.starts_with("-ERR Protocol error"), "{bad:?} -> {s}");
        assert!(closed, "{bad:?} did not close");
    }
    // Replies before the bad request are still sent.
    let (got, closed) = raw(p, b"PING\r\n*1\r\n$-7\r\n", 3);
    assert!(got.starts_with(b"+PONG\r\n-ERR Protocol error"));
    assert!(closed);
    // The server is still fine.
    let mut c = d.conn();
    assert_eq!(c.get::<_, String>("a").unwrap(), "1");
    // max_clients: 3 (c is one).
    let _c2 = d.conn();
    let _c3 = d.conn();
    let (got, closed) = raw(p, b"PING\r\n", 2);
    assert!(String::from_utf8_lossy(&got).contains("max number of clients"));
    assert!(closed);
    drop(_c2);
    drop(_c3);
    // Idle timeout: 1 s.
    let (_, closed) = raw(p, b"", 4);
    assert!(closed, "idle client not closed");
}

/// Parses a DUPLEX.DIGEST reply `<32 hex>/<count>`.
fn parse_digest(s: &str) -> (u128, u64) {
    let (sum, count) = s.split_once('/').unwrap_or_else(|| panic!("digest {s}"));
    assert_eq!(sum.len(), 32, "{s}");
    (
        u128::from_str_radix(sum, 16).unwrap(),
        count.parse().unwrap(),
    )
}

fn digest(c: &mut redis::Connection, range: Option<(&str, &str)>) -> (u128, u64) {
    let mut cmd = redis::cmd("DUPLEX.DIGEST");
    if let Some((s, e)) = range {
        cmd.arg(s).arg(e);
    }
    parse_digest(&cmd.query::<String>(c).unwrap())
}

#[test]
fn digest_of_all_keys_and_of_ranges() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    assert_eq!(digest(&mut c, None), (0, 0));
    let _: () = c.set("a", "1").unwrap();
    let one = digest(&mut c, None);
    assert_eq!(one.1, 1);
    assert_ne!(one.0, 0);
    // The same value written again is a new version (a new stamp): the digest changes.
    let _: () = c.set("a", "1").unwrap();
    let again = digest(&mut c, None);
    assert_eq!(again.1, 1);
    assert_ne!(again, one, "a rewrite with a new stamp kept the digest");
    for k in ["b", "c", "d"] {
        let _: () = c.set(k, k).unwrap();
    }
    let all = digest(&mut c, None);
    assert_eq!(all.1, 4);
    // [start, end): start included, end excluded; disjoint ranges add up to the whole.
    let ab = digest(&mut c, Some(("a", "b")));
    assert_eq!(ab, again, "[a, b) holds a alone");
    let bd = digest(&mut c, Some(("b", "d")));
    assert_eq!(bd.1, 2, "[b, d) holds b and c, not d");
    let dz = digest(&mut c, Some(("d", "zzz")));
    assert_eq!(dz.1, 1);
    assert_eq!(ab.0.wrapping_add(bd.0).wrapping_add(dz.0), all.0);
    assert_eq!(digest(&mut c, Some(("x", "y"))), (0, 0));
    // A delete is a version too: still counted, and the digest changes.
    let n: i64 = c.del("b").unwrap();
    assert_eq!(n, 1);
    let deleted = digest(&mut c, None);
    assert_eq!(deleted.1, 4, "the tombstone of b is counted");
    assert_ne!(deleted.0, all.0);
    assert_ne!(digest(&mut c, Some(("b", "d"))), bd);
    // Reads do not change it.
    let _: Option<String> = c.get("a").unwrap();
    assert_eq!(digest(&mut c, None), deleted);
    let e = redis::cmd("DUPLEX.DIGEST")
        .arg("a")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
}

#[test]
fn conflicts_on_a_lone_server_are_empty_with_counters() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let _: () = c.set("k", "v").unwrap();
    let _: () = c.set("k", "w").unwrap();
    // A local overwrite is not a conflict.
    for args in [&[][..], &["5"][..], &["0"][..]] {
        let r: Value = redis::cmd("DUPLEX.CONFLICTS")
            .arg(args)
            .query(&mut c)
            .unwrap();
        assert_eq!(
            r,
            Value::Array(vec![Value::Int(0), Value::Int(0), Value::Array(vec![])]),
            "{args:?}"
        );
    }
    for bad in ["-1", "x"] {
        let e = redis::cmd("DUPLEX.CONFLICTS")
            .arg(bad)
            .query::<Value>(&mut c)
            .unwrap_err();
        assert!(e.to_string().contains("non-negative integer"), "{e}");
    }
}
