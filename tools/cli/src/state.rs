//! The `duplexd` STATE file of a data directory, read for `verify` from its specification
//! (docs/FORMAT.md section 27): 44 bytes, magic `DPXSTATE`, version 1, the state byte, three
//! zero bytes, epoch, node id, update time, CRC32C of the first 40 bytes. Decoded here
//! rather than through the server crate so that the recovery tool reads a data directory
//! without linking the daemon; the rules are the same as the daemon's, which refuses to
//! start on any of the damage this reports.

use std::path::Path;

use duplex_wal::le::{u32_at, u64_at};

use crate::exit::ToolError;

/// Name of the state file in a data directory.
pub const STATE_FILE: &str = "STATE";
const STATE_MAGIC: &[u8; 8] = b"DPXSTATE";
const STATE_VERSION: u32 = 1;
const STATE_LEN: usize = 44;
/// The state byte's values, 1 to 8.
const STATES: [&str; 8] = [
    "starting",
    "running",
    "backing-up",
    "recovering",
    "fenced",
    "stopping",
    "stopped",
    "failed",
];

/// A decoded STATE record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateInfo {
    /// The state's name, as FORMAT.md section 27 spells it.
    pub state: &'static str,
    /// Fencing epoch.
    pub epoch: u64,
    /// The server's node id.
    pub node_id: u64,
    /// When the state was set, Unix milliseconds.
    pub updated_ms: u64,
}

/// Decodes the 44 bytes of a STATE file; the error says what is wrong with them.
pub fn decode_state(b: &[u8]) -> Result<StateInfo, String> {
    if b.len() != STATE_LEN {
        return Err(format!("{} bytes instead of {STATE_LEN}", b.len()));
    }
    if &b[0..8] != STATE_MAGIC {
        return Err("it does not start with DPXSTATE".into());
    }
    let (stored, computed) = (u32_at(b, 40), crc32c::crc32c(&b[..40]));
    if stored != computed {
        return Err(format!(
            "CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let version = u32_at(b, 8);
    if version != STATE_VERSION {
        return Err(format!("unknown version {version}"));
    }
    if b[13..16] != [0, 0, 0] {
        return Err("reserved bytes are not zero".into());
    }
    let state = b[12]
        .checked_sub(1)
        .and_then(|i| STATES.get(usize::from(i)))
        .ok_or_else(|| format!("unknown state byte {}", b[12]))?;
    Ok(StateInfo {
        state,
        epoch: u64_at(b, 16),
        node_id: u64_at(b, 24),
        updated_ms: u64_at(b, 32),
    })
}

/// Reads and checks the STATE file of the data directory `dir`: `Ok(None)` without one (a
/// directory `duplexd` never ran on, or an engine-only database). A damaged file is a
/// verification failure naming it.
pub fn check_state_file(dir: &Path) -> Result<Option<StateInfo>, ToolError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ToolError::operational(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    decode_state(&bytes).map(Some).map_err(|why| {
        ToolError::damaged(format!(
            "{} is damaged ({why}): duplexd refuses to start on it, because the fencing epoch it holds must not go backwards. If the database itself verified OK, restore the file from a copy of this directory; otherwise restore the data directory from a backup (duplex-recover restore), whose server starts above the highest epoch its WAL recorded",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: u8, epoch: u64) -> Vec<u8> {
        let mut b = vec![0u8; STATE_LEN];
        b[0..8].copy_from_slice(STATE_MAGIC);
        b[8..12].copy_from_slice(&STATE_VERSION.to_le_bytes());
        b[12] = state;
        b[16..24].copy_from_slice(&epoch.to_le_bytes());
        b[24..32].copy_from_slice(&7u64.to_le_bytes());
        b[32..40].copy_from_slice(&1234u64.to_le_bytes());
        let crc = crc32c::crc32c(&b[..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn decodes_the_specified_layout_and_refuses_every_damage() {
        let b = record(5, 3);
        assert_eq!(
            decode_state(&b),
            Ok(StateInfo {
                state: "fenced",
                epoch: 3,
                node_id: 7,
                updated_ms: 1234
            })
        );
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(decode_state(&d).is_err(), "flip at {i}");
        }
        assert!(decode_state(&b[..43]).is_err());
        assert!(decode_state(&record(0, 1)).is_err());
        assert!(decode_state(&record(9, 1)).is_err());
        assert_eq!(decode_state(&record(8, 1)).map(|s| s.state), Ok("failed"));
    }
}
