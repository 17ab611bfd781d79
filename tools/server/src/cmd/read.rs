//! GET, MGET and EXISTS: answered from one snapshot per run of consecutive reads, taken
//! after the connection's earlier writes were applied (so a connection reads its writes).

use duplex_engine::Snapshot;
use duplex_proto::{array_len, bulk, integer, null_bulk};

use super::{check, engine_err, Cmd};
use crate::shared::Shared;

/// Answers the run of reads at the front of `reqs` (the first is known to be one) from one
/// snapshot, stopping before the next read once `out` holds more than `budget` bytes;
/// returns how many requests it answered (at least one).
pub fn read_run(sh: &Shared, reqs: &[Vec<&[u8]>], out: &mut Vec<u8>, budget: usize) -> usize {
    let snap = sh.db().snapshot();
    let mut n = 0;
    for r in reqs {
        if n > 0 && out.len() > budget {
            break;
        }
        match check(r) {
            Ok((c, _)) if c.is_read() => read(&snap, c, r, out),
            _ => break,
        }
        n += 1;
    }
    n
}

/// Answers one GET, MGET or EXISTS from `snap`.
pub fn read(snap: &Snapshot, c: Cmd, args: &[&[u8]], out: &mut Vec<u8>) {
    match c {
        Cmd::Get => match snap.get(args[1]) {
            Ok(Some(v)) => bulk(out, &v),
            Ok(None) => null_bulk(out),
            Err(e) => engine_err(out, &e),
        },
        Cmd::MGet => {
            let mut vals = Vec::with_capacity(args.len() - 1);
            for k in &args[1..] {
                match snap.get(k) {
                    Ok(v) => vals.push(v),
                    Err(e) => return engine_err(out, &e),
                }
            }
            array_len(out, vals.len());
            for v in vals {
                match v {
                    Some(v) => bulk(out, &v),
                    None => null_bulk(out),
                }
            }
        }
        _ => {
            let mut n = 0;
            for k in &args[1..] {
                match snap.get(k) {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => {}
                    Err(e) => return engine_err(out, &e),
                }
            }
            integer(out, n);
        }
    }
}
