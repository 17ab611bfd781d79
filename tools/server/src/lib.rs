//! `duplex-server`: the library behind `duplexd`, the Duplex server daemon.
//!
//! - [`config`]: the TOML file and flags, with documented defaults.
//! - [`state`]: the operation state table and its persisted `STATE` file.
//! - [`server`]: the listener, the connection layer (one thread per connection by default, or epoll
//!   event loops with `io = "events"`), the backup scheduler and the shutdown sequence.
//! - [`events`]: the event-loop connection layer (`io = "events"`): a few epoll threads,
//!   each committing the writes of all its connections of one loop turn together.
//! - [`exec`]: the RESP commands, executed against the engine (pipelined writes share one
//!   `write_many`, i.e. one WAL append and one durability wait; MULTI/EXEC is one batch).
//! - [`glob`]: Redis-style glob matching for SCAN MATCH.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod events;
pub mod exec;
pub mod glob;
pub mod server;
pub mod state;

use std::path::PathBuf;

/// Everything that stops `duplexd` from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A file operation failed.
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The `STATE` file is damaged (never guessed over: the epoch must not go backwards).
    #[error("the state file {path} is damaged ({why}); if this server's data is otherwise sound, restore the file from a backup or delete it (the epoch then restarts at 1, so fence this server first)")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The engine refused (open, backup, ...).
    #[error(transparent)]
    Engine(#[from] duplex_engine::Error),
    /// Binding or accepting failed.
    #[error("network: {0}")]
    Net(#[source] std::io::Error),
}
