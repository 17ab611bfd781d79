//! Decodes arbitrary bytes as the pieces of duplexd's key space (FORMAT.md section 31): a
//! stored key, a stored value, a counter contribution.
//!
//! Properties: no panic; a stored key that names a database and key encodes back to exactly
//! its bytes; a decoded value re-encodes to bytes that decode to the same value (several
//! spellings of one plain string exist: `FF 00 x` and `x`), and a root re-encodes exactly;
//! a decoded contribution re-encodes exactly; a value too short for its tag is refused.
#![no_main]

use duplex_server::counter::Contribution;
use duplex_server::keyspace::{stored_key, user_key, Stored};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((db, k)) = user_key(data) {
        assert_eq!(stored_key(db, k), data, "stored key does not round-trip");
    }
    match Stored::decode(data) {
        Ok(Stored::Value(e)) => {
            let again = Stored::decode(&e.encode()).expect("re-encoded value decodes");
            assert_eq!(again, Stored::Value(e));
        }
        Ok(Stored::Root(after)) => assert_eq!(Stored::encode_root(after), data),
        Err(_) => assert_eq!(data.first(), Some(&0xFF)),
    }
    if let Ok(c) = Contribution::decode(data) {
        assert_eq!(c.encode(), data, "contribution does not round-trip");
    }
});
