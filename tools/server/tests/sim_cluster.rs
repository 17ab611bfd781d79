//! A deterministic simulation of several servers (issue 13): three databases on simulated
//! storage (`SimStorage`: unsynced writes lost or torn at a crash), simulated time (a clock
//! per node, skewed when the model says so), and a simulated network carrying the real
//! peer-link state machines (`net::peer::link`'s `Sender` and `Receiver`, every frame
//! encoded and decoded by the real codec) with drops, delays, duplicated frames on
//! reconnect, partitions and heals, crashes (power loss) and restarts, clients writing on
//! every live server; and, as `sim::Model` selects, destroyed disks rebuilt from a peer,
//! clock skew, clients switching servers with session tokens, I/O errors and small memory
//! bounds (`sim::faults`). All of it is driven by one seed: the same seed gives the same
//! run, byte for byte (checked).
//!
//! Invariants, at the end (after the network heals and the load stops): every server has
//! the same stamped digest; for every key the version every server holds is the winner
//! (greatest stamp) of the versions acknowledged to clients (nothing acknowledged is lost:
//! the servers sync every write and a crash loses only what was not yet acknowledged); no
//! batch of an origin is logged twice in any server's WAL; each batch applied exactly once
//! on every other server (counted). Throughout: no panic, each optional part's own
//! invariant (`sim::faults`), memory within its bounds.
//!
//! `cargo test -p duplex-server --test sim_cluster` runs a fixed set of seeds. A failing
//! seed prints the command that replays it:
//! `DUPLEX_SIM_SEED=<seed> cargo test -p duplex-server --test sim_cluster -- --nocapture`
//! (a campaign seed: with `DUPLEX_SIM_FROM`, `DUPLEX_SIM_SEEDS=1`, `DUPLEX_SIM_MODEL`).
//! A long campaign: `DUPLEX_SIM_SEEDS=<n> cargo test --release -p duplex-server --test
//! sim_cluster campaign -- --ignored --nocapture`.

mod sim;

use std::collections::BTreeMap;

use sim::check::replay_hint;
use sim::{run, run_for, run_with, Model};

fn seeds() -> Vec<u64> {
    match std::env::var("DUPLEX_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => vec![1, 2, 3, 4],
    }
}

#[test]
fn three_servers_converge_under_faults_and_lose_nothing_acknowledged() {
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in seeds() {
        let (_, faults) = run(seed);
        for (k, v) in faults {
            *total.entry(k).or_default() += v;
        }
    }
    println!("faults injected: {total:?}");
    for f in ["power loss", "partition", "connection dropped"] {
        assert!(
            total.get(f).copied().unwrap_or(0) > 0,
            "the seeds never injected {f}: {total:?}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let seed = seeds()[0];
    assert_eq!(run(seed).0, run(seed).0, "{}", replay_hint(seed));
}

/// Each mutation of the engine is caught by some seed of the fixed set: the simulation can
/// fail. (Mutations are process-wide: this test runs them one after the other in a child
/// process of its own, so the other tests never see one.)
#[test]
fn the_simulation_catches_a_broken_engine() {
    use duplex_engine::testing::Mutation;
    let Ok(which) = std::env::var("DUPLEX_SIM_MUTATION") else {
        for m in [
            "apply-twice",
            "echo-remote",
            "drop-tombstones",
            "forget-marks",
        ] {
            let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "the_simulation_catches_a_broken_engine",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("DUPLEX_SIM_MUTATION", m)
                .output()
                .expect("run the child");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(&format!("caught {m}")),
                "mutation {m} was not caught:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        return;
    };
    let m = match which.as_str() {
        "apply-twice" => Mutation::ApplyTwice,
        "echo-remote" => Mutation::EchoRemote,
        "drop-tombstones" => Mutation::DropTombstones,
        "forget-marks" => Mutation::ForgetMarks,
        other => panic!("unknown mutation {other}"),
    };
    duplex_engine::testing::set_mutation(m);
    std::panic::set_hook(Box::new(|_| {}));
    for seed in seeds() {
        // A shorter load: a broken engine fails fast, and an echoing feed is slow.
        if std::panic::catch_unwind(|| run_for(seed, 400)).is_err() {
            println!("caught {which} with seed {seed}");
            return;
        }
    }
    println!("missed {which}");
}

/// A destroyed disk, the server rebuilt from a peer's backup (restore, roll-forward,
/// adopt) while the others keep writing, taking back its own batches that survivors hold
/// beyond the rebuilt state's base; a survivor below the base gets the rest of the earlier
/// incarnation forwarded before the new one.
#[test]
fn a_destroyed_disk_rebuilt_from_a_peer_converges() {
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    let one_seed = std::env::var("DUPLEX_SIM_SEED").is_ok();
    let mut set = seeds();
    if !one_seed {
        // Regressions found by campaigns: 1053, a survivor that restarted must forward a
        // rebuilt origin's earlier batches from its log; 1111, nobody holds them any more,
        // the server below the base turns needs-rebuild and is rebuilt (since the marks
        // are refreshed on heartbeats, 1198 is the seed that strands a server); 1356, a
        // survivor told a peer's mark only when the link opened never forwarded the rest;
        // 1524, a rebuild whose source held none of the lost server's batches (the empty
        // base) while another survivor held some: they must be given back.
        set.extend([1053, 1111, 1198, 1356, 1524]);
    }
    for seed in set {
        let (_, faults) = run_with(
            seed,
            1500,
            Model {
                destroy: true,
                ..Model::default()
            },
        );
        for (k, v) in faults {
            *total.entry(k).or_default() += v;
        }
    }
    println!("faults injected: {total:?}");
    if !one_seed {
        // (The needs-rebuild outcome, a node stranded below a rebuilt origin's base, was
        // reached by seed 1198 while survivors released the WAL holding other origins'
        // batches; since checkpoints keep it for the peers that lack them, within
        // `peer_wal_retention_bytes`, no seed of the campaigns strands a node: the engine
        // test `a_restarted_survivor_forwards_from_its_log_and_a_peer_nobody_can_serve_is_stranded`
        // and the multi-process `tests/stranded.rs` cover it. The harness still checks
        // every tick that no node is flagged without really being below the base.)
        for f in ["destroyed disk, rebuilt from a peer", "batches taken back"] {
            assert!(
                total.get(f).copied().unwrap_or(0) > 0,
                "the seeds never saw {f}: {total:?}"
            );
        }
    }
}

/// The whole fault model at once: destroyed disks and rebuilds, clocks skewed within and
/// beyond `max_clock_offset_ms`, clients that switch servers and read their own writes with
/// a session token, EIO on WAL writes and fsyncs (poisoned: nothing acknowledged after),
/// full disks (refused cleanly), and memory checked against its bounds every tick; half
/// the seeds with 64 KiB of forwarding memory; every node archiving its WAL. Each part must
/// have happened, and its invariant held (the checks panic inside the run otherwise).
#[test]
fn the_whole_fault_model_keeps_every_invariant() {
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    let one_seed = std::env::var("DUPLEX_SIM_SEED").is_ok();
    let mut set: Vec<(u64, Model)> = seeds()
        .into_iter()
        .map(|s| (s, Model::all(s.is_multiple_of(2))))
        .collect();
    if !one_seed {
        // Regressions found by campaigns, each in the model it was found with: 1306
        // (without the archive), a survivor that restarted and released the WAL holding a
        // lost server's batches another survivor lacked (the give-back window):
        // checkpoints now keep other origins' batches peers lack; 1013, a `.partial`
        // archive copy whose fsync failed was renamed complete without another (a hole in
        // archive plus WAL after the power loss).
        set.push((
            1306,
            Model {
                archive: false,
                ..Model::all(true)
            },
        ));
        set.push((1013, Model::all(false)));
    }
    for (seed, model) in set {
        let (_, faults) = run_with(seed, 1500, model);
        for (k, v) in faults {
            *total.entry(k).or_default() += v;
        }
    }
    println!("faults injected: {total:?}");
    if one_seed {
        return;
    }
    for f in [
        "clock skewed within the bound",
        "clock skewed beyond the bound",
        "clock skew refused",
        "session read its own write after the switch",
        "... which a read without the token would have missed",
        "log poisoned by an I/O error",
        "restarted after an I/O error",
        "write refused for want of space",
        "space freed",
        "conflict entries dropped by the bound",
        "concurrent overwrites accounted for",
        "destroyed disk, rebuilt from a peer",
    ] {
        assert!(
            total.get(f).copied().unwrap_or(0) > 0,
            "the seeds never saw {f}: {total:?}"
        );
    }
}

/// A long campaign over seeds from `DUPLEX_SIM_FROM` (default 1000): every part of the
/// fault model, half the seeds with small forwarding memory.
#[test]
#[ignore = "a long campaign: DUPLEX_SIM_SEEDS=<n>"]
fn campaign() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (n, from) = (var("DUPLEX_SIM_SEEDS", 100), var("DUPLEX_SIM_FROM", 1000));
    let start = std::time::Instant::now();
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in from..from + n {
        let model = campaign_model(seed);
        let (_, faults) = match std::panic::catch_unwind(|| run_with(seed, 1500, model)) {
            Ok(r) => r,
            Err(e) => {
                // Whatever failed (a check, or a panic elsewhere), name the seed.
                eprintln!(
                    "campaign seed {seed} failed after {} passed\n{}",
                    seed - from,
                    sim::check::replay_hint_for(seed, model)
                );
                std::panic::resume_unwind(e);
            }
        };
        for (k, v) in faults {
            *total.entry(k).or_default() += v;
        }
    }
    println!(
        "campaign: {n} seeds ({from}..{}) passed in {:.0} s\nfaults: {total:#?}",
        from + n,
        start.elapsed().as_secs_f64()
    );
}

/// The campaign's model for `seed`: every part (small memory on even seeds), or the parts
/// `DUPLEX_SIM_MODEL` names (comma-separated: destroy, skew, sessions, io, small,
/// archive).
fn campaign_model(seed: u64) -> Model {
    let Ok(parts) = std::env::var("DUPLEX_SIM_MODEL") else {
        return Model::all(seed.is_multiple_of(2));
    };
    let has = |p: &str| parts.split(',').any(|x| x.trim() == p);
    Model {
        destroy: has("destroy"),
        skew: has("skew"),
        sessions: has("sessions"),
        io_errors: has("io"),
        small_memory: has("small"),
        archive: has("archive"),
    }
}
