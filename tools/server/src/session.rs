//! One connection's requests, from bytes to replies: parse → group → execute → reply. Every
//! connection layer ([`crate::net`]) drives its connections through [`Session::step`], so
//! the grouping rules and their limits ([`crate::limits`]) exist once:
//! - requests are parsed with the configured [`duplex_proto::Limits`] by the session's
//!   [`RequestParser`], which resumes an incomplete request where it stopped (the layer
//!   keeps that request at `buf[*pos..]`, adding what arrives); a protocol error is
//!   answered and closes the connection;
//! - non-write requests gather (up to [`GROUP_MAX`]) and run together
//!   ([`crate::cmd::execute`]: a run of reads shares one snapshot) as soon as a write, the
//!   end of the complete input, or the group limit is reached;
//! - a run of consecutive writes (SET, MSET, DEL; up to [`RUN_MAX`] requests and
//!   [`RUN_BYTES_MAX`] argument bytes) is handed back to the layer as [`Step::Writes`]; the
//!   layer commits it alone or with other connections' runs ([`commit`]: one `write_many`),
//!   appends the replies, and steps again. So a connection's replies stay in request order
//!   and its reads see its earlier writes;
//! - a slow request (a backup, a checkpoint, a whole-database walk: [`cmd::is_slow`]) is
//!   handed back as [`Step::Slow`] once the requests before it have run; the layer runs it
//!   where it may take its time ([`Slow::run`]: on a worker thread for the event loops),
//!   appends its reply, and only then steps again, so the connection's replies stay in order
//!   while the other connections go on;
//! - once [`OUT_BYTES_MAX`] reply bytes are waiting, the session stops ([`Step::Flush`])
//!   until the layer has sent them, also in the middle of a group: a group of GETs of large
//!   values runs only until the budget is full, and the requests left are parsed and run
//!   again at the next step. So a connection's reply memory is about [`OUT_BYTES_MAX`] plus
//!   one reply, whatever it pipelines; the layer disconnects a client whose unsent replies
//!   pass `client_output_limit_bytes` (a single huge reply, e.g. an MGET of many large values).

use duplex_proto::{Parsed, RequestParser};

use crate::cmd::{self, ConnState};
use crate::limits::{GROUP_MAX, OUT_BYTES_MAX, RUN_BYTES_MAX, RUN_MAX};
use crate::shared::clients::Membership;
use crate::shared::Shared;

/// What a connection layer does after a [`Session::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A run of writes to commit ([`commit`]), alone or with other connections' runs; its
    /// replies go to this connection's output, then step again.
    Writes(Vec<Vec<&'a [u8]>>),
    /// A slow request: run it ([`Slow::run`]) where it may take its time, append its reply,
    /// then step again.
    Slow(Slow),
    /// Every complete request has run: read more input.
    NeedInput,
    /// Too many replies are waiting: send them, then step again.
    Flush,
    /// Close the connection once its replies are sent (QUIT or a protocol error).
    Close,
}

/// One slow request, owned (it outlives the connection's input buffer): see
/// [`cmd::is_slow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slow {
    args: Vec<Vec<u8>>,
    /// The connection's database.
    db: u8,
    /// The connection speaks RESP3 (HELLO 3).
    resp3: bool,
}

impl Slow {
    /// Runs the request; returns its reply.
    pub fn run(&self, sh: &Shared) -> Vec<u8> {
        sh.count_commands(1);
        let args: Vec<&[u8]> = self.args.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        cmd::run_slow(sh, self.db, &args, &mut out);
        if self.resp3 {
            crate::resp3::to_resp3(&mut out, 0);
        }
        out
    }
}

/// The command side of one connection: its [`ConnState`] (authentication, name, MULTI).
#[derive(Debug)]
pub struct Session {
    st: ConnState,
    closing: bool,
    /// Where the parse of an incomplete request stopped (the request at `buf[*pos..]`).
    parser: RequestParser,
    /// Its row in CLIENT LIST, removed when the session is dropped.
    _member: Membership,
}

impl Session {
    /// A session for a new connection (a fresh client id; authenticated when no password is
    /// configured).
    pub fn new(sh: &Shared) -> Session {
        let id = sh.next_client_id();
        Session {
            st: ConnState::new(id, sh.cfg().requirepass.is_none()),
            closing: false,
            parser: RequestParser::new(),
            _member: Membership::join(sh.client_table(), id),
        }
    }

    /// The client id.
    pub fn id(&self) -> u64 {
        self.st.id
    }

    /// Records the client's address for CLIENT LIST.
    pub fn set_peer(&self, sh: &Shared, addr: Option<std::net::SocketAddr>) {
        sh.client_table().update(self.st.id, |r| r.addr = addr);
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
        let mut plain = Plain::default();
        loop {
            if plain.reqs.len() >= GROUP_MAX || out.len() > OUT_BYTES_MAX {
                match self.run_plain(sh, &mut plain, pos, out, OUT_BYTES_MAX) {
                    Ran::All if out.len() <= OUT_BYTES_MAX => {}
                    Ran::All | Ran::Part => return Step::Flush,
                    Ran::Close => return Step::Close,
                }
            }
            match self.parser.parse(&buf[*pos..], sh.limits()) {
                Ok(Parsed::Incomplete) => {
                    return match self.run_plain(sh, &mut plain, pos, out, OUT_BYTES_MAX) {
                        Ran::All => Step::NeedInput,
                        Ran::Part => Step::Flush,
                        Ran::Close => Step::Close,
                    };
                }
                Err(e) => {
                    // The connection closes: what came before runs whole, then the error.
                    if self.run_plain(sh, &mut plain, pos, out, usize::MAX) == Ran::All {
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
                    let slow = self.st.authed && self.st.multi.is_none() && cmd::is_slow(&args);
                    if !slow && !cmd::is_write(&args) {
                        *pos += consumed;
                        plain.push(args, *pos);
                        continue;
                    }
                    // What came before runs first (it may AUTH, MULTI, or QUIT); when it
                    // filled the reply budget, this request is parsed again next step.
                    match self.run_plain(sh, &mut plain, pos, out, OUT_BYTES_MAX) {
                        Ran::All => {}
                        Ran::Part => return Step::Flush,
                        Ran::Close => return Step::Close,
                    }
                    *pos += consumed;
                    if slow {
                        // It runs off this thread.
                        let args = args.iter().map(|a| a.to_vec()).collect();
                        return Step::Slow(Slow {
                            args,
                            db: self.st.db,
                            resp3: self.st.resp3,
                        });
                    }
                    if !self.st.authed
                        || self.st.multi.is_some()
                        || self.st.db != 0
                        || self.st.resp3
                    {
                        // NOAUTH or QUEUED, answered as usual; a write of another
                        // database than 0 is committed on its own, and so is a RESP3
                        // client's (its replies are rewritten: [`crate::resp3`]).
                        plain.push(args, *pos);
                        continue;
                    }
                    return Step::Writes(write_run(sh, &mut self.parser, buf, pos, args));
                }
            }
        }
    }

    /// Runs the non-write requests gathered so far, until `out` holds more than `budget`
    /// bytes. When some did not run, `*pos` goes back to the end of the last one that did
    /// (and the parser starts afresh there): they are parsed and run again next step.
    fn run_plain(
        &mut self,
        sh: &Shared,
        plain: &mut Plain<'_>,
        pos: &mut usize,
        out: &mut Vec<u8>,
        budget: usize,
    ) -> Ran {
        if plain.reqs.is_empty() {
            return if self.closing { Ran::Close } else { Ran::All };
        }
        let from = out.len();
        let done = cmd::execute(sh, &mut self.st, &plain.reqs, out, budget);
        if self.st.resp3 {
            crate::resp3::to_resp3(out, from);
        }
        sh.count_commands(done.ran);
        let all = done.ran == plain.reqs.len();
        if !all {
            *pos = plain.ends[done.ran - 1];
            self.parser.reset();
        }
        plain.reqs.clear();
        plain.ends.clear();
        if done.close {
            self.closing = true;
            Ran::Close
        } else if all {
            Ran::All
        } else {
            Ran::Part
        }
    }
}

/// The non-write requests gathered for one [`cmd::execute`], with where each ends in the
/// input (so that the ones the reply budget left out can be parsed again).
#[derive(Default)]
struct Plain<'a> {
    reqs: Vec<Vec<&'a [u8]>>,
    ends: Vec<usize>,
}

impl<'a> Plain<'a> {
    fn push(&mut self, args: Vec<&'a [u8]>, end: usize) {
        self.reqs.push(args);
        self.ends.push(end);
    }
}

/// What [`Session::run_plain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// Every gathered request ran.
    All,
    /// The reply budget filled first; the rest wait for the next step.
    Part,
    /// QUIT: close once the replies are sent.
    Close,
}

/// The run of writes starting with `first`: the consecutive writes that follow it in
/// `buf`, within [`RUN_MAX`] and [`RUN_BYTES_MAX`].
fn write_run<'a>(
    sh: &Shared,
    parser: &mut RequestParser,
    buf: &'a [u8],
    pos: &mut usize,
    first: Vec<&'a [u8]>,
) -> Vec<Vec<&'a [u8]>> {
    let mut bytes: usize = first.iter().map(|a| a.len()).sum();
    let mut run = vec![first];
    while run.len() < RUN_MAX && bytes < RUN_BYTES_MAX {
        match parser.parse(&buf[*pos..], sh.limits()) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use duplex_wal::ManualClock;

    use super::*;
    use crate::config::ServerConfig;

    /// A `Shared` over a fresh database, no sockets.
    fn shared(dir: &std::path::Path, requirepass: Option<&str>) -> Shared {
        let cfg = ServerConfig {
            requirepass: requirepass.map(str::to_owned),
            ..ServerConfig::default()
        };
        crate::shared::test_shared(dir, Arc::new(ManualClock::new(1)), cfg)
    }

    #[test]
    fn step_hands_back_write_runs_in_request_order() {
        let d = tempfile::tempdir().unwrap();
        let sh = shared(d.path(), None);
        let mut s = Session::new(&sh);
        let buf = b"SET a 1\r\nGET a\r\nSET b 2\r\nMSET c 3 d 4\r\nGET b\r\nPING\r\nGET";
        let (mut pos, mut out) = (0, Vec::new());
        let Step::Writes(run) = s.step(&sh, buf, &mut pos, &mut out) else {
            panic!("a write run first");
        };
        assert_eq!(run.len(), 1);
        assert!(out.is_empty(), "nothing answered before the write");
        out.extend(commit(&sh, &[&run]).concat());
        let Step::Writes(run) = s.step(&sh, buf, &mut pos, &mut out) else {
            panic!("the second run");
        };
        assert_eq!(run.len(), 2, "SET and MSET run together");
        out.extend(commit(&sh, &[&run]).concat());
        assert_eq!(s.step(&sh, buf, &mut pos, &mut out), Step::NeedInput);
        assert_eq!(out, b"+OK\r\n$1\r\n1\r\n+OK\r\n+OK\r\n$1\r\n2\r\n+PONG\r\n");
        assert_eq!(&buf[pos..], b"GET", "the incomplete request stays");
        assert_eq!(sh.stats().total_commands, 6);
    }

    #[test]
    fn slow_requests_are_handed_back_after_what_came_before() {
        let d = tempfile::tempdir().unwrap();
        let sh = shared(d.path(), None);
        let mut s = Session::new(&sh);
        let buf = b"PING\r\nDBSIZE\r\nSCAN 0 COUNT 5\r\nSCAN 0 COUNT 5000\r\nPING\r\n";
        let (mut pos, mut out) = (0, Vec::new());
        let Step::Slow(job) = s.step(&sh, buf, &mut pos, &mut out) else {
            panic!("DBSIZE is slow");
        };
        assert_eq!(out, b"+PONG\r\n", "the PING before it answered first");
        out.extend(job.run(&sh));
        let Step::Slow(job) = s.step(&sh, buf, &mut pos, &mut out) else {
            panic!("a large SCAN is slow");
        };
        out.extend(job.run(&sh));
        assert_eq!(s.step(&sh, buf, &mut pos, &mut out), Step::NeedInput);
        assert_eq!(
            out,
            b"+PONG\r\n:0\r\n*2\r\n$1\r\n0\r\n*0\r\n*2\r\n$1\r\n0\r\n*0\r\n+PONG\r\n"
        );
        // Before AUTH a slow command is refused in line, not handed back.
        let d = tempfile::tempdir().unwrap();
        let sh = shared(d.path(), Some("pw"));
        let mut s = Session::new(&sh);
        let (mut pos, mut out) = (0, Vec::new());
        assert_eq!(
            s.step(&sh, b"DUPLEX.BACKUP\r\n", &mut pos, &mut out),
            Step::NeedInput
        );
        assert!(out.starts_with(b"-NOAUTH"), "{out:?}");
    }

    #[test]
    fn a_group_of_large_reads_stops_at_the_reply_budget_and_resumes() {
        let d = tempfile::tempdir().unwrap();
        let sh = shared(d.path(), None);
        let big = vec![b'v'; 600 << 10];
        let set = [b"SET".as_slice(), b"big", &big];
        let mut s = Session::new(&sh);
        let (mut pos, mut out) = (0, Vec::new());
        out.extend(commit(&sh, &[&[set.to_vec()]]).concat());
        out.clear();
        // Ten GETs of 600 KiB: a budget of 1 MiB holds two replies, then the session asks
        // for them to be sent; the GETs left run at the next steps, in order.
        let buf = b"GET big\r\n".repeat(10);
        let mut buf = buf.clone();
        buf.extend_from_slice(b"PING\r\n");
        let mut replies = 0;
        let mut steps = 0;
        loop {
            let st = s.step(&sh, &buf, &mut pos, &mut out);
            assert!(out.len() <= OUT_BYTES_MAX + (700 << 10), "{}", out.len());
            replies += out.len();
            steps += 1;
            let last = out.ends_with(b"+PONG\r\n");
            out.clear();
            match st {
                Step::Flush => {}
                Step::NeedInput => {
                    assert!(last, "PING answered last");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(steps, 6, "two GETs a step, then the PING");
        assert_eq!(replies, 10 * (big.len() + 11) + 7, "every reply, once");
        assert_eq!(pos, buf.len());
        assert_eq!(sh.stats().total_commands, 12);
    }

    #[test]
    fn quit_and_protocol_errors_close() {
        let d = tempfile::tempdir().unwrap();
        let sh = shared(d.path(), None);
        let mut s = Session::new(&sh);
        let (mut pos, mut out) = (0, Vec::new());
        assert_eq!(
            s.step(&sh, b"PING\r\nQUIT\r\nPING\r\n", &mut pos, &mut out),
            Step::Close
        );
        assert_eq!(out, b"+PONG\r\n+OK\r\n");
        let mut s = Session::new(&sh);
        let (mut pos, mut out) = (0, Vec::new());
        assert_eq!(
            s.step(&sh, b"*1\r\n+x\r\n", &mut pos, &mut out),
            Step::Close
        );
        assert!(out.starts_with(b"-ERR Protocol error"), "{out:?}");
    }

    #[test]
    fn a_write_before_auth_is_refused_not_committed() {
        let d = tempfile::tempdir().unwrap();
        let sh = shared(d.path(), Some("pw"));
        let mut s = Session::new(&sh);
        let (mut pos, mut out) = (0, Vec::new());
        let buf = b"SET a 1\r\nAUTH pw\r\nSET a 1\r\n";
        let Step::Writes(run) = s.step(&sh, buf, &mut pos, &mut out) else {
            panic!("the write after AUTH is a run");
        };
        assert_eq!(run.len(), 1);
        assert_eq!(out, b"-NOAUTH Authentication required.\r\n+OK\r\n");
    }
}
