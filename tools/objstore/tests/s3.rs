//! Against a real S3-compatible server (moto) started on loopback: multipart uploads and
//! verified ranged reads, an upload interrupted by killing the server, damaged objects
//! named with their offset, and the archive mirror's fragments and seals.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duplex_objstore::archive::{download_lineage, frag_name, list_segments};
use duplex_objstore::mirror::Mirror;
use duplex_objstore::{Error, Location, S3Settings, Store, PART_SIZE};
use duplex_testkit::s3::S3Server;

fn settings(s: &S3Server) -> S3Settings {
    let env = s.env();
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    S3Settings {
        endpoint: get("AWS_ENDPOINT_URL"),
        region: get("AWS_REGION"),
        access_key_id: get("AWS_ACCESS_KEY_ID"),
        secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
        allow_http: Some(true),
    }
}

fn store(s: &S3Server, prefix: &str) -> Store {
    let loc = Location::parse(Path::new(&s.url(prefix))).unwrap();
    Store::connect(&loc, &settings(s)).unwrap()
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn multipart_upload_and_ranged_download_round_trip() {
    let Some(srv) = S3Server::start("multipart_upload_and_ranged_download_round_trip") else {
        return;
    };
    let st = store(&srv, "rt");
    let dir = tempfile::tempdir().unwrap();
    for (i, len) in [
        0usize,
        1000,
        PART_SIZE as usize,
        2 * PART_SIZE as usize + 12_345,
    ]
    .into_iter()
    .enumerate()
    {
        let src = dir.path().join(format!("f{i}"));
        let bytes = data(len, i as u64);
        std::fs::write(&src, &bytes).unwrap();
        let sent = Mutex::new(0u64);
        let (n, crcs) = st
            .put_file(&format!("f{i}"), &src, &|b| *sent.lock().unwrap() += b)
            .unwrap();
        assert_eq!(n, len as u64);
        assert_eq!(*sent.lock().unwrap(), len as u64);
        assert_eq!(crcs.len() as u64, n.div_ceil(PART_SIZE).max(1));
        let dst = dir.path().join(format!("g{i}"));
        st.get_file(&format!("f{i}"), n, &crcs, &dst, &|_| {})
            .unwrap();
        assert!(
            std::fs::read(&dst).unwrap() == bytes,
            "file {i} differs after the round trip"
        );
    }
    assert_eq!(st.head("f3").unwrap(), Some(2 * PART_SIZE + 12_345));
    assert_eq!(st.head("nothing").unwrap(), None);
    // The credentials appear nowhere in what a store shows.
    assert!(!format!("{st:?} {}", st.url()).contains("testing-secret"));
}

/// The server SIGKILLed while a multipart upload is in flight: the object never appears
/// before completion, the upload fails with an error naming it, and the next attempt (the
/// server back) completes and reads back verified.
#[test]
fn server_killed_mid_upload_then_next_attempt_completes() {
    let Some(srv) = S3Server::start("server_killed_mid_upload_then_next_attempt_completes") else {
        return;
    };
    let srv = Mutex::new(srv);
    let st = store(&srv.lock().unwrap(), "kill");
    let watcher = store(&srv.lock().unwrap(), "kill");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    let bytes = data(6 * PART_SIZE as usize, 7);
    std::fs::write(&src, &bytes).unwrap();
    let parts = Mutex::new(0);
    let visible_early = Mutex::new(None);
    let r = st.put_file("big", &src, &|_| {
        let mut p = parts.lock().unwrap();
        *p += 1;
        if *p == 1 {
            // From another thread: this one is inside the upload's runtime.
            let seen = std::thread::scope(|sc| sc.spawn(|| watcher.head("big")).join());
            *visible_early.lock().unwrap() = seen.ok().map(|r| r.map(|h| h.is_some()));
            srv.lock().unwrap().kill();
        }
    });
    let e = r.expect_err("the upload cannot complete with the server killed");
    assert!(
        e.to_string().contains("s3://duplex-test/kill/big"),
        "the error names the object: {e}"
    );
    assert!(!e.to_string().contains("testing-secret"), "{e}");
    assert!(
        matches!(*visible_early.lock().unwrap(), Some(Ok(false))),
        "a part uploaded must not make the object visible: {:?}",
        visible_early.lock().unwrap()
    );
    srv.lock().unwrap().restart();
    assert_eq!(st.head("big").unwrap(), None, "nothing half-taken");
    let (n, crcs) = st.put_file("big", &src, &|_| {}).unwrap();
    let dst = dir.path().join("back");
    st.get_file("big", n, &crcs, &dst, &|_| {}).unwrap();
    assert!(std::fs::read(&dst).unwrap() == bytes);
}

/// A damaged object is refused with its name and the byte range of the damage.
#[test]
fn corrupt_objects_are_named_with_their_offset() {
    let Some(srv) = S3Server::start("corrupt_objects_are_named_with_their_offset") else {
        return;
    };
    let st = store(&srv, "bad");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    let mut bytes = data(PART_SIZE as usize + 100, 3);
    std::fs::write(&src, &bytes).unwrap();
    let (n, crcs) = st.put_file("f", &src, &|_| {}).unwrap();
    bytes[PART_SIZE as usize + 5] ^= 0x40;
    st.put_bytes("f", bytes.into()).unwrap();
    let e = st
        .get_file("f", n, &crcs, &dir.path().join("g"), &|_| {})
        .unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { offset, .. } if offset == PART_SIZE),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("s3://duplex-test/bad/f") && msg.contains(&format!("[{PART_SIZE}, ")),
        "{msg}"
    );

    // An archive fragment whose bytes do not match the CRC in its name.
    let name = frag_name(0, 5, crc32c::crc32c(b"hello"));
    st.put_bytes(
        &format!("n1-t1/00000000000000000001.wal/{name}"),
        b"hellO".to_vec().into(),
    )
    .unwrap();
    let e = download_lineage(&st, 1, 1, 1, &dir.path().join("a"), &|_| {}).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "s3://duplex-test/bad/n1-t1/00000000000000000001.wal/{name}"
        )),
        "{e}"
    );
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mirror uploads the growing `.partial` as fragments of the new bytes only, seals the
/// segment once it closes (and removes it from the spool), and the lineage downloads back
/// byte for byte.
#[test]
fn mirror_uploads_fragments_and_seals() {
    let Some(srv) = S3Server::start("mirror_uploads_fragments_and_seals") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let lin = spool.join("n1-t1");
    std::fs::create_dir_all(&lin).unwrap();
    let seg = "00000000000000000001.wal";
    let all = data(3 * PART_SIZE as usize / 2, 11);
    let partial = lin.join(format!("{seg}.partial"));
    std::fs::write(&partial, &all[..1000]).unwrap();
    let m = Mirror::start(
        store(&srv, "arch"),
        spool.clone(),
        Duration::from_millis(50),
    );
    let st = store(&srv, "arch");
    let covered = |st: &Store| {
        list_segments(st, "n1-t1")
            .unwrap()
            .first()
            .map_or(0, |s| s.chain().0)
    };
    wait_for("the first fragment", || covered(&st) == 1000);
    std::fs::write(&partial, &all[..5000]).unwrap();
    wait_for("the second fragment", || covered(&st) == 5000);
    let s = &list_segments(&st, "n1-t1").unwrap()[0];
    assert_eq!(s.frags.len(), 2, "only the new bytes go up: {:?}", s.frags);
    assert_eq!(s.sealed, None);
    std::fs::write(&partial, &all).unwrap();
    std::fs::rename(&partial, lin.join(seg)).unwrap();
    std::fs::write(lin.join("00000000000000000999.wal.partial"), &all[..10]).unwrap();
    wait_for("the seal and the spool file gone", || {
        !lin.join(seg).exists()
    });
    wait_for("the next segment's fragment", || {
        m.status().uploaded_bytes == all.len() as u64 + 10
    });
    let st2 = m.status();
    assert_eq!(st2.status, "ok");
    assert_eq!(st2.uploaded_bytes, all.len() as u64 + 10);
    m.stop();
    let back = dir.path().join("back");
    let d = download_lineage(&st, 1, 1, 1, &back, &|_| {}).unwrap();
    assert_eq!(d.segments, 2);
    assert!(std::fs::read(back.join("n1-t1").join(seg)).unwrap() == all);
    assert_eq!(
        std::fs::read(back.join("n1-t1/00000000000000000999.wal.partial")).unwrap(),
        &all[..10]
    );
}

/// Upload and download throughput of the checked paths against the store's own raw rate
/// in the same run: `cargo test -p duplex-objstore --test s3 throughput -- --ignored
/// --nocapture` (figures in docs/BENCHMARKS.md).
#[test]
#[ignore = "a measurement, run by hand"]
fn throughput() {
    let Some(srv) = S3Server::start("throughput") else {
        return;
    };
    let st = store(&srv, "bench");
    let mib = std::env::var("DUPLEX_S3_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128u64);
    let parts = (mib << 20) / PART_SIZE;
    let chunk: bytes::Bytes = data(PART_SIZE as usize, 5).into();
    let total = parts * PART_SIZE;
    let rate = |secs: f64| total as f64 / secs / (1 << 20) as f64;
    // Raw: plain PUT and GET of PART_SIZE objects, one at a time, then 4 at a time.
    let t = Instant::now();
    for i in 0..parts {
        st.put_bytes(&format!("raw/{i}"), chunk.clone()).unwrap();
    }
    let raw_put1 = rate(t.elapsed().as_secs_f64());
    let t = Instant::now();
    for i in 0..parts {
        st.get_bytes(&format!("raw/{i}")).unwrap();
    }
    let raw_get1 = rate(t.elapsed().as_secs_f64());
    let par = |f: &(dyn Fn(u64) + Sync)| {
        let t = Instant::now();
        std::thread::scope(|s| {
            for w in 0..4 {
                s.spawn(move || (w..parts).step_by(4).for_each(f));
            }
        });
        rate(t.elapsed().as_secs_f64())
    };
    let raw_put4 = par(&|i| st.put_bytes(&format!("raw4/{i}"), chunk.clone()).unwrap());
    let raw_get4 = par(&|i| drop(st.get_bytes(&format!("raw4/{i}")).unwrap()));
    // Checked: put_file (multipart, 4 parts in flight, CRC32C per part) and get_file
    // (ranged reads, 4 in flight, each checked, written at its offset, fsynced).
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src).unwrap();
        for _ in 0..parts {
            f.write_all(&chunk).unwrap();
        }
    }
    let t = Instant::now();
    let (n, crcs) = st.put_file("file", &src, &|_| {}).unwrap();
    let up = rate(t.elapsed().as_secs_f64());
    let t = Instant::now();
    st.get_file("file", n, &crcs, &dir.path().join("dst"), &|_| {})
        .unwrap();
    let down = rate(t.elapsed().as_secs_f64());
    let ranged4 = par(&|i| {
        let r = i * PART_SIZE..(i + 1) * PART_SIZE;
        assert_eq!(st.get_range("file", r).unwrap().len() as u64, PART_SIZE);
    });
    let t = Instant::now();
    let mut crc = 0;
    for _ in 0..parts {
        crc ^= crc32c::crc32c(&chunk);
    }
    let crc_rate = rate(t.elapsed().as_secs_f64());
    println!("  raw ranged GET of the multipart object, 4 at a time: {ranged4:.0} MiB/s; CRC32C alone in this build: {crc_rate:.0} MiB/s ({crc:08x})");
    println!(
        "object store throughput, {mib} MiB in {} MiB parts (moto on loopback):",
        PART_SIZE >> 20
    );
    println!("  raw PUT, 1 at a time: {raw_put1:.0} MiB/s; 4 at a time: {raw_put4:.0} MiB/s");
    println!("  raw GET, 1 at a time: {raw_get1:.0} MiB/s; 4 at a time: {raw_get4:.0} MiB/s");
    println!(
        "  upload (put_file, multipart, checksummed): {up:.0} MiB/s = {:.2}x raw PUT x4",
        up / raw_put4
    );
    println!(
        "  download (get_file, ranged, verified, fsynced): {down:.0} MiB/s = {:.2}x raw GET x4",
        down / raw_get4
    );
}

/// Archive retention in the bucket: segments wholly below the kept backup's checkpoint go
/// (all their objects); the one holding it, the newest, and other lineages stay.
#[test]
fn archive_retention_deletes_only_segments_wholly_below() {
    let Some(srv) = S3Server::start("archive_retention_deletes_only_segments_wholly_below") else {
        return;
    };
    let st = store(&srv, "ret");
    let seg = |lsn: u64, sealed: bool| {
        let dir = format!("n1-t1/{lsn:020}.wal");
        let b = data(100, lsn);
        let crc = crc32c::crc32c(&b);
        st.put_bytes(&format!("{dir}/{}", frag_name(0, 100, crc)), b.into())
            .unwrap();
        if sealed {
            st.put_bytes(
                &format!("{dir}/{}", duplex_objstore::archive::seal_name(100, crc)),
                bytes::Bytes::new(),
            )
            .unwrap();
        }
    };
    seg(1, true);
    seg(100, true);
    seg(200, true);
    seg(300, false);
    // Keep everything from LSN 150 on: segment 1 (ends before 100) goes; 100 holds 150.
    assert_eq!(duplex_objstore::archive::prune(&st, 1, 1, 150).unwrap(), 1);
    let left: Vec<u64> = list_segments(&st, "n1-t1")
        .unwrap()
        .iter()
        .map(|s| s.first_lsn)
        .collect();
    assert_eq!(left, [100, 200, 300]);
    assert!(st
        .list("n1-t1/00000000000000000001.wal")
        .unwrap()
        .is_empty());
    // Far ahead: never the newest (here the growing, unsealed one).
    assert_eq!(
        duplex_objstore::archive::prune(&st, 1, 1, 10_000).unwrap(),
        2
    );
    let left: Vec<u64> = list_segments(&st, "n1-t1")
        .unwrap()
        .iter()
        .map(|s| s.first_lsn)
        .collect();
    assert_eq!(left, [300]);
    // Another lineage is untouched.
    assert_eq!(
        duplex_objstore::archive::prune(&st, 2, 1, 10_000).unwrap(),
        0
    );
}
