//! The exit codes of the tools, and [`ToolError`]: an error message for the operator with
//! the exit code it maps to.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | all is well |
//! | 1 | corruption or a verification failure was found (damaged file, gap, wrong archive); `duplexctl compare`: the databases differ |
//! | 2 | usage error: bad arguments, or a path that is not what the command needs |
//! | 3 | I/O or another operational error (disk, permissions, target not empty, locked); `duplexctl`: a server could not be reached, refused AUTH or answered an error |

use std::fmt;

use duplex_engine::verify::Problem;

/// An exit code of the tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Code {
    /// 0: all is well.
    Ok = 0,
    /// 1: corruption or a verification failure was found (`duplexctl compare`: the
    /// databases differ).
    Damaged = 1,
    /// 2: bad arguments.
    Usage = 2,
    /// 3: I/O or another operational error.
    Operational = 3,
}

impl Code {
    /// The process exit status.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code to exit with when several outcomes were seen: damage wins over everything
    /// (it is what the operator must hear about), then operational errors, then usage.
    pub fn worst(self, other: Code) -> Code {
        fn rank(c: Code) -> u8 {
            match c {
                Code::Ok => 0,
                Code::Usage => 1,
                Code::Operational => 2,
                Code::Damaged => 3,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// An error of the tools: what to tell the operator and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// The exit code.
    pub code: Code,
    /// The message (it says what is wrong and what to do).
    pub message: String,
}

impl ToolError {
    /// An error with the given code.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ToolError {
            code,
            message: message.into(),
        }
    }

    /// Damage or a failed verification (exit 1).
    pub fn damaged(message: impl Into<String>) -> Self {
        Self::new(Code::Damaged, message)
    }

    /// Bad arguments (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Code::Usage, message)
    }

    /// An operational error (exit 3).
    pub fn operational(message: impl Into<String>) -> Self {
        Self::new(Code::Operational, message)
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<duplex_engine::Error> for ToolError {
    fn from(e: duplex_engine::Error) -> Self {
        ToolError::new(engine_code(&e), e.to_string())
    }
}

impl From<duplex_wal::Error> for ToolError {
    fn from(e: duplex_wal::Error) -> Self {
        ToolError::new(wal_code(&e), e.to_string())
    }
}

/// The exit code for an engine error: damage (including everything the WAL counts as
/// damage) is 1, the rest 3.
pub fn engine_code(e: &duplex_engine::Error) -> Code {
    match e {
        duplex_engine::Error::Wal(w) => wal_code(w),
        e if e.is_corruption() => Code::Damaged,
        _ => Code::Operational,
    }
}

/// The exit code for a WAL error. Damage and gaps are 1; so are a segment of another node
/// and a log that does not reach back to the LSN needed (in a restore both mean the
/// archive does not fit the backup). I/O and the rest are 3.
pub fn wal_code(e: &duplex_wal::Error) -> Code {
    match e {
        e if e.is_corruption() => Code::Damaged,
        duplex_wal::Error::NodeMismatch { .. } | duplex_wal::Error::LsnUnavailable { .. } => {
            Code::Damaged
        }
        _ => Code::Operational,
    }
}

/// The exit code for an engine error met while *verifying*: there, a file the manifest lists
/// that is missing or shorter than it must be is a failed verification (1), not an
/// operational error.
pub fn verify_code(e: &duplex_engine::Error) -> Code {
    let io = match e {
        duplex_engine::Error::Io { source, .. } => Some(source),
        duplex_engine::Error::Wal(duplex_wal::Error::Io { source, .. }) => Some(source),
        _ => None,
    };
    match io.map(|s| s.kind()) {
        Some(std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof) => Code::Damaged,
        _ => engine_code(e),
    }
}

/// The exit code for a problem the engine's verification found: an engine or WAL error as
/// [`verify_code`] and [`wal_code`] say; a store file that cannot be opened for another
/// reason than its absence is operational (3); every other finding is damage (1).
pub fn problem_code(p: &Problem) -> Code {
    match p {
        Problem::Engine(e) => verify_code(e),
        Problem::Wal(e) => wal_code(e),
        Problem::StoreOpen { source, .. } if source.kind() != std::io::ErrorKind::NotFound => {
            Code::Operational
        }
        _ => Code::Damaged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_the_worst_outcome() {
        assert_eq!(Code::Ok.worst(Code::Usage), Code::Usage);
        assert_eq!(Code::Damaged.worst(Code::Operational), Code::Damaged);
        assert_eq!(Code::Operational.worst(Code::Damaged), Code::Damaged);
        assert_eq!(Code::Operational.worst(Code::Ok), Code::Operational);
    }

    #[test]
    fn wal_errors_map_to_codes() {
        let gap = duplex_wal::Error::Gap {
            after_lsn: 1,
            next_first_lsn: 5,
            next_file: "x".into(),
        };
        assert_eq!(wal_code(&gap), Code::Damaged);
        let io = duplex_wal::Error::Io {
            op: "read",
            path: "x".into(),
            source: std::io::Error::other("boom"),
        };
        assert_eq!(wal_code(&io), Code::Operational);
        let missing = duplex_engine::Error::Io {
            op: "open backup file",
            path: "x".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(engine_code(&missing), Code::Operational);
        assert_eq!(verify_code(&missing), Code::Damaged);
    }
}
