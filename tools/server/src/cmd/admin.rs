//! The operator's commands: DUPLEX.STATE (allowed before AUTH: clients read it to choose a
//! server), DUPLEX.BACKUP, DUPLEX.CHECKPOINT, DUPLEX.FENCE and DUPLEX.UNFENCE. The peer
//! link's commands will join them here.

use duplex_proto::{array_len, error, integer, simple};

use super::{bulk_str, engine_err, ErrLine};
use crate::shared::Shared;
use crate::state::OpState;

/// DUPLEX.STATE: state, epoch, node id, last LSN, the archive's health (`ok`,
/// `failing` or `off`, see [`crate::health::archive_state`]) and the store scrub's verdict
/// (`ok`, or `damage` once the background scrub found a damaged block: INFO names it).
/// New fields go at the end: clients skip the fields they do not know.
pub fn state(sh: &Shared, out: &mut Vec<u8>) {
    let s = sh.state().get();
    let archive = crate::health::archive_state(
        sh.cfg().archive().is_some(),
        &sh.db().wal().archive_status(),
    );
    let scrub = if sh.db().scrub_status().damage.is_some() {
        "damage"
    } else {
        "ok"
    };
    array_len(out, 12);
    bulk_str(out, "state");
    bulk_str(out, s.state.name());
    bulk_str(out, "epoch");
    integer(out, s.epoch as i64);
    bulk_str(out, "node_id");
    integer(out, s.node_id as i64);
    bulk_str(out, "last_lsn");
    integer(out, sh.db().wal().last_lsn() as i64);
    bulk_str(out, "archive");
    bulk_str(out, archive);
    bulk_str(out, "scrub");
    bulk_str(out, scrub);
}

/// `DUPLEX.BACKUP [name]`: takes a backup now (the caller waits for it).
pub fn backup(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    let name = args.get(1).map(|n| String::from_utf8_lossy(n).into_owned());
    match sh.backup(name.as_deref()) {
        Ok(r) => bulk_str(
            out,
            &format!(
                "dir={} checkpoint_lsn={} bytes_copied={} seconds={:.3}",
                r.dir.display(),
                r.manifest.checkpoint_lsn,
                r.bytes_copied,
                r.seconds
            ),
        ),
        Err(e) => ErrLine::err(format!("backup failed: {e}")).send(out),
    }
}

/// DUPLEX.CHECKPOINT: a checkpoint now.
pub fn checkpoint(sh: &Shared, out: &mut Vec<u8>) {
    match sh.db().checkpoint() {
        Ok(()) => {
            tracing::info!(
                event = "checkpoint",
                lsn = sh.db().stats().checkpoint_lsn,
                "checkpoint on request"
            );
            simple(out, "OK");
        }
        Err(e) => {
            sh.note_write_error(&e);
            engine_err(out, &e);
        }
    }
}

/// DUPLEX.FENCE: refuse writes from now on and raise the epoch (recorded in `STATE`, then
/// logged in the WAL so a restore starts above it); answers the new epoch. A
/// stopping server may be fenced too (it then stays fenced through the stop and the next
/// start).
pub fn fence(sh: &Shared, out: &mut Vec<u8>) {
    let from = [
        OpState::Running,
        OpState::BackingUp,
        OpState::Fenced,
        OpState::Stopping,
    ];
    match sh.state().move_to(&from, OpState::Fenced, true) {
        Ok(Some(r)) => {
            crate::state::log_epoch(sh.db(), r.epoch);
            integer(out, r.epoch as i64)
        }
        Ok(None) => error(
            out,
            &format!(
                "ERR cannot fence a server that is {}",
                sh.state().get().state.name()
            ),
        ),
        Err(e) => error(out, &format!("ERR fenced in memory but not persisted: {e}")),
    }
}

/// DUPLEX.UNFENCE: serve writes again. Lifts `fenced`, and `failed` kept from an earlier
/// run (after the operator has checked the disk); a failure met by this process needs a
/// restart first.
pub fn unfence(sh: &Shared, out: &mut Vec<u8>) {
    let cur = sh.state().get().state;
    if cur == OpState::Failed && sh.failed_here() {
        return error(
            out,
            "ERR this server failed while running (a write, fsync or checkpoint error; the log says which): restart it once the disk is healthy, then DUPLEX.UNFENCE",
        );
    }
    let to = if sh.stopping() {
        OpState::Stopping
    } else {
        OpState::Running
    };
    match sh
        .state()
        .move_to(&[OpState::Fenced, OpState::Failed], to, false)
    {
        Ok(Some(_)) => {
            tracing::warn!(
                event = "unfenced",
                from = cur.name(),
                "lifted by DUPLEX.UNFENCE; serving writes"
            );
            simple(out, "OK");
        }
        Ok(None) => error(
            out,
            &format!(
                "ERR the server is {}, not fenced",
                sh.state().get().state.name()
            ),
        ),
        Err(e) => error(
            out,
            &format!("ERR unfenced in memory but not persisted: {e}"),
        ),
    }
}
