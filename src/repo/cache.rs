//! The local index cache: a redb database per repository mapping chunk ids to their
//! location, built from the repository's index files and never the only copy of anything.
//!
//! It records which index files it has taken in. On open it lists `index/`: new files are
//! added; if a file it took in is gone (prune replaced it) or the cache is unreadable or of
//! another cache version, it is rebuilt from scratch. When another process holds the cache
//! (redb allows one writer process), this process builds a private temporary cache instead
//! of waiting, so concurrent backups never block each other.

use futures::StreamExt;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::blobrun::{Run, Segments};
use super::sorted::Sorter;
use super::verify::{IndexBody, load_index_body};
use super::{RepoError, Repository, Result, paths};
use crate::codec::sketch::Sketch;
use crate::format::Id;
use crate::format::index::{BlobLocation, IndexFile, IndexItem, SortedItem};
use crate::format::pack::BlobType;

const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
const INDEX_FILES: TableDefinition<&str, u64> = TableDefinition::new("index_files");
/// The packs each index file lists, by the file's name: 40-byte records (pack id, length as
/// u64 LE). One value per file, not one row per pack: a fresh pod records tens of thousands
/// of packs, and only `check` reads them.
const FILE_PACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("file_packs");
/// Version 5's table of packs, one row each: dropped when a cache is cleared.
const OLD_PACKS: TableDefinition<&[u8], u64> = TableDefinition::new("packs");
/// One record of a [`FILE_PACKS`] value.
const PACK_RECORD: usize = 40;
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Set in META while [`IndexCache::record`] writes entries whose files' names are not yet
/// recorded; found set on open, the cache is rebuilt.
const RECORDING: &str = "recording";
/// Snapshot objects as stored (sealed), by id: listing snapshots fetches only new ones. The
/// bytes are checked against their id and opened like a fresh download on every use, so the
/// cache saves requests, not verification.
const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots");
/// Snapshot bundles this cache has read: what they held that was listed went into
/// `SNAPSHOTS`, so a later listing need not read them again.
const BUNDLES_READ: TableDefinition<&[u8], ()> = TableDefinition::new("bundles_read");
/// Resemblance sketches of the chunks this cache's backups stored (`codec::sketch`): each
/// super-feature, its low three bits replaced by its place in the sketch, to the id of the
/// newest chunk that had it. Hints only: a chunk found here is used as a delta base only when
/// the index still has it and the delta against it pays.
const SKETCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("sketches");
/// The generation of sketches before [`SKETCHES`]: looked up where the newer one has no
/// entry, never added to.
const OLDER_SKETCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("sketches_older");
/// When adding sketches would take [`SKETCHES`] past this many entries, it becomes
/// [`OLDER_SKETCHES`] (whose entries are dropped) and a new generation starts: the two hold
/// at most twice this (about 60 MB of database, the sketches of some 20 GB of chunks
/// stored), new content is most likely to resemble what was stored recently, and the
/// sketches of the last backups are never all dropped at once.
const SKETCH_GENERATION: u64 = 1 << 19;
/// The most chunks whose sketches a generation can hold: a backup need keep no more of them
/// (the newest) for [`IndexCache::add_sketches`].
pub const MAX_SKETCHED_CHUNKS: usize =
    SKETCH_GENERATION as usize / crate::codec::sketch::SUPER_FEATURES;
/// 2: one entry per copy of a blob (id, pack), not one per id. 3: the entries of a cache built
/// from scratch in a sealed run file beside the database (`blobrun.rs`), named by META `run`.
/// 4: run records with a pack number and an unpadded value (51 or 83 bytes, were 111), in
/// blocks of 32. 6: each index file's packs in one value (`FILE_PACKS`), not one row per pack.
const CACHE_VERSION: u64 = 6;
/// redb's page cache defaults to 1 GiB and fills as the table grows; its memory plateaus at
/// about twice this setting (measured: ~35 MiB at 16 MiB, ~12 MiB at 4 MiB, with a reader
/// beside the writer). 4 MiB cost no measurable speed on the benchmark: pages come from the
/// operating system's cache.
const PAGE_CACHE_BYTES: usize = 4 << 20;
/// Entries per write transaction when taking in index files. The transaction holds every
/// leaf it touches: in key order, a dense slice shares leaves, and a sparse one (few new
/// entries in a large table) touches at most one 4 KiB leaf per entry, 32 MiB.
const INGEST_SLICE: usize = 8192;
/// Listings of the index files a sync reads before giving up on one in which none vanished.
const SYNC_ROUNDS: usize = 8;

fn create_db(path: &Path) -> std::result::Result<Database, DatabaseError> {
    Database::builder().set_cache_size(PAGE_CACHE_BYTES).create(path)
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRef {
    /// The pack holding this copy.
    pub pack: Id,
    /// Where in the pack, and how the blob is stored.
    pub loc: BlobLocation,
}

/// Key of one copy of a blob: its id, then the pack holding it, so the copies of one id are
/// adjacent and a range over the id finds them all.
fn blob_key(id: &Id, pack: &Id) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(&pack.0);
    k
}

/// Value of one copy: type, flags, offset, stored and raw length (14 bytes), then the base id
/// of a delta (32 more).
fn encode_loc(l: &BlobLocation) -> LocBytes {
    let mut b = [0u8; 46];
    b[0] = l.blob_type as u8;
    b[1] = l.flags;
    b[2..6].copy_from_slice(&l.offset.to_le_bytes());
    b[6..10].copy_from_slice(&l.stored_len.to_le_bytes());
    b[10..14].copy_from_slice(&l.raw_len.to_le_bytes());
    let len = match &l.base {
        Some(base) => {
            b[14..].copy_from_slice(&base.0);
            46
        }
        None => 14,
    };
    LocBytes(b, len)
}

/// The chunk id and encoded location ([`encode_loc`]) of an index entry as stored
/// (`format-spec/index.md`: type, flags, two reserved bytes, offset, stored and raw length, chunk id,
/// then the base id of a delta), without decoding it; `None` if it is not 48 or 80 bytes.
fn entry_record(e: &[u8]) -> Option<(&[u8; 32], LocBytes)> {
    let (head, base) = match e.len() {
        48 => (e, None),
        80 => (&e[..48], Some(&e[48..])),
        _ => return None,
    };
    let mut b = [0u8; 46];
    b[0] = head[0];
    b[1] = head[1];
    b[2..14].copy_from_slice(&head[4..16]);
    let len = match base {
        Some(base) => {
            b[14..].copy_from_slice(base);
            46
        }
        None => 14,
    };
    Some((head[16..48].try_into().ok()?, LocBytes(b, len)))
}

/// An encoded location ([`encode_loc`]) without an allocation.
struct LocBytes([u8; 46], usize);

impl std::ops::Deref for LocBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

fn decode_ref(k: &[u8], b: &[u8]) -> Option<(Id, BlobRef)> {
    if k.len() != 64 || (b.len() != 14 && b.len() != 46) {
        return None;
    }
    let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (mut id, mut pack) = ([0u8; 32], [0u8; 32]);
    id.copy_from_slice(&k[..32]);
    pack.copy_from_slice(&k[32..]);
    let blob_type = BlobType::from_u8(b[0]).ok()?;
    let base = (b.len() == 46).then(|| {
        let mut x = [0u8; 32];
        x.copy_from_slice(&b[14..]);
        Id(x)
    });
    let loc = BlobLocation {
        blob_type,
        flags: b[1],
        offset: u(2),
        stored_len: u(6),
        raw_len: u(10),
        base,
    };
    Some((Id(id), BlobRef { pack: Id(pack), loc }))
}

/// Index files read and not yet recorded: their entries (sorted on the way) and, per file,
/// its name, its packs with their lengths and its entry count.
struct Taken {
    entries: Sorter,
    /// Set when the cache was empty as the files were read: the entries go to sealed runs
    /// instead of the sorter.
    scratch: Option<FromScratch>,
    files: Vec<TakenFile>,
    dir: PathBuf,
}

/// Where the entries of a cache built from scratch go: the parts of one sorted index straight
/// into a run of their own (with its generation), everything else bucketed into another.
struct FromScratch {
    builder: super::blobrun::Builder,
    generation: u64,
    segments: Segments,
}

/// An index file's name, its packs with their lengths, and how many entries it holds.
type TakenFile = (String, Vec<(Id, u64)>, u64);

impl Taken {
    /// Entries to take in; `run` is the generation and file of a run of sorted index parts,
    /// when the cache is empty (`None` otherwise).
    fn new(scratch: &Path, run: Option<(u64, PathBuf)>) -> Taken {
        Taken {
            entries: Sorter::new(scratch),
            scratch: run.map(|(generation, path)| FromScratch {
                builder: super::blobrun::Builder::new(scratch),
                generation,
                segments: Segments::new(path),
            }),
            files: Vec::new(),
            dir: scratch.into(),
        }
    }
    /// One entry, into the run being built or the sorter.
    fn push(&mut self, id: &Id, pack: &Id, l: &BlobLocation) -> Result<()> {
        let (key, value) = (blob_key(id, pack), encode_loc(l));
        match &mut self.scratch {
            Some(s) => s.builder.push(&key, &value).map_err(|e| cache_err(&self.dir, e)),
            None => self.entries.push(&key, &value),
        }
    }
    /// Takes in the entries of an index body already checked ([`super::verify::load_index_body`]).
    fn add_body(&mut self, name: String, body: &IndexBody) -> Result<()> {
        let body = match body {
            IndexBody::Packs(b) => b,
            IndexBody::Sorted(b) => return self.add_sorted(name, b),
        };
        let (mut n, mut packs, mut pack, mut failed) = (0u64, Vec::new(), None, None);
        let visited = crate::format::index::visit(body, |item| match item {
            IndexItem::Supersedes(_) => {}
            IndexItem::Pack { pack: p, pack_len, .. } => {
                packs.push((p, pack_len));
                pack = Some(p);
            }
            IndexItem::Blob(id, l) => {
                let (Some(p), None) = (&pack, &failed) else { return };
                match self.push(&id, p, &l) {
                    Ok(()) => n += 1,
                    Err(e) => failed = Some(e),
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        visited.map_err(|e| RepoError::format(format!("index/{name}"), e))?;
        self.files.push((name, packs, n));
        Ok(())
    }
    /// Takes in a part of a sorted index (checked: [`super::verify::load_index_body`]): as
    /// stored into the run of its set when the cache is being built from scratch and the
    /// part belongs to the first set seen, else entry by entry.
    fn add_sorted(&mut self, name: String, body: &[u8]) -> Result<()> {
        let named = |e| RepoError::format(format!("index/{name}"), e);
        let (set, table) = crate::format::index::sorted_table(body).map_err(named)?;
        let mut used = vec![false; table.len()];
        let direct = match &mut self.scratch {
            Some(s) => {
                let ids: Vec<[u8; 32]> = table.iter().map(|(p, _)| p.0).collect();
                s.segments.accepts(&set.0, &ids)
            }
            None => false,
        };
        let mut n = 0u64;
        let mut failed: Option<RepoError> = None;
        let walked = match &mut self.scratch {
            Some(s) if direct => {
                let segments = &mut s.segments;
                let io = |e: std::io::Error| cache_err(&self.dir, e);
                segments.begin().map_err(io)?;
                let walked = crate::format::index::walk_checked_sorted(body, |e| {
                    if failed.is_some() {
                        return;
                    }
                    match (used.get_mut(e.pack as usize), entry_record(e.bytes)) {
                        (Some(u), Some((id, loc))) => {
                            *u = true;
                            n += 1;
                            if let Err(err) = segments.push(id, e.pack, &loc) {
                                failed = Some(io(err));
                            }
                        }
                        _ => {
                            failed = Some(RepoError::Corrupt {
                                object: format!("index/{name}"),
                                reason: "entry outside its part".into(),
                            })
                        }
                    }
                });
                if failed.is_none() && walked.is_ok() {
                    segments.end();
                }
                walked
            }
            _ => crate::format::index::visit_sorted(body, |item| {
                let SortedItem::Blob(p, id, l) = item else { return };
                if failed.is_some() {
                    return;
                }
                // p < table.len(): visit_sorted checks every pack number
                if let (Some(&(pack, _)), Some(u)) =
                    (table.get(p as usize), used.get_mut(p as usize))
                {
                    n += 1;
                    *u = true;
                    if let Err(e) = self.push(&id, &pack, &l) {
                        failed = Some(e);
                    }
                }
            }),
        };
        if let Some(e) = failed {
            return Err(e);
        }
        walked.map_err(named)?;
        let packs = table.into_iter().zip(used).filter(|(_, u)| *u).map(|(p, _)| p).collect();
        self.files.push((name, packs, n));
        Ok(())
    }
    fn add(&mut self, name: String, f: &IndexFile) -> Result<()> {
        let mut n = 0u64;
        for p in &f.packs {
            for (id, l) in &p.blobs {
                self.push(id, &p.pack, l)?;
                n += 1;
            }
        }
        self.files.push((name, f.packs.iter().map(|p| (p.pack, p.pack_len)).collect(), n));
        Ok(())
    }
}

/// The cache of one repository. It knows every copy of every blob; lookups prefer copies
/// outside the packs to avoid (those condemned by a prune), so a reader never depends on a
/// pack a sweep may delete while another copy exists.
pub struct IndexCache {
    db: Database,
    path: PathBuf,
    temporary: bool,
    warnings: Mutex<Vec<String>>,
    avoid: RwLock<Arc<HashSet<Id>>>,
    /// The sealed run holding the entries the cache was built with, if it was built from
    /// scratch; entries taken in later are in `BLOBS`.
    run: RwLock<Option<Arc<Run>>>,
    /// Held while entries are recorded or the cache is cleared: two ingests that both found
    /// the cache empty must not both name a run (the first's entries would be lost).
    writing: Mutex<()>,
    /// A recording failed part way (a full disk): some entries may be in without their file's
    /// name. The next recording must not mark the cache whole again, so the cache is cleared
    /// first ([`IndexCache::record`]); after a crash instead, the open clears it.
    torn: std::sync::atomic::AtomicBool,
    /// Held for a whole [`IndexCache::sync`]: a sync that finds a file gone clears the cache,
    /// and another sync running meanwhile would return believing it holds entries cleared
    /// under it (a reader would then fail with a chunk missing).
    syncing: tokio::sync::Mutex<()>,
}

/// An object that could not be read and was left out (an index file while syncing, a
/// snapshot while listing), with the reason.
#[derive(Clone, Debug)]
pub struct Unreadable {
    /// The object's path in the repository.
    pub object: String,
    /// Why it could not be read, as shown to the operator.
    pub error: String,
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Cache { path: path.display().to_string(), reason: e.to_string() }
}

impl IndexCache {
    /// Opens (or creates) `dir/index.redb`. An unreadable database or one of another cache version
    /// is rebuilt; one held by another process is left alone and a private temporary database is
    /// used instead (removed on drop).
    pub fn open(dir: &Path) -> Result<IndexCache> {
        std::fs::create_dir_all(dir).map_err(|e| cache_err(dir, e))?;
        let path = dir.join("index.redb");
        let mut notes = vec![];
        let (db, path, temporary) = match create_db(&path) {
            Ok(db) => (db, path, false),
            Err(DatabaseError::DatabaseAlreadyOpen) => return IndexCache::temporary(dir),
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
        let cache = IndexCache {
            db,
            path,
            temporary,
            warnings: Mutex::new(notes),
            avoid: RwLock::new(Arc::new(HashSet::new())),
            run: RwLock::new(None),
            writing: Mutex::new(()),
            torn: std::sync::atomic::AtomicBool::new(false),
            syncing: tokio::sync::Mutex::new(()),
        };
        if cache.version().ok() != Some(CACHE_VERSION) {
            cache.clear()?;
        }
        if let Err(e) = cache.load_run() {
            cache.warn(format!(
                "local cache {} was unreadable ({e}) and was rebuilt",
                dir.display()
            ));
            cache.clear()?;
        }
        // entries of index files whose names were never recorded (the process ended in
        // between): a sync would not know to drop them once the files are gone, and a
        // backup could then take a chunk of a deleted pack for stored
        if cache.meta(RECORDING)? == Some(1) {
            cache.warn(format!(
                "local cache {} was being written when its process ended; rebuilt",
                dir.display()
            ));
            cache.clear()?;
        }
        cache.remove_stray_runs();
        Ok(cache)
    }

    /// A new empty cache in a uniquely named file under `dir`, removed on drop and never
    /// fsynced: for a process that cannot use the shared cache, and for `check`, which must
    /// compare the index files with the shared cache rather than trust it.
    pub fn temporary(dir: &Path) -> Result<IndexCache> {
        std::fs::create_dir_all(dir).map_err(|e| cache_err(dir, e))?;
        let mut r = [0u8; 8];
        crate::codec::random_bytes(&mut r).map_err(|e| cache_err(dir, e))?;
        let path = dir.join(format!("index-{}-{}.redb", std::process::id(), hex::encode(r)));
        let db = create_db(&path).map_err(|e| cache_err(&path, e))?;
        let cache = IndexCache {
            db,
            path,
            temporary: true,
            warnings: Mutex::new(vec![]),
            avoid: RwLock::new(Arc::new(HashSet::new())),
            run: RwLock::new(None),
            writing: Mutex::new(()),
            torn: std::sync::atomic::AtomicBool::new(false),
            syncing: tokio::sync::Mutex::new(()),
        };
        cache.clear()?;
        Ok(cache)
    }

    /// A write transaction; without fsync for a temporary cache (it dies with the process).
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        if self.temporary {
            tx.set_durability(redb::Durability::None).map_err(|e| self.err(e))?;
        }
        Ok(tx)
    }

    /// The database file in use (a temporary one when another process held the shared cache).
    pub fn path(&self) -> &Path {
        &self.path
    }
    fn err(&self, e: impl std::fmt::Display) -> RepoError {
        cache_err(&self.path, e)
    }

    fn meta(&self, key: &str) -> Result<Option<u64>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(META).map_err(|e| self.err(e))?;
        let v = t.get(key).map_err(|e| self.err(e))?.map(|g| g.value());
        Ok(v)
    }

    /// Sets `key` without an fsync of its own (a backup records an index file after each of
    /// its packs): the next durable commit, the entries it announces, makes it durable too,
    /// and if none follows there is nothing for it to warn of.
    fn set_meta_lazily(&self, key: &str, value: u64) -> Result<()> {
        let mut tx = self.begin_write()?;
        tx.set_durability(redb::Durability::None).map_err(|e| self.err(e))?;
        tx.open_table(META)
            .map_err(|e| self.err(e))?
            .insert(key, value)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn version(&self) -> std::result::Result<u64, RepoError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(META).map_err(|e| self.err(e))?;
        let v = t.get("version").map_err(|e| self.err(e))?.map(|g| g.value());
        v.ok_or_else(|| self.err("no version"))
    }

    /// Empties every table.
    pub fn clear(&self) -> Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.clear_locked()
    }

    /// Clears the cache if a recording failed part way ([`IndexCache::torn`]); the caller
    /// holds `writing`, so that no recording fails or succeeds between the test and the clear.
    fn clear_if_torn_locked(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.torn.load(Ordering::SeqCst) {
            self.clear_locked()?;
            self.torn.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// [`IndexCache::clear`], for a caller that holds `writing`.
    fn clear_locked(&self) -> Result<()> {
        let tx = self.begin_write()?;
        tx.delete_table(BLOBS).map_err(|e| self.err(e))?;
        tx.delete_table(FILE_PACKS).map_err(|e| self.err(e))?;
        tx.delete_table(OLD_PACKS).map_err(|e| self.err(e))?;
        tx.delete_table(INDEX_FILES).map_err(|e| self.err(e))?;
        tx.delete_table(SNAPSHOTS).map_err(|e| self.err(e))?;
        tx.delete_table(BUNDLES_READ).map_err(|e| self.err(e))?;
        {
            let mut m = tx.open_table(META).map_err(|e| self.err(e))?;
            m.insert("version", CACHE_VERSION).map_err(|e| self.err(e))?;
            m.insert("run", 0).map_err(|e| self.err(e))?;
            m.insert(RECORDING, 0).map_err(|e| self.err(e))?;
            tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            tx.open_table(FILE_PACKS).map_err(|e| self.err(e))?;
            tx.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        // readers that hold the old run keep reading it (an unlinked file stays readable)
        if let Some(old) = self.run.write().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = std::fs::remove_file(old.path());
        }
        Ok(())
    }

    /// The file of run `generation`: beside the database, named after it.
    fn run_path(&self, generation: u64) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{generation:016x}.run"));
        self.path.with_file_name(name)
    }

    /// Opens the run the metadata names, if any.
    fn load_run(&self) -> Result<()> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(META).map_err(|e| self.err(e))?;
        let generation = t.get("run").map_err(|e| self.err(e))?.map_or(0, |g| g.value());
        let run = match generation {
            0 => None,
            g => Some(Arc::new(Run::open(&self.run_path(g)).map_err(|e| self.err(e))?)),
        };
        *self.run.write().unwrap_or_else(|p| p.into_inner()) = run;
        Ok(())
    }

    /// Removes run files of this database that its metadata does not name (left by a process
    /// killed between writing a run and recording it, or by a rebuild).
    fn remove_stray_runs(&self) {
        let keep = self.current_run().map(|r| r.path().to_path_buf());
        let Some(name) = self.path.file_name().and_then(|n| n.to_str()) else { return };
        let prefix = format!("{name}.");
        let Ok(dir) = std::fs::read_dir(self.scratch()) else { return };
        for e in dir.flatten() {
            let p = e.path();
            let stray = e.file_name().to_str().is_some_and(|f| {
                f.starts_with(&prefix) && f.ends_with(".run") && Some(&p) != keep.as_ref()
            });
            if stray {
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    fn current_run(&self) -> Option<Arc<Run>> {
        self.run.read().unwrap_or_else(|p| p.into_inner()).clone()
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
    /// skipped: they are returned (a prune must not go on without their entries) and also
    /// reported through [`IndexCache::take_warnings`].
    ///
    /// An index file listed but gone when read was deleted by a sweep, which first wrote an
    /// index file for every pack it resurrected: the files are listed again until a round
    /// finds none gone, so that such a file is never missed (check would call the snapshots
    /// that need the resurrected pack broken).
    pub async fn sync(&self, repo: &Repository) -> Result<Vec<Unreadable>> {
        let _one = self.syncing.lock().await;
        let listed = repo.backend.list(paths::INDEX_DIR).await?;
        self.sync_locked(repo, listed).await
    }

    /// [`IndexCache::sync`] from a listing of the index files that the opener made after
    /// writing its lease, before anything else could sync (a listing older than another
    /// sync's would make the files that sync took in look deleted).
    pub(super) async fn sync_listed(
        &self,
        repo: &Repository,
        listed: Vec<crate::backend::ObjectInfo>,
    ) -> Result<Vec<Unreadable>> {
        let _one = self.syncing.lock().await;
        self.sync_locked(repo, listed).await
    }

    async fn sync_locked(
        &self,
        repo: &Repository,
        listed: Vec<crate::backend::ObjectInfo>,
    ) -> Result<Vec<Unreadable>> {
        let names: HashSet<Id> = listed.iter().filter_map(|o| paths::id_of(&o.path)).collect();
        // a recording failed part way: start again from nothing ([`IndexCache::record`])
        self.clear_if_torn()?;
        let mut have = self.ingested()?;
        let listed_hex: HashSet<String> = names.iter().map(|n| n.to_hex()).collect();
        if have.iter().any(|h| !listed_hex.contains(h)) {
            self.clear()?;
            have.clear();
        }
        let mut skipped = Vec::new();
        let taken = self.taken()?;
        // the entries are taken on a thread of their own (bucketing or sorting, and writing
        // temporary files), while this task goes on fetching and decoding the next files: a
        // fresh pod's cache build overlaps the download instead of stalling it
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Id, IndexBody)>(1);
        // the buffers of files taken in are fetched into again: a fresh buffer per file
        // was a fresh mapping, paged in and zeroed by the kernel (hundreds of MB for a fresh pod)
        let buffers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let returned = buffers.clone();
        let adder = tokio::task::spawn_blocking(move || {
            let mut taken = taken;
            while let Some((id, body)) = rx.blocking_recv() {
                taken.add_body(id.to_hex(), &body)?;
                let mut free = returned.lock().unwrap_or_else(|p| p.into_inner());
                if free.len() < super::verify::INDEX_FILES_IN_FLIGHT {
                    free.push(body.into_buffer());
                }
            }
            Ok::<Taken, RepoError>(taken)
        });
        // every file read (or found damaged) in an earlier round
        let mut done: HashSet<Id> = HashSet::new();
        let mut new: Vec<Id> = names.into_iter().filter(|n| !have.contains(&n.to_hex())).collect();
        let mut rounds = 0;
        'rounds: loop {
            let mut vanished = false;
            let mut loads = futures::stream::iter(new)
                .map(|id| {
                    let buf = buffers.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    async move { (id, load_index_body(repo, &id, buf.unwrap_or_default()).await) }
                })
                .buffer_unordered(super::verify::INDEX_FILES_IN_FLIGHT);
            while let Some((id, r)) = loads.next().await {
                match r {
                    Ok(f) => {
                        done.insert(id);
                        // the adder stopped on an error: it is returned below
                        if tx.send((id, f)).await.is_err() {
                            break 'rounds;
                        }
                    }
                    Err(RepoError::Backend(e)) if e.is_not_found() => vanished = true,
                    Err(e) => {
                        done.insert(id);
                        self.warn(format!("{e}; its entries are ignored (run `repo check`)"));
                        skipped
                            .push(Unreadable { object: paths::index(&id), error: e.to_string() });
                    }
                }
            }
            rounds += 1;
            if !vanished {
                break;
            }
            if rounds == SYNC_ROUNDS {
                return Err(RepoError::LockConflict(format!(
                    "index files kept disappearing while {SYNC_ROUNDS} listings were read (a \
                     prune is sweeping); try again later"
                )));
            }
            new = repo
                .backend
                .list(paths::INDEX_DIR)
                .await?
                .iter()
                .filter_map(|o| paths::id_of(&o.path))
                .filter(|n| !done.contains(n) && !have.contains(&n.to_hex()))
                .collect();
        }
        drop(tx);
        let taken = adder.await.map_err(|e| self.err(e))??;
        self.record(taken)?;
        Ok(skipped)
    }

    /// Packs that lookups avoid while another copy exists.
    pub fn avoid(&self, packs: HashSet<Id>) {
        *self.avoid.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(packs);
    }

    /// Queues a warning for the operator (printed by the binary, or listed in `check`'s notes).
    pub fn warn(&self, w: String) {
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    }
    /// Takes the queued messages (an unreadable cache rebuilt, an index file skipped, a lease not
    /// written).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records index files (by name) and their entries.
    pub fn ingest(&self, files: &[(String, IndexFile)]) -> Result<()> {
        let mut taken = self.taken()?;
        for (name, f) in files {
            taken.add(name.clone(), f)?;
        }
        self.record(taken)
    }

    /// Where temporary files go (the sorter's runs, prune's sets, check's copy of the index):
    /// beside the database, on a disk meant for repository data rather than a small /tmp.
    pub fn scratch(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Writes the entries in key order, committing every `INGEST_SLICE` of them, then the
    /// files' names and packs. A write transaction keeps every page it touches in memory, so
    /// slices bound memory; sorted, consecutive entries share leaves and each leaf is written
    /// about once. A name is recorded only after all entries: after a crash in between, the
    /// file is simply taken in again (inserts are idempotent).
    fn record(&self, taken: Taken) -> Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        // entries whose names were never recorded: a later sync would not drop them once
        // their file is gone (the same reason the open clears a cache marked recording)
        self.clear_if_torn_locked()?;
        let recorded = self.record_locked(taken);
        if recorded.is_err() {
            self.torn.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        recorded
    }

    /// [`Self::clear_if_torn_locked`], taking `writing` for it.
    fn clear_if_torn(&self) -> Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.clear_if_torn_locked()
    }

    fn record_locked(&self, taken: Taken) -> Result<()> {
        if !taken.files.is_empty() {
            self.set_meta_lazily(RECORDING, 1)?;
        }
        // a run written here is named in the commit that records the files' names: one
        // commit (and fsync) fewer for a fresh pod, and the two cannot part in a crash
        let mut run = None;
        match self.record_into(taken, &mut run) {
            Ok(()) => {
                if let Some((_, r)) = run {
                    *self.run.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
                Ok(())
            }
            Err(e) => {
                // never named: removed now, or it would lie beside the next build until an open
                if let Some((_, r)) = run {
                    let _ = std::fs::remove_file(r.path());
                }
                Err(e)
            }
        }
    }

    /// [`Self::record_locked`]'s work; a run it writes and leaves in `run` is named in its
    /// last commit.
    fn record_into(&self, mut taken: Taken, run: &mut Option<(u64, Arc<Run>)>) -> Result<()> {
        if let Some(s) = taken.scratch.take() {
            // the sorted parts' run is written first; the bucketed entries then go into the
            // table
            self.record_segments(s.generation, s.segments, run)?;
            self.record_run(s.builder, run)?;
        } else {
            let empty = self.is_empty()?;
            self.insert_sorted(taken.entries.into_sorted()?, empty)?;
        }
        if taken.files.is_empty() && run.is_none() {
            return Ok(());
        }
        #[cfg(test)]
        if tests::END_AFTER_ENTRIES.get() {
            return Err(self.err("ended after the entries (test)"));
        }
        let tx = self.begin_write()?;
        {
            let mut packs = tx.open_table(FILE_PACKS).map_err(|e| self.err(e))?;
            let mut names = tx.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
            let mut value = Vec::new();
            for (name, file_packs, n) in &taken.files {
                value.clear();
                for (p, len) in file_packs {
                    value.extend_from_slice(&p.0);
                    value.extend_from_slice(&len.to_le_bytes());
                }
                packs.insert(name.as_str(), &value[..]).map_err(|e| self.err(e))?;
                names.insert(name.as_str(), *n).map_err(|e| self.err(e))?;
            }
            let mut m = tx.open_table(META).map_err(|e| self.err(e))?;
            if let Some((generation, _)) = run {
                m.insert("run", *generation).map_err(|e| self.err(e))?;
            }
            m.insert(RECORDING, 0).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Whether the cache holds no blob entry (a fresh pod's, or one just cleared).
    fn is_empty(&self) -> Result<bool> {
        if self.current_run().is_some() {
            return Ok(false);
        }
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        match read.open_table(BLOBS) {
            Ok(t) => t.is_empty().map_err(|e| self.err(e)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(true),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Where the entries of index files about to be read go: into a sealed run when the cache
    /// is empty (written in one sequential pass instead of a B-tree insert each), else sorted
    /// into the table.
    fn taken(&self) -> Result<Taken> {
        let run = match self.is_empty()? {
            true => {
                let g = self.new_generation()?;
                Some((g, self.run_path(g)))
            }
            false => None,
        };
        Ok(Taken::new(self.scratch(), run))
    }

    /// A number for a new run file.
    fn new_generation(&self) -> Result<u64> {
        let mut g = [0u8; 8];
        crate::codec::random_bytes(&mut g).map_err(|e| self.err(e))?;
        Ok(u64::from_le_bytes(g).max(1))
    }

    /// Writes the run of sorted index parts (if any part went into it), to be named as
    /// [`Self::prepare_run`] says.
    fn record_segments(
        &self,
        generation: u64,
        segments: Segments,
        run: &mut Option<(u64, Arc<Run>)>,
    ) -> Result<()> {
        if segments.records() == 0 {
            return Ok(());
        }
        let path = segments.path().to_path_buf();
        segments.finish(!self.temporary).map_err(|e| cache_err(&path, e))?;
        self.prepare_run(generation, run)
    }

    /// Writes a sealed run, to be named as [`Self::prepare_run`] says.
    fn record_run(
        &self,
        builder: super::blobrun::Builder,
        run: &mut Option<(u64, Arc<Run>)>,
    ) -> Result<()> {
        if builder.is_empty() {
            return Ok(());
        }
        let generation = self.new_generation()?;
        let path = self.run_path(generation);
        builder.finish(&path, !self.temporary).map_err(|e| cache_err(&path, e))?;
        self.prepare_run(generation, run)
    }

    /// Run `generation` (written and durable): if the cache holds no entry and no other run
    /// is about to be named, it is left in `run` (its directory entry made durable) for the
    /// caller to name in the metadata. Otherwise (a run of sorted parts written just before,
    /// or another ingest of this process filled the cache) its entries go into the table and
    /// the file is removed.
    fn prepare_run(&self, generation: u64, run: &mut Option<(u64, Arc<Run>)>) -> Result<()> {
        let path = self.run_path(generation);
        let io = |e: std::io::Error| cache_err(&path, e);
        let opened = Arc::new(Run::open(&path).map_err(io)?);
        if run.is_some() || !self.is_empty()? {
            let entries = opened
                .iter()
                .map_err(io)?
                .map(|r| r.map(|(k, v)| (k.to_vec(), v)).map_err(|e| cache_err(opened.path(), e)));
            let done = self.insert_sorted(entries, false);
            let _ = std::fs::remove_file(&path);
            return done;
        }
        if !self.temporary {
            crate::fsutil::sync_dir(&path).map_err(io)?;
        }
        *run = Some((generation, opened));
        Ok(())
    }

    /// Inserts entries given in key order into the table, committing every `INGEST_SLICE`.
    /// Into an empty table the lookup of an identical entry is skipped: it only spares
    /// rewriting one, and the few repeats (across sorted runs) are harmless.
    fn insert_sorted(
        &self,
        entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
        empty: bool,
    ) -> Result<()> {
        let mut sorted = entries.peekable();
        let run = self.current_run();
        let mut cursor = None;
        while sorted.peek().is_some() {
            let tx = self.begin_write()?;
            {
                let mut blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
                for r in sorted.by_ref().take(INGEST_SLICE) {
                    let (k, v) = r?;
                    // an entry the cache has already (prune's rewritten index files repeat
                    // every entry that stays) costs a read, not a rewritten leaf
                    if !empty {
                        let same = blobs.get(&k[..]).map_err(|e| self.err(e))?;
                        if same.is_some_and(|s| s.value() == &v[..]) {
                            continue;
                        }
                        if let (Some(run), Ok(key)) = (&run, <&[u8; 64]>::try_from(&k[..])) {
                            let got = run.get_sorted(key, &mut cursor).map_err(|e| self.err(e))?;
                            if got.is_some_and(|g| g == v) {
                                continue;
                            }
                        }
                    }
                    blobs.insert(&k[..], &v[..]).map_err(|e| self.err(e))?;
                }
            }
            tx.commit().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Every copy of `id`, those in packs to avoid last, whole copies before delta copies
    /// (otherwise in key order): readers prefer whole copies, and a base's whole copy is the
    /// one whose chain is as short as writers counted.
    fn copies_in(
        &self,
        t: &impl ReadableTable<&'static [u8], &'static [u8]>,
        run: Option<&Run>,
        id: &Id,
        avoid: &HashSet<Id>,
    ) -> Result<Vec<BlobRef>> {
        let mut out = copies(t, run, id, &self.path)?;
        out.sort_by_key(|b| (avoid.contains(&b.pack), b.loc.base.is_some()));
        Ok(out)
    }

    /// A read view for many lookups in one read transaction (it sees the cache as it was when
    /// opened).
    pub fn reader(&self) -> Result<CacheReader> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let blobs = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        Ok(CacheReader { blobs, run: self.current_run(), path: self.path.clone() })
    }

    /// How many index files the cache has taken in.
    pub fn index_files(&self) -> Result<u64> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(INDEX_FILES).map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }

    /// Every pack the index files list, with its length in bytes, in id order.
    pub fn packs(&self) -> Result<Vec<(Id, u64)>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(FILE_PACKS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = r.map_err(|e| self.err(e))?;
            for rec in v.value().chunks_exact(PACK_RECORD) {
                let (id, len) = rec.split_at(32);
                if let (Ok(id), Ok(len)) = (<[u8; 32]>::try_from(id), <[u8; 8]>::try_from(len)) {
                    out.push((Id(id), u64::from_le_bytes(len)));
                }
            }
        }
        // a pack listed by several files (a repack's and a sweep's) once
        out.sort_unstable_by_key(|(p, _)| p.0);
        out.dedup_by_key(|(p, _)| p.0);
        Ok(out)
    }

    /// The cached sealed bytes of these snapshot objects (`None` for no id, where not cached,
    /// or where the bytes no longer hash to the id).
    pub fn snapshot_objects(&self, ids: &[Option<Id>]) -> Result<Vec<Option<Vec<u8>>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match tx.open_table(SNAPSHOTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; ids.len()]),
            Err(e) => return Err(self.err(e)),
        };
        ids.iter()
            .map(|id| {
                let Some(id) = id else { return Ok(None) };
                let v = t.get(&id.0[..]).map_err(|e| self.err(e))?.map(|g| g.value().to_vec());
                Ok(v.filter(|b| Id::of_bytes(b) == *id))
            })
            .collect()
    }

    /// For each sketch, the stored chunk that shares the most of its super-features with it
    /// (the newest such chunk for each: the newer generation's where it has one; `None` for
    /// no sketch or no match).
    pub fn similar(&self, sketches: &[Option<Sketch>]) -> Result<Vec<Option<Id>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let open = |def| match tx.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.err(e)),
        };
        let tables: Vec<_> =
            [open(SKETCHES)?, open(OLDER_SKETCHES)?].into_iter().flatten().collect();
        if tables.is_empty() {
            return Ok(vec![None; sketches.len()]);
        }
        let mut out = Vec::with_capacity(sketches.len());
        for s in sketches {
            let mut votes: Vec<(Id, usize)> = Vec::new();
            for (k, f) in s.iter().flatten().enumerate() {
                let mut hit = None;
                for t in &tables {
                    hit = t.get(sketch_key(*f, k)).map_err(|e| self.err(e))?;
                    if hit.is_some() {
                        break;
                    }
                }
                let Some(v) = hit else { continue };
                let Ok(id) = <[u8; 32]>::try_from(v.value()).map(Id) else { continue };
                match votes.iter_mut().find(|(i, _)| *i == id) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((id, 1)),
                }
            }
            // most votes; among equals the first super-feature's
            let best = votes.iter().rev().max_by_key(|(_, n)| *n).map(|(id, _)| *id);
            out.push(best);
        }
        Ok(out)
    }

    /// Records the sketches of chunks just stored ([`IndexCache::similar`] finds them).
    pub fn add_sketches(&self, sketches: &[(Id, Sketch)]) -> Result<()> {
        self.add_sketches_within(sketches, SKETCH_GENERATION)
    }

    /// [`IndexCache::add_sketches`] with generations of at most `max` entries: of more
    /// sketches than that, the last ones.
    fn add_sketches_within(&self, sketches: &[(Id, Sketch)], max: u64) -> Result<()> {
        let n = crate::codec::sketch::SUPER_FEATURES;
        let sketches = &sketches[sketches.len().saturating_sub(max as usize / n)..];
        if sketches.is_empty() {
            return Ok(());
        }
        let tx = self.begin_write()?;
        {
            let held = tx.open_table(SKETCHES).map_err(|e| self.err(e))?.len();
            let full = held.map_err(|e| self.err(e))? + (sketches.len() * n) as u64 > max;
            if full {
                tx.delete_table(OLDER_SKETCHES).map_err(|e| self.err(e))?;
                tx.rename_table(SKETCHES, OLDER_SKETCHES).map_err(|e| self.err(e))?;
            }
            let mut t = tx.open_table(SKETCHES).map_err(|e| self.err(e))?;
            for (id, s) in sketches {
                for (k, f) in s.iter().enumerate() {
                    t.insert(sketch_key(*f, k), &id.0[..]).map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Adds a snapshot object this process has just stored.
    pub fn add_snapshot_object(&self, id: Id, bytes: Vec<u8>) -> Result<()> {
        let tx = self.begin_write()?;
        {
            let mut t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            t.insert(&id.0[..], bytes.as_slice()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Adds snapshot objects fetched from storage and drops those no longer listed there
    /// (`listed`: every snapshot id the listing found).
    pub fn keep_snapshot_objects(&self, add: &[(Id, Vec<u8>)], listed: &HashSet<Id>) -> Result<()> {
        // most listings change nothing: skip the write transaction (and its fsync) then
        if add.is_empty() {
            let tx = self.db.begin_read().map_err(|e| self.err(e))?;
            match tx.open_table(SNAPSHOTS) {
                Ok(t) if t.len().map_err(|e| self.err(e))? as usize <= listed.len() => {
                    return Ok(());
                }
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(self.err(e)),
                Ok(_) => {}
            }
        }
        let tx = self.begin_write()?;
        {
            let mut t = tx.open_table(SNAPSHOTS).map_err(|e| self.err(e))?;
            for (id, bytes) in add {
                t.insert(&id.0[..], bytes.as_slice()).map_err(|e| self.err(e))?;
            }
            let mut gone = Vec::new();
            for r in t.iter().map_err(|e| self.err(e))? {
                let (k, _) = r.map_err(|e| self.err(e))?;
                if let Ok(id) = <[u8; 32]>::try_from(k.value())
                    && !listed.contains(&Id(id))
                {
                    gone.push(id);
                }
            }
            for id in gone {
                t.remove(&id[..]).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The snapshot bundles this cache has read.
    pub fn bundles_read(&self) -> Result<HashSet<Id>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match tx.open_table(BUNDLES_READ) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashSet::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = HashSet::new();
        for r in t.iter().map_err(|e| self.err(e))? {
            let (k, _) = r.map_err(|e| self.err(e))?;
            if let Ok(id) = <[u8; 32]>::try_from(k.value()) {
                out.insert(Id(id));
            }
        }
        Ok(out)
    }

    /// Records the bundles read (`read`), forgetting those no longer listed (`listed`).
    pub fn note_bundles_read(&self, read: &[Id], listed: &HashSet<Id>) -> Result<()> {
        // most listings read none and find every noted one still listed: no write (and fsync)
        if read.is_empty() && self.bundles_read()?.iter().all(|b| listed.contains(b)) {
            return Ok(());
        }
        let tx = self.begin_write()?;
        {
            let mut t = tx.open_table(BUNDLES_READ).map_err(|e| self.err(e))?;
            for id in read {
                t.insert(&id.0[..], ()).map_err(|e| self.err(e))?;
            }
            t.retain(|k, _| <[u8; 32]>::try_from(k).is_ok_and(|id| listed.contains(&Id(id))))
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every known copy of a blob, those in packs to avoid last.
    pub fn locations(&self, id: &Id) -> Result<Vec<BlobRef>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        let avoid = self.avoid.read().unwrap_or_else(|p| p.into_inner()).clone();
        self.copies_in(&t, self.current_run().as_deref(), id, &avoid)
    }

    /// Looks up many ids in one read transaction: for each, a copy outside the packs to
    /// avoid if there is one, else any copy.
    pub fn lookup_many(&self, ids: &[Id]) -> Result<Vec<Option<BlobRef>>> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
        let avoid = self.avoid.read().unwrap_or_else(|p| p.into_inner()).clone();
        let run = self.current_run();
        ids.iter()
            .map(|id| Ok(self.copies_in(&t, run.as_deref(), id, &avoid)?.first().copied()))
            .collect()
    }

    /// One copy of `id`: outside the packs to avoid if there is one; `None` when no index file
    /// lists it.
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobRef>> {
        Ok(self.lookup_many(std::slice::from_ref(id))?.pop().flatten())
    }

    /// Calls `f` once per distinct blob id with its first copy (ids in order).
    fn for_each_blob(&self, mut f: impl FnMut(&BlobRef)) -> Result<()> {
        let reader = self.reader()?;
        let mut last: Option<Id> = None;
        for r in reader.iter()? {
            let (id, b) = r?;
            if last != Some(id) {
                last = Some(id);
                f(&b);
            }
        }
        Ok(())
    }

    /// Calls `f` with (chunk id, base id) of every copy stored as a delta.
    pub fn for_each_delta(&self, mut f: impl FnMut(Id, Id) -> Result<()>) -> Result<()> {
        for r in self.reader()?.iter()? {
            let (id, b) = r?;
            if let Some(base) = b.loc.base {
                f(id, base)?;
            }
        }
        Ok(())
    }

    /// (distinct blobs, packs, pack bytes, index files) known to the cache.
    pub fn counts(&self) -> Result<(u64, u64, u64, u64)> {
        let mut blobs = 0u64;
        self.for_each_blob(|_| blobs += 1)?;
        let packs = self.packs()?;
        let bytes = packs.iter().map(|(_, len)| len).sum();
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let files =
            tx.open_table(INDEX_FILES).map_err(|e| self.err(e))?.len().map_err(|e| self.err(e))?;
        Ok((blobs, packs.len() as u64, bytes, files))
    }

    /// Sum of `raw_len` over all distinct data blobs: the unique content stored.
    pub fn raw_bytes(&self) -> Result<u64> {
        let mut sum = 0u64;
        self.for_each_blob(|b| {
            if b.loc.blob_type == BlobType::Data {
                sum += b.loc.raw_len as u64;
            }
        })?;
        Ok(sum)
    }
}

/// Every copy of `id` in key order (by pack id): those in the run and those in the table (a
/// copy in both counts once).
fn copies(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    run: Option<&Run>,
    id: &Id,
    path: &Path,
) -> Result<Vec<BlobRef>> {
    let lo = blob_key(id, &Id([0; 32]));
    let hi = blob_key(id, &Id([0xff; 32]));
    let mut out = Vec::new();
    for r in t.range(&lo[..]..=&hi[..]).map_err(|e| cache_err(path, e))? {
        let (k, v) = r.map_err(|e| cache_err(path, e))?;
        if let Some((_, b)) = decode_ref(k.value(), v.value()) {
            out.push(b);
        }
    }
    if let Some(run) = run {
        for (k, v) in run.copies(&id.0).map_err(|e| cache_err(path, e))? {
            if let Some((_, b)) = decode_ref(&k, &v) {
                out.push(b);
            }
        }
        out.sort_by_key(|b| b.pack);
        out.dedup_by_key(|b| b.pack);
    }
    Ok(out)
}

/// Lookups in one read transaction: cheap enough to call once per chunk of a large
/// repository, where a transaction per lookup would not be.
pub struct CacheReader {
    blobs: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    run: Option<Arc<Run>>,
    path: PathBuf,
}

impl CacheReader {
    /// Every copy of `id`, in pack-id order.
    pub fn copies(&self, id: &Id) -> Result<Vec<BlobRef>> {
        copies(&self.blobs, self.run.as_deref(), id, &self.path)
    }

    /// Every copy in key order (id, then pack): the run's and the table's, merged.
    pub fn iter(&self) -> Result<impl Iterator<Item = Result<(Id, BlobRef)>> + '_> {
        let path = &self.path;
        let table =
            self.blobs.iter().map_err(|e| cache_err(path, e))?.filter_map(move |r| match r {
                Ok((k, v)) => decode_ref(k.value(), v.value()).map(Ok),
                Err(e) => Some(Err(cache_err(path, e))),
            });
        let run: Box<dyn Iterator<Item = Result<(Id, BlobRef)>>> = match &self.run {
            None => Box::new(std::iter::empty()),
            Some(r) => {
                Box::new(r.iter().map_err(|e| cache_err(path, e))?.filter_map(move |e| match e {
                    Ok((k, v)) => decode_ref(&k, &v).map(Ok),
                    Err(e) => Some(Err(cache_err(path, e))),
                }))
            }
        };
        Ok(Merged { a: table.peekable(), b: run.peekable() })
    }

    /// The copy of `id` in `pack`, if the cache knows one.
    pub fn copy_in(&self, id: &Id, pack: &Id) -> Result<Option<BlobLocation>> {
        let k = blob_key(id, pack);
        let v = self.blobs.get(&k[..]).map_err(|e| cache_err(&self.path, e))?;
        if let Some((_, b)) = v.and_then(|v| decode_ref(&k, v.value())) {
            return Ok(Some(b.loc));
        }
        Ok(self.copies(id)?.into_iter().find(|b| b.pack == *pack).map(|b| b.loc))
    }
}

/// Two iterators of copies in key order, merged in key order; a copy in both comes once.
struct Merged<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for Merged<A, B>
where
    A: Iterator<Item = Result<(Id, BlobRef)>>,
    B: Iterator<Item = Result<(Id, BlobRef)>>,
{
    type Item = Result<(Id, BlobRef)>;
    fn next(&mut self) -> Option<Self::Item> {
        let key = |x: &Result<(Id, BlobRef)>| x.as_ref().ok().map(|(id, b)| (*id, b.pack));
        let order = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            // an error sorts first, so it is reported at once
            (Some(x), Some(y)) => key(x).cmp(&key(y)),
        };
        match order {
            std::cmp::Ordering::Less => self.a.next(),
            std::cmp::Ordering::Greater => self.b.next(),
            std::cmp::Ordering::Equal => {
                self.b.next();
                self.a.next()
            }
        }
    }
}

impl Drop for IndexCache {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
            if let Some(run) = self.current_run() {
                let _ = std::fs::remove_file(run.path());
            }
        }
    }
}

/// A super-feature's key in [`SKETCHES`]: its place `k` in the sketch in the low three bits.
fn sketch_key(feature: u64, k: usize) -> u64 {
    const _: () = assert!(crate::codec::sketch::SUPER_FEATURES <= 8);
    (feature & !7) | k as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexPack;

    fn loc(offset: u32, base: Option<Id>) -> BlobLocation {
        BlobLocation {
            blob_type: BlobType::Data,
            flags: if base.is_some() { 2 } else { 1 },
            offset,
            stored_len: 100,
            raw_len: 1000 + offset,
            base,
        }
    }

    fn file(pack: u8, ids: &[u8]) -> IndexFile {
        IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack {
                pack: Id([pack; 32]),
                pack_len: 1 << 20,
                blobs: ids
                    .iter()
                    .map(|i| {
                        (Id([*i; 32]), loc(*i as u32 * 100, (*i % 5 == 0).then_some(Id([1; 32]))))
                    })
                    .collect(),
            }],
        }
    }

    thread_local! {
        /// Makes [`IndexCache::record`] stop after the entries, before the names (a kill
        /// there), on this test's thread only.
        pub(super) static END_AFTER_ENTRIES: std::cell::Cell<bool> =
            const { std::cell::Cell::new(false) };
    }

    #[test]
    fn sketches_find_the_chunk_sharing_most_features_and_the_table_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let c = IndexCache::open(dir.path()).unwrap();
        let n = crate::codec::sketch::SUPER_FEATURES;
        let sk = |base: u64| -> Sketch { std::array::from_fn(|k| base + 8 * k as u64) };
        assert_eq!(c.similar(&[Some(sk(0))]).unwrap(), vec![None], "no table yet");
        let (a, b) = (Id([1; 32]), Id([2; 32]));
        c.add_sketches(&[(a, sk(1 << 20)), (b, sk(2 << 20))]).unwrap();
        // a chunk sharing one feature with a and two with b: b has the most votes
        let mut q = sk(3 << 20);
        q[0] = sk(1 << 20)[0];
        q[1] = sk(2 << 20)[1];
        q[2] = sk(2 << 20)[2];
        // a feature at another place in the sketch does not count
        q[3] = sk(1 << 20)[4];
        assert_eq!(
            c.similar(&[Some(q), None, Some(sk(4 << 20))]).unwrap(),
            vec![Some(b), None, None]
        );
        // a generation that would pass its bound becomes the older one: both are found, the
        // newer first where they share a feature
        let (d, e) = (Id([4; 32]), Id([5; 32]));
        let max = 3 * n as u64 - 1;
        let mut r = sk(5 << 20);
        r[0] = sk(2 << 20)[0];
        c.add_sketches_within(&[(d, r)], max).unwrap();
        let count = |def| c.db.begin_read().unwrap().open_table(def).unwrap().len().unwrap();
        assert_eq!((count(SKETCHES), count(OLDER_SKETCHES)), (n as u64, 2 * n as u64));
        let found = c.similar(&[Some(q), Some(sk(5 << 20)), Some(sk(2 << 20))]).unwrap();
        assert_eq!(found, vec![Some(b), Some(d), Some(b)]);
        let mut only_first = sk(9 << 20);
        only_first[0] = sk(2 << 20)[0];
        assert_eq!(c.similar(&[Some(only_first)]).unwrap(), vec![Some(d)], "newer wins");
        // the next rollover drops the oldest generation only
        c.add_sketches_within(&[(e, sk(6 << 20))], max).unwrap();
        c.add_sketches_within(&[(a, sk(7 << 20))], max).unwrap();
        let found = c.similar(&[Some(q), Some(sk(5 << 20)), Some(sk(6 << 20)), Some(sk(7 << 20))]);
        assert_eq!(found.unwrap(), vec![None, Some(d), Some(e), Some(a)]);
        assert_eq!((count(SKETCHES), count(OLDER_SKETCHES)), (n as u64, 2 * n as u64));
        // more sketches at once than a generation holds: the last ones
        c.add_sketches_within(&[(a, sk(8 << 20)), (b, sk(10 << 20))], n as u64).unwrap();
        let found = c.similar(&[Some(sk(8 << 20)), Some(sk(10 << 20))]);
        assert_eq!(found.unwrap(), vec![None, Some(b)]);
        assert_eq!(count(SKETCHES), n as u64);
    }

    /// The packs index files list are kept per file and come back once each, in id order,
    /// from a fresh build (a run) and from later files (the table) alike, and again after a
    /// reopen.
    #[test]
    fn packs_listed_by_several_files_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = IndexCache::open(dir.path()).unwrap();
            c.ingest(&[("a".into(), file(7, &[1, 2])), ("b".into(), file(3, &[4]))]).unwrap();
            // a later file naming pack 7 again (a sweep's file for a resurrected pack)
            c.ingest(&[("c".into(), file(7, &[1])), ("d".into(), file(9, &[6]))]).unwrap();
        }
        let c = IndexCache::open(dir.path()).unwrap();
        let mib = 1u64 << 20;
        let want = vec![(Id([3; 32]), mib), (Id([7; 32]), mib), (Id([9; 32]), mib)];
        assert_eq!(c.packs().unwrap(), want);
        assert_eq!(c.counts().unwrap(), (4, 3, 3 * mib, 4));
    }

    /// A sorted part's entries go into the run as stored: the record made from an entry's
    /// bytes is the one made from its decoded location.
    #[test]
    fn an_entry_as_stored_makes_the_record_of_its_location() {
        for base in [None, Some(Id([4; 32]))] {
            let l = loc(77, base);
            let bytes = crate::format::index::encode_entry(&Id([9; 32]), &l);
            let (id, rec) = entry_record(&bytes).unwrap();
            assert_eq!((id, &*rec), (&[9; 32], &*encode_loc(&l)));
        }
        assert!(entry_record(&[0; 47]).is_none());
        assert!(entry_record(&[0; 64]).is_none());
    }

    /// Found in an audit: a process that ended between writing an index file's entries and
    /// recording its name left entries no later sync would drop when the file is deleted (a
    /// prune sweeping its pack): a backup could deduplicate against the deleted pack.
    #[test]
    fn entries_whose_names_were_never_recorded_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = IndexCache::open(dir.path()).unwrap();
            // into an empty cache the entries go into a run, named in the commit that names
            // the files: an end in between leaves neither
            END_AFTER_ENTRIES.set(true);
            let r = c.ingest(&[("a".into(), file(10, &[1, 2]))]);
            END_AFTER_ENTRIES.set(false);
            assert!(r.is_err());
            assert!(c.lookup(&Id([1; 32])).unwrap().is_none(), "no entry without its name");
            let runs = || {
                std::fs::read_dir(dir.path())
                    .unwrap()
                    .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "run"))
                    .count()
            };
            assert_eq!(runs(), 0, "the run never named was removed");
            c.ingest(&[("z".into(), file(9, &[9]))]).unwrap();
            // into a filled cache they go into the table, committed before the names
            END_AFTER_ENTRIES.set(true);
            let r = c.ingest(&[("a".into(), file(10, &[1, 2]))]);
            END_AFTER_ENTRIES.set(false);
            assert!(r.is_err());
            assert!(c.lookup(&Id([1; 32])).unwrap().is_some(), "the entries are there");
            assert!(!c.ingested().unwrap().contains("a"), "but not the file's name");
        }
        let c = IndexCache::open(dir.path()).unwrap();
        assert!(c.lookup(&Id([1; 32])).unwrap().is_none(), "dropped on open");
        assert!(c.take_warnings().iter().any(|w| w.contains("rebuilt")));
        c.ingest(&[("b".into(), file(11, &[3]))]).unwrap();
        drop(c);
        let c = IndexCache::open(dir.path()).unwrap();
        assert!(c.lookup(&Id([3; 32])).unwrap().is_some(), "a finished record is kept");
        assert!(c.take_warnings().is_empty());
    }

    /// Found in a review: after a recording failed part way in a process that went on, the
    /// next recording marked the cache whole again, and the failed file's entries stayed
    /// (without its name) past any reopen.
    #[test]
    fn a_recording_that_failed_part_way_is_not_marked_whole_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = IndexCache::open(dir.path()).unwrap();
            END_AFTER_ENTRIES.set(true);
            assert!(c.ingest(&[("a".into(), file(10, &[1, 2]))]).is_err());
            END_AFTER_ENTRIES.set(false);
            // the same process records another file
            c.ingest(&[("b".into(), file(11, &[3]))]).unwrap();
            assert!(c.lookup(&Id([3; 32])).unwrap().is_some());
            assert!(c.lookup(&Id([1; 32])).unwrap().is_none(), "the torn entries are gone");
        }
        let c = IndexCache::open(dir.path()).unwrap();
        assert!(c.lookup(&Id([1; 32])).unwrap().is_none(), "and stay gone after a reopen");
        assert_eq!(c.ingested().unwrap(), HashSet::from(["b".to_string()]));
    }

    #[test]
    fn a_cache_built_from_scratch_reads_its_run_and_later_entries_together() {
        let dir = tempfile::tempdir().unwrap();
        let runs = |d: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "run"))
                .collect();
            v.sort();
            v
        };
        {
            let c = IndexCache::open(dir.path()).unwrap();
            // nothing to take in (an empty repository): no run
            c.ingest(&[("empty".into(), IndexFile::default())]).unwrap();
            assert!(runs(dir.path()).is_empty());
            // a fresh cache: these entries go to a run
            c.ingest(&[("a".into(), file(10, &[1, 2, 3, 4, 5])), ("b".into(), file(11, &[3]))])
                .unwrap();
            assert_eq!(runs(dir.path()).len(), 1);
            // later entries go to the table: a new id, a copy of a known id in another pack,
            // and a repeat of an entry the run holds
            c.ingest(&[("c".into(), file(12, &[6, 2])), ("d".into(), file(10, &[4]))]).unwrap();
            assert_eq!(runs(dir.path()).len(), 1, "no second run");
            let copies: Vec<Id> =
                c.locations(&Id([3; 32])).unwrap().iter().map(|b| b.pack).collect();
            assert_eq!(copies, vec![Id([10; 32]), Id([11; 32])], "both copies of 3, from the run");
            let copies: Vec<Id> =
                c.locations(&Id([2; 32])).unwrap().iter().map(|b| b.pack).collect();
            assert_eq!(
                copies,
                vec![Id([10; 32]), Id([12; 32])],
                "one from the run, one from the table"
            );
            assert_eq!(c.locations(&Id([4; 32])).unwrap().len(), 1, "a repeated entry counts once");
            assert_eq!(c.lookup(&Id([6; 32])).unwrap().unwrap().loc, loc(600, None));
            assert_eq!(c.lookup(&Id([5; 32])).unwrap().unwrap().loc.base, Some(Id([1; 32])));
            assert!(c.lookup(&Id([7; 32])).unwrap().is_none());
            // iteration: every copy once, in key order
            let all: Vec<(Id, Id)> = c
                .reader()
                .unwrap()
                .iter()
                .unwrap()
                .map(|r| r.map(|(i, b)| (i, b.pack)).unwrap())
                .collect();
            let mut sorted = all.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(all, sorted);
            assert_eq!(all.len(), 8);
            assert_eq!(c.counts().unwrap().0, 6, "distinct blobs 1-6");
            let mut deltas = vec![];
            c.for_each_delta(|id, base| {
                deltas.push((id, base));
                Ok(())
            })
            .unwrap();
            assert_eq!(deltas, vec![(Id([5; 32]), Id([1; 32]))]);
            let r = c.reader().unwrap();
            assert!(r.copy_in(&Id([3; 32]), &Id([11; 32])).unwrap().is_some());
            assert!(r.copy_in(&Id([2; 32]), &Id([12; 32])).unwrap().is_some());
            assert!(r.copy_in(&Id([2; 32]), &Id([11; 32])).unwrap().is_none());
        }
        // reopened: the run is found again
        {
            let c = IndexCache::open(dir.path()).unwrap();
            assert_eq!(c.locations(&Id([3; 32])).unwrap().len(), 2);
            assert_eq!(c.index_files().unwrap(), 5);
            // a stray run (a process killed before recording it) is removed at the next open
            std::fs::write(dir.path().join("index.redb.00000000000000aa.run"), b"x").unwrap();
        }
        let c = IndexCache::open(dir.path()).unwrap();
        assert_eq!(runs(dir.path()).len(), 1);
        // clearing removes the run
        c.clear().unwrap();
        assert!(runs(dir.path()).is_empty());
        assert!(c.lookup(&Id([3; 32])).unwrap().is_none());
        drop(c);
        // a run named by the cache but lost: the cache is rebuilt, with a warning
        let c = IndexCache::open(dir.path()).unwrap();
        c.ingest(&[("a".into(), file(10, &[1, 2]))]).unwrap();
        drop(c);
        for r in runs(dir.path()) {
            std::fs::remove_file(r).unwrap();
        }
        let c = IndexCache::open(dir.path()).unwrap();
        assert!(c.take_warnings().iter().any(|w| w.contains("rebuilt")));
        assert!(c.lookup(&Id([1; 32])).unwrap().is_none());
        assert_eq!(c.index_files().unwrap(), 0, "taken in again by the next sync");
    }
}
