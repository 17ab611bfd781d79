//! The background reclaim of keys no read can see any more: an expired value, or a version
//! of a key (or of a counter's contribution) stamped before its database's flush. Each is
//! replaced in memory by a tombstone with the version's own stamp
//! ([`duplex_engine::Database::reclaim`]: nothing is logged, a crash brings the version
//! back as unreadable as before, and a later write, stamped after it, always wins). A walk
//! over the whole database in steps of [`RECLAIM_STEP_KEYS`] stored versions, one every
//! [`RECLAIM_EVERY`], started again from the first key once it reaches the end.

use std::ops::Bound;
use std::sync::Arc;

use duplex_engine::Stamp;

use crate::counter::contrib_versions;
use crate::error::Error;
use crate::keyspace::{owner_db, user_key, Entry, ReadError, Reader};
use crate::limits::{RECLAIM_EVERY, RECLAIM_STEP_KEYS};
use crate::shared::Shared;

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// Stored versions examined.
    pub examined: usize,
    /// Versions reclaimed.
    pub reclaimed: usize,
    /// Where the next step starts (after this stored key); `None`: from the first.
    pub next: Option<Vec<u8>>,
}

/// Examines up to `max` stored versions after `after` and reclaims the unreadable ones.
pub fn step(sh: &Shared, after: Option<&[u8]>, max: usize) -> Result<Step, ReadError> {
    let now = sh.clock().now_ms();
    let snap = sh.db().snapshot();
    let mut flushes = Reader::new(snap.clone(), now);
    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut it = snap.scan_versions(lower, Bound::Unbounded)?;
    let mut out = Step::default();
    let mut dead: Vec<(Vec<u8>, Stamp)> = Vec::new();
    while out.examined < max {
        let Some((k, v)) = it.next_version()? else {
            out.next = None;
            return finish(sh, dead, out);
        };
        out.examined += 1;
        out.next = Some(k.clone());
        let Some(bytes) = v.value else { continue };
        let Some(db) = owner_db(&k) else { continue };
        let flushed = flushes
            .flushed_at(db)?
            .is_some_and(|f| f.wins_over(&v.stamp));
        let expired = user_key(&k).is_some() && Entry::decode(&bytes).is_ok_and(|e| e.expired(now));
        if expired {
            // A counter's contributions expire with it: reclaimed first, so that no read
            // finds them counting on a deleted base.
            if let Some((kdb, key)) = user_key(&k) {
                dead.extend(contrib_versions(&snap, kdb, key)?);
            }
        }
        if flushed || expired {
            dead.push((k, v.stamp));
        }
    }
    finish(sh, dead, out)
}

fn finish(sh: &Shared, dead: Vec<(Vec<u8>, Stamp)>, mut out: Step) -> Result<Step, ReadError> {
    if !dead.is_empty() {
        out.reclaimed = sh.db().reclaim(dead)?;
    }
    Ok(out)
}

/// Starts the reclaim thread; it stops with the daemon. It runs only while the server
/// takes writes (not while fenced, recovering or rebuilding).
pub fn spawn(sh: &Arc<Shared>) -> Result<(), Error> {
    let s = sh.clone();
    std::thread::Builder::new()
        .name("reclaim".into())
        .spawn(move || {
            let mut next: Option<Vec<u8>> = None;
            while !s.stopping() {
                std::thread::sleep(RECLAIM_EVERY);
                if !s.state().get().state.accepts_writes() {
                    continue;
                }
                match step(&s, next.as_deref(), RECLAIM_STEP_KEYS) {
                    Ok(st) => next = st.next,
                    Err(e) => {
                        tracing::warn!(error = %e, "reclaim step failed; retrying from the start");
                        next = None;
                    }
                }
            }
        })
        .map_err(Error::Net)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use duplex_wal::ManualClock;

    use super::*;
    use crate::cmd::write_groups;
    use crate::config::ServerConfig;
    use crate::keyspace::stored_key;

    fn shared(dir: &std::path::Path, clock: Arc<ManualClock>) -> Shared {
        crate::shared::test_shared(dir, clock, ServerConfig::default())
    }

    fn run(sh: &Shared, db: u8, req: &[&[u8]]) -> Vec<u8> {
        let reqs = vec![req.to_vec()];
        crate::cmd::write_groups_in(sh, &[(db, &reqs)]).concat()
    }

    #[test]
    fn expired_and_flushed_versions_become_tombstones_with_their_own_stamps() {
        let d = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let sh = shared(d.path(), clock.clone());
        assert_eq!(
            run(&sh, 0, &[b"SET", b"short", b"v", b"PX", b"100"]),
            b"+OK\r\n"
        );
        assert_eq!(
            run(&sh, 0, &[b"SET", b"long", b"v", b"EX", b"100"]),
            b"+OK\r\n"
        );
        assert_eq!(run(&sh, 3, &[b"SET", b"flushed", b"v"]), b"+OK\r\n");
        let reqs = vec![vec![&b"SET"[..], b"plain", b"v"]];
        assert_eq!(write_groups(&sh, &[&reqs]).concat(), b"+OK\r\n");
        let mut out = Vec::new();
        crate::cmd::keys::flush_cmd(&sh, 3, &[b"FLUSHDB"], &mut out);
        assert_eq!(out, b"+OK\r\n");
        let short = stored_key(0, b"short");
        let flushed = stored_key(3, b"flushed");
        let stamps: Vec<Stamp> = [&short, &flushed]
            .iter()
            .map(|k| sh.db().version(k).unwrap().unwrap().stamp)
            .collect();
        // Nothing has expired yet: only the flushed key goes.
        let st = step(&sh, None, 100).unwrap();
        assert_eq!((st.reclaimed, st.next), (1, None));
        clock.advance(101);
        // In two steps of 3 versions: the walk goes on where it stopped.
        let first = step(&sh, None, 3).unwrap();
        assert!(first.next.is_some());
        let second = step(&sh, first.next.as_deref(), 3).unwrap();
        assert_eq!(second.next, None);
        assert_eq!(first.reclaimed + second.reclaimed, 1);
        for (k, s) in [(&short, stamps[0]), (&flushed, stamps[1])] {
            let v = sh.db().version(k).unwrap().unwrap();
            assert_eq!((v.stamp, v.value), (s, None), "{k:?}");
        }
        assert!(sh.db().get(&stored_key(0, b"long")).unwrap().is_some());
        assert!(sh.db().get(b"plain").unwrap().is_some());
    }
}
