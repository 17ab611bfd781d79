//! Shared helpers for the Duplex benchmarks.
