//! Key stripes: the locks that make conditional writes and transactions exact under any
//! concurrency.
//!
//! Keys hash (FNV-1a, fixed across threads and runs) to [`STRIPES`] reader-writer locks.
//! Plain SET and MSET take their stripes shared (they never read, so any number run
//! together and share a group commit); SET NX/XX, DEL and EXEC take them exclusive, so no
//! other write to those keys lands between their check and their write. Invariant: a
//! holder locks all its stripes at once, in ascending order, so two holders never wait on
//! each other in a circle.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::limits::STRIPES;

/// The stripe locks.
#[derive(Debug)]
pub struct Stripes {
    locks: Box<[RwLock<()>]>,
}

/// One held stripe (released on drop).
#[derive(Debug)]
enum Held<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Excl(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

/// Stripes held by one writer; dropping it releases them.
#[derive(Debug)]
#[must_use = "the stripes are released as soon as the guard is dropped"]
pub struct StripeGuard<'a> {
    _held: Vec<Held<'a>>,
}

impl Default for Stripes {
    fn default() -> Self {
        Stripes {
            locks: (0..STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }
}

impl Stripes {
    /// The stripe of `key`.
    pub fn of(key: &[u8]) -> usize {
        let mut x: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x0100_0000_01b3);
        }
        (x % STRIPES as u64) as usize
    }

    /// Locks the stripes of `keys`, each `(key, exclusive)`, in ascending order; a stripe
    /// wanted both ways is taken exclusive.
    pub fn lock<'k>(&self, keys: impl Iterator<Item = (&'k [u8], bool)>) -> StripeGuard<'_> {
        let mut want: Vec<(usize, bool)> = keys.map(|(k, x)| (Stripes::of(k), x)).collect();
        want.sort_unstable();
        // After sorting, (i, true) follows (i, false): keep the last of each stripe.
        let mut merged: Vec<(usize, bool)> = Vec::with_capacity(want.len());
        for (s, x) in want {
            match merged.last_mut() {
                Some(last) if last.0 == s => last.1 |= x,
                _ => merged.push((s, x)),
            }
        }
        let held = merged
            .into_iter()
            .map(|(s, x)| {
                if x {
                    Held::Excl(self.locks[s].write())
                } else {
                    Held::Shared(self.locks[s].read())
                }
            })
            .collect();
        StripeGuard { _held: held }
    }

    /// Locks every stripe exclusive, in ascending order (FLUSHDB, FLUSHALL: no write of
    /// any key evaluates across them).
    pub fn lock_all(&self) -> StripeGuard<'_> {
        StripeGuard {
            _held: self.locks.iter().map(|l| Held::Excl(l.write())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_twice_is_one_exclusive_lock() {
        let s = Stripes::default();
        let k: &[u8] = b"k";
        let g = s.lock([(k, false), (k, true)].into_iter());
        assert!(s.locks[Stripes::of(k)].try_read().is_none());
        drop(g);
        assert!(s.locks[Stripes::of(k)].try_write().is_some());
        let g = s.lock([(k, false)].into_iter());
        assert!(s.locks[Stripes::of(k)].try_read().is_some());
        assert!(s.locks[Stripes::of(k)].try_write().is_none());
        drop(g);
    }
}
