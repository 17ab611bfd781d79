use duplex_wal::{Entry, Wal, WalOptions, WalReader};
use std::sync::Arc;

#[test]
fn append_reopen_read() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions { segment_size: 8192, ..Default::default() };
    {
        let wal = Wal::open(dir.path(), opts.clone()).unwrap();
        for i in 0..500u64 {
            let p = format!("record-{i}");
            assert_eq!(wal.append(1, p.as_bytes()).unwrap(), i + 1);
        }
        wal.append_batch(&[Entry { kind: 2, payload: b"a" }, Entry { kind: 3, payload: b"b" }]).unwrap();
        wal.close().unwrap();
    }
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(wal.last_lsn(), 502);
    assert_eq!(wal.segments().len(), 3, "{:?}", wal.segments());
    let recs: Vec<_> = WalReader::open_dir(Arc::new(duplex_wal::StdStorage), dir.path()).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(recs.len(), 502);
    assert_eq!(recs[10].payload, b"record-10");
    assert_eq!(recs[501].kind, 3);
    let from: Vec<_> = wal.read_from(400).unwrap().map(|r| r.unwrap().lsn).collect();
    assert_eq!(from, (400..=502).collect::<Vec<_>>());
}
