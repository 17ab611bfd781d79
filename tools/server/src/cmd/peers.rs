//! The peer links as a client sees them: `INFO replication` (Redis's `slave0:` style, one
//! `peerN:` line per `--peer`) and `DUPLEX.PEERS` (one flat array of field, value pairs per
//! peer). Both show the same fields, built once by [`rows`], among them the inbound side's
//! commit-to-applied lag quantiles (`lag_p50_ms`, `lag_p99_ms`, `lag_max_ms`, since start),
//! and `needs_rebuild` on the row of a rebuilt origin whose earlier batches this server
//! lacks and no other peer holds (INFO also says `needs_rebuild:yes`).

use std::fmt::Write as _;

use duplex_proto::array_len;

use super::bulk_str;
use crate::shared::{LagHistogram, LinkState, PeerStatus, Shared};

/// One peer's fields, in order: the outbound link (this server's batches there), then the
/// inbound side (its batches here). A server that connected here without being in this
/// server's `--peer` list comes last, with state `inbound-only`.
pub fn rows(sh: &Shared) -> Vec<Vec<(&'static str, String)>> {
    let origins = sh.db().origins();
    let inbound = sh.peers().inbound();
    let one_line = |v: &str| v.replace(['\r', '\n', ','], " ");
    let mut out = sh.peers().outbound();
    for (node, i) in &inbound {
        if !out.iter().any(|p| p.node == Some(*node)) {
            out.push(PeerStatus {
                addr: i.addr.clone(),
                node: Some(*node),
                state: LinkState::InboundOnly,
                ..PeerStatus::default()
            });
        }
    }
    let members: Vec<u64> = out
        .iter()
        .filter_map(|p| p.node)
        .chain([sh.db().node_id()])
        .collect();
    let stranded = sh.db().stranded(&members);
    out.into_iter()
        .map(|p| {
            let needs_rebuild = stranded
                .iter()
                .find(|s| Some(s.origin) == p.node)
                .map_or_else(String::new, stranded_text);
            let o = p
                .node
                .and_then(|n| origins.get(&n))
                .copied()
                .unwrap_or_default();
            let i = p
                .node
                .and_then(|n| inbound.get(&n))
                .cloned()
                .unwrap_or_default();
            vec![
                ("addr", p.addr.clone()),
                ("node", p.node.map_or_else(String::new, |n| n.to_string())),
                ("state", one_line(&p.state.word())),
                ("acked", p.acked.to_string()),
                ("lag_batches", p.lag_batches.to_string()),
                ("lag_bytes", p.lag_bytes.to_string()),
                ("lag_ms", p.lag_ms.to_string()),
                (
                    "skew_ms",
                    i.skew_ms.map_or_else(String::new, |s| s.to_string()),
                ),
                (
                    "last_error",
                    one_line(p.last_error.as_deref().unwrap_or("")),
                ),
                ("frames_sent", p.frames_sent.to_string()),
                ("batches_sent", p.batches_sent.to_string()),
                ("batches_forwarded", p.batches_forwarded.to_string()),
                ("connects", p.connects.to_string()),
                (
                    "inbound",
                    if i.connected { "up" } else { "down" }.to_owned(),
                ),
                ("hwm", o.hwm.to_string()),
                ("applied", i.applied.to_string()),
                ("duplicates", i.duplicates.to_string()),
                ("forwarded_in", i.forwarded.to_string()),
                ("resyncs", i.resyncs.to_string()),
                ("lag_samples", i.lag.count().to_string()),
                ("lag_p50_ms", quantile(&i.lag, 0.50)),
                ("lag_p99_ms", quantile(&i.lag, 0.99)),
                (
                    "lag_max_ms",
                    if i.lag.count() == 0 {
                        String::new()
                    } else {
                        i.lag.max().to_string()
                    },
                ),
                (
                    "inbound_error",
                    one_line(i.last_error.as_deref().unwrap_or("")),
                ),
                ("needs_rebuild", one_line(&needs_rebuild)),
            ]
        })
        .collect()
}

/// Why this server must be rebuilt: it is below a rebuilt origin's base and every other
/// member said it lacks the rest (`Database::stranded`).
fn stranded_text(s: &duplex_engine::Stranded) -> String {
    format!(
        "this server holds node {}'s earlier batches up to position {}, below that node's rebuilt base (incarnation {}), and no other peer holds the rest: rebuild this server",
        s.origin, s.mark, s.incarnation
    )
}

/// A lag quantile for display: empty before the first applied batch.
fn quantile(h: &LagHistogram, q: f64) -> String {
    h.quantile(q).map_or_else(String::new, |v| v.to_string())
}

/// The `# Replication` section of INFO.
pub fn info_section(sh: &Shared, t: &mut String) {
    let rows = rows(sh);
    let _ = write!(
        t,
        "# Replication\r\nrole:duplex\r\nconnected_slaves:0\r\nnode_id:{}\r\ncluster_id:{}\r\nincarnation:{}\r\ndurable_position:{}\r\npeer_wal_dropped:{}\r\npeers:{}\r\n",
        sh.db().node_id(),
        sh.cfg().cluster_id,
        sh.db().incarnation(),
        sh.db().durable_position(),
        u8::from(sh.db().peer_floor_dropped()),
        rows.len()
    );
    let stranded = rows.iter().any(|r| {
        r.iter()
            .any(|(k, v)| *k == "needs_rebuild" && !v.is_empty())
    });
    let _ = write!(
        t,
        "needs_rebuild:{}\r\n",
        if stranded { "yes" } else { "no" }
    );
    for (n, row) in rows.iter().enumerate() {
        let fields: Vec<String> = row.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(t, "peer{n}:{}\r\n", fields.join(","));
    }
    if let Some(r) = sh.peers().last_refusal() {
        let _ = write!(t, "last_refused_peer:{}\r\n", r.replace(['\r', '\n'], " "));
    }
    t.push_str("\r\n");
}

/// `DUPLEX.PEERS`: an array with one flat array of field, value pairs per peer.
pub fn peers_cmd(sh: &Shared, out: &mut Vec<u8>) {
    let rows = rows(sh);
    array_len(out, rows.len());
    for row in rows {
        array_len(out, row.len() * 2);
        for (k, v) in row {
            bulk_str(out, k);
            bulk_str(out, &v);
        }
    }
}
