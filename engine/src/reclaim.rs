//! Reclaiming versions that can never be read again (an expired value, a value hidden by a
//! flush: the caller, who knows what its values mean, decides) by replacing each with a
//! tombstone carrying the version's OWN stamp, never a fresh one: a fresh stamp could
//! delete a later write from a server whose clock is behind, a reused one loses to every
//! later write under last-writer-wins (an equal stamp names the same batch, so the
//! tombstone replaces exactly the version it reclaims).
//!
//! Nothing is logged: a crash before the next checkpoint replays the original version
//! from the WAL, and it is as unreadable as before (its expiry or its flush is logged
//! with it), so the caller reclaims it again. Each server reclaims on its own: a stamped
//! digest taken while one server has reclaimed a version and another has not differs by
//! it.

use crate::batch::Op;
use crate::db::Database;
use crate::error::Result;
use crate::hlc::Stamp;

impl Database {
    /// Replaces each `(key, stamp)` version with a tombstone of that stamp, in memory (see
    /// the module doc); a key whose current version is newer keeps it. Returns how many
    /// were given.
    pub fn reclaim(&self, versions: Vec<(Vec<u8>, Stamp)>) -> Result<usize> {
        let i = self.inner();
        i.check_poisoned()?;
        let n = versions.len();
        // Held like a writer's, from before the apply to after it: a checkpoint's freeze
        // waits for it.
        let _g = i.gate.read();
        for (key, stamp) in versions {
            let current = self.snapshot().version(&key)?;
            if current.is_none_or(|v| v.stamp != stamp || v.value.is_none()) {
                continue;
            }
            i.apply(stamp, vec![Op::Delete { key }])?;
        }
        Ok(n)
    }
}
