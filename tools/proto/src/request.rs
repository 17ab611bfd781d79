//! The request parser: [`RequestParser`] parses one client request from the front of a
//! buffer and, when the request is not whole yet, keeps where it stopped, so that the next
//! call with the same request at the front (the buffer grown by what arrived since) goes on
//! from there instead of parsing the request again from its start. A slow sender of a large
//! request therefore costs CPU linear in its size, not quadratic. [`parse_request`] is the
//! same parse with no state kept (for tests, fuzzing and one-shot callers).
//!
//! [`RequestParser::examined`] counts the bytes the parser has looked at, so a test can
//! check that the work is linear without timing anything.

use crate::{parse_i64, Limits, Parsed, ProtoError, MAX_INT_LINE};

/// Parses one request from the front of `buf` (see the crate docs), keeping no state.
pub fn parse_request<'a>(buf: &'a [u8], lim: &Limits) -> Result<Parsed<'a>, ProtoError> {
    RequestParser::new().parse(buf, lim)
}

/// A request parser that resumes where it stopped (see the module docs). One per
/// connection.
#[derive(Debug, Clone, Default)]
pub struct RequestParser {
    /// Progress of a multibulk request: its declared argument count, once read.
    count: Option<usize>,
    /// Arguments found so far, as (start, end) offsets in the buffer.
    args: Vec<(usize, usize)>,
    /// Where the next argument's `$` header starts.
    next: usize,
    /// The bulk whose header was read and whose bytes have not all arrived: (start, end).
    pending: Option<(usize, usize)>,
    /// How far the line being looked for (an integer line's CR, an inline request's LF)
    /// has been searched without finding it; 0 when no line is pending.
    scanned: usize,
    /// Bytes looked at since the parser was made.
    examined: u64,
}

impl RequestParser {
    /// A parser with nothing pending.
    pub fn new() -> RequestParser {
        RequestParser::default()
    }

    /// Bytes looked at since the parser was made (bulk payloads are not looked at: only
    /// their length and the CRLF after them).
    pub fn examined(&self) -> u64 {
        self.examined
    }

    /// Forgets the progress on the pending request (the caller dropped or replaced it).
    /// The argument list keeps its allocation for the next request.
    pub fn reset(&mut self) {
        self.count = None;
        self.args.clear();
        self.next = 0;
        self.pending = None;
        self.scanned = 0;
    }

    /// Parses the request at the front of `buf`. After [`Parsed::Incomplete`], call again
    /// with the same request at the front and more bytes after it; any other answer (a
    /// request or an error) leaves nothing pending.
    pub fn parse<'a>(&mut self, buf: &'a [u8], lim: &Limits) -> Result<Parsed<'a>, ProtoError> {
        let r = match buf.first() {
            None => return Ok(Parsed::Incomplete),
            Some(b'*') => self.multibulk(buf, lim),
            Some(_) => self.inline(buf, lim),
        };
        if !matches!(r, Ok(Parsed::Incomplete)) {
            self.reset();
        }
        r
    }

    /// Finds the CRLF ending the integer line that starts at `start` (after the type byte),
    /// searching only what the last calls have not. `Ok(None)` if the buffer ends first.
    fn int_line(
        &mut self,
        buf: &[u8],
        start: usize,
        what: &'static str,
    ) -> Result<Option<(i64, usize)>, ProtoError> {
        let window_end = buf.len().min(start + MAX_INT_LINE + 1);
        let from = self.scanned.max(start).min(window_end);
        let Some(i) = buf[from..window_end].iter().position(|&b| b == b'\r') else {
            self.examined += (window_end - from) as u64;
            self.scanned = window_end;
            if buf.len().saturating_sub(start) > MAX_INT_LINE {
                return Err(ProtoError::BadInteger { what });
            }
            return Ok(None);
        };
        let cr = from + i;
        self.examined += (i + 1) as u64;
        if cr + 1 >= buf.len() {
            // Look at the CR again next time, with the byte after it.
            self.scanned = cr;
            return Ok(None);
        }
        self.examined += 1 + (cr - start) as u64;
        if buf[cr + 1] != b'\n' {
            return Err(ProtoError::BadInteger { what });
        }
        self.scanned = 0;
        let n = parse_i64(&buf[start..cr]).ok_or(ProtoError::BadInteger { what })?;
        Ok(Some((n, cr + 2)))
    }

    fn multibulk<'a>(&mut self, buf: &'a [u8], lim: &Limits) -> Result<Parsed<'a>, ProtoError> {
        let n = match self.count {
            Some(n) => n,
            None => {
                let Some((n, pos)) = self.int_line(buf, 1, "multibulk length")? else {
                    return Ok(Parsed::Incomplete);
                };
                if n <= 0 {
                    return Ok(Parsed::Request {
                        args: Vec::new(),
                        consumed: pos,
                    });
                }
                if n as u64 > lim.max_args as u64 {
                    return Err(ProtoError::TooManyArgs {
                        len: n,
                        max: lim.max_args,
                    });
                }
                // Capacity is bounded by what the buffer could possibly hold (4 bytes per
                // argument at least), never by the declared count alone.
                let n = n as usize;
                self.args.clear();
                self.args.reserve(n.min(buf.len() / 4 + 1));
                self.count = Some(n);
                self.next = pos;
                n
            }
        };
        while self.args.len() < n {
            let (start, end) = match self.pending {
                Some(p) => p,
                None => match self.bulk_header(buf, lim)? {
                    Some(p) => p,
                    None => return Ok(Parsed::Incomplete),
                },
            };
            if buf.len() < end + 2 {
                self.pending = Some((start, end));
                return Ok(Parsed::Incomplete);
            }
            self.pending = None;
            self.examined += 2;
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtoError::MissingCrlf);
            }
            self.args.push((start, end));
            self.next = end + 2;
        }
        Ok(Parsed::Request {
            args: self.args.iter().map(|&(s, e)| &buf[s..e]).collect(),
            consumed: self.next,
        })
    }

    /// Reads the `$<len>\r\n` header of the next argument: its (start, end), `None` if the
    /// header is not whole yet.
    fn bulk_header(
        &mut self,
        buf: &[u8],
        lim: &Limits,
    ) -> Result<Option<(usize, usize)>, ProtoError> {
        let pos = self.next;
        let Some(&t) = buf.get(pos) else {
            return Ok(None);
        };
        self.examined += 1;
        if t != b'$' {
            return Err(ProtoError::ExpectedBulk { found: t });
        }
        let Some((len, start)) = self.int_line(buf, pos + 1, "bulk length")? else {
            return Ok(None);
        };
        if len < 0 || len as u64 > lim.max_bulk_len as u64 {
            return Err(ProtoError::BulkTooLong {
                len,
                max: lim.max_bulk_len,
            });
        }
        let end = start + len as usize;
        if end + 2 > lim.max_request_len {
            return Err(ProtoError::RequestTooLong {
                len: end + 2,
                max: lim.max_request_len,
            });
        }
        Ok(Some((start, end)))
    }

    fn inline<'a>(&mut self, buf: &'a [u8], lim: &Limits) -> Result<Parsed<'a>, ProtoError> {
        let window_end = buf.len().min(lim.max_inline_len + 2);
        let from = self.scanned.min(window_end);
        let Some(i) = buf[from..window_end].iter().position(|&b| b == b'\n') else {
            self.examined += (window_end - from) as u64;
            self.scanned = window_end;
            if buf.len() > lim.max_inline_len + 1 {
                return Err(ProtoError::InlineTooLong {
                    max: lim.max_inline_len,
                });
            }
            return Ok(Parsed::Incomplete);
        };
        let nl = from + i;
        self.examined += (i + 1 + nl) as u64;
        let mut line = &buf[..nl];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.len() > lim.max_inline_len {
            return Err(ProtoError::InlineTooLong {
                max: lim.max_inline_len,
            });
        }
        if line.iter().any(|&b| b < 0x20 && b != b'\t') {
            return Err(ProtoError::BadInline);
        }
        let args: Vec<&[u8]> = line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|w| !w.is_empty())
            .collect();
        if args.len() > lim.max_args {
            return Err(ProtoError::TooManyArgs {
                len: args.len() as i64,
                max: lim.max_args,
            });
        }
        Ok(Parsed::Request {
            args,
            consumed: nl + 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_request;

    /// Feeds `req` to one parser: the header lines one byte at a time, each argument's body
    /// in 1 KiB chunks. Returns the parser and how many calls it took.
    fn feed(req: &[u8], lim: &Limits) -> (RequestParser, Vec<Vec<u8>>, usize) {
        let mut p = RequestParser::new();
        let mut have = 0;
        let mut calls = 0;
        loop {
            // In a bulk body (a pending bulk): the next 1 KiB of it; else one byte.
            have = match p.pending {
                Some((_, end)) => (have + 1024).min(end + 2),
                None => have + 1,
            }
            .min(req.len());
            calls += 1;
            match p.parse(&req[..have], lim).unwrap() {
                Parsed::Incomplete => assert!(have < req.len(), "whole yet incomplete"),
                Parsed::Request { args, consumed } => {
                    assert_eq!(consumed, req.len());
                    let args = args.iter().map(|a| a.to_vec()).collect();
                    return (p, args, calls);
                }
            }
        }
    }

    #[test]
    fn a_slow_sender_of_a_large_request_costs_linear_work() {
        let lim = Limits::default();
        let body = vec![b'x'; 1024];
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        // 10,240 arguments of 1 KiB: a 10 MiB request.
        args.extend(std::iter::repeat_n(&body[..], 10_240));
        let mut req = Vec::new();
        encode_request(&mut req, &args);
        assert!(req.len() > 10 << 20);
        let (p, got, calls) = feed(&req, &lim);
        assert_eq!(got.len(), args.len());
        assert!(got[1..].iter().all(|a| a == &body));
        let payload: usize = args.iter().map(|a| a.len()).sum();
        let framing = (req.len() - payload) as u64;
        // Every byte of framing (headers, CRLFs) is looked at a bounded number of times,
        // however many calls it took; parsing each call from the start would look at
        // about calls * framing / 2 (some 10^9 here).
        assert!(calls > 80_000, "{calls} calls");
        assert!(
            p.examined() <= 3 * framing,
            "examined {} bytes for {framing} bytes of framing",
            p.examined()
        );
    }

    #[test]
    fn a_slow_inline_sender_costs_linear_work() {
        let lim = Limits::default();
        let mut line = b"PING ".to_vec();
        line.extend(std::iter::repeat_n(b'a', 60_000));
        line.extend_from_slice(b"\r\n");
        let mut p = RequestParser::new();
        for i in 1..line.len() {
            assert_eq!(p.parse(&line[..i], &lim).unwrap(), Parsed::Incomplete);
        }
        let Parsed::Request { args, consumed } = p.parse(&line, &lim).unwrap() else {
            panic!("whole");
        };
        assert_eq!((args.len(), consumed), (2, line.len()));
        assert!(p.examined() <= 3 * line.len() as u64, "{}", p.examined());
    }

    #[test]
    fn resuming_agrees_with_parsing_from_the_start() {
        let lim = Limits {
            max_bulk_len: 64,
            max_args: 8,
            max_inline_len: 32,
            max_request_len: 256,
        };
        let cases: [&[u8]; 8] = [
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            b"*1\r\n$4\r\nPING\r\n*1\r\n",
            b"*2\r\n$3\r\nGET\r\n$100\r\n",
            b"*2\r\n$3\r\nGETxx",
            b"*2\r\n+x",
            b"*0\r\n",
            b"PING a b\r\nrest",
            b"*1\r\n$123456789012345678901234\r\n",
        ];
        for c in cases {
            let mut p = RequestParser::new();
            for i in 0..=c.len() {
                let resumed = p.parse(&c[..i], &lim);
                assert_eq!(resumed, parse_request(&c[..i], &lim), "{c:?} at {i}");
                if !matches!(resumed, Ok(Parsed::Incomplete)) {
                    break;
                }
            }
        }
    }
}
