//! Little-endian fields: the one way every Duplex decoder reads them.
//!
//! All integers on disk and on the wire are little-endian (`docs/FORMAT.md`, conventions).
//! Encoders write them with std's `to_le_bytes`; decoders read them here, either at a fixed
//! offset of a block whose length was checked first ([`u16_at`], [`u32_at`], [`u64_at`]) or
//! in sequence with a bounds-checked [`Cursor`] that returns `None` instead of reading past
//! the end, so a length field can never make a decoder read (or allocate) beyond its input.
//! std's `from_le_bytes` reads as clearly as the `byteorder` crate and needs no dependency,
//! so `byteorder` is not used.

/// Reads a `u16` at `at`. The caller has checked that `b` holds `at + 2` bytes.
#[inline]
pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Reads a `u32` at `at`. The caller has checked that `b` holds `at + 4` bytes.
#[inline]
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a `u64` at `at`. The caller has checked that `b` holds `at + 8` bytes.
#[inline]
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A bounds-checked little-endian reader over a byte slice: every read returns `None`
/// when the slice holds fewer bytes than asked for, and then nothing is consumed.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, pos: 0 }
    }

    /// The next `n` bytes, borrowed.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }

    /// The next `u16`.
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16_at(s, 0))
    }

    /// The next `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32_at(s, 0))
    }

    /// The next `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| u64_at(s, 0))
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    /// Bytes read so far (the offset of the next read).
    pub fn position(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_reads_in_order_and_stops_at_the_end() {
        let mut b = Vec::new();
        b.push(7u8);
        b.extend_from_slice(&0x1234u16.to_le_bytes());
        b.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        b.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        let mut c = Cursor::new(&b);
        assert_eq!(c.u8(), Some(7));
        assert_eq!(c.u16(), Some(0x1234));
        assert_eq!(c.u32(), Some(0xdead_beef));
        assert_eq!(c.position(), 7);
        assert_eq!(c.u64(), Some(0x0102_0304_0506_0708));
        assert_eq!(c.remaining(), 0);
        assert_eq!(c.u8(), None);
        assert_eq!(c.take(usize::MAX), None);
        assert_eq!(u32_at(&b, 3), 0xdead_beef);
        assert_eq!(u64_at(&b, 7), 0x0102_0304_0506_0708);
        assert_eq!(u16_at(&b, 1), 0x1234);
    }
}
