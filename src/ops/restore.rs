//! `repo restore` of a stream snapshot: writes the stream to any `Write` and checks that the
//! bytes restored add up to the snapshot's size.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use super::SnapshotInfo;
use crate::repo::{
    Progress, Repository, RestoreStats, Result, SnapshotFilter, resolve_snapshot, restore_stream,
};

/// What a stream restore wrote (JSON output): the snapshot, its totals and the time taken.
#[derive(Debug, serde::Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: SnapshotInfo,
    /// Bytes and chunks written (flattened into the report).
    #[serde(flatten)]
    pub stats: RestoreStats,
    /// Wall-clock duration of the restore, seconds.
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
