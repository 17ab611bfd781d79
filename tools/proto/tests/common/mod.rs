//! What the peer-link suites share.
#![allow(dead_code)]

/// Recomputes both CRCs (the header's, over bytes 0..12, and the frame's, over all but the
/// last 4 bytes) of one frame a test edited, so the decoder reaches the checks behind them.
pub fn fix_crcs(frame: &mut [u8]) {
    let h = crc32c::crc32c(&frame[..12]);
    frame[12..16].copy_from_slice(&h.to_le_bytes());
    let end = frame.len() - 4;
    let c = crc32c::crc32c(&frame[..end]);
    frame[end..].copy_from_slice(&c.to_le_bytes());
}
