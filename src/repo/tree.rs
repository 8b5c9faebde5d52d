//! Reading the catalog of a tree snapshot (`format::tree`), and the chunks it refers to.
//!
//! [`Entries`] decodes a catalog as its chunks arrive, so that a tree of millions of files is
//! listed, restored, exported or used as a backup's parent with a few chunks and one entry in
//! memory. [`read_entries`] holds the whole catalog and is kept for the catalogs of server
//! snapshots (one entry per database).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::reader::OrderedReader;
use super::{RepoError, Repository, Result, read_blob};
use crate::format::Id;
use crate::format::snapshot::Snapshot;
use crate::format::stream::decode_list;
use crate::format::tree::{self, CATALOG_HEADER_LEN, Content, Entry};

/// The entries of a tree snapshot's catalog, in catalog order, decoded while the catalog's
/// chunks are fetched ahead. Memory: the read-ahead of the chunk reader and one entry.
pub struct Entries {
    rx: mpsc::Receiver<Vec<Vec<u8>>>,
    /// The task that fetches the chunks; its result tells a complete catalog from a failed read.
    fed: Option<JoinHandle<Result<bool>>>,
    buf: Vec<u8>,
    at: usize,
    header_read: bool,
    label: String,
}

impl Entries {
    /// Starts reading the catalog of `snap` (a tree or server snapshot); `label` names it in
    /// errors. Must be called within the runtime.
    pub fn open(repo: &Arc<Repository>, snap: &Snapshot, label: &str) -> Result<Entries> {
        if !snap.kind.has_catalog() {
            return Err(RepoError::NotATree(label.into()));
        }
        let (mut reader, rx) = OrderedReader::new(repo.clone(), label);
        let lists = snap.lists.clone();
        let fed = tokio::spawn(async move { reader.feed_lists(&lists).await });
        Ok(Entries {
            rx,
            fed: Some(fed),
            buf: Vec::new(),
            at: 0,
            header_read: false,
            label: label.into(),
        })
    }

    fn corrupt(&self, e: crate::format::FormatError) -> RepoError {
        RepoError::format(format!("catalog of {}", self.label), e)
    }

    /// The next entry if the bytes received so far hold all of it.
    fn decode(&mut self) -> Result<Option<Entry>> {
        if !self.header_read {
            let Some(h) = self.buf.get(self.at..self.at + CATALOG_HEADER_LEN) else {
                return Ok(None);
            };
            tree::check_header(h).map_err(|e| self.corrupt(e))?;
            self.at += CATALOG_HEADER_LEN;
            self.header_read = true;
        }
        match tree::next_entry(&self.buf[self.at..]) {
            Ok(Some((e, n))) => {
                self.at += n;
                Ok(Some(e))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.corrupt(e)),
        }
    }

    fn append(&mut self, group: Vec<Vec<u8>>) {
        // what is left is the start of one entry
        self.buf.drain(..self.at);
        self.at = 0;
        for c in group {
            self.buf.extend_from_slice(&c);
        }
    }

    /// After the last chunk: the catalog must end where an entry ends.
    fn finish(
        &mut self,
        fed: Option<std::result::Result<Result<bool>, tokio::task::JoinError>>,
    ) -> Result<()> {
        if let Some(r) = fed {
            r.map_err(RepoError::from)??;
        }
        if !self.header_read || self.at < self.buf.len() {
            let needed = if self.header_read { 4 } else { CATALOG_HEADER_LEN };
            let offset = self.buf.len() - self.at;
            return Err(self.corrupt(crate::format::FormatError::Truncated { offset, needed }));
        }
        Ok(())
    }

    /// The next entry, or `None` after the last one.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some(e) = self.decode()? {
                return Ok(Some(e));
            }
            match self.rx.recv().await {
                Some(group) => self.append(group),
                None => {
                    let fed = match self.fed.take() {
                        Some(f) => Some(f.await),
                        None => None,
                    };
                    self.finish(fed)?;
                    return Ok(None);
                }
            }
        }
    }

    /// [`Entries::next`] for a blocking thread of the runtime (a backup's walk).
    pub fn blocking_next(&mut self) -> Result<Option<Entry>> {
        tokio::runtime::Handle::current().block_on(self.next())
    }
}

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

/// Decodes the whole catalog of a snapshot: for server snapshots (one entry per stream); a
/// tree is read with [`Entries`].
pub async fn read_entries(
    repo: &Arc<Repository>,
    snap: &Snapshot,
    label: &str,
) -> Result<Vec<Entry>> {
    let bytes = read_catalog(repo, snap, label).await?;
    tree::decode_catalog(&bytes).map_err(|e| RepoError::format(format!("catalog of {label}"), e))
}

/// The entries (chunk id, length) of the content list `id`; `label` names what needs it.
pub async fn read_list(repo: &Repository, id: &Id, label: &str) -> Result<Vec<(Id, u32)>> {
    decode_list(&read_blob(repo, id, label).await?)
        .map_err(|e| RepoError::format(format!("content list {} of {label}", id.short()), e))
}

/// Hands `each` every blob the files of a tree snapshot need besides its catalog, a file at a
/// time: inline chunks, the content lists of large files and the chunks those lists name.
pub async fn file_blobs(
    repo: &Arc<Repository>,
    snap: &Snapshot,
    label: &str,
    mut each: impl FnMut(&[Id]) -> Result<()>,
) -> Result<()> {
    let mut entries = Entries::open(repo, snap, label)?;
    let mut ids = Vec::new();
    while let Some(e) = entries.next().await? {
        match e.content {
            Content::None => {}
            Content::Inline(c) => ids.extend(c.into_iter().map(|c| c.0)),
            Content::Lists(lists) => {
                for l in lists {
                    let listed = read_list(repo, &l, label).await?;
                    ids.push(l);
                    ids.extend(listed.into_iter().map(|c| c.0));
                    each(&ids)?;
                    ids.clear();
                }
            }
        }
        if ids.len() >= 8192 {
            each(&ids)?;
            ids.clear();
        }
    }
    each(&ids)
}
