//! A temporary on-disk set of chunk ids (redb), for prune's live set: memory stays bounded
//! however many chunks a repository holds. Deleted when dropped.

use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::sorted::Sorter;
use super::{RepoError, Result};
use crate::format::Id;

const SET: TableDefinition<&[u8], &[u8]> = TableDefinition::new("set");
const NO_PACK: [u8; 32] = [0; 32];

/// What `IdSet::keep` decided for one blob copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Not in the set: no snapshot needs it.
    Dead,
    /// Needed, and this pack holds the copy that is kept.
    Here,
    /// Needed, but another pack's copy is kept (a duplicate).
    Elsewhere,
}

/// Ids in a write transaction of [`IdSet::insert_batch`] (it holds the leaves it touches).
const BATCH_SLICE: usize = 8192;

/// Ids gathered for one sorted insert into an [`IdSet`]; memory stays bounded (runs spill to
/// disk).
pub struct IdBatch(Sorter);

impl IdBatch {
    /// Adds one id with the pack that keeps it (for [`IdSet::assign_batch`]).
    pub fn add_kept(&mut self, id: &Id, pack: &Id) -> Result<()> {
        self.0.push(&id.0, &pack.0)
    }

    /// Adds ids to the batch.
    pub fn add(&mut self, ids: &[Id]) -> Result<()> {
        for id in ids {
            self.0.push(&id.0, &[])?;
        }
        Ok(())
    }
}

/// Prune's set of needed chunk ids, each with the pack chosen to keep its copy, in a temporary redb
/// file (no fsync) that is deleted on drop.
pub struct IdSet {
    db: Database,
    path: PathBuf,
}

fn err(path: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Cache { path: path.display().to_string(), reason: e.to_string() }
}

impl IdSet {
    /// A new empty set in a uniquely named file under `dir`.
    pub fn temp(dir: &Path) -> Result<IdSet> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut r = [0u8; 8];
        crate::codec::random_bytes(&mut r).map_err(|e| err(dir, e))?;
        let path = dir.join(format!("idset-{}-{}.redb", std::process::id(), hex::encode(r)));
        let db = Database::builder()
            .set_cache_size(16 << 20)
            .create(&path)
            .map_err(|e| err(&path, e))?;
        let set = IdSet { db, path };
        set.write(|_| Ok(()))?; // creates the table, so that reads of an empty set work
        Ok(set)
    }

    fn write<T>(&self, f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<T>) -> Result<T> {
        let mut tx = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        // a temporary set: no fsync
        tx.set_durability(Durability::None).map_err(|e| err(&self.path, e))?;
        let out = {
            let mut t = tx.open_table(SET).map_err(|e| err(&self.path, e))?;
            f(&mut t)?
        };
        tx.commit().map_err(|e| err(&self.path, e))?;
        Ok(out)
    }

    /// Adds ids (not yet kept anywhere).
    pub fn insert_many(&self, ids: &[Id]) -> Result<()> {
        let p = self.path.clone();
        self.write(|t| {
            for id in ids {
                if t.get(&id.0[..]).map_err(|e| err(&p, e))?.is_none() {
                    t.insert(&id.0[..], &NO_PACK[..]).map_err(|e| err(&p, e))?;
                }
            }
            Ok(())
        })
    }

    /// An empty batch of ids to add with [`IdSet::insert_batch`].
    pub fn batch(&self) -> IdBatch {
        IdBatch(Sorter::new(self.path.parent().unwrap_or(Path::new("."))))
    }

    /// Adds every id of the batch (not yet kept anywhere), in key order: a leaf of the table is
    /// written about once, where ids added in random order rewrite one per id once the table
    /// outgrows the page cache.
    pub fn insert_batch(&self, batch: IdBatch) -> Result<()> {
        self.write_sorted(batch, false)
    }

    /// Records which pack keeps each of these needed ids (id, pack), overwriting; in key
    /// order like [`IdSet::insert_batch`].
    pub fn assign_batch(&self, batch: IdBatch) -> Result<()> {
        self.write_sorted(batch, true)
    }

    /// Writes the batch in key order, `BATCH_SLICE` records per transaction: each record's
    /// value when `overwrite`, else "no pack yet" for ids not in the set.
    fn write_sorted(&self, batch: IdBatch, overwrite: bool) -> Result<()> {
        let mut sorted = batch.0.into_sorted()?.peekable();
        while sorted.peek().is_some() {
            let p = self.path.clone();
            self.write(|t| {
                for r in sorted.by_ref().take(BATCH_SLICE) {
                    let (k, v) = r?;
                    if overwrite {
                        t.insert(&k[..], &v[..]).map_err(|e| err(&p, e))?;
                    } else if t.get(&k[..]).map_err(|e| err(&p, e))?.is_none() {
                        t.insert(&k[..], &NO_PACK[..]).map_err(|e| err(&p, e))?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Runs `f` over every id in the set, in key order (one read transaction).
    pub fn with_sorted<T>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = Result<Id>>) -> Result<T>,
    ) -> Result<T> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = tx.open_table(SET).map_err(|e| err(&self.path, e))?;
        let path = &self.path;
        let mut ids = t.iter().map_err(|e| err(path, e))?.map(|r| {
            let (k, _) = r.map_err(|e| err(path, e))?;
            let id: [u8; 32] = k.value().try_into().map_err(|_| err(path, "key is not an id"))?;
            Ok(Id(id))
        });
        f(&mut ids)
    }

    /// For each id, whether it is in the set (needed by some snapshot).
    pub fn contains_many(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        let t = tx.open_table(SET).map_err(|e| err(&self.path, e))?;
        ids.iter()
            .map(|id| Ok(t.get(&id.0[..]).map_err(|e| err(&self.path, e))?.is_some()))
            .collect()
    }

    /// For copies of `ids` stored in `pack`: decides which copy of each needed id is kept (the
    /// first pack asked keeps it), in one transaction.
    pub fn keep_many(&self, ids: &[Id], pack: &Id) -> Result<Vec<Keep>> {
        let p = self.path.clone();
        self.write(|t| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let cur: Option<[u8; 32]> = t.get(&id.0[..]).map_err(|e| err(&p, e))?.map(|g| {
                    let mut a = [0u8; 32];
                    a.copy_from_slice(&g.value()[..32.min(g.value().len())]);
                    a
                });
                out.push(match cur {
                    None => Keep::Dead,
                    Some(k) if k == NO_PACK => {
                        t.insert(&id.0[..], &pack.0[..]).map_err(|e| err(&p, e))?;
                        Keep::Here
                    }
                    Some(k) if k == pack.0 => Keep::Here,
                    Some(_) => Keep::Elsewhere,
                });
            }
            Ok(out)
        })
    }

    /// Number of ids in the set.
    pub fn len(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(|e| err(&self.path, e))?;
        tx.open_table(SET).map_err(|e| err(&self.path, e))?.len().map_err(|e| err(&self.path, e))
    }
    /// True when no id is needed.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl Drop for IdSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
