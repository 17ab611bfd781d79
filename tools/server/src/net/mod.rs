//! The connection layers: how admitted connections are read, driven through their
//! [`crate::session::Session`] and written. The accept loop ([`crate::server`]) hands each
//! admitted connection to the [`Layer`] the configuration names:
//! - [`events`] (`io = "events"`, the default): a few epoll event loops; each commits the
//!   write runs of all its connections of one loop turn together, and hands slow requests
//!   to the [`workers`];
//! - [`threads`] (`io = "threads"`): one blocking thread per connection; it uses every
//!   core when many clients pipeline without fsync.
//!
//! [`peer`]: the peer link (issue 11). Both layers hand a connection whose first byte is
//! the frame magic (0xD7) to [`peer::conn`]; the outbound links run on threads of their own.
//!
//! [`accept`] admits connections for the accept loop (and refuses, with an error reply,
//! the ones past `max_clients` or past the descriptor limit).
//!
//! A layer owns its connections from hand-over to close and calls
//! [`crate::shared::Shared::conn_closed`] once for each.

pub mod accept;
pub mod events;
pub mod peer;
pub mod threads;
pub mod workers;

use std::net::TcpStream;
use std::sync::Arc;

use crate::config::IoMode;
use crate::shared::Shared;
use crate::Error;

/// The connection layer in use.
#[derive(Debug)]
pub enum Layer {
    /// Event loops.
    Events(events::Pool),
    /// A thread per connection.
    Threads,
}

impl Layer {
    /// Starts the layer `mode` names (the event-loop threads for [`IoMode::Events`]).
    pub fn start(sh: &Arc<Shared>, mode: IoMode) -> Result<Layer, Error> {
        Ok(match mode {
            IoMode::Events => Layer::Events(events::Pool::start(sh, sh.cfg().io_threads)?),
            IoMode::Threads => Layer::Threads,
        })
    }

    /// Takes over an admitted connection.
    pub fn hand_over(&mut self, sh: &Arc<Shared>, stream: TcpStream) {
        match self {
            Layer::Events(pool) => pool.hand_over(sh, stream),
            Layer::Threads => threads::spawn(sh, stream),
        }
    }
}
