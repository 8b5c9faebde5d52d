//! The stream writer: the backup pipeline.
//!
//! ```text
//! reader thread:  read → FastCDC → batches ──(bounded channel, 1 batch)────┐
//! pipeline thread: hash batch (rayon) → dedup lookup (cache + this session)│
//!                  → compress new chunks (rayon) → seal into pack ─────────┘
//!                  ──(bounded channel, 2 packs)──> uploader task: put packs (2 in flight),
//!                  write an index file every INDEX_FILE_PACKS packs or INDEX_FILE_BLOBS
//!                  blobs, and at the end
//! then: commit gate (command mode: the child's exit status) → snapshot file, written last.
//! ```
//! Memory is bounded by the channel capacities, the pack target size, one content list
//! (`LIST_MAX_ENTRIES` entries) and the ids of chunks written but not yet indexed (the
//! uploader forgets them once their index file is in the cache), whatever the stream size.

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tokio::sync::mpsc;

use super::delta::{Base, Delta, delta, delta_trying, keep};
use super::packer::{FinishedPack, PackBuilder};
use super::sorted::Sorter;
use super::{BlobRef, RepoError, Repository, Result, paths};
use crate::codec::chunker::ChunkerParams;
use crate::codec::compress::compress;
use crate::codec::sketch::Sketch;
use crate::format::Id;
use crate::format::envelope::{MAGIC_INDEX, MAGIC_INDEX_SORTED, MAGIC_SNAPSHOT, TAG_LEN};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::{BlobType, FLAG_ZSTD, MAX_DELTA_DEPTH};
use crate::format::snapshot::{Snapshot, SnapshotKind};
use crate::format::stream::{LIST_MAX_ENTRIES, encode_list};

const BATCH_BYTES: usize = 4 << 20;
/// An index file names at most this many packs...
pub const INDEX_FILE_PACKS: usize = 64;
/// ...and is closed once it holds this many entries: with small chunks, 64 packs hold
/// millions of them, and a backup keeps the pending ids in memory until their index file is
/// written (and every reader decodes an index file whole).
pub const INDEX_FILE_BLOBS: usize = 65536;

/// Packs on their way into index files of bounded size ([`INDEX_FILE_PACKS`],
/// [`INDEX_FILE_BLOBS`]): every writer of index files (backups, prune, repair) batches
/// through this.
#[derive(Default)]
pub struct IndexBatch {
    packs: Vec<IndexPack>,
    blobs: usize,
    /// Index files written so far.
    pub files_written: u64,
}

impl IndexBatch {
    /// True when the packs held should go into an index file now.
    pub fn is_full(&self) -> bool {
        self.packs.len() >= INDEX_FILE_PACKS || self.blobs >= INDEX_FILE_BLOBS
    }

    /// Adds a pack; writes nothing (see [`IndexBatch::push`]).
    pub fn add(&mut self, pack: IndexPack) {
        self.blobs += pack.blobs.len();
        self.packs.push(pack);
    }

    /// Adds a pack, and writes the index file when that fills it.
    pub async fn push(&mut self, repo: &Repository, pack: IndexPack) -> Result<()> {
        self.add(pack);
        if self.is_full() {
            self.flush(repo).await?;
        }
        Ok(())
    }

    /// The ids of the blobs in the packs held.
    pub fn blob_ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.packs.iter().flat_map(|p| p.blobs.iter().map(|b| b.0))
    }

    /// Writes the packs held (if any) as one index file.
    pub async fn flush(&mut self, repo: &Repository) -> Result<()> {
        if self.packs.is_empty() {
            return Ok(());
        }
        let packs = std::mem::take(&mut self.packs);
        self.blobs = 0;
        write_index(repo, packs, vec![]).await?;
        self.files_written += 1;
        Ok(())
    }
}
/// Writes a sorted index (`format-spec/index.md`, "Sorted index parts"): every entry of the
/// packs given, in (chunk id, pack) order, cut into parts of about `part_entries` entries
/// that carry the same pack table. The entries are sorted on disk ([`Sorter`]), so memory
/// holds the pack table and one part per set. More than `set_packs` packs make several sets,
/// each with the entries of its share of the packs: a part repeats its set's table, which
/// must stay small beside its entries (and within the format's bound on a table).
pub struct SortedIndexWriter {
    packs: std::collections::BTreeMap<Id, u64>,
    entries: Sorter,
    part_entries: usize,
    set_packs: usize,
}

/// The most packs one set of a sorted index names (a 655 KB table in each part).
pub const SORTED_SET_PACKS: usize = 1 << 14;

/// One set being written: its id, its share of the pack table, the part being filled and
/// the chunk id last put in it.
struct SetWriter<'a> {
    id: Id,
    table: &'a [(Id, u64)],
    part: Vec<(u32, Id, crate::format::index::BlobLocation)>,
    last: Option<Id>,
}

impl SortedIndexWriter {
    /// A writer whose temporary files go to `scratch`.
    pub fn new(scratch: &std::path::Path, part_entries: usize, set_packs: usize) -> Self {
        SortedIndexWriter {
            packs: Default::default(),
            entries: Sorter::new(scratch),
            part_entries: part_entries.clamp(1, crate::format::index::MAX_PART_ENTRIES),
            set_packs: set_packs.clamp(1, SORTED_SET_PACKS),
        }
    }

    /// Adds a pack's entries (a pack given twice lists each entry once).
    pub fn add(&mut self, p: &IndexPack) -> Result<()> {
        self.packs.insert(p.pack, p.pack_len);
        for (id, l) in &p.blobs {
            let mut key = [0u8; 64];
            key[..32].copy_from_slice(&id.0);
            key[32..].copy_from_slice(&p.pack.0);
            self.entries.push(&key, &crate::format::index::encode_entry(id, l))?;
        }
        Ok(())
    }

    /// Writes the parts (none without entries); returns how many were written. A part ends
    /// between two chunk ids, unless it reached the most a part may hold.
    pub async fn write(self, repo: &Repository) -> Result<u64> {
        let table: Vec<(Id, u64)> = self.packs.into_iter().collect();
        let number: std::collections::HashMap<Id, usize> =
            table.iter().enumerate().map(|(i, (p, _))| (*p, i)).collect();
        let damaged = |what: &str| RepoError::Cache {
            path: "sorted index".into(),
            reason: format!("sorted entry damaged ({what})"),
        };
        let mut sets = Vec::new();
        for table in table.chunks(self.set_packs) {
            let mut id = [0u8; 32];
            crate::codec::random_bytes(&mut id).map_err(|e| RepoError::codec("index set id", e))?;
            sets.push(SetWriter { id: Id(id), table, part: Vec::new(), last: None });
        }
        let mut written = 0u64;
        let mut last_key: Option<Vec<u8>> = None;
        for r in self.entries.into_sorted()? {
            let (k, v) = r?;
            if last_key.as_ref().is_some_and(|l| *l == k) {
                continue; // the same entry from two files naming one pack
            }
            let (Some(chunk), Some(pack)) = (
                k.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(Id),
                k.get(32..).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(Id),
            ) else {
                return Err(damaged("key"));
            };
            let n = *number.get(&pack).ok_or_else(|| damaged("pack"))?;
            let (id, loc) = crate::format::index::decode_entry(&v, table[n].1)
                .map_err(|e| RepoError::format("sorted index entry", e))?;
            if id != chunk {
                return Err(damaged("id"));
            }
            let set = &mut sets[n / self.set_packs]; // n < table.len(): a set per set_packs
            let new_chunk = set.last != Some(id);
            if (set.part.len() >= self.part_entries && new_chunk)
                || set.part.len() >= crate::format::index::MAX_PART_ENTRIES
            {
                write_sorted_part(repo, &set.id, set.table, &std::mem::take(&mut set.part)).await?;
                written += 1;
            }
            set.part.push(((n % self.set_packs) as u32, id, loc));
            set.last = Some(id);
            last_key = Some(k);
        }
        for set in sets.iter().filter(|s| !s.part.is_empty()) {
            write_sorted_part(repo, &set.id, set.table, &set.part).await?;
            written += 1;
        }
        Ok(written)
    }
}

/// Writes one part of a sorted index. The part is not taken into this process's cache here:
/// the next sync takes it in (a prune's sweep, which then rebuilds the cache from scratch).
/// Until then the cache lacks only the entries of packs the prune repacked, whose chunks it
/// knows in the condemned packs they came from, which stay until that sweep.
async fn write_sorted_part(
    repo: &Repository,
    set: &Id,
    table: &[(Id, u64)],
    entries: &[(u32, Id, crate::format::index::BlobLocation)],
) -> Result<Id> {
    let body = crate::format::index::encode_sorted(set, table, entries);
    let bytes = repo.seal(MAGIC_INDEX_SORTED, &body)?;
    let id = Id::of_bytes(&bytes);
    repo.backend.put(&paths::index(&id), bytes).await?;
    Ok(id)
}

const UPLOADS_IN_FLIGHT: usize = 2;
/// Small files' chunks below this size are stored whole rather than as deltas against the
/// parent's version.
const MIN_HINTED_CHUNK: usize = 16 << 10;
/// New chunks are delta-encoded at most this many levels deep: against the chunk they
/// replaced when that is less deep, else against a level of its chain ([`Chain::base`]).
/// Readers follow up to [`MAX_DELTA_DEPTH`] levels, so this is the most the format allows.
/// Measured on twelve hours of the bench workload (benches/RESULTS.md, "Deeper chains"):
/// depth 4 grows the repository 12-21% less per hour than depth 2; once restores stopped
/// hashing and caching every level of a chain, both restore in the same time.
const WRITE_DEPTH: u32 = 4;

/// How a candidate base is stored (`Pipeline::chain`).
struct Chain {
    /// The deltas from the candidate down, each with its stored size (empty when the
    /// candidate is stored whole).
    levels: Vec<(Id, usize)>,
    /// The whole chunk the chain ends in, and its stored size.
    root: Id,
    whole: usize,
}

impl Chain {
    /// The base for a new chunk that replaced the candidate, and whether it is a restart
    /// against the whole chunk. A candidate less than [`WRITE_DEPTH`] deep is the base
    /// itself. A deeper one gives the chain's level below it whose delta, shared over the
    /// levels left below the limit, costs least: a delta against the level `k` deep is about
    /// the candidate's delta and every delta above level `k` (each hour's changes add up), and
    /// leaves `WRITE_DEPTH - k` versions before the next restart. The whole chunk (`k` = 0)
    /// is chosen while the chain is young; as restarts against it grow, levels in between
    /// take over, so chains branch from recent versions instead of carrying every change
    /// since the whole chunk (benches/RESULTS.md, "Long horizons").
    fn base(&self) -> (Id, bool) {
        let depth = self.levels.len();
        let Some(&(top, last)) = self.levels.first() else { return (self.root, false) };
        if depth < WRITE_DEPTH as usize {
            return (top, false);
        }
        // (base, estimated delta, levels left) for the base `k` deep, the least per level
        // left; levels[i] is depth - i deep
        let mut best: Option<(Id, usize, usize)> = None;
        for k in 0..WRITE_DEPTH as usize {
            let above: usize = self.levels[..depth - k].iter().map(|l| l.1).sum();
            let (cost, left) = (last + above, WRITE_DEPTH as usize - k);
            if best.is_none_or(|(_, c, l)| cost * l < c * left) {
                let base = if k == 0 { self.root } else { self.levels[depth - k].0 };
                best = Some((base, cost, left));
            }
        }
        let base = best.map_or(self.root, |b| b.0);
        (base, base == self.root)
    }
}

/// What describes a snapshot besides its content.
#[derive(Clone, Debug)]
pub struct SnapshotMeta {
    /// Name the snapshot is grouped by (see [`Snapshot::name`]).
    pub name: String,
    /// Host recorded in the snapshot.
    pub host: String,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// The command line in command mode, else empty.
    pub command: String,
    /// Snapshot time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
}

/// Totals of one backup, for its report (JSON field names are these).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BackupStats {
    /// Plaintext bytes of the input that went through the chunker.
    pub bytes_read: u64,
    /// Chunks of the input, stored or deduplicated.
    pub chunks: u64,
    /// Chunks not already stored (outside condemned packs), hence written now.
    pub new_chunks: u64,
    /// Plaintext bytes of those new chunks.
    pub new_bytes: u64,
    /// New chunks stored as deltas against the chunk they replaced.
    pub delta_chunks: u64,
    /// Bytes of the new chunks as stored (compressed or as deltas), before encryption.
    pub stored_bytes: u64,
    /// Pack files uploaded.
    pub packs_written: u64,
    /// Bytes uploaded: the pack files and the snapshot file (index files not counted).
    pub bytes_written: u64,
    /// Index files written for the new packs.
    pub index_files_written: u64,
}

/// Receives progress from long operations; the CLI renders it.
pub trait Progress: Send + Sync {
    /// Called as bytes of the stream are read (backup) or written (restore).
    fn bytes_done(&self, _n: u64) {}
}
/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

type Batch = std::io::Result<Vec<Vec<u8>>>;

/// A stream's chunks in batches of about `BATCH_BYTES` (the last one possibly empty).
struct Batches<'g, R: Read> {
    chunker: crate::codec::chunker::StreamChunker<'g, R>,
    done: bool,
}

impl<'g, R: Read> Batches<'g, R> {
    fn new(source: R, repo: &'g Repository, params: ChunkerParams) -> Self {
        Batches {
            chunker: crate::codec::chunker::StreamChunker::new(source, &repo.gear, params),
            done: false,
        }
    }
}

impl<R: Read> Iterator for Batches<'_, R> {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        if self.done {
            return None;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        loop {
            match self.chunker.next_chunk() {
                Ok(Some(c)) => {
                    bytes += c.len();
                    batch.push(c);
                    if bytes >= BATCH_BYTES {
                        return Some(Ok(batch));
                    }
                }
                Ok(None) => {
                    self.done = true;
                    return Some(Ok(batch));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The chunks of `source` in batches of about `BATCH_BYTES` (for callers that read streams on
/// threads of their own, such as the streams of a server snapshot).
pub fn chunk_batches<'a, R: Read + 'a>(
    source: R,
    repo: &'a Repository,
    params: ChunkerParams,
) -> impl Iterator<Item = std::io::Result<Vec<Vec<u8>>>> + 'a {
    Batches::new(source, repo, params)
}

/// What the readers of several interleaved streams send the pipeline
/// ([`ChunkSink::store_interleaved`]).
pub enum StreamMsg {
    /// The next batch of chunks of stream `.0`.
    Batch(usize, Vec<Vec<u8>>),
    /// Stream `.0` ended: its byte count, or why it failed.
    End(usize, Result<u64>),
}

/// Chunks `source` on a thread of its own, so reading overlaps hashing and compression.
fn spawn_reader<R: Read + Send + 'static>(
    repo: Arc<Repository>,
    source: R,
) -> crossbeam_channel::Receiver<Batch> {
    // one batch waits while the pipeline works on another and the reader fills a third: with
    // 1 MiB chunks a batch holds up to 8 MiB, and a second waiting one added 5-6 MB to an
    // hourly backup's peak RSS at the same speed (benches/RESULTS.md, "A megabyte per chunk")
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(1);
    std::thread::spawn(move || {
        for batch in Batches::new(source, &repo, repo.chunker) {
            if tx.send(batch).is_err() {
                return;
            }
        }
    });
    rx
}

/// Ids of blobs this backup stored that the index cache does not know yet. The pipeline adds
/// them; the uploader removes them once an index file naming them is in the cache.
type Pending = Arc<Mutex<HashSet<Id>>>;

/// Entries a content list holds at least before a content-defined boundary may end it.
const LIST_MIN_ENTRIES: usize = 256;

/// Whether a content list of `len` entries ends after the chunk `id`: at a chunk whose
/// (keyed, uniformly random) id ends in 10 zero bits, once the list holds
/// `LIST_MIN_ENTRIES`, so about every 1,300 chunks (1.3 GB of a dump with 1 MiB chunks);
/// always at `LIST_MAX_ENTRIES`. Boundaries depend only on the ids, so lists before and after
/// a change are the same lists as in the previous snapshot, and deduplicate. Measured on
/// hourly dumps (benches/RESULTS.md): lists of ~5,000 entries cost 0.6 MB more per hour than
/// lists of ~320 (fewer stay unchanged), while smaller lists multiply the list reads of prune,
/// check and restore (prune reads a shared list once).
fn list_ends_after(id: &Id, len: usize) -> bool {
    len >= LIST_MAX_ENTRIES || (len >= LIST_MIN_ENTRIES && id.0[31] == 0 && id.0[30] & 0x03 == 0)
}

fn pending_insert(p: &Pending, id: Id) -> bool {
    p.lock().unwrap_or_else(|e| e.into_inner()).insert(id)
}

struct Pipeline<'a> {
    repo: &'a Repository,
    /// The previous snapshot of the stream's name, for choosing delta bases.
    pred: Option<super::delta::Predecessor>,
    /// Reads delta bases (and caches pack ciphers).
    reader: super::PackCiphers,
    /// Packs a prune has condemned: their chunks do not count as stored.
    exclude: &'a HashSet<Id>,
    packer: Option<PackBuilder>,
    pack_tx: mpsc::Sender<FinishedPack>,
    pending: Pending,
    list: Vec<(Id, u32)>,
    lists: Vec<Id>,
    stats: BackupStats,
    /// The sketches of the chunks stored, for the cache once the snapshot is committed.
    sketched: std::collections::VecDeque<(Id, Sketch)>,
    /// Whether most deltas of the last batch with bases were tiny: the next batch's are then
    /// searched quickly first ([`delta_trying`]), which spares most of their cost where a
    /// dump changed in a few places per chunk, without trying twice where it changed
    /// throughout.
    quick_first: bool,
}

impl Pipeline<'_> {
    #[allow(clippy::too_many_arguments)] // one blob's fields, passed through to the packer
    fn add_blob(
        &mut self,
        t: BlobType,
        id: Id,
        flags: u8,
        raw_len: u32,
        base: Option<Id>,
        data: Vec<u8>,
    ) -> Result<()> {
        if self.packer.as_ref().is_some_and(|p| !p.fits(data.len())) {
            self.flush_pack()?;
        }
        let p = match &mut self.packer {
            Some(p) => p,
            None => self.packer.insert(PackBuilder::new(
                &self.repo.keys,
                self.repo.cipher,
                self.repo.config.pack_target,
            )?),
        };
        p.add(t, id, flags, raw_len, base, data)?;
        if p.is_full() {
            self.flush_pack()?;
        }
        Ok(())
    }

    fn flush_pack(&mut self) -> Result<()> {
        if let Some(p) = self.packer.take().filter(|p| !p.is_empty()) {
            let f = p.finish()?;
            // the uploader is gone only when it failed; its error is the one reported
            self.pack_tx.blocking_send(f).map_err(|_| RepoError::WorkerStopped("uploader"))?;
        }
        Ok(())
    }

    fn flush_list(&mut self) -> Result<()> {
        let bytes = encode_list(&self.list);
        self.list.clear();
        let id = self.repo.keys.chunk_id(&bytes);
        let known = self.repo.index.lookup(&id)?.filter(|r| !self.exclude.contains(&r.pack));
        if known.is_none() && pending_insert(&self.pending, id) {
            let raw = bytes.len() as u32;
            let (flags, data) = compress(self.repo.config.zstd_level, bytes);
            self.add_blob(BlobType::List, id, flags, raw, None, data)?;
        }
        self.lists.push(id);
        Ok(())
    }

    /// Stores chunks of a stream, appending them to the current content list. Lists end at
    /// content-defined boundaries (`list_ends_after`), so that a changed chunk rewrites one
    /// small list rather than a list of 16,384 entries.
    fn process(&mut self, batch: Vec<Vec<u8>>) -> Result<()> {
        for r in self.store(batch, None)? {
            self.list.push(r);
            if list_ends_after(&r.0, self.list.len()) {
                self.flush_list()?;
            }
        }
        Ok(())
    }

    /// Stores a whole stream, given in batches; returns its content lists.
    fn process_all(
        &mut self,
        batches: impl Iterator<Item = Batch>,
        progress: &dyn Progress,
    ) -> Result<Vec<Id>> {
        for batch in batches {
            let batch = batch.map_err(RepoError::Input)?;
            let n: usize = batch.iter().map(|c| c.len()).sum();
            self.process(batch)?;
            progress.bytes_done(n as u64);
        }
        self.take_lists()
    }

    /// Ends the current stream: writes its last content list and returns all of its lists.
    fn take_lists(&mut self) -> Result<Vec<Id>> {
        if !self.list.is_empty() {
            self.flush_list()?;
        }
        Ok(std::mem::take(&mut self.lists))
    }

    /// Hashes, deduplicates, compresses and packs chunks; returns (id, length) of each.
    /// `bases`, one per chunk, names the chunk each replaced (its delta base when new); without
    /// it bases come from the stream's predecessor.
    fn store(
        &mut self,
        batch: Vec<Vec<u8>>,
        bases: Option<&[Option<Id>]>,
    ) -> Result<Vec<(Id, u32)>> {
        let keys = &self.repo.keys;
        let ids: Vec<Id> = batch.par_iter().map(|c| keys.chunk_id(c)).collect();
        let known = self.repo.index.lookup_many(&ids)?;
        let mut fresh = Vec::new();
        let mut refs = Vec::with_capacity(ids.len());
        for (i, ((chunk, id), known)) in batch.into_iter().zip(ids).zip(known).enumerate() {
            let len = chunk.len() as u32;
            self.stats.bytes_read += len as u64;
            self.stats.chunks += 1;
            refs.push((id, len));
            let known = match known {
                Some(r) if self.usable(&r, 0)? => Some(r),
                _ => None,
            };
            let new = known.is_none() && pending_insert(&self.pending, id);
            let candidate = match bases {
                Some(b) => b.get(i).copied().flatten().filter(|_| new),
                None => self.pred.as_mut().and_then(|p| p.step(&id, len, !new)),
            };
            if new {
                fresh.push((id, chunk, candidate));
            }
        }
        let level = self.repo.config.zstd_level;
        let bases = self.fetch_bases(fresh.iter().filter_map(|f| f.2))?;
        let quick = self.quick_first;
        let firsts: Vec<Option<Delta>> = fresh
            .par_iter()
            .map(|(_, c, candidate)| {
                delta_trying(level, c, candidate.and_then(|b| bases.get(&b).cloned()), quick)
            })
            .collect();
        drop(bases);
        let made = firsts.iter().zip(&fresh).filter_map(|(d, f)| Some(d.as_ref()?.tiny(f.1.len())));
        let (tiny, all) = made.fold((0, 0), |(t, n), tiny| (t + usize::from(tiny), n + 1));
        if all > 0 {
            self.quick_first = 2 * tiny >= all;
        }
        // content that moved: unless the candidate gave a tiny delta, the stored chunk whose
        // sketch this one's most resembles, when it is not the candidate already
        let sketches: Vec<Option<Sketch>> = fresh
            .par_iter()
            .zip(&firsts)
            .map(|((_, c, _), d)| {
                let hinted =
                    c.len() >= MIN_HINTED_CHUNK && !d.as_ref().is_some_and(|d| d.tiny(c.len()));
                hinted.then(|| self.repo.chunk_sketch(c))
            })
            .collect();
        let similar = match self.repo.index.similar(&sketches) {
            Ok(s) => s,
            // hints only: without them the bases are the candidates alone
            Err(_) => vec![None; fresh.len()],
        };
        let similar: Vec<Option<Id>> = similar
            .into_iter()
            .zip(&fresh)
            .map(|(s, (id, _, candidate))| s.filter(|s| s != id && Some(*s) != *candidate))
            .collect();
        let others = self.fetch_bases(similar.iter().flatten().copied())?;
        let encoded: Vec<_> = fresh
            .into_par_iter()
            .zip(firsts)
            .zip(similar)
            .map(|(((id, c, _), first), similar)| {
                let raw = c.len() as u32;
                let other = similar.and_then(|b| others.get(&b).cloned());
                let d = Delta::smaller(first, delta(level, &c, other));
                (id, raw, keep(level, c, d))
            })
            .collect();
        let sketched = encoded.iter().zip(sketches).filter_map(|((id, _, _), s)| Some((*id, s?)));
        self.sketched.extend(sketched);
        // the cache keeps no more, and a huge first backup should not hold them all
        let over = self.sketched.len().saturating_sub(super::cache::MAX_SKETCHED_CHUNKS);
        self.sketched.drain(..over);
        for (id, raw, e) in encoded {
            self.stats.new_chunks += 1;
            self.stats.new_bytes += raw as u64;
            if e.base.is_some() {
                self.stats.delta_chunks += 1;
            }
            self.stats.stored_bytes += e.data.len() as u64;
            self.add_blob(BlobType::Data, id, e.flags, raw, e.base, e.data)?;
        }
        Ok(refs)
    }

    /// Whether a stored copy can be relied on: outside the packs a prune has condemned and,
    /// for a delta, with a base that is too (a sweep that does not wait for this backup may
    /// delete a condemned pack, and with it the base a kept delta needs).
    fn usable(&self, r: &BlobRef, depth: u32) -> Result<bool> {
        if self.exclude.contains(&r.pack) {
            return Ok(false);
        }
        let Some(base) = r.loc.base else { return Ok(true) };
        if depth >= MAX_DELTA_DEPTH {
            return Ok(false);
        }
        for b in self.repo.index.locations(&base)? {
            if self.usable(&b, depth + 1)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// How `id` is stored: as the chain of deltas down from it (by the shallowest copies
    /// outside condemned packs; empty when `id` is stored whole) and the whole chunk that
    /// chain ends in; `None` when no such chain of at most [`MAX_DELTA_DEPTH`] levels exists.
    fn chain(&self, id: &Id) -> Result<Option<Chain>> {
        let (mut cur, mut levels) = (*id, Vec::new());
        for _ in 0..=MAX_DELTA_DEPTH {
            let copies: Vec<BlobRef> = self
                .repo
                .index
                .locations(&cur)?
                .into_iter()
                .filter(|r| !self.exclude.contains(&r.pack) && r.loc.blob_type == BlobType::Data)
                .collect();
            if let Some(w) = copies.iter().find(|r| r.loc.base.is_none()) {
                let whole = if w.loc.flags & FLAG_ZSTD != 0 {
                    w.loc.stored_len.saturating_sub(TAG_LEN as u32)
                } else {
                    w.loc.raw_len
                };
                return Ok(Some(Chain { levels, root: cur, whole: whole as usize }));
            }
            let Some(d) = copies.first() else { return Ok(None) };
            let Some(b) = d.loc.base else { return Ok(None) };
            levels.push((cur, d.loc.stored_len.saturating_sub(TAG_LEN as u32) as usize));
            cur = b;
        }
        Ok(None)
    }

    /// The candidate bases of these new chunks, keyed by candidate. A candidate less than
    /// [`WRITE_DEPTH`] deep is the base itself; a deeper one gives a level of its chain
    /// ([`Chain::base`]), so no delta is more than [`WRITE_DEPTH`] deep. Candidates that
    /// cannot be read are left out (the chunk is then stored on its own).
    ///
    /// Every blob of the bases' chains is read at once with grouped range reads
    /// ([`super::PackCiphers::read_chains`]): the bases of neighbouring chunks lie near each
    /// other in the packs of the previous backups, each level of their chains in one backup's.
    /// The bases themselves are then checked against their ids.
    fn fetch_bases(
        &self,
        candidates: impl Iterator<Item = Id>,
    ) -> Result<std::collections::HashMap<Id, Base>> {
        use std::collections::HashMap;
        // candidate → (base, stored size of its chain's whole chunk, whether it restarts)
        let mut want: HashMap<Id, (Id, usize, bool)> = HashMap::new();
        for c in candidates {
            if want.contains_key(&c) {
                continue;
            }
            if let Some(chain) = self.chain(&c)? {
                let (base, restart) = chain.base();
                want.insert(c, (base, chain.whole, restart));
            }
        }
        let mut out = HashMap::new();
        if want.is_empty() {
            return Ok(out);
        }
        // a copy of each base whose whole chain lies outside condemned packs (the delta will
        // need it), and the chain below each delta copy among them
        let mut copies = HashMap::new();
        let mut refs = HashMap::new();
        for (b, _, _) in want.values() {
            if copies.contains_key(b) {
                continue;
            }
            let Some(copy) = self.usable_copy(b, true)? else { continue };
            copies.insert(*b, copy);
            refs.insert(*b, copy);
            let (mut below, mut levels) = (copy.loc.base, 0);
            while let Some(r) = below.filter(|r| levels < MAX_DELTA_DEPTH && !refs.contains_key(r))
            {
                let Some(c) = self.usable_copy(&r, true)? else { break };
                refs.insert(r, c);
                (below, levels) = (c.loc.base, levels + 1);
            }
        }
        let rt = tokio::runtime::Handle::current();
        let tops: Vec<Id> = copies.keys().copied().collect();
        let groups = super::reader::chain_groups(refs);
        let read = rt.block_on(self.reader.read_chains(self.repo, groups, tops, HashMap::new()));
        // the bases themselves are checked (a delta against a damaged base would spread the
        // damage); the levels below them only produce them
        let mut plain: HashMap<Id, Arc<Vec<u8>>> = {
            use rayon::prelude::*;
            read.into_par_iter().filter(|(id, p)| self.repo.keys.chunk_id(p) == *id).collect()
        };
        for (c, (b, whole, restart)) in want {
            let p = match plain.get(&b) {
                Some(p) => p.clone(),
                // not read above (a deeper chain, or a failed read): the reader's own way,
                // which tries every copy
                None => {
                    let Some(copy) = copies.get(&b) else { continue };
                    let read = self.reader.read(self.repo, &copy.pack, &b, &copy.loc);
                    match rt.block_on(read) {
                        Ok(p) => plain.entry(b).or_insert(Arc::new(p)).clone(),
                        Err(e) => {
                            // the backup goes on (the chunk is stored whole), but the
                            // operator should hear of the damage now rather than at a restore
                            self.repo.index.warn(format!(
                                "{e}; a changed chunk was stored whole instead of as a delta \
                                 against it (run `repo check --read-data`)"
                            ));
                            continue;
                        }
                    }
                }
            };
            out.insert(c, Base { id: b, plain: p, whole, restart });
        }
        Ok(out)
    }

    /// A copy of `id` that can be relied on ([`Self::usable`]), whole ones first; with
    /// `deltas` false, only a whole copy.
    fn usable_copy(&self, id: &Id, deltas: bool) -> Result<Option<BlobRef>> {
        let mut copies = self.repo.index.locations(id)?;
        copies.sort_by_key(|r| r.loc.base.is_some());
        for r in copies {
            if r.loc.base.is_some() && !deltas {
                break;
            }
            if self.usable(&r, 0)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

/// What a snapshot's content lists describe, and the totals its record carries.
pub struct Content {
    /// Ids of the content-list blobs describing the stream or catalog, in order.
    pub lists: Vec<Id>,
    /// The snapshot's `size`: stream bytes, or the sum of a tree's regular file sizes.
    pub size: u64,
    /// The snapshot's `chunks`: chunks of a stream, or entries of a catalog.
    pub chunks: u64,
}

/// The deduplicating, packing sink that a tree backup feeds (on a blocking thread).
pub struct ChunkSink<'a> {
    p: Pipeline<'a>,
}

impl ChunkSink<'_> {
    /// The repository the sink stores into.
    pub fn repo(&self) -> &Repository {
        self.p.repo
    }

    /// Stores the chunks of several small files at once (hashing and compressing them in
    /// parallel) and returns each file's chunk list. Each file comes with the chunk ids of its
    /// previous version (possibly none): a new chunk is delta-encoded against the previous
    /// version's chunk at the same position.
    pub fn store_files(
        &mut self,
        files: Vec<(Vec<Vec<u8>>, Vec<Id>)>,
    ) -> Result<Vec<Vec<(Id, u32)>>> {
        let counts: Vec<usize> = files.iter().map(|f| f.0.len()).collect();
        let mut bases = Vec::new();
        let mut all = Vec::new();
        for (chunks, previous) in files {
            // a small chunk saves little as a delta, and its base costs a read (on S3, a
            // request) of its own
            let hint = |(i, c): (usize, &Vec<u8>)| {
                previous.get(i).copied().filter(|_| c.len() >= MIN_HINTED_CHUNK)
            };
            bases.extend(chunks.iter().enumerate().map(hint));
            all.extend(chunks);
        }
        let refs = self.p.store(all, Some(&bases))?;
        let mut it = refs.into_iter();
        Ok(counts.into_iter().map(|n| it.by_ref().take(n).collect()).collect())
    }

    /// Chunks `source` and stores it; returns its content lists. After an error the partial
    /// stream is forgotten (its chunks stay stored, unreferenced) and the sink stays usable.
    pub fn store_stream(
        &mut self,
        source: impl Read,
        params: ChunkerParams,
        progress: &dyn Progress,
    ) -> Result<Vec<Id>> {
        let repo = self.p.repo;
        let r = self.p.process_all(Batches::new(source, repo, params), progress);
        if r.is_err() {
            self.p.list.clear();
            self.p.lists.clear();
        }
        r
    }

    /// Stores `n` streams whose batches arrive interleaved on `rx` (each read by a thread of
    /// its own), each with its own content lists and delta predecessor; returns each stream's
    /// lists and byte count, in stream order. The first failed stream ends the call with its
    /// error (dropping `rx`, which tells the other readers to stop).
    pub fn store_interleaved(
        &mut self,
        preds: Vec<Option<super::delta::Predecessor>>,
        rx: crossbeam_channel::Receiver<StreamMsg>,
        progress: &dyn Progress,
    ) -> Result<Vec<(Vec<Id>, u64)>> {
        struct State {
            list: Vec<(Id, u32)>,
            lists: Vec<Id>,
            pred: Option<super::delta::Predecessor>,
            done: Option<(Vec<Id>, u64)>,
        }
        let n = preds.len();
        let mut states: Vec<State> = preds
            .into_iter()
            .map(|pred| State { list: vec![], lists: vec![], pred, done: None })
            .collect();
        let p = &mut self.p;
        let swap = |p: &mut Pipeline, s: &mut State| {
            std::mem::swap(&mut p.list, &mut s.list);
            std::mem::swap(&mut p.lists, &mut s.lists);
            std::mem::swap(&mut p.pred, &mut s.pred);
        };
        let mut ended = 0;
        while ended < n {
            let msg = rx.recv().map_err(|_| {
                RepoError::Input(std::io::Error::other("a stream reader stopped unexpectedly"))
            })?;
            match msg {
                StreamMsg::Batch(i, batch) => {
                    let bytes: usize = batch.iter().map(|c| c.len()).sum();
                    let s = &mut states[i]; // i < n: the readers are numbered 0..n
                    swap(p, s);
                    let r = p.process(batch);
                    swap(p, s);
                    r?;
                    progress.bytes_done(bytes as u64);
                }
                StreamMsg::End(i, result) => {
                    let total = result?;
                    let s = &mut states[i]; // i < n: the readers are numbered 0..n
                    swap(p, s);
                    let lists = p.take_lists();
                    swap(p, s);
                    s.done = Some((lists?, total));
                    ended += 1;
                }
            }
        }
        states
            .into_iter()
            .map(|s| s.done.ok_or(RepoError::WorkerStopped("stream reader")))
            .collect()
    }

    /// The chunk sequence that new chunks of the next stream are delta-encoded against (the
    /// same stream in the previous snapshot); `None` stores them whole.
    pub fn set_predecessor(&mut self, pred: Option<super::delta::Predecessor>) {
        self.p.pred = pred;
    }

    /// True if every chunk is stored (and not only in packs a prune has condemned).
    pub fn all_stored(&self, ids: &[Id]) -> Result<bool> {
        for r in self.p.repo.index.lookup_many(ids)? {
            match r {
                Some(r) if self.p.usable(&r, 0)? => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Writes an index file for `packs` (already stored) and records it in the cache.
pub async fn write_index(
    repo: &Repository,
    packs: Vec<IndexPack>,
    supersedes: Vec<Id>,
) -> Result<Id> {
    let file = IndexFile { supersedes, packs };
    let bytes = repo.seal(MAGIC_INDEX, &file.encode())?;
    let id = Id::of_bytes(&bytes);
    repo.backend.put(&paths::index(&id), bytes).await?;
    repo.index.ingest(&[(id.to_hex(), file)])?;
    Ok(id)
}

/// Writes the index file for the packs of `batch` and forgets their ids from `pending` (the
/// cache has them).
async fn index_and_forget(
    repo: &Repository,
    batch: &mut IndexBatch,
    pending: &Pending,
) -> Result<()> {
    let ids: Vec<Id> = batch.blob_ids().collect();
    batch.flush(repo).await?;
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    for id in ids {
        p.remove(&id);
    }
    Ok(())
}

async fn uploader(
    repo: Arc<Repository>,
    mut rx: mpsc::Receiver<FinishedPack>,
    pending: Pending,
) -> Result<BackupStats> {
    let mut stats = BackupStats::default();
    let mut in_flight: VecDeque<tokio::task::JoinHandle<Result<IndexPack>>> = VecDeque::new();
    let mut done = IndexBatch::default();
    let mut first_err = None;
    loop {
        let next = if in_flight.len() >= UPLOADS_IN_FLIGHT { None } else { rx.recv().await };
        match next {
            Some(p) => {
                stats.packs_written += 1;
                stats.bytes_written += p.bytes.len() as u64;
                let backend = repo.backend.clone();
                in_flight.push_back(tokio::spawn(async move {
                    backend.put(&paths::pack(&p.id), p.bytes).await?;
                    Ok(p.index)
                }));
            }
            None => {
                let Some(h) = in_flight.pop_front() else { break };
                match h.await.map_err(RepoError::from).and_then(|r| r) {
                    Ok(ix) => done.add(ix),
                    Err(e) => {
                        first_err.get_or_insert(e);
                        rx.close();
                    }
                }
                if done.is_full() && first_err.is_none() {
                    index_and_forget(&repo, &mut done, &pending).await?;
                }
            }
        }
    }
    // index what did reach the repository, even after an error: later backups reuse it
    index_and_forget(&repo, &mut done, &pending).await?;
    stats.index_files_written = done.files_written;
    match first_err {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Stores `source` as one snapshot. The snapshot is written only after every pack and index
/// file it needs, and only if `gate` (run after the input ended) succeeds and the repository's
/// lease is still fresh. Chunks stored only in packs condemned by a prune
/// ([`Repository::condemned`]) are stored again rather than deduplicated.
pub async fn backup_stream<R, G>(
    repo: Arc<Repository>,
    source: R,
    meta: SnapshotMeta,
    progress: Arc<dyn Progress>,
    gate: G,
) -> Result<(Id, Snapshot, BackupStats)>
where
    R: Read + Send + 'static,
    G: std::future::Future<Output = Result<()>>,
{
    // the previous snapshot of the name gives delta bases; without it chunks are stored whole
    let pred = match super::delta::Predecessor::for_name(&repo, &meta.name).await {
        Ok(p) => p,
        Err(e) => {
            repo.index.warn(format!("{e}; this backup stores changed chunks without deltas"));
            None
        }
    };
    let batches = spawn_reader(repo.clone(), source);
    let body = move |sink: &mut ChunkSink| {
        sink.p.pred = pred;
        let lists = sink.p.process_all(batches.into_iter(), &*progress)?;
        Ok(Content { lists, size: sink.p.stats.bytes_read, chunks: sink.p.stats.chunks })
    };
    backup_with(repo, SnapshotKind::Stream, meta, body, gate).await
}

/// Runs `body` on a blocking thread with a sink whose packs are uploaded concurrently, then
/// (after every pack and index file is stored, and if `gate` succeeds) writes the snapshot
/// of `kind` whose content lists `body` returned.
pub async fn backup_with<F, G>(
    repo: Arc<Repository>,
    kind: SnapshotKind,
    meta: SnapshotMeta,
    body: F,
    gate: G,
) -> Result<(Id, Snapshot, BackupStats)>
where
    F: FnOnce(&mut ChunkSink) -> Result<Content> + Send + 'static,
    G: std::future::Future<Output = Result<()>>,
{
    // a backup's protection from prunes is its lease (format-spec/prune.md)
    if repo.lease().map(|l| l.kind()) != Some(crate::format::lock::LeaseKind::Backup) {
        return Err(RepoError::WrongAccess("Backup"));
    }
    let (pack_tx, pack_rx) = mpsc::channel(2);
    let pending = Pending::default();
    let up = tokio::spawn(uploader(repo.clone(), pack_rx, pending.clone()));
    let r2 = repo.clone();
    let piped = tokio::task::spawn_blocking(move || {
        let condemned = r2.condemned();
        let p = Pipeline {
            repo: &r2,
            pred: None,
            reader: super::PackCiphers::reading_ahead(),
            exclude: &condemned.packs,
            packer: None,
            pack_tx,
            pending,
            list: vec![],
            lists: vec![],
            stats: BackupStats::default(),
            sketched: Default::default(),
            quick_first: false,
        };
        let mut sink = ChunkSink { p };
        let content = body(&mut sink)?;
        sink.p.flush_pack()?;
        Ok((content, sink.p.stats, sink.p.sketched))
    })
    .await;
    let uploaded = up.await.map_err(RepoError::from)?;
    let (content, mut stats, mut sketched) = match (piped.map_err(RepoError::from)?, uploaded) {
        (Ok(r), Ok(u)) => {
            let (content, mut s, sketched): (Content, BackupStats, _) = r;
            s.packs_written = u.packs_written;
            s.bytes_written = u.bytes_written;
            s.index_files_written = u.index_files_written;
            (content, s, sketched)
        }
        // the pipeline stopped because the uploader failed: the uploader's error is the cause
        (Err(RepoError::WorkerStopped(_)), Err(e)) | (Ok(_), Err(e)) => return Err(e),
        // a feeder of the body stopped (a copy's source reader): its error is in the gate
        (Err(e @ RepoError::WorkerStopped(_)), Ok(_)) => {
            gate.await?;
            return Err(e);
        }
        (Err(e), _) => return Err(e),
    };
    gate.await?;
    // a prune treats a lease not refreshed for LEASE_EXPIRY as gone and may have deleted what
    // this backup deduplicated against: commit only while the lease has held without a gap
    repo.ensure_lease()?;
    let snap = Snapshot {
        time_ns: meta.time_ns,
        kind,
        size: content.size,
        chunks: content.chunks,
        name: meta.name,
        host: meta.host,
        tags: meta.tags,
        command: meta.command,
        program: format!("repo {}", env!("CARGO_PKG_VERSION")),
        lists: content.lists,
    };
    let body = snap.encode().map_err(|e| RepoError::format("snapshot", e))?;
    let bytes = repo.seal(MAGIC_SNAPSHOT, &body)?;
    let id = Id::of_bytes(&bytes);
    stats.bytes_written += bytes.len() as u64;
    repo.backend.put(&paths::snapshot(&id), bytes.clone()).await?;
    if let Err(e) = repo.ensure_lease() {
        // the lease lapsed while the snapshot was stored (a hung mount): a prune may have
        // swept without seeing it, so it may not be whole; withdraw it, and if that fails say
        // which snapshot is left (a storage error alone would hide it)
        if let Err(d) = repo.backend.delete(&paths::snapshot(&id)).await {
            let RepoError::LeaseLapsed { minutes } = e else { return Err(e) };
            return Err(RepoError::LapsedSnapshotLeft {
                minutes,
                snapshot: id.short(),
                error: d.to_string(),
            });
        }
        return Err(e);
    }
    // the next listing need not fetch it, and the next backups find moved content among
    // these chunks (a cache that cannot be written only costs that)
    let _ = repo.index.add_snapshot_object(id, bytes);
    let _ = repo.index.add_sketches(sketched.make_contiguous());
    // a fresh pod that had to fetch the snapshots one by one leaves a bundle for the next
    super::store_bundle_if_worth(&repo, false).await;
    Ok((id, snap, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    /// A chain of deltas with these stored sizes, from the candidate (id 4 when four deep)
    /// down to the whole chunk (id 0, stored in 60,000 bytes).
    fn chain(sizes: &[usize]) -> Chain {
        let n = sizes.len() as u8;
        let levels = sizes.iter().enumerate().map(|(i, s)| (id(n - i as u8), *s)).collect();
        Chain { levels, root: id(0), whole: 60_000 }
    }

    #[test]
    fn a_chain_below_the_limit_gives_the_candidate_itself() {
        assert_eq!(chain(&[]).base(), (id(0), false), "a whole candidate");
        assert_eq!(chain(&[1_000, 1_000, 1_000]).base(), (id(3), false));
    }

    #[test]
    fn a_chain_at_the_limit_restarts_where_the_delta_shared_over_what_is_left_is_least() {
        // young: an hour's changes each; against the whole chunk about 5,000 bytes over four
        // levels, against level 1 about 4,000 over three
        assert_eq!(chain(&[1_000, 1_000, 1_000, 1_000]).base(), (id(0), true));
        // old: the restart against the whole chunk (level 1) carries 20 hours of changes;
        // level 1 itself gives 4,000 over three levels, against 24,000 over four
        assert_eq!(chain(&[1_000, 1_000, 1_000, 20_000]).base(), (id(1), false));
        // a large delta just below the candidate: level 3 (2,000 over one level) against
        // level 2 (12,000 over two), level 1 (13,000 over three) and the whole chunk (14,000
        // over four)
        assert_eq!(chain(&[1_000, 10_000, 1_000, 1_000]).base(), (id(3), false));
    }
}
