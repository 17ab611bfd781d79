//! The conflict journal: versions overwritten by a concurrent write of another server.
//!
//! Two writes of one key are concurrent when neither server had applied the other's when it
//! wrote: last-writer-wins keeps the one with the greater (timestamp, origin) everywhere,
//! and the other is lost on purpose. The journal says what was lost. Every server that
//! holds both versions records the pair, whichever arrived first: the server where the
//! loser was written (when the winner arrives) and the one where the winner was written
//! (when the loser arrives late). Bounded in memory; entries past the bound are counted
//! as dropped. Not persisted: a restart starts an empty journal (its count of dropped
//! entries says so only for this run).

use std::collections::VecDeque;

use crate::hlc::Stamp;

/// Largest losing value kept whole; a longer one is kept as its length and digest.
pub const MAX_KEPT_VALUE: usize = 1024;

/// One overwritten concurrent version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The key.
    pub key: Vec<u8>,
    /// The version kept.
    pub winner: Stamp,
    /// The version lost.
    pub loser: Stamp,
    /// Whether the loser was a delete.
    pub loser_deleted: bool,
    /// The losing value, if at most 1 KiB (`MAX_KEPT_VALUE`).
    pub loser_value: Option<Vec<u8>>,
    /// Length of the losing value (0 for a delete).
    pub loser_len: u64,
    /// xxh3-64 of the losing value (0 for a delete).
    pub loser_digest: u64,
    /// Wall-clock ms when it was recorded here.
    pub recorded_ms: u64,
}

impl Conflict {
    /// A journal entry for `loser` (its value, `None` for a delete) overwritten by `winner`.
    pub fn new(key: &[u8], winner: Stamp, loser: Stamp, value: Option<&[u8]>, now_ms: u64) -> Self {
        Conflict {
            key: key.to_vec(),
            winner,
            loser,
            loser_deleted: value.is_none(),
            loser_value: value
                .filter(|v| v.len() <= MAX_KEPT_VALUE)
                .map(<[u8]>::to_vec),
            loser_len: value.map_or(0, |v| v.len() as u64),
            loser_digest: value.map_or(0, xxhash_rust::xxh3::xxh3_64),
            recorded_ms: now_ms,
        }
    }
}

/// The bounded journal.
#[derive(Debug)]
pub struct ConflictJournal {
    cap: usize,
    entries: VecDeque<Conflict>,
    /// Entries recorded since open.
    pub recorded: u64,
    /// Entries dropped by the bound since open (the oldest go first).
    pub dropped: u64,
}

impl Default for ConflictJournal {
    fn default() -> Self {
        ConflictJournal::new(10_000)
    }
}

impl ConflictJournal {
    /// A journal of at most `cap` entries.
    pub fn new(cap: usize) -> Self {
        ConflictJournal {
            cap,
            entries: VecDeque::new(),
            recorded: 0,
            dropped: 0,
        }
    }

    /// Records one entry, dropping the oldest past the bound.
    pub fn record(&mut self, c: Conflict) {
        self.recorded += 1;
        if self.cap == 0 {
            self.dropped += 1;
            return;
        }
        if self.entries.len() >= self.cap {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(c);
    }

    /// The newest `n` entries, newest first.
    pub fn newest(&self, n: usize) -> Vec<Conflict> {
        self.entries.iter().rev().take(n).cloned().collect()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;

    fn st(ts: u64, origin: u64) -> Stamp {
        Stamp {
            ts: Timestamp(ts),
            origin,
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_what_the_bound_dropped() {
        let mut j = ConflictJournal::new(2);
        for i in 0..5u64 {
            j.record(Conflict::new(
                &i.to_le_bytes(),
                st(i + 1, 2),
                st(i, 1),
                Some(b"v"),
                0,
            ));
        }
        assert_eq!(j.len(), 2);
        assert_eq!((j.recorded, j.dropped), (5, 3));
        let n = j.newest(10);
        assert_eq!(n[0].key, 4u64.to_le_bytes());
        assert_eq!(n[1].key, 3u64.to_le_bytes());
        let big = vec![7u8; MAX_KEPT_VALUE + 1];
        let c = Conflict::new(b"k", st(2, 2), st(1, 1), Some(&big), 0);
        assert_eq!((c.loser_value, c.loser_len), (None, big.len() as u64));
        assert_ne!(c.loser_digest, 0);
        assert!(Conflict::new(b"k", st(2, 2), st(1, 1), None, 0).loser_deleted);
    }
}
