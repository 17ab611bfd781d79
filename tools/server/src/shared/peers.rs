//! What the peer links report, shared between their threads and the commands that show it
//! (`INFO replication`, `DUPLEX.PEERS`): one [`PeerStatus`] per `--peer` address (the
//! outbound link that sends this server's batches there) and one [`InboundStatus`] per
//! origin whose batches arrive here, with its commit-to-applied lag histogram
//! ([`LagHistogram`]). Written only by the link threads, through methods.

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
    /// The peer's marks of other origins, as it told them on the current connection
    /// (empty until it did): checkpoints keep the WAL holding what it lacks.
    pub marks: std::collections::BTreeMap<u64, u64>,
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
    /// Commit-to-applied lag of its batches applied here since start (all connections).
    pub lag: LagHistogram,
    /// Which connection is current (a newer one from the same origin replaces it).
    generation: u64,
}

/// Exact buckets below this many ms; above it, [`SUB_BUCKETS`] per power of two.
const EXACT_MS: u64 = 4;
/// Buckets per power of two above [`EXACT_MS`] (a bucket spans at most a quarter of its
/// lower bound: a quantile is reported at most 25% high, never low).
const SUB_BUCKETS: u64 = 4;

/// A bounded histogram of lags in milliseconds (since start): exact buckets for 0-3 ms,
/// then four buckets per power of two (4-4, 5-5, ... 8-9, 10-11, 12-13, 14-15, 16-19, ...),
/// plus the exact maximum. At most 252 buckets whatever the values; a quantile is the
/// upper bound of the bucket it falls in, capped at the maximum, so it never understates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagHistogram {
    /// Samples per bucket (grown on demand up to the bucket of the largest sample).
    buckets: Vec<u64>,
    /// Samples recorded.
    count: u64,
    /// The largest sample.
    max: u64,
}

impl LagHistogram {
    /// The bucket of `ms`.
    fn bucket(ms: u64) -> usize {
        if ms < EXACT_MS {
            return ms as usize;
        }
        let e = u64::from(63 - ms.leading_zeros()); // floor(log2 ms), >= 2
        let sub = (ms >> (e - 2)) & (SUB_BUCKETS - 1);
        (EXACT_MS + (e - 2) * SUB_BUCKETS + sub) as usize
    }

    /// The largest value bucket `i` holds.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < EXACT_MS {
            return i;
        }
        let e = (i - EXACT_MS) / SUB_BUCKETS + 2;
        let sub = (i - EXACT_MS) % SUB_BUCKETS;
        let width = 1u64 << (e - 2);
        ((SUB_BUCKETS + sub) << (e - 2)).saturating_add(width - 1)
    }

    /// Records one lag of `ms` milliseconds.
    pub fn record(&mut self, ms: u64) {
        let b = Self::bucket(ms);
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += 1;
        self.count += 1;
        self.max = self.max.max(ms);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest sample (0 when none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `q` quantile (0 < q <= 1): the upper bound of the bucket holding the sample of
    /// rank ceil(q * count), capped at the maximum; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max));
            }
        }
        Some(self.max)
    }
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
    /// Per origin, the position of the last batch of its own that arrived on its link
    /// (checked frames in hand, not yet applied): the write hold's release waits for it.
    received: Mutex<BTreeMap<u64, u64>>,
}

impl PeerTable {
    /// Notes that origin `origin`'s own batches up to position `pos` arrived on its link.
    pub fn note_received(&self, origin: u64, pos: u64) {
        let mut r = self.received.lock();
        let e = r.entry(origin).or_insert(0);
        *e = (*e).max(pos);
    }

    /// The position of the last own batch of `origin` that arrived on its link (0: none).
    pub fn received(&self, origin: u64) -> u64 {
        self.received.lock().get(&origin).copied().unwrap_or(0)
    }

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
    fn lag_buckets_are_contiguous_and_tight() {
        // Every value falls in a bucket whose upper bound is >= it and at most 25% above
        // it (exact below 4 ms), and bucket bounds follow each other without a gap.
        for ms in (0..5_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let b = LagHistogram::bucket(ms);
            let up = LagHistogram::upper(b);
            assert!(up >= ms, "{ms} in bucket {b} up to {up}");
            assert!(up - ms <= ms / 4, "{ms} in bucket {b} up to {up}");
            if b > 0 {
                assert!(
                    ms > LagHistogram::upper(b - 1),
                    "{ms} belongs below bucket {b}"
                );
            }
        }
        for b in 1..252 {
            assert!(LagHistogram::upper(b) > LagHistogram::upper(b - 1));
        }
        assert_eq!(
            LagHistogram::bucket(u64::MAX),
            251,
            "bounded: 252 buckets at most"
        );
        assert_eq!(
            (4..=20).map(LagHistogram::bucket).collect::<Vec<_>>(),
            [4, 5, 6, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 12, 12, 13]
        );
    }

    #[test]
    fn lag_quantiles_come_from_the_samples() {
        let mut h = LagHistogram::default();
        assert_eq!((h.quantile(0.5), h.max(), h.count()), (None, 0, 0));
        // 98 samples of 1 ms, one of 9 ms, one of 1000 ms.
        for _ in 0..98 {
            h.record(1);
        }
        h.record(9);
        h.record(1000);
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Some(1));
        assert_eq!(h.quantile(0.98), Some(1));
        assert_eq!(h.quantile(0.99), Some(9), "bucket 8-9: its upper bound");
        assert_eq!(h.quantile(1.0), Some(1000), "capped at the maximum");
        assert_eq!(h.max(), 1000);
        // Bucket 768-895 holds 800: the quantile is its upper bound.
        let mut g = LagHistogram::default();
        g.record(800);
        g.record(2000);
        assert_eq!(g.quantile(0.5), Some(895));
        assert_eq!(g.quantile(0.99), Some(2000));
        // A single sample: every quantile is it (capped at the maximum).
        let mut one = LagHistogram::default();
        one.record(37);
        assert_eq!(
            (one.quantile(0.5), one.quantile(0.99)),
            (Some(37), Some(37))
        );
        one.record(0);
        assert_eq!(one.quantile(0.5), Some(0));
    }

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
