//! The backup copy's rate limit: a byte budget per second, so that a backup does not take
//! the disk from the WAL's fsyncs (RocksDB's `BackupEngine` has the same knob).

use std::time::{Duration, Instant};

/// Paces a copy to at most `bytes_per_sec`: each [`RateLimit::take`] sleeps until the
/// bytes taken so far are due. `None` copies at full speed.
#[derive(Debug)]
pub(crate) struct RateLimit {
    bytes_per_sec: Option<u64>,
    start: Instant,
    taken: u64,
}

impl RateLimit {
    /// A limit of `bytes_per_sec` (`None` or 0: none), starting now.
    pub(crate) fn new(bytes_per_sec: Option<u64>) -> RateLimit {
        RateLimit {
            bytes_per_sec: bytes_per_sec.filter(|r| *r > 0),
            start: Instant::now(),
            taken: 0,
        }
    }

    /// Counts `n` bytes copied and sleeps until they are within the rate.
    pub(crate) fn take(&mut self, n: u64) {
        self.taken += n;
        if let Some(rate) = self.bytes_per_sec {
            let due = Duration::from_secs_f64(self.taken as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_rate() {
        let mut l = RateLimit::new(Some(10 << 20));
        let t = Instant::now();
        for _ in 0..4 {
            l.take(1 << 20);
        }
        // 4 MiB at 10 MiB/s: about 0.4 s.
        assert!(
            t.elapsed() >= Duration::from_millis(350),
            "{:?}",
            t.elapsed()
        );
        let mut free = RateLimit::new(None);
        let t = Instant::now();
        free.take(1 << 40);
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
