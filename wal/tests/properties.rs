//! Property tests: batches round-trip; any cut or garbage after the acknowledged records
//! recovers exactly those records; damage before the end is reported, never skipped.

mod common;

use common::*;
use duplex_wal::sim::SimStorage;
use duplex_wal::{Entry, Error, WalOptions};
use proptest::prelude::*;

/// A batch: (kind, payload length) per record.
fn batches() -> impl Strategy<Value = Vec<Vec<(u8, usize)>>> {
    prop::collection::vec(prop::collection::vec((1u8..=255, 0usize..600), 1..5), 1..40)
}

fn opts(segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        max_record_size: 1024,
        // Cuts files short by hand, which only a file that was not preallocated may be.
        preallocate: false,
        ..WalOptions::default()
    }
}

/// Appends the batches; returns (lsn, kind, payload) of every record in order.
fn write(sim: &SimStorage, o: &WalOptions, bs: &[Vec<(u8, usize)>]) -> Vec<(u64, u8, Vec<u8>)> {
    let wal = sim_open(sim, "/wal", o.clone()).expect("open");
    let mut out = Vec::new();
    let mut tagn = 0u64;
    for b in bs {
        let bodies: Vec<(u8, Vec<u8>)> = b
            .iter()
            .map(|&(k, len)| {
                tagn += 1;
                (k, payload(tagn, len))
            })
            .collect();
        let entries: Vec<Entry<'_>> = bodies
            .iter()
            .map(|(k, p)| Entry {
                kind: *k,
                payload: p,
            })
            .collect();
        let last = wal.append_batch(&entries).expect("append");
        let first = last + 1 - bodies.len() as u64;
        for (i, (k, p)) in bodies.into_iter().enumerate() {
            out.push((first + i as u64, k, p));
        }
    }
    wal.close().expect("close");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_of_batches_round_trips(bs in batches(), seg in 4096u64..20000) {
        let sim = SimStorage::new();
        let o = opts(seg);
        let written = write(&sim, &o, &bs);
        let recs = read_dir(&sim, "/wal");
        prop_assert_eq!(recs.len(), written.len());
        for (r, (lsn, k, p)) in recs.iter().zip(&written) {
            prop_assert_eq!(r.lsn, *lsn);
            prop_assert_eq!(r.kind, *k);
            prop_assert_eq!(&r.payload, p);
        }
        // Reading from any LSN gives the suffix.
        let from = written.len() as u64 / 2 + 1;
        let wal = sim_open(&sim, "/wal", o).expect("reopen");
        let suffix: Vec<u64> = wal.read_from(from).expect("reader").map(|r| r.expect("record").lsn).collect();
        prop_assert_eq!(suffix, (from..=written.len() as u64).collect::<Vec<_>>());
        // Mapped segments, records read in place: the same records.
        let mut mapped = wal.read_from_mapped(1).expect("mapped reader");
        let mut n = 0;
        while let Some(r) = mapped.next_shared().expect("mapped record") {
            let (lsn, k, p) = &written[n];
            prop_assert_eq!((r.lsn, r.kind, r.payload()), (*lsn, *k, p.as_slice()));
            n += 1;
        }
        prop_assert_eq!(n, written.len());
    }

    #[test]
    fn garbage_after_acknowledged_records_recovers_exactly_them(
        bs in batches(),
        garbage in prop::collection::vec(any::<u8>(), 1..400),
        partial_record in any::<bool>(),
    ) {
        let sim = SimStorage::new();
        let o = opts(1 << 20);
        let written = write(&sim, &o, &bs);
        let wal = sim_open(&sim, "/wal", o.clone()).expect("open");
        let seg = last_segment(&wal);
        let end = wal.segments().last().expect("segment").end_offset;
        drop(wal);
        // After the acknowledged end: either a prefix of a real next record (a torn write)
        // or random bytes.
        let junk = if partial_record {
            let mut rec = Vec::new();
            let body = payload(9999, 300);
            duplex_wal::format::encode_record(&mut rec, written.len() as u64 + 1, 1, 0, &body);
            // Cut inside header or payload (cutting only zero padding leaves a whole record).
            rec.truncate(garbage.len().min(duplex_wal::format::RECORD_HEADER_LEN + body.len() - 1));
            rec
        } else {
            garbage
        };
        {
            use duplex_wal::{OpenMode, Storage};
            let f = sim.open(&seg, OpenMode::ReadWrite).expect("open segment");
            f.write_all_at(&junk, end).expect("write junk");
            f.sync_data().expect("sync");
        }
        let wal = sim_open(&sim, "/wal", o).expect("a torn tail must open");
        prop_assert_eq!(wal.last_lsn(), written.len() as u64);
        let nonzero = junk.iter().any(|&b| b != 0);
        prop_assert_eq!(wal.recovery_report().truncated.is_some(), nonzero);
        drop(wal);
        let recs = read_dir(&sim, "/wal");
        prop_assert_eq!(recs.len(), written.len());
        for (r, (_, _, p)) in recs.iter().zip(&written) {
            prop_assert_eq!(&r.payload, p);
        }
    }

    #[test]
    fn any_truncation_recovers_exactly_the_whole_batches_before_it(
        bs in batches(),
        cut_frac in 0.0f64..1.0,
    ) {
        let sim = SimStorage::new();
        let o = opts(1 << 20);
        let written = write(&sim, &o, &bs);
        let wal = sim_open(&sim, "/wal", o.clone()).expect("open");
        let seg = last_segment(&wal);
        drop(wal);
        let image = sim.contents(&seg).expect("image");
        let offs = record_offsets(&image, 1024);
        let end = offs.last().map(|(o, s)| o + *s as u64).unwrap_or(64);
        let cut = 64 + ((end - 64) as f64 * cut_frac) as u64;
        sim.truncate(&seg, cut).expect("truncate");
        // Before recovery, a reader that maps the segments sees what one that copies sees.
        let read = |map_segments: bool| {
            let mut r = duplex_wal::WalReader::open(
                std::sync::Arc::new(sim.clone()),
                &["/wal".into()],
                0,
                duplex_wal::ReadOptions { max_record_size: 1024, map_segments, ..Default::default() },
            ).expect("reader");
            let mut out = Vec::new();
            loop {
                match r.next_shared() {
                    Ok(Some(rec)) => out.push(Ok((rec.lsn, rec.kind, rec.payload().to_vec()))),
                    Ok(None) => break,
                    Err(e) => { out.push(Err(e.to_string())); break; }
                }
            }
            (out, r.torn_tail().cloned())
        };
        prop_assert_eq!(read(true), read(false));
        // Records wholly before the cut, then back to the last batch boundary.
        let mut whole = offs.iter().take_while(|(o, s)| o + *s as u64 <= cut).count();
        let mut boundaries = Vec::new();
        let mut n = 0;
        for b in &bs { n += b.len(); boundaries.push(n); }
        while whole > 0 && !boundaries.contains(&whole) { whole -= 1; }
        let wal = sim_open(&sim, "/wal", o).expect("a truncated tail must open");
        prop_assert_eq!(wal.last_lsn(), whole as u64);
        drop(wal);
        let recs = read_dir(&sim, "/wal");
        prop_assert_eq!(recs.len(), whole);
        for (r, (_, _, p)) in recs.iter().zip(&written) {
            prop_assert_eq!(&r.payload, p);
        }
    }

    #[test]
    fn damage_before_the_last_record_is_reported_never_skipped(
        bs in batches(),
        which in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let sim = SimStorage::new();
        let o = opts(1 << 20);
        let written = write(&sim, &o, &bs);
        prop_assume!(written.len() >= 2);
        let wal = sim_open(&sim, "/wal", o.clone()).expect("open");
        let seg = last_segment(&wal);
        drop(wal);
        let image = sim.contents(&seg).expect("image");
        let offs = record_offsets(&image, 1024);
        let (off, size) = offs[which.index(offs.len() - 1)];
        let at = off + byte.index(size) as u64;
        sim.corrupt(&seg, at, mask).expect("corrupt");
        match sim_open(&sim, "/wal", o) {
            Err(Error::Corrupt { file, offset, .. }) => {
                prop_assert_eq!(file, seg);
                prop_assert_eq!(offset, off);
            }
            Err(e) => prop_assert!(false, "wrong error {}", e),
            Ok(_) => prop_assert!(false, "damage at {} in record at {} was not reported", at, off),
        }
    }
}
