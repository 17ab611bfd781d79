//! The peer link (issue 11): every server sends its own updates to every `--peer` and
//! applies the ones its peers send, never sending those on.
//!
//! For each ordered pair of servers there is one TCP connection, opened by the SENDER (the
//! origin of the batches) to the receiver's RESP port. The initiator of the handshake sends
//! its own BATCHES and HEARTBEATs; the acceptor applies them and answers ACK, RESYNC or
//! ERROR. A connection whose first byte is the frame magic (0xD7, which no RESP request
//! starts with) is handed by the RESP layers ([`super::events`], [`super::threads`]) to
//! [`conn::serve_inbound`].
//!
//! - [`link`]: the two ends as pure state machines ([`link::Sender`], [`link::Receiver`]),
//!   fed frames and time; no sockets, threads or clock.
//! - [`conn`]: the sockets: one outbound thread per `--peer` (connect, handshake, transfer
//!   loop, reconnect with back-off) and one thread per inbound connection.
//! - [`serve_rebuild`]: an inbound connection whose first frame is REBUILD gets a backup's
//!   files (issue 12; the rebuilding side is [`crate::rebuild`]).
//!
//! Frames and the handshake are `duplex_proto::peer` (docs/FORMAT.md section 29); the
//! change feed and `apply_remote` are the engine's (`duplex_engine::repl`). What the links
//! report is in [`crate::shared::PeerTable`].

pub mod conn;
pub mod link;
mod outbound;
mod receive;
pub mod serve_rebuild;

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::shared::Shared;
use crate::Error;

/// The outbound link threads, joined at shutdown.
#[derive(Debug, Default)]
pub struct PeerLinks {
    threads: Vec<JoinHandle<()>>,
}

impl PeerLinks {
    /// Starts one outbound link per configured peer (none without peers).
    pub fn start(sh: &Arc<Shared>) -> Result<PeerLinks, Error> {
        let mut threads = Vec::new();
        for entry in &sh.cfg().peers {
            let (pin, addr) = crate::config::split_peer(entry);
            let i = sh.peers().add_outbound(addr);
            threads.push(conn::spawn_outbound(sh.clone(), i, addr.to_owned(), pin)?);
        }
        if !threads.is_empty() {
            tracing::info!(
                event = "peer_links",
                peers = threads.len(),
                cluster_id = sh.cfg().cluster_id,
                "peer links started"
            );
        }
        Ok(PeerLinks { threads })
    }

    /// Waits for the outbound threads, which stop once the server is stopping.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
