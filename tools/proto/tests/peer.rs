//! The peer link's codec and handshake (`duplex_proto::peer`, FORMAT.md section 29): every
//! frame kind round-trips byte for byte, lengths are refused before the bytes arrive, a
//! damaged byte anywhere is a checksum error, the incremental decoder answers the same
//! however the stream is cut, and the handshake establishes only with the same secret,
//! never putting the secret on the wire.

mod common;

use common::fix_crcs;
use duplex_proto::peer::{
    decode_frame, encode_batches, Ack, Batch, BatchRef, Batches, Decoded, ErrorCode, ErrorFrame,
    FileChunk, FilesEnd, Frame, FrameDecoder, FrameFault, FrameKind, FrameLimits, Handshake,
    Heartbeat, Held, Hello, Hold, HoldEnded, Lacking, NodeIdentity, Party, PeerError, PeerInfo,
    Proof, RebuildRequest, Refuse, RefuseReason, Release, Resync, Status, FRAME_OVERHEAD,
    HEADER_LEN, MAGIC, MAX_FILE_CHUNK, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
};
use proptest::prelude::*;

fn limits() -> FrameLimits {
    FrameLimits::default()
}

fn batch(origin_lsn: u64, prev: u64, payload: &[u8]) -> Batch {
    Batch {
        origin_lsn,
        prev_origin_lsn: prev,
        stamp: (1_700_000_000_000 << 16) + origin_lsn,
        payload: payload.to_vec(),
    }
}

fn hello(node_id: u64, nonce: u8) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        cluster_id: 0xC1,
        node_id,
        incarnation: 3,
        epoch: 9,
        nonce: [nonce; 32],
    }
}

/// One frame of every kind (both message codes and an unknown one included).
fn every_kind() -> Vec<Frame> {
    vec![
        Frame::Hello(hello(1, 0x11)),
        Frame::Challenge(hello(2, 0x22)),
        Frame::Proof(Proof([0xA5; 32])),
        Frame::Welcome(Proof([0x5A; 32])),
        Frame::Refuse(Refuse::new(RefuseReason::WrongSecret, "wrong secret")),
        Frame::Refuse(Refuse::new(RefuseReason::Other(77), "")),
        Frame::Batches(Batches {
            origin: 1,
            batches: vec![
                batch(5, 0, b"first batch"),
                batch(9, 5, b""),
                batch(12, 9, &[0xFF; 300]),
            ],
        }),
        Frame::Ack(Ack {
            origin: 1,
            durable_lsn: 12,
        }),
        Frame::Heartbeat(Heartbeat {
            origin: 1,
            stamp: u64::MAX,
            last_origin_lsn: 12,
        }),
        Frame::Resync(Resync {
            origin: 1,
            last_good_lsn: 9,
        }),
        Frame::Error(ErrorFrame::new(
            ErrorCode::ClockSkew,
            "clock 2 s ahead: ünïcode",
        )),
        Frame::Rebuild(RebuildRequest { fresh: true }),
        Frame::Rebuild(RebuildRequest { fresh: false }),
        Frame::File(FileChunk {
            name: "wal/00000001.seg".into(),
            offset: 4096,
            total_len: 8192,
            data: vec![0xAB; 100],
        }),
        Frame::File(FileChunk {
            name: "BACKUP".into(),
            offset: 0,
            total_len: 0,
            data: Vec::new(),
        }),
        Frame::FilesEnd(FilesEnd {
            files: 3,
            bytes: 1 << 33,
            source_node: 1,
            source_timeline: 2,
            lost_node_mark: (1 << 40) | 17,
        }),
        Frame::Hold(Hold {
            mark: (1 << 40) | 9,
            max_ms: 100,
        }),
        Frame::Held(Held {
            cutoff: (1 << 40) | 12,
            pending: 3,
            granted: true,
        }),
        Frame::Release(Release { reached: true }),
        Frame::HoldEnded(HoldEnded {
            pause_us: 12_500,
            writes_held: 7,
            held_p50_us: 6_000,
            held_max_us: 12_400,
        }),
        Frame::Lacking(Lacking {
            origin: 1,
            after: (1 << 48) | 934,
        }),
    ]
}

fn encode(f: &Frame) -> Vec<u8> {
    f.to_bytes(&limits()).expect("a valid frame encodes")
}

fn decode_whole(bytes: &[u8]) -> Frame {
    match decode_frame(bytes, &limits()).expect("decodes") {
        Decoded::Frame { frame, len } => {
            assert_eq!(len, bytes.len());
            frame
        }
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn fault(r: Result<Decoded, PeerError>) -> (u64, FrameFault) {
    match r {
        Err(PeerError::Frame { offset, fault }) => (offset, fault),
        other => panic!("expected a frame error, got {other:?}"),
    }
}

#[test]
fn every_kind_round_trips_byte_for_byte() {
    let all = every_kind();
    let kinds: std::collections::HashSet<FrameKind> = all.iter().map(Frame::kind).collect();
    assert_eq!(
        kinds.len(),
        FrameKind::ALL.len(),
        "a kind is missing from the samples"
    );
    for f in all {
        let bytes = encode(&f);
        assert_eq!(&bytes[..4], &MAGIC);
        assert_eq!(bytes[5], f.kind().code());
        let back = decode_whole(&bytes);
        assert_eq!(back, f);
        assert_eq!(encode(&back), bytes, "{} re-encodes differently", f.kind());
    }
}

#[test]
fn header_layout_is_as_documented() {
    let bytes = encode(&Frame::Ack(Ack {
        origin: 0x0102,
        durable_lsn: 7,
    }));
    assert_eq!(bytes.len(), FRAME_OVERHEAD + 16);
    assert_eq!(bytes[4], 1, "version");
    assert_eq!(bytes[5], 17, "ACK kind");
    assert_eq!(&bytes[6..8], &[0, 0], "flags");
    assert_eq!(&bytes[8..12], &16u32.to_le_bytes(), "payload length");
    assert_eq!(&bytes[12..16], &crc32c::crc32c(&bytes[..12]).to_le_bytes());
    assert_eq!(&bytes[16..24], &0x0102u64.to_le_bytes());
    assert_eq!(&bytes[24..32], &7u64.to_le_bytes());
    assert_eq!(&bytes[32..], &crc32c::crc32c(&bytes[..32]).to_le_bytes());
}

#[test]
fn every_prefix_is_incomplete_with_the_right_need() {
    for f in every_kind() {
        let bytes = encode(&f);
        for cut in 0..bytes.len() {
            let need = match decode_frame(&bytes[..cut], &limits()) {
                Ok(Decoded::Incomplete { need }) => need,
                other => panic!("{} cut at {cut}: {other:?}", f.kind()),
            };
            let expected = if cut < HEADER_LEN {
                HEADER_LEN - cut
            } else {
                bytes.len() - cut
            };
            assert_eq!(need, expected, "{} cut at {cut}", f.kind());
        }
    }
}

#[test]
fn a_damaged_byte_anywhere_is_a_checksum_error() {
    for f in every_kind() {
        let bytes = encode(&f);
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                let (offset, fault) = fault(decode_frame(&bad, &limits()));
                let k = f.kind();
                match fault {
                    // The magic is checked first, so a stranger is named as one.
                    FrameFault::BadMagic { .. } => {
                        assert!(i < 4, "{k} byte {i}");
                        assert_eq!(offset, i as u64, "{k} byte {i}");
                    }
                    FrameFault::HeaderCrcMismatch { .. } => {
                        assert!((4..HEADER_LEN).contains(&i), "{k} byte {i}");
                        assert_eq!(offset, 0, "{k} byte {i}");
                    }
                    FrameFault::CrcMismatch { stored, computed } => {
                        assert!(i >= HEADER_LEN, "{k} byte {i}");
                        assert_eq!(offset, 0, "{k} byte {i}");
                        assert_ne!(stored, computed);
                    }
                    other => panic!("{} byte {i} flipped by {flip:#x}: {other:?}", f.kind()),
                }
            }
        }
    }
}

#[test]
fn oversize_lengths_are_refused_before_the_bytes_arrive() {
    // A header claiming 4 GiB, then 10 bytes: refused at once, not waited for.
    let mut bytes = encode(&Frame::Ack(Ack {
        origin: 1,
        durable_lsn: 1,
    }));
    bytes[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let h = crc32c::crc32c(&bytes[..12]);
    bytes[12..16].copy_from_slice(&h.to_le_bytes());
    bytes.truncate(HEADER_LEN + 10);
    let (offset, f) = fault(decode_frame(&bytes, &limits()));
    assert_eq!(offset, 8);
    assert_eq!(
        f,
        FrameFault::FrameTooLarge {
            len: u64::from(u32::MAX) + FRAME_OVERHEAD as u64,
            max: limits().max_frame_bytes,
        }
    );
    // The incremental decoder says the same, from the header alone.
    let mut d = FrameDecoder::new(limits());
    d.feed(&bytes[..HEADER_LEN]);
    assert!(matches!(
        d.next_frame(),
        Err(PeerError::Frame {
            offset: 8,
            fault: FrameFault::FrameTooLarge { .. }
        })
    ));
    // A fixed-size kind claiming more than its size is refused as well.
    let mut hello = encode(&Frame::Hello(hello(1, 1)));
    hello[8..12].copy_from_slice(&1000u32.to_le_bytes());
    let h = crc32c::crc32c(&hello[..12]);
    hello[12..16].copy_from_slice(&h.to_le_bytes());
    let (_, f) = fault(decode_frame(&hello[..HEADER_LEN], &limits()));
    assert!(matches!(
        f,
        FrameFault::PayloadLength {
            kind: FrameKind::Hello,
            len: 1000,
            min: 66,
            max: 66
        }
    ));
}

#[test]
fn batch_counts_and_sizes_are_bounded() {
    let small = FrameLimits {
        max_frame_bytes: 4096,
        max_batches_per_frame: 2,
        max_batch_bytes: 100,
    };
    small.validate().expect("usable limits");
    let three = Frame::Batches(Batches {
        origin: 4,
        batches: vec![batch(1, 0, b"a"), batch(2, 1, b"b"), batch(3, 2, b"c")],
    });
    // The encoder refuses what the decoder would.
    assert!(matches!(
        three.to_bytes(&small),
        Err(PeerError::Encode {
            kind: FrameKind::Batches,
            fault: FrameFault::TooManyBatches { count: 3, max: 2 }
        })
    ));
    let bytes = encode(&three);
    let (offset, f) = fault(decode_frame(&bytes, &small));
    assert_eq!(offset, (HEADER_LEN + 8) as u64, "at the count field");
    assert_eq!(f, FrameFault::TooManyBatches { count: 3, max: 2 });

    let big = Frame::Batches(Batches {
        origin: 4,
        batches: vec![batch(1, 0, &[7; 101])],
    });
    let bytes = encode(&big);
    let (offset, f) = fault(decode_frame(&bytes, &small));
    assert_eq!(offset, (HEADER_LEN + 12) as u64, "at the batch's header");
    assert_eq!(
        f,
        FrameFault::BatchTooLarge {
            index: 0,
            len: 101,
            max: 100
        }
    );

    // A count the payload cannot hold is refused before anything is sized by it.
    let mut one = encode(&Frame::Batches(Batches {
        origin: 4,
        batches: vec![batch(1, 0, b"x")],
    }));
    one[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&2u32.to_le_bytes());
    fix_crcs(&mut one);
    let (_, f) = fault(decode_frame(&one, &limits()));
    assert_eq!(f, FrameFault::CountExceedsPayload { count: 2, room: 1 });
}

#[test]
fn batches_must_follow_one_another() {
    let empty = Frame::Batches(Batches {
        origin: 1,
        batches: vec![],
    });
    assert!(matches!(
        empty.to_bytes(&limits()),
        Err(PeerError::Encode {
            fault: FrameFault::EmptyBatches,
            ..
        })
    ));
    let gap = [
        BatchRef {
            origin_lsn: 5,
            prev_origin_lsn: 2,
            stamp: 1,
            payload: b"a",
        },
        BatchRef {
            origin_lsn: 9,
            prev_origin_lsn: 6,
            stamp: 2,
            payload: b"b",
        },
    ];
    let mut out = vec![1, 2, 3];
    let err = encode_batches(&limits(), 1, &gap, &mut out).unwrap_err();
    assert_eq!(out, [1, 2, 3], "nothing is appended on error");
    assert_eq!(
        err.fault(),
        Some(&FrameFault::BrokenChain {
            index: 1,
            prev_origin_lsn: 6,
            expected: 5
        })
    );
    let backwards = [BatchRef {
        origin_lsn: 5,
        prev_origin_lsn: 5,
        stamp: 1,
        payload: b"a",
    }];
    assert!(matches!(
        encode_batches(&limits(), 1, &backwards, &mut out)
            .unwrap_err()
            .fault(),
        Some(FrameFault::LsnNotAfterPrevious { index: 0, .. })
    ));
    // The borrowed encoder writes what the owned one writes.
    let owned = Frame::Batches(Batches {
        origin: 1,
        batches: vec![batch(5, 2, b"a"), batch(9, 5, b"b")],
    });
    let Frame::Batches(b) = &owned else {
        unreachable!()
    };
    let refs: Vec<BatchRef<'_>> = b.batches.iter().map(Batch::as_ref).collect();
    let mut borrowed = Vec::new();
    encode_batches(&limits(), 1, &refs, &mut borrowed).expect("encodes");
    assert_eq!(borrowed, encode(&owned));
}

#[test]
fn payload_faults_name_the_field_and_its_offset() {
    // A message longer than allowed, behind a valid CRC.
    let mut refuse = encode(&Frame::Refuse(Refuse::new(RefuseReason::Protocol, "hi")));
    refuse[HEADER_LEN + 1..HEADER_LEN + 3].copy_from_slice(&2000u16.to_le_bytes());
    fix_crcs(&mut refuse);
    let (offset, f) = fault(decode_frame(&refuse, &limits()));
    assert_eq!(offset, (HEADER_LEN + 1) as u64);
    assert_eq!(
        f,
        FrameFault::MessageTooLong {
            len: 2000,
            max: MAX_MESSAGE_BYTES
        }
    );
    // A message length shorter than the bytes: trailing bytes after it.
    let mut short = encode(&Frame::Refuse(Refuse::new(RefuseReason::Protocol, "hi")));
    short[HEADER_LEN + 1..HEADER_LEN + 3].copy_from_slice(&1u16.to_le_bytes());
    fix_crcs(&mut short);
    let (offset, f) = fault(decode_frame(&short, &limits()));
    assert_eq!(offset, (HEADER_LEN + 4) as u64);
    assert_eq!(f, FrameFault::TrailingBytes { count: 1 });
    // Not UTF-8.
    let mut utf = encode(&Frame::Error(ErrorFrame::new(ErrorCode::Internal, "ab")));
    utf[HEADER_LEN + 3] = 0xFF;
    fix_crcs(&mut utf);
    assert_eq!(fault(decode_frame(&utf, &limits())).1, FrameFault::BadUtf8);
    // Reserved flags, version and kind are checked behind the header CRC.
    let base = encode(&Frame::Ack(Ack {
        origin: 1,
        durable_lsn: 2,
    }));
    for (at, value, want) in [(4usize, 2u8, "version"), (5, 99, "kind"), (6, 1, "flags")] {
        let mut b = base.clone();
        b[at] = value;
        fix_crcs(&mut b);
        let (offset, f) = fault(decode_frame(&b, &limits()));
        assert_eq!(offset, at as u64, "{want}");
        let ok = match want {
            "version" => matches!(
                f,
                FrameFault::UnsupportedVersion {
                    found: 2,
                    supported: 1
                }
            ),
            "kind" => matches!(f, FrameFault::UnknownKind { found: 99 }),
            _ => matches!(f, FrameFault::ReservedFlags { found: 1 }),
        };
        assert!(ok, "{want}: {f:?}");
    }
    // A stranger (a RESP client) is named at its first byte.
    let (_, f) = fault(decode_frame(b"*", &limits()));
    assert_eq!(
        f,
        FrameFault::BadMagic {
            found: b'*',
            expected: MAGIC[0]
        }
    );
    let text = PeerError::Frame {
        offset: 0,
        fault: f,
    }
    .to_string();
    assert!(text.contains("--peer"), "{text}");
}

#[test]
fn messages_are_clipped_at_a_character_boundary() {
    let long = "é".repeat(MAX_MESSAGE_BYTES);
    let r = Refuse::new(RefuseReason::NotAMember, &long);
    assert!(r.message.len() <= MAX_MESSAGE_BYTES);
    assert_eq!(
        r.message.len(),
        MAX_MESSAGE_BYTES,
        "é is 2 bytes, 1024 is even"
    );
    let f = Frame::Refuse(r);
    assert_eq!(decode_whole(&encode(&f)), f);
    let raw = Frame::Error(ErrorFrame {
        code: ErrorCode::Internal,
        message: "x".repeat(MAX_MESSAGE_BYTES + 1),
    });
    assert!(matches!(
        raw.to_bytes(&limits()),
        Err(PeerError::Encode {
            fault: FrameFault::MessageTooLong { .. },
            ..
        })
    ));
}

#[test]
fn decoder_fed_one_byte_at_a_time_gives_the_same_frames() {
    let frames = every_kind();
    let stream: Vec<u8> = frames.iter().flat_map(encode).collect();
    let mut d = FrameDecoder::new(limits());
    let mut got = Vec::new();
    for b in &stream {
        d.feed(std::slice::from_ref(b));
        loop {
            match d.next_frame().expect("a valid stream") {
                Decoded::Frame { frame, .. } => got.push(frame),
                Decoded::Incomplete { need } => {
                    assert!(need >= 1);
                    break;
                }
            }
        }
    }
    assert_eq!(got, frames);
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.stream_offset(), stream.len() as u64);
}

#[test]
fn decoder_errors_carry_the_stream_offset_and_stick() {
    let first = encode(&Frame::Ack(Ack {
        origin: 1,
        durable_lsn: 2,
    }));
    let mut second = encode(&Frame::Resync(Resync {
        origin: 1,
        last_good_lsn: 2,
    }));
    let last = second.len() - 1;
    second[last] ^= 1;
    let mut d = FrameDecoder::new(limits());
    d.feed(&first);
    d.feed(&second);
    assert!(matches!(d.next_frame(), Ok(Decoded::Frame { .. })));
    let err = d.next_frame().unwrap_err();
    assert!(
        matches!(
            err,
            PeerError::Frame {
                offset,
                fault: FrameFault::CrcMismatch { .. }
            } if offset == first.len() as u64
        ),
        "{err:?}"
    );
    d.feed(&first);
    assert_eq!(
        d.next_frame().unwrap_err(),
        err,
        "a broken stream stays broken"
    );
}

#[test]
fn limits_validate() {
    FrameLimits::default()
        .validate()
        .expect("defaults are usable");
    assert!(FrameLimits::default().max_frame_bytes >= 16 << 20);
    let tight = FrameLimits::for_batch_bytes(64 << 20);
    tight.validate().expect("grown to fit the batch");
    assert_eq!(tight.max_frame_bytes, (64 << 20) + 60);
    let bad = FrameLimits {
        max_batch_bytes: FrameLimits::default().max_frame_bytes,
        ..FrameLimits::default()
    };
    assert!(matches!(bad.validate(), Err(PeerError::BadLimits { .. })));
    let none = FrameLimits {
        max_batches_per_frame: 0,
        ..FrameLimits::default()
    };
    assert!(matches!(none.validate(), Err(PeerError::BadLimits { .. })));
    let tiny = FrameLimits {
        max_frame_bytes: 100,
        max_batch_bytes: 10,
        ..FrameLimits::default()
    };
    assert!(matches!(tiny.validate(), Err(PeerError::BadLimits { .. })));
    // The smallest usable frame holds exactly a REFUSE with the longest message.
    let min = FrameLimits {
        max_frame_bytes: FrameLimits::MIN_FRAME_BYTES,
        max_batches_per_frame: 1,
        max_batch_bytes: 100,
    };
    min.validate().expect("the minimum is usable");
    let longest = Frame::Refuse(Refuse::new(
        RefuseReason::Protocol,
        &"x".repeat(MAX_MESSAGE_BYTES),
    ));
    let bytes = longest.to_bytes(&min).expect("fits");
    assert_eq!(bytes.len(), 1047);
    assert_eq!(bytes.len(), min.max_frame_bytes as usize);
    let below = FrameLimits {
        max_frame_bytes: FrameLimits::MIN_FRAME_BYTES - 1,
        ..min
    };
    assert!(below.validate().is_err());
}

fn arb_batches() -> impl Strategy<Value = Batches> {
    (
        any::<u64>(),
        proptest::collection::vec(
            (
                1u64..1000,
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            1..6,
        ),
        0u64..1000,
    )
        .prop_map(|(origin, steps, first_prev)| {
            let mut prev = first_prev;
            let batches = steps
                .into_iter()
                .map(|(step, stamp, payload)| {
                    let lsn = prev + step;
                    let b = Batch {
                        origin_lsn: lsn,
                        prev_origin_lsn: prev,
                        stamp,
                        payload,
                    };
                    prev = lsn;
                    b
                })
                .collect();
            Batches { origin, batches }
        })
}

proptest! {
    #[test]
    fn batches_round_trip_in_any_chunking(
        b in arb_batches(),
        cuts in proptest::collection::vec(1usize..40, 1..20),
    ) {
        let frame = Frame::Batches(b);
        let mut stream = encode(&frame);
        stream.extend(encode(&Frame::Ack(Ack { origin: 1, durable_lsn: 2 })));
        let mut d = FrameDecoder::new(limits());
        let mut got = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - at);
            d.feed(&stream[at..at + n]);
            at += n;
            i += 1;
            while let Decoded::Frame { frame, .. } = d.next_frame().expect("valid") {
                got.push(frame);
            }
        }
        prop_assert_eq!(got.len(), 2);
        prop_assert_eq!(&got[0], &frame);
        prop_assert_eq!(encode(&got[0]), encode(&frame));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_to_what_re_encodes(
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Ok(Decoded::Frame { frame, len }) = decode_frame(&data, &limits()) {
            prop_assert_eq!(encode(&frame), data[..len].to_vec());
        }
    }
}

// ---- handshake ----

const SECRET: &[u8] = b"correct horse battery staple 42!";

fn ident(node_id: u64) -> NodeIdentity {
    NodeIdentity {
        cluster_id: 0xD0_D0,
        node_id,
        incarnation: 100 + node_id,
        epoch: 7 * node_id,
    }
}

/// Runs a handshake between an initiator and an acceptor through real bytes and returns
/// both state machines and every byte sent either way.
fn run(
    init: NodeIdentity,
    init_secret: &[u8],
    acc: NodeIdentity,
    acc_secret: &[u8],
) -> (Handshake, Handshake, Vec<u8>) {
    let (mut i, hello) = Handshake::initiator(init, init_secret, [0x11; 32]).expect("initiator");
    let mut a = Handshake::acceptor(acc, acc_secret, [0x22; 32]).expect("acceptor");
    let mut wire = Vec::new();
    let mut to_acceptor = Some(hello);
    let mut to_initiator: Option<Frame> = None;
    for _ in 0..8 {
        if let Some(f) = to_acceptor.take() {
            let bytes = encode(&f);
            wire.extend_from_slice(&bytes);
            to_initiator = a.receive(&decode_whole(&bytes)).expect("acceptor takes it");
        }
        if let Some(f) = to_initiator.take() {
            let bytes = encode(&f);
            wire.extend_from_slice(&bytes);
            to_acceptor = i
                .receive(&decode_whole(&bytes))
                .expect("initiator takes it");
        }
        if to_acceptor.is_none() && to_initiator.is_none() {
            break;
        }
    }
    (i, a, wire)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn refused(hs: &Handshake) -> (RefuseReason, Party) {
    match hs.status() {
        Status::Refused(r) => (r.reason, r.by),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn same_secret_establishes_both_sides_with_the_right_peers() {
    let (i, a, wire) = run(ident(1), SECRET, ident(2), SECRET);
    assert_eq!(
        i.status(),
        &Status::Established(PeerInfo {
            node_id: 2,
            incarnation: 102,
            epoch: 14
        })
    );
    assert_eq!(
        a.status(),
        &Status::Established(PeerInfo {
            node_id: 1,
            incarnation: 101,
            epoch: 7
        })
    );
    assert_eq!(i.peer().map(|p| p.node_id), Some(2));
    assert!(!contains(&wire, SECRET));
    assert!(!format!("{i:?}{a:?}").contains("horse"));
    // Deterministic: the same nonces give the same bytes.
    let (_, _, again) = run(ident(1), SECRET, ident(2), SECRET);
    assert_eq!(wire, again);
    // After the handshake: data passes the gate, handshake frames and more input do not.
    let data = Frame::Ack(Ack {
        origin: 1,
        durable_lsn: 0,
    });
    a.admit(&data).expect("data after the handshake");
    i.admit(&data).expect("data after the handshake");
    assert!(matches!(
        a.admit(&Frame::Hello(hello(1, 1))),
        Err(PeerError::UnexpectedFrame { .. })
    ));
    // An initiator that refuses after the WELCOME ends the acceptor's link.
    let refuse = Frame::Refuse(Refuse::new(RefuseReason::WrongSecret, "no"));
    assert!(matches!(
        a.admit(&refuse),
        Err(PeerError::RefusedByPeer {
            reason: RefuseReason::WrongSecret,
            ..
        })
    ));
    let mut a = a;
    assert!(matches!(
        a.receive(&data),
        Err(PeerError::HandshakeOver {
            outcome: "established"
        })
    ));
}

#[test]
fn wrong_secret_is_refused_by_both_and_never_on_the_wire() {
    let other: &[u8] = b"a different secret of 32 bytes!!";
    let (i, a, wire) = run(ident(1), other, ident(2), SECRET);
    assert_eq!(refused(&a), (RefuseReason::WrongSecret, Party::Local));
    assert_eq!(refused(&i), (RefuseReason::WrongSecret, Party::Peer));
    assert!(!contains(&wire, SECRET));
    assert!(!contains(&wire, other));
    assert!(i.peer().is_none() && a.peer().is_none());
    assert!(a
        .admit(&Frame::Ack(Ack {
            origin: 1,
            durable_lsn: 1
        }))
        .is_err());
    // The initiator also refuses an acceptor whose WELCOME is made with another secret.
    let (mut i, hello) = Handshake::initiator(ident(1), SECRET, [1; 32]).expect("initiator");
    let mut fake = Handshake::acceptor(ident(2), other, [2; 32]).expect("acceptor");
    let challenge = fake.receive(&hello).expect("hello").expect("challenge");
    let proof = i.receive(&challenge).expect("challenge").expect("proof");
    // The fake acceptor refuses the honest proof; a forged WELCOME is refused as well.
    assert!(matches!(fake.receive(&proof), Ok(Some(Frame::Refuse(_)))));
    let reply = i.receive(&Frame::Welcome(Proof([0; 32]))).expect("welcome");
    assert!(matches!(
        reply,
        Some(Frame::Refuse(Refuse {
            reason: RefuseReason::WrongSecret,
            ..
        }))
    ));
    assert_eq!(refused(&i), (RefuseReason::WrongSecret, Party::Local));
}

#[test]
fn a_reflected_proof_is_refused() {
    let (mut i, hello) = Handshake::initiator(ident(1), SECRET, [1; 32]).expect("initiator");
    // An attacker without the secret answers with a challenge of its own ...
    let challenge = Frame::Challenge(Hello {
        node_id: 2,
        nonce: [2; 32],
        ..match &hello {
            Frame::Hello(h) => h.clone(),
            _ => unreachable!(),
        }
    });
    let Some(Frame::Proof(p)) = i.receive(&challenge).expect("challenge") else {
        panic!("expected a proof")
    };
    // ... and sends the initiator's own proof back as its WELCOME.
    assert!(matches!(
        i.receive(&Frame::Welcome(p)),
        Ok(Some(Frame::Refuse(_)))
    ));
    assert_eq!(refused(&i), (RefuseReason::WrongSecret, Party::Local));

    // An acceptor's WELCOME, replayed as a PROOF to another acceptor, is refused too.
    let (mut i2, hello2) = Handshake::initiator(ident(1), SECRET, [3; 32]).expect("initiator");
    let mut a = Handshake::acceptor(ident(2), SECRET, [4; 32]).expect("acceptor");
    let ch = a.receive(&hello2).expect("hello").expect("challenge");
    let proof = i2.receive(&ch).expect("challenge").expect("proof");
    let Some(Frame::Welcome(w)) = a.receive(&proof).expect("proof") else {
        panic!("expected a welcome")
    };
    let mut a2 = Handshake::acceptor(ident(2), SECRET, [4; 32]).expect("acceptor");
    a2.receive(&hello2).expect("hello");
    assert!(matches!(
        a2.receive(&Frame::Proof(w)),
        Ok(Some(Frame::Refuse(_)))
    ));
    assert_eq!(refused(&a2), (RefuseReason::WrongSecret, Party::Local));

    // A handshake that sends the initiator's own HELLO back as the CHALLENGE is refused
    // before any proof is made.
    let (mut i3, hello3) = Handshake::initiator(ident(1), SECRET, [5; 32]).expect("initiator");
    let Frame::Hello(h3) = hello3 else {
        unreachable!()
    };
    let reply = i3.receive(&Frame::Challenge(h3)).expect("challenge");
    assert!(matches!(reply, Some(Frame::Refuse(_))));
    assert_eq!(refused(&i3), (RefuseReason::DuplicateNodeId, Party::Local));
}

#[test]
fn duplicate_node_id_other_cluster_and_other_version_are_refused() {
    let (i, a, _) = run(ident(3), SECRET, ident(3), SECRET);
    assert_eq!(refused(&a), (RefuseReason::DuplicateNodeId, Party::Local));
    assert_eq!(refused(&i), (RefuseReason::DuplicateNodeId, Party::Peer));

    let far = NodeIdentity {
        cluster_id: 999,
        ..ident(1)
    };
    let (i, a, _) = run(far, SECRET, ident(2), SECRET);
    assert_eq!(refused(&a), (RefuseReason::OtherCluster, Party::Local));
    assert_eq!(refused(&i), (RefuseReason::OtherCluster, Party::Peer));
    let Status::Refused(r) = i.status() else {
        unreachable!()
    };
    assert!(r.message.contains("999"), "{}", r.message);

    let mut a = Handshake::acceptor(ident(2), SECRET, [4; 32]).expect("acceptor");
    let newer = Frame::Hello(Hello {
        protocol: PROTOCOL_VERSION + 1,
        ..hello(1, 9)
    });
    assert!(matches!(a.receive(&newer), Ok(Some(Frame::Refuse(_)))));
    assert_eq!(refused(&a), (RefuseReason::VersionMismatch, Party::Local));
}

#[test]
fn no_data_frame_before_the_handshake() {
    let data = Frame::Batches(Batches {
        origin: 1,
        batches: vec![batch(1, 0, b"payload")],
    });
    let mut a = Handshake::acceptor(ident(2), SECRET, [4; 32]).expect("acceptor");
    assert!(matches!(
        a.admit(&data),
        Err(PeerError::UnexpectedFrame {
            kind: FrameKind::Batches,
            ..
        })
    ));
    assert!(matches!(
        a.receive(&data),
        Err(PeerError::UnexpectedFrame {
            kind: FrameKind::Batches,
            when: "while awaiting HELLO"
        })
    ));
    assert_eq!(refused(&a), (RefuseReason::Protocol, Party::Local));
    assert!(a.admit(&data).is_err(), "still refused after the error");

    // Halfway through (after HELLO) as well, on both sides.
    let (mut i, hello) = Handshake::initiator(ident(1), SECRET, [1; 32]).expect("initiator");
    let mut a = Handshake::acceptor(ident(2), SECRET, [4; 32]).expect("acceptor");
    a.receive(&hello).expect("hello");
    assert!(a.receive(&data).is_err());
    assert!(i.receive(&data).is_err());
    // Frames out of order are refused the same way.
    let (mut i, _) = Handshake::initiator(ident(1), SECRET, [1; 32]).expect("initiator");
    assert!(matches!(
        i.receive(&Frame::Welcome(Proof([0; 32]))),
        Err(PeerError::UnexpectedFrame {
            kind: FrameKind::Welcome,
            ..
        })
    ));
}

#[test]
fn the_server_may_refuse_after_the_hello_and_a_refusal_is_final() {
    let (_, hello) = Handshake::initiator(ident(5), SECRET, [1; 32]).expect("initiator");
    let mut a = Handshake::acceptor(ident(2), SECRET, [4; 32]).expect("acceptor");
    a.receive(&hello).expect("hello");
    assert_eq!(a.peer_hello().map(|h| h.node_id), Some(5));
    let frame = a
        .refuse(RefuseReason::NotAMember, "node 5 is not in --peer")
        .expect("refuse");
    assert!(matches!(
        frame,
        Frame::Refuse(Refuse {
            reason: RefuseReason::NotAMember,
            ..
        })
    ));
    assert!(matches!(
        a.receive(&Frame::Proof(Proof([0; 32]))),
        Err(PeerError::HandshakeOver { outcome: "refused" })
    ));
    assert!(a.refuse(RefuseReason::Protocol, "again").is_err());
    assert!(matches!(
        Handshake::acceptor(ident(2), b"", [0; 32]),
        Err(PeerError::EmptySecret)
    ));
}

fn file(name: &str, offset: u64, total_len: u64, len: usize) -> Frame {
    Frame::File(FileChunk {
        name: name.into(),
        offset,
        total_len,
        data: vec![7; len],
    })
}

/// A FILE frame's name must stay inside the receiver's staging directory, and its chunk
/// inside the declared file: the encoder refuses to write such a frame, and the decoder
/// refuses one written by hand (with its CRCs right).
#[test]
fn file_names_escaping_the_backup_and_chunks_past_the_file_are_refused() {
    for bad in [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a//b",
        "./a",
        "a/.",
        "a\\b",
        "a\0b",
    ] {
        let e = file(bad, 0, 1, 1).to_bytes(&limits()).unwrap_err();
        assert!(
            matches!(e.fault(), Some(FrameFault::BadFileName { .. })),
            "{bad:?}: {e}"
        );
        // The same frame, written by hand.
        let mut payload = (bad.len() as u16).to_le_bytes().to_vec();
        payload.extend_from_slice(bad.as_bytes());
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&1u64.to_le_bytes());
        payload.push(7);
        let bytes = hand_frame(22, &payload);
        let (_, f) = fault(decode_frame(&bytes, &limits()));
        assert!(matches!(f, FrameFault::BadFileName { .. }), "{bad:?}: {f}");
    }
    let long = "a".repeat(1025);
    assert!(file(&long, 0, 1, 1).to_bytes(&limits()).is_err());
    let e = file("a", 10, 15, 6).to_bytes(&limits()).unwrap_err();
    assert!(
        matches!(e.fault(), Some(FrameFault::ChunkBeyondFile { .. })),
        "{e}"
    );
    let e = file("a", u64::MAX, u64::MAX, 2)
        .to_bytes(&limits())
        .unwrap_err();
    assert!(
        matches!(e.fault(), Some(FrameFault::ChunkBeyondFile { .. })),
        "{e}"
    );
    let e = file("a", 0, 1 << 30, MAX_FILE_CHUNK + 1)
        .to_bytes(&limits())
        .unwrap_err();
    assert!(
        matches!(e.fault(), Some(FrameFault::FileChunkTooLarge { .. })),
        "{e}"
    );
    // A chunk past its file, by hand.
    let mut payload = 1u16.to_le_bytes().to_vec();
    payload.push(b'a');
    payload.extend_from_slice(&10u64.to_le_bytes());
    payload.extend_from_slice(&11u64.to_le_bytes());
    payload.extend_from_slice(&[1, 2]);
    let (off, f) = fault(decode_frame(&hand_frame(22, &payload), &limits()));
    assert!(matches!(f, FrameFault::ChunkBeyondFile { .. }), "{f}");
    assert_eq!(
        off,
        (HEADER_LEN + 19) as u64,
        "the offset points at the data"
    );
    // A name length past the payload is a truncation, not an allocation.
    let mut payload = 60_000u16.to_le_bytes().to_vec();
    payload.extend_from_slice(&[b'a'; 17]);
    let (_, f) = fault(decode_frame(&hand_frame(22, &payload), &limits()));
    assert!(matches!(f, FrameFault::BadFileName { .. }), "{f}");
    let mut payload = 1000u16.to_le_bytes().to_vec();
    payload.extend_from_slice(&[b'a'; 17]);
    let (_, f) = fault(decode_frame(&hand_frame(22, &payload), &limits()));
    assert!(matches!(f, FrameFault::Truncated { field: "name" }), "{f}");
}

/// REBUILD's flag is 0 or 1; FILES_END has exactly 36 payload bytes.
#[test]
fn rebuild_flag_and_files_end_length_are_checked() {
    let (_, f) = fault(decode_frame(&hand_frame(21, &[2]), &limits()));
    assert!(
        matches!(
            f,
            FrameFault::BadFlag {
                field: "fresh",
                found: 2
            }
        ),
        "{f}"
    );
    let (_, f) = fault(decode_frame(&hand_frame(23, &[0; 35]), &limits()));
    assert!(
        matches!(
            f,
            FrameFault::PayloadLength {
                kind: FrameKind::FilesEnd,
                ..
            }
        ),
        "{f}"
    );
    let bytes = hand_frame(23, &[0; 36]);
    assert!(matches!(
        decode_frame(&bytes, &limits()),
        Ok(Decoded::Frame {
            frame: Frame::FilesEnd(_),
            ..
        })
    ));
}

/// HOLD's `max_ms` lies in 1..=1000; HELD's and RELEASE's flags are 0 or 1.
#[test]
fn hold_bounds_and_flags_are_checked() {
    for bad in [0u32, 1001, u32::MAX] {
        let f = Frame::Hold(Hold {
            mark: 1,
            max_ms: bad,
        });
        assert!(f.to_bytes(&limits()).is_err(), "{bad}");
        let mut payload = 1u64.to_le_bytes().to_vec();
        payload.extend_from_slice(&bad.to_le_bytes());
        let (off, f) = fault(decode_frame(&hand_frame(24, &payload), &limits()));
        assert!(
            matches!(
                f,
                FrameFault::OutOfRange {
                    field: "max_ms",
                    ..
                }
            ),
            "{f}"
        );
        assert_eq!(off, (HEADER_LEN + 8) as u64);
    }
    let mut payload = vec![0u8; 16];
    payload.push(2);
    let (_, f) = fault(decode_frame(&hand_frame(25, &payload), &limits()));
    assert!(
        matches!(
            f,
            FrameFault::BadFlag {
                field: "granted",
                found: 2
            }
        ),
        "{f}"
    );
    let (_, f) = fault(decode_frame(&hand_frame(26, &[9]), &limits()));
    assert!(
        matches!(
            f,
            FrameFault::BadFlag {
                field: "reached",
                found: 9
            }
        ),
        "{f}"
    );
}

/// A frame of kind `kind` around `payload`, both CRCs right.
fn hand_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.push(1);
    b.push(kind);
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let h = crc32c::crc32c(&b);
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(payload);
    let c = crc32c::crc32c(&b);
    b.extend_from_slice(&c.to_le_bytes());
    b
}
