//! Fencing holds: a fenced server stays fenced through SIGTERM and a restart (writes refused
//! while it stops and after), until DUPLEX.UNFENCE; and a FENCE that lands while a backup
//! runs is not undone when the backup ends.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, ServerDaemon};
use duplex_server::state::{load, OpState};
use redis::{Commands, Value};

/// `DUPLEX.STATE`'s state name.
fn state(c: &mut redis::Connection) -> String {
    let st: Vec<Value> = redis::cmd("DUPLEX.STATE").query(c).unwrap();
    redis::from_redis_value(&st[1]).unwrap()
}

#[test]
fn fenced_survives_sigterm_and_restart_until_unfenced() {
    let t = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    let _: () = c.set("k", "before").unwrap();
    let epoch: i64 = redis::cmd("DUPLEX.FENCE").query(&mut c).unwrap();
    assert_eq!(epoch, 2);
    // A second client stays connected across the SIGTERM: while the server drains, its
    // writes are still refused as fenced (not accepted as `stopping` would).
    let mut other = d.conn();
    d.signal(duplex_testkit::daemon::SIGTERM);
    if let Err(e) = other.set::<_, _, ()>("k", "while-stopping") {
        assert!(
            e.code() == Some("FENCED") || e.is_io_error() || e.is_connection_dropped(),
            "{e}"
        );
    }
    let st = d.wait(20);
    assert_eq!(st.code(), Some(0), "{}", d.log());
    let rec = load(&t.path().join("data")).unwrap().unwrap();
    assert_eq!((rec.state, rec.epoch), (OpState::Fenced, 2));

    d.restart();
    let mut c = d.conn();
    assert_eq!(state(&mut c), "fenced");
    let e = c.set::<_, _, ()>("k", "after").unwrap_err();
    assert_eq!(e.code(), Some("FENCED"), "{e}");
    assert_eq!(c.get::<_, String>("k").unwrap(), "before");
    assert!(d.log().contains("stays fenced"), "{}", d.log());
    let rec = load(&t.path().join("data")).unwrap().unwrap();
    assert_eq!((rec.state, rec.epoch), (OpState::Fenced, 2));

    let _: () = redis::cmd("DUPLEX.UNFENCE").query(&mut c).unwrap();
    assert_eq!(state(&mut c), "running");
    let _: () = c.set("k", "after").unwrap();
    d.stop();
    assert_eq!(
        load(&t.path().join("data")).unwrap().unwrap().state,
        OpState::Stopped
    );
}

#[test]
fn failed_kept_from_the_previous_run_is_lifted_by_unfence() {
    let t = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(t.path(), &[]);
    d.stop();
    // The previous run failed (as a disk error would have recorded it).
    let data = t.path().join("data");
    let mut rec = load(&data).unwrap().unwrap();
    rec.state = OpState::Failed;
    duplex_server::state::store(&data, &rec).unwrap();
    d.restart();
    let mut c = d.conn();
    assert_eq!(state(&mut c), "failed");
    let e = c.set::<_, _, ()>("k", "v").unwrap_err();
    assert_eq!(e.code(), Some("FAILED"), "{e}");
    assert!(d.log().contains("DUPLEX.UNFENCE"), "{}", d.log());
    let _: () = redis::cmd("DUPLEX.UNFENCE").query(&mut c).unwrap();
    let _: () = c.set("k", "v").unwrap();
}

/// Fills the database with about `mib` MiB and checkpoints, so a backup copies that much.
fn fill(c: &mut redis::Connection, mib: usize) {
    let val = vec![b'v'; 4096];
    for chunk in 0..mib {
        let mut p = redis::pipe();
        for i in 0..256 {
            p.set(format!("key:{chunk}:{i}"), &val[..]).ignore();
        }
        let _: () = p.query(c).unwrap();
    }
    let _: () = redis::cmd("DUPLEX.CHECKPOINT").query(c).unwrap();
}

#[test]
fn a_fence_during_a_backup_holds_after_it() {
    let t = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    fill(&mut c, 128);
    let mut caught = false;
    for round in 0..5 {
        let client = d.client();
        let backup = std::thread::spawn(move || {
            let mut b = client.get_connection().unwrap();
            redis::cmd("DUPLEX.BACKUP")
                .arg(format!("race-{round}"))
                .query::<String>(&mut b)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !backup.is_finished() && Instant::now() < deadline {
            if state(&mut c) == "backing-up" {
                let epoch: i64 = redis::cmd("DUPLEX.FENCE").query(&mut c).unwrap();
                assert_eq!(epoch, 2);
                caught = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = backup.join().unwrap();
        assert!(r.is_ok(), "{r:?}");
        if caught {
            break;
        }
    }
    assert!(caught, "no backup was caught running");
    assert_eq!(state(&mut c), "fenced");
    let rec = load(&t.path().join("data")).unwrap().unwrap();
    assert_eq!((rec.state, rec.epoch), (OpState::Fenced, 2));
    let e = c.set::<_, _, ()>("k", "v").unwrap_err();
    assert_eq!(e.code(), Some("FENCED"), "{e}");
}
