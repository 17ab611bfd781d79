//! The conflict journal's accounting (issue 13): every acknowledged write overwritten by
//! concurrent ones only (no later version of its key, in last-writer-wins order, was
//! written by a writer that had applied it) is recorded as a loser in some server's
//! journal, or counted among the entries the journal's bound dropped before the harness
//! read them. "Had applied" is judged by positions: the writer's durable mark of the
//! loser's origin against the loser's position (a server's largest applied timestamp of
//! an origin, which its batches' seen lists carry, starts again from its checkpoint's
//! marks after a restart or a rebuild, so the engine may journal a pair that was not
//! concurrent: more, never fewer).
//!
//! The harness reads every journal each tick and before a server goes down (the journal is
//! in memory only), so what the bound drops is known exactly: entries recorded since the
//! last read beyond the ones still held.

use std::collections::{BTreeMap, HashSet};

use duplex_engine::{Database, Stamp};

use super::world::{World, NODES};

/// What the harness saw of the journals.
#[derive(Default)]
pub struct Journal {
    /// Per node, its journal's `recorded` count when last read (since its open).
    read_upto: BTreeMap<u64, u64>,
    /// (key, losing stamp) recorded by some server.
    losers: HashSet<(Vec<u8>, Stamp)>,
    /// Entries recorded and dropped by the bound before the harness read them.
    unseen: u64,
    /// Per acknowledged write (its stamp): its position, and the writer's marks of every
    /// other origin when it wrote (origin -> position of the last batch applied).
    seen: BTreeMap<(u64, u64), (u64, BTreeMap<u64, u64>)>,
}

impl Journal {
    /// Notes the write stamped `stamp` at `position`, and what its writer had applied
    /// when it wrote (`marks`).
    pub fn wrote(&mut self, stamp: Stamp, position: u64, marks: BTreeMap<u64, u64>) {
        self.seen
            .insert((stamp.origin, stamp.ts.0), (position, marks));
    }

    /// Reads node `node`'s journal: the entries recorded since the last read (those the
    /// bound already dropped are counted as unseen).
    pub fn read(&mut self, node: u64, db: &Database) {
        let cap = db.repl_memory().conflicts_cap;
        let (entries, recorded, _) = db.conflicts(cap);
        let last = self.read_upto.get(&node).copied().unwrap_or(0);
        let new = recorded.saturating_sub(last);
        let held = (new as usize).min(entries.len());
        for c in entries.into_iter().take(held) {
            self.losers.insert((c.key, c.loser));
        }
        self.unseen += new - held as u64;
        self.read_upto.insert(node, recorded);
    }

    /// Node `node`'s database closes (crash, destroyed disk, end): read its journal a last
    /// time; the next open starts an empty one.
    pub fn close(&mut self, node: u64, db: &Database) {
        self.read(node, db);
        self.read_upto.remove(&node);
    }

    /// Entries the bound dropped unread (for the report).
    pub fn unseen(&self) -> u64 {
        self.unseen
    }
}

impl World {
    /// Reads every live server's journal (each tick).
    pub fn read_journals(&mut self) {
        if let Ok(k) = std::env::var("DUPLEX_SIM_TRACE_KEY") {
            let vs: Vec<_> = self
                .nodes
                .iter()
                .map(|n| {
                    n.db.as_ref().map(|d| {
                        d.version(k.as_bytes())
                            .ok()
                            .flatten()
                            .map(|v| (v.stamp.origin, v.stamp.ts.0))
                    })
                })
                .collect();
            let (ents, rec, _) = (0..NODES)
                .filter_map(|n| self.nodes[n].db.as_ref())
                .map(|d| d.conflicts(16))
                .fold((Vec::new(), 0, 0), |mut a, (e, r, _)| {
                    a.0.extend(
                        e.into_iter()
                            .filter(|c| c.key == k.as_bytes())
                            .map(|c| (c.winner.origin, c.loser.origin, c.loser.ts.0)),
                    );
                    a.1 += r;
                    a
                });
            eprintln!("tick {} {k}: {vs:?} journal {ents:?} ({rec})", self.tick);
        }
        for n in 0..NODES {
            if let Some(db) = self.nodes[n].db.as_ref() {
                self.journal.read(n as u64 + 1, db);
            }
        }
    }

    /// The accounting invariant, at the end: every acknowledged version overwritten by a
    /// concurrent write is a loser in some journal, or within the count the bound dropped
    /// unread. Keys with a write of unknown outcome are left out (a version the harness
    /// does not know may sit between two it knows).
    /// Returns the concurrent overwrites and those found in no journal (within the count).
    pub fn check_journal(&self) -> Result<(u64, u64), String> {
        let mut concurrent = 0u64;
        let mut missing = Vec::new();
        for (key, versions) in &self.acked {
            if self.unknown_versions.contains_key(key) {
                continue;
            }
            let mut stamps: Vec<Stamp> = versions.iter().map(|(s, _)| *s).collect();
            stamps.sort_by_key(|s| (s.ts.0, s.origin));
            stamps.dedup();
            for (i, &loser) in stamps.iter().enumerate() {
                let Some(&winner) = stamps.get(i + 1) else {
                    break;
                };
                let Some((at, _)) = self.journal.seen.get(&(loser.origin, loser.ts.0)) else {
                    continue;
                };
                // Overwritten knowingly when any later version's writer had applied it.
                let knowingly =
                    stamps[i + 1..].iter().any(|v| {
                        v.origin == loser.origin
                            || self.journal.seen.get(&(v.origin, v.ts.0)).is_none_or(
                                |(_, marks)| marks.get(&loser.origin).copied().unwrap_or(0) >= *at,
                            )
                    });
                if knowingly {
                    continue;
                }
                concurrent += 1;
                if !self.journal.losers.contains(&(key.clone(), loser)) {
                    missing.push((String::from_utf8_lossy(key).into_owned(), loser, winner));
                }
            }
        }
        if missing.len() as u64 > self.journal.unseen {
            return Err(format!(
                "{} of {concurrent} concurrent overwrites are in no conflict journal, more than the {} entries the bound dropped unread; the first: {:?}",
                missing.len(),
                self.journal.unseen,
                &missing[..missing.len().min(5)]
            ));
        }
        Ok((concurrent, missing.len() as u64))
    }
}
