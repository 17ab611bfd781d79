//! The `CHECKSUMS` object of a backup in object storage: for each file, its length and
//! the CRC32C of each [`PART_SIZE`](crate::PART_SIZE) chunk, so that every ranged read
//! is checked on its own and damage is reported with its byte range (docs/FORMAT.md,
//! section 32).

/// Magic of a `CHECKSUMS` object.
pub const MAGIC: &[u8; 8] = b"DPLXSUMS";
/// Its version.
pub const VERSION: u32 = 1;
/// Its name inside a backup's prefix.
pub const NAME: &str = "CHECKSUMS";

/// The checksums of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSums {
    /// File name (as in the backup directory).
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// CRC32C of each chunk, in order (one, of no bytes, for an empty file).
    pub crcs: Vec<u32>,
}

/// Encodes the checksums of a backup's files (chunk size [`crate::PART_SIZE`]).
pub fn encode(files: &[FileSums]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&(crate::PART_SIZE as u32).to_le_bytes());
    b.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for f in files {
        b.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
        b.extend_from_slice(f.name.as_bytes());
        b.extend_from_slice(&f.len.to_le_bytes());
        b.extend_from_slice(&(f.crcs.len() as u32).to_le_bytes());
        for c in &f.crcs {
            b.extend_from_slice(&c.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a `CHECKSUMS` object; `Err` says what is wrong.
pub fn decode(b: &[u8]) -> Result<Vec<FileSums>, String> {
    if b.len() < 24 || &b[..8] != MAGIC {
        return Err("not a CHECKSUMS object (bad magic or too short)".into());
    }
    let (body, tail) = b.split_at(b.len() - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let found = crc32c::crc32c(body);
    if stored != found {
        return Err(format!(
            "CRC32C of bytes [0, {}) is {found:08x}, the trailer says {stored:08x}",
            body.len()
        ));
    }
    let mut r = Reader { b: body, at: 8 };
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!("version {version}, this build reads {VERSION}"));
    }
    let chunk = r.u32()?;
    if u64::from(chunk) != crate::PART_SIZE {
        return Err(format!(
            "chunk size {chunk}, this build reads {}",
            crate::PART_SIZE
        ));
    }
    let n = r.u32()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let nl = r.u16()? as usize;
        let name = String::from_utf8(r.take(nl)?.to_vec())
            .map_err(|_| "a file name is not UTF-8".to_string())?;
        let len = r.u64()?;
        let count = r.u32()? as usize;
        if count as u64 != len.div_ceil(crate::PART_SIZE).max(1) {
            return Err(format!("{name}: {count} chunk checksums for {len} bytes"));
        }
        let mut crcs = Vec::with_capacity(count);
        for _ in 0..count {
            crcs.push(r.u32()?);
        }
        out.push(FileSums { name, len, crcs });
    }
    if r.at != body.len() {
        return Err(format!("{} stray bytes at the end", body.len() - r.at));
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(format!("truncated at byte {}", self.at));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let f = vec![
            FileSums {
                name: "BACKUP".into(),
                len: 10,
                crcs: vec![7],
            },
            FileSums {
                name: "store-000001.dpx".into(),
                len: crate::PART_SIZE + 1,
                crcs: vec![1, 2],
            },
        ];
        let b = encode(&f);
        assert_eq!(decode(&b).unwrap(), f);
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(decode(&d).is_err(), "flip at {i}");
        }
        assert!(decode(&b[..b.len() - 1]).is_err());
    }
}
