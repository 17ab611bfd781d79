//! Issue 15, transactions through the `redis` crate against the real `duplexd`: WATCH,
//! UNWATCH, DISCARD and EXEC with Redis 7's semantics (a watched key written by another
//! client, by this client, by a peer server's replicated write, expired, or flushed while
//! it existed makes EXEC answer nil and apply nothing), SELECT inside MULTI.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{conn, mesh, secret_file};
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

fn ok(c: &mut redis::Connection, args: &[&str]) {
    let v: Value = q(c, args);
    assert!(
        matches!(v, Value::Okay | Value::SimpleString(_)),
        "{args:?}: {v:?}"
    );
}

/// WATCH `key` on `c`, let `meddle` run, then MULTI / SET key mine / EXEC: the EXEC reply.
fn watched_exec(c: &mut redis::Connection, key: &str, meddle: impl FnOnce()) -> Value {
    ok(c, &["WATCH", key]);
    meddle();
    ok(c, &["MULTI"]);
    let queued: Value = q(c, &["SET", key, "mine"]);
    assert_eq!(queued, Value::SimpleString("QUEUED".into()));
    q(c, &["EXEC"])
}

#[test]
fn watch_aborts_exec_as_redis_does() {
    let t = duplex_testkit::temp_dir();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let mut other = d.conn();
    // Nobody touched it: EXEC runs.
    ok(&mut c, &["SET", "k", "0"]);
    let r = watched_exec(&mut c, "k", || {});
    assert_eq!(r, Value::Array(vec![Value::Okay]));
    // Another client wrote it: nil, nothing applied.
    let r = watched_exec(&mut c, "k", || {
        let _: () = other.set("k", "theirs").unwrap();
    });
    assert_eq!(r, Value::Nil);
    assert_eq!(c.get::<_, String>("k").unwrap(), "theirs");
    // A write of the same value counts too; so does an INCR (a counter's contribution).
    let r = watched_exec(&mut c, "k", || {
        let _: () = other.set("k", "theirs").unwrap();
    });
    assert_eq!(r, Value::Nil);
    ok(&mut c, &["SET", "n", "1"]);
    let r = watched_exec(&mut c, "n", || {
        let _: i64 = other.incr("n", 1).unwrap();
    });
    assert_eq!(r, Value::Nil);
    // This client's own write between WATCH and MULTI aborts too (as in Redis).
    ok(&mut c, &["WATCH", "k"]);
    ok(&mut c, &["SET", "k", "self"]);
    ok(&mut c, &["MULTI"]);
    let _: Value = q(&mut c, &["SET", "k", "mine"]);
    assert_eq!(q::<Value>(&mut c, &["EXEC"]), Value::Nil);
    // A write that changes nothing (a refused SET NX) does not.
    let r = watched_exec(&mut c, "k", || {
        let v: Option<String> = redis::cmd("SET")
            .arg("k")
            .arg("x")
            .arg("NX")
            .query(&mut other)
            .unwrap();
        assert_eq!(v, None);
    });
    assert_eq!(r, Value::Array(vec![Value::Okay]));
    // A write of another key does not.
    let r = watched_exec(&mut c, "k", || {
        let _: () = other.set("unrelated", "1").unwrap();
    });
    assert_eq!(r, Value::Array(vec![Value::Okay]));
    // Watching a missing key that someone creates aborts; one that stays missing does not.
    let r = watched_exec(&mut c, "fresh", || {
        let _: () = other.set("fresh", "1").unwrap();
    });
    assert_eq!(r, Value::Nil);
    let r = watched_exec(&mut c, "never", || {});
    assert_eq!(r, Value::Array(vec![Value::Okay]));
    // The same key in another database is another key.
    let r = watched_exec(&mut c, "k", || {
        ok(&mut other, &["SELECT", "2"]);
        let _: () = other.set("k", "db2").unwrap();
        ok(&mut other, &["SELECT", "0"]);
    });
    assert_eq!(r, Value::Array(vec![Value::Okay]));
    // A key that expires between WATCH and EXEC aborts it (Redis 7).
    ok(&mut c, &["SET", "e", "1", "PX", "150"]);
    let r = watched_exec(&mut c, "e", || {
        std::thread::sleep(Duration::from_millis(300))
    });
    assert_eq!(r, Value::Nil);
    // FLUSHDB of a watched key that exists aborts; of one that does not, not (Redis 7).
    ok(&mut c, &["SET", "f", "1"]);
    let r = watched_exec(&mut c, "f", || ok(&mut other, &["FLUSHDB"]));
    assert_eq!(r, Value::Nil);
    let r = watched_exec(&mut c, "gone", || ok(&mut other, &["FLUSHALL"]));
    assert_eq!(r, Value::Array(vec![Value::Okay]));
    // UNWATCH forgets; so do EXEC and DISCARD.
    ok(&mut c, &["WATCH", "k"]);
    ok(&mut c, &["UNWATCH"]);
    let _: () = other.set("k", "2").unwrap();
    ok(&mut c, &["MULTI"]);
    let _: Value = q(&mut c, &["GET", "k"]);
    let r: Value = q(&mut c, &["EXEC"]);
    assert_eq!(r, Value::Array(vec![Value::BulkString(b"2".to_vec())]));
    ok(&mut c, &["WATCH", "k"]);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["DISCARD"]);
    let _: () = other.set("k", "3").unwrap();
    ok(&mut c, &["MULTI"]);
    let r: Value = q(&mut c, &["EXEC"]);
    assert_eq!(r, Value::Array(vec![]));
    // WATCH inside MULTI is an error that does not doom the transaction.
    ok(&mut c, &["MULTI"]);
    let e = cmd(&["WATCH", "k"]).query::<Value>(&mut c).unwrap_err();
    assert_eq!(e.detail(), Some("WATCH inside MULTI is not allowed"));
    let _: Value = q(&mut c, &["UNWATCH"]);
    let r: Value = q(&mut c, &["EXEC"]);
    assert_eq!(r, Value::Array(vec![Value::Okay]));
    // A queued error still aborts with EXECABORT, watched or not, and forgets the watch.
    ok(&mut c, &["WATCH", "k"]);
    ok(&mut c, &["MULTI"]);
    assert!(cmd(&["GET"]).query::<Value>(&mut c).is_err());
    let e = cmd(&["EXEC"]).query::<Value>(&mut c).unwrap_err();
    assert_eq!(e.code(), Some("EXECABORT"));
}

#[test]
fn select_inside_multi_switches_for_the_rest_and_after() {
    let t = duplex_testkit::temp_dir();
    let d = Daemon::start_in(t.path(), &[]);
    // The redis crate turns an EXEC reply holding an error into that error: the raw reply.
    let (got, _) = common::raw(
        d.port,
        b"MULTI\r\nSET where zero\r\nSELECT 4\r\nSET where four\r\nSELECT 99\r\nGET where\r\nEXEC\r\nGET where\r\n",
        1,
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
         *5\r\n+OK\r\n+OK\r\n+OK\r\n-ERR DB index is out of range\r\n$4\r\nfour\r\n$4\r\nfour\r\n"
    );
    // The connection stayed in database 4 afterwards, as in Redis (the last GET); a new
    // one starts in 0.
    let mut c = d.conn();
    assert_eq!(c.get::<_, String>("where").unwrap(), "zero");
}

#[test]
fn a_peer_servers_replicated_write_aborts_exec() {
    let t = duplex_testkit::temp_dir();
    let secret = secret_file(t.path(), "secret", "watch-test-secret");
    let nodes = mesh(t.path(), 2, &secret);
    let _ds: Vec<_> = nodes.iter().map(|n| n.start()).collect();
    let (pa, pb) = (nodes[0].port, nodes[1].port);
    let mut a = conn(pa);
    let mut b = conn(pb);
    let _: () = a.set("acct", "100").unwrap();
    let wait_for = |port: u16, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: Option<String> = conn(port).get("acct").unwrap();
            if v.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{want} never reached {port}: {v:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(pb, "100");
    // Nothing meddles: the EXEC on B runs.
    let r = watched_exec(&mut b, "acct", || {});
    assert_eq!(r, Value::Array(vec![Value::Okay]));
    wait_for(pa, "mine");
    // A writes the key; once its write reached B, B's watched EXEC aborts.
    let r = watched_exec(&mut b, "acct", || {
        let _: () = a.set("acct", "from-a").unwrap();
        wait_for(pb, "from-a");
    });
    assert_eq!(r, Value::Nil, "a peer's replicated write aborts EXEC");
    assert_eq!(b.get::<_, String>("acct").unwrap(), "from-a");
    // An increment on A (a counter contribution) aborts it too.
    let _: () = a.set("hits", "1").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.get::<_, Option<String>>("hits").unwrap().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = watched_exec(&mut b, "hits", || {
        let _: i64 = a.incr("hits", 1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while conn(pb).get::<_, String>("hits").unwrap() != "2" {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(r, Value::Nil);
}
