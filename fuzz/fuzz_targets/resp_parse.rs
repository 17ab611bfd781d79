//! Parses arbitrary bytes as a stream of RESP requests and as RESP replies.
//!
//! Properties: no panic; every request consumes at least one byte and no more than given and
//! respects the argument limit; an array-of-bulk request re-encodes (`encode_request`) to
//! exactly the bytes it was parsed from; a prefix of a whole request is `Incomplete`; a parsed
//! reply re-encodes to a reply that parses back to the same value; a `RequestParser` fed the
//! same bytes a few at a time (resuming where it stopped) answers as parsing from the start.
#![no_main]

use duplex_proto::{encode_request, parse_reply, parse_request, Limits, Parsed, RequestParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lim = Limits {
        max_bulk_len: 4096,
        max_args: 64,
        max_inline_len: 256,
        max_request_len: 1 << 16,
    };
    let mut rest = data;
    while !rest.is_empty() {
        match parse_request(rest, &lim) {
            Ok(Parsed::Incomplete) | Err(_) => break,
            Ok(Parsed::Request { args, consumed }) => {
                assert!(consumed > 0 && consumed <= rest.len());
                assert!(args.len() <= lim.max_args);
                if rest[0] == b'*' && !args.is_empty() {
                    let mut again = Vec::new();
                    encode_request(&mut again, &args);
                    assert_eq!(&again[..], &rest[..consumed]);
                    for i in 0..consumed {
                        assert_eq!(parse_request(&rest[..i], &lim), Ok(Parsed::Incomplete));
                    }
                }
                rest = &rest[consumed..];
            }
        }
    }
    // Resuming: grow the buffer in steps of 1 to 7 bytes (from the data itself).
    let step = usize::from(data.first().copied().unwrap_or(0) % 7) + 1;
    let mut p = RequestParser::new();
    let mut have = 0;
    while have < data.len() {
        have = (have + step).min(data.len());
        let resumed = p.parse(&data[..have], &lim);
        assert_eq!(resumed, parse_request(&data[..have], &lim));
        if !matches!(resumed, Ok(Parsed::Incomplete)) {
            break;
        }
    }
    if let Ok(Some((reply, used))) = parse_reply(data, &lim) {
        assert!(used <= data.len());
        let mut enc = Vec::new();
        reply.encode(&mut enc);
        assert_eq!(parse_reply(&enc, &lim), Ok(Some((reply, enc.len()))));
    }
});
