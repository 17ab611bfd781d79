//! Duplex WAL.
