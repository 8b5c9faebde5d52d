//! Reading the catalog of a tree snapshot (`format::tree`), and the chunks it refers to.

use std::sync::Arc;

use super::reader::OrderedReader;
use super::{RepoError, Repository, Result, read_blob};
use crate::format::Id;
use crate::format::snapshot::Snapshot;
use crate::format::stream::decode_list;
use crate::format::tree::{self, Content, Entry};

/// The catalog bytes of a tree snapshot (header included), read whole: about 150 bytes per
/// entry plus 36 bytes per chunk of file data.
pub async fn read_catalog(repo: &Arc<Repository>, snap: &Snapshot, label: &str) -> Result<Vec<u8>> {
    if !snap.kind.has_catalog() {
        return Err(RepoError::NotATree(label.into()));
    }
    let (mut reader, mut rx) = OrderedReader::new(repo.clone(), label);
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(group) = rx.recv().await {
            for c in group {
                out.extend_from_slice(&c);
            }
        }
        out
    });
    let fed = reader.feed_lists(&snap.lists).await;
    drop(reader);
    let bytes = collect.await.map_err(RepoError::from)?;
    fed?;
    Ok(bytes)
}

/// Decodes the catalog of a tree snapshot.
pub async fn read_entries(
    repo: &Arc<Repository>,
    snap: &Snapshot,
    label: &str,
) -> Result<Vec<Entry>> {
    let bytes = read_catalog(repo, snap, label).await?;
    tree::decode_catalog(&bytes).map_err(|e| RepoError::format(format!("catalog of {label}"), e))
}

/// Every blob the files of a tree snapshot need besides its catalog: inline chunks, the
/// content lists of large files and the chunks those lists name.
pub async fn file_blobs(repo: &Arc<Repository>, snap: &Snapshot, label: &str) -> Result<Vec<Id>> {
    let mut out = Vec::new();
    for e in read_entries(repo, snap, label).await? {
        match e.content {
            Content::None => {}
            Content::Inline(c) => out.extend(c.into_iter().map(|c| c.0)),
            Content::Lists(lists) => {
                for l in lists {
                    let entries = decode_list(&read_blob(repo, &l, label).await?).map_err(|e| {
                        RepoError::format(format!("content list {} of {label}", l.short()), e)
                    })?;
                    out.push(l);
                    out.extend(entries.into_iter().map(|c| c.0));
                }
            }
        }
    }
    Ok(out)
}
