//! Feeds arbitrary bytes to the peer-link frame decoder and the handshake
//! (`duplex_proto::peer`, FORMAT.md section 29).
//!
//! Input: `ctl[2] stream`. `ctl[0]` bit 0 says whether the honest initiator of the third
//! check holds the acceptor's secret; `ctl[0]` and `ctl[1]` seed the chunk sizes and which
//! frames the stream's frames replace. The stream runs twice: as given, and with every
//! frame's header and frame CRCs recomputed, so the checks behind the checksums are reached.
//!
//! Properties (beyond: no panic, no allocation above the 8 MiB ceiling of `duplex_fuzz`):
//! - `decode_frame` over the stream, frame after frame: each frame spans at most the bytes
//!   left and re-encodes to exactly the bytes it was decoded from;
//! - a `FrameDecoder` fed the same stream in chunks of 1 to 64 bytes gives the same frames
//!   and ends the same way (the same error at the same offset, or the same `need`);
//! - an acceptor or an initiator fed only the stream's frames never reaches Established
//!   (the fuzzer cannot make an HMAC-SHA256 proof), and stays ended after it has ended;
//! - an honest initiator and acceptor whose frames may be replaced by the stream's: each
//!   side that reaches Established proved the same secret, and with no frame replaced and
//!   the same secret both reach it.
#![no_main]

use duplex_proto::peer::{
    decode_frame, Decoded, Frame, FrameDecoder, FrameLimits, Handshake, NodeIdentity, PeerError,
    Status, HEADER_LEN, MAGIC, TRAILER_LEN,
};
use libfuzzer_sys::fuzz_target;

/// Small limits, far below the 8 MiB allocation ceiling whatever a length field claims.
const LIMITS: FrameLimits = FrameLimits {
    max_frame_bytes: 64 << 10,
    max_batches_per_frame: 64,
    max_batch_bytes: 16 << 10,
};

const SECRET: &[u8] = b"peer_frame fuzz cluster secret!!";
const WRONG: &[u8] = b"peer_frame fuzz other secret....";

fuzz_target!(|data: &[u8]| {
    let (ctl, stream) = match data {
        [a, b, rest @ ..] => ([*a, *b], rest),
        _ => return,
    };
    let mut seed = u64::from(u16::from_le_bytes(ctl)) | 1;
    let frames = check_stream(stream, &mut seed);
    let fixed = fix_crcs(stream);
    let fixed_frames = check_stream(&fixed, &mut seed);
    for frames in [&frames, &fixed_frames] {
        never_established(frames);
        honest_pair(ctl[0] & 1 == 1, frames, &mut seed);
    }
});

/// xorshift64: chunk sizes and choices, reproducible from the input.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Decodes `stream` whole and in chunks; both must agree. Returns the frames decoded.
fn check_stream(stream: &[u8], seed: &mut u64) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = 0;
    let end = loop {
        match decode_frame(&stream[at..], &LIMITS) {
            Ok(Decoded::Frame { frame, len }) => {
                assert!(len >= HEADER_LEN + TRAILER_LEN && len <= stream.len() - at);
                let again = frame.to_bytes(&LIMITS).expect("a decoded frame re-encodes");
                assert_eq!(again, &stream[at..at + len], "re-encoding differs");
                frames.push(frame);
                at += len;
            }
            Ok(Decoded::Incomplete { need }) => break Ok(need),
            Err(PeerError::Frame { offset, fault }) => break Err((at as u64 + offset, fault)),
            Err(other) => panic!("decode_frame returned {other:?}"),
        }
    };
    let mut d = FrameDecoder::new(LIMITS);
    let mut got = Vec::new();
    let mut fed = 0;
    let last = loop {
        let r = d.next_frame();
        match r {
            Ok(Decoded::Frame { frame, .. }) => got.push(frame),
            Ok(Decoded::Incomplete { need }) if fed == stream.len() => break Ok(need),
            Ok(Decoded::Incomplete { .. }) => {
                let n = (next(seed) % 64 + 1) as usize;
                let n = n.min(stream.len() - fed);
                d.feed(&stream[fed..fed + n]);
                fed += n;
            }
            Err(PeerError::Frame { offset, fault }) => break Err((offset, fault)),
            Err(other) => panic!("next_frame returned {other:?}"),
        }
    };
    assert_eq!(got, frames, "chunked decoding gave other frames");
    assert_eq!(last, end, "chunked decoding ended otherwise");
    frames
}

/// Recomputes the CRCs of each frame in `stream` whose magic is in place.
fn fix_crcs(stream: &[u8]) -> Vec<u8> {
    let mut b = stream.to_vec();
    let mut at = 0;
    while b.len() >= at + HEADER_LEN && b[at..at + 4] == MAGIC {
        let h = crc32c::crc32c(&b[at..at + 12]);
        b[at + 12..at + 16].copy_from_slice(&h.to_le_bytes());
        let mut len = [0u8; 4];
        len.copy_from_slice(&b[at + 8..at + 12]);
        let body_end = at + HEADER_LEN + u32::from_le_bytes(len) as usize;
        if b.len() < body_end + TRAILER_LEN {
            break;
        }
        let c = crc32c::crc32c(&b[at..body_end]);
        b[body_end..body_end + TRAILER_LEN].copy_from_slice(&c.to_le_bytes());
        at = body_end + TRAILER_LEN;
    }
    b
}

fn ident(node_id: u64) -> NodeIdentity {
    NodeIdentity {
        cluster_id: 7,
        node_id,
        incarnation: 1,
        epoch: 1,
    }
}

/// Feeds `frames` to a fresh handshake; it must never be established.
fn drive(hs: &mut Handshake, frames: &[Frame]) {
    let mut ended = false;
    for f in frames {
        let r = hs.receive(f);
        if ended {
            assert!(r.is_err(), "an ended handshake took another frame");
        }
        assert!(
            !matches!(hs.status(), Status::Established(_)),
            "established without a proof"
        );
        ended = !matches!(hs.status(), Status::InProgress);
        if hs.admit(f).is_ok() {
            panic!("a frame was admitted before the handshake was established");
        }
    }
}

fn never_established(frames: &[Frame]) {
    let mut a = Handshake::acceptor(ident(2), SECRET, [0xA5; 32]).expect("acceptor");
    drive(&mut a, frames);
    let (mut i, _) = Handshake::initiator(ident(1), SECRET, [0x5A; 32]).expect("initiator");
    drive(&mut i, frames);
}

/// An honest initiator and acceptor exchange frames, some replaced by the stream's.
fn honest_pair(same_secret: bool, frames: &[Frame], seed: &mut u64) {
    let secret = if same_secret { SECRET } else { WRONG };
    let (mut i, hello) = Handshake::initiator(ident(1), secret, [0x11; 32]).expect("initiator");
    let mut a = Handshake::acceptor(ident(2), SECRET, [0x22; 32]).expect("acceptor");
    let mut injected = frames.iter();
    let mut replaced = false;
    let mut pending = Some((hello, true));
    for _ in 0..8 {
        let Some((mut frame, to_acceptor)) = pending.take() else {
            break;
        };
        if next(seed) % 4 == 0 {
            if let Some(f) = injected.next() {
                frame = f.clone();
                replaced = true;
            }
        }
        let (to, from_acceptor) = if to_acceptor {
            (&mut a, true)
        } else {
            (&mut i, false)
        };
        if let Ok(Some(reply)) = to.receive(&frame) {
            pending = Some((reply, !from_acceptor));
        }
    }
    for hs in [&i, &a] {
        if matches!(hs.status(), Status::Established(_)) {
            assert!(same_secret, "established with different secrets");
        }
    }
    if same_secret && !replaced {
        assert!(matches!(i.status(), Status::Established(_)), "{i:?}");
        assert!(matches!(a.status(), Status::Established(_)), "{a:?}");
    }
}
