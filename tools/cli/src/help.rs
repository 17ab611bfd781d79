//! The long help texts of `duplex-recover`, shown after each command's options: kept
//! apart from the binary so that its code reads without them.

/// What `duplex-recover --help` adds after the options: the recovery in brief.
pub const MAIN_HELP: &str = "\
Lost a disk? The usual sequence:
  1. duplex-recover verify /backups/full-1 /backups/inc-2 /archive
        checks every file, checksum and LSN of the backup chain and the archive
  2. duplex-recover restore --backup /backups/full-1 --backup /backups/inc-2 \\
        --archive /archive --into /data/duplex
        restores the chain and replays the archive to its end; prints the final LSN and
        the content digest (compare it with a peer's digest)
  3. start duplexd on /data/duplex
  Without an archive, a backup restores on its own to the LSN at which its copy ended:
     duplex-recover restore --backup /backups/full-1 --into /data/duplex

Point in time (undo a bad write): add --until-lsn N or --until-time 2026-11-25T10:00:00Z
  to restore; find N with: duplex-recover dump /archive --from LSN | less

Take a backup of a running server's directory (no need to stop it):
  duplex-recover backup --data /data/duplex --into /backups/full-$(date +%F)

Exit codes:
  0  all is well
  1  corruption or a verification failure was found (damaged file, missing segment / gap,
     archive of another node, broken backup chain); the message names the file
  2  usage error: bad arguments, or a path that is not what the command needs
  3  I/O or another operational error (disk, permissions, target not empty, database
     locked); the message says what to do";

/// What `duplex-recover restore --help` adds: targets, examples, exit codes.
pub const RESTORE_HELP: &str = "\
A backup holds the WAL from its checkpoint to the LSN at which its copy ended (its end LSN,
shown by `verify`): without --archive the restore reaches that LSN from the backup alone;
with --archive it goes on from there with what the archive holds after it.

A point-in-time target counts records: one record is one client command (or one
MULTI/EXEC), so --until-lsn N applies exactly the records up to and including N, even
when the server logged them in one atomic write group with later ones; --until-time T
applies the records stamped at or before T. A group cut short by a crash (a torn tail) is
never applied.

Examples:
  Restore the backup alone (to its end LSN):
    duplex-recover restore --backup /backups/full-1 --into /data/duplex
  Restore the newest state the archive holds:
    duplex-recover restore --backup /backups/full-1 --archive /archive --into /data/duplex
  A chain (full backup first, then each incremental, oldest first):
    duplex-recover restore --backup /b/full-1 --backup /b/inc-2 --backup /b/inc-3 \\
        --archive /archive --into /data/duplex
  The state just before a bad write at LSN 81234 (find it with `dump`):
    duplex-recover restore --backup /b/full-1 --archive /archive --into /data/r --until-lsn 81233
  The state at a wall-clock time (RFC 3339, or ms since the epoch):
    duplex-recover restore ... --until-time 2026-11-25T10:00:00Z
  The archive has a damaged or missing segment and you accept losing what follows it:
    duplex-recover restore ... --stop-at-last-good      (still exits 1: damage was found)
  The target holds a failed earlier attempt:
    duplex-recover restore ... --into /data/duplex --force   (deletes its contents first)

Several --archive directories are read as one log (the first wins where two hold the same
segment): e.g. the archive plus the wal/ directory of the lost node, if it survived.
Every backup file is verified before use; nothing past a gap or a damaged record is
applied. The restored database opens as a normal database.

Exit codes:
  0  restored; the summary gives the final LSN and the content digest
  1  damage found: a backup file, an archive segment, a gap, a wrong chain or an archive
     of another node (with --stop-at-last-good the database is usable up to the LSN shown)
  2  bad arguments (e.g. --until-lsn before the backup's checkpoint, --archive missing)
  3  I/O or operational error (target not empty without --force, disk, permissions)";

/// What `duplex-recover verify --help` adds: what each kind of path is checked for.
pub const VERIFY_HELP: &str = "\
Each PATH may be:
  a backup directory     every file's length and CRC32C, the manifests, and for a full
                         backup the store header and every tree block; backups given one
                         after the other are checked as a chain (oldest first)
  a WAL archive          every segment header, record CRC and LSN, gaps between segments,
                         one node throughout, and that the last segment ends cleanly; an
                         archive root is checked per lineage directory (n<node>-t<timeline>:
                         one node, one timeline, one history each) and each is reported
  a *.wal segment file   the same for that one segment (read from its directory, bounded
                         to its own LSNs)
  a data directory       its MANIFEST, store and tree as for a backup, and its wal/ (a
                         torn tail at the very end is normal after a crash: a note, not a
                         failure), and duplexd's STATE file if there is one; works on a
                         running database's directory, read-only
A backup given with an archive must find its lineage (node and timeline, shown in its
report) among the archive's histories: a restored copy's backups are continued by the copy's
timeline, not the original's. A directory holding a store copy but no BACKUP manifest is a
backup that failed or is still being written, and never verifies.

Examples:
  duplex-recover verify /backups/full-1 /backups/inc-2 /backups/inc-3
  duplex-recover verify /archive
  duplex-recover verify /backups/full-1 /archive /data/duplex

Exit codes:
  0  every path verified
  1  at least one path is damaged or inconsistent (the report names the file)
  2  a path is not a backup, WAL directory, segment or data directory
  3  I/O error while reading";

/// What `duplex-recover dump --help` adds: the output formats.
pub const DUMP_HELP: &str = "\
PATH is a WAL archive, the wal/ of a data directory, a data directory, or one *.wal file.
One line per record:
  lsn=N kind=batch size=BYTES time=RFC3339 logical=L origin=NODE origin_lsn=N ops=K
      | PUT key=\"...\" value=LENB\"first bytes...\" | DEL key=\"...\"
Keys and values are escaped: printable ASCII as is, \\xNN otherwise, ... when cut.
With --json: one JSON object per line (lsn, kind, type, size, time, wall_ms, logical,
origin, origin_lsn, ops[{op, key, value_len, value, value_truncated}]).

Examples:
  duplex-recover dump /archive --from 81200 --until 81300
  duplex-recover dump /archive --json | jq -c 'select(.ops[]?.key == \"user:42\")'
  duplex-recover dump /data/duplex/wal/00000000000000081001.wal

Exit codes:
  0  every record read was whole
  1  a damaged record, a gap or an undecodable batch (the records before it are printed)
  2  bad arguments, or --from outside what the log holds
  3  I/O error";

/// What `duplex-recover backup --help` adds: what the backup holds and its pace.
pub const BACKUP_HELP: &str = "\
Copies the committed store of a data directory (a running server's is fine: the store's
committed bytes never change), then the WAL from the store's checkpoint to the end of what
the WAL files hold (fsynced first), into a new directory, which appears under its final name
only when whole; a backup that fails leaves no directory under that name. It does not take
a checkpoint. The backup restores on its own to its end LSN (printed); an archive continues
it from there.

The copy is paced so that the server's writers keep the disk: by default adaptively (it
takes at most about a tenth of the disk's time); --rate-limit MB/s sets a fixed pace, and
--rate-limit 0 copies as fast as the disk goes.

Examples:
  duplex-recover backup --data /data/duplex --into /backups/full-2026-11-25
  duplex-recover backup --data /data/duplex --into /backups/inc-2026-11-26 \\
      --incremental-from /backups/full-2026-11-25

Exit codes:
  0  backup complete (the summary gives its checkpoint LSN and the end LSN it restores to)
  1  the data directory or the base backup is damaged
  2  bad arguments (e.g. --data is not a data directory)
  3  I/O or operational error (destination exists, disk full, permissions)";

/// What `duplex-recover drill --help` adds.
pub const DRILL_HELP: &str = "\
Proves a backup by restoring it, as duplexd's restore drill does after each backup
(backup_drill): the chain is restored into a scratch directory, rolled forward (its own WAL,
then the archives given) to --until-lsn (default: the last backup's end LSN), opened, and
its stamped digest printed; the scratch directory is removed. To repeat a server's drill by
hand, give the LSN and digest from its INFO (drill_lsn, drill_digest) or its drill_passed log
line:
    duplex-recover drill --backup /b/2026-12-01T02-30 --archive /archive \\
        --until-lsn 81233 --expect 5f0c...e2/120000

Exit codes: 0 restored (and equal to --expect); 1 damage found, or the digest differs;
2 bad arguments; 3 an operational error (the message says which).";
