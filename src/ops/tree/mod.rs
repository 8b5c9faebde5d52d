//! File trees: backup of directory trees with their metadata, listing, and restore.

pub mod backup;
pub mod copy;
pub mod fsmeta;
pub mod import_tar;
pub mod restore;
pub mod tar;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::Id;
use crate::format::snapshot::{Snapshot, SnapshotKind};
use crate::format::tree::{Entry, catalog_header};
use crate::repo::{
    BackupStats, ChunkSink, Content, RepoError, Repository, Result, SnapshotMeta, backup_with,
};

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

pub(super) fn spool_err(path: &Path, e: io::Error) -> RepoError {
    RepoError::Cache { path: path.display().to_string(), reason: format!("catalog spool: {e}") }
}

/// A new catalog, written to an unlinked temporary file as it grows, then stored.
pub(super) struct Catalog {
    path: PathBuf,
    out: BufWriter<File>,
    scratch: Vec<u8>,
}

impl Catalog {
    /// An empty catalog (its header only) in a temporary file under `dir`.
    pub(super) fn create(dir: &Path) -> Result<Catalog> {
        let (path, file) = crate::repo::sorted::unlinked_file(dir, "catalog")?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&catalog_header()).map_err(|e| spool_err(&path, e))?;
        Ok(Catalog { path, out, scratch: Vec::new() })
    }

    pub(super) fn add(&mut self, e: &Entry) -> Result<()> {
        self.scratch.clear();
        e.encode_into(&mut self.scratch).map_err(|err| RepoError::Source {
            path: String::from_utf8_lossy(&e.path).into_owned(),
            reason: err.to_string(),
        })?;
        self.out.write_all(&self.scratch).map_err(|err| spool_err(&self.path, err))
    }

    /// The catalog written, from its start.
    pub(super) fn into_reader(self) -> Result<(PathBuf, BufReader<File>)> {
        let path = self.path;
        let mut file = self.out.into_inner().map_err(|e| spool_err(&path, e.into_error()))?;
        file.rewind().map_err(|e| spool_err(&path, e))?;
        Ok((path, BufReader::with_capacity(1 << 20, file)))
    }

    /// Stores the catalog as a stream with the catalog chunker; its content lists.
    pub(super) fn store(self, sink: &mut ChunkSink) -> Result<Vec<Id>> {
        let (path, catalog) = self.into_reader()?;
        let params = sink.repo().chunker().for_catalogs();
        match sink.store_stream(catalog, params, &crate::repo::NoProgress) {
            Err(RepoError::Input(e)) => Err(spool_err(&path, e)),
            other => other,
        }
    }
}
