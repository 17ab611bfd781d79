//! One connection's requests, from bytes to replies: parse → group → execute → reply. Every
//! connection layer ([`crate::net`]) drives its connections through [`Session::step`], so
//! the grouping rules and their limits ([`crate::limits`]) exist once:
//! - requests are parsed with the configured [`duplex_proto::Limits`]; a protocol error is
//!   answered and closes the connection;
//! - non-write requests gather (up to [`GROUP_MAX`]) and run together
//!   ([`crate::cmd::execute`]: a run of reads shares one snapshot) as soon as a write, the
//!   end of the complete input, or the group limit is reached;
//! - a run of consecutive writes (SET, MSET, DEL; up to [`RUN_MAX`] requests and
//!   [`RUN_BYTES_MAX`] argument bytes) is handed back to the layer as [`Step::Writes`]; the
//!   layer commits it alone or with other connections' runs ([`commit`]: one `write_many`),
//!   appends the replies, and steps again. So a connection's replies stay in request order
//!   and its reads see its earlier writes;
//! - once [`OUT_BYTES_MAX`] reply bytes are waiting, the session stops ([`Step::Flush`])
//!   until the layer has sent them.

use duplex_proto::{parse_request, Parsed};

use crate::cmd::{self, ConnState};
use crate::limits::{GROUP_MAX, OUT_BYTES_MAX, RUN_BYTES_MAX, RUN_MAX};
use crate::shared::Shared;

/// What a connection layer does after a [`Session::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A run of writes to commit ([`commit`]), alone or with other connections' runs; its
    /// replies go to this connection's output, then step again.
    Writes(Vec<Vec<&'a [u8]>>),
    /// Every complete request has run: read more input.
    NeedInput,
    /// Too many replies are waiting: send them, then step again.
    Flush,
    /// Close the connection once its replies are sent (QUIT or a protocol error).
    Close,
}

/// The command side of one connection: its [`ConnState`] (authentication, name, MULTI).
#[derive(Debug)]
pub struct Session {
    st: ConnState,
    closing: bool,
}

impl Session {
    /// A session for a new connection (a fresh client id; authenticated when no password is
    /// configured).
    pub fn new(sh: &Shared) -> Session {
        Session {
            st: ConnState::new(sh.next_client_id(), sh.cfg().requirepass.is_none()),
            closing: false,
        }
    }

    /// The client id.
    pub fn id(&self) -> u64 {
        self.st.id
    }

    /// Runs the requests of `buf` from `*pos` on, appending replies to `out` and moving
    /// `*pos` past what it consumed, up to the next thing the layer must do.
    pub fn step<'a>(
        &mut self,
        sh: &Shared,
        buf: &'a [u8],
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Step<'a> {
        if self.closing {
            return Step::Close;
        }
        let mut plain: Vec<Vec<&'a [u8]>> = Vec::new();
        loop {
            if plain.len() >= GROUP_MAX || out.len() > OUT_BYTES_MAX {
                if !self.run_plain(sh, &mut plain, out) {
                    return Step::Close;
                }
                if out.len() > OUT_BYTES_MAX {
                    return Step::Flush;
                }
            }
            match parse_request(&buf[*pos..], sh.limits()) {
                Ok(Parsed::Incomplete) => {
                    return if self.run_plain(sh, &mut plain, out) {
                        Step::NeedInput
                    } else {
                        Step::Close
                    };
                }
                Err(e) => {
                    if self.run_plain(sh, &mut plain, out) {
                        duplex_proto::error(out, &e.reply_text());
                        tracing::debug!(client = self.st.id, error = %e, "protocol error; closing");
                    }
                    self.closing = true;
                    return Step::Close;
                }
                Ok(Parsed::Request { args, consumed }) => {
                    if args.is_empty() {
                        *pos += consumed;
                        continue;
                    }
                    if !cmd::is_write(&args) {
                        *pos += consumed;
                        plain.push(args);
                        continue;
                    }
                    // A write: what came before runs first (it may AUTH, MULTI, or QUIT).
                    if !self.run_plain(sh, &mut plain, out) {
                        return Step::Close;
                    }
                    *pos += consumed;
                    if !self.st.authed || self.st.multi.is_some() {
                        // NOAUTH or QUEUED, answered as usual.
                        plain.push(args);
                        continue;
                    }
                    return Step::Writes(write_run(sh, buf, pos, args));
                }
            }
        }
    }

    /// Runs the non-write requests gathered so far. Returns false when the connection must
    /// close (QUIT).
    fn run_plain(&mut self, sh: &Shared, plain: &mut Vec<Vec<&[u8]>>, out: &mut Vec<u8>) -> bool {
        if !plain.is_empty() {
            sh.count_commands(plain.len());
            if cmd::execute(sh, &mut self.st, plain, out) {
                self.closing = true;
            }
            plain.clear();
        }
        !self.closing
    }
}

/// The run of writes starting with `first`: the consecutive writes that follow it in
/// `buf`, within [`RUN_MAX`] and [`RUN_BYTES_MAX`].
fn write_run<'a>(
    sh: &Shared,
    buf: &'a [u8],
    pos: &mut usize,
    first: Vec<&'a [u8]>,
) -> Vec<Vec<&'a [u8]>> {
    let mut bytes: usize = first.iter().map(|a| a.len()).sum();
    let mut run = vec![first];
    while run.len() < RUN_MAX && bytes < RUN_BYTES_MAX {
        match parse_request(&buf[*pos..], sh.limits()) {
            Ok(Parsed::Request { args, consumed }) if !args.is_empty() && cmd::is_write(&args) => {
                *pos += consumed;
                bytes += args.iter().map(|a| a.len()).sum::<usize>();
                run.push(args);
            }
            _ => break,
        }
    }
    run
}

/// Commits the write runs of one or more sessions together ([`cmd::write_groups`]: one
/// `write_many`); returns each run's replies, in order.
pub fn commit(sh: &Shared, runs: &[&[Vec<&[u8]>]]) -> Vec<Vec<u8>> {
    sh.count_commands(runs.iter().map(|r| r.len()).sum());
    cmd::write_groups(sh, runs)
}
