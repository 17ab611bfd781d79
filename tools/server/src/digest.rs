//! The stamped digest duplexd answers (`DUPLEX.DIGEST`, compared by `duplexctl compare` and
//! the tests): the engine's stamped digest (docs/FORMAT.md, "Stamped digest") of the stored
//! versions as the background reclaim ([`crate::reclaim`]) leaves them, whether or not it
//! has got to them yet. A version no read can see, judged at the server's time now, is
//! hashed as the tombstone with its own stamp that the reclaim turns it into:
//! - a key's value that has expired, or that is stamped below its database's flush;
//! - a counter's contribution that does not count on its key's base any more (below the
//!   flush, its key expired, or reset by a later write of the key: such a one never counts
//!   again).
//!
//! So two servers holding the same data answer the same digest whichever of them has
//! reclaimed what (each reclaims in its own time, in memory); they may differ only while
//! a key expires between their two digests (by the servers' clocks), as their reads do.

use std::ops::Bound;

use duplex_engine::{version_hash, Digest, Version};

use crate::counter::{contrib_user_key, NO_BASE};
use crate::keyspace::{user_key, Entry, KeyState, ReadError, Reader};
use crate::shared::Shared;

/// The digest of the stored keys in `[start, end)` (see the module docs).
pub fn digest(sh: &Shared, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Digest, ReadError> {
    let snap = sh.db().snapshot();
    let mut r = Reader::new(snap.clone(), sh.clock().now_ms());
    let mut it = snap.scan_versions(start, end)?;
    let mut d = Digest::default();
    let mut owner: Option<(u8, Vec<u8>, KeyState)> = None;
    while let Some((k, v)) = it.next_version()? {
        let v = if v.value.is_some() && !visible(&mut r, &mut owner, &k, &v)? {
            Version {
                stamp: v.stamp,
                value: None,
            }
        } else {
            v
        };
        d.sum = d.sum.wrapping_add(version_hash(&k, &v));
        d.count += 1;
    }
    Ok(d)
}

/// Whether a read can see the stored version `v` of `k` (a live one).
fn visible(
    r: &mut Reader,
    owner: &mut Option<(u8, Vec<u8>, KeyState)>,
    k: &[u8],
    v: &Version,
) -> Result<bool, ReadError> {
    let Some(bytes) = v.value.as_deref() else {
        return Ok(false);
    };
    if let Some((db, _)) = user_key(k) {
        if r.flushed_at(db)?.is_some_and(|f| f.wins_over(&v.stamp)) {
            return Ok(false);
        }
        let now = r.now_ms();
        return Ok(!Entry::decode(bytes).is_ok_and(|e| e.expired(now)));
    }
    let Some((db, key)) = contrib_user_key(k) else {
        // The flush markers and anything else of the server's own.
        return Ok(true);
    };
    // A key's contributions are next to each other: its state is read once for them.
    let cached = owner
        .as_ref()
        .is_some_and(|(d, o, _)| *d == db && o.as_slice() == key);
    if !cached {
        *owner = Some((db, key.to_vec(), r.state(db, key)?));
    }
    let Some((_, _, st)) = owner.as_ref() else {
        return Ok(false);
    };
    let (Some(base), false) = (st.base, st.expired) else {
        return Ok(false);
    };
    let mut o = [0u8; 8];
    o.copy_from_slice(&k[k.len() - 8..]);
    let origin = u64::from_be_bytes(o);
    Ok(st
        .contribs
        .iter()
        .any(|(og, c)| *og == origin && base.counts(c, c.first.unwrap_or(NO_BASE))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use duplex_wal::ManualClock;

    use super::*;
    use crate::config::ServerConfig;

    fn shared(dir: &std::path::Path, clock: Arc<ManualClock>) -> Shared {
        crate::shared::test_shared(dir, clock, ServerConfig::default())
    }

    fn run(sh: &Shared, db: u8, req: &[&[u8]]) {
        let reqs = vec![req.to_vec()];
        let out = crate::cmd::write_groups_in(sh, &[(db, &reqs)]).concat();
        assert!(
            !out.starts_with(b"-"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }

    fn all(sh: &Shared) -> Digest {
        digest(sh, Bound::Unbounded, Bound::Unbounded).unwrap()
    }

    #[test]
    fn the_digest_does_not_change_when_the_reclaim_runs() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let sh = shared(d.path(), clock.clone());
        run(&sh, 0, &[b"SET", b"short", b"v", b"PX", b"100"]);
        run(&sh, 0, &[b"SET", b"long", b"v", b"EX", b"100"]);
        run(&sh, 0, &[b"INCR", b"cnt"]);
        run(&sh, 0, &[b"PEXPIRE", b"cnt", b"100"]);
        run(&sh, 0, &[b"INCR", b"cnt"]);
        run(&sh, 0, &[b"INCR", b"kept"]);
        run(&sh, 3, &[b"SET", b"flushed", b"v"]);
        let mut out = Vec::new();
        crate::cmd::keys::flush_cmd(&sh, 3, &[b"FLUSHDB"], &mut out);
        assert_eq!(out, b"+OK\r\n");
        let engine = |sh: &Shared| {
            sh.db()
                .stamped_digest(Bound::Unbounded, Bound::Unbounded)
                .unwrap()
        };
        let before = all(&sh);
        let st = crate::reclaim::step(&sh, None, 1000).unwrap();
        assert_eq!(st.reclaimed, 1, "the flushed key");
        assert_eq!(all(&sh), before);
        clock.advance(101);
        let expired = all(&sh);
        assert_eq!(expired.count, before.count);
        let engine_before = engine(&sh);
        assert_ne!(
            engine_before, expired,
            "the engine's counts the expired values"
        );
        let st = crate::reclaim::step(&sh, None, 1000).unwrap();
        assert!(st.reclaimed >= 3, "short, cnt and its contribution: {st:?}");
        assert_eq!(all(&sh), expired, "reclaimed or not, the same digest");
        // The engine's own digest changed: the versions are tombstones now.
        assert_eq!(engine(&sh), expired);
    }
}
