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
use crate::repo::{BackupStats, ChunkSink, Content, Repository, Result, SnapshotMeta, backup_with};

/// Commits a tree snapshot whose files and catalog `body` stores. The repository's backup
/// lease (see [`crate::repo::Access::Backup`]) keeps a prune from deleting what it deduplicates
/// against. `ready` must succeed too before the snapshot is written (for `copy`: the source
/// delivered everything).
pub(crate) async fn commit_tree<F>(
    repo: Arc<Repository>,
    kind: SnapshotKind,
    meta: SnapshotMeta,
    body: F,
    ready: impl Future<Output = Result<()>>,
) -> Result<(Id, Snapshot, BackupStats)>
where
    F: FnOnce(&mut ChunkSink) -> Result<Content> + Send + 'static,
{
    backup_with(repo, kind, meta, body, ready).await
}
