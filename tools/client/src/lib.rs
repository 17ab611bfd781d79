//! The Duplex failover client (filled by the server issue).
