//! The deterministic simulation's harness (see `sim_cluster.rs`): [`world`] the cluster and
//! its faults, [`faults`] the optional parts of the fault model (clock skew, clients that
//! switch servers, I/O errors, memory bounds), [`rebuild`] a destroyed disk rebuilt from a
//! peer, [`journal`] the conflict journal's accounting, [`check`] the invariants at the end.

pub mod check;
pub mod faults;
pub mod journal;
pub mod rebuild;
pub mod world;

use std::collections::BTreeMap;

use world::{World, NODES};

/// Which parts of the fault model a run uses (the campaign: all of them but small memory,
/// which some seeds add).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Model {
    /// A disk destroyed once per seed, its server rebuilt from a peer.
    pub destroy: bool,
    /// Clocks skewed within and beyond `max_clock_offset_ms`.
    pub skew: bool,
    /// Clients that switch servers and read their own writes with a session token.
    pub sessions: bool,
    /// EIO on WAL writes and fsyncs, full disks.
    pub io_errors: bool,
    /// 64 KiB of backlog and forwarding memory instead of 4 MiB (forwarding falls back to
    /// the log more often).
    pub small_memory: bool,
    /// Each node archives its WAL (`archive_dir`, 1 s of lag), as a production server
    /// does: the change feed and forwarding read what the live WAL released from it.
    pub archive: bool,
}

impl Model {
    /// Every part of the fault model (`small_memory` as asked), the archive included (on
    /// since campaign seed 1013's hole in archive plus WAL was fixed in the WAL's
    /// archiver).
    pub fn all(small_memory: bool) -> Model {
        Model {
            destroy: true,
            skew: true,
            sessions: true,
            io_errors: true,
            small_memory,
            archive: true,
        }
    }
}

/// Runs one seed: a load with faults, then calm until every server agrees (or a bound).
/// Returns the trace hash and the faults injected.
pub fn run(seed: u64) -> (u64, BTreeMap<&'static str, u64>) {
    run_for(seed, 1500)
}

/// [`run`] with `load` ticks of load and faults.
pub fn run_for(seed: u64, load: u64) -> (u64, BTreeMap<&'static str, u64>) {
    run_with(seed, load, Model::default())
}

/// [`run_for`] with the parts of the fault model `model` names.
pub fn run_with(seed: u64, load: u64, model: Model) -> (u64, BTreeMap<&'static str, u64>) {
    let mut w = World::new(seed, model);
    for _ in 0..load {
        w.step(true, false);
    }
    w.partitioned.clear();
    let mut calm_ticks = 0;
    while w.nodes.iter().any(|n| n.db.is_none()) || calm_ticks < 50 {
        w.step(false, true);
        calm_ticks += 1;
    }
    let mut converged = false;
    for i in 0..1500u32 {
        w.step(false, true);
        // An I/O fault armed before the calm may still have its node power-cycled.
        if !i.is_multiple_of(20) || w.nodes.iter().any(|n| n.db.is_none()) {
            continue;
        }
        let d = w.digests();
        if d.iter().all(|x| *x == d[0]) {
            converged = true;
            break;
        }
    }
    while w.nodes.iter().any(|n| n.db.is_none()) {
        w.step(false, true);
    }
    for n in 0..NODES {
        let id = w.nodes[n].id;
        let db = w.nodes[n].db.take().expect("up");
        w.harvest(id, &db);
        w.nodes[n].db = Some(db);
    }
    if std::env::var("DUPLEX_SIM_DEBUG").is_ok() {
        eprintln!("{}", check::describe(&w));
        eprintln!(
            "written {:?}",
            w.written
                .iter()
                .map(|(o, v)| (*o, v.len()))
                .collect::<Vec<_>>()
        );
        eprintln!(
            "applied {:?} exempt {:?} given {:?}",
            w.applied, w.exempt, w.given
        );
    }
    check::check(&w, seed, converged);
    match w.check_journal() {
        Ok((concurrent, missing)) => {
            *w.faults
                .entry("concurrent overwrites accounted for")
                .or_default() += concurrent;
            *w.faults
                .entry("... of them only by entries the bound dropped unread")
                .or_default() += missing;
            *w.faults
                .entry("conflict entries dropped unread")
                .or_default() += w.journal.unseen();
        }
        Err(e) => panic!("seed {seed}: {e}\n{}", check::replay_hint_for(seed, model)),
    }
    for d in w.digests() {
        w.note(d.len() as u64 ^ u64::from_str_radix(&d[..16], 16).unwrap_or(0));
    }
    (w.trace, w.faults.clone())
}
