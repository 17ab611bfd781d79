//! The on-disk tree: an append-only, copy-on-write B+tree in a store file.
//!
//! - [`read`]: [`TreeView`] and [`TreeCursor`] work on a read-only map of the committed
//!   bytes; every block is checked against its CRC when the open file first meets it (then
//!   its lengths and header on every read), and every descent is bounded
//!   (a child's offset is always below its parent's, and the depth below [`MAX_DEPTH`]).
//! - [`write`](mod@write): [`TreeWriter`] appends new blocks after the committed length. A checkpoint
//!   merges sorted updates into the tree by rewriting only the leaves and branches they
//!   touch (children before parents, so a child's offset is always below its parent's);
//!   compaction writes a whole new tree into a new file. Full buffers are written by a
//!   second thread ([`writeback`]).
//! - [`prefetch`](mod@prefetch): the one CPU hint the merge uses (the engine's only `unsafe`).

mod prefetch;
mod read;
mod write;
mod writeback;

pub(crate) use prefetch::prefetch;
pub(crate) use read::{view_at, TreeCursor, TreeView};
pub(crate) use write::TreeWriter;

use crate::hlc::Stamp;

/// Target size of a leaf or branch body.
pub const NODE_TARGET: usize = 4096;
/// Values longer than this go to their own value block.
pub const INLINE_MAX: usize = 1024;
/// Deepest tree accepted when reading (a guard against damaged child pointers).
const MAX_DEPTH: usize = 48;

/// A version as read from the tree: its stamp and its value (`None` for a tombstone).
pub type TreeVersion = (Stamp, Option<Vec<u8>>);

/// One update for a checkpoint merge: key, stamp, value (`None` = tombstone).
pub type Update<'a> = (&'a [u8], Stamp, Option<&'a [u8]>);
