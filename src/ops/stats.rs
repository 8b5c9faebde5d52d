//! `repo stats`: snapshot totals from the snapshot files, storage totals from the local index
//! cache (no pack is read).

use crate::repo::{Repository, Result, SnapshotFilter, list_snapshots};

/// Repository totals for `repo stats` (JSON output).
#[derive(Debug, serde::Serialize)]
pub struct StatsReport {
    /// Where the repository is (credentials redacted).
    pub location: String,
    /// `aes-256-gcm` or `none`.
    pub encryption: &'static str,
    /// Readable snapshot files.
    pub snapshots: u64,
    /// Sum of the sizes of all snapshots (what restoring every one would produce).
    pub total_size: u64,
    /// Unique chunk content before compression.
    pub unique_bytes: u64,
    /// Distinct blob ids in the index: data chunks and content lists.
    pub blobs: u64,
    /// Pack files listed by the index files the cache took in.
    pub packs: u64,
    /// Bytes of pack files: what the data costs on disk.
    pub pack_bytes: u64,
    /// Index files the cache took in.
    pub index_files: u64,
    /// total_size / pack_bytes.
    pub ratio: f64,
}

/// Counts snapshots and reads the totals of the local index cache; no pack is read.
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
