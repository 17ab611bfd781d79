//! Backups and the archive in object storage, end to end against a real S3-compatible
//! server (moto) that the test starts on loopback: duplexd backs up and archives to the
//! bucket, the machine is lost (data directory and local cache), `duplex-recover restore`
//! reads the bucket, and the restored server's digest equals the lost one's; a damaged
//! object is refused with its name; the store killed while the server archives never
//! holds up a write and the uploads resume when it is back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use duplex_cli::resp::{info_fields, text, Conn, ConnectOptions};
use duplex_objstore::{Location, S3Settings, Store};
use duplex_proto::Reply;
use duplex_testkit::daemon::{duplexd, Daemon, Spec};
use duplex_testkit::s3::S3Server;
use duplex_testkit::{addr, free_port};

const SECRET: &str = "testing-secret-do-not-log";

fn answers(port: u16) -> bool {
    Conn::open(&addr(port), &ConnectOptions::default())
        .and_then(|mut c| c.call(&[b"PING"]))
        .is_ok()
}

fn call(port: u16, args: &[&str]) -> Reply {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    Conn::open(&addr(port), &ConnectOptions::default())
        .unwrap()
        .call(&a)
        .unwrap()
}

fn info(port: u16, field: &str) -> String {
    let all = text(&call(port, &["INFO"]));
    info_fields(&all)
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("INFO has no {field}:\n{all}"))
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A config file with the store's endpoint and credentials (never on the command line).
fn config(srv: &S3Server, root: &Path) -> PathBuf {
    let p = root.join("duplexd.toml");
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        &p,
        format!(
            "[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key = \"{SECRET}\"\nallow_http = true\n",
            srv.endpoint()
        ),
    )
    .unwrap();
    p
}

fn launch(srv: &S3Server, root: &Path, extra: &[&str]) -> Daemon {
    let cfg = config(srv, root);
    let mut args: Vec<String> = vec![
        "--config".into(),
        cfg.display().to_string(),
        "--backup-dir".into(),
        srv.url("backups"),
        "--archive-dir".into(),
        srv.url("archive"),
        "--archive-lag-ms".into(),
        "200".into(),
        "--backup-interval".into(),
        "0".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_string()));
    Daemon::launch(Spec {
        bin: duplexd().to_path_buf(),
        root: root.to_path_buf(),
        port: free_port(),
        args,
        ready: answers,
    })
}

fn fill(port: u16, from: usize, n: usize, tag: &str) {
    let mut c = Conn::open(&addr(port), &ConnectOptions::default()).unwrap();
    for i in from..from + n {
        let (k, v) = (
            format!("key:{i:05}"),
            format!("{tag}-{i}-{}", "v".repeat(i % 300)),
        );
        assert_eq!(
            c.call(&[b"SET", k.as_bytes(), v.as_bytes()]).unwrap(),
            Reply::Simple("OK".into())
        );
        if i % 7 == 0 {
            let d = format!("key:{:05}", i / 2);
            c.call(&[b"DEL", d.as_bytes()]).unwrap();
        }
    }
}

/// Waits until every durable byte is in the local spool and a whole upload round found
/// nothing left to send.
fn wait_archived(port: u16) {
    wait_for("the archive to reach the durable WAL", 30, || {
        info(port, "archive_lsn") == info(port, "archive_durable_lsn")
    });
    let mut stable = 0;
    let mut last = String::new();
    wait_for("the uploads to catch up", 60, || {
        let now = info(port, "archive_upload_bytes");
        let idle = info(port, "archive_upload_pending_bytes") == "0"
            && info(port, "archive_upload_status") == "ok";
        stable = if idle && now == last { stable + 1 } else { 0 };
        last = now;
        std::thread::sleep(Duration::from_millis(150));
        stable >= 3
    });
}

fn recover(srv: &S3Server, args: &[&str]) -> common::Out {
    let out = Command::new(common::BIN)
        .args(args)
        .envs(srv.env())
        .output()
        .expect("spawn duplex-recover");
    common::Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn store(srv: &S3Server, prefix: &str) -> Store {
    let env = srv.env();
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    Store::connect(
        &Location::parse(Path::new(&srv.url(prefix))).unwrap(),
        &S3Settings {
            endpoint: get("AWS_ENDPOINT_URL"),
            region: get("AWS_REGION"),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            allow_http: Some(true),
        },
    )
    .unwrap()
}

#[test]
fn back_up_and_archive_to_the_bucket_lose_the_machine_restore_from_the_bucket() {
    let Some(srv) = S3Server::start(
        "back_up_and_archive_to_the_bucket_lose_the_machine_restore_from_the_bucket",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("live");
    let mut d = launch(&srv, &root, &["--backup-drill", "false"]);
    let port = d.port;
    fill(port, 0, 1500, "a");
    let r = call(port, &["DUPLEX.BACKUP"]);
    assert!(!matches!(r, Reply::Error(_)), "backup: {r:?}\n{}", d.log());
    assert_eq!(info(port, "backup_uploads"), "1", "{}", d.log());
    let name = PathBuf::from(info(port, "last_backup_dir"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // After the backup: these reach the bucket only through the archive.
    fill(port, 1000, 1500, "b");
    wait_archived(port);
    // duplex-recover backup --into s3://: into a staging directory, then uploaded.
    let data = root.join("data");
    let manual = srv.url("backups/manual");
    let out = recover(
        &srv,
        &[
            "backup",
            "--data",
            data.to_str().unwrap(),
            "--into",
            &manual,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains("uploaded to s3://duplex-test/backups/manual"),
        "{}",
        out.all()
    );
    let listed = duplex_objstore::backup::list_backups(&store(&srv, "backups")).unwrap();
    assert!(listed.iter().any(|(n, _)| n == "manual"), "{listed:?}");
    let live = text(&call(port, &["DUPLEX.DIGEST"]));
    let all_info = text(&call(port, &["INFO"]));
    assert!(
        all_info.contains("archive_store:s3://duplex-test/archive"),
        "{all_info}"
    );
    assert!(
        !all_info.contains(SECRET),
        "the secret must not appear in INFO"
    );
    d.kill9();
    assert!(
        !d.log().contains(SECRET),
        "the secret must not appear in the log"
    );

    // Lose the machine: the data directory and the local cache and spool.
    std::fs::remove_dir_all(&root).unwrap();

    let target = dir.path().join("restored");
    let url = srv.url(&format!("backups/{name}"));
    let archive = srv.url("archive");
    let into = target.join("data");
    let out = recover(
        &srv,
        &[
            "restore",
            "--backup",
            &url,
            "--archive",
            &archive,
            "--into",
            into.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("from object storage"), "{}", out.all());
    assert!(!out.all().contains(SECRET));
    let staging: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        staging,
        vec![std::ffi::OsString::from("data")],
        "the staging directory is removed"
    );

    // The restored server answers the lost one's digest.
    let r2 = Daemon::launch(Spec {
        bin: duplexd().to_path_buf(),
        root: target.clone(),
        port: free_port(),
        args: vec!["--backup-interval".into(), "0".into()],
        ready: answers,
    });
    assert_eq!(
        text(&call(r2.port, &["DUPLEX.DIGEST"])),
        live,
        "{}",
        out.all()
    );
    drop(r2);

    damaged_objects_are_refused(&srv, dir.path(), &url, &archive);
}

/// A damaged object is refused with its name and exit code 1; a backup whose upload
/// never finished is not a backup.
fn damaged_objects_are_refused(srv: &S3Server, dir: &Path, url: &str, archive: &str) {
    // A damaged object is refused, named, with exit code 1 and nothing restored.
    let st = store(srv, "archive");
    let frag = st
        .list("n1-t1")
        .unwrap()
        .into_iter()
        .rfind(|o| o.rel.contains("/frag-") && o.size > 16)
        .expect("a fragment");
    let mut b = st.get_bytes(&frag.rel).unwrap().to_vec();
    b[8] ^= 0x01;
    st.put_bytes(&frag.rel, b.into()).unwrap();
    let into2 = dir.join("again");
    let out = recover(
        srv,
        &[
            "restore",
            "--backup",
            url,
            "--archive",
            archive,
            "--into",
            into2.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.all());
    let want = format!("s3://duplex-test/archive/{}", frag.rel);
    assert!(
        out.stderr.contains(&want) && out.stderr.contains("corrupt"),
        "names {want}: {}",
        out.all()
    );
    assert!(
        !into2.join("MANIFEST").exists(),
        "nothing restored from damaged input"
    );

    // A backup whose upload never finished (no BACKUP object) is not a backup.
    let bs = store(srv, "backups");
    bs.put_bytes("half/store-000001.dpx", vec![0u8; 10].into())
        .unwrap();
    let out = recover(
        srv,
        &[
            "restore",
            "--backup",
            &srv.url("backups/half"),
            "--into",
            dir.join("x").to_str().unwrap(),
        ],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("not a complete backup"),
        "{}",
        out.all()
    );
}

/// The store SIGKILLed while the server archives: writes go on, INFO shows the uploads
/// failing and lagging; with the store back, the next attempts complete.
#[test]
fn a_dead_store_never_blocks_writes_and_uploads_resume() {
    let Some(mut srv) = S3Server::start("a_dead_store_never_blocks_writes_and_uploads_resume")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = launch(&srv, &dir.path().join("live"), &[]);
    let port = d.port;
    fill(port, 0, 200, "a");
    wait_archived(port);
    srv.kill();
    let t = Instant::now();
    fill(port, 200, 500, "b");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "writes were held up by the dead store"
    );
    wait_for("the uploads to fail", 60, || {
        info(port, "archive_upload_status") == "failing"
    });
    assert!(info(port, "archive_upload_pending_bytes") != "0");
    let err = info(port, "archive_upload_last_error");
    assert!(
        err.contains("s3://duplex-test/archive/n1-t1"),
        "names the object: {err}"
    );
    assert!(!err.contains(SECRET));
    // Local writes still acknowledged while it fails.
    fill(port, 700, 50, "c");
    srv.restart();
    wait_archived(port);
    // The restarted (empty) store got the segment's bytes from offset 0 again, whole.
    let segs = duplex_objstore::archive::list_segments(&store(&srv, "archive"), "n1-t1").unwrap();
    let last = segs.last().expect("a segment uploaded after the restart");
    assert!(last.chain().0 > 0, "{last:?}");
}

/// With the drill on, retention in the bucket runs once the newest backup's drill passed:
/// with keep_backups 1 the older backup goes, the newer stays.
#[test]
fn retention_in_the_bucket_waits_for_the_drill() {
    let Some(srv) = S3Server::start("retention_in_the_bucket_waits_for_the_drill") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = launch(&srv, &dir.path().join("live"), &["--keep-backups", "1"]);
    let port = d.port;
    fill(port, 0, 300, "a");
    let r = call(port, &["DUPLEX.BACKUP", "first"]);
    assert!(!matches!(r, Reply::Error(_)), "{r:?}\n{}", d.log());
    wait_for("the first drill", 60, || info(port, "drills_passed") == "1");
    fill(port, 300, 300, "b");
    let r = call(port, &["DUPLEX.BACKUP", "second"]);
    assert!(!matches!(r, Reply::Error(_)), "{r:?}\n{}", d.log());
    wait_for("the second drill", 60, || {
        info(port, "drills_passed") == "2"
    });
    let bs = store(&srv, "backups");
    wait_for("retention in the bucket", 30, || {
        let names: Vec<String> = duplex_objstore::backup::list_backups(&bs)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names == ["second"]
    });
    assert!(
        bs.list("first").unwrap().is_empty(),
        "every object of the old backup is gone"
    );
    assert!(d.log().contains("retention_remote"), "{}", d.log());
}
