//! The CPU prefetch hint [`TreeWriter::rebuild`](super::TreeWriter::rebuild) and the replay
//! use: the engine's only `unsafe` code, kept here alone.
#![allow(unsafe_code)]

use super::Update;

/// How many updates ahead [`TreeWriter::rebuild`](super::TreeWriter::rebuild) asks for the next keys and values.
pub(super) const PREFETCH_AHEAD: usize = 12;

/// Asks the CPU to start loading update `i`'s key and value: after a replay's sort they sit
/// at random places in its arena, and waiting for each in turn would dominate the merge.
#[inline]
pub(crate) fn prefetch(ups: &[Update<'_>], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some((k, _, v)) = ups.get(i) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = k.as_ptr();
        // Keys and values are adjacent in the arena: touch every line of both (up to 4).
        let len = k.len() + v.map_or(0, <[u8]>::len);
        let mut off = 0;
        while off < len.min(256) {
            // SAFETY: a prefetch is a hint: it never faults and has no effect on memory,
            // whatever the address (this one is inside the slices anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(off).cast()) };
            off += 64;
        }
    }
}
