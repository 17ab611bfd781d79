//! Counters that count under replication: INCR, DECR, INCRBY and DECRBY made concurrently
//! on two servers both count once the servers exchange them. The layout is specified in
//! `docs/FORMAT.md` (section 31); the semantics for clients in `docs/COMMANDS.md`.
//!
//! A key's stored value (its *base*: a string, a deletion, or a *root*, the base an INCR
//! of a missing key writes) is one last-writer-wins entry as before. An increment does not
//! write the base: each origin server keeps its own *contribution* entry (`FF FE db
//! key_len:u16be key origin:u64be`), its running delta since the base it counted on,
//! written only by that origin, so its newest version is its running total and no other
//! server's increments can overwrite it. The value read is the base plus every counted
//! contribution. A write of the base (SET, DEL, EXPIRE, APPEND, ...) is a reset, ruled by
//! the stamps (an observed reset, with the hybrid logical clock standing for observation):
//! - a contribution made on the current base (its `base` is the base's stamp) counts;
//! - one made on an earlier base counts only if its *first* increment is stamped at or
//!   after the current base: every increment the reset's writer had seen is stamped before
//!   the reset (the clock moves past every stamp it applies), so these were not seen, and
//!   they count on top of the new value; increments stamped before it are reset with it;
//! - after a deletion (or a flush), contributions count only if made on another base and
//!   stamped at or after the deletion.
//!
//! An integer base counts its contributions; a string that is not an integer ignores them.

use std::ops::Bound;

use duplex_engine::{Snapshot, Stamp, Timestamp};

use crate::keyspace::{BadValue, ReadError, DBS};

/// First byte of every key that is not a plain key of database 0.
const ESC: u8 = 0xFF;
/// Second byte of a contribution's key.
const CONTRIB: u8 = 0xFE;
/// Bytes of an encoded contribution.
const CONTRIB_LEN: usize = 40;

/// The stamp of "no base": a key that was never written.
pub const NO_BASE: Stamp = Stamp {
    ts: Timestamp(0),
    origin: 0,
};

/// The first bytes of every contribution key of `key` in database `db`.
pub fn contrib_prefix(db: u8, key: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(key.len() + 13);
    p.extend_from_slice(&[ESC, CONTRIB, db]);
    p.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
    p.extend_from_slice(key);
    p
}

/// The key of `origin`'s contribution to `key` in database `db`.
pub fn contrib_key(db: u8, key: &[u8], origin: u64) -> Vec<u8> {
    let mut k = contrib_prefix(db, key);
    k.extend_from_slice(&origin.to_be_bytes());
    k
}

/// The database a contribution key belongs to.
pub fn contrib_owner(stored: &[u8]) -> Option<u8> {
    match stored {
        [ESC, CONTRIB, db, ..] if *db < DBS => Some(*db),
        _ => None,
    }
}

/// One origin's contribution to a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contribution {
    /// Its running delta since the base it counts on.
    pub delta: i64,
    /// The stamp of the base it was made on ([`NO_BASE`]: none).
    pub base: Stamp,
    /// The stamp of its first increment on that base; `None` in the stored bytes means the
    /// version's own stamp (the first increment is the one writing it).
    pub first: Option<Stamp>,
}

fn stamp_le(out: &mut Vec<u8>, s: Stamp) {
    out.extend_from_slice(&s.ts.0.to_le_bytes());
    out.extend_from_slice(&s.origin.to_le_bytes());
}

fn stamp_at(b: &[u8]) -> Stamp {
    let mut ts = [0u8; 8];
    let mut o = [0u8; 8];
    ts.copy_from_slice(&b[..8]);
    o.copy_from_slice(&b[8..16]);
    Stamp {
        ts: Timestamp(u64::from_le_bytes(ts)),
        origin: u64::from_le_bytes(o),
    }
}

impl Contribution {
    /// The stored bytes: `delta:i64 base_ts:u64 base_origin:u64 first_ts:u64
    /// first_origin:u64`, little-endian; a zero `first` is "the version's own stamp".
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CONTRIB_LEN);
        v.extend_from_slice(&self.delta.to_le_bytes());
        stamp_le(&mut v, self.base);
        stamp_le(&mut v, self.first.unwrap_or(NO_BASE));
        v
    }

    /// Decodes stored bytes (exactly 40).
    pub fn decode(b: &[u8]) -> Result<Contribution, BadValue> {
        if b.len() != CONTRIB_LEN {
            return Err(BadValue);
        }
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[..8]);
        let first = stamp_at(&b[24..40]);
        Ok(Contribution {
            delta: i64::from_le_bytes(d),
            base: stamp_at(&b[8..24]),
            first: (first != NO_BASE).then_some(first),
        })
    }
}

/// What a key's base says about its contributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// An integer string stamped `t`.
    Int(Stamp),
    /// A root (written by an INCR of a missing key) continuing from the base stamped
    /// `after`.
    Root(Stamp),
    /// Deleted (or flushed) at `t`.
    Gone(Stamp),
}

/// The base id of contributions made on a root continuing from `after`: `after` with the
/// top bit of its origin flipped (node ids stay below 2^63), so that they are never taken
/// for contributions made on the base stamped `after` itself (an expired counter whose
/// value was reclaimed under its own stamp).
pub fn on_root(after: Stamp) -> Stamp {
    Stamp {
        ts: after.ts,
        origin: after.origin ^ (1 << 63),
    }
}

impl Base {
    /// The base stamp an increment made now records (on a deletion, the increment writes
    /// a root continuing from it).
    pub fn id(self) -> Stamp {
        match self {
            Base::Int(t) => t,
            Base::Root(t) | Base::Gone(t) => on_root(t),
        }
    }

    /// Whether a contribution (its `first` resolved) counts on this base.
    pub fn counts(self, c: &Contribution, first: Stamp) -> bool {
        let at_or_after = |t: Stamp| !t.wins_over(&first);
        match self {
            Base::Int(t) => c.base == t || at_or_after(t),
            Base::Root(t) => c.base == on_root(t) || (c.base != t && at_or_after(t)),
            Base::Gone(t) => c.base != t && at_or_after(t),
        }
    }
}

/// The stored keys and stamps of a key's live contribution versions (to reclaim them).
pub fn contrib_versions(
    snap: &Snapshot,
    db: u8,
    key: &[u8],
) -> Result<Vec<(Vec<u8>, Stamp)>, ReadError> {
    let (lo, hi) = contrib_bounds(db, key);
    let mut it = snap.scan_versions(Bound::Included(&lo), Bound::Included(&hi))?;
    let mut out = Vec::new();
    while let Some((k, v)) = it.next_version()? {
        if v.value.is_some() {
            out.push((k, v.stamp));
        }
    }
    Ok(out)
}

/// The stamps of every stored version of a key's contributions, tombstones included
/// (WATCH: any increment changes them; a reclaim, which keeps the stamp, does not).
pub fn contrib_stamps(snap: &Snapshot, db: u8, key: &[u8]) -> Result<Vec<Stamp>, ReadError> {
    let (lo, hi) = contrib_bounds(db, key);
    let mut it = snap.scan_versions(Bound::Included(&lo), Bound::Included(&hi))?;
    let mut out = Vec::new();
    while let Some((_, v)) = it.next_version()? {
        out.push(v.stamp);
    }
    Ok(out)
}

/// The owner (database and key) of a contribution's stored key.
pub fn contrib_user_key(stored: &[u8]) -> Option<(u8, &[u8])> {
    let [ESC, CONTRIB, db, a, b, rest @ ..] = stored else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*a, *b]));
    (*db < DBS && rest.len() == len + 8).then(|| (*db, &rest[..len]))
}

fn contrib_bounds(db: u8, key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let p = contrib_prefix(db, key);
    let mut lo = p.clone();
    lo.extend_from_slice(&[0; 8]);
    let mut hi = p;
    hi.extend_from_slice(&[0xFF; 8]);
    (lo, hi)
}

/// A key's live contributions: (origin, contribution with `first` resolved).
pub fn contributions(
    snap: &Snapshot,
    db: u8,
    key: &[u8],
    flushed: Option<Stamp>,
) -> Result<Vec<(u64, Contribution)>, ReadError> {
    let (lo, hi) = contrib_bounds(db, key);
    let mut it = snap.scan_versions(Bound::Included(&lo), Bound::Included(&hi))?;
    let mut out = Vec::new();
    while let Some((k, v)) = it.next_version()? {
        let Some(bytes) = v.value else { continue };
        if flushed.is_some_and(|f| f.wins_over(&v.stamp)) {
            continue;
        }
        let mut c = Contribution::decode(&bytes).map_err(|_| ReadError::BadValue(key.to_vec()))?;
        c.first = Some(c.first.unwrap_or(v.stamp));
        let mut o = [0u8; 8];
        o.copy_from_slice(&k[k.len() - 8..]);
        out.push((u64::from_be_bytes(o), c));
    }
    Ok(out)
}

/// The sum of the contributions that count on `base`, and whether any does.
pub fn counted(base: Base, cs: &[(u64, Contribution)]) -> (i64, bool) {
    let mut sum = 0i64;
    let mut any = false;
    for (_, c) in cs {
        if base.counts(c, c.first.unwrap_or(NO_BASE)) {
            sum = sum.saturating_add(c.delta);
            any = true;
        }
    }
    (sum, any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts: u64, origin: u64) -> Stamp {
        Stamp {
            ts: Timestamp(ts),
            origin,
        }
    }

    #[test]
    fn contributions_round_trip() {
        for c in [
            Contribution {
                delta: -5,
                base: NO_BASE,
                first: None,
            },
            Contribution {
                delta: i64::MAX,
                base: s(7, 2),
                first: Some(s(9, 1)),
            },
        ] {
            assert_eq!(Contribution::decode(&c.encode()), Ok(c));
        }
        assert_eq!(Contribution::decode(&[0; 39]), Err(BadValue));
        assert_eq!(contrib_owner(&contrib_key(3, b"k", 9)), Some(3));
        assert_eq!(contrib_owner(b"\xff\xfe\x10"), None);
    }

    #[test]
    fn a_reset_counts_what_its_writer_cannot_have_seen() {
        let c = |base, first| Contribution {
            delta: 1,
            base,
            first: Some(first),
        };
        let set = Base::Int(s(100, 1));
        // Made on the current base: counts.
        assert!(set.counts(&c(s(100, 1), s(150, 2)), s(150, 2)));
        // Made on an older base, first increment after the SET: not seen, counts.
        assert!(set.counts(&c(s(50, 1), s(120, 2)), s(120, 2)));
        // First increment before the SET: reset with it.
        assert!(!set.counts(&c(s(50, 1), s(80, 2)), s(80, 2)));
        // A deletion: only what came after it, on another base.
        let del = Base::Gone(s(100, 1));
        assert!(!del.counts(&c(s(100, 1), s(150, 2)), s(150, 2)));
        assert!(del.counts(&c(s(50, 1), s(150, 2)), s(150, 2)));
        assert!(!del.counts(&c(s(50, 1), s(90, 2)), s(90, 2)));
        // A root after a deletion: what was made on it counts, what was made on the
        // deleted base (an expired counter, reclaimed under its own stamp) does not.
        let root = Base::Root(s(100, 1));
        assert!(root.counts(&c(on_root(s(100, 1)), s(150, 2)), s(150, 2)));
        assert!(!root.counts(&c(s(100, 1), s(150, 2)), s(150, 2)));
        assert!(root.counts(&c(s(50, 1), s(150, 2)), s(150, 2)));
    }
}
