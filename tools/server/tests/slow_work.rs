//! Slow work runs off the event loop: while one client's DUPLEX.BACKUP copies the database,
//! other clients are answered; the slow client's own replies stay in request order.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, ServerDaemon};
use redis::Value;

fn state(c: &mut redis::Connection) -> String {
    let st: Vec<Value> = redis::cmd("DUPLEX.STATE").query(c).unwrap();
    redis::from_redis_value(&st[1]).unwrap()
}

/// Reads from `s` until the reply to the last request (`+PONG`) has arrived.
fn read_until_pong(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !got.ends_with(b"+PONG\r\n") {
        assert!(Instant::now() < deadline, "no reply: {got:?}");
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed: {got:?}");
        got.extend_from_slice(&b[..n]);
    }
    got
}

#[test]
fn other_clients_are_served_while_a_backup_runs_and_replies_stay_in_order() {
    let t = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let val = vec![b'v'; 4096];
    for chunk in 0..128 {
        let mut p = redis::pipe();
        for i in 0..256 {
            p.set(format!("key:{chunk}:{i}"), &val[..]).ignore();
        }
        let _: () = p.query(&mut c).unwrap();
    }
    let _: () = redis::cmd("DUPLEX.CHECKPOINT").query(&mut c).unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("after")
        .query(&mut c)
        .unwrap();

    let mut served_during = false;
    for round in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        // One write: the backup, a large SCAN, then fast requests behind them.
        let req = format!(
            "DUPLEX.BACKUP r{round}\r\nSCAN 0 COUNT 5000 MATCH nothing*\r\nGET k\r\nPING\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let reader = std::thread::spawn(move || read_until_pong(&mut s));
        while !reader.is_finished() {
            if state(&mut c) == "backing-up" {
                // This client was answered while the other's backup ran.
                served_during = true;
            }
        }
        let got = String::from_utf8(reader.join().unwrap()).unwrap();
        let backup_at = got.find("dir=").expect(&got);
        let scan_at = got.find("*2\r\n").expect(&got);
        let get_at = got.find("$5\r\nafter\r\n").expect(&got);
        assert!(backup_at < scan_at && scan_at < get_at, "{got}");
        assert!(got.ends_with("+PONG\r\n"), "{got}");
        if served_during {
            break;
        }
    }
    assert!(
        served_during,
        "no other client was answered during a backup"
    );
    assert_eq!(state(&mut c), "running");
}
