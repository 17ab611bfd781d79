//! duplexctl and duplex-recover, the Duplex admin tools (filled by later issues).
