//! The WAL archive in object storage. Under the archive prefix, one "directory" per
//! lineage as on disk (`n<node>-t<timeline>/`), in it one per segment (`<first LSN, 20
//! digits>.wal/`), and in that:
//!
//! - `frag-<offset, 20 digits>-<length, 20 digits>-<CRC32C, 8 hex>`: the segment's bytes
//!   `[offset, offset + length)`, at most [`crate::PART_SIZE`];
//! - `sealed-<length, 20 digits>-<CRC32C, 8 hex>`: written once the segment closed and
//!   every fragment of it is in: the segment is `length` bytes of CRC32C as named.
//!
//! Objects cannot be appended to: the growing segment goes up as fragments of the newly
//! archived bytes, never as a whole again. Every fragment is checked against the CRC in
//! its name when read back.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Error, Result, Store};

/// Name of a fragment object.
pub fn frag_name(offset: u64, len: u64, crc: u32) -> String {
    format!("frag-{offset:020}-{len:020}-{crc:08x}")
}

/// Name of a seal object.
pub fn seal_name(len: u64, crc: u32) -> String {
    format!("sealed-{len:020}-{crc:08x}")
}

/// The archived objects of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentObjects {
    /// `segment dir` relative to the store: `n1-t1/00000000000000000001.wal`.
    pub rel: String,
    /// First LSN (from its name).
    pub first_lsn: u64,
    /// Fragments: offset -> (len, crc), the longest one at each offset.
    pub frags: BTreeMap<u64, (u64, u32)>,
    /// The seal: (len, crc).
    pub sealed: Option<(u64, u32)>,
    /// Every object key (for deletion).
    pub keys: Vec<String>,
}

impl SegmentObjects {
    /// Bytes covered contiguously from offset 0 by the fragments, and the chain used.
    pub fn chain(&self) -> (u64, Vec<(u64, u64, u32)>) {
        let mut at = 0;
        let mut out = Vec::new();
        while let Some(&(len, crc)) = self.frags.get(&at) {
            if len == 0 {
                break;
            }
            out.push((at, len, crc));
            at += len;
        }
        (at, out)
    }
}

fn parse_frag(s: &str) -> Option<(u64, u64, u32)> {
    let mut it = s.strip_prefix("frag-")?.split('-');
    let off = it.next()?.parse().ok()?;
    let len = it.next()?.parse().ok()?;
    let crc = u32::from_str_radix(it.next()?, 16).ok()?;
    it.next().is_none().then_some((off, len, crc))
}

fn parse_seal(s: &str) -> Option<(u64, u32)> {
    let (len, crc) = s.strip_prefix("sealed-")?.split_once('-')?;
    Some((len.parse().ok()?, u32::from_str_radix(crc, 16).ok()?))
}

/// The first LSN of a segment file name `<20 digits>.wal`.
pub fn segment_lsn(name: &str) -> Option<u64> {
    let d = name.strip_suffix(".wal")?;
    (d.len() == 20 && d.bytes().all(|c| c.is_ascii_digit())).then(|| d.parse().ok())?
}

/// The archived segments of lineage `lineage` (`n<node>-t<timeline>`), by first LSN.
pub fn list_segments(store: &Store, lineage: &str) -> Result<Vec<SegmentObjects>> {
    let mut by: BTreeMap<u64, SegmentObjects> = BTreeMap::new();
    for o in store.list(lineage)? {
        let mut parts = o.rel.rsplitn(3, '/');
        let (Some(obj), Some(seg)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(lsn) = segment_lsn(seg) else {
            continue;
        };
        let e = by.entry(lsn).or_insert_with(|| SegmentObjects {
            rel: format!("{lineage}/{seg}"),
            first_lsn: lsn,
            ..SegmentObjects::default()
        });
        e.keys.push(o.rel.clone());
        if let Some((off, len, crc)) = parse_frag(obj) {
            if len != o.size {
                return Err(Error::Length {
                    object: store.object_url(&o.rel),
                    expected: len,
                    found: o.size,
                });
            }
            let cur = e.frags.entry(off).or_insert((len, crc));
            if len > cur.0 {
                *cur = (len, crc);
            }
        } else if let Some(s) = parse_seal(obj) {
            e.sealed = Some(s);
        }
    }
    Ok(by.into_values().collect())
}

/// What a lineage download did.
#[derive(Debug, Clone, Default)]
pub struct Downloaded {
    /// Segments written (sealed ones whole, the last unsealed one as `.partial`).
    pub segments: usize,
    /// Bytes read.
    pub bytes: u64,
}

/// The segments of lineage (`node`, `timeline`) a roll-forward from `from_lsn` reads (the
/// one holding it and every later one) and their bytes.
pub fn plan(
    store: &Store,
    node: u64,
    timeline: u64,
    from_lsn: u64,
) -> Result<(Vec<SegmentObjects>, u64)> {
    let segs = list_segments(store, &format!("n{node}-t{timeline}"))?;
    let start = segs
        .iter()
        .rposition(|s| s.first_lsn <= from_lsn)
        .unwrap_or(0);
    let segs: Vec<SegmentObjects> = segs.into_iter().skip(start).collect();
    let bytes = segs.iter().map(|s| s.chain().0).sum();
    Ok((segs, bytes))
}

/// Downloads the archive of lineage (`node`, `timeline`) from the segment holding
/// `from_lsn` on into `root/n<node>-t<timeline>/` in the on-disk archive layout (docs/FORMAT.md
/// section 11): a sealed segment as `<name>`, the last unsealed one as `<name>.partial`;
/// every fragment checked against its CRC32C, every sealed segment against its seal. Empty
/// directories are made for the node's other timelines in the store, so a restore picks
/// a new timeline above all of them.
pub fn download_lineage(
    store: &Store,
    node: u64,
    timeline: u64,
    from_lsn: u64,
    root: &Path,
    progress: &dyn Fn(u64),
) -> Result<Downloaded> {
    for l in store.list_dirs("")? {
        if duplex_wal::parse_archive_subdir(&l).is_some_and(|(n, _)| n == node) {
            let d = root.join(&l);
            std::fs::create_dir_all(&d).map_err(|e| Error::io("create directory", &d, e))?;
        }
    }
    let dir = duplex_wal::archive_subdir(root, node, timeline);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let (segs, _) = plan(store, node, timeline, from_lsn)?;
    let mut out = Downloaded::default();
    let n = segs.len();
    for (i, s) in segs.iter().enumerate() {
        let (covered, chain) = s.chain();
        let name = s.rel.rsplit('/').next().unwrap_or_default().to_owned();
        let file = match s.sealed {
            Some((len, _)) if covered < len => {
                return Err(Error::Gap {
                    object: store.object_url(&s.rel),
                    covered,
                    sealed: len,
                })
            }
            Some(_) => dir.join(&name),
            None if i + 1 < n => {
                return Err(Error::Malformed {
                    object: store.object_url(&s.rel),
                    reason: "not sealed, yet later segments are archived: its upload stopped short; that archive is incomplete".into(),
                })
            }
            None => dir.join(format!("{name}.partial")),
        };
        let len = s.sealed.map_or(covered, |(l, _)| l);
        let parts: Vec<(String, u64, u64, u32)> = chain
            .iter()
            .take_while(|(off, _, _)| *off < len)
            .map(|&(off, l, crc)| (format!("{}/{}", s.rel, frag_name(off, l, crc)), off, l, crc))
            .collect();
        let crcs = store.get_objects_into(&parts, &file, progress)?;
        if let Some((slen, scrc)) = s.sealed {
            let whole = combine_parts(&crcs);
            if whole != scrc {
                return Err(Error::Corrupt {
                    object: store.object_url(&format!("{}/{}", s.rel, seal_name(slen, scrc))),
                    offset: 0,
                    end: slen,
                    expected: scrc,
                    found: whole,
                });
            }
            // A longer last fragment (a retried upload) does not extend a sealed segment.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .map_err(|e| Error::io("open", &file, e))?;
            f.set_len(slen)
                .map_err(|e| Error::io("truncate", &file, e))?;
            f.sync_all().map_err(|e| Error::io("fsync", &file, e))?;
        }
        out.segments += 1;
        out.bytes += len;
    }
    let d = std::fs::File::open(&dir).map_err(|e| Error::io("open", &dir, e))?;
    d.sync_all().map_err(|e| Error::io("fsync", &dir, e))?;
    Ok(out)
}

/// CRC32C of the concatenation, from (crc, len) of each part.
fn combine_parts(parts: &[(u32, u64)]) -> u32 {
    let mut acc = 0u32;
    for (i, &(c, l)) in parts.iter().enumerate() {
        acc = if i == 0 {
            c
        } else {
            crc32c::crc32c_combine(acc, c, l as usize)
        };
    }
    acc
}

/// Deletes the archived segments of lineage (`node`, `timeline`) whose successor starts
/// at or below `below_lsn` (so every record from `below_lsn` on stays), never the newest;
/// the seal first, so a half-deleted segment is never taken for a whole one. Returns how
/// many were deleted.
pub fn prune(store: &Store, node: u64, timeline: u64, below_lsn: u64) -> Result<usize> {
    let segs = list_segments(store, &format!("n{node}-t{timeline}"))?;
    let mut n = 0;
    for w in segs.windows(2) {
        if w[1].first_lsn > below_lsn || w[0].sealed.is_none() {
            break;
        }
        let mut keys = w[0].keys.clone();
        keys.sort_by_key(|k| !k.contains("/sealed-"));
        for k in keys {
            store.delete(&k)?;
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        let f = frag_name(8 << 20, 12, 0xdead_beef);
        assert_eq!(f, "frag-00000000000008388608-00000000000000000012-deadbeef");
        assert_eq!(parse_frag(&f), Some((8 << 20, 12, 0xdead_beef)));
        let s = seal_name(99, 1);
        assert_eq!(parse_seal(&s), Some((99, 1)));
        assert_eq!(segment_lsn("00000000000000000042.wal"), Some(42));
        assert_eq!(segment_lsn("42.wal"), None);
        let a = crc32c::crc32c(b"hello ");
        let b = crc32c::crc32c(b"world");
        assert_eq!(
            combine_parts(&[(a, 6), (b, 5)]),
            crc32c::crc32c(b"hello world")
        );
    }
}
