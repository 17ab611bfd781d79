//! Backups and the WAL archive on S3-compatible object storage (AWS S3, MinIO, Ceph, R2,
//! moto, ...), through the `object_store` crate.
//!
//! A location given as `s3://bucket/prefix` instead of a directory ([`Location`]) is served
//! by a [`Store`]: a blocking client with its own small runtime, configured from the usual
//! `AWS_*` environment variables (or [`S3Settings`] from the server's config file), never
//! from the command line. Credentials never appear in a [`Store`]'s `Debug`, in its
//! [`Store::url`] or in an [`Error`].
//!
//! - [`backup`]: a backup directory uploaded file by file in parallel parts, with a
//!   `CHECKSUMS` object (CRC32C of every 8 MiB chunk) and the `BACKUP` manifest written
//!   last as the commit mark; downloaded with parallel ranged reads, every chunk checked.
//! - [`archive`]: the WAL archive mirrored as fragments (the newly archived bytes of each
//!   segment, CRC32C and offset in the object name) and a seal per closed segment; a
//!   lineage downloaded back into the on-disk archive layout, every fragment checked.
//!
//! The object layout is documented byte for byte in docs/FORMAT.md, section 32.

pub mod archive;
pub mod backup;
mod error;
mod location;
pub mod mirror;
mod store;
pub mod sums;

pub use error::{Error, Result};
pub use location::{is_s3, Location, S3Settings};
pub use store::{Store, PART_SIZE};
