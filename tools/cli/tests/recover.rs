//! End-to-end tests of the `duplex-recover` binary: each test builds a real database on
//! real temporary directories (WAL segments of 64 KiB, archived), takes a backup, writes
//! more, archives everything, then spawns the binary and checks its exit code, its output
//! and the database it restores against the live one or a model.

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use common::run;
use duplex_engine::{Config, Database, Digest, SyncPolicy};

/// Writes before the backup, and after it.
const BEFORE: u32 = 600;
const AFTER: u32 = 2400;
/// The write (counted after the backup) whose LSN the point-in-time test restores to.
const PITR_AT: u32 = 1500;

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

fn cfg(archive: &Path) -> Config {
    Config {
        archive_dir: Some(archive.to_path_buf()),
        segment_size: 64 << 10,
        // Rotation flushes and fsyncs; per-write fsyncs would only make the test slow.
        sync: SyncPolicy::Never,
        background: false,
        ..Config::default()
    }
}

fn contents(db: &Database) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.scan(Bound::Unbounded, Bound::Unbounded)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("items")
}

/// Opens a restored database (as node 1, without an archive) and returns its digest,
/// contents and last LSN.
fn open_restored(dir: &Path) -> (Digest, BTreeMap<Vec<u8>, Vec<u8>>, u64) {
    let db = Database::open(
        dir,
        Config {
            background: false,
            ..Config::default()
        },
    )
    .expect("open restored");
    let r = (
        db.digest().expect("digest"),
        contents(&db),
        db.wal().last_lsn(),
    );
    db.close().expect("close");
    r
}

struct Fixture {
    t: duplex_testkit::TempDir,
    data: PathBuf,
    archive: PathBuf,
    backup: PathBuf,
    db: Database,
    checkpoint_lsn: u64,
    last_lsn: u64,
    digest: Digest,
    /// The LSN of write `PITR_AT` after the backup, and the model's state right after it.
    pitr: (u64, BTreeMap<Vec<u8>, Vec<u8>>),
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.t.path().join(name)
    }

    /// Archives everything written so far and refreshes the expected digest and LSN.
    fn archive_all(&mut self) {
        self.db.wal().rotate().expect("rotate");
        self.db.wal().archive_closed().expect("archive");
        self.last_lsn = self.db.wal().last_lsn();
        self.digest = self.db.digest().expect("digest");
    }
}

fn write(db: &Database, i: u32, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> u64 {
    let k = format!("key-{:04}", i % 701).into_bytes();
    if i.is_multiple_of(7) {
        model.remove(&k);
        db.delete(&k).expect("delete")
    } else {
        let v = format!("value {i} ").repeat(10).into_bytes();
        model.insert(k.clone(), v.clone());
        db.put(&k, &v).expect("put")
    }
}

fn fixture() -> Fixture {
    let t = duplex_testkit::temp_dir();
    let (data, archive, backup) = (
        t.path().join("data"),
        t.path().join("archive"),
        t.path().join("backup"),
    );
    let db = Database::open(&data, cfg(&archive)).expect("open");
    let mut model = BTreeMap::new();
    for i in 0..BEFORE {
        write(&db, i, &mut model);
    }
    let report = db.backup(&backup, None).expect("backup");
    let mut pitr = (0, BTreeMap::new());
    for i in 0..AFTER {
        let lsn = write(&db, BEFORE + i, &mut model);
        if i == PITR_AT {
            pitr = (lsn, model.clone());
        }
    }
    assert_eq!(contents(&db), model);
    let mut f = Fixture {
        t,
        data,
        archive,
        backup,
        db,
        checkpoint_lsn: report.manifest.checkpoint_lsn,
        last_lsn: 0,
        digest: Digest::default(),
        pitr,
    };
    f.archive_all();
    assert!(f.last_lsn > f.checkpoint_lsn + u64::from(AFTER) - 1);
    f
}

/// The archived segments of node 1's first timeline (the archive keeps one directory per
/// lineage, FORMAT.md section 11).
fn archived_segments(root: &Path) -> Vec<PathBuf> {
    let dir = duplex_wal::archive_subdir(root, 1, 1);
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    segs
}

fn copy_dir(from: &Path, to: &Path) {
    duplex_testkit::copy_tree(from, to).expect("copy a directory");
}

#[test]
fn restore_rolls_the_archive_forward_to_the_live_state() {
    let f = fixture();
    let into = f.path("restored");
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&f.backup),
        OsStr::new("--archive"),
        os(&f.archive),
        OsStr::new("--into"),
        os(&into),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let records = f.last_lsn - f.checkpoint_lsn;
    assert!(
        out.stdout.contains(&format!("{records} records")),
        "summary names the record count {records}: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("final LSN: {}", f.last_lsn)),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&f.digest.to_string()), "{}", out.stdout);
    let (digest, restored, last) = open_restored(&into);
    assert_eq!(digest, f.digest);
    assert_eq!(restored, contents(&f.db));
    assert_eq!(last, f.last_lsn);
}

#[test]
fn a_non_empty_target_is_refused_without_force_and_emptied_with_it() {
    let f = fixture();
    let into = f.path("occupied");
    std::fs::create_dir_all(into.join("old")).expect("mkdir");
    std::fs::write(into.join("old").join("junk"), b"junk").expect("write");
    let outside = f.path("outside-file");
    std::fs::write(&outside, b"keep").expect("write");
    std::os::unix::fs::symlink(&outside, into.join("link")).expect("symlink");
    let args = |force: bool| {
        let mut a = vec![
            OsStr::new("restore").to_owned(),
            "--backup".into(),
            f.backup.clone().into_os_string(),
            "--archive".into(),
            f.archive.clone().into_os_string(),
            "--into".into(),
            into.clone().into_os_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let out = run(args(false));
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("not empty") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    assert!(
        into.join("old").join("junk").is_file(),
        "nothing touched without --force"
    );

    let out = run(args(true));
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!into.join("old").exists());
    assert_eq!(
        std::fs::read(&outside).expect("read"),
        b"keep",
        "a link's target is kept"
    );
    assert_eq!(open_restored(&into).0, f.digest);

    // A target that holds the backup being read is never emptied.
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&f.backup),
        OsStr::new("--into"),
        f.t.path().as_os_str(),
        OsStr::new("--force"),
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(f.backup.join("BACKUP").is_file());
}

#[test]
fn until_lsn_gives_the_state_right_after_that_record() {
    let f = fixture();
    let (lsn, model) = &f.pitr;
    let into = f.path("pitr");
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&f.backup),
        OsStr::new("--archive"),
        os(&f.archive),
        OsStr::new("--into"),
        os(&into),
        OsStr::new("--until-lsn"),
        OsStr::new(&lsn.to_string()),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains(&format!("final LSN: {lsn}")),
        "{}",
        out.stdout
    );
    let (_, restored, last) = open_restored(&into);
    assert_eq!(last, *lsn);
    assert_eq!(&restored, model, "state after LSN {lsn}");

    // Before the backup's checkpoint: refused as a usage error, nothing written.
    let early = f.path("too-early");
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&f.backup),
        OsStr::new("--archive"),
        os(&f.archive),
        OsStr::new("--into"),
        os(&early),
        OsStr::new("--until-lsn"),
        OsStr::new(&(f.checkpoint_lsn - 1).to_string()),
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(!early.exists());

    // A time after every write restores everything; a malformed time is a usage error.
    let all = f.path("until-time");
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&f.backup),
        OsStr::new("--archive"),
        os(&f.archive),
        OsStr::new("--into"),
        os(&all),
        OsStr::new("--until-time"),
        OsStr::new("2200-01-01T00:00:00Z"),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(open_restored(&all).0, f.digest);
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&f.backup),
        OsStr::new("--into"),
        os(&f.path("x")),
        OsStr::new("--until-time"),
        OsStr::new("yesterday"),
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
}

#[test]
fn verify_passes_whole_backups_and_archives_and_names_what_is_damaged() {
    let f = fixture();
    let out = run([OsStr::new("verify"), os(&f.backup)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.starts_with("OK"), "{}", out.stdout);
    // Both name the Duplex format of what they checked (FORMAT.md section 26).
    let current = format!(
        "Duplex format {} (this build's)",
        duplex_engine::FORMAT_VERSION
    );
    assert!(out.stdout.contains(&current), "{}", out.stdout);
    let out = run([OsStr::new("verify"), os(&f.archive)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains(&format!("to {}", f.last_lsn)),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("segments of {current}")),
        "{}",
        out.stdout
    );
    let out = run(["--version"]);
    assert!(
        out.stdout.contains(&format!(
            "on-disk format {}, reads formats {} to {}",
            duplex_engine::FORMAT_VERSION,
            duplex_engine::OLDEST_FORMAT_READ,
            duplex_engine::FORMAT_VERSION
        )),
        "{}",
        out.stdout
    );
    let segs = archived_segments(&f.archive);
    assert!(
        segs.len() >= 4,
        "enough segments for a middle one: {}",
        segs.len()
    );
    let out = run([OsStr::new("verify"), os(&segs[1])]);
    assert_eq!(out.code, 0, "{}", out.all());
    // The live data directory, read-only while the database holds it.
    let out = run([OsStr::new("verify"), os(&f.data)]);
    assert_eq!(out.code, 0, "{}", out.all());

    // A damaged copy of the backup: the store file's CRC fails, and the report names it.
    let damaged = f.path("damaged-backup");
    copy_dir(&f.backup, &damaged);
    let store = std::fs::read_dir(&damaged)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "dpx"))
        .expect("store file in the backup");
    let mut bytes = std::fs::read(&store).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&store, &bytes).expect("write");
    let out = run([OsStr::new("verify"), os(&damaged)]);
    assert_eq!(out.code, 1, "{}", out.all());
    let name = store
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        out.stdout.contains("FAIL") && out.stdout.contains(&name),
        "{}",
        out.all()
    );

    // Restoring it fails the same way, before anything is written.
    let into = f.path("from-damaged");
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&damaged),
        OsStr::new("--archive"),
        os(&f.archive),
        OsStr::new("--into"),
        os(&into),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("error: ") && out.stderr.contains(&name),
        "{}",
        out.stderr
    );
    assert!(!into.exists());

    // An archive with a missing middle segment: a gap.
    let holed = f.path("holed-archive");
    copy_dir(&f.archive, &holed);
    let holed_segs = archived_segments(&holed);
    std::fs::remove_file(&holed_segs[holed_segs.len() / 2]).expect("remove");
    let out = run([OsStr::new("verify"), os(&holed)]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("gap"), "{}", out.all());

    // Several paths: the worst outcome decides; a path of no known kind is a usage error.
    let out = run([
        OsStr::new("verify"),
        os(&f.backup),
        os(&holed),
        os(&f.archive),
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    let empty = f.path("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = run([OsStr::new("verify"), os(&empty)]);
    assert_eq!(out.code, 2, "{}", out.all());
}

#[test]
fn a_gap_in_the_archive_stops_the_restore_unless_told_to_keep_what_came_before() {
    let f = fixture();
    let holed = f.path("holed-archive");
    copy_dir(&f.archive, &holed);
    let segs = archived_segments(&holed);
    let gone = &segs[segs.len() / 2];
    let gone_first: u64 = gone
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name");
    assert!(
        gone_first > f.checkpoint_lsn + 1,
        "the gap is after the backup"
    );
    std::fs::remove_file(gone).expect("remove");
    let restore = |into: &Path, keep: bool| {
        let mut a = vec![
            OsStr::new("restore").to_owned(),
            "--backup".into(),
            f.backup.clone().into_os_string(),
            "--archive".into(),
            holed.clone().into_os_string(),
            "--into".into(),
            into.to_path_buf().into_os_string(),
        ];
        if keep {
            a.push("--stop-at-last-good".into());
        }
        run(a)
    };
    let out = restore(&f.path("r1"), false);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("error: ") && out.stderr.contains("gap"),
        "{}",
        out.stderr
    );

    let into = f.path("r2");
    let out = restore(&into, true);
    assert_eq!(out.code, 1, "damage was found: {}", out.all());
    assert!(
        out.all().contains(&format!("LSN {}", gone_first - 1)),
        "{}",
        out.all()
    );
    let (_, _, last) = open_restored(&into);
    assert_eq!(
        last,
        gone_first - 1,
        "everything before the gap, nothing after it"
    );
}

#[test]
fn dump_prints_every_record_and_json_lines_parse() {
    let f = fixture();
    let segs = archived_segments(&f.archive);
    let first: u64 = segs[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name");
    let out = run([OsStr::new("dump"), os(&f.archive), OsStr::new("--json")]);
    assert_eq!(out.code, 0, "{}", out.all());
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    assert_eq!(
        lines.len() as u64,
        f.last_lsn - first + 1,
        "one line per record"
    );
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["lsn"].as_u64(), Some(first + i as u64));
        assert_eq!(v["type"], "batch");
    }
    let puts = lines.iter().filter(|v| v["ops"][0]["op"] == "put").count();
    let dels = lines.iter().filter(|v| v["ops"][0]["op"] == "del").count();
    assert!(puts > 0 && dels > 0);

    let (from, until) = (f.checkpoint_lsn + 10, f.checkpoint_lsn + 19);
    let out = run([
        OsStr::new("dump"),
        os(&f.archive),
        OsStr::new("--from"),
        OsStr::new(&from.to_string()),
        OsStr::new("--until"),
        OsStr::new(&until.to_string()),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let text: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(text.len(), 10, "{}", out.stdout);
    assert!(
        text[0].starts_with(&format!("lsn={from} kind=batch")),
        "{}",
        text[0]
    );
    assert!(
        out.stdout.contains("PUT key=\"key-") || out.stdout.contains("DEL key=\"key-"),
        "{}",
        out.stdout
    );

    // One segment alone: its records only.
    let out = run([OsStr::new("dump"), os(&segs[1]), OsStr::new("--json")]);
    assert_eq!(out.code, 0, "{}", out.all());
    let seg1_first: u64 = segs[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name");
    let seg2_first: u64 = segs[2]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name");
    assert_eq!(out.stdout.lines().count() as u64, seg2_first - seg1_first);

    // An LSN the archive does not hold is a usage error.
    let out = run([
        OsStr::new("dump"),
        os(&f.archive),
        OsStr::new("--from"),
        OsStr::new(&(f.last_lsn + 100).to_string()),
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
}

#[test]
fn backup_of_a_running_databases_directory_restores_to_the_live_state() {
    let mut f = fixture();
    let dest = f.path("outside-backup");
    let out = run([
        OsStr::new("backup"),
        OsStr::new("--data"),
        os(&f.data),
        OsStr::new("--into"),
        os(&dest),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains(&format!("checkpoint LSN {}", f.checkpoint_lsn)),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("MB/s"), "{}", out.stdout);
    // The database never noticed; writes go on and reach the archive.
    let mut model = contents(&f.db);
    for i in 0..300 {
        write(&f.db, 100_000 + i, &mut model);
    }
    f.archive_all();
    let out = run([OsStr::new("verify"), os(&dest)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let into = f.path("from-outside");
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&dest),
        OsStr::new("--archive"),
        os(&f.archive),
        OsStr::new("--into"),
        os(&into),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let (digest, restored, last) = open_restored(&into);
    assert_eq!(digest, f.digest);
    assert_eq!(restored, model);
    assert_eq!(last, f.last_lsn);

    // An incremental backup on it, checked as a chain and restored as one.
    f.db.checkpoint().expect("checkpoint");
    let inc = f.path("outside-inc");
    let out = run([
        OsStr::new("backup"),
        OsStr::new("--data"),
        os(&f.data),
        OsStr::new("--into"),
        os(&inc),
        OsStr::new("--incremental-from"),
        os(&dest),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.starts_with("incremental"), "{}", out.stdout);
    let out = run([OsStr::new("verify"), os(&dest), os(&inc)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("chain link"), "{}", out.stdout);
    // Alone, an increment verifies, with a note that its link was not checked.
    let out = run([OsStr::new("verify"), os(&inc)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("not checked"), "{}", out.stdout);
    // After a backup that is not its base: a broken chain.
    let other = f.path("outside-full-2");
    let out = run([
        OsStr::new("backup"),
        OsStr::new("--data"),
        os(&f.data),
        OsStr::new("--into"),
        os(&other),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = run([OsStr::new("verify"), os(&other), os(&inc)]);
    assert_eq!(out.code, 1, "not its base: {}", out.all());
    assert!(
        out.stdout.contains("does not continue the chain"),
        "{}",
        out.stdout
    );
    let into = f.path("from-chain");
    let out = run([
        OsStr::new("restore"),
        OsStr::new("--backup"),
        os(&dest),
        OsStr::new("--backup"),
        os(&inc),
        OsStr::new("--archive"),
        os(&f.archive),
        OsStr::new("--into"),
        os(&into),
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(open_restored(&into).0, f.digest);

    // Not a data directory: a usage error.
    let out = run([
        OsStr::new("backup"),
        OsStr::new("--data"),
        os(&f.archive),
        OsStr::new("--into"),
        os(&f.path("nope")),
    ]);
    assert_eq!(out.code, 2, "{}", out.all());
}

/// The golden files of format 1 (`fixtures/`, written before format 2) verify, and
/// `verify` says they are format 1, read as they are; a copy of the format 1 data directory
/// opens, takes writes (its new segments in format 2, after its format 1 ones) and then
/// verifies with both formats named.
#[test]
fn format_1_golden_files_verify_and_are_named_format_1() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let old = "Duplex format 1: read as it is, no migration needed";
    for p in ["engine/backup", "wal/intact"] {
        let out = run([OsStr::new("verify"), os(&root.join(p))]);
        assert_eq!(out.code, 0, "{p}: {}", out.all());
        assert!(out.stdout.contains(old), "{p}: {}", out.stdout);
        assert!(
            !out.stdout.contains("Duplex format 2"),
            "{p}: {}",
            out.stdout
        );
    }
    let (_t, data) = duplex_testkit::fixtures::scratch_copy(&root.join("engine/data"));
    {
        let db = Database::open(
            &data,
            Config {
                node_id: 3,
                segment_size: 4096,
                ..Config::default()
            },
        )
        .unwrap();
        for i in 0..200u32 {
            db.put(format!("new-{i}").as_bytes(), &[7u8; 64]).unwrap();
        }
        // Left open, as a crash would (every put is durable): a close would checkpoint and
        // drop the format 1 segments, and the mixed log is the case to see.
        std::mem::forget(db);
    }
    let out = run([OsStr::new("verify"), os(&data)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains(old), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("segments of Duplex format 2 (this build's)"),
        "{}",
        out.stdout
    );
}

/// `duplex-recover drill`: the backup rolled forward through the archive to the last LSN
/// has the live database's stamped digest; `--expect` with it exits 0, with another digest
/// 1; the scratch directory is gone afterwards.
#[test]
fn drill_by_hand_matches_the_live_stamped_digest() {
    let f = fixture();
    let live =
        f.db.stamped_digest(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .unwrap()
            .to_string();
    let scratch = f.path("scratch");
    let lsn = f.last_lsn.to_string();
    let args = |expect: &str| {
        vec![
            OsString::from("drill"),
            "--backup".into(),
            f.backup.clone().into(),
            "--archive".into(),
            f.archive.clone().into(),
            "--until-lsn".into(),
            lsn.clone().into(),
            "--expect".into(),
            expect.into(),
            "--scratch".into(),
            scratch.clone().into(),
        ]
    };
    let out = run(args(&live));
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout
            .contains(&format!("restored to LSN {lsn}: stamped digest {live}")),
        "{}",
        out.stdout
    );
    assert!(!scratch.exists(), "scratch removed");
    let wrong = format!("{:032x}/1", 1);
    let out = run(args(&wrong));
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("DIFFERS"), "{}", out.stdout);
}
