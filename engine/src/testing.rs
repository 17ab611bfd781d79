//! Deliberate faults for proving the tests (issue 13): a simulation that never fails proves
//! nothing until it is shown to catch a broken engine. A test switches one mutation on
//! ([`set_mutation`]) and expects the simulation to fail; production never calls it (the
//! switch is one relaxed atomic load where it matters, and off by default).

use std::sync::atomic::{AtomicU8, Ordering};

/// One way to break the engine on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mutation {
    /// None: the engine as it is.
    Off = 0,
    /// A remote batch received again is applied again instead of skipped.
    ApplyTwice = 1,
    /// The change feed sends batches applied from other origins too (no trigger
    /// suppression).
    EchoRemote = 2,
    /// A checkpoint drops the tombstones it merges (deletes forgotten too early).
    DropTombstones = 3,
    /// A checkpoint forgets the per-origin high-water marks.
    ForgetMarks = 4,
}

static MUTATION: AtomicU8 = AtomicU8::new(0);

/// Switches a mutation on for the whole process (tests only).
#[doc(hidden)]
pub fn set_mutation(m: Mutation) {
    MUTATION.store(m as u8, Ordering::Relaxed);
}

/// Whether `m` is on.
pub(crate) fn mutated(m: Mutation) -> bool {
    MUTATION.load(Ordering::Relaxed) == m as u8
}
