//! The write hold a rebuilt peer asks for (issue 12, HOLD/HELD/RELEASE): new client writes
//! wait (they are delayed, never refused) while a hold is on, for at most its time; writes
//! already under way finish, and [`WriteHold::hold`] returns once they have, so the WAL's
//! end is then a cut-off no client write crosses until the hold ends. Not persisted, not
//! the operator's FENCE; reads are not held (but under `--io events` a held write blocks
//! its event loop, and with it that loop's other connections, for the hold's time).
//!
//! The gate closes between commits: asked for a hold, it waits (up to [`IDLE_WAIT`], writes
//! flowing meanwhile) for a moment when no write is under way, and the write that ends
//! last closes it as it leaves, in one atomic step with the count of writes under way, so
//! no write slips in. The pause then holds no commit in progress, and does not include
//! one (an fsync of a loaded disk is tens of milliseconds). Only when writes never pause
//! within [`IDLE_WAIT`] (many connections on their own threads) does the gate close at
//! once and wait for the writes under way, as a forced close.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Whether the gate closed by force on writes under way (no moment without one came
    /// within [`IDLE_WAIT`]), and how long it waited for such a moment, ms.
    pub forced: bool,
    /// How long the hold waited for a moment without writes under way, ms.
    pub idle_wait_ms: f64,
}

#[derive(Debug, Default)]
struct Inner {
    /// When the hold ends by itself; `None` without a hold.
    until: Option<Instant>,
    /// When the gate closed.
    since: Option<Instant>,
    /// When each held write began to wait (at most [`MAX_SAMPLES`]); each waits until the
    /// hold ends.
    waiting_since: Vec<Instant>,
    held: u64,
    forced: bool,
    idle_wait_ms: f64,
    /// When the last write to leave closed the gate, if it did.
    closed_at: Option<Instant>,
}

/// Most waits kept for the percentiles of one hold.
const MAX_SAMPLES: usize = 100_000;

/// How long a hold waits for a moment without writes under way before it closes the gate
/// on the writes under way.
pub const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The gate is closed: new writes wait.
const ACTIVE: u64 = 1 << 63;
/// A hold waits to close the gate: the last write under way to finish closes it.
const PENDING: u64 = 1 << 62;
/// The count of writes under way (the low bits).
const COUNT: u64 = PENDING - 1;

/// The gate every client write passes ([`WriteHold::enter`]).
#[derive(Debug, Default)]
pub struct WriteHold {
    inner: Mutex<Inner>,
    released: Condvar,
    /// [`ACTIVE`], [`PENDING`] and the count of writes under way, in one word: a write
    /// counts itself and sees the gate in one step, and the last one out closes it in one.
    state: AtomicU64,
}

/// A write under way: the hold waits for it to finish (drop).
#[derive(Debug)]
pub struct Entered<'a>(&'a WriteHold);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let left = self.0.state.fetch_sub(1, Ordering::SeqCst) - 1;
        if left == PENDING {
            // The last write under way, and a hold waits: close the gate now. A write that
            // counted itself since makes this fail and goes ahead; the next last one tries.
            let closed = self.0.state.compare_exchange(
                PENDING,
                PENDING | ACTIVE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            if closed.is_ok() {
                // The pause counts from here, not from when the hold notices.
                self.0.inner.lock().closed_at = Some(Instant::now());
            }
        }
    }
}

impl WriteHold {
    /// Waits while a hold is on (at most until it expires), then counts a write under way
    /// until the guard drops. Without a hold: one atomic operation, no lock.
    pub fn enter(&self) -> Entered<'_> {
        let mut waited = false;
        loop {
            // Counted and checked in one step: either this write is under way before the
            // gate closes (and the hold waits for it), or it sees the gate closed.
            if self.state.fetch_add(1, Ordering::SeqCst) & ACTIVE == 0 {
                return Entered(self);
            }
            self.state.fetch_sub(1, Ordering::SeqCst);
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
                _ => {
                    self.state.fetch_and(!(ACTIVE | PENDING), Ordering::SeqCst);
                }
            }
        }
    }

    /// Starts a hold of at most `max` (counted from when the gate closes, see the module
    /// doc) and waits for the writes under way to finish. False if they did not finish in
    /// time (the hold is then released).
    pub fn hold(&self, max: Duration) -> bool {
        let asked = Instant::now();
        {
            let mut g = self.inner.lock();
            *g = Inner {
                until: Some(asked + IDLE_WAIT + max),
                ..Inner::default()
            };
        }
        self.state.fetch_or(PENDING, Ordering::SeqCst);
        // The gate closes at the first moment no write is under way (closed here when
        // none is now, else by the last write to leave), or by force after IDLE_WAIT.
        loop {
            match self.state.compare_exchange(
                PENDING,
                PENDING | ACTIVE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(cur) if cur & ACTIVE != 0 => break,
                Err(_) if asked.elapsed() >= IDLE_WAIT => {
                    self.state.fetch_or(ACTIVE, Ordering::SeqCst);
                    self.inner.lock().forced = true;
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        self.state.fetch_and(!PENDING, Ordering::SeqCst);
        let closed = {
            let mut g = self.inner.lock();
            let closed = g.closed_at.take().unwrap_or_else(Instant::now);
            g.since = Some(closed);
            g.until = Some(closed + max);
            g.idle_wait_ms = closed.saturating_duration_since(asked).as_secs_f64() * 1e3;
            closed
        };
        while self.state.load(Ordering::SeqCst) & COUNT > 0 {
            if closed.elapsed() >= max {
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
        self.state.fetch_and(!(ACTIVE | PENDING), Ordering::SeqCst);
        let mut waits: Vec<f64> = g.waiting_since.drain(..).map(ms).collect();
        let held = std::mem::take(&mut g.held);
        let forced = std::mem::take(&mut g.forced);
        let idle_wait_ms = std::mem::take(&mut g.idle_wait_ms);
        drop(g);
        self.released.notify_all();
        waits.sort_by(f64::total_cmp);
        HoldReport {
            pause_ms: pause,
            writes_held: held,
            p50_ms: waits.get(waits.len() / 2).copied().unwrap_or(0.0),
            max_ms: waits.last().copied().unwrap_or(0.0),
            forced,
            idle_wait_ms,
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

    #[test]
    fn the_gate_closes_between_writes_and_by_force_when_they_never_pause() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let h = Arc::new(WriteHold::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // Four writers, each under way for 2 ms at a time with short gaps.
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (h, inside, stop) = (h.clone(), inside.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let g = h.enter();
                        inside.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(g);
                        std::thread::sleep(Duration::from_micros(300));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        assert!(h.hold(Duration::from_millis(200)));
        // The gate is closed and nothing is under way: no writer got in.
        for _ in 0..20 {
            assert_eq!(inside.load(Ordering::SeqCst), 0);
            std::thread::sleep(Duration::from_millis(1));
        }
        let rep = h.release();
        assert!(rep.pause_ms >= 15.0, "{rep:?}");
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        // A write under way longer than IDLE_WAIT: the gate closes by force, new writes
        // wait, and the hold returns once that write is done.
        let long = h.enter();
        let h2 = h.clone();
        let holder = std::thread::spawn(move || h2.hold(Duration::from_millis(500)));
        std::thread::sleep(IDLE_WAIT + Duration::from_millis(30));
        assert!(!holder.is_finished());
        // On a loaded machine the holder may not have run yet: wait for the forced close.
        let t = Instant::now();
        while h.state.load(Ordering::SeqCst) & ACTIVE == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the gate never closed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let h3 = h.clone();
        let blocked = std::thread::spawn(move || {
            let t = Instant::now();
            drop(h3.enter());
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(30));
        drop(long);
        assert!(holder.join().unwrap());
        std::thread::sleep(Duration::from_millis(20));
        let rep = h.release();
        assert!(
            rep.forced && rep.idle_wait_ms >= IDLE_WAIT.as_secs_f64() * 1e3,
            "{rep:?}"
        );
        assert!(blocked.join().unwrap() >= Duration::from_millis(40));
        assert_eq!(rep.writes_held, 1);
    }
}
