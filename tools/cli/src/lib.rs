//! The Duplex admin tools' shared code. The binary `duplex-recover` (restore a backup and
//! roll its archive forward, verify backups and archives, dump WAL records, back up a data
//! directory) only parses arguments, shows progress and prints; what it checks and how it
//! reads lives here, over the engine and WAL crates:
//! - [`exit`]: the documented exit codes and [`exit::ToolError`], an error with its code;
//! - [`help`]: the long help texts of `duplex-recover`;
//! - [`identify`]: what a path on disk is (backup, WAL directory, segment, data directory);
//! - [`verify`]: verification of each kind, as reports rather than errors (the checks of
//!   backups and data directories are the engine's, [`duplex_engine::verify`]);
//! - [`dump`]: WAL records as readable lines or JSON objects;
//! - [`state`]: the `duplexd` STATE file of a data directory, checked by `verify`;
//! - [`target`]: the checks and the careful emptying behind `restore --force`;
//! - [`text`]: byte escaping and time parsing and formatting.
//!
//! `duplexctl` (servers over RESP) is as thin: [`resp`] talks to a server, [`status`],
//! [`compare`], [`conflicts`], [`rebuild`] hold each subcommand's work and output, [`ctl_help`] its
//! help texts and exit codes.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod compare;
pub mod conflicts;
pub mod ctl_help;
pub mod demo;
pub mod dump;
pub mod exit;
pub mod help;
pub mod identify;
pub mod rebuild;
pub mod remote;
pub mod resp;
pub mod state;
pub mod status;
pub mod target;
pub mod text;
pub mod verify;
