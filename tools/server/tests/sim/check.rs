//! The invariants checked at the end of a seed, and what a failing seed prints.

use std::path::Path;
use std::sync::Arc;

use duplex_wal::sim::SimStorage;
use duplex_wal::Storage;

use super::world::{World, DB_DIR};
use super::Model;

/// The command that replays `seed` of the fixed set.
pub fn replay_hint(seed: u64) -> String {
    format!("replay: DUPLEX_SIM_SEED={seed} cargo test -p duplex-server --test sim_cluster -- --nocapture")
}

/// The command that replays `seed` under `model`: the fixed set's for the models its
/// tests use, else the campaign's, naming the model's parts.
pub fn replay_hint_for(seed: u64, model: Model) -> String {
    let plain = Model::default();
    if model == plain
        || model
            == (Model {
                destroy: true,
                ..plain
            })
    {
        return replay_hint(seed);
    }
    let parts: Vec<&str> = [
        (model.destroy, "destroy"),
        (model.skew, "skew"),
        (model.sessions, "sessions"),
        (model.io_errors, "io"),
        (model.small_memory, "small"),
        (model.archive, "archive"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    format!(
        "replay: DUPLEX_SIM_FROM={seed} DUPLEX_SIM_SEEDS=1 DUPLEX_SIM_MODEL={} cargo test --release -p duplex-server --test sim_cluster campaign -- --ignored --nocapture",
        parts.join(",")
    )
}

pub fn describe(w: &World) -> String {
    let mut out = String::new();
    for n in &w.nodes {
        if let Some(db) = n.db.as_ref() {
            out += &format!(
                "node {}: durable {} origins {:?}\n",
                n.id,
                db.durable_position(),
                db.origins()
                    .iter()
                    .map(|(o, s)| (*o, s.hwm))
                    .collect::<Vec<_>>()
            );
        }
    }
    let mut shown = 0;
    for key in w.acked.keys() {
        let vs: Vec<_> = w
            .nodes
            .iter()
            .map(|n| {
                n.db.as_ref()
                    .and_then(|d| d.version(key).ok().flatten())
                    .map(|v| (v.stamp.ts.0, v.stamp.origin, v.value))
            })
            .collect();
        if vs.windows(2).any(|p| p[0] != p[1]) && shown < 5 {
            shown += 1;
            out += &format!(
                "key {}: {:?} acked {:?}\n",
                String::from_utf8_lossy(key),
                vs,
                w.acked[key]
            );
        }
    }
    // Where node 1's batches after the marks went.
    for n in &w.nodes {
        let st: Arc<dyn Storage> = Arc::new(n.sim.clone());
        if let Ok(mut r) = duplex_wal::WalReader::open(
            st,
            &[Path::new(DB_DIR).join("wal")],
            0,
            duplex_wal::ReadOptions::default(),
        ) {
            let mut recs = Vec::new();
            while let Ok(Some(rec)) = r.next_record() {
                if let Ok(b) = duplex_engine::batch::decode_batch(&rec.payload, 4096, 16 << 20) {
                    if b.stamp.origin == 1 {
                        recs.push((rec.lsn, b.origin_lsn, b.stamp.ts.0));
                    }
                }
            }
            let tail: Vec<_> = recs.iter().rev().take(4).collect();
            out += &format!(
                "node {} wal: first {:?} last origin-1 records {:?}\n",
                n.id,
                recs.first(),
                tail
            );
        }
    }
    for l in &w.links {
        out += &format!(
            "link {}->{}: connected {} last error {:?}\n",
            l.from + 1,
            l.to + 1,
            l.conn.is_some(),
            l.last_error
        );
    }
    out
}

pub fn check(w: &World, seed: u64, converged: bool) {
    let hint = replay_hint_for(seed, w.model);
    if !converged {
        println!("{}", describe(w));
    }
    assert!(
        converged,
        "seed {seed}: the servers never converged: {:?}\n{hint}",
        w.digests()
    );
    for (key, versions) in &w.acked {
        let winner = versions
            .iter()
            .max_by(|a, b| (a.0.ts, a.0.origin).cmp(&(b.0.ts, b.0.origin)))
            .expect("one version");
        for n in &w.nodes {
            let db = n.db.as_ref().expect("up");
            let got = db.version(key).expect("version");
            let (stamp, value) = got.map(|v| (v.stamp, v.value)).unwrap_or_default();
            // A write whose outcome was unknown (a fatal I/O error) that survived the
            // restart may be newer than every acknowledged one.
            let unknown_newer = (stamp.ts, stamp.origin) > (winner.0.ts, winner.0.origin)
                && w.unknown_versions
                    .get(key)
                    .is_some_and(|u| u.iter().any(|(o, v)| *o == stamp.origin && *v == value));
            if unknown_newer {
                continue;
            }
            assert_eq!(
                (stamp, &value),
                (winner.0, &winner.1),
                "seed {seed}: node {} holds {:?} of {}, not the winner of the acknowledged versions\n{hint}",
                n.id,
                value.as_deref().map(String::from_utf8_lossy),
                String::from_utf8_lossy(key)
            );
        }
    }
    for n in &w.nodes {
        no_batch_logged_twice(&n.sim, n.id, seed, &hint);
        if w.rebuilt.contains(&n.id) {
            continue;
        }
        for (&o, stamps) in &w.written {
            let written = stamps.len() as u64;
            if o == n.id {
                continue;
            }
            let applied = w.applied.get(&(n.id, o)).copied().unwrap_or(0);
            let exempt = w.exempt.get(&(n.id, o)).copied().unwrap_or(0);
            let given = w.given.get(&o).copied().unwrap_or(0);
            // Outcome unknown: an apply that failed here may have been logged without
            // being counted; a write that failed on the origin may have survived and come.
            let missed = w.unknown_applies.get(&(n.id, o)).copied().unwrap_or(0);
            let extra = w.unknown_writes.get(&o).copied().unwrap_or(0);
            if missed + extra > 0 {
                let low = written.saturating_sub(exempt + missed);
                let high = written + given + extra;
                assert!(
                    (low..=high).contains(&applied),
                    "seed {seed}: node {} applied {applied} batches of origin {o}, outside {low}..={high} (I/O errors left {missed} applies and {extra} writes of unknown outcome; written {written}, exempt {exempt}, given {given})\n{hint}",
                    n.id,
                );
                continue;
            }
            if w.rebuilt.contains(&o) && given > 0 {
                // A survivor that forwarded an original before it learnt of the rebuild
                // may make this server apply both it and the rebuilt origin's copy (same
                // stamp and value: the second changes nothing); at most once each.
                assert!(
                    (written - exempt..=written + given).contains(&applied),
                    "seed {seed}: node {} applied {applied} batches of rebuilt origin {o}, outside {}..={}\n{hint}",
                    n.id,
                    written - exempt,
                    written + given
                );
                continue;
            }
            let written = written - exempt;
            assert_eq!(
                applied, written,
                "seed {seed}: node {} applied {applied} batches of origin {o}, which wrote {written}: each must be applied exactly once\n{hint}",
                n.id
            );
        }
    }
}

/// Each (origin, position) of another origin appears at most once in the node's WAL.
pub fn no_batch_logged_twice(sim: &SimStorage, node: u64, seed: u64, hint: &str) {
    let s: Arc<dyn Storage> = Arc::new(sim.clone());
    let mut r = duplex_wal::WalReader::open(
        s,
        &[Path::new(DB_DIR).join("wal")],
        0,
        duplex_wal::ReadOptions::default(),
    )
    .expect("reader");
    let mut seen = std::collections::BTreeSet::new();
    while let Some(rec) = r.next_record().expect("record") {
        if rec.kind != duplex_engine::batch::KIND_BATCH {
            continue;
        }
        let b = duplex_engine::batch::decode_batch(&rec.payload, 4096, 16 << 20).expect("batch");
        if b.stamp.origin != node {
            assert!(
                seen.insert((b.stamp.origin, b.origin_lsn)),
                "seed {seed}: node {node} logged origin {} position {} twice\n{}",
                b.stamp.origin,
                b.origin_lsn,
                hint
            );
        }
    }
}
