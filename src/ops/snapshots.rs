//! `repo snapshots`: lists the snapshots a filter selects.

use super::SnapshotInfo;
use crate::repo::{Repository, Result, SnapshotFilter, select_snapshots};

/// Matching snapshots, oldest first; with `latest`, only the newest `latest` of each name.
pub async fn run(
    repo: &Repository,
    filter: &SnapshotFilter,
    latest: Option<usize>,
) -> Result<Vec<SnapshotInfo>> {
    Ok(select_snapshots(repo, filter, latest, false)
        .await?
        .iter()
        .map(|(id, s)| SnapshotInfo::new(id, s))
        .collect())
}
