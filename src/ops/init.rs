use std::sync::Arc;

use crate::backend::Backend;
use crate::repo::{self, InitOptions, Result};

#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub location: String,
    pub repository_id: String,
    pub encryption: &'static str,
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    pub pack_target: u32,
}

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
