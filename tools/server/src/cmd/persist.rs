//! SAVE, BGSAVE and LASTSAVE: Redis's snapshot commands, answered with duplexd's backup
//! (the same as `DUPLEX.BACKUP` without a name: a full backup into `backup_dir`). Every
//! write is already durable in the WAL, so a backup is what a Redis user means by a save:
//! a copy of the data set that can be restored elsewhere.
//!
//! BGSAVE takes the backup before it answers `Background saving started` (on a worker
//! thread, not the event loop): a client that then polls LASTSAVE sees it at once.

use duplex_proto::{error, simple};

use super::ErrLine;
use crate::shared::{BackupBase, Shared};

/// `SAVE`: a backup now; `OK` once it is complete.
pub fn save(sh: &Shared, out: &mut Vec<u8>) {
    match sh.backup(None, BackupBase::None) {
        Ok(_) => simple(out, "OK"),
        Err(e) => ErrLine::err(format!("backup failed: {e}")).send(out),
    }
}

/// `BGSAVE [SCHEDULE]`: a backup (see the module docs).
pub fn bgsave(sh: &Shared, args: &[&[u8]], out: &mut Vec<u8>) {
    if args.len() == 2 && !args[1].eq_ignore_ascii_case(b"SCHEDULE") {
        return error(out, "ERR syntax error");
    }
    match sh.backup(None, BackupBase::None) {
        Ok(_) => simple(out, "Background saving started"),
        Err(e) => ErrLine::err(format!("backup failed: {e}")).send(out),
    }
}

/// LASTSAVE's value: the Unix time (s) of the last backup this server took, or of its
/// start when it took none (as Redis answers the time it loaded its data).
pub fn lastsave(sh: &Shared) -> i64 {
    let ms = match sh.backup_info().last_ms {
        0 => sh
            .clock()
            .now_ms()
            .saturating_sub(u64::try_from(sh.uptime().as_millis()).unwrap_or(0)),
        t => t,
    };
    i64::try_from(ms / 1000).unwrap_or(i64::MAX)
}
