//! Failover of `duplex-client` against two real `duplexd` daemons (see `common` for how the
//! binary is found): start-up with the default down, SIGTERM of the server in use under a
//! stream of writes (never a silently duplicated write), manual switching, failback, no
//! server running, a fenced server, and the epoch rule against an old copy of a server.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{addr, free_port, Daemon, NodeDaemon};
use duplex_client::{Client, ClientConfig, Error, Event, ServerState, SwitchMode, Unavailable};
use duplex_testkit::copy_tree;
use duplex_testkit::daemon::{signal_pid, SIGTERM};

fn cfg(ports: &[u16]) -> ClientConfig {
    ClientConfig::new(ports.iter().map(|&p| addr(p)))
        .poll_interval(Duration::from_millis(50))
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_secs(5))
}

/// A client that talks only to one server (to inspect or administer it).
fn direct(port: u16) -> Client {
    Client::connect(cfg(&[port])).unwrap()
}

fn has_event(events: &[Event], pred: impl Fn(&Event) -> bool) -> bool {
    events.iter().any(pred)
}

#[test]
fn default_down_at_start_uses_backup() {
    let t = duplex_testkit::temp_dir();
    let default_port = free_port();
    let b = Daemon::start(&t.path().join("b"), free_port(), 2);
    let mut c = Client::connect(cfg(&[default_port, b.port])).unwrap();
    assert_eq!(c.current_server(), Some(addr(b.port).as_str()));
    c.set("k", "v").unwrap();
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    let states = c.server_states();
    assert!(matches!(
        states[0].unavailable,
        Some(Unavailable::Unreachable(_))
    ));
    assert!(states[1].is_usable() && states[1].current);
    assert_eq!(states[1].info.as_ref().unwrap().state, ServerState::Running);
    assert!(has_event(
        &c.take_events(),
        |e| matches!(e, Event::Connected { server, .. } if *server == addr(b.port))
    ));
}

#[test]
fn sigterm_of_the_default_switches_and_never_duplicates_a_write() {
    let t = duplex_testkit::temp_dir();
    let mut a = Daemon::start(&t.path().join("a"), free_port(), 1);
    let b = Daemon::start(&t.path().join("b"), free_port(), 2);
    let (a_addr, b_addr) = (addr(a.port), addr(b.port));
    let mut c = Client::connect(cfg(&[a.port, b.port])).unwrap();
    assert_eq!(c.current_server(), Some(a_addr.as_str()));

    // Acknowledged writes: key -> server that acknowledged it. Unknown outcomes listed.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut unknown: Vec<String> = Vec::new();
    let pid = a.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        signal_pid(pid, SIGTERM);
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut on_b = 0;
    let mut i = 0;
    while on_b < 30 {
        assert!(
            Instant::now() < deadline,
            "the client did not move to {b_addr}: {acked:?}"
        );
        let key = format!("w{i:05}");
        match c.set(&key, &key) {
            Ok(()) => {
                let server = c.current_server().unwrap().to_owned();
                if server == b_addr {
                    on_b += 1;
                }
                acked.insert(key, server);
            }
            Err(Error::OutcomeUnknown {
                server, command, ..
            }) => {
                assert_eq!(server, a_addr);
                assert_eq!(command, "SET");
                unknown.push(key);
            }
            Err(e) => panic!("write {i}: {e}"),
        }
        i += 1;
    }
    killer.join().unwrap();
    eprintln!(
        "{i} writes: {} acknowledged by the default, {on_b} by the backup, {} outcome unknown",
        acked.values().filter(|s| **s == a_addr).count(),
        unknown.len()
    );
    assert_eq!(c.current_server(), Some(b_addr.as_str()));
    let events = c.take_events();
    assert!(
        has_event(
            &events,
            |e| matches!(e, Event::Down { server, .. } if *server == a_addr)
        ),
        "{events:?}"
    );
    assert!(
        has_event(
            &events,
            |e| matches!(e, Event::Switched { from, to, .. } if *from == a_addr && *to == b_addr)
        ),
        "{events:?}"
    );
    assert!(
        acked.values().any(|s| *s == a_addr),
        "no write reached the default first"
    );
    let st = a.wait(20);
    assert!(st.success(), "{st}");

    // Restart the default on its data and compare what each server holds.
    a.restart();
    let mut ca = direct(a.port);
    let mut cb = direct(b.port);
    let keys: Vec<String> = (0..i).map(|k| format!("w{k:05}")).collect();
    let on_a = ca.mget(&keys).unwrap();
    let on_b = cb.mget(&keys).unwrap();
    for (k, key) in keys.iter().enumerate() {
        let (x, y) = (on_a[k].is_some(), on_b[k].is_some());
        assert!(!(x && y), "{key} was written to both servers");
        match acked.get(key) {
            Some(s) if *s == a_addr => assert!(x, "{key} acknowledged by the default, lost"),
            Some(_) => assert!(y, "{key} acknowledged by the backup, lost"),
            None => {
                assert!(unknown.contains(key));
                assert!(
                    !y,
                    "{key} had an unknown outcome yet was resent to the backup"
                );
            }
        }
    }
}

#[test]
fn manual_mode_reports_server_down_until_switch() {
    let t = duplex_testkit::temp_dir();
    let mut a = Daemon::start(&t.path().join("a"), free_port(), 1);
    let b = Daemon::start(&t.path().join("b"), free_port(), 2);
    let mut c = Client::connect(cfg(&[a.port, b.port]).switch_mode(SwitchMode::Manual)).unwrap();
    c.set("before", "1").unwrap();
    a.stop();
    for _ in 0..3 {
        match c.set("after", "2") {
            Err(Error::ServerDown { server, reason }) => {
                assert_eq!(server, addr(a.port));
                assert!(matches!(reason, Unavailable::Unreachable(_)), "{reason}");
            }
            other => panic!("expected ServerDown, got {other:?}"),
        }
        assert_eq!(c.current_server(), None);
    }
    let msg = c.get("before").unwrap_err().to_string();
    assert!(msg.contains("switch()"), "{msg}");
    assert_eq!(c.switch().unwrap(), addr(b.port));
    c.set("after", "2").unwrap();
    assert_eq!(c.get("after").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(c.current_server(), Some(addr(b.port).as_str()));
    assert_eq!(c.switch_count(), 1);
    // Nothing was sent while down: the backup never saw "before", the default never "after".
    assert_eq!(c.get("before").unwrap(), None);
}

#[test]
fn failback_when_the_default_runs_again() {
    let t = duplex_testkit::temp_dir();
    let a_port = free_port();
    let b = Daemon::start(&t.path().join("b"), free_port(), 2);
    let mut c = Client::connect(cfg(&[a_port, b.port]).failback(true)).unwrap();
    assert_eq!(c.current_index(), Some(1));
    c.set("k", "on-b").unwrap();
    let _a = Daemon::start(&t.path().join("a"), a_port, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.current_index() != Some(0) {
        assert!(Instant::now() < deadline, "no failback");
        c.get("k").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let events = c.take_events();
    assert!(
        has_event(
            &events,
            |e| matches!(e, Event::FailedBack { to, .. } if *to == addr(a_port))
        ),
        "{events:?}"
    );
    c.set("k2", "on-a").unwrap();
    assert_eq!(
        direct(a_port).get("k2").unwrap().as_deref(),
        Some(&b"on-a"[..])
    );

    // Without failback the client stays on the backup.
    let mut d = Client::connect(cfg(&[free_port(), b.port])).unwrap();
    std::thread::sleep(Duration::from_millis(120));
    d.get("k").unwrap();
    assert_eq!(d.current_index(), Some(1));
}

#[test]
fn none_running_is_a_clear_error_listing_each_server() {
    let (p, q) = (free_port(), free_port());
    let e = Client::connect(cfg(&[p, q])).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains(&format!("{} (default) unreachable", addr(p))),
        "{m}"
    );
    assert!(
        m.contains(&format!("{} (backup) unreachable", addr(q))),
        "{m}"
    );

    // One fenced, one down.
    let t = duplex_testkit::temp_dir();
    let a = Daemon::start(&t.path().join("a"), free_port(), 1);
    direct(a.port).command(&[b"DUPLEX.FENCE"]).unwrap();
    let e = Client::connect(cfg(&[a.port, q])).unwrap_err();
    let Error::NoServer { servers } = &e else {
        panic!("{e}")
    };
    assert_eq!(servers[0].1, Unavailable::NotServing(ServerState::Fenced));
    assert!(matches!(servers[1].1, Unavailable::Unreachable(_)));
    let m = e.to_string();
    assert!(m.contains("state fenced") && m.contains("UNFENCE"), "{m}");
}

#[test]
fn fenced_server_client_moves_away() {
    let t = duplex_testkit::temp_dir();
    let a = Daemon::start(&t.path().join("a"), free_port(), 1);
    let b = Daemon::start(&t.path().join("b"), free_port(), 2);
    let mut admin = direct(a.port);

    // Poll not due: the write meets -FENCED (not applied) and goes to the backup once.
    let mut c =
        Client::connect(cfg(&[a.port, b.port]).poll_interval(Duration::from_secs(60))).unwrap();
    c.set("x", "1").unwrap();
    let epoch = admin.command(&[b"DUPLEX.FENCE"]).unwrap();
    assert_eq!(epoch, duplex_client::Reply::Integer(2));
    c.set("y", "2").unwrap();
    assert_eq!(c.current_index(), Some(1));
    let events = c.take_events();
    assert!(
        has_event(
            &events,
            |e| matches!(e, Event::Down { reason: Unavailable::Refused(m), .. } if m.starts_with("FENCED"))
        ),
        "{events:?}"
    );
    assert_eq!(direct(b.port).get("y").unwrap().as_deref(), Some(&b"2"[..]));
    let mut admin = direct_any(a.port);
    assert_eq!(admin.get("y").unwrap(), None);

    // Poll due: the client sees `fenced` before sending, even a read.
    admin.command(&[b"DUPLEX.UNFENCE"]).unwrap();
    let mut c = Client::connect(cfg(&[a.port, b.port])).unwrap();
    assert_eq!(c.current_index(), Some(0));
    admin.command(&[b"DUPLEX.FENCE"]).unwrap();
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(c.get("y").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(c.current_index(), Some(1));
    let events = c.take_events();
    assert!(
        has_event(&events, |e| matches!(
            e,
            Event::Down {
                reason: Unavailable::NotServing(ServerState::Fenced),
                ..
            }
        )),
        "{events:?}"
    );
}

/// A bare connection to one server whatever its state (a `Client` refuses a fenced or stale
/// server), for admin commands and for inspecting what it holds.
fn direct_any(port: u16) -> RawConn {
    RawConn(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
}

/// A bare RESP connection (no state checks) for inspecting a fenced server.
struct RawConn(std::net::TcpStream);

impl RawConn {
    fn command(&mut self, args: &[&[u8]]) -> Result<duplex_client::Reply, String> {
        use std::io::{Read, Write};
        let mut out = Vec::new();
        duplex_proto::encode_request(&mut out, args);
        self.0.write_all(&out).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            if let Some((r, _)) =
                duplex_proto::parse_reply(&buf, &Default::default()).map_err(|e| e.to_string())?
            {
                return match r {
                    duplex_client::Reply::Error(m) => Err(m),
                    r => Ok(r),
                };
            }
            let n = self.0.read(&mut b).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed".into());
            }
            buf.extend_from_slice(&b[..n]);
        }
    }

    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self.command(&[b"GET", key.as_bytes()])? {
            duplex_client::Reply::Bulk(v) => Ok(Some(v)),
            _ => Ok(None),
        }
    }
}

#[test]
fn epoch_rule_refuses_an_old_copy_of_a_server() {
    let t = duplex_testkit::temp_dir();
    let a_port = free_port();
    let mut a = Daemon::start(&t.path().join("a"), a_port, 1);
    let b = Daemon::start(&t.path().join("b"), free_port(), 2);
    // An old copy of the default's disk, at epoch 1.
    a.stop();
    copy_tree(
        &t.path().join("a").join("data"),
        &t.path().join("old").join("data"),
    )
    .unwrap();
    a.restart();
    // The default is fenced and unfenced (epoch 2), e.g. after a rebuild.
    let mut admin = direct_any(a_port);
    assert_eq!(
        admin.command(&[b"DUPLEX.FENCE"]).unwrap(),
        duplex_client::Reply::Integer(2)
    );
    admin.command(&[b"DUPLEX.UNFENCE"]).unwrap();

    let mut c = Client::connect(cfg(&[a_port, b.port])).unwrap();
    let mut only_a = Client::connect(cfg(&[a_port])).unwrap();
    assert!(has_event(&c.take_events(), |e| matches!(
        e,
        Event::Connected { epoch: 2, .. }
    )));
    c.set("k", "new").unwrap();

    // The default's disk is swapped for the old copy: same address, epoch 1, running.
    a.kill9();
    let _old = Daemon::start(&t.path().join("old"), a_port, 1);
    let st = direct_any(a_port).command(&[b"DUPLEX.STATE"]).unwrap();
    assert!(format!("{st:?}").contains("Integer(1)"), "{st:?}");

    c.set("k2", "v").unwrap();
    assert_eq!(
        c.current_index(),
        Some(1),
        "wrote to a server older than one already seen"
    );
    let events = c.take_events();
    assert!(
        has_event(&events, |e| matches!(
            e,
            Event::Down {
                reason: Unavailable::StaleEpoch {
                    seen: 2,
                    reported: 1
                },
                ..
            }
        )),
        "{events:?}"
    );
    let states = c.server_states();
    assert_eq!(
        states[0].unavailable,
        Some(Unavailable::StaleEpoch {
            seen: 2,
            reported: 1
        })
    );
    assert_eq!(states[0].highest_epoch_seen, Some(2));

    // A client whose only server is the stale copy refuses to write at all.
    let e = only_a.set("k3", "v").unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::NoServer { .. }), "{e}");
    assert!(
        m.contains("stale: reports epoch 1, older than epoch 2"),
        "{m}"
    );
    assert_eq!(direct_any(a_port).get("k3").unwrap(), None);
    // A new client has seen nothing and accepts it (the rule is about what a client saw).
    Client::connect(cfg(&[a_port])).unwrap().get("k").unwrap();
}

/// A fake server that reports `running`, then "crashes" on the first data command: it reads
/// the request, closes the connection without answering and stops listening. Returns its
/// port and a handle that yields the command it swallowed.
fn crashing_server() -> (u16, std::thread::JoinHandle<Vec<Vec<u8>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            loop {
                let n = s.read(&mut b).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&b[..n]);
                while let Ok(duplex_proto::Parsed::Request { args, consumed }) =
                    duplex_proto::parse_request(&buf, &Default::default())
                {
                    let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
                    buf.drain(..consumed);
                    if args[0].eq_ignore_ascii_case(b"DUPLEX.STATE") {
                        let mut out = Vec::new();
                        let r = duplex_client::Reply::Array(vec![
                            duplex_client::Reply::Bulk(b"state".to_vec()),
                            duplex_client::Reply::Bulk(b"running".to_vec()),
                            duplex_client::Reply::Bulk(b"epoch".to_vec()),
                            duplex_client::Reply::Integer(1),
                        ]);
                        r.encode(&mut out);
                        s.write_all(&out).unwrap();
                    } else {
                        // Crash: no reply, connection and listener gone.
                        return args;
                    }
                }
            }
        }
        Vec::new()
    });
    (port, h)
}

#[test]
fn read_in_flight_is_retried_once_on_the_next_server() {
    let t = duplex_testkit::temp_dir();
    let b = Daemon::start(&t.path().join("b"), free_port(), 2);
    direct(b.port).set("k", "from-b").unwrap();
    let (fake, h) = crashing_server();
    let mut c =
        Client::connect(cfg(&[fake, b.port]).poll_interval(Duration::from_secs(60))).unwrap();
    assert_eq!(c.current_index(), Some(0));
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"from-b"[..]));
    assert_eq!(h.join().unwrap(), vec![b"GET".to_vec(), b"k".to_vec()]);
    assert_eq!(c.current_index(), Some(1));
    assert_eq!(c.switch_count(), 1);
}

#[test]
fn write_in_flight_is_outcome_unknown_and_not_resent() {
    let t = duplex_testkit::temp_dir();
    let b = Daemon::start(&t.path().join("b"), free_port(), 2);
    let (fake, h) = crashing_server();
    let mut c =
        Client::connect(cfg(&[fake, b.port]).poll_interval(Duration::from_secs(60))).unwrap();
    let e = c.set("k", "v").unwrap_err();
    assert!(
        matches!(&e, Error::OutcomeUnknown { command, .. } if command == "SET"),
        "{e}"
    );
    assert!(e.to_string().contains("not resent"), "{e}");
    assert_eq!(h.join().unwrap()[0], b"SET".to_vec());
    // The client already moved on, and the backup never received the write.
    assert_eq!(c.current_index(), Some(1));
    assert_eq!(c.get("k").unwrap(), None);
    c.set("k", "v").unwrap();
}

#[test]
fn password_is_sent_after_the_state_check() {
    let t = duplex_testkit::temp_dir();
    let a = Daemon::start_with(
        &t.path().join("a"),
        free_port(),
        1,
        &["--requirepass", "s3cret"],
    );
    let mut c = Client::connect(cfg(&[a.port]).password("s3cret")).unwrap();
    c.set("k", "v").unwrap();
    assert_eq!(c.exists(&["k", "k", "nope"]).unwrap(), 2);
    let e = Client::connect(cfg(&[a.port]).password("wrong")).unwrap_err();
    let Error::NoServer { servers } = &e else {
        panic!("{e}")
    };
    assert!(matches!(servers[0].1, Unavailable::AuthFailed(_)), "{e}");
    assert!(e.to_string().contains("requirepass"), "{e}");
    // Without a password the state check passes but commands are refused.
    let mut n = Client::connect(cfg(&[a.port])).unwrap();
    let e = n.get("k").unwrap_err();
    assert!(
        matches!(&e, Error::Server { message, .. } if message.starts_with("NOAUTH")),
        "{e}"
    );
}

#[test]
fn typed_commands() {
    let t = duplex_testkit::temp_dir();
    let a = Daemon::start(&t.path().join("a"), free_port(), 1);
    let mut c = direct(a.port);
    c.mset(&[("a", "1"), ("b", "2")]).unwrap();
    assert_eq!(
        c.mget(&["a", "b", "c"]).unwrap(),
        vec![Some(b"1".to_vec()), Some(b"2".to_vec()), None]
    );
    assert_eq!(c.del(&["a", "c"]).unwrap(), 1);
    assert_eq!(c.exists(&["a", "b"]).unwrap(), 1);
    assert_eq!(
        c.command(&[b"DBSIZE"]).unwrap(),
        duplex_client::Reply::Integer(1)
    );
    let e = c.command(&[b"NOSUCH"]).unwrap_err();
    assert!(matches!(e, Error::Server { .. }), "{e}");
    // The connection stays usable after an error reply.
    assert_eq!(c.get("b").unwrap().as_deref(), Some(&b"2"[..]));
}
