//! `repo copy` of a tree snapshot: the source's files are read in catalog order and stored
//! through the destination's own chunker and key, with the same metadata; the destination's
//! catalog is written last and the snapshot committed under a backup lease.

use std::io::Read;
use std::sync::Arc;

use super::restore::{feed, Chunks};
use crate::format::lock::LeaseKind;
use crate::format::snapshot::{Snapshot, SnapshotKind};
use crate::format::tree::{catalog_header, Content, Kind, FLAG_LISTS};
use crate::format::Id;
use crate::repo::lease::{condemned_packs, Lease};
use crate::repo::{backup_with, BackupStats, ChunkSink, NoProgress, OrderedReader, Progress, RepoError, Repository, Result, SnapshotMeta};

/// Exactly `left` bytes of chunks.
struct Take<'a> {
    chunks: &'a mut Chunks,
    pending: Vec<u8>,
    at: usize,
    left: u64,
    error: &'a mut Option<RepoError>,
}

impl Read for Take<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.at == self.pending.len() {
            match self.chunks.next() {
                Ok(c) => (self.pending, self.at) = (c, 0),
                Err(e) => {
                    let msg = e.to_string();
                    *self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at).min(self.left as usize);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}

pub async fn run(src: Arc<Repository>, dst: Arc<Repository>, id: &Id, snap: &Snapshot, meta: SnapshotMeta, progress: Arc<dyn Progress>) -> Result<(Id, Snapshot, BackupStats)> {
    let label = format!("snapshot {} ({})", &id.to_hex()[..8], snap.name);
    let entries = crate::repo::tree::read_entries(&src, snap, &label).await?;
    let contents: Vec<Content> = entries.iter().map(|e| e.content.clone()).collect();
    let lease = Lease::acquire(dst.backend.clone(), LeaseKind::Backup).await?;
    let keep = lease.keep_alive();
    let r = async {
        let exclude = Arc::new(condemned_packs(&dst).await?);
        let (mut reader, rx) = OrderedReader::new(src.clone(), &label);
        let size = snap.size;
        let body = move |sink: &mut ChunkSink| {
            let mut chunks = Chunks::new(rx);
            let params = sink.repo().chunker.for_tree_files();
            let mut catalog = catalog_header();
            let n = entries.len() as u64;
            for mut e in entries {
                if e.kind() == Kind::File {
                    let mut error = None;
                    let take = Take { chunks: &mut chunks, pending: vec![], at: 0, left: e.data_len(), error: &mut error };
                    let lists = sink.store_stream(take, params, &*progress).map_err(|err| error.take().unwrap_or(err))?;
                    e.flags |= FLAG_LISTS;
                    e.content = Content::Lists(lists);
                }
                e.encode_into(&mut catalog).map_err(|err| RepoError::format(format!("entry of {}", String::from_utf8_lossy(&e.path)), err))?;
            }
            let lists = sink.store_stream(&catalog[..], sink.repo().chunker, &NoProgress)?;
            Ok(crate::repo::Content { lists, size, chunks: n })
        };
        let gate = crate::ops::backup::lease_still_fresh(&lease);
        // the source is read concurrently with the body that stores it
        let feeder = tokio::spawn(async move { feed(&mut reader, &contents).await });
        backup_with(dst.clone(), SnapshotKind::Tree, meta, exclude, body, async move {
            // everything must have come from the source before the copy may commit
            feeder.await.map_err(|e| RepoError::Internal(e.to_string()))??;
            gate.await
        })
        .await
    }
    .await;
    keep.abort();
    lease.release().await;
    r
}
