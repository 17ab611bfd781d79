//! How duplexd lays its Redis key space out in the engine's one key space (the bytes are
//! specified in `docs/FORMAT.md`, section 31): which stored key holds a key of database
//! 0..15, how a stored value carries its absolute expiry time, and the flush markers that
//! make `FLUSHDB`/`FLUSHALL` one stamped range tombstone each.
//!
//! - Stored keys: a key of database 0 is stored as it is, unless its first byte is `0xFF`
//!   (then `FF 00` + key); a key of database `n` in 1..=15 is `FF n` + key; `FF FF ...` is
//!   the server's own (the flush markers). Database 0 is therefore byte for byte what
//!   duplexd stored before databases existed.
//! - Stored values: a value whose first byte is not `0xFF` is a plain string without
//!   expiry, stored as it is; any other value is `FF tag ...` (tag 0: a string; tag 1: a
//!   string with an absolute expiry time in ms since the Unix epoch).
//! - Flush markers: `FF FF 01 n` holds the flush of database `n`; its value is one byte,
//!   `n`, and what matters is its stamp: a version of a key of database `n` stamped before
//!   the marker's stamp is hidden (last-writer-wins decides, the marker is an ordinary
//!   replicated, logged, archived and rolled-forward put). A version with the marker's own
//!   stamp was written by the same batch after the flush (a transaction), so it is visible.
//!
//! Everything here is pure: [`Reader`] reads through a [`Snapshot`] at a given time.

use std::ops::Bound;

use duplex_engine::{ScanIter, Snapshot, Stamp};

pub use crate::counter::Base;
use crate::counter::{contributions, counted, Contribution};

/// Number of databases (`SELECT 0` .. `SELECT 15`), as in Redis.
pub const DBS: u8 = 16;
/// First byte of every stored key that is not a plain key of database 0.
const ESC: u8 = 0xFF;
/// Second byte of the server's own keys.
const META: u8 = 0xFF;
/// Third byte of a flush marker.
const FLUSH: u8 = 0x01;
/// Value tag: a string.
const TAG_STR: u8 = 0;
/// Value tag: a string with an expiry time.
const TAG_STR_EXP: u8 = 1;
/// Value tag: a counter's root continuing from a given base stamp.
const TAG_ROOT: u8 = 2;
/// Value tag: a counter's root continuing from its own stamp.
const TAG_ROOT_SELF: u8 = 3;

/// Redis's `string2ll`: an optional `-`, then digits without a leading zero (or `0`).
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && b.len() > 1)
    {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The stored key of `key` in database `db` (0..16).
pub fn stored_key(db: u8, key: &[u8]) -> Vec<u8> {
    if db == 0 && key.first() != Some(&ESC) {
        return key.to_vec();
    }
    let mut k = Vec::with_capacity(key.len() + 2);
    k.push(ESC);
    k.push(db);
    k.extend_from_slice(key);
    k
}

/// Database and key of a stored key; `None` for the server's own keys and anything that
/// is not a key of a database.
pub fn user_key(stored: &[u8]) -> Option<(u8, &[u8])> {
    match stored {
        [ESC, db, rest @ ..] if *db < DBS && !rest.is_empty() => {
            (*db != 0 || rest[0] == ESC).then_some((*db, rest))
        }
        [ESC, ..] | [] => None,
        k => Some((0, k)),
    }
}

/// The database a stored key belongs to (a key's, or a counter contribution's); `None`
/// for the flush markers and anything else.
pub fn owner_db(stored: &[u8]) -> Option<u8> {
    user_key(stored)
        .map(|(db, _)| db)
        .or_else(|| crate::counter::contrib_owner(stored))
}

/// The stored key of database `db`'s flush marker.
pub fn marker_key(db: u8) -> [u8; 4] {
    [ESC, META, FLUSH, db]
}

/// A range of stored keys: (lower bound, upper bound).
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The ranges of stored keys holding database `db`'s keys, in user-key order.
pub fn ranges(db: u8) -> Vec<KeyRange> {
    if db == 0 {
        vec![
            (Bound::Unbounded, Bound::Excluded(vec![ESC])),
            (Bound::Included(vec![ESC, 0]), Bound::Excluded(vec![ESC, 1])),
        ]
    } else {
        vec![(
            Bound::Included(vec![ESC, db]),
            Bound::Excluded(vec![ESC, db + 1]),
        )]
    }
}

/// A decoded stored value: a string and its absolute expiry time, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The string.
    pub data: Vec<u8>,
    /// When it expires, ms since the Unix epoch.
    pub expire_ms: Option<u64>,
}

/// A stored value that is not in any layout this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadValue;

impl Entry {
    /// A string without expiry.
    pub fn plain(data: Vec<u8>) -> Entry {
        Entry {
            data,
            expire_ms: None,
        }
    }

    /// Whether it has expired at `now_ms` (Redis: a key expires once the time is past its
    /// expiry, so at exactly the expiry time it is still there).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expire_ms.is_some_and(|e| now_ms > e)
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self.expire_ms {
            None if self.data.first() != Some(&ESC) => self.data.clone(),
            None => {
                let mut v = Vec::with_capacity(self.data.len() + 2);
                v.extend_from_slice(&[ESC, TAG_STR]);
                v.extend_from_slice(&self.data);
                v
            }
            Some(e) => {
                let mut v = Vec::with_capacity(self.data.len() + 10);
                v.extend_from_slice(&[ESC, TAG_STR_EXP]);
                v.extend_from_slice(&e.to_le_bytes());
                v.extend_from_slice(&self.data);
                v
            }
        }
    }

    /// Decodes stored bytes.
    pub fn decode(v: &[u8]) -> Result<Entry, BadValue> {
        match v {
            [ESC, TAG_STR, rest @ ..] => Ok(Entry::plain(rest.to_vec())),
            [ESC, TAG_STR_EXP, rest @ ..] => {
                let (e, data) = rest.split_first_chunk::<8>().ok_or(BadValue)?;
                Ok(Entry {
                    data: data.to_vec(),
                    expire_ms: Some(u64::from_le_bytes(*e)),
                })
            }
            [ESC, ..] => Err(BadValue),
            v => Ok(Entry::plain(v.to_vec())),
        }
    }
}

/// A decoded stored value of a key: a string, or a counter's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A string and its expiry.
    Value(Entry),
    /// A counter's root: it continues from the base stamped so (`None`: its own stamp).
    Root(Option<Stamp>),
}

impl Stored {
    /// Decodes stored bytes.
    pub fn decode(v: &[u8]) -> Result<Stored, BadValue> {
        match v {
            [ESC, TAG_ROOT_SELF] => Ok(Stored::Root(None)),
            [ESC, TAG_ROOT, rest @ ..] if rest.len() == 16 => {
                let mut ts = [0u8; 8];
                let mut o = [0u8; 8];
                ts.copy_from_slice(&rest[..8]);
                o.copy_from_slice(&rest[8..]);
                Ok(Stored::Root(Some(Stamp {
                    ts: duplex_engine::Timestamp(u64::from_le_bytes(ts)),
                    origin: u64::from_le_bytes(o),
                })))
            }
            v => Entry::decode(v).map(Stored::Value),
        }
    }

    /// The stored bytes of a root continuing from `after` (`None`: its own stamp).
    pub fn encode_root(after: Option<Stamp>) -> Vec<u8> {
        match after {
            None => vec![ESC, TAG_ROOT_SELF],
            Some(a) => {
                let mut v = vec![ESC, TAG_ROOT];
                v.extend_from_slice(&a.ts.0.to_le_bytes());
                v.extend_from_slice(&a.origin.to_le_bytes());
                v
            }
        }
    }
}

/// What a read of a key found, for an increment.
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    /// The live value (a counter's: its base plus what counts).
    pub value: Option<Entry>,
    /// The key's base, when it counts contributions (an integer, a root, a deletion).
    pub base: Option<Base>,
    /// The key's value is there but expired.
    pub expired: bool,
    /// Its contributions (`first` resolved).
    pub contribs: Vec<(u64, Contribution)>,
}

/// What WATCH remembers of a key ([`Reader::watch_mark`]): EXEC aborts when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchMark {
    stored: Option<Stamp>,
    contribs: Vec<Stamp>,
    live: bool,
}

/// Why a read failed: the engine, or a stored value of an unknown layout.
#[derive(Debug)]
pub enum ReadError {
    /// The engine failed.
    Engine(duplex_engine::Error),
    /// A stored value is in no known layout (written by a newer duplexd?).
    BadValue(Vec<u8>),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Engine(e) => write!(f, "{e}"),
            ReadError::BadValue(k) => write!(
                f,
                "the stored value of key '{}' has a layout this duplexd does not know (written by a newer version?)",
                String::from_utf8_lossy(k)
            ),
        }
    }
}

impl From<duplex_engine::Error> for ReadError {
    fn from(e: duplex_engine::Error) -> Self {
        ReadError::Engine(e)
    }
}

/// Where reads of keys come from: a [`Reader`], or a transaction's view of its writes.
pub trait Source {
    /// The live entry of `key` in database `db`.
    fn get(&mut self, db: u8, key: &[u8]) -> Result<Option<Entry>, ReadError>;
    /// The time expiry is judged at, ms since the Unix epoch.
    fn now_ms(&self) -> u64;
}

impl Source for Reader {
    fn get(&mut self, db: u8, key: &[u8]) -> Result<Option<Entry>, ReadError> {
        Reader::get(self, db, key)
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

/// Reads keys of the databases through one snapshot at one time: flushed and expired
/// versions are invisible.
#[derive(Debug)]
pub struct Reader {
    snap: Snapshot,
    now_ms: u64,
    /// Each database's flush stamp, read at first need.
    markers: [Option<Option<Stamp>>; DBS as usize],
}

impl Reader {
    /// A reader over `snap` at `now_ms` (ms since the Unix epoch).
    pub fn new(snap: Snapshot, now_ms: u64) -> Reader {
        Reader {
            snap,
            now_ms,
            markers: [None; DBS as usize],
        }
    }

    /// The time expiry is judged at.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The stamp of database `db`'s last flush, if it was ever flushed.
    pub fn flushed_at(&mut self, db: u8) -> Result<Option<Stamp>, duplex_engine::Error> {
        let i = usize::from(db % DBS);
        if let Some(m) = self.markers[i] {
            return Ok(m);
        }
        let m = self.snap.version(&marker_key(db))?.map(|v| v.stamp);
        self.markers[i] = Some(m);
        Ok(m)
    }

    /// The live entry of `key` in database `db`.
    pub fn get(&mut self, db: u8, key: &[u8]) -> Result<Option<Entry>, ReadError> {
        Ok(self.state(db, key)?.value)
    }

    /// What `key` of database `db` holds: its value (a counter's included) and base.
    pub fn state(&mut self, db: u8, key: &[u8]) -> Result<KeyState, ReadError> {
        let flushed = self.flushed_at(db)?;
        // Never written: nothing to count (an increment writes a root with its first
        // contribution), and a read of a missing key stays one lookup.
        let Some(v) = self.snap.version(&stored_key(db, key))? else {
            return Ok(KeyState::default());
        };
        let bad = |_| ReadError::BadValue(key.to_vec());
        let mut int: Option<(i64, Entry)> = None;
        let base = match (flushed, v.value) {
            (Some(f), _) if f.wins_over(&v.stamp) => Base::Gone(f),
            (_, None) => Base::Gone(v.stamp),
            (_, Some(bytes)) => match Stored::decode(&bytes).map_err(bad)? {
                Stored::Root(after) => Base::Root(after.unwrap_or(v.stamp)),
                Stored::Value(e) if e.expired(self.now_ms) => {
                    return Ok(KeyState {
                        expired: true,
                        ..KeyState::default()
                    })
                }
                Stored::Value(e) => match parse_i64(&e.data) {
                    Some(n) => {
                        int = Some((n, e));
                        Base::Int(v.stamp)
                    }
                    None => {
                        return Ok(KeyState {
                            value: Some(e),
                            ..KeyState::default()
                        })
                    }
                },
            },
        };
        let contribs = contributions(&self.snap, db, key, flushed)?;
        let (sum, any) = counted(base, &contribs);
        let value = match (base, int) {
            (Base::Int(_), Some((_, e))) if !any => Some(e),
            (Base::Int(_), Some((n, e))) => Some(Entry {
                data: n.saturating_add(sum).to_string().into_bytes(),
                expire_ms: e.expire_ms,
            }),
            (Base::Root(_), _) => Some(Entry::plain(sum.to_string().into_bytes())),
            _ => any.then(|| Entry::plain(sum.to_string().into_bytes())),
        };
        Ok(KeyState {
            value,
            base: Some(base),
            expired: false,
            contribs,
        })
    }

    /// What WATCH remembers of `key` in database `db`: any write of it (here or by a
    /// peer, a counter's increments included) changes the stamps, an expiry or a flush
    /// changes whether it is live; a background reclaim (same stamps) changes nothing.
    pub fn watch_mark(&mut self, db: u8, key: &[u8]) -> Result<WatchMark, ReadError> {
        let stored = self.snap.version(&stored_key(db, key))?.map(|v| v.stamp);
        let contribs = crate::counter::contrib_stamps(&self.snap, db, key)?;
        let live = self.get(db, key)?.is_some();
        Ok(WatchMark {
            stored,
            contribs,
            live,
        })
    }

    /// The live keys of database `db` after `after` (from the first if `None`), in order.
    pub fn scan(&mut self, db: u8, after: Option<&[u8]>) -> Result<DbScan, ReadError> {
        let flushed = self.flushed_at(db)?;
        let mut iters = Vec::new();
        for (lo, hi) in ranges(db) {
            let lo = match after {
                Some(a) => {
                    let s = stored_key(db, a);
                    let within = match &lo {
                        Bound::Included(l) => s >= *l,
                        _ => true,
                    };
                    let before_end = match &hi {
                        Bound::Excluded(h) => s < *h,
                        _ => true,
                    };
                    if !before_end {
                        continue;
                    }
                    if within {
                        Bound::Excluded(s)
                    } else {
                        lo
                    }
                }
                None => lo,
            };
            iters.push(self.snap.scan_versions(as_ref(&lo), as_ref(&hi))?);
        }
        iters.reverse();
        Ok(DbScan {
            iters,
            flushed,
            now_ms: self.now_ms,
        })
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The live keys of one database, in order (see [`Reader::scan`]).
pub struct DbScan {
    /// The ranges still to walk, the current one last.
    iters: Vec<ScanIter>,
    flushed: Option<Stamp>,
    now_ms: u64,
}

impl DbScan {
    /// The next live key, or `None` at the end. (A key whose base was deleted and that
    /// lives on only by increments concurrent with the deletion is not listed.)
    pub fn next_key(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.next_entry()?.map(|(k, _)| k))
    }

    /// The next live key and whether it has an expiry time, or `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<(Vec<u8>, bool)>, ReadError> {
        while let Some(it) = self.iters.last_mut() {
            let Some((k, v)) = it.next_version()? else {
                self.iters.pop();
                continue;
            };
            let Some(bytes) = v.value else { continue };
            if self.flushed.is_some_and(|f| f.wins_over(&v.stamp)) {
                continue;
            }
            let Some((_, key)) = user_key(&k) else {
                continue;
            };
            match Stored::decode(&bytes).map_err(|_| ReadError::BadValue(key.to_vec()))? {
                Stored::Value(e) if e.expired(self.now_ms) => continue,
                Stored::Value(e) => return Ok(Some((key.to_vec(), e.expire_ms.is_some()))),
                Stored::Root(_) => return Ok(Some((key.to_vec(), false))),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_round_trip_and_database_0_is_unchanged() {
        assert_eq!(stored_key(0, b"abc"), b"abc");
        assert_eq!(stored_key(0, b"\xffx"), b"\xff\x00\xffx");
        assert_eq!(stored_key(3, b"abc"), b"\xff\x03abc");
        for (db, k) in [
            (0u8, &b"abc"[..]),
            (0, b"\xff"),
            (15, b"k"),
            (1, b"\xff\xff"),
        ] {
            assert_eq!(user_key(&stored_key(db, k)), Some((db, k)));
        }
        assert_eq!(user_key(&marker_key(2)), None);
        // `FF 00` + a key not starting with FF is no stored key (it has another spelling).
        assert_eq!(user_key(b"\xff\x00a"), None);
        assert_eq!(user_key(b"\xff\x10a"), None);
    }

    #[test]
    fn values_round_trip_and_plain_strings_are_stored_as_they_are() {
        for e in [
            Entry::plain(b"v".to_vec()),
            Entry::plain(Vec::new()),
            Entry::plain(b"\xffv".to_vec()),
            Entry {
                data: b"x".to_vec(),
                expire_ms: Some(1_700_000_000_000),
            },
        ] {
            assert_eq!(Entry::decode(&e.encode()), Ok(e));
        }
        assert_eq!(Entry::plain(b"v".to_vec()).encode(), b"v");
        assert_eq!(Entry::decode(b"\xff\x09"), Err(BadValue));
        assert_eq!(Entry::decode(b"\xff\x01\x00"), Err(BadValue));
        assert_eq!(Entry::decode(b"\xff"), Err(BadValue));
    }

    #[test]
    fn expiry_is_past_the_time_not_at_it() {
        let e = Entry {
            data: Vec::new(),
            expire_ms: Some(100),
        };
        assert!(!e.expired(100));
        assert!(e.expired(101));
    }
}
