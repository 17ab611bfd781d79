//! Session tokens across a failover (issue 12): two replicating `duplexd`s, the link from
//! B (node 2) to A (node 1) delayed by a proxy, clients of `duplex-client` that write on B,
//! then B is killed and they read on A. Without the token the read misses the write; with
//! it A waits until the write arrived and the read sees it; with a token wait shorter than
//! the delay the read fails with the clear error (nothing sent). The same on failback: A
//! comes back while B's link is slow, and the client waits there for its write on B. Also
//! measures what the pipelined `DUPLEX.TOKEN` costs a write.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{get, secret_file, set, wait_for, NodeSpec, CONVERGE};
use common::Daemon;
use duplex_client::{Client, ClientConfig, Error, Event};
use duplex_testkit::{temp_dir, Dir, Proxy};

/// The delay of B's batches to A.
const DELAY_MS: u64 = 1_500;

fn config(servers: &[String], tokens: bool, wait: Duration) -> ClientConfig {
    ClientConfig::new(servers.iter().cloned())
        .poll_interval(Duration::from_millis(50))
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_secs(20))
        .session_tokens(tokens)
        .token_wait(wait)
}

fn client(servers: &[String], tokens: bool, wait: Duration) -> Client {
    Client::connect(config(servers, tokens, wait)).unwrap()
}

/// Two servers, A and B, each reaching the other through a proxy; waits until linked.
/// Returns the nodes, the daemons and the proxies (`[a_to_b, b_to_a]`).
fn pair(dir: &std::path::Path) -> ([NodeSpec; 2], [Daemon; 2], [Proxy; 2]) {
    let secret = secret_file(dir, "secret", "token-secret");
    let mut nodes = [
        NodeSpec::new(dir, 1, &secret),
        NodeSpec::new(dir, 2, &secret),
    ];
    let target = |n: &NodeSpec| -> SocketAddr { n.addr().parse().unwrap() };
    // b_to_a carries B's link to A: B's batches travel ToTarget.
    let proxies = [
        Proxy::start(target(&nodes[1])).unwrap(),
        Proxy::start(target(&nodes[0])).unwrap(),
    ];
    nodes[0].peers = vec![proxies[0].addr()];
    nodes[1].peers = vec![proxies[1].addr()];
    let ds = [nodes[0].start(), nodes[1].start()];
    set(nodes[1].port, "linked", "x");
    wait_for("the link from B to A", CONVERGE, || {
        get(nodes[0].port, "linked").is_some()
    });
    (nodes, ds, proxies)
}

/// Sets `n` keys on a client; the time it took.
fn timed_sets(c: &mut Client, tag: &str, n: usize) -> Duration {
    let t = Instant::now();
    for i in 0..n {
        c.set(format!("{tag}{i}"), "v").unwrap();
    }
    t.elapsed()
}

#[test]
fn a_client_reads_its_own_writes_after_failover_only_with_the_token() {
    let dir = temp_dir();
    let secret = secret_file(dir.path(), "secret", "token-secret");
    let mut nodes = [
        NodeSpec::new(dir.path(), 1, &secret),
        NodeSpec::new(dir.path(), 2, &secret),
    ];
    let target = |n: &NodeSpec| -> SocketAddr { n.addr().parse().unwrap() };
    // b_to_a carries B's link to A: B's batches travel ToTarget.
    let a_to_b = Proxy::start(target(&nodes[1])).unwrap();
    let b_to_a = Proxy::start(target(&nodes[0])).unwrap();
    nodes[0].peers = vec![a_to_b.addr()];
    nodes[1].peers = vec![b_to_a.addr()];
    let _a = nodes[0].start();
    let mut b = nodes[1].start();
    let (a_port, b_port) = (nodes[0].port, nodes[1].port);
    set(b_port, "linked", "x");
    wait_for("the link from B to A", CONVERGE, || {
        get(a_port, "linked").is_some()
    });

    // B is the default, A the backup.
    let servers = vec![nodes[1].addr(), nodes[0].addr()];

    // The cost of the pipelined token, on an undisturbed link.
    let n = 2_000;
    let mut plain = client(&servers, false, Duration::from_secs(2));
    let mut tokened = client(&servers, true, Duration::from_secs(6));
    let _ = timed_sets(&mut plain, "warm", 200);
    let _ = timed_sets(&mut tokened, "warm", 200);
    // Interleaved rounds: the machine's other load falls on both alike.
    let (mut off, mut on) = (Duration::ZERO, Duration::ZERO);
    for r in 0..10 {
        off += timed_sets(&mut plain, &format!("off{r}-"), n / 10);
        on += timed_sets(&mut tokened, &format!("on{r}-"), n / 10);
    }
    eprintln!(
        "session token cost: {n} SETs without {:.1} us/SET, with DUPLEX.TOKEN pipelined {:.1} us/SET",
        off.as_secs_f64() * 1e6 / n as f64,
        on.as_secs_f64() * 1e6 / n as f64
    );

    // Now B's batches reach A late. A's acks are held even longer, so the link does not
    // notice B's death before the delayed batches are through.
    let mut short = client(&servers, true, Duration::from_millis(200));
    b_to_a.set_delay(Dir::ToTarget, DELAY_MS);
    b_to_a.set_delay(Dir::ToClient, 20_000);
    plain.set("mine-plain", "1").unwrap();
    short.set("mine-short", "1").unwrap();
    tokened.set("mine-token", "1").unwrap();
    // Long enough for B to have sent the batches, far shorter than the delay.
    std::thread::sleep(Duration::from_millis(150));
    let killed = Instant::now();
    b.kill9();

    // Without the token: A answers at once, without the write.
    assert_eq!(
        plain.get("mine-plain").unwrap(),
        None,
        "without a token the read on A should miss the write still in flight (the delay is \
         {DELAY_MS} ms)"
    );
    assert_eq!(plain.current_server(), Some(nodes[0].addr().as_str()));

    // A token wait shorter than the delay: the clear error, nothing sent.
    match short.get("mine-short") {
        Err(Error::OwnWritesNotVisible { server, message }) => {
            assert_eq!(server, nodes[0].addr());
            assert!(message.starts_with("TIMEOUT"), "{message}");
        }
        other => panic!("expected OwnWritesNotVisible, got {other:?}"),
    }
    assert!(
        killed.elapsed() < Duration::from_millis(DELAY_MS),
        "the test ran too slowly to tell the cases apart; \
         raise DELAY_MS"
    );

    // With the token: A waits until B's write arrived, then the read sees it.
    let t = Instant::now();
    assert_eq!(
        tokened.get("mine-token").unwrap().as_deref(),
        Some(&b"1"[..]),
        "with the token the read on A must see the client's own write"
    );
    eprintln!("the token wait on A took {:?}", t.elapsed());
    // Once the writes arrived, the short-wait client reads its own too.
    wait_for("the delayed batches on A", CONVERGE, || {
        get(a_port, "mine-short").is_some()
    });
    assert_eq!(short.get("mine-short").unwrap().as_deref(), Some(&b"1"[..]));
}

/// Failback: the client's default A stops, it writes on B, A comes back while B's link to
/// A is slow; the client fails back and waits on A for its write on B before reading.
#[test]
fn a_client_reads_its_own_writes_after_failback() {
    let dir = temp_dir();
    let (nodes, [mut a, _b], [_a_to_b, b_to_a]) = pair(dir.path());
    let a_port = nodes[0].port;
    let servers = vec![nodes[0].addr(), nodes[1].addr()];
    let mut c =
        Client::connect(config(&servers, true, Duration::from_secs(9)).failback(true)).unwrap();
    c.set("k", "on-a").unwrap();
    // Its write on A reached B before A is lost (else B would rightly make it wait).
    wait_for("A's write on B", CONVERGE, || {
        get(nodes[1].port, "k").as_deref() == Some("on-a")
    });
    b_to_a.set_delay(Dir::ToTarget, DELAY_MS);
    a.kill9();
    c.set("k", "on-b").unwrap();
    assert_eq!(c.current_server(), Some(nodes[1].addr().as_str()));
    a.restart();
    wait_for("A answering again", CONVERGE, || common::answers(a_port));
    assert_eq!(
        get(a_port, "k").as_deref(),
        Some("on-a"),
        "B's write has not reached A yet (the link is slowed)"
    );
    wait_for("the client failing back to A", CONVERGE, || {
        assert_eq!(
            c.get("k").unwrap().as_deref(),
            Some(&b"on-b"[..]),
            "never back in time"
        );
        c.current_server() == Some(nodes[0].addr().as_str())
    });
    assert!(c
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::FailedBack { .. })));
}

/// Sends `req` on a fresh connection and reads until the reply ends with `end`.
fn raw_until(port: u16, req: &str, end: &[u8], within: Duration) -> (Vec<u8>, Duration) {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.ends_with(end) {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    (got, t.elapsed())
}

/// The commands themselves: DUPLEX.TOKEN after a write, DUPLEX.WAIT on the writing server
/// (+OK, -TOKENLOST above its durable position), -NOREPL without peers, and a waiting
/// DUPLEX.WAIT does not hold up other clients (slow work, off the event loop).
#[test]
fn token_and_wait_commands() {
    use common::ServerDaemon;
    let dir = temp_dir();
    // Without peers.
    let solo = Daemon::start_in(&dir.path().join("solo"), &["--node-id", "7"]);
    let mut c = solo.conn();
    let _: () = redis::cmd("SET").arg("k2").arg("v").query(&mut c).unwrap();
    let (node, pos): (u64, u64) = redis::cmd("DUPLEX.TOKEN").query(&mut c).unwrap();
    assert_eq!(node, 7);
    assert!(pos > 0);
    let ok: String = redis::cmd("DUPLEX.WAIT")
        .arg(7)
        .arg(pos)
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    let lost = redis::cmd("DUPLEX.WAIT")
        .arg(7)
        .arg(pos + 1000)
        .arg(0)
        .query::<String>(&mut c)
        .unwrap_err();
    assert_eq!(lost.code(), Some("TOKENLOST"), "{lost}");
    let norepl = redis::cmd("DUPLEX.WAIT")
        .arg(3)
        .arg(5)
        .arg(1000)
        .query::<String>(&mut c)
        .unwrap_err();
    assert_eq!(norepl.code(), Some("NOREPL"), "{norepl}");

    // With a peer that never answers: the wait runs out, and others are served meanwhile.
    let secret = secret_file(dir.path(), "secret", "token-secret");
    let secret = secret.display().to_string();
    let peered = Daemon::start_in(
        &dir.path().join("peered"),
        &[
            "--node-id",
            "8",
            "--peer",
            "127.0.0.1:1",
            "--cluster-secret-file",
            &secret,
        ],
    );
    let port = peered.port;
    let waiter = std::thread::spawn(move || {
        raw_until(
            port,
            "DUPLEX.WAIT 3 5 1500\r\nPING\r\n",
            b"+PONG\r\n",
            Duration::from_secs(10),
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    let (pong, took) = raw_until(port, "PING\r\n", b"+PONG\r\n", Duration::from_secs(10));
    assert_eq!(pong, b"+PONG\r\n");
    assert!(
        took < Duration::from_millis(500),
        "a waiting DUPLEX.WAIT held up another client for {took:?}"
    );
    let (got, waited) = waiter.join().unwrap();
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.starts_with("-TIMEOUT "), "{got}");
    assert!(
        got.ends_with("+PONG\r\n"),
        "replies in request order: {got}"
    );
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
}
