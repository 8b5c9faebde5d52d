//! `repo init`: creates a repository (key file first, `config` last) and reports its
//! parameters.

use std::sync::Arc;

use crate::backend::Backend;
use crate::repo::{self, InitOptions, Result};

/// What `repo init` created (JSON output).
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    /// Where the repository is (credentials redacted).
    pub location: String,
    /// Random id of the repository (64 hex digits); it names the local cache directory.
    pub repository_id: String,
    /// `aes-256-gcm` or `none`.
    pub encryption: &'static str,
    /// Smallest chunk in bytes.
    pub chunk_min: u32,
    /// Average chunk in bytes.
    pub chunk_avg: u32,
    /// Largest chunk in bytes.
    pub chunk_max: u32,
    /// Pack size in bytes at which packs are closed.
    pub pack_target: u32,
}

/// Creates the repository (see [`repo::init`]); fails if one exists or an encrypted repository is
/// asked for without a password.
pub async fn run(
    backend: &Arc<dyn Backend>,
    password: Option<&[u8]>,
    opts: &InitOptions,
) -> Result<InitReport> {
    let c = repo::init(backend, password, opts).await?;
    Ok(InitReport {
        location: backend.location(),
        repository_id: hex::encode(c.repo_id),
        encryption: if opts.encrypted { "aes-256-gcm" } else { "none" },
        chunk_min: c.chunk_min,
        chunk_avg: c.chunk_avg,
        chunk_max: c.chunk_max,
        pack_target: c.pack_target,
    })
}
