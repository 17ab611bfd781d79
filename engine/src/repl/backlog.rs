//! The backlog: the most recent local batches, kept in memory so a link that keeps up is
//! served without reading the log (Redis's replication backlog). Filled under the WAL's
//! append lock, so it holds batches in log order; bounded in bytes, oldest dropped first.

use std::collections::VecDeque;
use std::sync::Arc;

/// One local batch in the backlog.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Its position ([`super::position`]).
    pub pos: u64,
    /// Its WAL LSN.
    pub lsn: u64,
    /// Its timestamp.
    pub stamp: u64,
    /// The payload as logged (timestamp patched in).
    pub payload: Arc<[u8]>,
}

/// Recent local batches after `covers_from`.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// Bytes of payload it may hold; 0: off.
    pub cap: usize,
    /// Every local batch with a position above this is in `entries`.
    pub covers_from: u64,
    pub entries: VecDeque<Entry>,
    pub bytes: usize,
}

impl Backlog {
    /// An empty backlog of `cap` bytes covering everything after `covers_from`.
    pub fn new(cap: usize, covers_from: u64) -> Self {
        Backlog {
            cap,
            covers_from,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Adds a batch just appended (in log order), dropping the oldest past the bound.
    pub fn push(&mut self, e: Entry) {
        if self.cap == 0 {
            self.covers_from = e.pos;
            return;
        }
        self.bytes += e.payload.len();
        self.entries.push_back(e);
        while self.bytes > self.cap {
            match self.entries.pop_front() {
                Some(old) => {
                    self.bytes -= old.payload.len();
                    self.covers_from = old.pos;
                }
                None => break,
            }
        }
    }

    /// Whether every local batch after `after` is here (or was never written).
    pub fn covers(&self, after: u64) -> bool {
        self.cap > 0 && after >= self.covers_from
    }

    /// Up to `max_batches` / `max_bytes` (at least one batch if any) of the batches after
    /// `after` with an LSN at most `durable`, oldest first.
    pub fn read(
        &self,
        after: u64,
        durable: u64,
        max_batches: usize,
        max_bytes: usize,
    ) -> Vec<Entry> {
        let start = self.entries.partition_point(|e| e.pos <= after);
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self.entries.range(start..) {
            if e.lsn > durable || out.len() >= max_batches {
                break;
            }
            if !out.is_empty() && bytes + e.payload.len() > max_bytes {
                break;
            }
            bytes += e.payload.len();
            out.push(e.clone());
        }
        out
    }
}

/// A batch of another origin applied here, kept for forwarding: with its predecessor's
/// position as checked when it was applied, so a forwarded chain is as sound as the
/// origin's own.
#[derive(Debug, Clone)]
pub(crate) struct Forwarded {
    pub pos: u64,
    pub prev: u64,
    pub stamp: u64,
    /// As the origin logged it (`origin_lsn` 0).
    pub payload: Arc<[u8]>,
}

/// Recent batches of one other origin, in its order, bounded in bytes.
#[derive(Debug, Default)]
pub(crate) struct ForwardLog {
    pub entries: VecDeque<Forwarded>,
    pub bytes: usize,
    /// Position of the newest batch dropped by the bound (0 if none).
    pub dropped: u64,
}

impl ForwardLog {
    /// Adds a batch applied here; drops the oldest past `cap` bytes.
    pub fn push(&mut self, f: Forwarded, cap: usize) {
        self.bytes += f.payload.len();
        self.entries.push_back(f);
        while self.bytes > cap {
            match self.entries.pop_front() {
                Some(old) => {
                    self.bytes -= old.payload.len();
                    self.dropped = old.pos;
                }
                None => break,
            }
        }
    }

    /// The batches after `after`, if the log holds the one right after it (its `prev` is
    /// `after`); `None` if `after` is older than what it keeps.
    pub fn read(&self, after: u64, max_batches: usize, max_bytes: usize) -> Option<Vec<Forwarded>> {
        if after < self.dropped {
            return None;
        }
        let start = self.entries.partition_point(|e| e.pos <= after);
        match self.entries.get(start) {
            None => return Some(Vec::new()),
            Some(first) if first.prev != after => return None,
            Some(_) => {}
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self.entries.range(start..) {
            if out.len() >= max_batches || (!out.is_empty() && bytes + e.payload.len() > max_bytes)
            {
                break;
            }
            bytes += e.payload.len();
            out.push(e.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pos: u64, len: usize) -> Entry {
        Entry {
            pos,
            lsn: pos,
            stamp: pos,
            payload: vec![0u8; len].into(),
        }
    }

    #[test]
    fn drops_the_oldest_past_its_bound_and_says_what_it_no_longer_covers() {
        let mut b = Backlog::new(100, 0);
        for pos in 1..=5 {
            b.push(entry(pos, 30));
        }
        // 150 bytes pushed, 100 kept: batches 3, 4 and 5 remain (90 bytes).
        assert_eq!(
            b.entries.iter().map(|e| e.pos).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(!b.covers(1));
        assert!(b.covers(2));
        let got: Vec<u64> = b.read(3, 5, 10, 1000).iter().map(|e| e.pos).collect();
        assert_eq!(got, [4, 5]);
        // Not past the durable LSN, and at least one batch however small the byte bound.
        assert_eq!(b.read(2, 4, 10, 1000).len(), 2);
        assert_eq!(b.read(2, 5, 10, 1).len(), 1);
    }

    #[test]
    fn an_off_backlog_covers_nothing_and_holds_nothing() {
        let mut b = Backlog::new(0, 0);
        b.push(entry(1, 10));
        assert!(b.entries.is_empty());
        assert!(!b.covers(1));
    }
}
