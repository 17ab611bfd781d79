//! Loopback ports for servers under test.

use std::net::TcpListener;

/// A loopback port nobody listens on right now (the kernel's pick; another process may
/// take it before the caller binds it, which the tests accept).
///
/// # Panics
/// If no loopback socket can be bound at all (the machine cannot run these tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("binding a loopback socket to find a free port: {e}"))
}

/// `127.0.0.1:<port>`.
pub fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}
