//! What the peer links report, shared between their threads and the commands that show it
//! (`INFO replication`, `DUPLEX.PEERS`): one [`PeerStatus`] per `--peer` address (the
//! outbound link that sends this server's batches there) and one [`InboundStatus`] per
//! origin whose batches arrive here. Written only by the link threads, through methods.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// How recently an inbound connection must have delivered a frame to count as live.
pub const LIVE_MS: u64 = 2_000;

/// Where an outbound link stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Not connected yet, or reconnecting after a failure (with back-off).
    #[default]
    Connecting,
    /// Handshake done; batches flow.
    Up,
    /// The handshake was refused (by either side), with the reason.
    Refused(String),
    /// One side must be rebuilt: what the peer needs is gone, or it holds more than this
    /// server has. Retried slowly; the fix is a rebuild.
    NeedsRebuild,
    /// A clock is beyond `max_clock_offset_ms`; retried slowly until the clocks agree.
    ClockSkew,
    /// Not in this server's `--peer` list: it sends here, this server sends it nothing.
    InboundOnly,
}

impl LinkState {
    /// The word INFO and DUPLEX.PEERS show.
    pub fn word(&self) -> String {
        match self {
            LinkState::Connecting => "connecting".into(),
            LinkState::Up => "up".into(),
            LinkState::Refused(r) => format!("refused: {r}"),
            LinkState::NeedsRebuild => "needs-rebuild".into(),
            LinkState::ClockSkew => "clock-skew".into(),
            LinkState::InboundOnly => "inbound-only".into(),
        }
    }
}

/// One outbound link: this server's batches to the peer at `addr`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// The `--peer` address.
    pub addr: String,
    /// The peer's node id, once a handshake told it.
    pub node: Option<u64>,
    /// Where the link stands.
    pub state: LinkState,
    /// This origin's position the peer acknowledged as durable.
    pub acked: u64,
    /// Batches sent and not yet acknowledged.
    pub lag_batches: u64,
    /// Their payload bytes.
    pub lag_bytes: u64,
    /// Milliseconds since the oldest of them was stamped.
    pub lag_ms: u64,
    /// The last error of the link (kept after it reconnects).
    pub last_error: Option<String>,
    /// Frames sent since start (all connections).
    pub frames_sent: u64,
    /// Batches sent since start (all connections; resends count again).
    pub batches_sent: u64,
    /// Batches of other (silent) origins forwarded to this peer since start.
    pub batches_forwarded: u64,
    /// Connections established since start.
    pub connects: u64,
}

/// One inbound link: an origin's batches arriving here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundStatus {
    /// The address it connected from.
    pub addr: String,
    /// Whether a connection from it is open.
    pub connected: bool,
    /// Its clock minus this server's at its last heartbeat, ms.
    pub skew_ms: Option<i64>,
    /// Frames received on the current connection.
    pub frames: u64,
    /// Resyncs asked of it since start.
    pub resyncs: u64,
    /// Batches of it applied since start.
    pub applied: u64,
    /// Batches of it received again and skipped since start (resends).
    pub duplicates: u64,
    /// Batches of other origins it forwarded here and that were applied, since start.
    pub forwarded: u64,
    /// The last error of its link.
    pub last_error: Option<String>,
    /// When its current connection last delivered a frame (Unix ms).
    pub last_frame_ms: u64,
    /// Which connection is current (a newer one from the same origin replaces it).
    generation: u64,
}

/// The cluster secret: its bytes never appear in a `Debug` output.
#[derive(Clone, Default)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// Wraps the secret's bytes.
    pub fn new(bytes: Vec<u8>) -> ClusterSecret {
        ClusterSecret(bytes)
    }

    /// The bytes, for the handshake's HMAC key.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Every peer link's status, and the cluster secret the links prove.
#[derive(Debug, Default)]
pub struct PeerTable {
    out: Mutex<Vec<PeerStatus>>,
    inbound: Mutex<BTreeMap<u64, InboundStatus>>,
    next_generation: Mutex<u64>,
    secret: Mutex<Option<ClusterSecret>>,
    last_refusal: Mutex<Option<String>>,
}

impl PeerTable {
    /// Sets the cluster secret (at start, from `cluster_secret_file`).
    pub fn set_secret(&self, s: ClusterSecret) {
        *self.secret.lock() = Some(s);
    }

    /// The cluster secret; `None` when this server has none (it accepts no peer).
    pub fn secret(&self) -> Option<ClusterSecret> {
        self.secret.lock().clone()
    }

    /// Notes a refused inbound handshake, for INFO.
    pub fn note_refusal(&self, what: String) {
        *self.last_refusal.lock() = Some(what);
    }

    /// The last refused inbound handshake.
    pub fn last_refusal(&self) -> Option<String> {
        self.last_refusal.lock().clone()
    }

    /// Adds an outbound link to `addr`; returns its index.
    pub fn add_outbound(&self, addr: &str) -> usize {
        let mut o = self.out.lock();
        o.push(PeerStatus {
            addr: addr.to_owned(),
            ..PeerStatus::default()
        });
        o.len() - 1
    }

    /// Changes outbound link `i`.
    pub fn update_outbound(&self, i: usize, f: impl FnOnce(&mut PeerStatus)) {
        if let Some(s) = self.out.lock().get_mut(i) {
            f(s);
        }
    }

    /// Every outbound link, in `--peer` order.
    pub fn outbound(&self) -> Vec<PeerStatus> {
        self.out.lock().clone()
    }

    /// A connection from `origin` came up: it becomes the current one (an older one still
    /// open stops at its next frame). Returns its generation.
    pub fn inbound_begin(&self, origin: u64, addr: &str) -> u64 {
        let gen = {
            let mut g = self.next_generation.lock();
            *g += 1;
            *g
        };
        let mut m = self.inbound.lock();
        let s = m.entry(origin).or_default();
        s.addr = addr.to_owned();
        s.connected = true;
        s.frames = 0;
        s.last_frame_ms = 0;
        s.generation = gen;
        gen
    }

    /// Whether `origin` has an open connection that delivered a frame in the last
    /// `LIVE_MS` (2 s; an idle sender heartbeats every `transfer_interval_ms`): a second
    /// server claiming its node id is refused, while a sender that reconnects after its
    /// old connection went silent replaces it.
    pub fn inbound_live(&self, origin: u64, now_ms: u64) -> bool {
        self.inbound
            .lock()
            .get(&origin)
            .is_some_and(|s| s.connected && now_ms.saturating_sub(s.last_frame_ms) < LIVE_MS)
    }

    /// Whether connection `gen` is still the current one of `origin`.
    pub fn inbound_current(&self, origin: u64, gen: u64) -> bool {
        self.inbound
            .lock()
            .get(&origin)
            .is_some_and(|s| s.generation == gen)
    }

    /// Changes the status of `origin`'s connection `gen`, if it is still current.
    pub fn update_inbound(&self, origin: u64, gen: u64, f: impl FnOnce(&mut InboundStatus)) {
        if let Some(s) = self.inbound.lock().get_mut(&origin) {
            if s.generation == gen {
                f(s);
            }
        }
    }

    /// Connection `gen` of `origin` closed (with `error`, if any).
    pub fn inbound_end(&self, origin: u64, gen: u64, error: Option<String>) {
        self.update_inbound(origin, gen, |s| {
            s.connected = false;
            if error.is_some() {
                s.last_error = error;
            }
        });
    }

    /// Every origin that connected here since start.
    pub fn inbound(&self) -> BTreeMap<u64, InboundStatus> {
        self.inbound.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_inbound_connection_replaces_the_older() {
        let t = PeerTable::default();
        let a = t.inbound_begin(2, "x");
        assert!(t.inbound_current(2, a));
        let b = t.inbound_begin(2, "y");
        assert!(!t.inbound_current(2, a));
        assert!(!t.inbound_live(2, 10_000), "no frame yet");
        t.update_inbound(2, b, |s| s.last_frame_ms = 9_000);
        assert!(t.inbound_live(2, 10_000));
        assert!(!t.inbound_live(2, 11_000), "silent for 2 s");
        t.inbound_end(2, a, Some("old".into()));
        assert!(t.inbound()[&2].connected);
        t.inbound_end(2, b, None);
        assert!(!t.inbound()[&2].connected);
        let i = t.add_outbound("h:1");
        t.update_outbound(i, |s| s.state = LinkState::Up);
        assert_eq!(t.outbound()[0].state.word(), "up");
    }
}
