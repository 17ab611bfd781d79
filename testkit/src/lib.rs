//! What the Duplex tests and benchmarks share, so that no test includes another crate's test
//! source by path and no helper exists twice:
//!
//! - [`daemon`]: a real `duplexd` process under test (spawn with its files under one
//!   directory, wait until ready, signal, wait, stop, SIGKILL, kill on drop) and where to
//!   find the binary from outside the server package;
//! - [`child`]: the SIGKILL crash tests' harness: re-run the test binary as a child, kill it
//!   at a chosen moment, and the acknowledgement protocol the child reports on its stdout;
//! - [`kv`]: deterministic keys, values and a 64-bit mixer for workloads;
//! - [`dirs`]: temporary directories, copying a tree, listing one;
//! - [`net`]: free loopback ports;
//! - [`proxy`]: a fault-injecting TCP proxy (delay, partition and heal, a cut mid-frame,
//!   dropped connections, duplicated and replayed chunks) for the replication tests;
//! - [`fixtures`]: the committed golden files and the damage their damaged variants carry.
//!
//! A dev-only crate (`publish = false`): it depends on none of the Duplex crates, so the
//! crates under test can use it from their own tests.
#![forbid(unsafe_code)]

pub mod child;
pub mod daemon;
pub mod dirs;
pub mod fixtures;
pub mod kv;
pub mod net;
pub mod proxy;
pub mod s3;

pub use dirs::{copy_tree, temp_dir, TempDir};
pub use net::{addr, free_port};
pub use proxy::{Dir, Proxy};
