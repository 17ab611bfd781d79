//! The seeds of the `peer_frame` fuzz target (`fuzz/seeds/peer_frame/`), made by the real
//! encoder and handshake and kept as golden files: this test fails when the committed seeds
//! differ from what the codec writes today (a format change), and rewrites them when run
//! with `DUPLEX_WRITE_SEEDS=1`:
//! `DUPLEX_WRITE_SEEDS=1 cargo test -p duplex-proto --test peer_seeds`.
//! Each seed is the target's two control bytes, then a stream of frames.

use std::path::{Path, PathBuf};

use duplex_proto::peer::{
    Ack, Batch, Batches, ErrorCode, ErrorFrame, FileChunk, FilesEnd, Frame, FrameLimits, Handshake,
    Heartbeat, Held, Hold, HoldEnded, Lacking, NodeIdentity, Proof, RebuildRequest, Refuse,
    RefuseReason, Release, Resync,
};

/// The target's control bytes: bit 0 of the first = the honest initiator holds the right
/// secret; both seed chunk sizes and frame replacement.
const CTL: [u8; 2] = [0x01, 0x2A];

fn stream(frames: &[Frame]) -> Vec<u8> {
    let mut out = CTL.to_vec();
    for f in frames {
        f.encode(&FrameLimits::default(), &mut out)
            .expect("a seed frame encodes");
    }
    out
}

fn ident(node_id: u64) -> NodeIdentity {
    NodeIdentity {
        cluster_id: 7,
        node_id,
        incarnation: 1,
        epoch: 1,
    }
}

/// The frames of a handshake between node 1 (initiator) and node 2, in the order sent.
fn handshake(init_secret: &[u8]) -> Vec<Frame> {
    let (mut i, hello) = Handshake::initiator(ident(1), init_secret, [0x11; 32]).expect("init");
    let mut a = Handshake::acceptor(ident(2), b"seed secret", [0x22; 32]).expect("acceptor");
    let mut sent = vec![hello.clone()];
    let mut next = Some((hello, true));
    while let Some((frame, to_acceptor)) = next.take() {
        let hs = if to_acceptor { &mut a } else { &mut i };
        if let Some(reply) = hs.receive(&frame).expect("an honest frame") {
            sent.push(reply.clone());
            next = Some((reply, !to_acceptor));
        }
    }
    sent
}

fn batches() -> Frame {
    let batches = (0..4u64)
        .map(|k| Batch {
            origin_lsn: 10 + 3 * k,
            prev_origin_lsn: if k == 0 { 4 } else { 7 + 3 * k },
            stamp: (1_700_000_000_000 << 16) + k,
            payload: vec![k as u8 + 1; 5 * k as usize],
        })
        .collect();
    Frame::Batches(Batches { origin: 1, batches })
}

/// Every seed, by file name.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let data = [
        batches(),
        Frame::Ack(Ack {
            origin: 1,
            durable_lsn: 19,
        }),
        Frame::Heartbeat(Heartbeat {
            origin: 1,
            stamp: 1_700_000_000_000 << 16,
            last_origin_lsn: 19,
        }),
        Frame::Resync(Resync {
            origin: 1,
            last_good_lsn: 13,
        }),
        Frame::Error(ErrorFrame::new(ErrorCode::ClockSkew, "clock ahead by 2 s")),
    ];
    let mut seeds = vec![
        ("data-frames", stream(&data)),
        ("handshake-ok", stream(&handshake(b"seed secret"))),
        (
            "handshake-wrong-secret",
            stream(&handshake(b"other secret")),
        ),
    ];
    let odd = [
        Frame::Proof(Proof([0x33; 32])),
        Frame::Welcome(Proof([0x44; 32])),
        Frame::Refuse(Refuse::new(RefuseReason::OtherCluster, "cluster 8")),
        Frame::Refuse(Refuse::new(RefuseReason::Other(200), "")),
    ];
    seeds.push(("handshake-odd", stream(&odd)));
    let rebuild = [
        Frame::Rebuild(RebuildRequest { fresh: true }),
        Frame::File(FileChunk {
            name: "wal/0000000000000001.seg".into(),
            offset: 0,
            total_len: 40,
            data: vec![0x5C; 24],
        }),
        Frame::File(FileChunk {
            name: "wal/0000000000000001.seg".into(),
            offset: 24,
            total_len: 40,
            data: vec![0x5D; 16],
        }),
        Frame::FilesEnd(FilesEnd {
            files: 1,
            bytes: 40,
            source_node: 1,
            source_timeline: 1,
            lost_node_mark: (1 << 40) | 19,
        }),
    ];
    seeds.push(("rebuild-frames", stream(&rebuild)));
    let hold = [
        Frame::Hold(Hold {
            mark: (1 << 40) | 19,
            max_ms: 100,
        }),
        Frame::Held(Held {
            cutoff: (1 << 40) | 23,
            pending: 2,
            granted: true,
        }),
        Frame::Release(Release { reached: true }),
    ];
    seeds.push(("hold-frames", stream(&hold)));
    let ended = [Frame::HoldEnded(HoldEnded {
        pause_us: 4_210,
        writes_held: 3,
        held_p50_us: 2_050,
        held_max_us: 3_990,
    })];
    seeds.push(("hold-ended", stream(&ended)));
    // A survivor that holds none of a rebuilt origin's earlier batches after a peer's mark
    // says so (FORMAT.md section 29): a mark of an earlier incarnation, the empty mark, and
    // the ACK of the other origin's mark it answers.
    let lacking = [
        Frame::Lacking(Lacking {
            origin: 3,
            after: (1 << 48) | 1557,
        }),
        Frame::Lacking(Lacking {
            origin: 2,
            after: 0,
        }),
        Frame::Ack(Ack {
            origin: 3,
            durable_lsn: (2 << 48) | 4,
        }),
    ];
    seeds.push(("lacking-frames", stream(&lacking)));
    // The first data frame cut short, and with a payload byte damaged.
    let whole = stream(&data[..1]);
    seeds.push(("batches-cut", whole[..whole.len() - 7].to_vec()));
    let mut damaged = whole;
    damaged[CTL.len() + 20] ^= 0x40;
    seeds.push(("batches-damaged", damaged));
    seeds
}

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/peer_frame")
}

#[test]
fn committed_seeds_match_the_codec() {
    let dir = seed_dir();
    let write = std::env::var_os("DUPLEX_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("create the seed directory");
    }
    for (name, bytes) in seeds() {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &bytes).expect("write a seed");
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write the seeds with DUPLEX_WRITE_SEEDS=1 cargo test -p duplex-proto --test peer_seeds",
                path.display()
            )
        });
        assert!(
            committed == bytes,
            "{} differs from what the codec writes: the frame format changed; \
             if on purpose, note it in FORMAT.md section 29 and rewrite the seeds \
             (DUPLEX_WRITE_SEEDS=1 cargo test -p duplex-proto --test peer_seeds)",
            path.display()
        );
    }
}

/// Every frame kind the codec knows is in some seed (LACKING was missing until issue 13
/// noticed): decoding the seeds back must meet each kind.
#[test]
fn the_seeds_hold_every_frame_kind() {
    use duplex_proto::peer::{decode_frame, Decoded, FrameKind};
    let mut met = std::collections::BTreeSet::new();
    for (_, bytes) in seeds() {
        let mut rest = &bytes[CTL.len()..];
        while let Ok(Decoded::Frame { frame, len }) = decode_frame(rest, &FrameLimits::default()) {
            met.insert(frame.kind().code());
            rest = &rest[len..];
        }
    }
    let missing: Vec<&str> = FrameKind::ALL
        .into_iter()
        .filter(|k| !met.contains(&k.code()))
        .map(|k| k.name())
        .collect();
    assert!(missing.is_empty(), "no seed holds {missing:?}");
}
