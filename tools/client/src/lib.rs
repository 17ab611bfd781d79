//! `duplex-client`: the Duplex failover client (DESIGN.md step 8; the patent's "connection
//! destination parameter").
//!
//! A [`ClientConfig`] holds an ordered list of `duplexd` servers, the default server first,
//! then the backups, plus a password, a state poll interval, connect/read timeouts, the
//! [`SwitchMode`] and whether to fail back. [`Client::connect`] reads each server's state
//! with `DUPLEX.STATE` (allowed before AUTH, on the connection it will keep) and uses the
//! first *usable* one; when none is, [`Error::NoServer`] lists every server and why
//! (unreachable, state X, stale epoch, bad password).
//!
//! # Usable servers
//! A server is usable when its state is `running` or `backing-up` (the online backup is a
//! file copy taken while clients keep writing, and the server accepts writes throughout),
//! AUTH succeeds, and the **epoch rule** holds: the client remembers the highest epoch it
//! has seen from each configured address, and never uses a server that now reports an older
//! one. Epochs are per node (each server counts its own; fencing or a rebuild raises it), so
//! they are compared per address, never across servers: epoch 3 on the backup says nothing
//! about epoch 5 on the default. A server that saw epoch 5 and reports 3 is an old copy that
//! came back (restored from an old disk without being rebuilt) and is refused with
//! [`Unavailable::StaleEpoch`].
//!
//! The rule holds across a lost disk because the server logs every epoch change in its WAL,
//! so backups and the archive carry it: a server started on a directory restored from a
//! backup and the archive (which has no `STATE` file, or an older one) starts at one above
//! the highest epoch its log saw. A client that knew the server before the loss therefore
//! accepts the restored one, while an old copy of the directory, whose log stops at an
//! older epoch, still reports an older epoch than the client saw and stays refused. The check runs on every new connection and every poll;
//! since a server process that is replaced breaks its connections, every write goes to a
//! server whose epoch was checked on the same connection.
//!
//! # Polling
//! There is no background thread: before a command, if [`ClientConfig::poll_interval`] has
//! passed since the last check, the client sends `DUPLEX.STATE` on its connection first (one
//! extra round trip per interval). It also checks, without blocking, that the server has not
//! closed the connection. So a client notices a stop, fence or failure before it sends
//! its next command once the interval has passed; an idle client notices at its next command.
//! A server that becomes not usable (state `stopping`, `stopped`, `fenced`, `failed`, ...,
//! unreachable, a stale epoch) is marked down: the client stops sending to it, then
//! - [`SwitchMode::Automatic`]: switches to the next usable server in list order after it
//!   (wrapping round; after a lost connection it first tries the same server again, since
//!   a merely dropped connection should not move it), recording an [`Event`];
//! - [`SwitchMode::Manual`]: fails every call with [`Error::ServerDown`] (nothing sent)
//!   until the application calls [`Client::switch`].
//!
//! With [`ClientConfig::failback`] (automatic mode only), each poll made while on a backup
//! also probes the more preferred servers over short-lived connections and moves back to the
//! first usable one.
//!
//! # In-flight requests
//! If the connection breaks after a request was sent (server killed, stopped, unreachable,
//! read timeout), its reply is lost:
//! - idempotent reads (GET, MGET, EXISTS, DBSIZE, PING, ECHO, INFO, SCAN from cursor 0) are
//!   sent once more after the switch;
//! - anything else, writes first, is reported as [`Error::OutcomeUnknown`] and **never
//!   resent**: it may or may not have been applied, and only the application knows whether
//!   writing it again is right.
//!
//! A write the server *refused* because of its state (`-FENCED`, `-FAILED`, `-LOADING`) or
//! because it lacks disk space or descriptors for now (`-NORESOURCE`: it keeps serving reads
//! and accepts writes again by itself once they are back) was not applied, so in automatic
//! mode it is sent once to the next server; in manual mode it is reported as
//! [`Error::ServerDown`]. A `-NOARCHIVE` reply (a synchronous archive, `archive_lag_ms` = 0,
//! could not take the write) is returned to the application as the server's error: the
//! write is in that server's own log but was not acknowledged, and the server goes on.
//!
//! # Reading your own writes across a switch (session tokens)
//! A write acknowledged by server B may not have reached server A when the client moves
//! to A (B died just after; the link is slow). With [`ClientConfig::session_tokens`] (on by
//! default) every SET, MSET, DEL and EXEC carries a `DUPLEX.TOKEN` request in the same
//! pipeline (one send, both replies read together: no extra round trip); the reply, the
//! writing server's node id and the replication position of its last local batch, is kept
//! as the client's session token (the highest position per node). After every switch,
//! failback or reconnect, before its first command there, the client sends
//! `DUPLEX.WAIT node position timeout` for each node of the token: the new server answers
//! once it holds those writes (at once when it already does). When it does not within
//! [`ClientConfig::token_wait`] (default 2 s), the call fails with
//! [`Error::OwnWritesNotVisible`] and nothing is sent (the next call waits again), or, with
//! [`ClientConfig::token_timeout_proceeds`], an [`Event::OwnWritesNotVisible`] is recorded
//! and the client goes on. A server without peers (`-NOREPL`) or one that does not know the
//! command has nothing to wait for. A write acknowledged by a server that died before it
//! reached any other is never visible elsewhere: every call then fails with
//! [`Error::OwnWritesNotVisible`] until that server is back, and the application decides
//! (retry later, or [`Client::clear_session_token`] to go on without those writes).
//! Limits: a token whose reply was lost with the
//! connection (the server died between the write's reply and the token's) is not known, so
//! that write is not waited for; the token covers the writes made through this `Client`,
//! not other clients' (share nothing between clients).
//!
//! ```no_run
//! use duplex_client::{Client, ClientConfig};
//! let mut c = Client::connect(ClientConfig::new(["127.0.0.1:7379", "127.0.0.1:7380"]))?;
//! c.set("line1:count", "42")?;
//! assert_eq!(c.get("line1:count")?.as_deref(), Some(&b"42"[..]));
//! for e in c.take_events() {
//!     println!("{e}");
//! }
//! # Ok::<(), duplex_client::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod client;
mod config;
mod conn;
mod error;
mod state;
mod token;

pub use client::{Client, Event};
pub use config::{ClientConfig, SwitchMode};
pub use duplex_proto::Reply;
pub use error::{Error, Result};
pub use state::{ServerState, ServerStatus, StateInfo, Unavailable};
