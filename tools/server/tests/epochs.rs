//! Epochs live in the WAL as well as in `STATE`: a directory that lost its `STATE` file
//! (as a restored one has none) starts above the highest epoch its log saw, while an old
//! copy of a data directory still reports the older epoch it had, so clients refuse it.

mod common;

use std::path::Path;

use common::{Daemon, ServerDaemon};
use duplex_server::state::load;
use redis::{Commands, Value};

fn epoch(c: &mut redis::Connection) -> i64 {
    let st: Vec<Value> = redis::cmd("DUPLEX.STATE").query(c).unwrap();
    redis::from_redis_value(&st[3]).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    duplex_testkit::copy_tree(from, to).unwrap();
}

#[test]
fn a_lost_state_file_starts_above_the_logged_epoch_and_an_old_copy_stays_older() {
    let t = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_in(&t.path().join("node"), &[]);
    let mut c = d.conn();
    let _: () = c.set("k", "v1").unwrap();
    assert_eq!(epoch(&mut c), 1);
    d.stop();
    // An old copy of the directory, taken at epoch 1.
    copy_dir(&t.path().join("node/data"), &t.path().join("old/data"));

    d.restart();
    let mut c = d.conn();
    for _ in 0..2 {
        let _: i64 = redis::cmd("DUPLEX.FENCE").query(&mut c).unwrap();
        let _: () = redis::cmd("DUPLEX.UNFENCE").query(&mut c).unwrap();
    }
    assert_eq!(epoch(&mut c), 3);
    let _: () = c.set("k", "v2").unwrap();
    d.kill9();

    // The STATE file lost: the WAL knows epoch 3, so it starts at 4.
    std::fs::remove_file(t.path().join("node/data/STATE")).unwrap();
    d.restart();
    let mut c = d.conn();
    assert_eq!(epoch(&mut c), 4, "{}", d.log());
    assert_eq!(c.get::<_, String>("k").unwrap(), "v2");
    assert!(d.log().contains("restored_epoch"), "{}", d.log());
    d.stop();
    assert_eq!(load(&t.path().join("node/data")).unwrap().unwrap().epoch, 4);
    // A plain restart keeps it.
    d.restart();
    assert_eq!(epoch(&mut d.conn()), 4);
    d.stop();

    // The old copy still reports epoch 1, older than any client that saw 3 or 4 accepts.
    let mut old = Daemon::start_in(&t.path().join("old"), &[]);
    let mut c = old.conn();
    assert_eq!(epoch(&mut c), 1);
    assert_eq!(c.get::<_, String>("k").unwrap(), "v1");
    old.stop();
}
