//! A peer frame's length fields never size an allocation before the bytes are there: this
//! test binary counts the largest single allocation while hostile headers are decoded (one
//! test in its own binary, so no other test's allocations are counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use common::fix_crcs;
use duplex_proto::peer::{
    decode_frame, Ack, Batch, Batches, Decoded, Frame, FrameDecoder, FrameLimits, HEADER_LEN,
};

static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; only the size is noted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sets bytes `at..at+4` to `v` and recomputes both CRCs.
fn patch_u32(frame: &mut [u8], at: usize, v: u32) {
    frame[at..at + 4].copy_from_slice(&v.to_le_bytes());
    fix_crcs(frame);
}

#[test]
fn hostile_lengths_allocate_nothing_large() {
    // Limits far above anything this test sends: only the bytes present may size memory.
    let limits = FrameLimits {
        max_frame_bytes: u32::MAX,
        max_batches_per_frame: u32::MAX,
        max_batch_bytes: u32::MAX - 100,
    };
    let ack = Frame::Ack(Ack {
        origin: 1,
        durable_lsn: 1,
    })
    .to_bytes(&limits)
    .expect("encodes");
    let batches = Frame::Batches(Batches {
        origin: 1,
        batches: vec![Batch {
            origin_lsn: 2,
            prev_origin_lsn: 1,
            stamp: 3,
            payload: b"0123456789".to_vec(),
        }],
    })
    .to_bytes(&limits)
    .expect("encodes");
    LARGEST.store(0, Ordering::Relaxed);

    // A BATCHES header claiming 4 GiB, with 10 bytes present: incomplete, nothing reserved.
    let mut claim = batches.clone();
    patch_u32(&mut claim, 8, u32::MAX - 64);
    let r = decode_frame(&claim[..HEADER_LEN + 10], &limits);
    assert!(matches!(r, Ok(Decoded::Incomplete { .. })), "{r:?}");
    let mut d = FrameDecoder::new(limits);
    d.feed(&claim[..HEADER_LEN + 10]);
    assert!(matches!(d.next_frame(), Ok(Decoded::Incomplete { .. })));
    // The same against the default limits: refused outright.
    assert!(decode_frame(&claim[..HEADER_LEN + 10], &FrameLimits::default()).is_err());

    // A whole frame whose batch count claims 4 billion batches.
    let mut count = batches.clone();
    patch_u32(&mut count, HEADER_LEN + 8, u32::MAX);
    assert!(decode_frame(&count, &limits).is_err());

    // A whole frame whose batch length claims 4 GiB.
    let mut len = batches;
    patch_u32(&mut len, HEADER_LEN + 12 + 24, u32::MAX - 200);
    assert!(decode_frame(&len, &limits).is_err());

    // An ACK claiming a 4 GiB payload.
    let mut big_ack = ack;
    patch_u32(&mut big_ack, 8, u32::MAX - 64);
    assert!(decode_frame(&big_ack, &limits).is_err());

    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < 4096, "largest allocation {largest} bytes");
}
