use super::SnapshotInfo;
use crate::repo::{list_snapshots, Repository, Result, SnapshotFilter};

/// Matching snapshots, oldest first; with `latest`, only the newest `latest` of each name.
pub async fn run(repo: &Repository, filter: &SnapshotFilter, latest: Option<usize>) -> Result<Vec<SnapshotInfo>> {
    let all = list_snapshots(repo, filter).await?;
    let keep: Vec<_> = match latest {
        None => all,
        Some(k) => {
            let mut per_name: std::collections::HashMap<String, usize> = Default::default();
            let mut kept: Vec<_> = all
                .into_iter()
                .rev()
                .filter(|(_, s)| {
                    let n = per_name.entry(s.name.clone()).or_default();
                    *n += 1;
                    *n <= k
                })
                .collect();
            kept.reverse();
            kept
        }
    };
    Ok(keep.iter().map(|(id, s)| SnapshotInfo::new(id, s)).collect())
}
