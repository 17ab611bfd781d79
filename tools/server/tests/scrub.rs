//! A damaged store block that no read touches is found by the background scrub after a
//! start: the server comes up, and INFO and the log name the damaged file and offset
//! (before, it was found only when a read hit it).

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, ServerDaemon};
use redis::Commands;

fn info_duplex(c: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("duplex").query(c).unwrap()
}

fn field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("INFO has no {name}: {info}"))
        .trim()
}

#[test]
fn the_scrub_reports_a_damaged_block_no_read_touches() {
    let t = duplex_testkit::temp_dir();
    let mut d = Daemon::start_in(t.path(), &[]);
    let mut c = d.conn();
    for i in 0..4000u32 {
        let _: () = c.set(format!("key{i:05}"), vec![b'v'; 200]).unwrap();
    }
    let _: () = redis::cmd("DUPLEX.CHECKPOINT").query(&mut c).unwrap();
    let info = info_duplex(&mut c);
    assert_eq!(field(&info, "scrub_damage"), "", "a healthy store: {info}");
    d.stop();

    // Flip a byte in the middle of the store: a leaf block (the checkpoint, the root and
    // the branches are at the end of the append-only file, where open reads them).
    let data = t.path().join("data");
    let store = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "dpx"))
        .expect("a store file");
    let mut bytes = std::fs::read(&store).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x5a;
    std::fs::write(&store, &bytes).unwrap();

    d.restart();
    let mut c = d.conn();
    let deadline = Instant::now() + Duration::from_secs(20);
    let info = loop {
        let info = info_duplex(&mut c);
        if field(&info, "scrub_status") != "running" || Instant::now() > deadline {
            break info;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        field(&info, "scrub_status"),
        "damage",
        "{info}\n{}",
        d.log()
    );
    let damage = field(&info, "scrub_damage");
    assert!(
        damage.contains(&*store.file_name().unwrap().to_string_lossy())
            && damage.contains("at offset"),
        "the damage names the file and offset: {damage}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log().contains("scrub_damage") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log().contains("scrub_damage"), "logged: {}", d.log());
    let st: Vec<String> = redis::cmd("DUPLEX.STATE").query(&mut c).unwrap();
    assert_eq!(
        st[10..12],
        ["scrub", "damage"],
        "the state table says so too"
    );
    // Keys outside the damaged block are still served.
    let _: Option<Vec<u8>> = c.get("key00000").unwrap_or(None);
    d.stop();
}
