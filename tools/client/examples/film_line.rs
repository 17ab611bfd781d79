//! A machine on the film line: it writes its production count through the failover client
//! to `[default, backup]` and prints every switch, so an operator can stop, fence or kill a
//! server and watch production continue.
//!
//! ```text
//! cargo run -p duplex-client --example film_line -- [--machine NAME] [--count N]
//!     [--interval-ms MS] [--manual] [--failback] [--password P] [DEFAULT [BACKUP...]]
//! ```
//! Defaults: machine `line1`, 100 rolls, 200 ms apart, servers 127.0.0.1:7379 and
//! 127.0.0.1:7380, automatic switching, no failback.
//!
//! Each roll sets `film:<machine>:roll:<n>` (the roll's record) and `film:<machine>:count`
//! in one MSET. When a write's outcome is unknown (its server went away mid-request), the
//! machine reads the roll back from the server it now uses and writes it again only if it
//! is missing: what a real application must do, since the client never resends on its own.
//! Exit status: 0 when every roll was recorded, 1 otherwise.

use std::time::Duration;

use duplex_client::{Client, ClientConfig, Error, SwitchMode};

struct Args {
    machine: String,
    count: u64,
    interval: Duration,
    cfg: ClientConfig,
}

fn parse_args() -> Result<Args, String> {
    let mut machine = "line1".to_owned();
    let mut count = 100;
    let mut interval = Duration::from_millis(200);
    let mut servers = Vec::new();
    let mut manual = false;
    let mut failback = false;
    let mut password = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--machine" => machine = value("--machine")?,
            "--count" => {
                count = value("--count")?
                    .parse()
                    .map_err(|e| format!("--count: {e}"))?
            }
            "--interval-ms" => {
                interval = Duration::from_millis(
                    value("--interval-ms")?
                        .parse()
                        .map_err(|e| format!("--interval-ms: {e}"))?,
                )
            }
            "--password" => password = Some(value("--password")?),
            "--manual" => manual = true,
            "--failback" => failback = true,
            "-h" | "--help" => {
                return Err(
                    "usage: film_line [--machine NAME] [--count N] [--interval-ms MS] \
                     [--manual] [--failback] [--password P] [DEFAULT [BACKUP...]]"
                        .into(),
                )
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => servers.push(s.to_owned()),
        }
    }
    if servers.is_empty() {
        servers = vec!["127.0.0.1:7379".into(), "127.0.0.1:7380".into()];
    }
    let mut cfg = ClientConfig::new(servers)
        .poll_interval(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(500))
        .switch_mode(if manual {
            SwitchMode::Manual
        } else {
            SwitchMode::Automatic
        })
        .failback(failback);
    cfg.password = password;
    Ok(Args {
        machine,
        count,
        interval,
        cfg,
    })
}

fn report(c: &mut Client) {
    for e in c.take_events() {
        println!("  [switch] {e}");
    }
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(m) => {
            eprintln!("film_line: {m}");
            std::process::exit(2);
        }
    };
    let mut c = loop {
        match Client::connect(a.cfg.clone()) {
            Ok(c) => break c,
            Err(e) => {
                eprintln!("film_line: {e}; retrying in 1 s");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    report(&mut c);
    let mut recorded = 0;
    let mut roll = 1;
    while roll <= a.count {
        let key = format!("film:{}:roll:{roll}", a.machine);
        let count_key = format!("film:{}:count", a.machine);
        let record = format!("roll={roll} machine={} meters=1500", a.machine);
        let res = c.mset(&[
            (key.as_str(), record.as_str()),
            (&count_key, &roll.to_string()),
        ]);
        report(&mut c);
        match res {
            Ok(()) => {
                println!(
                    "{}: roll {roll} recorded on {}",
                    a.machine,
                    c.current_server().unwrap_or("?")
                );
                recorded += 1;
                roll += 1;
            }
            Err(Error::OutcomeUnknown { server, .. }) => {
                println!(
                    "{}: roll {roll}: outcome unknown on {server}; checking",
                    a.machine
                );
                // Read back from wherever the client is now; rewrite only if missing.
                match c.get(&key) {
                    Ok(Some(_)) => {
                        println!("{}: roll {roll} is there", a.machine);
                        recorded += 1;
                        roll += 1;
                    }
                    Ok(None) => println!("{}: roll {roll} is missing; writing it again", a.machine),
                    Err(e) => {
                        println!("{}: cannot check roll {roll} yet: {e}", a.machine);
                        std::thread::sleep(a.interval);
                    }
                }
                report(&mut c);
                continue;
            }
            Err(Error::ServerDown { server, reason }) => {
                println!(
                    "{}: {server} is down ({reason}); the operator switches",
                    a.machine
                );
                match c.switch() {
                    Ok(to) => println!("{}: switched to {to}", a.machine),
                    Err(e) => {
                        println!("{}: {e}", a.machine);
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                report(&mut c);
                continue;
            }
            Err(e) => {
                println!("{}: roll {roll} not recorded: {e}", a.machine);
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        std::thread::sleep(a.interval);
    }
    println!(
        "{}: {recorded} of {} rolls recorded, {} switches",
        a.machine,
        a.count,
        c.switch_count()
    );
    std::process::exit(if recorded == a.count { 0 } else { 1 });
}
