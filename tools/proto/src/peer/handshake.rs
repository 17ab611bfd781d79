//! The handshake: each side proves it holds the cluster secret, and neither sends it.
//!
//! ```text
//! initiator                                  acceptor
//!   HELLO     (identity, nonce_i)  ------->    checks version, cluster, node id
//!             <-------  CHALLENGE (identity, nonce_a)   or REFUSE
//!   checks the same
//!   PROOF     (mac_i)              ------->    verifies mac_i
//!             <-------  WELCOME   (mac_a)               or REFUSE (wrong secret)
//!   verifies mac_a: Established               Established once WELCOME is sent
//! ```
//!
//! `mac_x = HMAC-SHA256(secret, "duplex peer proof v1" || direction || HELLO payload ||
//! CHALLENGE payload)`, direction 1 for the initiator's proof and 2 for the acceptor's: both
//! nonces, both identities and the cluster id are covered, and a proof cannot be reflected
//! back to the side that made it. The acceptor proves nothing before the initiator has, so
//! a stranger who connects learns no keyed hash. Proofs are compared in constant time
//! (`Mac::verify_slice`). The nonces come from the caller (a fresh random 32 bytes per
//! handshake), so the state machine is deterministic.
//!
//! Invariant: [`Status::Established`] is reached only after a proof made with the same
//! secret over this very exchange has been verified.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::PeerError;
use super::frame::{Frame, Hello, Proof, Refuse, RefuseReason};
use super::{NONCE_LEN, PROTOCOL_VERSION};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: these tags prove nothing outside this handshake.
const PROOF_LABEL: &[u8] = b"duplex peer proof v1";

/// Which end of the connection a handshake runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that connected: sends HELLO and PROOF.
    Initiator,
    /// The side that accepted: sends CHALLENGE and WELCOME.
    Acceptor,
}

impl Role {
    /// The direction byte of this side's proof.
    fn direction(self) -> u8 {
        match self {
            Role::Initiator => 1,
            Role::Acceptor => 2,
        }
    }
}

/// Who this server is, as its HELLO or CHALLENGE announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The cluster; a peer of another cluster is refused.
    pub cluster_id: u64,
    /// This server's node id; a peer claiming it is refused.
    pub node_id: u64,
    /// This server's incarnation of its node id.
    pub incarnation: u64,
    /// This server's fencing epoch.
    pub epoch: u64,
}

/// The peer a handshake established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node id.
    pub node_id: u64,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its fencing epoch.
    pub epoch: u64,
}

/// Which side refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// This side (it sent, or should send, the REFUSE).
    Local,
    /// The peer (it sent a REFUSE).
    Peer,
}

/// A refused handshake: why, who refused, and the message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: RefuseReason,
    /// Who refused.
    pub by: Party,
    /// What the operator should do.
    pub message: String,
}

impl Refusal {
    /// The REFUSE frame that tells the peer.
    pub fn to_frame(&self) -> Frame {
        Frame::Refuse(Refuse::new(self.reason, &self.message))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.by {
            Party::Local => "refused the peer",
            Party::Peer => "refused by the peer",
        };
        write!(f, "{who}: {}: {}", self.reason, self.message)
    }
}

/// Where a handshake stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the peer's next frame.
    InProgress,
    /// Both sides proved the secret: data frames may flow.
    Established(PeerInfo),
    /// One side refused; the connection is to be closed.
    Refused(Refusal),
}

/// The step an unfinished handshake is at.
#[derive(Clone)]
enum Step {
    /// Initiator: HELLO sent, CHALLENGE awaited.
    SentHello,
    /// Initiator: PROOF sent, WELCOME awaited.
    SentProof { challenge: Hello },
    /// Acceptor: HELLO awaited.
    AwaitHello,
    /// Acceptor: CHALLENGE sent, PROOF awaited.
    SentChallenge { hello: Hello },
    /// Established or refused.
    Done,
}

/// One side's handshake state machine. Feed it every frame received ([`Handshake::receive`])
/// and send what it answers, until [`Handshake::status`] is no longer `InProgress`.
#[derive(Clone)]
pub struct Handshake {
    role: Role,
    /// This side's HELLO (initiator) or CHALLENGE (acceptor).
    own: Hello,
    /// HMAC keyed with the cluster secret; cloned for each proof. Holds no copy of the
    /// secret in the clear beyond what HMAC's key schedule keeps.
    mac: HmacSha256,
    step: Step,
    status: Status,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("own", &self.own)
            .field("step", &self.step_name())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Starts the connecting side's handshake; returns it and the HELLO to send.
    /// `nonce` must be fresh random bytes (never reused).
    pub fn initiator(
        local: NodeIdentity,
        secret: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<(Handshake, Frame), PeerError> {
        let hs = Handshake::new(Role::Initiator, local, secret, nonce, Step::SentHello)?;
        let hello = Frame::Hello(hs.own.clone());
        Ok((hs, hello))
    }

    /// Starts the accepting side's handshake, which waits for a HELLO.
    /// `nonce` must be fresh random bytes (never reused).
    pub fn acceptor(
        local: NodeIdentity,
        secret: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Handshake, PeerError> {
        Handshake::new(Role::Acceptor, local, secret, nonce, Step::AwaitHello)
    }

    fn new(
        role: Role,
        local: NodeIdentity,
        secret: &[u8],
        nonce: [u8; NONCE_LEN],
        step: Step,
    ) -> Result<Handshake, PeerError> {
        if secret.is_empty() {
            return Err(PeerError::EmptySecret);
        }
        // HMAC takes a key of any length, so this cannot fail once the key is non-empty.
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| PeerError::EmptySecret)?;
        let own = Hello {
            protocol: PROTOCOL_VERSION,
            cluster_id: local.cluster_id,
            node_id: local.node_id,
            incarnation: local.incarnation,
            epoch: local.epoch,
            nonce,
        };
        Ok(Handshake {
            role,
            own,
            mac,
            step,
            status: Status::InProgress,
        })
    }

    /// Which side this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the handshake stands.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The peer, once established.
    pub fn peer(&self) -> Option<PeerInfo> {
        match &self.status {
            Status::Established(p) => Some(*p),
            _ => None,
        }
    }

    /// The HELLO or CHALLENGE the peer sent, while the handshake awaits its proof: the
    /// server may check the node id against its membership or its open links and
    /// [`Handshake::refuse`] instead of sending what `receive` answered.
    pub fn peer_hello(&self) -> Option<&Hello> {
        match &self.step {
            Step::SentProof { challenge } => Some(challenge),
            Step::SentChallenge { hello } => Some(hello),
            _ => None,
        }
    }

    /// Takes one received frame. `Ok(Some(frame))`: send it (a CHALLENGE, PROOF, WELCOME or
    /// REFUSE), then look at [`Handshake::status`]. `Ok(None)`: nothing to send (a REFUSE
    /// arrived, or the WELCOME established the link). `Err`: the frame has no place here
    /// (data before the handshake, a frame out of order); the handshake is refused with
    /// [`RefuseReason::Protocol`], and the connection is to be closed.
    pub fn receive(&mut self, frame: &Frame) -> Result<Option<Frame>, PeerError> {
        if let Some(outcome) = self.outcome_name() {
            return Err(PeerError::HandshakeOver { outcome });
        }
        if let Frame::Refuse(r) = frame {
            self.finish(Status::Refused(Refusal {
                reason: r.reason,
                by: Party::Peer,
                message: r.message.clone(),
            }));
            return Ok(None);
        }
        let step = self.step.clone();
        match (step, frame) {
            (Step::AwaitHello, Frame::Hello(h)) => Ok(Some(self.on_hello(h))),
            (Step::SentHello, Frame::Challenge(h)) => Ok(Some(self.on_challenge(h))),
            (Step::SentChallenge { hello }, Frame::Proof(p)) => Ok(Some(self.on_proof(&hello, p))),
            (Step::SentProof { challenge }, Frame::Welcome(p)) => {
                Ok(self.on_welcome(&challenge, p))
            }
            (_, other) => {
                let kind = other.kind();
                let when = self.step_name();
                self.refuse_local(
                    RefuseReason::Protocol,
                    format!("{kind} frame received {when}"),
                );
                Err(PeerError::UnexpectedFrame { kind, when })
            }
        }
    }

    /// Refuses the handshake from this side (for a reason only the caller knows: a node
    /// id not in the membership, or already connected) and returns the REFUSE to send.
    pub fn refuse(&mut self, reason: RefuseReason, message: &str) -> Result<Frame, PeerError> {
        if let Some(outcome) = self.outcome_name() {
            return Err(PeerError::HandshakeOver { outcome });
        }
        Ok(self.refuse_local(reason, message.to_owned()))
    }

    /// The gate for every frame after the handshake: `Ok` only for a data frame on an
    /// established link. Data before the handshake, or a handshake frame after it, is
    /// [`PeerError::UnexpectedFrame`]; a REFUSE after it (the initiator refused this
    /// side's WELCOME) is [`PeerError::RefusedByPeer`].
    pub fn admit(&self, frame: &Frame) -> Result<(), PeerError> {
        let kind = frame.kind();
        match (&self.status, frame) {
            (Status::Established(_), Frame::Refuse(r)) => Err(PeerError::RefusedByPeer {
                reason: r.reason,
                message: r.message.clone(),
            }),
            (Status::Established(_), _) if !kind.is_handshake() => Ok(()),
            (Status::Established(_), _) => Err(PeerError::UnexpectedFrame {
                kind,
                when: "after the handshake",
            }),
            (Status::Refused(_), _) => Err(PeerError::UnexpectedFrame {
                kind,
                when: "after the handshake was refused",
            }),
            (Status::InProgress, _) => Err(PeerError::UnexpectedFrame {
                kind,
                when: "before the handshake is established",
            }),
        }
    }

    /// Acceptor: a HELLO arrived.
    fn on_hello(&mut self, hello: &Hello) -> Frame {
        if let Some((reason, message)) = self.identity_fault(hello) {
            return self.refuse_local(reason, message);
        }
        self.step = Step::SentChallenge {
            hello: hello.clone(),
        };
        Frame::Challenge(self.own.clone())
    }

    /// Initiator: the CHALLENGE arrived; prove the secret.
    fn on_challenge(&mut self, challenge: &Hello) -> Frame {
        if let Some((reason, message)) = self.identity_fault(challenge) {
            return self.refuse_local(reason, message);
        }
        let proof = self.proof(Role::Initiator, &self.own, challenge);
        self.step = Step::SentProof {
            challenge: challenge.clone(),
        };
        Frame::Proof(proof)
    }

    /// Acceptor: the initiator's PROOF arrived; verify it, then prove in turn.
    fn on_proof(&mut self, hello: &Hello, proof: &Proof) -> Frame {
        if !self.verify(Role::Initiator, hello, &self.own, proof) {
            return self.refuse_local(RefuseReason::WrongSecret, wrong_secret(hello.node_id));
        }
        let welcome = self.proof(Role::Acceptor, hello, &self.own);
        self.finish(Status::Established(peer_info(hello)));
        Frame::Welcome(welcome)
    }

    /// Initiator: the acceptor's WELCOME arrived; verify it.
    fn on_welcome(&mut self, challenge: &Hello, proof: &Proof) -> Option<Frame> {
        if !self.verify(Role::Acceptor, &self.own, challenge, proof) {
            let message = wrong_secret(challenge.node_id);
            return Some(self.refuse_local(RefuseReason::WrongSecret, message));
        }
        self.finish(Status::Established(peer_info(challenge)));
        None
    }

    /// Why the peer's HELLO or CHALLENGE is refused, if it is.
    fn identity_fault(&self, peer: &Hello) -> Option<(RefuseReason, String)> {
        let own = &self.own;
        if peer.protocol != own.protocol {
            return Some((
                RefuseReason::VersionMismatch,
                format!(
                    "peer speaks link protocol {}, this server {}: run the same duplexd version on both",
                    peer.protocol, own.protocol
                ),
            ));
        }
        if peer.cluster_id != own.cluster_id {
            return Some((
                RefuseReason::OtherCluster,
                format!(
                    "peer node {} is in cluster {}, this server in cluster {}: check its --peer list",
                    peer.node_id, peer.cluster_id, own.cluster_id
                ),
            ));
        }
        if peer.node_id == own.node_id {
            return Some((
                RefuseReason::DuplicateNodeId,
                format!(
                    "peer claims node id {}, which is this server's own: give every server its own --node-id",
                    peer.node_id
                ),
            ));
        }
        if peer.nonce == own.nonce {
            return Some((
                RefuseReason::Protocol,
                "peer sent back this server's own nonce (a reflected handshake)".to_owned(),
            ));
        }
        None
    }

    /// The proof `by` makes over the initiator's HELLO and the acceptor's CHALLENGE.
    fn proof(&self, by: Role, hello: &Hello, challenge: &Hello) -> Proof {
        let tag = self
            .transcript(by, hello, challenge)
            .finalize()
            .into_bytes();
        let mut out = [0u8; super::PROOF_LEN];
        out.copy_from_slice(&tag);
        Proof(out)
    }

    /// Whether `proof` is the one `by` must make; compared in constant time.
    fn verify(&self, by: Role, hello: &Hello, challenge: &Hello, proof: &Proof) -> bool {
        self.transcript(by, hello, challenge)
            .verify_slice(&proof.0)
            .is_ok()
    }

    // Format: HMAC-SHA256(secret, "duplex peer proof v1" direction:u8 hello_payload[66] challenge_payload[66])
    fn transcript(&self, by: Role, hello: &Hello, challenge: &Hello) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(PROOF_LABEL);
        mac.update(&[by.direction()]);
        mac.update(&hello.to_payload());
        mac.update(&challenge.to_payload());
        mac
    }

    fn refuse_local(&mut self, reason: RefuseReason, message: String) -> Frame {
        let refusal = Refusal {
            reason,
            by: Party::Local,
            message,
        };
        let frame = refusal.to_frame();
        self.finish(Status::Refused(refusal));
        frame
    }

    fn finish(&mut self, status: Status) {
        self.step = Step::Done;
        self.status = status;
    }

    fn outcome_name(&self) -> Option<&'static str> {
        match self.status {
            Status::InProgress => None,
            Status::Established(_) => Some("established"),
            Status::Refused(_) => Some("refused"),
        }
    }

    fn step_name(&self) -> &'static str {
        match self.step {
            Step::SentHello => "while awaiting CHALLENGE",
            Step::SentProof { .. } => "while awaiting WELCOME",
            Step::AwaitHello => "while awaiting HELLO",
            Step::SentChallenge { .. } => "while awaiting PROOF",
            Step::Done => "after the handshake",
        }
    }
}

fn peer_info(h: &Hello) -> PeerInfo {
    PeerInfo {
        node_id: h.node_id,
        incarnation: h.incarnation,
        epoch: h.epoch,
    }
}

fn wrong_secret(peer: u64) -> String {
    format!(
        "the proof of node {peer} does not match this server's cluster secret: \
         give both servers the same --cluster-secret-file"
    )
}
