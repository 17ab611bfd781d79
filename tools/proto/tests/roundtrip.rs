//! Property tests: requests and replies survive an encode/parse round trip, whole and cut
//! into arbitrary pieces (a prefix is always `Incomplete`, never an error), and arbitrary
//! bytes never make the parsers panic.

use duplex_proto::{encode_request, parse_reply, parse_request, Limits, Parsed, Reply};
use proptest::prelude::*;

fn reply_strategy() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 _.:-]{0,20}".prop_map(Reply::Simple),
        "[a-zA-Z0-9 _.:-]{0,20}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Integer),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Reply::Bulk),
        Just(Reply::Null),
        Just(Reply::NullArray),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
    })
}

proptest! {
    #[test]
    fn request_round_trip(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..8)) {
        let mut buf = Vec::new();
        encode_request(&mut buf, &args);
        let lim = Limits::default();
        for i in 0..buf.len() {
            prop_assert_eq!(parse_request(&buf[..i], &lim).unwrap(), Parsed::Incomplete);
        }
        match parse_request(&buf, &lim).unwrap() {
            Parsed::Request { args: got, consumed } => {
                prop_assert_eq!(consumed, buf.len());
                let got: Vec<Vec<u8>> = got.into_iter().map(<[u8]>::to_vec).collect();
                prop_assert_eq!(got, args);
            }
            Parsed::Incomplete => prop_assert!(false, "whole request incomplete"),
        }
    }

    #[test]
    fn reply_round_trip(r in reply_strategy()) {
        let mut buf = Vec::new();
        r.encode(&mut buf);
        let lim = Limits::default();
        for i in 0..buf.len() {
            prop_assert_eq!(parse_reply(&buf[..i], &lim).unwrap(), None);
        }
        prop_assert_eq!(parse_reply(&buf, &lim).unwrap(), Some((r, buf.len())));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let lim = Limits { max_bulk_len: 64, max_args: 8, max_inline_len: 32, max_request_len: 256 };
        if let Ok(Parsed::Request { consumed, args }) = parse_request(&b, &lim) {
            prop_assert!(consumed <= b.len() && consumed > 0);
            prop_assert!(args.len() <= 8);
        }
        if let Ok(Some((_, used))) = parse_reply(&b, &lim) {
            prop_assert!(used <= b.len());
        }
    }
}
