//! `duplex-proto`: the RESP2 (Redis serialization protocol) codec that `duplexd` speaks.
//!
//! Pure functions over byte buffers, no I/O, so they can be fuzzed and property-tested:
//! - [`parse_request`] parses one client request from the front of a buffer: an array of
//!   bulk strings (what every client library sends) or an inline command (a line of words,
//!   for telnet and `redis-cli` inline use). It is incremental: on a partial request it
//!   answers [`Parsed::Incomplete`] and the caller reads more bytes and calls again. Every
//!   length field is checked against [`Limits`] *before* anything is allocated from it, and
//!   arguments borrow from the buffer (no copy). A [`RequestParser`] (one per connection)
//!   does the same and resumes where it stopped, so a request that arrives slowly is not
//!   parsed again from its start on every read.
//! - The reply encoders ([`simple`], [`error`], [`integer`], [`bulk`], [`null_bulk`],
//!   [`array_len`], [`null_array`], or [`Reply::encode`]) append RESP2 replies to a `Vec<u8>`.
//! - [`parse_reply`] parses one reply (for clients and tests), with the same limits and a
//!   bound on nesting depth; [`encode_request`] writes a request as an array of bulk strings.
//!
//! - [`codes`]: the error codes `duplexd` opens its error replies with (`FENCED`, `IOERR`,
//!   ...) and [`codes::classify`], which tells a client what an error reply means.
//!
//! RESP3 is not implemented: a server answers `HELLO 3` with `-NOPROTO`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod codes;
pub mod peer;
mod request;

pub use request::{parse_request, RequestParser};

/// Limits checked while parsing, before any allocation sized by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (one argument or one bulk reply), bytes. Default 16 MiB + 4 KiB
    /// (the engine's largest value and key).
    pub max_bulk_len: usize,
    /// Most arguments in one request, or elements in one reply array. Default 1,048,576.
    pub max_args: usize,
    /// Longest inline command line, bytes (without the line end). Default 64 KiB.
    pub max_inline_len: usize,
    /// Most bytes one request may span on the wire, all headers included. Default 64 MiB.
    pub max_request_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: (16 << 20) + 4096,
            max_args: 1 << 20,
            max_inline_len: 64 << 10,
            max_request_len: 64 << 20,
        }
    }
}

/// Longest length or integer line (`*`, `$`, `:` headers), line end excluded.
pub(crate) const MAX_INT_LINE: usize = 21;
/// Deepest array nesting [`parse_reply`] accepts.
pub const MAX_REPLY_DEPTH: usize = 32;

/// A protocol violation. After one, the stream cannot be resynchronized: a server replies
/// with the message (see [`ProtoError::reply_text`]) and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A length or integer line is not a valid decimal integer (or has no line end within
    /// 21 bytes).
    #[error("invalid {what} (expected a decimal integer followed by CRLF)")]
    BadInteger {
        /// Which field: "multibulk length", "bulk length", "integer".
        what: &'static str,
    },
    /// An array element is not a bulk string.
    #[error("expected '$', got '{}'", char::from(*.found))]
    ExpectedBulk {
        /// The byte found instead.
        found: u8,
    },
    /// A bulk string is not followed by CRLF.
    #[error("bulk string not terminated by CRLF")]
    MissingCrlf,
    /// A bulk length is negative (other than a null reply) or above the limit.
    #[error("invalid bulk length {len} (limit {max})")]
    BulkTooLong {
        /// Declared length.
        len: i64,
        /// Configured limit.
        max: usize,
    },
    /// More arguments (or array elements) than allowed.
    #[error("invalid multibulk length {len} (limit {max})")]
    TooManyArgs {
        /// Declared count.
        len: i64,
        /// Configured limit.
        max: usize,
    },
    /// An inline command line is longer than allowed.
    #[error("too big inline request (limit {max} bytes)")]
    InlineTooLong {
        /// Configured limit.
        max: usize,
    },
    /// A request spans more bytes than allowed.
    #[error("request too large ({len} bytes, limit {max})")]
    RequestTooLong {
        /// Bytes the request needs at least.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// An inline command holds a control byte, or a reply line a CR, LF or invalid UTF-8.
    #[error("invalid character in inline request or reply line")]
    BadInline,
    /// A reply starts with a byte that is not a RESP2 type marker.
    #[error("unknown reply type byte {found:#04x}")]
    BadReplyType {
        /// The byte found.
        found: u8,
    },
    /// Reply arrays nested deeper than [`MAX_REPLY_DEPTH`].
    #[error("reply nested deeper than {MAX_REPLY_DEPTH} levels")]
    TooDeep,
}

impl ProtoError {
    /// The error line a server sends before closing: `Protocol error: <message>`.
    pub fn reply_text(&self) -> String {
        format!("ERR Protocol error: {self}")
    }
}

/// What [`parse_request`] found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not a whole request yet: read more bytes and call again with the longer buffer.
    Incomplete,
    /// A whole request. `args` is empty for an empty inline line or `*0`/`*-1`, which a
    /// server skips silently (as Redis does).
    Request {
        /// The command name and arguments, borrowed from the buffer.
        args: Vec<&'a [u8]>,
        /// Bytes of the buffer the request used; drop them before parsing the next one.
        consumed: usize,
    },
}

/// Finds the CRLF ending the integer line that starts at `start` (after the type byte).
/// `Ok(None)` if the buffer ends first.
fn int_line(
    buf: &[u8],
    start: usize,
    what: &'static str,
) -> Result<Option<(i64, usize)>, ProtoError> {
    let rest = buf.get(start..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(MAX_INT_LINE + 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if rest.len() > MAX_INT_LINE {
            return Err(ProtoError::BadInteger { what });
        }
        return Ok(None);
    };
    if cr + 1 >= rest.len() {
        return Ok(None);
    }
    if rest[cr + 1] != b'\n' {
        return Err(ProtoError::BadInteger { what });
    }
    let n = parse_i64(&rest[..cr]).ok_or(ProtoError::BadInteger { what })?;
    Ok(Some((n, start + cr + 2)))
}

/// Strict decimal: optional '-', 1 to 19 digits without leading zeros, no '+', no spaces.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // Like Redis: no leading zeros, no "-0", so every value has one spelling.
    if digits[0] == b'0' && (digits.len() > 1 || neg) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(i64::from(d - b'0'))?
        } else {
            v.checked_add(i64::from(d - b'0'))?
        };
    }
    Some(v)
}

/// Writes `args` as a RESP request (an array of bulk strings).
pub fn encode_request<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    array_len(out, args.len());
    for a in args {
        bulk(out, a.as_ref());
    }
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Appends a line, turning any CR or LF inside into a space (a simple string or error can
/// not hold them).
fn push_line(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        out.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.extend_from_slice(b"\r\n");
}

/// `+<s>\r\n`. CR and LF inside `s` become spaces.
pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    push_line(out, s.as_bytes());
}

/// `-<msg>\r\n`. The message should start with an upper-case code (`ERR`, `NOAUTH`, ...);
/// CR and LF inside become spaces.
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    push_line(out, msg.as_bytes());
}

/// `:<n>\r\n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_int(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `$<len>\r\n<b>\r\n`.
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    push_int(out, b.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// The null bulk string `$-1\r\n` (a missing value).
pub fn null_bulk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*<n>\r\n`: an array header; the caller then writes `n` replies.
pub fn array_len(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_int(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// The null array `*-1\r\n` (e.g. EXEC after an aborted transaction).
pub fn null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// One RESP2 reply, as a value (for clients, tests and the reply parser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3 abc`
    Bulk(Vec<u8>),
    /// `$-1`
    Null,
    /// `*n ...`
    Array(Vec<Reply>),
    /// `*-1`
    NullArray,
}

impl Reply {
    /// Appends the encoding of this reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => simple(out, s),
            Reply::Error(s) => error(out, s),
            Reply::Integer(n) => integer(out, *n),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Null => null_bulk(out),
            Reply::Array(items) => {
                array_len(out, items.len());
                for r in items {
                    r.encode(out);
                }
            }
            Reply::NullArray => null_array(out),
        }
    }
}

/// Parses one reply from the front of `buf`: `Ok(None)` if incomplete, else the reply and
/// the bytes it used. Simple strings and errors must be UTF-8.
pub fn parse_reply(buf: &[u8], lim: &Limits) -> Result<Option<(Reply, usize)>, ProtoError> {
    parse_reply_at(buf, 0, lim, 0)
}

fn text_line(buf: &[u8], start: usize, max: usize) -> Result<Option<(String, usize)>, ProtoError> {
    let rest = buf.get(start..).unwrap_or(&[]);
    let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > max + 1 {
            return Err(ProtoError::InlineTooLong { max });
        }
        return Ok(None);
    };
    if nl > max {
        return Err(ProtoError::InlineTooLong { max });
    }
    if rest[..nl].iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(ProtoError::BadInline);
    }
    let s = std::str::from_utf8(&rest[..nl]).map_err(|_| ProtoError::BadInline)?;
    Ok(Some((s.to_owned(), start + nl + 2)))
}

fn parse_reply_at(
    buf: &[u8],
    pos: usize,
    lim: &Limits,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtoError> {
    let Some(&t) = buf.get(pos) else {
        return Ok(None);
    };
    match t {
        b'+' | b'-' => Ok(
            text_line(buf, pos + 1, lim.max_inline_len)?.map(|(s, end)| {
                let r = if t == b'+' {
                    Reply::Simple(s)
                } else {
                    Reply::Error(s)
                };
                (r, end - pos)
            }),
        ),
        b':' => {
            Ok(int_line(buf, pos + 1, "integer")?.map(|(n, end)| (Reply::Integer(n), end - pos)))
        }
        b'$' => {
            let Some((len, start)) = int_line(buf, pos + 1, "bulk length")? else {
                return Ok(None);
            };
            if len == -1 {
                return Ok(Some((Reply::Null, start - pos)));
            }
            if len < 0 || len as u64 > lim.max_bulk_len as u64 {
                return Err(ProtoError::BulkTooLong {
                    len,
                    max: lim.max_bulk_len,
                });
            }
            let end = start + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtoError::MissingCrlf);
            }
            Ok(Some((Reply::Bulk(buf[start..end].to_vec()), end + 2 - pos)))
        }
        b'*' => {
            let Some((n, mut p)) = int_line(buf, pos + 1, "multibulk length")? else {
                return Ok(None);
            };
            if n == -1 {
                return Ok(Some((Reply::NullArray, p - pos)));
            }
            if n < 0 || n as u64 > lim.max_args as u64 {
                return Err(ProtoError::TooManyArgs {
                    len: n,
                    max: lim.max_args,
                });
            }
            if depth >= MAX_REPLY_DEPTH {
                return Err(ProtoError::TooDeep);
            }
            let n = n as usize;
            let mut items = Vec::with_capacity(n.min(buf.len() / 3 + 1));
            for _ in 0..n {
                let Some((r, used)) = parse_reply_at(buf, p, lim, depth + 1)? else {
                    return Ok(None);
                };
                items.push(r);
                p += used;
            }
            Ok(Some((Reply::Array(items), p - pos)))
        }
        found => Err(ProtoError::BadReplyType { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(buf: &[u8]) -> Result<Parsed<'_>, ProtoError> {
        parse_request(buf, &Limits::default())
    }

    #[test]
    fn multibulk_whole_and_every_prefix_incomplete() {
        let b = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        for i in 0..b.len() {
            assert_eq!(req(&b[..i]).unwrap(), Parsed::Incomplete, "prefix {i}");
        }
        assert_eq!(
            req(b).unwrap(),
            Parsed::Request {
                args: vec![&b"SET"[..], b"k", b"hello"],
                consumed: b.len()
            }
        );
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let b = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nx\r\n";
        let Parsed::Request { args, consumed } = req(b).unwrap() else {
            panic!()
        };
        assert_eq!(args, vec![&b"PING"[..]]);
        let Parsed::Request { args, .. } = req(&b[consumed..]).unwrap() else {
            panic!()
        };
        assert_eq!(args, vec![&b"GET"[..], b"x"]);
    }

    #[test]
    fn inline_commands() {
        assert_eq!(
            req(b"SET  k\tv\r\n").unwrap(),
            Parsed::Request {
                args: vec![&b"SET"[..], b"k", b"v"],
                consumed: 10
            }
        );
        assert_eq!(
            req(b"PING\n").unwrap(),
            Parsed::Request {
                args: vec![&b"PING"[..]],
                consumed: 5
            }
        );
        assert_eq!(
            req(b"\r\n").unwrap(),
            Parsed::Request {
                args: vec![],
                consumed: 2
            }
        );
        assert_eq!(req(b"PIN").unwrap(), Parsed::Incomplete);
        assert_eq!(req(b"A\0B\n"), Err(ProtoError::BadInline));
    }

    #[test]
    fn limits_refuse_before_allocating() {
        let lim = Limits {
            max_bulk_len: 10,
            max_args: 3,
            max_inline_len: 8,
            max_request_len: 100,
        };
        assert!(matches!(
            parse_request(b"*4\r\n", &lim),
            Err(ProtoError::TooManyArgs { len: 4, .. })
        ));
        assert!(matches!(
            parse_request(b"*9223372036854775807\r\n", &Limits::default()),
            Err(ProtoError::TooManyArgs { .. })
        ));
        assert!(matches!(
            parse_request(b"*1\r\n$11\r\n", &lim),
            Err(ProtoError::BulkTooLong { len: 11, .. })
        ));
        assert!(matches!(
            parse_request(b"*1\r\n$-5\r\n", &lim),
            Err(ProtoError::BulkTooLong { len: -5, .. })
        ));
        assert!(matches!(
            parse_request(b"123456789012", &lim),
            Err(ProtoError::InlineTooLong { max: 8 })
        ));
        let lim2 = Limits {
            max_request_len: 20,
            ..lim
        };
        assert!(matches!(
            parse_request(b"*2\r\n$5\r\nhello\r\n$5\r\n", &lim2),
            Err(ProtoError::RequestTooLong { .. })
        ));
    }

    #[test]
    fn malformed_multibulk() {
        assert!(matches!(req(b"*x\r\n"), Err(ProtoError::BadInteger { .. })));
        assert!(matches!(
            req(b"*1\r\n:1\r\n"),
            Err(ProtoError::ExpectedBulk { found: b':' })
        ));
        assert!(matches!(
            req(b"*1\r\n$1\r\nabc"),
            Err(ProtoError::MissingCrlf)
        ));
        assert!(matches!(
            req(b"*1\r\n$+1\r\na\r\n"),
            Err(ProtoError::BadInteger { .. })
        ));
        assert!(matches!(
            req(b"*1\r\n$1\rx"),
            Err(ProtoError::BadInteger { .. })
        ));
        assert!(matches!(
            req(b"*11111111111111111111111111\r\n"),
            Err(ProtoError::BadInteger { .. })
        ));
        assert_eq!(
            req(b"*0\r\n").unwrap(),
            Parsed::Request {
                args: vec![],
                consumed: 4
            }
        );
        assert!(ProtoError::MissingCrlf
            .reply_text()
            .starts_with("ERR Protocol error"));
    }

    #[test]
    fn reply_encoding() {
        let mut o = Vec::new();
        simple(&mut o, "OK");
        error(&mut o, "ERR bad\r\nthing");
        integer(&mut o, -42);
        integer(&mut o, i64::MIN);
        bulk(&mut o, b"hi");
        null_bulk(&mut o);
        array_len(&mut o, 0);
        null_array(&mut o);
        assert_eq!(
            o,
            b"+OK\r\n-ERR bad  thing\r\n:-42\r\n:-9223372036854775808\r\n$2\r\nhi\r\n$-1\r\n*0\r\n*-1\r\n"
        );
        let lim = Limits::default();
        let mut p = 0;
        let mut got = Vec::new();
        while let Some((r, used)) = parse_reply(&o[p..], &lim).unwrap() {
            got.push(r);
            p += used;
        }
        assert_eq!(p, o.len());
        assert_eq!(got[3], Reply::Integer(i64::MIN));
        assert_eq!(got[5], Reply::Null);
        assert_eq!(got[7], Reply::NullArray);
    }

    #[test]
    fn reply_depth_is_bounded() {
        let deep = "*1\r\n".repeat(MAX_REPLY_DEPTH + 1) + ":1\r\n";
        assert_eq!(
            parse_reply(deep.as_bytes(), &Limits::default()),
            Err(ProtoError::TooDeep)
        );
    }
}
