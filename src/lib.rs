//! `repo`: a content-addressed, deduplicating, encrypted backup repository.
//!
//! Layers, each depending only on those above it in this list:
//! 1. [`format`]: the bytes of every on-disk structure; encode/decode, no I/O.
//! 2. [`codec`] (chunking, chunk ids, compression, encryption) and [`backend`] (the async
//!    storage trait and its local, in-memory and fault-injecting implementations).
//! 3. [`repo`]: the repository engine: keys, packer, index and its local cache, snapshots.
//! 4. [`ops`]: one module per command, each returning a report; they never print.
//! 5. The `repo` binary's `cli` module: arguments, rendering, exit codes.
//!
//! [`fsutil`] holds the local-file durability helpers every layer uses.

#![warn(missing_docs)]

pub mod backend;
pub mod codec;
pub mod format;
pub mod fsutil;
pub mod ops;
pub mod repo;
