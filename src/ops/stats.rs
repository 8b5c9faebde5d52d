use crate::repo::{Repository, Result, SnapshotFilter, list_snapshots};

#[derive(Debug, serde::Serialize)]
pub struct StatsReport {
    pub location: String,
    pub encryption: &'static str,
    pub snapshots: u64,
    /// Sum of the sizes of all snapshots (what restoring every one would produce).
    pub total_size: u64,
    /// Unique chunk content before compression.
    pub unique_bytes: u64,
    pub blobs: u64,
    pub packs: u64,
    /// Bytes of pack files: what the data costs on disk.
    pub pack_bytes: u64,
    pub index_files: u64,
    /// total_size / pack_bytes.
    pub ratio: f64,
}

pub async fn run(repo: &Repository) -> Result<StatsReport> {
    let snaps = list_snapshots(repo, &SnapshotFilter::default()).await?;
    let (blobs, packs, pack_bytes, index_files) = repo.index().counts()?;
    let total_size: u64 = snaps.iter().map(|(_, s)| s.size).sum();
    Ok(StatsReport {
        location: repo.location(),
        encryption: match repo.cipher() {
            crate::format::envelope::CipherKind::None => "none",
            crate::format::envelope::CipherKind::Aes256Gcm => "aes-256-gcm",
        },
        snapshots: snaps.len() as u64,
        total_size,
        unique_bytes: repo.index().raw_bytes()?,
        blobs,
        packs,
        pack_bytes,
        index_files,
        ratio: if pack_bytes > 0 { total_size as f64 / pack_bytes as f64 } else { 0.0 },
    })
}
