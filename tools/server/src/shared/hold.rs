//! The write hold a rebuilt peer asks for (issue 12, HOLD/HELD/RELEASE): new client writes
//! wait (they are delayed, never refused) while a hold is on, for at most its time; writes
//! already under way finish, and [`WriteHold::hold`] returns once they have, so the WAL's
//! end is then a cut-off no client write crosses until the hold ends. Not persisted, not
//! the operator's FENCE; reads are not held (but under `--io events` a held write blocks
//! its event loop, and with it that loop's other connections, for the hold's time).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// What the last hold did, for the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HoldReport {
    /// How long writes were held, ms.
    pub pause_ms: f64,
    /// Writes that waited.
    pub writes_held: u64,
    /// Median and longest wait of those writes, ms.
    pub p50_ms: f64,
    /// Longest wait, ms.
    pub max_ms: f64,
}

#[derive(Debug, Default)]
struct Inner {
    /// When the hold ends by itself; `None` without a hold.
    until: Option<Instant>,
    /// When it began.
    since: Option<Instant>,
    /// When each held write began to wait (at most [`MAX_SAMPLES`]); each waits until the
    /// hold ends.
    waiting_since: Vec<Instant>,
    held: u64,
}

/// Most waits kept for the percentiles of one hold.
const MAX_SAMPLES: usize = 100_000;

/// The gate every client write passes ([`WriteHold::enter`]).
#[derive(Debug, Default)]
pub struct WriteHold {
    inner: Mutex<Inner>,
    released: Condvar,
    inflight: AtomicUsize,
    /// Whether a hold may be on (the writes' fast path reads only this).
    active: AtomicBool,
}

/// A write under way: the hold waits for it to finish (drop).
#[derive(Debug)]
pub struct Entered<'a>(&'a WriteHold);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WriteHold {
    /// Waits while a hold is on (at most until it expires), then counts a write under way
    /// until the guard drops. Without a hold: two atomic operations, no lock.
    pub fn enter(&self) -> Entered<'_> {
        let mut waited = false;
        loop {
            // Counted before the check, and the hold sets `active` before it reads the
            // count: either this write sees the hold, or the hold waits for this write.
            self.inflight.fetch_add(1, Ordering::SeqCst);
            if !self.active.load(Ordering::SeqCst) {
                return Entered(self);
            }
            self.inflight.fetch_sub(1, Ordering::SeqCst);
            let mut g = self.inner.lock();
            match g.until {
                Some(until) if Instant::now() < until => {
                    if !waited {
                        waited = true;
                        g.held += 1;
                        if g.waiting_since.len() < MAX_SAMPLES {
                            g.waiting_since.push(Instant::now());
                        }
                    }
                    self.released.wait_until(&mut g, until);
                }
                // Expired: the hold ends by itself (its report stays for `release`).
                _ => self.active.store(false, Ordering::SeqCst),
            }
        }
    }

    /// Starts a hold of at most `max` and waits (within it) for the writes under way to
    /// finish. False if they did not finish in time (the hold is then released).
    pub fn hold(&self, max: Duration) -> bool {
        let now = Instant::now();
        {
            let mut g = self.inner.lock();
            *g = Inner {
                until: Some(now + max),
                since: Some(now),
                ..Inner::default()
            };
            self.active.store(true, Ordering::SeqCst);
        }
        while self.inflight.load(Ordering::SeqCst) > 0 {
            if now.elapsed() >= max {
                self.release();
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// Ends the hold (if any) and reports it.
    pub fn release(&self) -> HoldReport {
        let mut g = self.inner.lock();
        let end = g.until.map_or(Instant::now(), |u| u.min(Instant::now()));
        let ms = |since: Instant| end.saturating_duration_since(since).as_secs_f64() * 1e3;
        let pause = g.since.map_or(0.0, ms);
        g.until = None;
        g.since = None;
        self.active.store(false, Ordering::SeqCst);
        let mut waits: Vec<f64> = g.waiting_since.drain(..).map(ms).collect();
        let held = std::mem::take(&mut g.held);
        drop(g);
        self.released.notify_all();
        waits.sort_by(f64::total_cmp);
        HoldReport {
            pause_ms: pause,
            writes_held: held,
            p50_ms: waits.get(waits.len() / 2).copied().unwrap_or(0.0),
            max_ms: waits.last().copied().unwrap_or(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_hold_delays_new_writes_waits_for_those_under_way_and_expires() {
        let h = Arc::new(WriteHold::default());
        let under_way = h.enter();
        let h2 = h.clone();
        let holder = std::thread::spawn(move || h2.hold(Duration::from_millis(500)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!holder.is_finished(), "waits for the write under way");
        drop(under_way);
        assert!(holder.join().unwrap());
        let h3 = h.clone();
        let ready = Arc::new(std::sync::Barrier::new(2));
        let r2 = ready.clone();
        let writer = std::thread::spawn(move || {
            r2.wait();
            let t = Instant::now();
            drop(h3.enter());
            t.elapsed()
        });
        // The writer is about to enter; give it time to block on the hold.
        ready.wait();
        std::thread::sleep(Duration::from_millis(100));
        let rep = h.release();
        let waited = writer.join().unwrap();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        assert_eq!(rep.writes_held, 1);
        assert!(rep.pause_ms >= 40.0 && rep.max_ms >= 40.0, "{rep:?}");
        // A hold nobody releases expires by itself.
        assert!(h.hold(Duration::from_millis(30)));
        let t = Instant::now();
        drop(h.enter());
        assert!(t.elapsed() < Duration::from_millis(200));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}
