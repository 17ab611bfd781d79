//! Loopback ports for servers under test.

use std::net::TcpListener;

/// A loopback port nobody listens on right now (another process may still take it before
/// the caller binds it; see below for why that is rare).
///
/// # Panics
/// If no loopback socket can be bound at all (the machine cannot run these tests).
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`): a port the
/// kernel hands out for port 0 is also what it hands the outgoing connections of tests
/// running in parallel, so one could take it between this check and the server's bind (a
/// CI run failed so: "Address already in use"). Each call in a process gets another port,
/// starting at a place derived from the process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u32>().ok())
        })
        .unwrap_or(0);
    if ephemeral_low > LOW + 1_000 {
        let span = ephemeral_low - LOW;
        let base = std::process::id().wrapping_mul(2_654_435_761) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let p = (LOW + (base + n) % span) as u16;
            if TcpListener::bind(("127.0.0.1", p)).is_ok() {
                return p;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("binding a loopback socket to find a free port: {e}"))
}

/// `127.0.0.1:<port>`.
pub fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}
