//! The end of a rebuild, after the restored directory is in place and the server runs in
//! state `recovering`: the gap pulled back from the peer that holds it, then the write
//! hold with the backup's peer, `running` on a new epoch, and only then this server's own
//! outbound peer links.

use super::*;
use duplex_proto::peer::HoldEnded;

/// Starts the thread that ends a rebuild (`u`, just installed or found unfinished at
/// start): the write hold with the peer the backup came from, then `running` on a new
/// epoch and the `REBUILDING` marker removed, then this server's outbound peer links
/// (started only now: the peer refuses a second connection from a node whose link is live,
/// and a `recovering` server has no writes of its own to send); the thread joins them at
/// shutdown.
pub fn spawn_hold(sh: Arc<Shared>, u: Unfinished) -> Result<std::thread::JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name("rebuild-hold".into())
        .spawn(move || {
            pull_missing(&sh);
            if !hold_loop(&sh, &u) {
                return;
            }
            match crate::net::peer::PeerLinks::start(&sh) {
                Ok(links) => links.join(),
                Err(e) => {
                    tracing::error!(event = "peer_links_failed", error = %e, "cannot start the peer links after the rebuild: {e}")
                }
            }
        })
        .map_err(Error::Net)
}

/// Before the write hold (state `recovering`, no client writes): when a surviving peer
/// holds more of this node's old updates than the backup source did, pulls them back from
/// it (a RESYNC naming this node as the first frame: the peer sends the batches it holds
/// for forwarding) and applies them as plain versions
/// ([`duplex_engine::Database::apply_own_recovered`]: origin and stamps kept, logged). The
/// gap INFO shows is updated; a failure is logged and leaves the gap reported.
fn pull_missing(sh: &Shared) {
    let Some(mut gap) = sh.rebuild_gap() else {
        return;
    };
    if gap.highest_mark <= gap.recovered_mark {
        return;
    }
    match pull_from(sh, &gap) {
        Ok((n, to)) => {
            gap.after_pull(n, to);
            tracing::info!(event = "rebuild_pulled", peer = %gap.highest_peer, batches = n, recovered_mark = gap.recovered_mark, updates_gone_at_most = ?gap.gone_at_most, "pulled {n} of this node's old updates back from {}; {}", gap.highest_peer, gap.describe());
        }
        Err(e) => {
            tracing::warn!(event = "rebuild_pull_failed", peer = %gap.highest_peer, error = %e, "cannot pull this node's old updates back from {}: {e}; {}", gap.highest_peer, gap.describe());
        }
    }
    sh.set_rebuild_gap(gap);
}

/// One pull from `gap.highest_peer`: (batches applied, the last position applied).
fn pull_from(sh: &Shared, gap: &RebuildGap) -> Result<(u64, u64), String> {
    use duplex_proto::peer::Resync;
    let cfg = sh.cfg();
    let node = cfg.node_id;
    let secret = sh.peers().secret().ok_or("no cluster secret")?;
    let mut c = PeerConn::open(cfg, secret.bytes(), &gap.highest_peer, CONNECT_FOR)?;
    c.send(&Frame::Resync(Resync {
        origin: node,
        last_good_lsn: gap.recovered_mark,
    }))?;
    // The peer's opening ACK of this node comes first; the one after the batches ends.
    let (mut opening, mut n, mut to) = (true, 0u64, gap.recovered_mark);
    loop {
        match c.recv(Instant::now() + HANDSHAKE_TIMEOUT)? {
            Frame::Ack(a) if a.origin == node => {
                if !opening {
                    return Ok((n, to));
                }
                opening = false;
            }
            Frame::Ack(_) => {}
            Frame::Batches(b) if b.origin == node => {
                let remote: Vec<duplex_engine::RemoteBatch<'_>> = b
                    .batches
                    .iter()
                    .map(|x| duplex_engine::RemoteBatch {
                        origin_lsn: x.origin_lsn,
                        prev_origin_lsn: x.prev_origin_lsn,
                        stamp: x.stamp,
                        payload: &x.payload,
                    })
                    .collect();
                let (k, refused) = sh
                    .db()
                    .apply_own_recovered(&remote)
                    .map_err(|e| format!("applying pulled batches: {e}"))?;
                if let Some(last) = k.checked_sub(1).and_then(|i| b.batches.get(i)) {
                    to = last.origin_lsn;
                }
                n += k as u64;
                if let Some(r) = refused {
                    return Err(format!("a pulled batch was refused ({n} applied): {r}"));
                }
            }
            Frame::Error(e) => {
                return Err(format!("the peer reported {:?}: {}", e.code, e.message))
            }
            other => return Err(format!("the peer sent {} during the pull", other.kind())),
        }
    }
}

/// How long the batches up to a hold's cut-off may take to be applied once they arrived.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// How one hold attempt ended.
enum HoldOutcome {
    /// The mark reached the cut-off within the hold; the peer's HOLD_ENDED if it sent one.
    Reached {
        pause: Duration,
        cutoff: u64,
        peer: Option<HoldEnded>,
    },
    /// Not granted (this many batches still to ship) or expired first.
    NotYet(String),
}

/// Asks for the write hold until it succeeds (true) or the server stops (false).
fn hold_loop(sh: &Shared, u: &Unfinished) -> bool {
    let from_node = u.from_node;
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut attempts = 0u32;
    while !sh.stopping() {
        attempts += 1;
        sh.update_rebuild_run(|run| run.hold_attempts = attempts);
        match try_hold(sh, u) {
            Ok(HoldOutcome::Reached {
                pause,
                cutoff,
                peer,
            }) => {
                sh.update_rebuild_run(|run| {
                    run.done = true;
                    run.cutoff = cutoff;
                    run.hold_ms = pause.as_secs_f64() * 1e3;
                    run.catch_up_secs = started.elapsed().as_secs_f64();
                    run.peer_hold = peer;
                });
                let (held, p50, max) = peer.map_or((0, 0.0, 0.0), |h| {
                    (
                        h.writes_held,
                        h.held_p50_us as f64 / 1e3,
                        h.held_max_us as f64 / 1e3,
                    )
                });
                let rec = sh
                    .state()
                    .move_to(&[OpState::Recovering], OpState::Running, true);
                match rec {
                    Ok(Some(r)) => {
                        crate::state::log_epoch(sh.db(), r.epoch);
                        tracing::info!(event = "rebuild_running", from_node, cutoff, epoch = r.epoch, pause_ms = pause.as_secs_f64() * 1e3, writes_held = held, held_p50_ms = p50, held_max_ms = max, attempts, catch_up_secs = started.elapsed().as_secs_f64(), "holds everything node {from_node} held at the cut-off (position {cutoff}); running on epoch {} (write hold {:.1} ms, {held} writes held there, p50 {p50:.1} ms, max {max:.1} ms; {attempts} attempt(s), {:.2} s after start)", r.epoch, pause.as_secs_f64() * 1e3, started.elapsed().as_secs_f64());
                        // Only now: a crash before this resumes the catch-up at the next start.
                        let data = &sh.cfg().data;
                        if let Err(e) = super::marker::remove(data) {
                            tracing::error!(event = "rebuild_marker", error = %e, "the rebuild is finished but its marker stays: {e}; the next start catches up again before running");
                        }
                    }
                    Ok(None) => tracing::warn!(event = "rebuild_hold_state", state = sh.state().get().state.name(), "the write hold succeeded, but the state is no longer recovering: left as it is"),
                    Err(e) => tracing::error!(event = "rebuild_hold_state", error = %e, "cannot persist the state after the write hold: {e}"),
                }
                return true;
            }
            Ok(HoldOutcome::NotYet(why)) | Err(why) => {
                if last_log.elapsed() >= PROGRESS_EVERY {
                    last_log = Instant::now();
                    tracing::info!(event = "rebuild_catching_up", from_node, attempts, why = %why, "recovering: not caught up with node {from_node} yet ({why}); asking again");
                }
            }
        }
        std::thread::sleep(HOLD_RETRY);
    }
    false
}

/// One write hold with the rebuild peer.
fn try_hold(sh: &Shared, u: &Unfinished) -> Result<HoldOutcome, String> {
    let cfg = sh.cfg();
    let (peer, from_node) = (u.peer.as_str(), u.from_node);
    let secret = sh.peers().secret().ok_or("no cluster secret")?;
    let db = sh.db();
    let mut c = PeerConn::open(cfg, secret.bytes(), peer, Duration::ZERO)?;
    let mark = db.origin_hwm(from_node);
    c.send(&Frame::Hold(Hold {
        mark,
        max_ms: HOLD_MS,
    }))?;
    let t0 = Instant::now();
    let held = loop {
        match c.recv(Instant::now() + Duration::from_secs(5))? {
            Frame::Held(h) => break h,
            Frame::Ack(_) => {}
            Frame::Error(e) => {
                return Err(format!("the peer reported {:?}: {}", e.code, e.message))
            }
            other => return Err(format!("the peer sent {} instead of HELD", other.kind())),
        }
    };
    if !held.granted {
        return Ok(HoldOutcome::NotYet(format!(
            "{} of its batches still to ship",
            held.pending
        )));
    }
    // The hold covers the shipping: it is released once every batch up to the cut-off has
    // arrived here (checked frames in hand). Their apply, and its fsync, run after the
    // release, and this server turns running only once they are applied and durable: the
    // peer's clients do not wait for this server's disk.
    let deadline = t0 + Duration::from_millis(u64::from(HOLD_MS));
    let arrived = || sh.peers().received(from_node).max(db.origin_hwm(from_node));
    while arrived() < held.cutoff && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    let shipped = arrived() >= held.cutoff;
    let _ = c.send(&Frame::Release(Release { reached: shipped }));
    let pause = t0.elapsed();
    let applied_by = Instant::now() + APPLY_WAIT;
    while shipped && db.origin_hwm(from_node) < held.cutoff && Instant::now() < applied_by {
        std::thread::sleep(Duration::from_micros(500));
    }
    let reached = db.origin_hwm(from_node) >= held.cutoff;
    // Until the peer closes: it has then ended this connection's status, and this node's
    // outbound link, started next, is not taken for a second live link of the same node.
    let closing = Instant::now() + Duration::from_secs(2);
    let mut peer = None;
    while let Ok(f) = c.recv(closing) {
        if let Frame::HoldEnded(h) = f {
            peer = Some(h);
        }
    }
    if reached {
        Ok(HoldOutcome::Reached {
            pause,
            cutoff: held.cutoff,
            peer,
        })
    } else if shipped {
        Ok(HoldOutcome::NotYet(format!(
            "the batches up to the cut-off arrived but were not applied within {} s",
            APPLY_WAIT.as_secs()
        )))
    } else {
        Ok(HoldOutcome::NotYet(format!(
            "{} batches did not arrive within the {HOLD_MS} ms hold",
            held.pending
        )))
    }
}
