//! The accepting end of an established peer link ([`Receiver`]), as a pure state machine
//! (see [`super::link`]): it answers the handshake's end with ACK(origin, durable mark),
//! applies each BATCHES frame with [`Database::apply_remote`], and answers ACK with the new
//! mark, plus RESYNC when a batch was refused.

use std::collections::BTreeMap;

use duplex_engine::{Database, ReplError, Timestamp};
use duplex_proto::peer::{Ack, Batches, Frame, Heartbeat, Resync};

use super::link::{frame_origin, remote_batches, LinkError};

/// What a receiver reports about its link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverProgress {
    /// Frames received after the handshake.
    pub frames: u64,
    /// The origin's clock minus this server's at its last heartbeat, ms.
    pub skew_ms: Option<i64>,
    /// Resyncs asked for.
    pub resyncs: u64,
    /// Batches applied on this link.
    pub applied: u64,
    /// Batches received again on this link and skipped (already held).
    pub duplicates: u64,
    /// Batches of other origins forwarded on this link and applied.
    pub forwarded: u64,
}

/// The receiving end of a link: applies one origin's batches.
#[derive(Debug)]
pub struct Receiver {
    origin: u64,
    progress: ReceiverProgress,
    /// The mark a RESYNC asked the sender to resend after: frames already in flight that
    /// start above it are dropped unanswered (each would ask again) until the resend
    /// arrives.
    resync_from: Option<u64>,
    /// Stamps of the link origin's batches the last frame applied (not duplicates, not
    /// forwarded ones): the caller turns them into commit-to-applied lags.
    applied_stamps: Vec<u64>,
    /// The marks of other origins last told the sender (opening ACKs, then refreshed on
    /// heartbeats when they moved): what it forwards depends on them.
    told: BTreeMap<u64, u64>,
}

impl Receiver {
    /// A receiver of `origin`'s batches, and the first ACK to send (its durable mark here).
    pub fn open(db: &Database, origin: u64) -> (Receiver, Frame) {
        let ack = Frame::Ack(Ack {
            origin,
            durable_lsn: db.origin_hwm(origin),
        });
        let r = Receiver {
            origin,
            progress: ReceiverProgress::default(),
            resync_from: None,
            applied_stamps: Vec::new(),
            told: BTreeMap::new(),
        };
        (r, ack)
    }

    /// ACKs of this server's marks of every origin but the link's own and this server's:
    /// what a sender needs to forward only what is missing.
    /// This server's own entry, when it was rebuilt, is its base: the last of its earlier
    /// batches it holds; a peer holding more of them forwards the rest, which it takes
    /// back.
    pub fn other_marks(db: &Database, origin: u64) -> Vec<Frame> {
        db.origins()
            .into_iter()
            .filter(|(o, st)| *o != origin && (*o != db.node_id() || st.hwm > 0))
            .map(|(o, st)| {
                Frame::Ack(Ack {
                    origin: o,
                    durable_lsn: st.hwm,
                })
            })
            .collect()
    }

    /// The origin this link carries.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// Whether a RESYNC was asked and its resend has not arrived yet.
    pub fn resync_pending(&self) -> bool {
        self.resync_from.is_some()
    }

    /// Where the link stands.
    pub fn progress(&self) -> ReceiverProgress {
        self.progress
    }

    /// The stamps of the link origin's batches the last [`Receiver::on_frame`] applied and
    /// made durable, in order (empty after any other frame).
    pub fn applied_stamps(&self) -> &[u64] {
        &self.applied_stamps
    }

    /// Takes one frame from the sender and returns the frames to answer.
    pub fn on_frame(
        &mut self,
        frame: &Frame,
        db: &Database,
        now_ms: u64,
    ) -> Result<Vec<Frame>, LinkError> {
        self.progress.frames += 1;
        self.applied_stamps.clear();
        match frame {
            Frame::Batches(b) if b.origin == self.origin => self.on_batches(b, db),
            Frame::Batches(b) if b.origin != db.node_id() => self.on_forwarded(b, db),
            Frame::Batches(b) => self.on_given_back(b, db),
            Frame::Heartbeat(h) if h.origin == self.origin => self.on_heartbeat(h, db, now_ms),
            Frame::Lacking(l) if l.origin != db.node_id() && l.origin != self.origin => {
                db.note_peer_lacks(self.origin, l.origin, l.after);
                Ok(Vec::new())
            }
            Frame::Error(e) => Err(LinkError::from_peer(e)),
            other => Err(LinkError::Protocol(format!(
                "the sender (node {}) sent {} of origin {:?}: a link carries only its initiator's own batches",
                self.origin,
                other.kind(),
                frame_origin(other)
            ))),
        }
    }

    fn on_batches(&mut self, b: &Batches, db: &Database) -> Result<Vec<Frame>, LinkError> {
        // The origin's own link carries only its current incarnation: a batch of an
        // earlier one (a frame of a process that was replaced) is refused, not applied.
        let current = db.origins().get(&self.origin).map_or(0, |s| s.incarnation);
        if b.batches
            .iter()
            .any(|x| duplex_engine::split_position(x.origin_lsn).0 < current)
        {
            return Err(LinkError::Protocol(format!(
                "node {} sent a batch of an earlier incarnation than its current {current}",
                self.origin
            )));
        }
        if let (Some(mark), Some(first)) = (self.resync_from, b.batches.first()) {
            if first.prev_origin_lsn > mark {
                return Ok(Vec::new());
            }
            self.resync_from = None;
        }
        let held = db.origin_hwm(self.origin);
        let remote = remote_batches(b);
        let rep = db
            .apply_remote(self.origin, &remote)
            .map_err(|e| LinkError::Local(e.to_string()))?;
        self.progress.applied += rep.applied as u64;
        self.progress.duplicates += rep.duplicates as u64;
        // Applied: above what was held, up to the new mark (a refused batch and what
        // follows it are above the mark).
        self.applied_stamps.extend(
            b.batches
                .iter()
                .filter(|x| x.origin_lsn > held && x.origin_lsn <= rep.hwm)
                .map(|x| x.stamp),
        );
        let ack = Frame::Ack(Ack {
            origin: self.origin,
            durable_lsn: rep.hwm,
        });
        match rep.refused {
            None => Ok(vec![ack]),
            Some(e @ ReplError::ClockSkew { .. }) => Err(LinkError::ClockSkew(e.to_string())),
            Some(e @ (ReplError::Behind { .. } | ReplError::SelfOrigin { .. })) => {
                Err(LinkError::NeedsRebuild(e.to_string()))
            }
            Some(e) => {
                tracing::warn!(event = "peer_resync", origin = self.origin, hwm = rep.hwm, error = %e, "asking the peer to resend");
                self.progress.resyncs += 1;
                self.resync_from = Some(rep.hwm);
                let resync = Frame::Resync(Resync {
                    origin: self.origin,
                    last_good_lsn: rep.hwm,
                });
                Ok(vec![ack, resync])
            }
        }
    }

    /// Batches of another origin forwarded by the sender: applied with the same checks;
    /// answered with this server's mark of that origin, and a RESYNC when refused (the
    /// forwarder restarts that origin's chain from the mark). A clock skew is only
    /// reported: the origin's own link deals with it.
    fn on_forwarded(&mut self, b: &Batches, db: &Database) -> Result<Vec<Frame>, LinkError> {
        let remote = remote_batches(b);
        let rep = db
            .apply_remote(b.origin, &remote)
            .map_err(|e| LinkError::Local(e.to_string()))?;
        self.progress.forwarded += rep.applied as u64;
        self.progress.duplicates += rep.duplicates as u64;
        let mut out = vec![Frame::Ack(Ack {
            origin: b.origin,
            durable_lsn: rep.hwm,
        })];
        if let Some(e) = rep.refused {
            tracing::warn!(event = "peer_forward_refused", origin = b.origin, hwm = rep.hwm, error = %e, "a forwarded batch was refused");
            out.push(Frame::Resync(Resync {
                origin: b.origin,
                last_good_lsn: rep.hwm,
            }));
        }
        Ok(out)
    }

    /// This server's own earlier batches, given back by a peer that held more of them than
    /// the backup this server was rebuilt from: taken back, answered with the new base.
    fn on_given_back(&mut self, b: &Batches, db: &Database) -> Result<Vec<Frame>, LinkError> {
        let remote = remote_batches(b);
        let n = db
            .take_back_own(&remote)
            .map_err(|e| LinkError::Protocol(format!("batches given back refused: {e}")))?;
        self.progress.forwarded += n as u64;
        tracing::info!(
            event = "taken_back",
            from = self.origin,
            batches = n,
            "took back own earlier batches a peer held"
        );
        Ok(vec![Frame::Ack(Ack {
            origin: db.node_id(),
            durable_lsn: db.incarnation_base().unwrap_or(0),
        })])
    }

    /// A heartbeat: the clock check, and the lost-tail check: every batch up to
    /// `last_origin_lsn` was sent before it on this stream, so a mark below it (with no
    /// RESYNC pending) means batches went missing.
    fn on_heartbeat(
        &mut self,
        h: &Heartbeat,
        db: &Database,
        now_ms: u64,
    ) -> Result<Vec<Frame>, LinkError> {
        self.note_time(h.stamp, now_ms);
        db.observe_peer_time(h.origin, h.stamp)
            .map_err(|e| LinkError::ClockSkew(e.to_string()))?;
        db.note_origin_incarnation(h.origin, duplex_engine::split_position(h.last_origin_lsn).0);
        let mut out = self.marks_moved(db);
        let hwm = db.origin_hwm(self.origin);
        if h.last_origin_lsn > hwm && self.resync_from.is_none() {
            tracing::warn!(
                event = "peer_resync",
                origin = self.origin,
                hwm,
                sent = h.last_origin_lsn,
                "the peer sent batches this server does not hold: asking it to resend"
            );
            self.progress.resyncs += 1;
            self.resync_from = Some(hwm);
            out.push(Frame::Resync(Resync {
                origin: self.origin,
                last_good_lsn: hwm,
            }));
        }
        Ok(out)
    }

    /// ACKs of this server's marks of other origins that moved since they were last told
    /// on this link (all of them the first time): a sender forwards a rebuilt origin's
    /// earlier batches, or says it lacks them, by the marks it was told, and a mark told
    /// only when the link opened goes stale (found by the simulation, seed 1356: a peer
    /// that got its mark of the rebuilt origin after the link opened was never forwarded
    /// the rest, and waited). Sent with heartbeats.
    fn marks_moved(&mut self, db: &Database) -> Vec<Frame> {
        let mut out = Vec::new();
        for f in Self::other_marks(db, self.origin) {
            if let Frame::Ack(a) = &f {
                if self.told.insert(a.origin, a.durable_lsn) != Some(a.durable_lsn) {
                    out.push(f);
                }
            }
        }
        out
    }

    fn note_time(&mut self, stamp: u64, now_ms: u64) {
        let wall = Timestamp(stamp).wall_ms();
        self.progress.skew_ms = Some(wall as i64 - now_ms as i64);
    }
}
