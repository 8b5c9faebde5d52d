//! `repo copy` of a tree snapshot: the source's files are read in catalog order and stored
//! through the destination's own chunker and key, with the same metadata; the destination's
//! catalog is written last and the snapshot committed under a backup lease.

use std::sync::Arc;

use super::Catalog;
use super::restore::{ContentReader, plan, spawn_plan_feed};
use crate::format::Id;
use crate::format::snapshot::{Snapshot, SnapshotKind};
use crate::format::tree::{Content, FLAG_LISTS, Kind};
use crate::repo::{
    BackupStats, ChunkSink, NoProgress, Progress, RepoError, Repository, Result, SnapshotMeta,
};

/// Copies one tree or server snapshot: every regular file is re-chunked with the destination's
/// chunker and stored as content lists, the catalog is written last, and the snapshot commits only
/// once the source was read completely.
pub async fn run(
    src: Arc<Repository>,
    dst: Arc<Repository>,
    id: &Id,
    snap: &Snapshot,
    meta: SnapshotMeta,
    progress: Arc<dyn Progress>,
) -> Result<(Id, Snapshot, BackupStats)> {
    let label = crate::ops::snapshot_label(id, snap);
    let plan = plan(&src, snap, &label, &[], |_| Ok(())).await?;
    let n = plan.entries;
    let mut catalog = Catalog::create(crate::ops::scratch_dir(&dst))?;
    // the source is read concurrently with the body that stores it
    let (fed, mut entries, mut chunks) = spawn_plan_feed(&src, &label, plan);
    let size = snap.size;
    // the streams of a server snapshot are dumps: the stream chunker, as when they were taken
    let kind = snap.kind;
    let body = move |sink: &mut ChunkSink| {
        let params = match kind {
            SnapshotKind::Streams => sink.repo().chunker(),
            _ => sink.repo().chunker().for_tree_files(),
        };
        while let Some(mut e) = entries.next()? {
            if e.kind() == Kind::File {
                let mut data = ContentReader::new(&e, &mut chunks, false, &NoProgress);
                let lists = sink
                    .store_stream(&mut data, params, &*progress)
                    .map_err(|err| data.error.take().unwrap_or(err))?;
                e.flags |= FLAG_LISTS;
                e.content = Content::Lists(lists);
            }
            catalog.add(&e)?;
        }
        let lists = catalog.store(sink)?;
        Ok(crate::repo::Content { lists, size, chunks: n })
    };
    // everything must have come from the source before the copy may commit
    let ready = async { fed.await.map_err(RepoError::from)? };
    super::commit_tree(dst, kind, meta, body, ready).await
}
