//! Hybrid logical clock and the last-writer-wins rule.
//!
//! A timestamp packs wall-clock milliseconds (high 48 bits) and a logical counter (low 16
//! bits) into a `u64`, so timestamps compare as integers. The clock never goes backwards:
//! not when the wall clock steps back, and not across restarts (the engine feeds it the
//! largest timestamp it recovers). Replication will feed it remote timestamps with
//! [`Hlc::observe`]. Its wall time comes from the [`Clock`] it is given (the database's
//! `Config::clock`), so a simulation can run it on simulated time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use duplex_wal::{Clock, SystemClock};

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;
/// Timestamps at or above this are refused when decoded (wall clock past the year 6400):
/// they can only come from damaged or forged data, and the clock must stay far from
/// overflowing.
pub const MAX_TIMESTAMP: u64 = 1 << 62;

/// A hybrid-logical-clock timestamp: `(wall_ms << 16) | logical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Wall-clock milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & ((1 << LOGICAL_BITS) - 1)) as u16
    }

    /// Builds a timestamp from its parts.
    pub fn from_parts(wall_ms: u64, logical: u16) -> Self {
        Timestamp((wall_ms << LOGICAL_BITS) | logical as u64)
    }
}

/// The version stamp every stored value carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stamp {
    /// When it was written.
    pub ts: Timestamp,
    /// The node that wrote it.
    pub origin: u64,
}

impl Stamp {
    /// The merge rule: `self` wins over `other` if its `(timestamp, origin)` is greater.
    /// Every replica applying the same set of versions in any order keeps the same winner.
    pub fn wins_over(&self, other: &Stamp) -> bool {
        (self.ts, self.origin) > (other.ts, other.origin)
    }
}

/// A monotonic hybrid logical clock, safe to share between threads.
#[derive(Debug)]
pub struct Hlc {
    last: AtomicU64,
    wall: Arc<dyn Clock>,
}

impl Default for Hlc {
    /// A clock on the system's wall time, from zero.
    fn default() -> Self {
        Hlc::new(Timestamp(0))
    }
}

impl Hlc {
    /// A clock on the system's wall time that will never return a timestamp at or below
    /// `floor`.
    pub fn new(floor: Timestamp) -> Self {
        Hlc::with_clock(floor, Arc::new(SystemClock))
    }

    /// A clock taking its wall time from `wall` that will never return a timestamp at or
    /// below `floor`.
    pub fn with_clock(floor: Timestamp, wall: Arc<dyn Clock>) -> Self {
        Hlc {
            last: AtomicU64::new(floor.0),
            wall,
        }
    }

    /// A new timestamp, greater than every one returned or observed before.
    pub fn now(&self) -> Timestamp {
        self.tick(Timestamp::from_parts(self.wall.now_ms(), 0).0)
    }

    /// Moves the clock past `seen` (a timestamp recovered or received from a peer).
    pub fn observe(&self, seen: Timestamp) {
        self.last
            .fetch_max(seen.0.min(MAX_TIMESTAMP), Ordering::AcqRel);
    }

    /// The largest timestamp handed out or observed.
    pub fn last(&self) -> Timestamp {
        Timestamp(self.last.load(Ordering::Acquire))
    }

    fn tick(&self, wall: u64) -> Timestamp {
        let mut cur = self.last.load(Ordering::Acquire);
        loop {
            // Wall clock ahead: take it. Otherwise (same ms, or the clock stepped back):
            // one more than the last, which carries into the ms field if the counter
            // overflows; that only ever moves time forward.
            let next = if wall > cur {
                wall
            } else {
                cur.saturating_add(1)
            };
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Timestamp(next),
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_wal::{now_ms as wall_ms, ManualClock};

    /// Stamps follow a manual clock while it moves forward, and never go backwards when it
    /// steps back: the logical counter carries on from the last stamp until the wall time
    /// passes it again.
    #[test]
    fn stamps_follow_a_manual_clock_and_never_go_back() {
        let wall = Arc::new(ManualClock::new(1_000_000));
        let c = Hlc::with_clock(Timestamp(0), wall.clone());
        assert_eq!(c.now(), Timestamp::from_parts(1_000_000, 0));
        assert_eq!(c.now(), Timestamp::from_parts(1_000_000, 1));
        wall.advance(5);
        assert_eq!(c.now(), Timestamp::from_parts(1_000_005, 0));
        wall.set(999_000);
        let stepped_back = c.now();
        assert_eq!(stepped_back, Timestamp::from_parts(1_000_005, 1));
        assert_eq!(c.now(), Timestamp::from_parts(1_000_005, 2));
        wall.set(1_000_006);
        assert_eq!(c.now(), Timestamp::from_parts(1_000_006, 0));
    }

    #[test]
    fn monotonic_even_when_the_wall_clock_steps_back() {
        let future = Timestamp::from_parts(wall_ms() + 3_600_000, 5);
        let c = Hlc::new(future);
        let a = c.now();
        let b = c.now();
        assert!(a > future && b > a);
        assert_eq!(a.wall_ms(), future.wall_ms());
        assert_eq!(a.logical(), 6);
    }

    #[test]
    fn follows_the_wall_clock_when_it_is_ahead() {
        let c = Hlc::new(Timestamp(0));
        let t = c.now();
        assert!(t.wall_ms() + 1000 >= wall_ms());
        assert_eq!(t.logical(), 0);
        c.observe(Timestamp(t.0 + 100));
        assert_eq!(c.now().0, t.0 + 101);
    }

    #[test]
    fn concurrent_ticks_are_unique() {
        let c = std::sync::Arc::new(Hlc::default());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..10_000).map(|_| c.now().0).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = hs
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn last_writer_wins_on_timestamp_then_origin() {
        let a = Stamp {
            ts: Timestamp(10),
            origin: 1,
        };
        let b = Stamp {
            ts: Timestamp(10),
            origin: 2,
        };
        let c = Stamp {
            ts: Timestamp(11),
            origin: 1,
        };
        assert!(b.wins_over(&a) && !a.wins_over(&b));
        assert!(c.wins_over(&b));
        assert!(!a.wins_over(&a));
    }
}
