//! The scrub: after open, one pass over the current store file that checks every block's
//! checksum at a bounded rate (`Config::scrub_bytes_per_sec`), so damage in blocks no read
//! touches is found and reported with file and offset ([`ScrubStatus`]) instead of waiting
//! for a read to hit it.
//!
//! It runs in the background thread's wake-ups, or as part of each
//! [`Database::run_maintenance`](crate::Database::run_maintenance) step when the thread is
//! off. A compaction in the middle of a pass restarts the pass on the new generation. The
//! first damage found stops the pass: the report stays until the process restarts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::format::{block_size, decode_block, FILE_HEADER_LEN};
use crate::tree::TreeView;

/// Where the scrub is, for INFO and monitoring ([`Database::scrub_status`]).
///
/// [`Database::scrub_status`]: crate::Database::scrub_status
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubStatus {
    /// False while the scrub is off (`Config::scrub_bytes_per_sec` 0).
    pub enabled: bool,
    /// True once every block of the store was checked (or damage stopped the pass).
    pub done: bool,
    /// Bytes of store blocks checked so far.
    pub bytes_checked: u64,
    /// Committed bytes of the store file being checked.
    pub total_bytes: u64,
    /// The first damaged block found, if any.
    pub damage: Option<ScrubDamage>,
}

/// A block whose checksum or framing is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubDamage {
    /// The store file.
    pub file: PathBuf,
    /// Offset of the damaged block.
    pub offset: u64,
    /// What is wrong with it.
    pub problem: String,
}

/// The scrub's progress, shared by the maintenance steps.
#[derive(Debug)]
pub(crate) struct Scrubber {
    rate: u64,
    state: Mutex<ScrubState>,
}

#[derive(Debug)]
struct ScrubState {
    generation: u64,
    offset: u64,
    last_step: Option<Instant>,
    status: ScrubStatus,
}

/// Shortest time between two background steps, and the time one stepped
/// `run_maintenance` counts for.
const STEP: Duration = Duration::from_millis(200);

impl Scrubber {
    /// A scrub checking `rate` bytes a second (0: off).
    pub(crate) fn new(rate: u64) -> Self {
        Scrubber {
            rate,
            state: Mutex::new(ScrubState {
                generation: 0,
                offset: 0,
                last_step: None,
                status: ScrubStatus {
                    enabled: rate > 0,
                    ..ScrubStatus::default()
                },
            }),
        }
    }

    /// The progress so far.
    pub(crate) fn status(&self) -> ScrubStatus {
        self.state.lock().status.clone()
    }

    /// A background wake-up: checks the bytes the rate allows for the time since the last
    /// step (at most a second's worth), if at least [`STEP`] passed.
    pub(crate) fn tick(&self, view: &TreeView) {
        let now = Instant::now();
        let elapsed = {
            let mut st = self.state.lock();
            let elapsed = st.last_step.map_or(STEP, |t| now.duration_since(t));
            if elapsed < STEP {
                return;
            }
            st.last_step = Some(now);
            elapsed.min(Duration::from_secs(1))
        };
        self.step(view, elapsed);
    }

    /// Checks the bytes the rate allows in `period`, from where the pass stands.
    pub(crate) fn step(&self, view: &TreeView, period: Duration) {
        let budget = (self.rate as u128 * period.as_millis() / 1000) as u64;
        let mut st = self.state.lock();
        if self.rate == 0 || st.status.done {
            return;
        }
        if st.generation != view.file.generation || st.offset == 0 {
            st.generation = view.file.generation;
            st.offset = FILE_HEADER_LEN as u64;
        }
        st.status.total_bytes = view.committed;
        // A failed mapping (descriptors or memory short) is tried again at the next step.
        let Ok(map) = view.file.file.map(view.committed) else {
            return;
        };
        let bytes = map.bytes();
        let stop = st.offset.saturating_add(budget.max(1));
        while st.offset < view.committed && st.offset < stop {
            let at = usize::try_from(st.offset).unwrap_or(usize::MAX);
            let end = usize::try_from(view.committed).unwrap_or(usize::MAX);
            match bytes.get(at..end).map(decode_block) {
                Some(Ok((_, body))) => {
                    let n = block_size(body.len()) as u64;
                    st.offset += n;
                    st.status.bytes_checked += n;
                }
                Some(Err(kind)) => {
                    st.status.damage = Some(ScrubDamage {
                        file: view.file.path.clone(),
                        offset: st.offset,
                        problem: kind.to_string(),
                    });
                    st.status.done = true;
                    return;
                }
                None => {
                    st.status.damage = Some(ScrubDamage {
                        file: view.file.path.clone(),
                        offset: st.offset,
                        problem: "the file is shorter than its committed length".into(),
                    });
                    st.status.done = true;
                    return;
                }
            }
        }
        if st.offset >= view.committed {
            st.status.done = true;
        }
    }
}

/// The period one stepped maintenance call counts for.
pub(crate) const STEP_PERIOD: Duration = STEP;
