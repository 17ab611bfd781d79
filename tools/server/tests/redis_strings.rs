//! Issue 15 through the `redis` crate against the real `duplexd`: databases (SELECT,
//! FLUSHDB, FLUSHALL, DBSIZE, SCAN, MOVE), the string commands and expiry, with the replies
//! and error texts Redis 7 gives; flushes and expiry times survive a `kill -9` and the
//! WAL's roll-forward at restart.

mod common;

use std::time::Duration;

use common::{Daemon, ServerDaemon};
use redis::{Commands, RedisError, Value};

fn tmp() -> duplex_testkit::TempDir {
    duplex_testkit::temp_dir()
}

/// An error reply as Redis sends it ("ERR syntax error").
fn line(e: &RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

/// The error a command gets.
fn err(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<Value>(c) {
        Ok(v) => panic!("{args:?} answered {v:?}, not an error"),
        Err(e) => line(&e),
    }
}

/// A command's reply.
fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {}", line(&e)))
}

fn get(c: &mut redis::Connection, k: &str) -> Option<String> {
    c.get(k).unwrap()
}

#[test]
fn databases_select_flush_and_move() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let _: () = c.set("a", "db0").unwrap();
    let _: () = q(&mut c, &["SELECT", "3"]);
    assert_eq!(get(&mut c, "a"), None, "databases are separate key spaces");
    let _: () = c.set("a", "db3").unwrap();
    let _: () = c.set("b", "db3").unwrap();
    // A key starting with byte 0xFF lives in its database like any other.
    let _: () = c.set(b"\xffodd".as_slice(), "x").unwrap();
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 3);
    let mut keys: Vec<Vec<u8>> = c.scan().unwrap().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![b"a".to_vec(), b"b".to_vec(), b"\xffodd".to_vec()]
    );
    let mut keys: Vec<String> = q(&mut c, &["KEYS", "?"]);
    keys.sort();
    assert_eq!(keys, vec!["a", "b"]);
    let _: () = q(&mut c, &["SELECT", "0"]);
    assert_eq!(get(&mut c, "a").as_deref(), Some("db0"));
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 1);
    assert_eq!(q::<Vec<String>>(&mut c, &["KEYS", "*"]), vec!["a"]);
    let _: () = c.set(b"\xff0".as_slice(), "y").unwrap();
    let keys: Vec<Vec<u8>> = c.scan().unwrap().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(
        err(&mut c, &["SELECT", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["SELECT", "-1"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["SELECT", "x"]),
        "ERR value is not an integer or out of range"
    );
    // MOVE: to a database without the key.
    assert_eq!(q::<i64>(&mut c, &["MOVE", "a", "3"]), 0, "db 3 has an 'a'");
    assert_eq!(q::<i64>(&mut c, &["MOVE", "a", "5"]), 1);
    assert_eq!(q::<i64>(&mut c, &["MOVE", "nope", "5"]), 0);
    assert_eq!(
        err(&mut c, &["MOVE", "x", "0"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(get(&mut c, "a"), None);
    // FLUSHDB empties the selected database only.
    let _: () = q(&mut c, &["SELECT", "3"]);
    let _: () = q(&mut c, &["FLUSHDB"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(get(&mut c, "b"), None);
    let keys: Vec<Vec<u8>> = c.scan().unwrap().collect();
    assert!(keys.is_empty(), "{keys:?}");
    // A write after the flush survives it.
    let _: () = c.set("b", "again").unwrap();
    assert_eq!(get(&mut c, "b").as_deref(), Some("again"));
    let _: () = q(&mut c, &["SELECT", "5"]);
    assert_eq!(get(&mut c, "a").as_deref(), Some("db0"));
    assert_eq!(err(&mut c, &["FLUSHDB", "NOW"]), "ERR syntax error");
    let _: () = q(&mut c, &["FLUSHALL", "ASYNC"]);
    assert_eq!(get(&mut c, "a"), None);
    let _: () = q(&mut c, &["SELECT", "3"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    let _: () = q(&mut c, &["SELECT", "0"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    let _: () = q(&mut c, &["FLUSHALL", "SYNC"]);
    // In a transaction: what is written before the flush goes, what comes after stays.
    let (r,): (Vec<Value>,) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("before")
        .arg("1")
        .cmd("FLUSHDB")
        .cmd("SET")
        .arg("after")
        .arg("2")
        .query(&mut c)
        .map(|v: Vec<Value>| (v,))
        .unwrap_or_else(|e| panic!("{}", line(&e)));
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(get(&mut c, "before"), None);
    assert_eq!(get(&mut c, "after").as_deref(), Some("2"));
    // Another connection starts in database 0.
    let mut c2 = d.conn();
    assert_eq!(get(&mut c2, "after").as_deref(), Some("2"));
}

#[test]
fn counters_and_string_commands() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "41"]), 42);
    assert_eq!(q::<i64>(&mut c, &["DECR", "n"]), 41);
    assert_eq!(q::<i64>(&mut c, &["DECRBY", "n", "-9"]), 50);
    assert_eq!(get(&mut c, "n").as_deref(), Some("50"));
    let _: () = c.set("s", "abc").unwrap();
    let not_int = "ERR value is not an integer or out of range";
    assert_eq!(err(&mut c, &["INCR", "s"]), not_int);
    assert_eq!(err(&mut c, &["INCRBY", "n", "1.5"]), not_int);
    assert_eq!(err(&mut c, &["INCRBY", "n", "+1"]), not_int);
    let _: () = c.set("big", i64::MAX.to_string()).unwrap();
    assert_eq!(
        err(&mut c, &["INCR", "big"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        err(&mut c, &["DECRBY", "n", "-9223372036854775808"]),
        "ERR decrement would overflow"
    );
    // INCRBYFLOAT: Redis's examples.
    let _: () = c.set("f", "10.50").unwrap();
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "0.1"]), "10.6");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "-5"]), "5.6");
    let _: () = c.set("f", "5.0e3").unwrap();
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "2.0e2"]), "5200");
    assert_eq!(
        err(&mut c, &["INCRBYFLOAT", "s", "1"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        err(&mut c, &["INCRBYFLOAT", "f", "x"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        err(&mut c, &["INCRBYFLOAT", "f", "inf"]),
        "ERR increment would produce NaN or Infinity"
    );
    // APPEND, STRLEN, GETRANGE, SETRANGE.
    assert_eq!(q::<i64>(&mut c, &["APPEND", "m", "Hello"]), 5);
    assert_eq!(q::<i64>(&mut c, &["APPEND", "m", " World"]), 11);
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "m"]), 11);
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "none"]), 0);
    let _: () = c.set("r", "This is a string").unwrap();
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "r", "0", "3"]), "This");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "r", "-3", "-1"]), "ing");
    assert_eq!(
        q::<String>(&mut c, &["GETRANGE", "r", "10", "100"]),
        "string"
    );
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "none", "0", "-1"]), "");
    assert_eq!(err(&mut c, &["GETRANGE", "r", "a", "1"]), not_int);
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "m", "6", "Redis"]), 11);
    assert_eq!(get(&mut c, "m").as_deref(), Some("Hello Redis"));
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "pad", "6", "Redis"]), 11);
    assert_eq!(get(&mut c, "pad").as_deref(), Some("\0\0\0\0\0\0Redis"));
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "empty", "3", ""]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "empty"]), 0);
    assert_eq!(
        err(&mut c, &["SETRANGE", "m", "-1", "x"]),
        "ERR offset is out of range"
    );
    // GETSET, GETDEL, SETNX, MSETNX, SET GET / NX / XX.
    assert_eq!(q::<Option<String>>(&mut c, &["GETSET", "g", "1"]), None);
    assert_eq!(q::<String>(&mut c, &["GETSET", "g", "2"]), "1");
    assert_eq!(q::<String>(&mut c, &["GETDEL", "g"]), "2");
    assert_eq!(q::<Option<String>>(&mut c, &["GETDEL", "g"]), None);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "g", "a"]), 1);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "g", "b"]), 0);
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "x1", "1", "x2", "2"]), 1);
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "x2", "9", "x3", "3"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "x3"]), 0);
    assert_eq!(
        err(&mut c, &["MSETNX", "x1", "1", "x2"]),
        "ERR wrong number of arguments for 'msetnx' command"
    );
    assert_eq!(q::<String>(&mut c, &["SET", "g", "c", "GET"]), "a");
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "new", "c", "NX", "GET"]),
        None
    );
    assert_eq!(
        err(&mut c, &["SET", "g", "c", "NX", "XX"]),
        "ERR syntax error"
    );
    assert_eq!(q::<String>(&mut c, &["TYPE", "g"]), "string");
    assert_eq!(q::<String>(&mut c, &["TYPE", "none"]), "none");
    assert_eq!(q::<i64>(&mut c, &["UNLINK", "g", "new", "none"]), 2);
    // A transaction of counters.
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("tx")
        .cmd("INCRBY")
        .arg("tx")
        .arg("5")
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (1, 6));
}

#[test]
fn expiry() {
    let t = tmp();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    assert_eq!(q::<i64>(&mut c, &["TTL", "none"]), -2);
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 100);
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    let at: i64 = q(&mut c, &["PEXPIRETIME", "k"]);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), at / 1000);
    // NX / XX / GT / LT.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "200", "NX"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "50", "GT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "200", "GT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "300", "LT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "150", "LT", "XX"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 150);
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "1", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "1", "GT", "LT"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "x"]),
        "ERR value is not an integer or out of range"
    );
    // INCR and APPEND keep the expiry; SET drops it unless KEEPTTL.
    let _: () = c.set("n", "1").unwrap();
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "n", "100"]), 1);
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 2);
    assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), 100);
    let _: () = q(&mut c, &["SET", "n", "5", "KEEPTTL"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), 100);
    let _: () = c.set("n", "6").unwrap();
    assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), -1);
    assert_eq!(
        q::<i64>(&mut c, &["EXPIRE", "n", "100", "LT"]),
        1,
        "no expiry is infinite"
    );
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "n"]), 0);
    assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), -1);
    // SET EX / PX / EXAT, SETEX, PSETEX, GETEX.
    let _: () = q(&mut c, &["SET", "e", "v", "EX", "10"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "e"]), 10);
    assert_eq!(
        err(&mut c, &["SET", "e", "v", "EX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        err(&mut c, &["SETEX", "e", "-1", "v"]),
        "ERR invalid expire time in 'setex' command"
    );
    let _: () = q(&mut c, &["SETEX", "e", "20", "v"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "e"]), 20);
    assert_eq!(q::<String>(&mut c, &["GETEX", "e", "PERSIST"]), "v");
    assert_eq!(q::<i64>(&mut c, &["TTL", "e"]), -1);
    assert_eq!(q::<String>(&mut c, &["GETEX", "e", "EX", "30"]), "v");
    assert_eq!(q::<i64>(&mut c, &["TTL", "e"]), 30);
    assert_eq!(err(&mut c, &["GETEX", "e", "EX"]), "ERR syntax error");
    // Expired keys are gone at once, from every read.
    let _: () = q(&mut c, &["PSETEX", "short", "150", "v"]);
    let _: () = q(&mut c, &["SET", "short2", "v", "PX", "150"]);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "short", "short2"]), 2);
    let before: i64 = q(&mut c, &["DBSIZE"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&mut c, "short"), None);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "short", "short2"]), 0);
    assert_eq!(q::<i64>(&mut c, &["TTL", "short"]), -2);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), before - 2);
    let keys: Vec<String> = c.scan_match("short*").unwrap().collect();
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(
        q::<i64>(&mut c, &["INCR", "short"]),
        1,
        "an expired counter starts again"
    );
    // A time in the past deletes.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "e", "-1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "e"]), 0);
    let _: () = q(&mut c, &["SET", "p", "v", "PXAT", "1"]);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "p"]), 0);
}

#[test]
fn flushes_and_expiry_times_survive_a_kill_and_restart() {
    let t = tmp();
    let mut d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    for i in 0..20 {
        let _: () = c.set(format!("old{i}"), i).unwrap();
    }
    let _: () = q(&mut c, &["SELECT", "2"]);
    let _: () = c.set("kept", "2").unwrap();
    let _: () = q(&mut c, &["SELECT", "0"]);
    let _: () = q(&mut c, &["FLUSHDB"]);
    let _: () = c.set("new", "1").unwrap();
    let _: () = q(&mut c, &["SET", "ttl", "v", "EX", "1000"]);
    let at: i64 = q(&mut c, &["PEXPIRETIME", "ttl"]);
    let _: () = q(&mut c, &["SET", "gone", "v", "PX", "200"]);
    drop(c);
    d.kill9();
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
    let mut c = d.conn();
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 2, "new and ttl only");
    assert_eq!(get(&mut c, "old3"), None);
    assert_eq!(get(&mut c, "new").as_deref(), Some("1"));
    assert_eq!(get(&mut c, "gone"), None);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "ttl"]), at);
    let _: () = q(&mut c, &["SELECT", "2"]);
    assert_eq!(get(&mut c, "kept").as_deref(), Some("2"));
}
