//! Which blocks of a store file have had their CRC checked since the file was opened.
//!
//! Bytes of a store file below its committed length never change, so a block whose CRC
//! matched once matches for the life of the open file: a read that meets it again checks
//! its lengths, kind and reserved bytes, not its CRC. Without this, every point read
//! checked the CRC of the root, each branch and the leaf (twice), tens of KiB per get.
//! The trade: damage that appears on the medium after a block was checked in this process
//! (a page evicted and read back wrong) is not seen by reads of that block until the next
//! open, whose scrub (`scrub.rs`) reads and checks every block from the file whatever the
//! reads remembered.
//!
//! One bit per 8-byte offset (blocks are 8-aligned), in chunks allocated on first use:
//! at most 1/64 of the bytes of the store that reads have touched. Offsets beyond
//! [`MAX_CHUNKS`] chunks are simply never remembered (always checked).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Store bytes one chunk of bits covers: 16 MiB (a 256 KiB bitmap).
const CHUNK_BYTES: u64 = 16 << 20;
/// Bits per chunk: one per 8-byte offset.
const CHUNK_BITS: u64 = CHUNK_BYTES / 8;
/// Chunks: 4096 × 16 MiB = 64 GiB of store remembered.
const MAX_CHUNKS: usize = 4096;

/// The set of block offsets whose CRC was checked.
pub(crate) struct VerifiedBlocks {
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl std::fmt::Debug for VerifiedBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.chunks.iter().filter(|c| c.get().is_some()).count();
        write!(f, "VerifiedBlocks({used} chunks)")
    }
}

impl Default for VerifiedBlocks {
    fn default() -> Self {
        VerifiedBlocks {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }
}

/// (chunk, word, bit) of an 8-aligned offset; `None` for an unaligned one or one beyond
/// the chunks.
fn place(off: u64) -> Option<(usize, usize, u64)> {
    if !off.is_multiple_of(8) {
        return None;
    }
    let chunk = usize::try_from(off / CHUNK_BYTES).ok()?;
    if chunk >= MAX_CHUNKS {
        return None;
    }
    let bit = (off % CHUNK_BYTES) / 8;
    Some((chunk, (bit / 64) as usize, 1u64 << (bit % 64)))
}

impl VerifiedBlocks {
    /// Whether the block at `off` was checked.
    pub(crate) fn contains(&self, off: u64) -> bool {
        let Some((c, w, b)) = place(off) else {
            return false;
        };
        self.chunks[c]
            .get()
            .is_some_and(|words| words[w].load(Ordering::Relaxed) & b != 0)
    }

    /// Records that the block at `off` was checked.
    pub(crate) fn insert(&self, off: u64) {
        let Some((c, w, b)) = place(off) else {
            return;
        };
        let words = self.chunks[c].get_or_init(|| {
            (0..CHUNK_BITS / 64)
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        words[w].fetch_or(b, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exactly_the_offsets_inserted() {
        let v = VerifiedBlocks::default();
        let offs = [
            0u64,
            8,
            64,
            4096,
            CHUNK_BYTES - 8,
            CHUNK_BYTES,
            5 * CHUNK_BYTES + 72,
        ];
        for o in offs {
            assert!(!v.contains(o));
            v.insert(o);
        }
        for o in offs {
            assert!(v.contains(o), "{o}");
        }
        for o in [16u64, 56, 4104, CHUNK_BYTES + 8, 5 * CHUNK_BYTES + 64] {
            assert!(!v.contains(o), "{o}");
        }
        // Unaligned and out-of-range offsets are never remembered.
        v.insert(12);
        assert!(!v.contains(12));
        let far = CHUNK_BYTES * MAX_CHUNKS as u64;
        v.insert(far);
        assert!(!v.contains(far));
    }
}
