//! `duplexctl status`: what each server says about itself, gathered in one [`ServerStatus`]
//! per address from `DUPLEX.STATE` (state, epoch, node id, last LSN), `INFO persistence`
//! (archive lag, last backup), `DUPLEX.PEERS` (each peer link and its lag) and
//! `DUPLEX.CONFLICTS 0` (the conflict journal's counters); rendered as an aligned table
//! ([`render_table`]) or JSON ([`to_json`]). A server that cannot be reached or refuses is
//! a row carrying the error, not a failure of the whole command.

use serde_json::{json, Value};

use duplex_proto::Reply;

use crate::exit::ToolError;
use crate::resp::{info_fields, pairs, text, Conn, ConnectOptions};
use crate::text::format_time_ms;

/// One peer link as `DUPLEX.PEERS` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerLink {
    /// The `--peer` address (or the inbound address of an inbound-only peer).
    pub addr: String,
    /// Its node id, once known.
    pub node: String,
    /// The link's state (`up`, `connecting`, `inbound-only`, ...).
    pub state: String,
    /// How far behind the peer is, milliseconds.
    pub lag_ms: String,
    /// How far behind the peer is, batches.
    pub lag_batches: String,
    /// The link's last error, if any.
    pub last_error: String,
}

/// What one server reported, or why it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStatus {
    /// The address asked.
    pub addr: String,
    /// Why the server could not be asked (unreachable, bad password, an error reply);
    /// the fields it did not answer are then empty.
    pub error: Option<String>,
    /// Whether a connection could be made at all (false: the row says UNREACHABLE).
    pub connected: bool,
    /// `running`, `fenced`, `failed`, ...
    pub state: String,
    /// The server's epoch.
    pub epoch: String,
    /// Its node id.
    pub node_id: String,
    /// The last LSN of its WAL.
    pub last_lsn: String,
    /// The archive's health (`ok`, `failing`, `off`).
    pub archive: String,
    /// How far the archive lags behind the WAL, milliseconds (empty when unknown).
    pub archive_lag_ms: String,
    /// When the last backup was taken, ms since the epoch (empty or 0 when none).
    pub last_backup_ms: Option<u64>,
    /// The last backup's directory.
    pub last_backup_dir: String,
    /// The restore drill of the last backup: `none`, `running`, `passed`, `failed` (empty
    /// from a server without drills).
    pub drill: String,
    /// Conflicts journaled since the server started.
    pub conflicts: Option<u64>,
    /// Its peer links.
    pub peers: Vec<PeerLink>,
}

impl ServerStatus {
    /// Whether the server answered everything asked.
    pub fn answered(&self) -> bool {
        self.error.is_none()
    }
}

/// Asks the server at `addr`; never fails: an error becomes the row's `error`, after
/// whatever the server did answer (its state is readable before AUTH).
pub fn fetch(addr: &str, opts: &ConnectOptions) -> ServerStatus {
    let mut s = ServerStatus {
        addr: addr.to_owned(),
        ..ServerStatus::default()
    };
    match Conn::connect(addr, opts) {
        Ok(mut c) => {
            s.connected = true;
            if let Err(e) = fill(&mut c, &mut s, opts) {
                s.error = Some(e.message);
            }
        }
        Err(e) => s.error = Some(e.message),
    }
    s
}

fn fill(c: &mut Conn, s: &mut ServerStatus, opts: &ConnectOptions) -> Result<(), ToolError> {
    let addr = s.addr.clone();
    let st = c.call(&[b"DUPLEX.STATE"])?;
    let st = pairs(&st).ok_or_else(|| bad_reply(&addr, "DUPLEX.STATE"))?;
    let field = |f: &[(String, String)], k: &str| {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    s.state = field(&st, "state");
    s.epoch = field(&st, "epoch");
    s.node_id = field(&st, "node_id");
    s.last_lsn = field(&st, "last_lsn");
    s.archive = field(&st, "archive");
    c.auth(opts)?;
    let info = text(&c.call(&[b"INFO", b"persistence"])?);
    let info = info_fields(&info);
    s.archive_lag_ms = field(&info, "archive_lag_ms");
    s.last_backup_ms = field(&info, "last_backup_time_ms")
        .parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0);
    s.last_backup_dir = field(&info, "last_backup_dir");
    s.drill = field(&info, "drill_status");
    s.peers = parse_peers(&c.call(&[b"DUPLEX.PEERS"])?);
    if let Reply::Array(a) = c.call(&[b"DUPLEX.CONFLICTS", b"0"])? {
        if let Some(Reply::Integer(n)) = a.first() {
            s.conflicts = u64::try_from(*n).ok();
        }
    }
    Ok(())
}

fn bad_reply(addr: &str, cmd: &str) -> ToolError {
    ToolError::operational(format!(
        "{addr} answered {cmd} with an unexpected reply (is it a duplexd of this version?)"
    ))
}

/// The rows of a `DUPLEX.PEERS` reply.
pub fn parse_peers(r: &Reply) -> Vec<PeerLink> {
    let Reply::Array(rows) = r else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(pairs)
        .map(|f| {
            let get = |k: &str| {
                f.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            PeerLink {
                addr: get("addr"),
                node: get("node"),
                state: get("state"),
                lag_ms: get("lag_ms"),
                lag_batches: get("lag_batches"),
                last_error: get("last_error"),
            }
        })
        .collect()
}

/// One peer in a table cell: `127.0.0.1:7380 node 2 up lag 0 ms/0 batches`.
fn peer_cell(p: &PeerLink) -> String {
    let node = if p.node.is_empty() {
        String::new()
    } else {
        format!(" node {}", p.node)
    };
    let mut s = format!(
        "{}{node} {} lag {} ms/{} batches",
        p.addr, p.state, p.lag_ms, p.lag_batches
    );
    if !p.last_error.is_empty() && p.state != "up" {
        s.push_str(&format!(" ({})", p.last_error));
    }
    s
}

const HEADER: [&str; 9] = [
    "SERVER",
    "STATE",
    "EPOCH",
    "NODE",
    "LAST_LSN",
    "ARCHIVE",
    "LAST_BACKUP",
    "CONFLICTS",
    "PEERS",
];

fn cells(s: &ServerStatus) -> Vec<String> {
    match &s.error {
        Some(e) if !s.connected => return vec![s.addr.clone(), format!("UNREACHABLE: {e}")],
        Some(e) if s.state.is_empty() => return vec![s.addr.clone(), format!("ERROR: {e}")],
        Some(e) => {
            return vec![
                s.addr.clone(),
                format!(
                    "{} (epoch {}, node {}) ERROR: {e}",
                    s.state, s.epoch, s.node_id
                ),
            ]
        }
        None => {}
    }
    let archive = match s.archive_lag_ms.as_str() {
        "" => s.archive.clone(),
        lag => format!("{} lag {lag} ms", s.archive),
    };
    let peers = if s.peers.is_empty() {
        "-".to_owned()
    } else {
        s.peers.iter().map(peer_cell).collect::<Vec<_>>().join("; ")
    };
    vec![
        s.addr.clone(),
        s.state.clone(),
        s.epoch.clone(),
        s.node_id.clone(),
        s.last_lsn.clone(),
        archive,
        match (s.last_backup_ms, s.drill.as_str()) {
            (None, _) => "never".into(),
            (Some(ms), "" | "none") => format_time_ms(ms),
            (Some(ms), drill) => format!("{} (drill {drill})", format_time_ms(ms)),
        },
        s.conflicts.map_or_else(|| "?".into(), |n| n.to_string()),
        peers,
    ]
}

/// The rows as an aligned table with a header line. A server that could not be asked
/// fully has a row with its address, what it answered (state, epoch, node) and the error
/// (`UNREACHABLE: ...` when no connection could be made), running past the column widths.
pub fn render_table(rows: &[ServerStatus]) -> String {
    let all: Vec<Vec<String>> = std::iter::once(HEADER.iter().map(|h| (*h).to_owned()).collect())
        .chain(rows.iter().map(cells))
        .collect();
    let mut widths = vec![0usize; HEADER.len()];
    for r in all.iter().filter(|r| r.len() == HEADER.len()) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    widths[0] = all.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for r in &all {
        let last = r.len() - 1;
        for (i, c) in r.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

/// The rows as a JSON array: one object per server; numbers where the server gave numbers.
pub fn to_json(rows: &[ServerStatus]) -> Value {
    let num = |s: &str| s.parse::<u64>().map_or(Value::Null, Value::from);
    Value::Array(
        rows.iter()
            .map(|s| {
                if let Some(e) = &s.error {
                    return json!({"server": s.addr, "reachable": s.connected, "error": e,
                                  "state": s.state, "epoch": num(&s.epoch),
                                  "node_id": num(&s.node_id)});
                }
                let peers: Vec<Value> = s
                    .peers
                    .iter()
                    .map(|p| {
                        json!({"addr": p.addr, "node": num(&p.node), "state": p.state,
                               "lag_ms": num(&p.lag_ms), "lag_batches": num(&p.lag_batches),
                               "last_error": p.last_error})
                    })
                    .collect();
                json!({
                    "server": s.addr, "reachable": true, "state": s.state,
                    "epoch": num(&s.epoch), "node_id": num(&s.node_id),
                    "last_lsn": num(&s.last_lsn), "archive": s.archive,
                    "archive_lag_ms": num(&s.archive_lag_ms),
                    "last_backup_ms": s.last_backup_ms,
                    "last_backup_time": s.last_backup_ms.map(format_time_ms),
                    "last_backup_dir": s.last_backup_dir,
                    "drill_status": s.drill,
                    "conflicts": s.conflicts, "peers": peers,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ServerStatus> {
        vec![
            ServerStatus {
                addr: "127.0.0.1:7379".into(),
                connected: true,
                state: "running".into(),
                epoch: "2".into(),
                node_id: "1".into(),
                last_lsn: "1234".into(),
                archive: "ok".into(),
                archive_lag_ms: "0".into(),
                last_backup_ms: Some(1000),
                drill: "passed".into(),
                conflicts: Some(3),
                peers: vec![PeerLink {
                    addr: "127.0.0.1:7380".into(),
                    node: "2".into(),
                    state: "up".into(),
                    lag_ms: "0".into(),
                    lag_batches: "0".into(),
                    ..PeerLink::default()
                }],
                ..ServerStatus::default()
            },
            ServerStatus {
                addr: "127.0.0.1:7380".into(),
                error: Some("cannot reach 127.0.0.1:7380: refused".into()),
                ..ServerStatus::default()
            },
        ]
    }

    #[test]
    fn the_table_is_aligned_and_names_unreachable_servers() {
        let t = render_table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("SERVER"));
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(lines[1].find("running"), Some(col), "{t}");
        assert!(lines[1].contains("127.0.0.1:7380 node 2 up lag 0 ms/0 batches"));
        assert!(
            lines[1].contains("1970-01-01T00:00:01Z (drill passed)"),
            "{t}"
        );
        assert!(lines[2].contains("UNREACHABLE: cannot reach"), "{t}");
    }

    #[test]
    fn json_has_numbers_and_reachability() {
        let j = to_json(&sample());
        assert_eq!(j[0]["node_id"], 1);
        assert_eq!(j[0]["reachable"], true);
        assert_eq!(j[0]["peers"][0]["node"], 2);
        assert_eq!(j[0]["drill_status"], "passed");
        assert_eq!(j[1]["reachable"], false);
    }
}
