//! File trees: backup of directory trees with their metadata, listing, and restore.

pub mod backup;
pub mod copy;
pub mod fsmeta;
pub mod import_tar;
pub mod restore;
pub mod tar;

use std::sync::Arc;

use crate::format::Id;
use crate::format::snapshot::{Snapshot, SnapshotKind};
use crate::ops::backup::{lease_still_fresh, under_lease};
use crate::repo::lease::condemned_packs;
use crate::repo::{BackupStats, ChunkSink, Content, Repository, Result, SnapshotMeta, backup_with};

/// Commits a tree snapshot whose files and catalog `body` stores, under a backup lease (so
/// a prune cannot delete what it deduplicates against). `ready` must succeed too before the
/// snapshot is written (for `copy`: the source delivered everything).
pub(crate) async fn commit_tree<F>(
    repo: Arc<Repository>,
    meta: SnapshotMeta,
    body: F,
    ready: impl Future<Output = Result<()>>,
) -> Result<(Id, Snapshot, BackupStats)>
where
    F: FnOnce(&mut ChunkSink) -> Result<Content> + Send + 'static,
{
    under_lease(&repo.clone(), async move |lease| {
        let exclude = Arc::new(condemned_packs(&repo).await?);
        let gate = async {
            ready.await?;
            lease_still_fresh(lease).await
        };
        backup_with(repo, SnapshotKind::Tree, meta, exclude, body, gate).await
    })
    .await
}
