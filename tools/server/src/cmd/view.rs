//! [`View`]: what a run of write commands (or a transaction) reads: one snapshot, read
//! through [`crate::keyspace::Reader`] (flushed and expired versions invisible, counters
//! summed), under the writes the run made so far; and [`Effect`], what a write does to the
//! stored keys.

use std::collections::HashMap;

use duplex_engine::{Stamp, WriteBatch};

use crate::counter::{contrib_key, on_root, Base, Contribution, NO_BASE};
use crate::keyspace::{marker_key, stored_key, Entry, ReadError, Reader, Source, Stored, DBS};
use crate::shared::Shared;

/// What a write does to the stored keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// `key` of database `db` takes this entry (a reset of a counter).
    Put(u8, Vec<u8>, Entry),
    /// `key` of database `db` is deleted.
    Del(u8, Vec<u8>),
    /// Database `db` is flushed (its marker takes the batch's stamp).
    Flush(u8),
    /// An increment: this server's contribution to `key` is now `contrib` (a root is
    /// written first when `root` is `Some`), and the key reads `value`.
    Incr {
        db: u8,
        key: Vec<u8>,
        origin: u64,
        value: Entry,
        contrib: Contribution,
        root: Option<Option<Stamp>>,
    },
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
            Effect::Incr {
                db,
                key,
                origin,
                contrib,
                root,
                ..
            } => {
                if let Some(after) = root {
                    b.put(stored_key(db, &key), Stored::encode_root(after));
                }
                b.put(contrib_key(db, &key, origin), contrib.encode())
            }
        };
    }
    b
}

/// What an increment builds on.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// The key expired: the increment writes its result as a plain value.
    Reset,
    /// A contribution on base `base`, continuing `own` (this server's counted one), with
    /// a root written first when `root` is `Some`.
    Contrib {
        base: Stamp,
        own: Option<Contribution>,
        root: Option<Option<Stamp>>,
    },
}

/// A stored value the view will write for a key.
#[derive(Debug, Clone)]
enum SVal {
    Put(Entry),
    Del,
    Root(Option<Stamp>),
}

type Key = (u8, Vec<u8>);

/// Reads through a snapshot (taken lazily, after the locks) and the writes made so far.
pub(crate) struct View<'a> {
    sh: &'a Shared,
    reader: Option<Reader>,
    /// What each key written so far reads (`None`: deleted).
    overlay: HashMap<Key, Option<Entry>>,
    /// The stored values written so far.
    svals: HashMap<Key, SVal>,
    /// This server's contributions written so far.
    contribs: HashMap<Key, Contribution>,
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
            svals: HashMap::new(),
            contribs: HashMap::new(),
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

    /// This server's node id (the origin of its contributions).
    pub(crate) fn node_id(&self) -> u64 {
        self.sh.db().node_id()
    }

    fn reader(&mut self) -> &mut Reader {
        let (sh, now) = (self.sh, self.now_ms);
        self.reader
            .get_or_insert_with(|| Reader::new(sh.db().snapshot(), now))
    }

    /// The live entry of `k` in database `db`.
    pub(crate) fn get(&mut self, db: u8, k: &[u8]) -> Result<Option<Entry>, ReadError> {
        if let Some(v) = self.overlay.get(&(db, k.to_vec())) {
            return Ok(v.clone().filter(|e| !e.expired(self.now_ms)));
        }
        if self.flushed[usize::from(db % DBS)] {
            return Ok(None);
        }
        self.reader().get(db, k)
    }

    /// Whether `k` of database `db` is live.
    pub(crate) fn exists(&mut self, db: u8, k: &[u8]) -> Result<bool, ReadError> {
        Ok(self.get(db, k)?.is_some())
    }

    /// What an increment of `k` by this server reads and builds on.
    pub(crate) fn counter(&mut self, db: u8, k: &[u8]) -> Result<(Option<Entry>, Plan), ReadError> {
        let key = (db, k.to_vec());
        if let Some(c) = self.contribs.get(&key).copied() {
            let v = self.get(db, k)?;
            let plan = Plan::Contrib {
                base: c.base,
                own: Some(c),
                root: None,
            };
            return Ok((v, plan));
        }
        if self.svals.contains_key(&key) || self.flushed[usize::from(db % DBS)] {
            // Written earlier in this run: a fresh contribution, stamped after that write.
            let v = self.get(db, k)?;
            let root = v.is_none().then_some(None);
            let plan = Plan::Contrib {
                base: NO_BASE,
                own: None,
                root,
            };
            return Ok((v, plan));
        }
        let me = self.node_id();
        let st = self.reader().state(db, k)?;
        if st.expired {
            return Ok((None, Plan::Reset));
        }
        let plan = match st.base {
            // Never written (or a string, which INCR refuses): a root from nothing.
            None => Plan::Contrib {
                base: on_root(NO_BASE),
                own: None,
                root: st.value.is_none().then_some(Some(NO_BASE)),
            },
            Some(b) => Plan::Contrib {
                base: b.id(),
                own: st
                    .contribs
                    .iter()
                    .find(|(o, c)| *o == me && b.counts(c, c.first.unwrap_or(NO_BASE)))
                    .map(|(_, c)| *c),
                root: match b {
                    Base::Gone(t) => Some(Some(t)),
                    _ => None,
                },
            },
        };
        Ok((st.value, plan))
    }

    /// Makes `effects` visible to later reads of this view.
    pub(crate) fn track(&mut self, effects: &Effects) {
        for e in effects {
            match e {
                Effect::Put(db, k, v) => {
                    let key = (*db, k.clone());
                    self.contribs.remove(&key);
                    self.svals.insert(key.clone(), SVal::Put(v.clone()));
                    self.overlay.insert(key, Some(v.clone()));
                }
                Effect::Del(db, k) => {
                    let key = (*db, k.clone());
                    self.contribs.remove(&key);
                    self.svals.insert(key.clone(), SVal::Del);
                    self.overlay.insert(key, None);
                }
                Effect::Flush(db) => {
                    self.overlay.retain(|(d, _), _| d != db);
                    self.svals.retain(|(d, _), _| d != db);
                    self.contribs.retain(|(d, _), _| d != db);
                    self.flushed[usize::from(db % DBS)] = true;
                }
                Effect::Incr {
                    db,
                    key,
                    value,
                    contrib,
                    root,
                    ..
                } => {
                    let k = (*db, key.clone());
                    if let Some(after) = root {
                        self.svals.insert(k.clone(), SVal::Root(*after));
                    }
                    self.contribs.insert(k.clone(), *contrib);
                    self.overlay.insert(k, Some(value.clone()));
                }
            }
        }
    }

    /// Whether no write was tracked.
    pub(crate) fn is_clean(&self) -> bool {
        self.svals.is_empty() && self.contribs.is_empty() && !self.flushed.contains(&true)
    }

    /// Everything tracked, as the effects of one batch: the flushes, then the writes
    /// made after them (a version with the flush's own stamp survives it).
    pub(crate) fn into_effects(self) -> Effects {
        let origin = self.sh.db().node_id();
        let mut out: Effects = (0..DBS)
            .filter(|d| self.flushed[usize::from(*d)])
            .map(Effect::Flush)
            .collect();
        let mut roots = Vec::new();
        for ((db, k), v) in self.svals {
            match v {
                SVal::Put(e) => out.push(Effect::Put(db, k, e)),
                SVal::Del => out.push(Effect::Del(db, k)),
                SVal::Root(after) => roots.push(((db, k), after)),
            }
        }
        let mut roots: HashMap<Key, Option<Stamp>> = roots.into_iter().collect();
        for ((db, k), c) in self.contribs {
            let root = roots.remove(&(db, k.clone()));
            out.push(Effect::Incr {
                db,
                key: k,
                origin,
                value: Entry::plain(Vec::new()),
                contrib: c,
                root,
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
