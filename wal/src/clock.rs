//! Wall-clock time behind a trait, so that a test can run the WAL, the engine and the
//! server on simulated time.
//!
//! Everything that reads the wall clock (segment creation times, the engine's hybrid
//! logical clock, schedules) takes it from a [`Clock`] it is given: [`SystemClock`] in
//! production, [`ManualClock`] in tests and simulations, where time moves only when the
//! test says so.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch. May step backwards (as a real clock can); users
    /// that need monotonic time keep their own high-water mark.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// A clock that only moves when told to: for deterministic tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock {
            ms: AtomicU64::new(ms),
        }
    }

    /// Sets the time (backwards too, to simulate a clock step).
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// The clock used when none is given: the system clock.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Milliseconds since the Unix epoch by the system clock (0 if the clock is before 1970).
/// For code that is not given a [`Clock`] (the tools' own timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(5);
        assert_eq!(c.now_ms(), 1_005);
        c.set(10);
        assert_eq!(c.now_ms(), 10);
        let real = SystemClock.now_ms();
        assert!(real > 1_600_000_000_000, "system clock reads {real}");
    }
}
