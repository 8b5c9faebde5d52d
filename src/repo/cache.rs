//! The local index cache: a redb database per repository mapping chunk ids to their
//! location, built from the repository's index files and never the only copy of anything.
//!
//! It records which index files it has taken in. On open it lists `index/`: new files are
//! added; if a file it took in is gone (prune replaced it) or the cache is unreadable or of
//! another cache version, it is rebuilt from scratch. When another process holds the cache
//! (redb allows one writer process), this process builds a private temporary cache instead
//! of waiting, so concurrent backups never block each other.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::{RepoError, Repository, Result, paths};
use crate::format::Id;
use crate::format::envelope::MAGIC_INDEX;
use crate::format::index::{BlobLocation, IndexFile};
use crate::format::pack::BlobType;

const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
const INDEX_FILES: TableDefinition<&str, u64> = TableDefinition::new("index_files");
const PACKS: TableDefinition<&[u8], u64> = TableDefinition::new("packs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CACHE_VERSION: u64 = 1;
/// redb's page cache defaults to 1 GiB and fills as the table grows; its memory plateaus at
/// about twice this setting (measured: ~35 MiB at 16 MiB, ~12 MiB at 4 MiB, with a reader
/// beside the writer). 4 MiB cost no measurable speed on the benchmark: pages come from the
/// operating system's cache.
const PAGE_CACHE_BYTES: usize = 4 << 20;
/// Entries per write transaction when taking in index files.
const INGEST_SLICE: usize = 4096;

fn create_db(path: &Path) -> std::result::Result<Database, DatabaseError> {
    Database::builder().set_cache_size(PAGE_CACHE_BYTES).create(path)
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRef {
    pub pack: Id,
    pub loc: BlobLocation,
}

fn encode_ref(pack: &Id, l: &BlobLocation) -> [u8; 46] {
    let mut b = [0u8; 46];
    b[..32].copy_from_slice(&pack.0);
    b[32] = l.blob_type as u8;
    b[33] = l.flags;
    b[34..38].copy_from_slice(&l.offset.to_le_bytes());
    b[38..42].copy_from_slice(&l.stored_len.to_le_bytes());
    b[42..46].copy_from_slice(&l.raw_len.to_le_bytes());
    b
}

fn decode_ref(b: &[u8]) -> Option<BlobRef> {
    if b.len() != 46 {
        return None;
    }
    let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut pack = [0u8; 32];
    pack.copy_from_slice(&b[..32]);
    let blob_type = BlobType::from_u8(b[32]).ok()?;
    Some(BlobRef {
        pack: Id(pack),
        loc: BlobLocation {
            blob_type,
            flags: b[33],
            offset: u(34),
            stored_len: u(38),
            raw_len: u(42),
        },
    })
}

pub struct IndexCache {
    db: Database,
    path: PathBuf,
    temporary: bool,
    warnings: Mutex<Vec<String>>,
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Cache { path: path.display().to_string(), reason: e.to_string() }
}

impl IndexCache {
    pub fn open(dir: &Path) -> Result<IndexCache> {
        std::fs::create_dir_all(dir).map_err(|e| cache_err(dir, e))?;
        let path = dir.join("index.redb");
        let mut notes = vec![];
        let (db, path, temporary) = match create_db(&path) {
            Ok(db) => (db, path, false),
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                let mut r = [0u8; 8];
                crate::codec::random_bytes(&mut r).map_err(|e| cache_err(dir, e))?;
                let tmp = dir.join(format!("index-{}-{}.redb", std::process::id(), hex::encode(r)));
                (create_db(&tmp).map_err(|e| cache_err(&tmp, e))?, tmp, true)
            }
            Err(e) => {
                // unreadable: it is only a cache, so start over
                notes.push(format!(
                    "local cache {} was unreadable ({e}) and was rebuilt",
                    path.display()
                ));
                let _ = std::fs::remove_file(&path);
                (create_db(&path).map_err(|e| cache_err(&path, e))?, path, false)
            }
        };
        let cache = IndexCache { db, path, temporary, warnings: Mutex::new(notes) };
        if cache.version().ok() != Some(CACHE_VERSION) {
            cache.clear()?;
        }
        Ok(cache)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    fn err(&self, e: impl std::fmt::Display) -> RepoError {
        cache_err(&self.path, e)
    }

    fn version(&self) -> std::result::Result<u64, RepoError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(META).map_err(|e| self.err(e))?;
        let v = t.get("version").map_err(|e| self.err(e))?.map(|g| g.value());
        v.ok_or_else(|| self.err("no version"))
    }

    /// Empties every table.
    pub fn clear(&self) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.delete_table(BLOBS).map_err(|e| self.err(e))?;
        tx.delete_table(PACKS).map_err(|e| self.err(e))?;
        tx.delete_table(INDEX_FILES).map_err(|e| self.err(e))?;
        {
            let mut m = tx.open_table(META).map_err(|e| self.err(e))?;
            m.insert("version", CACHE_VERSION).map_err(|e| self.err(e))?;
            tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            tx.open_table(PACKS).map_err(|e| self.err(e))?;
            tx.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn ingested(&self) -> Result<HashSet<String>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
        let mut s = HashSet::new();
        for r in t.iter().map_err(|e| self.err(e))? {
            let (k, _) = r.map_err(|e| self.err(e))?;
            s.insert(k.value().to_string());
        }
        Ok(s)
    }

    /// Brings the cache in line with the repository's index files. Damaged index files are
    /// skipped and reported through [`IndexCache::take_warnings`].
    pub async fn sync(&self, repo: &Repository) -> Result<()> {
        let listed = repo.backend.list(paths::INDEX_DIR).await?;
        let names: HashSet<String> =
            listed.iter().filter_map(|o| paths::id_of(&o.path)).map(|i| i.to_hex()).collect();
        let mut have = self.ingested()?;
        if have.iter().any(|h| !names.contains(h)) {
            self.clear()?;
            have.clear();
        }
        let mut batch = Vec::new();
        for name in names.iter().filter(|n| !have.contains(*n)) {
            let path = format!("{}{}", paths::INDEX_DIR, name);
            let decoded = async {
                let bytes = repo.backend.get(&path).await?;
                let body = repo.open_object(MAGIC_INDEX, &bytes, &path)?;
                IndexFile::decode(&body).map_err(|e| RepoError::format(path.clone(), e))
            }
            .await;
            match decoded {
                Ok(f) => batch.push((name.clone(), f)),
                Err(RepoError::Backend(e)) if e.is_not_found() => {} // removed meanwhile by a prune
                Err(e) => self.warn(format!("{e}; its entries are ignored (run `repo check`)")),
            }
            // bounded by entries, not files: memory must not grow with the repository
            let entries: usize = batch
                .iter()
                .map(|(_, f): &(String, IndexFile)| {
                    f.packs.iter().map(|p| p.blobs.len()).sum::<usize>()
                })
                .sum();
            if batch.len() >= 64 || entries >= 1 << 16 {
                self.ingest(&std::mem::take(&mut batch))?;
            }
        }
        self.ingest(&batch)
    }

    pub fn warn(&self, w: String) {
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    }
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records index files (by name) and their entries. Entries are committed in slices of
    /// `INGEST_SLICE`: a write transaction keeps every page it touches in memory, and random
    /// ids touch nearly every leaf, so one large transaction would cost memory in proportion
    /// to the table. A file's name is recorded with its last slice: after a crash in between,
    /// the file is simply taken in again (inserts are idempotent).
    pub fn ingest(&self, files: &[(String, IndexFile)]) -> Result<()> {
        for (name, f) in files {
            let entries: Vec<(&Id, [u8; 46])> = f
                .packs
                .iter()
                .flat_map(|p| p.blobs.iter().map(move |(id, l)| (id, encode_ref(&p.pack, l))))
                .collect();
            let mut slices = entries.chunks(INGEST_SLICE).peekable();
            if slices.peek().is_none() {
                self.ingest_slice(&[], Some((name, f)))?;
            }
            while let Some(slice) = slices.next() {
                let last = slices.peek().is_none();
                self.ingest_slice(slice, last.then_some((name, f)))?;
            }
        }
        Ok(())
    }

    fn ingest_slice(
        &self,
        entries: &[(&Id, [u8; 46])],
        file: Option<(&String, &IndexFile)>,
    ) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            for (id, r) in entries {
                blobs.insert(&id.0[..], &r[..]).map_err(|e| self.err(e))?;
            }
            if let Some((name, f)) = file {
                let mut packs = tx.open_table(PACKS).map_err(|e| self.err(e))?;
                for p in &f.packs {
                    packs.insert(&p.pack.0[..], p.pack_len).map_err(|e| self.err(e))?;
                }
                let n: u64 = f.packs.iter().map(|p| p.blobs.len() as u64).sum();
                tx.open_table(INDEX_FILES)
                    .map_err(|e| self.err(e))?
                    .insert(name.as_str(), n)
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Looks up many ids in one read transaction.
    pub fn lookup_many(&self, ids: &[Id]) -> Result<Vec<Option<BlobRef>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        ids.iter()
            .map(|id| {
                Ok(t.get(&id.0[..]).map_err(|e| self.err(e))?.and_then(|g| decode_ref(g.value())))
            })
            .collect()
    }

    pub fn lookup(&self, id: &Id) -> Result<Option<BlobRef>> {
        Ok(self.lookup_many(std::slice::from_ref(id))?.pop().flatten())
    }

    /// (blobs, packs, pack bytes, index files) known to the cache.
    pub fn counts(&self) -> Result<(u64, u64, u64, u64)> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let blobs =
            tx.open_table(BLOBS).map_err(|e| self.err(e))?.len().map_err(|e| self.err(e))?;
        let packs = tx.open_table(PACKS).map_err(|e| self.err(e))?;
        let mut bytes = 0u64;
        for r in packs.iter().map_err(|e| self.err(e))? {
            bytes += r.map_err(|e| self.err(e))?.1.value();
        }
        let files =
            tx.open_table(INDEX_FILES).map_err(|e| self.err(e))?.len().map_err(|e| self.err(e))?;
        Ok((blobs, packs.len().map_err(|e| self.err(e))?, bytes, files))
    }

    /// Sum of `raw_len` over all data blobs: the unique content stored.
    pub fn raw_bytes(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        let mut sum = 0u64;
        for r in t.iter().map_err(|e| self.err(e))? {
            if let Some(b) = decode_ref(r.map_err(|e| self.err(e))?.1.value())
                && b.loc.blob_type == BlobType::Data
            {
                sum += b.loc.raw_len as u64;
            }
        }
        Ok(sum)
    }
}

impl Drop for IndexCache {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
