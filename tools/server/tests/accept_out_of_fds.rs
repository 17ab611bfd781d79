//! The accept loop out of descriptors (issue 17): `accept` fails with EMFILE, and the
//! [`Acceptor`] still answers the waiting clients `-ERR max number of clients reached`
//! (with the spare descriptor it keeps for that moment) instead of leaving them to hang.
//!
//! This lowers the process's own descriptor limit, so it is alone in its test binary.

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex_engine::{Config as DbConfig, Database, SyncPolicy};
use duplex_server::config::ServerConfig;
use duplex_server::net::accept::{Acceptor, REFUSAL};
use duplex_server::shared::Shared;
use duplex_server::state::{OpState, StateRecord, StateTable};
use duplex_wal::ManualClock;
use rlimit::Resource;

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[test]
fn out_of_descriptors_the_waiting_clients_are_refused_with_a_reply() {
    let d = tempfile::tempdir().unwrap();
    let db = Database::open(
        d.path().join("data"),
        DbConfig {
            sync: SyncPolicy::Never,
            ..DbConfig::default()
        },
    )
    .unwrap();
    let rec = StateRecord {
        state: OpState::Running,
        epoch: 1,
        node_id: 1,
        updated_ms: 0,
    };
    let table = StateTable::new(d.path(), rec).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ServerConfig {
        data: d.path().join("data"),
        ..ServerConfig::default()
    };
    let sh = Arc::new(Shared::new(
        db,
        cfg,
        table,
        Arc::new(ManualClock::new(1)),
        addr,
    ));
    let mut acceptor = Acceptor::new();

    // Two clients wait in the backlog; then every descriptor of the process is taken.
    let mut clients: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    let (soft, hard) = Resource::NOFILE.get().unwrap();
    Resource::NOFILE.set(open_fds() + 8, hard).unwrap();
    let mut hogs = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        hogs.push(f);
    }

    for c in &mut clients {
        let t0 = Instant::now();
        assert!(acceptor.next(&sh, &listener).is_none(), "not admitted");
        assert!(t0.elapsed() < Duration::from_secs(1));
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        assert_eq!(got, REFUSAL);
    }
    let st = sh.stats();
    assert_eq!((st.rejected_connections, st.clients), (2, 0));

    // Descriptors back: the next client is admitted as usual.
    drop(hogs);
    Resource::NOFILE.set(soft, hard).unwrap();
    let _c = TcpStream::connect(addr).unwrap();
    assert!(acceptor.next(&sh, &listener).is_some());
    assert_eq!(sh.stats().clients, 1);
}
