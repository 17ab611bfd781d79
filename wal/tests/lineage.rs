//! Lineage in the archive: a segment name in the archive means the same bytes of the same
//! node and timeline; archive roots resolve to the lineage asked for; `check_archive`
//! tells one history from a mixed one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use duplex_wal::format::segment_file_name;
use duplex_wal::sim::SimStorage;
use duplex_wal::{
    archive_segment, archive_subdir, check_archive, resolve_archive_dirs, Error, OpenMode, Storage,
    SyncPolicy, Wal, WalOptions,
};

fn opts(node_id: u64, timeline: u64, archive: Option<&str>) -> WalOptions {
    WalOptions {
        node_id,
        timeline,
        segment_size: 8192,
        max_record_size: 1024,
        sync: SyncPolicy::Always,
        archive_dir: archive.map(PathBuf::from),
        background_threads: false,
        ..WalOptions::default()
    }
}

/// Writes `n` records into a log in `dir` and closes its first segment; returns the closed
/// segment's path and its length.
fn closed_segment(sim: &SimStorage, dir: &str, o: WalOptions, tag: &str, n: u64) -> (PathBuf, u64) {
    let wal = Wal::open_with(Arc::new(sim.clone()), dir, o).expect("open");
    for i in 0..n {
        wal.append(1, format!("{tag}{i}").as_bytes())
            .expect("append");
    }
    wal.rotate().expect("rotate");
    let s = wal.segments()[0].clone();
    wal.close().expect("close");
    (s.path, s.end_offset)
}

#[test]
fn a_segment_of_another_lineage_under_the_same_name_is_refused_loudly() {
    let sim = SimStorage::new();
    let (mine, mine_len) = closed_segment(&sim, "/a", opts(1, 1, None), "a", 5);
    let (theirs, theirs_len) = closed_segment(&sim, "/b", opts(2, 1, None), "a", 5);
    let dir = Path::new("/shared");
    sim.create_dir_all(dir).expect("mkdir");
    let dest = archive_segment(&sim, &mine, mine_len, dir).expect("archive");
    assert_eq!(dest, dir.join(segment_file_name(1)));
    // Archiving the same segment again is a no-op.
    archive_segment(&sim, &mine, mine_len, dir).expect("same bytes again");
    let err = archive_segment(&sim, &theirs, theirs_len, dir).expect_err("another node");
    match &err {
        Error::ArchiveConflict {
            archived,
            source_file,
            reason,
        } => {
            assert_eq!((archived, source_file), (&dest, &theirs));
            assert!(
                reason.contains("node 1") && reason.contains("node 2"),
                "{reason}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&*theirs.to_string_lossy()),
        "{err}"
    );

    // A restored copy (a new timeline of the same node) is another lineage too.
    let (restored, restored_len) = closed_segment(&sim, "/c", opts(1, 2, None), "a", 5);
    let err = archive_segment(&sim, &restored, restored_len, dir).expect_err("timeline 2");
    assert!(err.to_string().contains("timeline 2"), "{err}");
}

#[test]
fn a_same_length_segment_with_other_bytes_is_refused() {
    let sim = SimStorage::new();
    let (mine, len) = closed_segment(&sim, "/a", opts(1, 1, None), "a", 5);
    let (other, other_len) = closed_segment(&sim, "/b", opts(1, 1, None), "b", 5);
    assert_eq!(len, other_len, "the same length, as the old rule accepted");
    let dir = Path::new("/shared");
    sim.create_dir_all(dir).expect("mkdir");
    archive_segment(&sim, &mine, len, dir).expect("archive");
    let err = archive_segment(&sim, &other, other_len, dir).expect_err("other bytes");
    assert!(matches!(err, Error::ArchiveConflict { .. }), "{err}");
    assert!(err.to_string().contains("CRC32C"), "{err}");
}

#[test]
fn roots_resolve_to_the_lineage_asked_for_and_flat_directories_read_as_they_are() {
    let sim = SimStorage::new();
    let root = Path::new("/archive");
    closed_segment(&sim, "/a", opts(1, 1, Some("/archive")), "a", 3);
    // One lineage: taken whatever is asked.
    for (node, tl) in [(None, None), (Some(1), None), (Some(1), Some(1))] {
        assert_eq!(
            resolve_archive_dirs(&sim, root, node, tl).expect("resolve"),
            [archive_subdir(root, 1, 1)]
        );
    }
    closed_segment(&sim, "/b", opts(2, 1, Some("/archive")), "b", 3);
    assert_eq!(
        resolve_archive_dirs(&sim, root, Some(2), None).expect("resolve"),
        [archive_subdir(root, 2, 1)]
    );
    let err = resolve_archive_dirs(&sim, root, None, None).expect_err("two lineages");
    assert!(err.to_string().contains("n1-t1, n2-t1"), "{err}");
    // A subdirectory is a flat directory.
    let sub = archive_subdir(root, 2, 1);
    assert_eq!(
        resolve_archive_dirs(&sim, &sub, Some(1), None).expect("flat"),
        std::slice::from_ref(&sub)
    );
    // A root holding segments of its own (an older build's flat archive) is read too.
    let (seg, len) = closed_segment(&sim, "/old", opts(1, 1, None), "o", 1);
    archive_segment(&sim, &seg, len, root).expect("flat copy");
    assert_eq!(
        resolve_archive_dirs(&sim, root, Some(1), Some(1)).expect("resolve"),
        [archive_subdir(root, 1, 1), root.to_path_buf()]
    );
}

#[test]
fn check_archive_reports_one_history_per_directory_and_refuses_a_mixed_one() {
    let sim = SimStorage::new();
    let root = Path::new("/archive");
    let wal =
        Wal::open_with(Arc::new(sim.clone()), "/a", opts(1, 1, Some("/archive"))).expect("open");
    for i in 0..200u64 {
        wal.append(1, format!("record {i}").repeat(3).as_bytes())
            .expect("append");
    }
    wal.close().expect("close");
    closed_segment(&sim, "/b", opts(2, 1, Some("/archive")), "b", 3);
    let report = check_archive(Arc::new(sim.clone()), root).expect("check");
    assert_eq!(report.histories.len(), 2, "{report:?}");
    let h = &report.histories[0];
    assert_eq!(h.dir, archive_subdir(root, 1, 1));
    assert_eq!((h.node_id, h.timelines.clone()), (1, vec![1]));
    assert_eq!((h.first_lsn, h.last_lsn), (1, 200));
    assert!(h.segments >= 2, "{h:?}");
    assert!(
        h.partial.is_some(),
        "the last segment is followed as a partial: {h:?}"
    );
    assert_eq!(report.histories[1].node_id, 2);

    // Node 2's first segment, moved into node 1's directory under a free name.
    let b_seg = archive_subdir(root, 2, 1).join(segment_file_name(1));
    let bytes = sim.contents(&b_seg).expect("segment of node 2");
    let h = &report.histories[0];
    let stray = h.dir.join(segment_file_name(h.last_lsn + 1));
    let f = sim.open(&stray, OpenMode::CreateNew).expect("create");
    f.write_all_at(&bytes, 0).expect("write");
    f.sync_data().expect("sync");
    let err = check_archive(Arc::new(sim.clone()), root).expect_err("mixed history");
    assert!(matches!(err, Error::ArchiveLineage { .. }), "{err}");
    assert!(err.to_string().contains("node 2"), "{err}");
}

#[test]
fn every_segment_is_archived_in_the_lineage_its_header_names() {
    let sim = SimStorage::new();
    let root = Path::new("/archive");
    {
        let wal = Wal::open_with(Arc::new(sim.clone()), "/wal", opts(1, 1, Some("/archive")))
            .expect("open");
        wal.append(1, b"timeline 1").expect("append");
        wal.close().expect("close");
    }
    // Reopened on a new timeline: the segment written on timeline 1 closes later, and
    // still goes to timeline 1's directory; the new segment to timeline 2's.
    let wal = Wal::open_with(Arc::new(sim.clone()), "/wal", opts(1, 2, Some("/archive")))
        .expect("reopen");
    wal.append(1, b"still in the old segment").expect("append");
    wal.rotate().expect("rotate");
    wal.append(1, b"timeline 2").expect("append");
    wal.close().expect("close");
    let t1 = archive_subdir(root, 1, 1);
    let t2 = archive_subdir(root, 1, 2);
    assert!(sim.exists(&t1.join(segment_file_name(1))));
    assert!(sim.exists(&t2.join(duplex_wal::format::partial_file_name(3))));
    let report = check_archive(Arc::new(sim.clone()), root).expect("one history per directory");
    let spans: Vec<(u64, u64, Vec<u64>)> = report
        .histories
        .iter()
        .map(|h| (h.first_lsn, h.last_lsn, h.timelines.clone()))
        .collect();
    assert_eq!(spans, [(1, 2, vec![1]), (3, 3, vec![2])]);
}
