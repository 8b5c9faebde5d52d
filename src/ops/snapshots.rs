use super::SnapshotInfo;
use crate::repo::{list_snapshots, newest_per_name, Repository, Result, SnapshotFilter};

/// Matching snapshots, oldest first; with `latest`, only the newest `latest` of each name.
pub async fn run(repo: &Repository, filter: &SnapshotFilter, latest: Option<usize>) -> Result<Vec<SnapshotInfo>> {
    let all = list_snapshots(repo, filter).await?;
    let keep = match latest {
        None => all,
        Some(k) => newest_per_name(all, k),
    };
    Ok(keep.iter().map(|(id, s)| SnapshotInfo::new(id, s)).collect())
}
