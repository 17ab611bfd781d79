//! The operator's commands: DUPLEX.STATE (allowed before AUTH: clients read it to choose a
//! server), DUPLEX.BACKUP, DUPLEX.CHECKPOINT, DUPLEX.FENCE and DUPLEX.UNFENCE, and the
//! replication's views: DUPLEX.DIGEST (the stamped digest of all keys or a key range, to
//! compare servers from any client) and DUPLEX.CONFLICTS (the conflict journal).

use std::ops::Bound;

use duplex_engine::Conflict;
use duplex_proto::{array_len, bulk, error, integer, null_bulk, parse_i64, simple};

use super::{bulk_str, engine_err, ErrLine};
use crate::shared::{BackupBase, Shared};
use crate::state::OpState;

/// DUPLEX.STATE: state, epoch, node id, last LSN, the archive's health (`ok`,
/// `failing` or `off`, see [`crate::health::archive_state`]) and the store scrub's verdict
/// (`ok`, or `damage` once the background scrub found a damaged block: INFO names it).
/// New fields go at the end: clients skip the fields they do not know.
pub fn state(sh: &Shared, out: &mut Vec<u8>) {
    let s = sh.state().get();
    let archive = crate::health::archive_state(
        sh.cfg().archive().is_some(),
        &sh.db().wal().archive_status(),
    );
    let scrub = if sh.db().scrub_status().damage.is_some() {
        "damage"
    } else {
        "ok"
    };
    array_len(out, 12);
    bulk_str(out, "state");
    bulk_str(out, s.state.name());
    bulk_str(out, "epoch");
    integer(out, s.epoch as i64);
    bulk_str(out, "node_id");
    integer(out, s.node_id as i64);
    bulk_str(out, "last_lsn");
    integer(out, sh.db().wal().last_lsn() as i64);
    bulk_str(out, "archive");
    bulk_str(out, archive);
    bulk_str(out, "scrub");
    bulk_str(out, scrub);
}

/// `DUPLEX.BACKUP [name] [INCREMENTAL | BASE base]`: takes a backup now (the caller waits
/// for it). INCREMENTAL builds on the newest complete backup of this server's lineage in
/// `backup_dir`, BASE on the named one; either copies only the store bytes written since.
pub fn backup(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    let (name, base) = match backup_args(&args[1..]) {
        Ok(a) => a,
        Err(e) => return error(out, &e),
    };
    match sh.backup(name.as_deref(), base) {
        Ok(r) => bulk_str(
            out,
            &format!(
                "dir={} checkpoint_lsn={} end_lsn={} bytes_copied={} base_len={} seconds={:.3}",
                r.dir.display(),
                r.manifest.checkpoint_lsn,
                r.manifest.end_lsn,
                r.bytes_copied,
                r.manifest.base_len,
                r.seconds
            ),
        ),
        Err(e) => ErrLine::err(format!("backup failed: {e}")).send(out),
    }
}

/// Parses DUPLEX.BACKUP's arguments: an optional name, then INCREMENTAL or BASE <name>.
fn backup_args(args: &[&[u8]]) -> Result<(Option<String>, BackupBase), String> {
    let mut name = None;
    let mut base = BackupBase::None;
    let mut it = args.iter().map(|a| String::from_utf8_lossy(a).into_owned());
    while let Some(a) = it.next() {
        if a.eq_ignore_ascii_case("INCREMENTAL") && base == BackupBase::None {
            base = BackupBase::Newest;
        } else if a.eq_ignore_ascii_case("BASE") && base == BackupBase::None {
            match it.next() {
                Some(b) => base = BackupBase::Named(b),
                None => return Err("ERR syntax error: BASE needs the name of a backup".into()),
            }
        } else if name.is_none() && base == BackupBase::None {
            name = Some(a);
        } else {
            return Err(
                "ERR syntax error: DUPLEX.BACKUP [name] [INCREMENTAL | BASE base-name]".into(),
            );
        }
    }
    Ok((name, base))
}

/// DUPLEX.CHECKPOINT: a checkpoint now.
pub fn checkpoint(sh: &Shared, out: &mut Vec<u8>) {
    match sh.db().checkpoint() {
        Ok(()) => {
            tracing::info!(
                event = "checkpoint",
                lsn = sh.db().stats().checkpoint_lsn,
                "checkpoint on request"
            );
            simple(out, "OK");
        }
        Err(e) => {
            sh.note_write_error(&e);
            engine_err(out, &e);
        }
    }
}

/// DUPLEX.FENCE: refuse writes from now on and raise the epoch (recorded in `STATE`, then
/// logged in the WAL so a restore starts above it); answers the new epoch. A
/// stopping server may be fenced too (it then stays fenced through the stop and the next
/// start).
pub fn fence(sh: &Shared, out: &mut Vec<u8>) {
    let from = [
        OpState::Running,
        OpState::BackingUp,
        OpState::Fenced,
        OpState::Stopping,
    ];
    match sh.state().move_to(&from, OpState::Fenced, true) {
        Ok(Some(r)) => {
            crate::state::log_epoch(sh.db(), r.epoch);
            integer(out, r.epoch as i64)
        }
        Ok(None) => error(
            out,
            &format!(
                "ERR cannot fence a server that is {}",
                sh.state().get().state.name()
            ),
        ),
        Err(e) => error(out, &format!("ERR fenced in memory but not persisted: {e}")),
    }
}

/// DUPLEX.UNFENCE: serve writes again. Lifts `fenced`, and `failed` kept from an earlier
/// run (after the operator has checked the disk); a failure met by this process needs a
/// restart first.
pub fn unfence(sh: &Shared, out: &mut Vec<u8>) {
    let cur = sh.state().get().state;
    if cur == OpState::Failed && sh.failed_here() {
        return error(
            out,
            "ERR this server failed while running (a write, fsync or checkpoint error; the log says which): restart it once the disk is healthy, then DUPLEX.UNFENCE",
        );
    }
    let to = if sh.stopping() {
        OpState::Stopping
    } else {
        OpState::Running
    };
    match sh
        .state()
        .move_to(&[OpState::Fenced, OpState::Failed], to, false)
    {
        Ok(Some(_)) => {
            tracing::warn!(
                event = "unfenced",
                from = cur.name(),
                "lifted by DUPLEX.UNFENCE; serving writes"
            );
            simple(out, "OK");
        }
        Ok(None) => error(
            out,
            &format!(
                "ERR the server is {}, not fenced",
                sh.state().get().state.name()
            ),
        ),
        Err(e) => error(
            out,
            &format!("ERR unfenced in memory but not persisted: {e}"),
        ),
    }
}

/// `DUPLEX.DIGEST [start end]`: the stamped digest (every key's stamp and value, deletes
/// included; a version no read can see counted as the tombstone the reclaim makes of it:
/// [`crate::digest`]) of the whole database, or of the keys in `[start, end)` (start
/// included, end excluded), as the bulk string `<32 hex digits of the sum>/<count>`. Two
/// servers holding the same data answer the same string, whatever each has reclaimed;
/// digests of disjoint ranges add up (mod 2^128).
pub fn digest(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    let (start, end) = match args {
        [_] => (Bound::Unbounded, Bound::Unbounded),
        [_, s, e] => (Bound::Included(*s), Bound::Excluded(*e)),
        _ => return super::arity_error(args[0]).send(out),
    };
    match crate::digest::digest(sh, start, end) {
        Ok(d) => bulk_str(out, &d.to_string()),
        Err(e) => super::ErrLine::err(e.to_string()).send(out),
    }
}

/// How many conflict entries DUPLEX.CONFLICTS returns without a count.
pub const CONFLICTS_DEFAULT: usize = 100;

/// `DUPLEX.CONFLICTS [count]`: `[recorded, dropped, [entry...]]`, the conflict journal's
/// counters since start and its newest `count` entries (default [`CONFLICTS_DEFAULT`]),
/// newest first. Each entry is the flat array `key, winner_ts, winner_origin, loser_ts,
/// loser_origin, loser_deleted (0/1), loser_value (nil when a delete or longer than the
/// journal keeps), loser_len, loser_digest (16 hex digits of the value's xxh3-64),
/// recorded_ms`. New fields go at the end.
pub fn conflicts(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    let n = match args.get(1) {
        None => CONFLICTS_DEFAULT,
        Some(a) => match parse_i64(a).and_then(|n| usize::try_from(n).ok()) {
            Some(n) => n,
            None => {
                return ErrLine::err("count must be a non-negative integer").send(out);
            }
        },
    };
    let (entries, recorded, dropped) = sh.db().conflicts(n);
    array_len(out, 3);
    integer(out, i64::try_from(recorded).unwrap_or(i64::MAX));
    integer(out, i64::try_from(dropped).unwrap_or(i64::MAX));
    array_len(out, entries.len());
    for c in &entries {
        conflict_entry(c, out);
    }
}

/// One DUPLEX.CONFLICTS entry.
fn conflict_entry(c: &Conflict, out: &mut Vec<u8>) {
    let int = |out: &mut Vec<u8>, v: u64| integer(out, i64::try_from(v).unwrap_or(i64::MAX));
    array_len(out, 10);
    bulk(out, &c.key);
    int(out, c.winner.ts.0);
    int(out, c.winner.origin);
    int(out, c.loser.ts.0);
    int(out, c.loser.origin);
    integer(out, i64::from(c.loser_deleted));
    match &c.loser_value {
        Some(v) => bulk(out, v),
        None => null_bulk(out),
    }
    int(out, c.loser_len);
    bulk_str(out, &format!("{:016x}", c.loser_digest));
    int(out, c.recorded_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_engine::{Stamp, Timestamp};
    use duplex_proto::{parse_reply, Limits, Reply};

    fn stamp(ts: u64, origin: u64) -> Stamp {
        Stamp {
            ts: Timestamp(ts),
            origin,
        }
    }

    fn encoded(c: &Conflict) -> Reply {
        let mut out = Vec::new();
        conflict_entry(c, &mut out);
        let (r, used) = parse_reply(&out, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, out.len());
        r
    }

    #[test]
    fn a_conflict_entry_is_a_flat_array_of_ten_fields() {
        let c = Conflict::new(b"k", stamp(900, 2), stamp(800, 1), Some(b"lost"), 1234);
        let Reply::Array(f) = encoded(&c) else {
            panic!("not an array")
        };
        assert_eq!(
            f,
            vec![
                Reply::Bulk(b"k".to_vec()),
                Reply::Integer(900),
                Reply::Integer(2),
                Reply::Integer(800),
                Reply::Integer(1),
                Reply::Integer(0),
                Reply::Bulk(b"lost".to_vec()),
                Reply::Integer(4),
                Reply::Bulk(format!("{:016x}", c.loser_digest).into_bytes()),
                Reply::Integer(1234),
            ]
        );
    }

    #[test]
    fn a_deleted_or_long_loser_has_no_value() {
        let del = Conflict::new(b"k", stamp(2, 2), stamp(1, 1), None, 0);
        let Reply::Array(f) = encoded(&del) else {
            panic!("not an array")
        };
        assert_eq!(f[5], Reply::Integer(1));
        assert_eq!(f[6], Reply::Null);
        assert_eq!(f[7], Reply::Integer(0));
        // One byte past what the journal keeps whole (1 KiB).
        let big = vec![7u8; 1025];
        let long = Conflict::new(b"k", stamp(2, 2), stamp(1, 1), Some(&big), 0);
        let Reply::Array(f) = encoded(&long) else {
            panic!("not an array")
        };
        assert_eq!(f[5], Reply::Integer(0));
        assert_eq!(f[6], Reply::Null);
        assert_eq!(f[7], Reply::Integer(big.len() as i64));
        assert_ne!(f[8], Reply::Bulk(b"0000000000000000".to_vec()));
    }
}

#[cfg(test)]
mod backup_arg_tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Option<String>, BackupBase), String> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        backup_args(&a)
    }

    #[test]
    fn backup_arguments_name_then_incremental_or_base() {
        assert_eq!(parse(&[]), Ok((None, BackupBase::None)));
        assert_eq!(parse(&["b1"]), Ok((Some("b1".into()), BackupBase::None)));
        assert_eq!(parse(&["incremental"]), Ok((None, BackupBase::Newest)));
        assert_eq!(
            parse(&["b2", "INCREMENTAL"]),
            Ok((Some("b2".into()), BackupBase::Newest))
        );
        assert_eq!(
            parse(&["b3", "BASE", "b1"]),
            Ok((Some("b3".into()), BackupBase::Named("b1".into())))
        );
        assert_eq!(
            parse(&["BASE", "b1"]),
            Ok((None, BackupBase::Named("b1".into())))
        );
        for bad in [
            &["BASE"][..],
            &["b1", "b2"],
            &["INCREMENTAL", "b1"],
            &["b1", "INCREMENTAL", "BASE", "b0"],
        ] {
            let e = parse(bad).expect_err("refused");
            assert!(e.starts_with("ERR syntax error"), "{bad:?}: {e}");
        }
    }
}
