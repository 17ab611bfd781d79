//! Issue 15, the keyspace commands through the `redis` crate against the real `duplexd`:
//! RENAME, RENAMENX, COPY (DB, REPLACE), TOUCH, RANDOMKEY, OBJECT, SCAN with TYPE, SWAPDB
//! (refused) and the "unknown command" reply, with the replies Redis 7 documents.

mod common;

use common::{Daemon, ServerDaemon};
use redis::{Commands, RedisError, Value};

/// An error reply as Redis sends it ("ERR no such key").
fn line(e: &RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// The error a command gets.
fn err(c: &mut redis::Connection, args: &[&str]) -> String {
    match cmd(args).query::<Value>(c) {
        Ok(v) => panic!("{args:?} answered {v:?}, not an error"),
        Err(e) => line(&e),
    }
}

/// A command's reply.
fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {}", line(&e)))
}

fn get(c: &mut redis::Connection, k: &str) -> Option<String> {
    c.get(k).unwrap()
}

#[test]
fn rename_renamenx_and_copy() {
    let t = duplex_testkit::temp_dir();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    // RENAME: the value and its expiry move; the destination is overwritten.
    let _: () = q(&mut c, &["SET", "mykey", "Hello", "EX", "100"]);
    let _: () = q(&mut c, &["SET", "other", "x"]);
    assert_eq!(q::<String>(&mut c, &["RENAME", "mykey", "other"]), "OK");
    assert_eq!(get(&mut c, "mykey"), None);
    assert_eq!(get(&mut c, "other").as_deref(), Some("Hello"));
    let ttl: i64 = q(&mut c, &["TTL", "other"]);
    assert!((99..=100).contains(&ttl), "the expiry moved with it: {ttl}");
    assert_eq!(err(&mut c, &["RENAME", "nosuch", "x"]), "ERR no such key");
    // Redis 7: renaming a key to itself answers OK.
    assert_eq!(q::<String>(&mut c, &["RENAME", "other", "other"]), "OK");
    // A counter renames as its value.
    let _: i64 = q(&mut c, &["INCRBY", "cnt", "41"]);
    let _: () = q(&mut c, &["RENAME", "cnt", "cnt2"]);
    assert_eq!(q::<i64>(&mut c, &["INCR", "cnt2"]), 42);
    // RENAMENX: 1 when renamed, 0 when the destination exists (or is the source).
    let _: () = q(&mut c, &["SET", "a", "1"]);
    let _: () = q(&mut c, &["SET", "b", "2"]);
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "a", "b"]), 0);
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "a", "a"]), 0);
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "a", "c"]), 1);
    assert_eq!(get(&mut c, "c").as_deref(), Some("1"));
    assert_eq!(err(&mut c, &["RENAMENX", "a", "z"]), "ERR no such key");
    // COPY: 1 copied, 0 when the source is missing or the destination exists.
    let _: () = q(&mut c, &["SET", "dolly", "sheep"]);
    assert_eq!(q::<i64>(&mut c, &["COPY", "dolly", "clone"]), 1);
    assert_eq!(get(&mut c, "clone").as_deref(), Some("sheep"));
    assert_eq!(q::<i64>(&mut c, &["COPY", "dolly", "clone"]), 0);
    let _: () = q(&mut c, &["SET", "dolly", "lamb"]);
    assert_eq!(q::<i64>(&mut c, &["COPY", "dolly", "clone", "REPLACE"]), 1);
    assert_eq!(get(&mut c, "clone").as_deref(), Some("lamb"));
    assert_eq!(q::<i64>(&mut c, &["COPY", "nosuch", "clone"]), 0);
    assert_eq!(
        err(&mut c, &["COPY", "dolly", "dolly"]),
        "ERR source and destination objects are the same"
    );
    // COPY ... DB: into another database, the same name allowed.
    assert_eq!(q::<i64>(&mut c, &["COPY", "dolly", "dolly", "DB", "5"]), 1);
    assert_eq!(
        err(&mut c, &["COPY", "dolly", "x", "DB", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        err(&mut c, &["COPY", "dolly", "x", "BOGUS"]),
        "ERR syntax error"
    );
    let _: () = q(&mut c, &["SELECT", "5"]);
    assert_eq!(get(&mut c, "dolly").as_deref(), Some("lamb"));
    // Inside MULTI, in order, seeing the transaction's own writes.
    let _: () = q(&mut c, &["MULTI"]);
    let _: () = q(&mut c, &["SET", "t1", "v"]);
    let _: () = q(&mut c, &["RENAME", "t1", "t2"]);
    let _: () = q(&mut c, &["GET", "t2"]);
    let r: Vec<Value> = q(&mut c, &["EXEC"]);
    assert_eq!(r[2], Value::BulkString(b"v".to_vec()));
}

#[test]
fn touch_randomkey_object_scan_type_and_refusals() {
    let t = duplex_testkit::temp_dir();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    // RANDOMKEY of an empty database: nil.
    assert_eq!(q::<Option<String>>(&mut c, &["RANDOMKEY"]), None);
    let _: () = q(&mut c, &["MSET", "key1", "Hello", "key2", "World"]);
    assert_eq!(q::<i64>(&mut c, &["TOUCH", "key1", "key2", "nosuch"]), 2);
    for _ in 0..20 {
        let k: String = q(&mut c, &["RANDOMKEY"]);
        assert!(k == "key1" || k == "key2", "{k}");
    }
    // OBJECT ENCODING: what Redis answers for the string.
    let _: () = q(&mut c, &["SET", "n", "12345"]);
    let _: () = q(&mut c, &["SET", "long", &"x".repeat(45)]);
    assert_eq!(q::<String>(&mut c, &["OBJECT", "ENCODING", "n"]), "int");
    assert_eq!(
        q::<String>(&mut c, &["OBJECT", "ENCODING", "key1"]),
        "embstr"
    );
    assert_eq!(q::<String>(&mut c, &["OBJECT", "ENCODING", "long"]), "raw");
    assert_eq!(
        q::<Option<String>>(&mut c, &["OBJECT", "ENCODING", "nosuch"]),
        None
    );
    assert_eq!(q::<i64>(&mut c, &["OBJECT", "REFCOUNT", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["OBJECT", "IDLETIME", "n"]), 0);
    assert!(err(&mut c, &["OBJECT", "FREQ", "n"])
        .starts_with("ERR An LFU maxmemory policy is not selected"));
    let help: Vec<String> = q(&mut c, &["OBJECT", "HELP"]);
    assert!(help[0].starts_with("OBJECT <subcommand>"));
    assert_eq!(
        err(&mut c, &["OBJECT", "NOPE", "n"]),
        "ERR unknown subcommand or wrong number of arguments for 'NOPE'. Try OBJECT HELP."
    );
    // SCAN TYPE: strings are listed, other types are none.
    let (_, keys): (String, Vec<String>) =
        q(&mut c, &["SCAN", "0", "COUNT", "100", "TYPE", "string"]);
    assert_eq!(keys.len(), 4);
    let (_, keys): (String, Vec<String>) =
        q(&mut c, &["SCAN", "0", "COUNT", "100", "TYPE", "list"]);
    assert!(keys.is_empty());
    // SWAPDB: refused with its reason; bad indexes as Redis words them.
    assert!(
        err(&mut c, &["SWAPDB", "0", "1"]).starts_with("ERR SWAPDB is not supported by duplexd")
    );
    assert_eq!(
        err(&mut c, &["SWAPDB", "x", "1"]),
        "ERR invalid first DB index"
    );
    assert_eq!(
        err(&mut c, &["SWAPDB", "0", "99"]),
        "ERR invalid second DB index"
    );
    // Unknown commands: Redis 7's text, byte for byte (each argument quoted and followed
    // by a space, even the last).
    assert_eq!(
        err(&mut c, &["NOSUCH", "a", "b"]),
        "ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        err(&mut c, &["LPUSH", "l", "x"]),
        "ERR unknown command 'LPUSH', with args beginning with: 'l' 'x' "
    );
    assert_eq!(
        err(&mut c, &["NOSUCH"]),
        "ERR unknown command 'NOSUCH', with args beginning with: "
    );
    // The connection is still fine.
    assert_eq!(get(&mut c, "key1").as_deref(), Some("Hello"));
}
