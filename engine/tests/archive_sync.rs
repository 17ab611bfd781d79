//! A synchronous archive (`archive_lag_ms = 0`) that fails: the write is refused to the
//! caller (`ArchiveFailed`), but it is durable in the local log, so the database must hold
//! it too, before and after a checkpoint and a reopen. Otherwise a checkpoint past its LSN
//! would drop a record the log still has, and the outcome would depend on timing.

use std::path::Path;
use std::sync::Arc;

use duplex_engine::{Config, Database};
use duplex_wal::sim::{Exhaustion, SimOp, SimStorage};
use duplex_wal::Storage;

fn cfg(archive: &Path) -> Config {
    Config {
        segment_size: 64 << 10,
        archive_dir: Some(archive.to_path_buf()),
        archive_lag_ms: 0,
        ..Config::default()
    }
}

#[test]
fn a_write_whose_synchronous_archive_copy_fails_is_kept_as_the_log_keeps_it() {
    let sim = Arc::new(SimStorage::new());
    let storage: Arc<dyn Storage> = sim.clone();
    let (data, archive) = (Path::new("/db"), Path::new("/archive"));
    let db = Database::open_with(storage.clone(), data, cfg(archive)).expect("open");
    db.put(b"before", b"1").expect("archived put");

    sim.fail_op_under(archive, SimOp::Write, Exhaustion::NoSpace, 0);
    let err = db
        .put(b"during", b"2")
        .expect_err("the archive copy fails, so the write is not acknowledged");
    assert!(
        err.to_string().contains("synchronous archive"),
        "the error says what failed: {err}"
    );
    assert!(!err.is_fatal(), "the local log is not poisoned: {err}");
    assert!(!err.outcome_unknown(), "the local log has it: {err}");
    assert_eq!(
        db.get(b"during").expect("get"),
        Some(b"2".to_vec()),
        "the database holds what its log holds"
    );

    sim.give_back();
    db.put(b"after", b"3").expect("the archive works again");
    db.checkpoint()
        .expect("checkpoint past the refused write's LSN");
    db.close().expect("close");

    let db = Database::open_with(storage, data, cfg(archive)).expect("reopen");
    for (k, v) in [
        (&b"before"[..], &b"1"[..]),
        (b"during", b"2"),
        (b"after", b"3"),
    ] {
        assert_eq!(
            db.get(k).expect("get"),
            Some(v.to_vec()),
            "{k:?} after a checkpoint and a reopen"
        );
    }
}
