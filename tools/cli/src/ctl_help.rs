//! The long help texts of `duplexctl`, shown after each command's options, with the exit
//! codes: kept apart from the binary so that its code reads without them.

/// What `duplexctl --help` adds after the commands: examples and exit codes.
pub const MAIN_HELP: &str = "\
Examples:
  duplexctl status 127.0.0.1:7379 127.0.0.1:7380
  duplexctl status --json 127.0.0.1:7379 127.0.0.1:7380 | jq '.[] | {server, state}'
  duplexctl compare 127.0.0.1:7379 127.0.0.1:7380
  duplexctl conflicts 127.0.0.1:7379 --count 20
  duplexctl backup 127.0.0.1:7379 before-upgrade
  duplexctl rebuild 127.0.0.1:7380 --from 127.0.0.1:7379 --start -- --config /etc/duplex/b.toml

With a password (requirepass): --password SECRET, or DUPLEX_PASSWORD=SECRET in the
environment (kept out of the process list).

Exit codes:
  0  all is well: every server answered; compare: the databases are identical
  1  compare: the databases differ (every differing key is printed); rebuild: the server
     runs again but reports updates of the lost server gone
  2  usage error: bad arguments
  3  a server could not be reached, refused the password, or answered an error;
     status still prints every server, the unreachable ones as UNREACHABLE rows";

/// What `duplexctl status --help` adds.
pub const STATUS_HELP: &str = "\
One row per server: its state (running, fenced, failed, ...), epoch, node id, last LSN, the
archive's health and lag, the last backup's time, the conflicts journaled since it started,
and each peer link with its state and lag (ms and batches behind). Read with DUPLEX.STATE,
INFO persistence, DUPLEX.PEERS and DUPLEX.CONFLICTS 0; works on a server in any state.

Exit codes: 0 every server answered; 2 bad arguments; 3 at least one did not (its row says
why).";

/// What `duplexctl rebuild --help` adds.
pub const REBUILD_HELP: &str = "\
Rebuilds a lost server from a healthy peer while that peer keeps serving, and follows the
rebuild to its end. The rebuild itself is duplexd's (--rebuild-from PEER; docs/OPERATIONS.md,
runbook 'A server's disk is lost'): the lost server copies the peer's backup over the
authenticated peer link, restores it under its own node id with a new incarnation, rolls it
forward, pulls back its own old updates from any peer (or its surviving archive) that holds
more of them, catches up live, and ends with the peer's short write hold; then it runs on a
new epoch and its clients fail back.

With --start (and --from), duplexctl starts that duplexd itself: the arguments after `--` are
the server's own (its --config, or --port, --data, --node-id, --peer, --cluster-secret-file,
...), --rebuild-from PEER is added, the process runs detached (it outlives duplexctl) and its
output goes to --log. A server already answering at the address is not started over.
Without --start, duplexctl follows a rebuild started by hand or by a service manager.

Shown while it runs: the copy (bytes received), the catch-up (write hold attempts). Printed
at the end: the epoch, what was copied and how long each part took, the write hold (the
pause the peer's clients saw, writes held, p50 and max of their waits) and what of the lost
server's own updates is gone, if anything.

Exit codes: 0 the server runs again and nothing the peers knew of is lost; 1 it runs again
but reports updates of the lost server gone (at most rebuild_updates_gone_at_most); 2 bad
arguments, or the server was not rebuilt at its start; 3 the server stopped, failed, stopped
answering, or did not run within --wait seconds (the rebuild may still go on: follow it
again).";

/// What `duplexctl compare --help` adds: how the narrowing works and what it costs.
pub const COMPARE_HELP: &str = "\
Compares the stamped digests of two servers (DUPLEX.DIGEST: every key's value and version,
deletion records included). Equal: says so, exit 0. Different: narrows down to the
differing keys without copying the data set: the key space is split into 16 ranges by the
next half-byte of the key, recursively, following only ranges whose digests differ, until a
range holds at most 64 keys on both servers; those keys are listed with SCAN MATCH, read
with MGET on both sides, and each key is printed as one of
  missing on A / missing on B / value differs / version differs (same value, other stamp)
(or `deletions differ in [range]` when only deletion records differ there); exit 1.

Cost: about 2 x 15 digest calls per level of each differing range, two levels per key
byte: for d differing keys among n, on the order of 30 x d x 2 x log256(n) calls per
server (a few hundred for one key among millions), plus one SCAN walk over each server's
keys per differing range of at most 64 keys. Compare servers at rest: writes in flight show
up as differences, or stop the comparison (exit 3) when a range's digest and its parts' no
longer add up; run it again to confirm.

Exit codes: 0 identical; 1 different; 2 bad arguments; 3 a server could not be asked.";

/// What `duplexctl conflicts --help` adds.
pub const CONFLICTS_HELP: &str = "\
The conflict journal (DUPLEX.CONFLICTS): for each key written on two servers concurrently,
the version that won and the one that lost, each as time (+ logical counter) and the node
that wrote it, the loser's value (or its length and xxh3 digest when too long to keep, or
`a delete`), and when the server recorded it. Newest first; --count sets how many.

Exit codes: 0 shown; 2 bad arguments; 3 the server could not be asked.";

/// What `duplexctl backup --help` adds.
pub const BACKUP_HELP: &str = "\
Asks the server to take a backup now (DUPLEX.BACKUP), into its backup directory, under NAME
if given; waits for it and prints the server's summary (directory, checkpoint and end LSN,
bytes copied, the base's length, seconds). The server keeps serving throughout.
--incremental copies only what the store gained since the newest complete backup of the
server's lineage; --base NAME builds on the named backup instead. Restore a chain with
duplex-recover restore --backup FULL --backup INC ... (oldest first).

Exit codes: 0 backup taken; 2 bad arguments; 3 the server could not be asked or the backup
failed (the message says why).";

/// `duplexctl demo --help`, after the options.
pub const DEMO_HELP: &str = "\
Runs the film-line showcase on loopback and needs nothing but the built binaries
(cargo build --release): process control (node 1) serves the slitter, the winder, the
boxer and the packer; production control (node 2) the two planning desks; each client has
the other server as its backup. After --before seconds production control's data
directory is destroyed (SIGKILL, directory deleted); its clients fail over; it is rebuilt
from process control (duplexd --rebuild-from) while everyone keeps writing; the clients
fail back; both databases are compared. Prints a timeline and a summary; removes its
directory unless --keep.

Exit codes: 0 identical and nothing lost beyond what the method allows (writes production
control acknowledged in its last second, not yet replicated); 1 otherwise; 3 the demo
could not run (a binary missing, a server that would not start).";
