//! `duplex-server`: the library behind `duplexd`, the Duplex server daemon.
//!
//! Imports run one way, from the daemon's life down to the state it shares:
//!
//! ```text
//! main (binary)  flags and the TOML file -> ServerConfig -> server::run
//!   server       start-up, accept loop, signals, shutdown  (+ sched: backup schedule;
//!                health: the archive and space alarms, logged)
//!   net          connection layers: events (epoll loops, the default) | threads (one per connection);
//!                accept (admission and refusals, out-of-descriptor back-off);
//!                workers (the event loops' slow work: backups, checkpoints, large scans)
//!   session      one connection's parse -> group -> execute -> reply step, used by every layer
//!                (resp3: its replies rewritten for a HELLO 3 client)
//!   cmd          the RESP commands: table and dispatch; read, write, txn, conn, scan, info, admin
//!   shared       what every thread shares, behind methods: database, state table, stripes,
//!                cursors, backups, counters
//!   reclaim      the background reclaim of expired and flushed versions (digest: the
//!                stamped digest DUPLEX.DIGEST answers, over the versions as reclaim leaves them)
//!   keyspace, counter   the Redis key space in the engine's keys and values: 16 databases,
//!                expiry, flush markers (keyspace), counters merged across servers (counter)
//!   state, config, limits, disks, fds, glob, error   leaves: used from above, import nothing above them
//! ```
//!
//! Where things go:
//! - a new command: a row in [`cmd::TABLE`] and a function in the `cmd` submodule of its
//!   kind (an operator's command in [`cmd::admin`]);
//! - a new bound on the daemon's own work: a constant in [`limits`];
//! - a new slow command (one that copies or walks the whole database): a row in
//!   [`cmd::TABLE`] and an arm in [`cmd::is_slow`] and [`cmd::run_slow`]; the session hands
//!   it to its layer, which runs it off the event loop;
//! - a new state change: [`state::StateTable::move_to`] naming the states it may leave,
//!   allowed by [`state::OpState::may_move`]; never an unconditional set;
//! - a new connection layer: a module under [`net`] that drives its connections through
//!   [`session::Session`];
//! - the peer link: [`net::peer`]: the pure sender and receiver state machines in
//!   `net::peer::link` (fed frames and time), the sockets in `net::peer::conn` (outbound
//!   threads started by [`server`]; inbound connections handed over by the RESP layers on
//!   their first byte, the frame magic); its status in [`shared::PeerTable`], shown by
//!   [`cmd::peers`]; its frame codec in `duplex-proto`, the change feed it sends in the engine;
//! - state that several threads share: [`shared`], behind methods.
//!
//! The leaves:
//! - [`config`]: the TOML file and flags, with documented defaults; `sync` and `io` are
//!   typed ([`config::SyncMode`], [`config::IoMode`]).
//! - [`state`]: the operation state table and its persisted `STATE` file.
//! - [`limits`]: every bound the daemon keeps on its own work.
//! - [`disks`]: whether the archive and backups share the data's file system (start-up).
//! - [`fds`]: the descriptor limit raised and `max_clients` fitted under it (start-up).
//! - [`glob`]: Redis-style glob matching for SCAN MATCH and CONFIG GET.
//! - [`error`]: the crate's [`Error`] and the `STATE` decoder's [`StateDamage`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cmd;
pub mod config;
pub mod counter;
pub mod digest;
pub mod disks;
pub mod error;
pub mod fds;
pub mod glob;
pub mod health;
pub mod keyspace;
pub mod limits;
pub mod net;
pub mod rebuild;
pub mod reclaim;
pub mod recovering;
pub mod remote;
pub mod resp3;
pub mod sched;
pub mod server;
pub mod session;
pub mod shared;
pub mod state;

pub use error::{Error, StateDamage};
