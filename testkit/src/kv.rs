//! Deterministic keys and values: every workload byte is a pure function of a number, so a
//! checker recomputes what a writer wrote instead of remembering it.

/// Key length of [`key`].
pub const KEY_LEN: usize = 16;
/// Value length of [`value`].
pub const VALUE_LEN: usize = 100;

/// SplitMix64's finalizer: a bijection on u64 with good mixing.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The random-looking 16-byte key number `i` (distinct for distinct `i`: the first 8 bytes
/// are a bijection of `i`).
pub fn key(i: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&mix(i).to_be_bytes());
    k[8..].copy_from_slice(&mix(i ^ 0x5555_AAAA_5555_AAAA).to_be_bytes());
    k
}

/// The 100-byte value of key `i`: random bytes, none of them zero.
pub fn value(i: u64) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    let mut s = i ^ 0xC0FF_EE00_D15E_A5E5;
    for chunk in v.chunks_mut(8) {
        s = mix(s);
        let b = s.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    for b in &mut v {
        if *b == 0 {
            *b = 1;
        }
    }
    v
}

/// `len` bytes drawn from `seed` with [`mix`], appended to `out` (which may already hold a
/// header): the filler of the crash tests' self-describing payloads.
pub fn fill(out: &mut Vec<u8>, len: usize, seed: u64) {
    let mut s = seed;
    while out.len() < len {
        s = mix(s);
        let n = (len - out.len()).min(8);
        out.extend_from_slice(&s.to_le_bytes()[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_values_have_no_zero() {
        let keys: std::collections::HashSet<_> = (0..10_000).map(key).collect();
        assert_eq!(keys.len(), 10_000);
        assert!((0..1000).all(|i| !value(i).contains(&0)));
    }

    #[test]
    fn fill_continues_after_a_header() {
        let mut v = b"hdr".to_vec();
        fill(&mut v, 20, 7);
        assert_eq!(v.len(), 20);
        assert_eq!(&v[..3], b"hdr");
        assert_eq!(&v[3..11], &mix(7).to_le_bytes());
    }
}
