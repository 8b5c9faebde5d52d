//! The integration tests: one binary, a module per area, one helpers module ([`common`]).
//!
//! Two tiers:
//! - fast, `cargo test`: the engine through the library, and the `repo` binary with what
//!   every Unix machine has (sh, gzip, tar), as an ordinary user, with no services;
//! - system, `cargo test --features system-tests` (what `scripts/test.sh` runs after
//!   installing the tools): real PostgreSQL, S3 (moto_server) and SFTP (sshd) servers, btrfs
//!   and LVM on loop devices, the deploy manifests' schema validator, Prometheus' own parser
//!   of the metrics files, and tests that need root (file ownership and device nodes in
//!   trees, a full disk, storage read-only to the test's user).
//!
//! A system test whose tool is missing fails; none of them passes by skipping.

mod common;

mod check;
mod classic;
mod cli;
mod crash;
mod crash_deltas;
mod damage;
mod decoders;
mod deltas;
mod fixtures;
mod prune;
mod prune_engine;
mod scale;
mod streams;
mod sync_engine;
mod trust;

#[cfg(feature = "system-tests")]
mod deploy;
#[cfg(feature = "system-tests")]
mod fs_snapshots;
#[cfg(feature = "system-tests")]
mod memory;
#[cfg(feature = "system-tests")]
mod metrics;
#[cfg(feature = "system-tests")]
mod postgres;
#[cfg(feature = "system-tests")]
mod remote;
mod trees; // the tests that need root are in the system tier
