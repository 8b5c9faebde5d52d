//! `repo repair index` and `repo repair snapshots`.

use std::collections::HashSet;
use std::sync::Arc;

use futures::stream::{self, StreamExt};

use super::check::{self, CheckOptions};
use crate::format::Id;
use crate::repo::{
    IndexBatch, RepoError, Repository, Result, load_index_file, paths, read_pack_footer,
};

/// What `repo repair index` did (JSON output).
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairIndexReport {
    /// Packs whose footer was read and indexed (packs condemned by a prune are left out).
    pub packs_read: u64,
    /// Blobs listed by those footers.
    pub blobs: u64,
    /// New index files written (64 packs each).
    pub index_files_written: u64,
    /// Index files that existed at the start, removed once the new ones were stored.
    pub index_files_removed: u64,
    /// Index files that existed at the start and were kept: each names a pack that is
    /// present but not in the new index (condemned as this repair opened, and since
    /// resurrected by a sweep, or with an unreadable footer).
    pub index_files_kept: u64,
    /// Packs whose footer could not be read: their data is not indexed.
    pub unreadable_packs: Vec<String>,
}

/// Rebuilds the index from the packs' own footers. New index files are written first; only
/// then are the old ones removed, so a crash in between leaves a complete (duplicated) index.
pub async fn repair_index(repo: Arc<Repository>) -> Result<RepairIndexReport> {
    let mut r = RepairIndexReport::default();
    let old: Vec<Id> = repo
        .backend()
        .list(paths::INDEX_DIR)
        .await?
        .iter()
        .filter_map(|o| paths::id_of(&o.path))
        .collect();
    // packs a prune has condemned are left out: a sweep may delete them at any moment (an
    // index naming them would then point at nothing); what a snapshot needs of them, the
    // sweep indexes again itself
    let condemned = repo.condemned();
    let packs: Vec<(Id, u64)> = repo
        .backend()
        .list(paths::DATA_DIR)
        .await?
        .iter()
        .filter_map(|o| paths::id_of(&o.path).map(|id| (id, o.size)))
        .collect();
    let present: HashSet<Id> = packs.iter().map(|p| p.0).collect();
    let mut covered: HashSet<Id> = HashSet::new();
    let mut read = stream::iter(packs.into_iter().filter(|(id, _)| !condemned.packs.contains(id)))
        .map(|(id, size)| {
            let repo = repo.clone();
            async move { (id, read_pack_footer(&repo, &id, size).await) }
        })
        .buffer_unordered(8);
    let mut batch = IndexBatch::default();
    while let Some((id, res)) = read.next().await {
        match res {
            Ok(p) => {
                covered.insert(id);
                r.packs_read += 1;
                r.blobs += p.blobs.len() as u64;
                batch.push(&repo, p).await?;
            }
            Err(e) => r.unreadable_packs.push(format!("{}: {e}", paths::pack(&id))),
        }
    }
    batch.flush(&repo).await?;
    r.index_files_written = batch.files_written;
    // an old index file is removed only if every pack it names that is still present is in
    // the new index: a sweep running meanwhile may have written one for a pack it resurrected
    // (condemned when this repair opened, so left out above), and removing that file would
    // leave a pack a snapshot needs in no index file
    for id in old {
        let keep = match load_index_file(&repo, &id).await {
            Ok(f) => {
                f.packs.iter().any(|p| present.contains(&p.pack) && !covered.contains(&p.pack))
            }
            Err(RepoError::Backend(e)) if e.is_not_found() => continue,
            // the storage failed to deliver it: that is not damage, and it may be a file
            // written for a resurrected pack; stop rather than delete it unread
            Err(e @ RepoError::Backend(_)) => return Err(e),
            Err(_) => false, // a damaged index file is what a repair replaces
        };
        if keep {
            r.index_files_kept += 1;
        } else {
            repo.backend().delete(&paths::index(&id)).await?;
            r.index_files_removed += 1;
        }
    }
    repo.index().clear()?;
    repo.index().sync(&repo).await?;
    Ok(r)
}

/// What `repo repair snapshots` found and removed (JSON output).
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots that cannot be restored completely (full ids).
    pub broken: Vec<String>,
    /// Full ids of the snapshots removed (only with `--forget-broken`).
    pub removed: Vec<String>,
}

/// Lists snapshots that cannot be restored; removes them only with `forget_broken`, and never
/// while the index may be incomplete (then a snapshot may only look broken).
pub async fn repair_snapshots(
    repo: Arc<Repository>,
    forget_broken: bool,
) -> Result<RepairSnapshotsReport> {
    let c = check::run(repo.clone(), &CheckOptions::default()).await?;
    let mut r = RepairSnapshotsReport { broken: c.broken_snapshots.clone(), removed: vec![] };
    if forget_broken && !r.broken.is_empty() {
        if c.index_incomplete {
            return Err(RepoError::IndexIncomplete {
                broken: r.broken.len(),
                orphan_packs: c.orphan_packs,
            });
        }
        for s in &r.broken {
            let id = Id::from_hex(s).map_err(|e| RepoError::format("snapshot id", e))?;
            repo.backend().delete(&paths::snapshot(&id)).await?;
            r.removed.push(s.clone());
        }
    }
    Ok(r)
}
