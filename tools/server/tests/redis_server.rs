//! Issue 15, the connection and server commands through the `redis` crate against the real
//! `duplexd`: ECHO, TIME, COMMAND (COUNT, LIST, INFO, DOCS, plain), CLIENT (SETNAME,
//! GETNAME, ID, LIST, INFO, SETINFO, NO-EVICT), HELLO 2 and 3 (a RESP3 connection gets maps
//! and nulls), CONFIG GET of what clients probe, SAVE/BGSAVE/LASTSAVE (backups), INFO's
//! `# Keyspace`, and Redis's idle-timeout default (0: idle clients stay).

mod common;

use std::time::Duration;

use common::{Daemon, ServerDaemon};
use redis::{Commands, Value};

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn echo_time_and_command() {
    let t = duplex_testkit::temp_dir();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    assert_eq!(
        q::<String>(&mut c, &["ECHO", "Hello World!"]),
        "Hello World!"
    );
    let time: Vec<String> = q(&mut c, &["TIME"]);
    assert_eq!(time.len(), 2);
    let secs: u64 = time[0].parse().unwrap();
    let micros: u64 = time[1].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(secs.abs_diff(now) <= 2 && micros < 1_000_000);
    // COMMAND lists every command that exists, and COUNT agrees.
    let n: i64 = q(&mut c, &["COMMAND", "COUNT"]);
    let all: Vec<Value> = q(&mut c, &["COMMAND"]);
    assert_eq!(all.len() as i64, n);
    let list: Vec<String> = q(&mut c, &["COMMAND", "LIST"]);
    assert_eq!(list.len() as i64, n);
    for name in [
        "get",
        "set",
        "watch",
        "rename",
        "copy",
        "client",
        "hello",
        "duplex.digest",
    ] {
        assert!(list.iter().any(|l| l == name), "COMMAND LIST lacks {name}");
    }
    // COMMAND INFO: Redis 7's ten fields; nil for an unknown command.
    let info: Vec<Value> = q(&mut c, &["COMMAND", "INFO", "get", "mset", "nosuch"]);
    assert_eq!(info.len(), 3);
    let Value::Array(get) = &info[0] else {
        panic!("{info:?}")
    };
    assert_eq!(get.len(), 10);
    assert_eq!(get[0], Value::BulkString(b"get".to_vec()));
    assert_eq!(get[1], Value::Int(2));
    assert_eq!(
        (&get[3], &get[4], &get[5]),
        (&Value::Int(1), &Value::Int(1), &Value::Int(1))
    );
    let Value::Array(mset) = &info[1] else {
        panic!("{info:?}")
    };
    assert_eq!(mset[1], Value::Int(-3));
    assert_eq!(
        (&mset[3], &mset[4], &mset[5]),
        (&Value::Int(1), &Value::Int(-1), &Value::Int(2))
    );
    assert_eq!(info[2], Value::Nil);
    // COMMAND DOCS: name, then summary/since/group/arguments (what redis-cli's hints use).
    let docs: Vec<Value> = q(&mut c, &["COMMAND", "DOCS", "set"]);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0], Value::BulkString(b"set".to_vec()));
    let Value::Array(fields) = &docs[1] else {
        panic!("{docs:?}")
    };
    let keys: Vec<String> = fields
        .iter()
        .step_by(2)
        .map(|v| redis::from_redis_value(v).unwrap())
        .collect();
    assert_eq!(keys, ["summary", "since", "group", "arguments"]);
    assert_eq!(fields[5], Value::BulkString(b"string".to_vec()));
    let e = cmd(&["COMMAND", "NOPE"])
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("Try COMMAND HELP"), "{e}");
}

#[test]
fn client_hello_and_resp3() {
    let t = duplex_testkit::temp_dir();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let mut other = d.conn();
    let id: i64 = q(&mut c, &["CLIENT", "ID"]);
    assert_eq!(q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]), None);
    let _: () = q(&mut c, &["CLIENT", "SETNAME", "worker-1"]);
    assert_eq!(q::<String>(&mut c, &["CLIENT", "GETNAME"]), "worker-1");
    let e = cmd(&["CLIENT", "SETNAME", "bad name"])
        .query::<Value>(&mut c)
        .unwrap_err();
    assert_eq!(
        e.detail(),
        Some("Client names cannot contain spaces, newlines or special characters.")
    );
    let _: () = q(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "mylib"]);
    let _: () = q(&mut c, &["CLIENT", "SETINFO", "LIB-VER", "1.2"]);
    let _: () = q(&mut c, &["CLIENT", "NO-EVICT", "ON"]);
    let _: () = q(&mut c, &["CLIENT", "REPLY", "ON"]);
    // Silence is not pretended: every command is answered.
    assert!(cmd(&["CLIENT", "REPLY", "OFF"])
        .query::<Value>(&mut c)
        .is_err());
    let _: () = q(&mut c, &["SELECT", "3"]);
    // CLIENT INFO: this client's line; CLIENT LIST: one line per connected client.
    let mine: String = q(&mut c, &["CLIENT", "INFO"]);
    for want in [
        format!("id={id} "),
        " name=worker-1 ".into(),
        " db=3 ".into(),
        " resp=2 ".into(),
        " lib-name=mylib ".into(),
        " lib-ver=1.2".into(),
        " addr=127.0.0.1:".into(),
        format!(" laddr=127.0.0.1:{} ", d.port),
    ] {
        assert!(mine.contains(&want), "CLIENT INFO lacks {want:?}: {mine}");
    }
    let other_id: i64 = q(&mut other, &["CLIENT", "ID"]);
    let list: String = q(&mut c, &["CLIENT", "LIST"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains(&format!("id={other_id} ")), "{list}");
    drop(other);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let list: String = q(&mut c, &["CLIENT", "LIST"]);
        if list.lines().count() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a closed client stays listed: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // HELLO 2: the flat array; an unknown version: NOPROTO.
    let h: Vec<Value> = q(&mut c, &["HELLO", "2"]);
    assert_eq!(h.len(), 14);
    assert_eq!(h[5], Value::Int(2));
    let e = cmd(&["HELLO", "4"]).query::<Value>(&mut c).unwrap_err();
    assert_eq!(e.code(), Some("NOPROTO"));
    // A RESP3 connection (the client sends HELLO 3): maps and nulls.
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/?protocol=resp3", d.port)).unwrap();
    let mut r3 = client.get_connection().unwrap();
    let h: Value = q(&mut r3, &["HELLO", "3"]);
    let Value::Map(h) = h else {
        panic!("HELLO 3 answers a map: {h:?}")
    };
    assert!(h.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));
    assert_eq!(q::<Value>(&mut r3, &["GET", "nosuch"]), Value::Nil);
    let _: () = r3.set("k", "v").unwrap();
    assert_eq!(r3.get::<_, String>("k").unwrap(), "v");
    let mget: Value = q(&mut r3, &["MGET", "k", "nosuch"]);
    assert_eq!(
        mget,
        Value::Array(vec![Value::BulkString(b"v".to_vec()), Value::Nil])
    );
    let cfg: Value = q(&mut r3, &["CONFIG", "GET", "databases"]);
    assert_eq!(
        cfg,
        Value::Map(vec![(
            Value::BulkString(b"databases".to_vec()),
            Value::BulkString(b"16".to_vec())
        )])
    );
    // A watched EXEC aborted: null.
    let _: () = q(&mut r3, &["WATCH", "k"]);
    let _: () = q(&mut c, &["SELECT", "0"]);
    let _: () = c.set("k", "theirs").unwrap();
    let _: () = q(&mut r3, &["MULTI"]);
    let _: Value = q(&mut r3, &["GET", "k"]);
    assert_eq!(q::<Value>(&mut r3, &["EXEC"]), Value::Nil);
    let info: String = q(&mut r3, &["CLIENT", "INFO"]);
    assert!(info.contains(" resp=3 "), "{info}");
}

#[test]
fn config_save_info_keyspace_and_idle_clients() {
    let t = duplex_testkit::temp_dir();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let probe: Vec<String> = q(
        &mut c,
        &[
            "CONFIG",
            "GET",
            "save",
            "appendonly",
            "maxmemory",
            "databases",
            "timeout",
        ],
    );
    assert_eq!(
        probe,
        [
            "save",
            "",
            "appendonly",
            "yes",
            "maxmemory",
            "0",
            "databases",
            "16",
            "timeout",
            "0"
        ]
    );
    let policy: Vec<String> = q(&mut c, &["CONFIG", "GET", "maxmemory-*"]);
    assert!(policy.contains(&"noeviction".to_string()), "{policy:?}");
    assert!(cmd(&["CONFIG", "SET", "timeout", "5"])
        .query::<Value>(&mut c)
        .is_err());
    // INFO's keyspace, as Redis fills it: a line per database that holds keys.
    let info: String = q(&mut c, &["INFO", "keyspace"]);
    assert_eq!(info.trim_end(), "# Keyspace");
    let _: () = c.set("a", "1").unwrap();
    let _: () = q(&mut c, &["SET", "b", "2", "EX", "100"]);
    let _: i64 = c.incr("n", 1).unwrap();
    let _: () = q(&mut c, &["SELECT", "7"]);
    let _: () = c.set("x", "1").unwrap();
    let info: String = q(&mut c, &["INFO", "keyspace"]);
    assert_eq!(
        info,
        "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb7:keys=1,expires=0,avg_ttl=0\r\n\r\n"
    );
    let all: String = q(&mut c, &["INFO"]);
    assert!(all.contains("db7:keys=1,expires=0,avg_ttl=0"));
    // SAVE and BGSAVE take backups; LASTSAVE moves to the last one.
    let before: i64 = q(&mut c, &["LASTSAVE"]);
    assert!(before > 1_600_000_000);
    assert_eq!(q::<String>(&mut c, &["SAVE"]), "OK");
    assert_eq!(
        q::<String>(&mut c, &["BGSAVE"]),
        "Background saving started"
    );
    let after: i64 = q(&mut c, &["LASTSAVE"]);
    assert!(after >= before);
    let backups = std::fs::read_dir(t.path().join("backups"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(backups >= 2, "two backups taken, {backups} found");
    // Idle clients are not closed (Redis's `timeout 0`).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.get::<_, String>("x").unwrap(), "1");
}
