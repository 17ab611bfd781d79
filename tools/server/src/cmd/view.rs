//! [`View`]: what a run of write commands (or a transaction) reads: one snapshot, read
//! through [`crate::keyspace::Reader`] (flushed and expired versions invisible), under the
//! writes the run made so far; and [`Effect`], what a write does to the stored keys.

use std::collections::HashMap;

use duplex_engine::WriteBatch;

use crate::keyspace::{marker_key, stored_key, Entry, ReadError, Reader, Source, DBS};
use crate::shared::Shared;

/// What a write does to the stored keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// `key` of database `db` takes this entry.
    Put(u8, Vec<u8>, Entry),
    /// `key` of database `db` is deleted.
    Del(u8, Vec<u8>),
    /// Database `db` is flushed (its marker takes the batch's stamp).
    Flush(u8),
}

/// What a write does, in order.
pub(crate) type Effects = Vec<Effect>;

/// The batch that applies `effects`: one operation per stored key (a later effect on a
/// key replaces an earlier one), flush markers included.
pub(crate) fn batch_of(effects: Effects) -> WriteBatch {
    let mut b = WriteBatch::new();
    for e in effects {
        match e {
            Effect::Put(db, k, v) => b.put(stored_key(db, &k), v.encode()),
            Effect::Del(db, k) => b.delete(stored_key(db, &k)),
            Effect::Flush(db) => b.put(marker_key(db).to_vec(), vec![db]),
        };
    }
    b
}

/// Reads through a snapshot (taken lazily, after the locks) and the writes made so far.
pub(crate) struct View<'a> {
    sh: &'a Shared,
    reader: Option<Reader>,
    /// The writes made so far, by database and key (`None`: deleted).
    overlay: HashMap<(u8, Vec<u8>), Option<Entry>>,
    /// Databases flushed by an earlier command: what the overlay does not hold is gone.
    flushed: [bool; DBS as usize],
    now_ms: u64,
}

impl<'a> View<'a> {
    /// A view whose snapshot is taken at the first read.
    pub(crate) fn lazy(sh: &'a Shared) -> View<'a> {
        View {
            sh,
            reader: None,
            overlay: HashMap::new(),
            flushed: [false; DBS as usize],
            now_ms: sh.clock().now_ms(),
        }
    }

    /// A view with its snapshot taken now.
    pub(crate) fn now(sh: &'a Shared) -> View<'a> {
        let mut v = View::lazy(sh);
        v.reader = Some(Reader::new(sh.db().snapshot(), v.now_ms));
        v
    }

    /// The time expiry is judged at, ms since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The live entry of `k` in database `db`.
    pub(crate) fn get(&mut self, db: u8, k: &[u8]) -> Result<Option<Entry>, ReadError> {
        if let Some(v) = self.overlay.get(&(db, k.to_vec())) {
            return Ok(v.clone().filter(|e| !e.expired(self.now_ms)));
        }
        if self.flushed[usize::from(db % DBS)] {
            return Ok(None);
        }
        let (sh, now) = (self.sh, self.now_ms);
        self.reader
            .get_or_insert_with(|| Reader::new(sh.db().snapshot(), now))
            .get(db, k)
    }

    /// Whether `k` of database `db` is live.
    pub(crate) fn exists(&mut self, db: u8, k: &[u8]) -> Result<bool, ReadError> {
        Ok(self.get(db, k)?.is_some())
    }

    /// Makes `effects` visible to later reads of this view.
    pub(crate) fn track(&mut self, effects: &Effects) {
        for e in effects {
            match e {
                Effect::Put(db, k, v) => {
                    self.overlay.insert((*db, k.clone()), Some(v.clone()));
                }
                Effect::Del(db, k) => {
                    self.overlay.insert((*db, k.clone()), None);
                }
                Effect::Flush(db) => {
                    self.overlay.retain(|(d, _), _| d != db);
                    self.flushed[usize::from(db % DBS)] = true;
                }
            }
        }
    }

    /// Whether no write was tracked.
    pub(crate) fn is_clean(&self) -> bool {
        self.overlay.is_empty() && !self.flushed.contains(&true)
    }

    /// Everything tracked, as the effects of one batch: the flushes, then the writes
    /// made after them (a version with the flush's own stamp survives it).
    pub(crate) fn into_effects(self) -> Effects {
        let mut out: Effects = (0..DBS)
            .filter(|d| self.flushed[usize::from(*d)])
            .map(Effect::Flush)
            .collect();
        for ((db, k), v) in self.overlay {
            out.push(match v {
                Some(e) => Effect::Put(db, k, e),
                None => Effect::Del(db, k),
            });
        }
        out
    }
}

impl Source for View<'_> {
    fn get(&mut self, db: u8, key: &[u8]) -> Result<Option<Entry>, ReadError> {
        View::get(self, db, key)
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}
