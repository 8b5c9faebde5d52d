use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use super::SnapshotInfo;
use crate::repo::{
    Progress, Repository, RestoreStats, Result, SnapshotFilter, resolve_snapshot, restore_stream,
};

#[derive(Debug, serde::Serialize)]
pub struct RestoreReport {
    pub snapshot: SnapshotInfo,
    #[serde(flatten)]
    pub stats: RestoreStats,
    pub seconds: f64,
}

/// Writes the stream of the selected snapshot to `out`.
pub async fn run<W: Write + Send + 'static>(
    repo: Arc<Repository>,
    selector: &str,
    filter: &SnapshotFilter,
    out: W,
    progress: Arc<dyn Progress>,
) -> Result<RestoreReport> {
    let start = Instant::now();
    let (id, snap) = resolve_snapshot(&repo, selector, filter).await?;
    let label = crate::ops::snapshot_label(&id, &snap);
    let stats = restore_stream(repo, &snap, &label, out, progress).await?;
    Ok(RestoreReport {
        snapshot: SnapshotInfo::new(&id, &snap),
        stats,
        seconds: start.elapsed().as_secs_f64(),
    })
}
