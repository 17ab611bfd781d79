//! duplexd, the Duplex server daemon (filled by the server issue).
