//! `duplexctl rebuild`: starts the rebuild of a lost server from a healthy peer (optional)
//! and follows it to its end, over RESP only.
//!
//! The rebuild itself is `duplexd`'s (`--rebuild-from PEER`, docs/OPERATIONS.md): the lost
//! server copies the peer's backup over the peer link, restores and rolls it forward,
//! catches up live and ends with the peer's short write hold. This module
//! - [`start`]s that `duplexd` when asked (the operator's own arguments plus
//!   `--rebuild-from PEER`, detached, its output to a log file), refusing when a server
//!   already answers at the address in any state but `recovering`;
//! - [`follow`]s the server's `INFO` (the answering responder while it copies, then the
//!   server itself while it catches up) through the stages of [`Stage`] until it runs, and
//!   returns the `rebuild_*` fields the server reports ([`Outcome`]).
//!
//! A `duplexd` started here that exits before running ends the follow with its exit status
//! and the end of its log; a server that stops answering for longer than
//! [`UNREACHABLE_FOR`], or is still not running at the deadline, is an operational error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::exit::{Code, ToolError};
use crate::resp::{info_fields, text, Conn, ConnectOptions};

/// How long a server being followed may stay unreachable (a start, the hand-over from the
/// copy's responder to the server) before the follow fails.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(15);

/// What to start: `duplexd` with the operator's arguments and `--rebuild-from from`.
#[derive(Debug, Clone)]
pub struct StartSpec {
    /// The `duplexd` binary.
    pub duplexd: PathBuf,
    /// The healthy peer, `HOST:PORT` (its RESP port, where its peer link listens too).
    pub from: String,
    /// The server's own arguments (`--config FILE` or flags: port, data, node id, peers,
    /// cluster secret file), as for any start.
    pub args: Vec<String>,
    /// Where its standard output and error go.
    pub log: PathBuf,
}

/// Where a followed rebuild is.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Nothing answers yet (the server is starting).
    Waiting,
    /// The copy: the responder's phase (`connecting`, `copying`, `restoring`,
    /// `installing`) and the bytes received so far.
    Copying {
        /// The phase.
        phase: String,
        /// Bytes of the peer's backup received.
        bytes: u64,
    },
    /// Restored and serving reads as `recovering`: catching up with the peer's live
    /// updates until its write hold succeeds.
    CatchingUp {
        /// Write holds asked for so far.
        attempts: u64,
    },
    /// `running` again.
    Running,
}

/// How a followed rebuild ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Seconds the follow took.
    pub secs: f64,
    /// The server's epoch once running.
    pub epoch: String,
    /// Every `rebuild_*` field of its INFO once running.
    pub fields: BTreeMap<String, String>,
}

impl Outcome {
    /// How many of the lost server's acknowledged updates the rebuild reports gone (`None`
    /// when it cannot tell).
    pub fn updates_gone(&self) -> Option<u64> {
        self.fields
            .get("rebuild_updates_gone_at_most")
            .and_then(|v| v.parse().ok())
    }

    /// The exit code: 1 when updates are reported gone, else 0.
    pub fn code(&self) -> Code {
        match self.updates_gone() {
            Some(n) if n > 0 => Code::Damaged,
            _ => Code::Ok,
        }
    }

    /// The summary, one line each.
    pub fn summary(&self) -> Vec<String> {
        let f = |k: &str| self.fields.get(k).map_or("-", String::as_str);
        let mut out = vec![format!(
            "running on epoch {} after {:.1} s",
            self.epoch, self.secs
        )];
        if self.fields.contains_key("rebuild_bytes") {
            out.push(format!(
                "copied      {} files, {} bytes from node {} in {} s; restored and rolled forward in {} s",
                f("rebuild_files"),
                f("rebuild_bytes"),
                f("rebuild_source_node"),
                f("rebuild_copy_secs"),
                f("rebuild_restore_secs")
            ));
        } else {
            out.push(
                "copied      (an unfinished rebuild was resumed: no copy at this start)".into(),
            );
        }
        out.push(format!(
            "caught up   in {} s ({} write hold attempt(s)), cut-off position {}",
            f("rebuild_catch_up_secs"),
            f("rebuild_hold_attempts"),
            f("rebuild_cutoff")
        ));
        if self.fields.contains_key("rebuild_hold_peer_pause_ms") {
            out.push(format!(
                "write hold  the peer paused new writes {} ms; {} writes held (p50 {} ms, max {} ms)",
                f("rebuild_hold_peer_pause_ms"),
                f("rebuild_hold_writes_held"),
                f("rebuild_hold_held_p50_ms"),
                f("rebuild_hold_held_max_ms")
            ));
        } else {
            out.push(format!(
                "write hold  {} ms as this server measured it (the peer sent no account)",
                f("rebuild_hold_ms")
            ));
        }
        out.push(match self.updates_gone() {
            Some(0) => format!(
                "old updates every update of the lost server that reached a peer is back ({} pulled from peers, {} from its surviving archive)",
                f("rebuild_updates_pulled"),
                f("rebuild_updates_from_archive")
            ),
            Some(n) => format!(
                "old updates AT MOST {n} of the lost server's updates are gone (peer {} holds more of them than were recovered; see rebuild_* in INFO)",
                f("rebuild_highest_peer")
            ),
            None => format!(
                "old updates cannot tell how many of the lost server's updates are gone ({} peer(s) could not be asked)",
                f("rebuild_peers_unreachable")
            ),
        });
        out
    }
}

/// Starts `duplexd` for a rebuild (see the module doc). Refuses when a server answers at
/// `addr` already in a state other than `recovering` (a running server is not rebuilt over).
pub fn start(addr: &str, spec: &StartSpec, opts: &ConnectOptions) -> Result<Child, ToolError> {
    if let Some(fields) = poll(addr, opts) {
        let state = fields.get("state").map_or("unknown", String::as_str);
        return Err(ToolError::operational(format!(
            "a server already answers at {addr} (state {state}): a rebuild starts a new duplexd there; stop that one first, or leave out --start to follow a rebuild already under way"
        )));
    }
    if spec.args.is_empty() {
        return Err(ToolError::usage(
            "--start needs the server's own arguments after `--` (e.g. -- --config /etc/duplex/duplexd.toml)",
        ));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| {
            ToolError::operational(format!("cannot open the log {}: {e}", spec.log.display()))
        })?;
    let err = log.try_clone().map_err(|e| {
        ToolError::operational(format!("cannot open the log {}: {e}", spec.log.display()))
    })?;
    let mut cmd = Command::new(&spec.duplexd);
    cmd.args(&spec.args)
        .arg("--rebuild-from")
        .arg(&spec.from)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    // Its own process group: a Ctrl-C of duplexctl leaves the rebuild running.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().map_err(|e| {
        ToolError::operational(format!(
            "cannot start {}: {e} (pass --duplexd PATH)",
            spec.duplexd.display()
        ))
    })
}

/// INFO's fields from `addr`, or `None` if it does not answer (AUTH is tried when a
/// password is set; the copy's responder refuses it, which is no matter).
fn poll(addr: &str, opts: &ConnectOptions) -> Option<BTreeMap<String, String>> {
    let mut c = Conn::connect(addr, opts).ok()?;
    if opts.password.is_some() {
        let _ = c.auth(opts);
    }
    let info = c.call(&[b"INFO"]).ok()?;
    Some(info_fields(&text(&info)).into_iter().collect())
}

/// The stage INFO's fields show, or an error for a state a rebuild does not pass through.
fn stage_of(addr: &str, f: &BTreeMap<String, String>, seen: bool) -> Result<Stage, ToolError> {
    let get = |k: &str| f.get(k).map(String::as_str);
    match get("state") {
        Some("recovering") => Ok(match get("rebuild_phase") {
            Some(phase) => Stage::Copying {
                phase: phase.to_owned(),
                bytes: get("rebuild_bytes").and_then(|b| b.parse().ok()).unwrap_or(0),
            },
            None => Stage::CatchingUp {
                attempts: get("rebuild_hold_attempts")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0),
            },
        }),
        Some("running") if get("rebuild_status") == Some("done") => Ok(Stage::Running),
        Some("running") if seen => Ok(Stage::Running),
        Some("running") => Err(ToolError::usage(format!(
            "{addr} is running and was not rebuilt at its start: there is no rebuild to follow (start the lost server with --rebuild-from, or use --start)"
        ))),
        Some(s) => Err(ToolError::operational(format!(
            "{addr} is {s}, not rebuilding: see its log; a rebuild that failed part way leaves the peer serving, and starting the lost server again with --rebuild-from resumes or restarts it"
        ))),
        None => Err(ToolError::operational(format!(
            "{addr} answered INFO without a state: is it a duplexd?"
        ))),
    }
}

/// Follows the rebuild at `addr` until it runs (see the module doc), calling `on` at each
/// poll. `child` is the `duplexd` [`start`] started, if any; `log` its log file.
pub fn follow(
    addr: &str,
    opts: &ConnectOptions,
    mut child: Option<(&mut Child, &Path)>,
    deadline: Duration,
    on: &mut dyn FnMut(&Stage),
) -> Result<Outcome, ToolError> {
    let t0 = Instant::now();
    let mut last_answer = Instant::now();
    let mut seen = false;
    loop {
        if let Some((c, log)) = child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(ToolError::operational(format!(
                    "duplexd exited ({status}) before the rebuild ended; the end of its log {}:\n{}",
                    log.display(),
                    log_tail(log, 15)
                )));
            }
        }
        match poll(addr, opts) {
            Some(f) => {
                last_answer = Instant::now();
                let stage = stage_of(addr, &f, seen)?;
                seen = true;
                on(&stage);
                if stage == Stage::Running {
                    return Ok(Outcome {
                        secs: t0.elapsed().as_secs_f64(),
                        epoch: f.get("epoch").cloned().unwrap_or_default(),
                        fields: f
                            .into_iter()
                            .filter(|(k, _)| k.starts_with("rebuild_"))
                            .collect(),
                    });
                }
            }
            None => {
                on(&Stage::Waiting);
                if last_answer.elapsed() > UNREACHABLE_FOR {
                    return Err(ToolError::operational(format!(
                        "{addr} has not answered for {} s{}",
                        UNREACHABLE_FOR.as_secs(),
                        if seen {
                            ": the rebuilding server stopped? see its log"
                        } else {
                            " (is the lost server started with --rebuild-from, and is the address right?)"
                        }
                    )));
                }
            }
        }
        if t0.elapsed() > deadline {
            return Err(ToolError::operational(format!(
                "{addr} is still rebuilding after {} s (--wait): it goes on; follow it again with duplexctl rebuild {addr}",
                deadline.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last `n` lines of a file (or why it cannot be read).
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stages_follow_the_info_fields() {
        let a = "h:1";
        let copying = fields(&[
            ("state", "recovering"),
            ("rebuild_phase", "copying"),
            ("rebuild_bytes", "4096"),
        ]);
        assert_eq!(
            stage_of(a, &copying, false).unwrap(),
            Stage::Copying {
                phase: "copying".into(),
                bytes: 4096
            }
        );
        let catching = fields(&[
            ("state", "recovering"),
            ("rebuild_status", "catching-up"),
            ("rebuild_hold_attempts", "3"),
        ]);
        assert_eq!(
            stage_of(a, &catching, true).unwrap(),
            Stage::CatchingUp { attempts: 3 }
        );
        let done = fields(&[("state", "running"), ("rebuild_status", "done")]);
        assert_eq!(stage_of(a, &done, false).unwrap(), Stage::Running);
        let plain = fields(&[("state", "running")]);
        assert_eq!(stage_of(a, &plain, false).unwrap_err().code, Code::Usage);
        assert_eq!(stage_of(a, &plain, true).unwrap(), Stage::Running);
        let fenced = fields(&[("state", "fenced")]);
        let e = stage_of(a, &fenced, true).unwrap_err();
        assert!(e.message.contains("fenced") && e.code == Code::Operational);
    }

    #[test]
    fn updates_reported_gone_make_exit_code_1() {
        let mut o = Outcome {
            secs: 1.0,
            epoch: "3".into(),
            fields: fields(&[("rebuild_updates_gone_at_most", "0")]),
        };
        assert_eq!(o.code(), Code::Ok);
        o.fields
            .insert("rebuild_updates_gone_at_most".into(), "12".into());
        assert_eq!(o.code(), Code::Damaged);
        assert!(o.summary().iter().any(|l| l.contains("AT MOST 12")));
        o.fields
            .insert("rebuild_updates_gone_at_most".into(), "unknown".into());
        assert_eq!(o.code(), Code::Ok);
    }
}
