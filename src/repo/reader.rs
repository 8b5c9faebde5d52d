//! The stream reader: restores a snapshot in order, with read-ahead.
//!
//! Consecutive chunks stored near each other (gaps up to `GROUP_GAP`) in one pack are fetched
//! with one range read (a group: at most `GROUP_BYTES` both stored and decompressed, so a
//! default-size pack restored whole is one read, and deltas worth at most `BASE_WINDOW_BYTES`
//! of plaintext); `READ_AHEAD` groups are fetched and decoded concurrently (decoding on
//! blocking threads, so both cores work) and written strictly in order by a writer thread.
//! The bytes of a read stay in the pieces they arrived in until each blob is copied out and
//! decrypted in place. Deltas need their base chunks: the bases of each window of groups (a
//! window's deltas hold about `BASE_WINDOW_BYTES`), with every blob of their chains, are
//! fetched (grouped the same way, and reads of one pack shared with nearby windows) and
//! decoded into a cache of at most `BASE_CACHE_BYTES` before the window's first group, while
//! the previous window's last groups are still in flight (each group of a window holds on to
//! its bases as soon as they are read, since the next window's prefetch may clear the cache).
//! Memory: about `(READ_AHEAD + WRITE_QUEUE + 1) × 2 × GROUP_BYTES` for the groups, up to
//! `READ_BUDGET` more while a window's bases are prefetched (its shared reads, up to 4 MiB
//! each, count beyond it), `SHARE_BUDGET` of base reads that nearby windows share and as
//! much of the stream's own shared reads, three times the base cache (the cache, and the
//! bases pinned by the groups of the window in flight and of the next one) and one maximal
//! chunk per core, whatever the stream size or compression ratio.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::writer::Progress;
use super::{BlobRef, RepoError, Repository, Result, paths};
use crate::backend::RangeBytes;
use crate::codec::compress::decompress;
use crate::codec::crypto::ObjectCipher;
use crate::format::Id;
use crate::format::envelope::{HEADER_LEN, Header, MAGIC_PACK};
use crate::format::index::BlobLocation;
use crate::format::pack::MAX_DELTA_DEPTH;
use crate::format::snapshot::Snapshot;
use crate::format::stream::{LIST_MAX_ENTRIES, decode_list};

/// A pack of the default size (16 MiB, plus the chunk that closed it) is one read: moto_server,
/// like any server that copies the object per request, pays per range, and 8 MiB ranges split
/// every pack in two or three (benches/RESULTS.md, "Whole packs per read").
const GROUP_BYTES: u64 = 17 << 20;
/// Chunks in one pack separated by at most this many unneeded bytes share one read.
const GROUP_GAP: u64 = 256 << 10;
const READ_AHEAD: usize = 2;
/// Range reads of delta bases in flight (small reads scattered over older packs: latency).
const BASE_READS: usize = 4;
const WRITE_QUEUE: usize = 2;

/// What a restore read: the totals a stream restore checks against its snapshot.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Plaintext bytes of the chunks delivered, in order (must equal the snapshot's `size`).
    pub bytes: u64,
    /// Chunks delivered (content-list blobs not counted).
    pub chunks: u64,
}

/// Pack ciphers, built from each pack's header on first use, and the plaintexts of base
/// chunks recently needed to decode deltas (a delta's base is usually needed again by the
/// next deltas of the same region).
#[derive(Default)]
pub struct PackCiphers {
    ciphers: Mutex<HashMap<Id, Arc<ObjectCipher>>>,
    bases: Mutex<BaseCache>,
    /// Small reads of delta bases made longer, for the reads that follow ([`ReadAhead`]).
    ahead: Option<Mutex<ReadAhead>>,
}

/// Bytes a small read of a backup's delta bases is made up to.
const AHEAD_BYTES: u64 = 256 << 10;
/// Bytes of such reads kept for the reads that follow.
const AHEAD_KEEP: usize = 8 << 20;

/// A backup reads the bases of each batch of changed chunks (4 MiB) as it goes: each level of
/// their chains lies in the packs of one older backup, in stream order, so every batch read a
/// few kilobytes of deltas from each of those packs (819 requests to back up the twelfth
/// hourly bench dump to moto_server). From a pack's second read on, reads shorter than
/// [`AHEAD_BYTES`] are made that long (within the pack, whose size is asked once), at most
/// [`AHEAD_KEEP`] more per batch, and kept (at most [`AHEAD_KEEP`], oldest dropped first) for
/// the batches that follow.
#[derive(Default)]
struct ReadAhead {
    /// Packs read (their size once asked; 40 bytes a pack, for the packs one backup reads).
    sizes: HashMap<Id, Option<u64>>,
    kept: std::collections::VecDeque<(Id, u64, Arc<RangeBytes>)>,
    bytes: usize,
}

impl ReadAhead {
    /// A kept read of `pack` that covers `len` bytes at `start`, and where it starts.
    fn covering(&self, pack: &Id, start: u64, len: u64) -> Option<(Arc<RangeBytes>, u64)> {
        self.kept
            .iter()
            .find(|(p, s, b)| p == pack && *s <= start && s + b.len() as u64 >= start + len)
            .map(|(_, s, b)| (b.clone(), *s))
    }

    fn keep(&mut self, pack: Id, start: u64, bytes: Arc<RangeBytes>) {
        self.bytes += bytes.len();
        self.kept.push_back((pack, start, bytes));
        while self.bytes > AHEAD_KEEP {
            let Some((_, _, b)) = self.kept.pop_front() else { break };
            self.bytes -= b.len();
        }
    }
}

/// Bytes of base plaintext kept for decoding deltas (the cache is cleared when the next base
/// would not fit). In bytes, not chunks: with 256 KiB chunks a count of 128 held 32-128 MiB,
/// and a restore peaked at 123-168 MB instead of 81 MB.
const BASE_CACHE_BYTES: usize = 16 << 20;
/// Plaintext bytes of the chunks whose deltas' bases are fetched together before the chunks
/// themselves (measured: restore of the bench dump 0.30 s with, 0.38 s without, at 64 KiB
/// chunks). 128 chunks of 64 KiB rather than 512: the same restore peaked at 144-150 MB with
/// 512 and 87-95 MB with 128, and took 0.29-0.33 s against 0.25-0.27 s; from moto_server
/// 0.97-1.07 s against 1.07-1.23 s.
pub(super) const BASE_WINDOW_BYTES: u64 = 8 << 20;

/// Decoded bases by chunk id, at most [`BASE_CACHE_BYTES`] of them. A base a restore's
/// prefetch decoded is not hashed ([`open_blob`]): only the chunks decoded against it are
/// delivered, and their ids are checked. Reads of single blobs ([`PackCiphers::base`], which
/// a retry after a failure uses) take only checked bases, so that a damaged or forged base is
/// passed over for another copy, or named.
#[derive(Default)]
struct BaseCache {
    map: HashMap<Id, (Arc<Vec<u8>>, bool)>,
    bytes: usize,
}

impl BaseCache {
    fn get(&self, id: &Id) -> Option<&Arc<Vec<u8>>> {
        self.map.get(id).map(|(d, _)| d)
    }

    fn get_checked(&self, id: &Id) -> Option<&Arc<Vec<u8>>> {
        self.map.get(id).filter(|(_, checked)| *checked).map(|(d, _)| d)
    }

    /// Clears the cache unless `more` bytes fit beside what it holds.
    fn make_room(&mut self, more: usize) {
        if self.bytes + more > BASE_CACHE_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
    }

    /// Caches a base; `checked`: its id was verified (it then replaces an unchecked copy).
    fn insert(&mut self, id: Id, data: Arc<Vec<u8>>, checked: bool) {
        if let Some((old, was_checked)) = self.map.get(&id) {
            if *was_checked || !checked {
                return;
            }
            self.bytes -= old.len();
            self.map.remove(&id);
        }
        self.make_room(data.len());
        self.bytes += data.len();
        self.map.insert(id, (data, checked));
    }
}

/// Splits groups into windows whose deltas hold at most [`BASE_WINDOW_BYTES`] of plaintext
/// (or one group, which holds no more): the bases a window needs then fit the base cache. A
/// group is never split, so that a pack read whole stays one read.
fn windows(groups: Vec<Group>) -> Vec<Vec<Group>> {
    let (mut out, mut window, mut bytes) = (Vec::new(), Vec::new(), 0);
    for g in groups {
        if !window.is_empty() && bytes + g.deltas > BASE_WINDOW_BYTES {
            out.push(std::mem::take(&mut window));
            bytes = 0;
        }
        bytes += g.deltas;
        window.push(g);
    }
    if !window.is_empty() {
        out.push(window);
    }
    out
}

impl PackCiphers {
    /// Pack ciphers and a base cache for a backup: small reads of delta bases also read
    /// ahead ([`ReadAhead`]).
    pub(crate) fn reading_ahead() -> PackCiphers {
        PackCiphers { ahead: Some(Mutex::default()), ..PackCiphers::default() }
    }

    /// The bytes of a group of chain blobs ([`read_group`]); with read-ahead, from a kept
    /// read, or read longer and kept.
    async fn read_chain_group(
        &self,
        repo: &Repository,
        g: &Group,
        extra: &AtomicU64,
    ) -> Result<(Arc<RangeBytes>, u64)> {
        let Some(ahead) = &self.ahead else { return read_group(repo, g).await };
        let lock = || ahead.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = lock().covering(&g.pack, g.start, g.len) {
            return Ok(kept);
        }
        if g.len >= AHEAD_BYTES || g.shared.is_some() {
            return read_group(repo, g).await;
        }
        let path = paths::pack(&g.pack);
        // a pack read once may be read for every batch: from its second read, read ahead
        let known = lock().sizes.get(&g.pack).copied();
        let size = match known {
            None => {
                lock().sizes.insert(g.pack, None);
                return read_group(repo, g).await;
            }
            Some(Some(size)) => size,
            Some(None) => match repo.backend.stat(&path).await {
                // a pack deleted since (a prune's sweep) has size 0: the read below fails
                Ok(size) => {
                    let size = size.unwrap_or(0);
                    lock().sizes.insert(g.pack, Some(size));
                    size
                }
                Err(_) => return read_group(repo, g).await,
            },
        };
        let mut len = (g.start + AHEAD_BYTES).min(size).saturating_sub(g.start).max(g.len);
        // what one call reads ahead is bounded too (many small groups of many packs)
        let more = len - g.len;
        if extra.fetch_add(more, Ordering::Relaxed) + more > AHEAD_KEEP as u64 {
            len = g.len;
        }
        let bytes = Arc::new(repo.backend.get_range_pieces(&path, g.start, len).await?);
        if len > g.len {
            lock().keep(g.pack, g.start, bytes.clone());
        }
        Ok((bytes, g.start))
    }

    /// Reads and verifies one blob at a known location (a delta's base through the index).
    pub async fn read(
        &self,
        repo: &Repository,
        pack: &Id,
        id: &Id,
        loc: &BlobLocation,
    ) -> Result<Vec<u8>> {
        self.read_at(repo, pack, id, loc, 0).await
    }

    async fn read_at(
        &self,
        repo: &Repository,
        pack: &Id,
        id: &Id,
        loc: &BlobLocation,
        depth: u32,
    ) -> Result<Vec<u8>> {
        let c = self.get(repo, pack).await?;
        let base = match &loc.base {
            Some(b) => Some(self.base_at(repo, b, id, depth + 1).await?),
            None => None,
        };
        let sealed = repo
            .backend
            .get_range(&paths::pack(pack), loc.offset as u64, loc.stored_len as u64)
            .await?;
        decode_blob(repo, &c, pack, id, loc, sealed, base.as_deref().map(|b| b.as_slice()))
    }

    /// Takes the bases `g`'s deltas need that the cache holds now, so that they outlive a
    /// clearing of the cache before `g` is fetched.
    fn pin_bases(&self, g: &mut Group) {
        let cache = self.bases.lock().unwrap_or_else(|p| p.into_inner());
        for (_, loc) in &g.items {
            if let Some(b) = loc.base.and_then(|b| cache.get(&b).map(|d| (b, d.clone()))) {
                g.pinned.insert(b.0, b.1);
            }
        }
    }

    /// The plaintext of `base`, which the delta `of` needs: from the cache, or read from a
    /// full copy, or else (a chunk stored twice, its full copy pruned) from a delta copy.
    pub async fn base(&self, repo: &Repository, base: &Id, of: &Id) -> Result<Arc<Vec<u8>>> {
        self.base_at(repo, base, of, 1).await
    }

    async fn base_at(
        &self,
        repo: &Repository,
        base: &Id,
        of: &Id,
        depth: u32,
    ) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.bases.lock().unwrap_or_else(|p| p.into_inner()).get_checked(base) {
            return Ok(b.clone());
        }
        let mut copies = repo.index.locations(base)?;
        // full copies first (stable: condemned packs stay last within each kind); no chains
        // deeper than MAX_DELTA_DEPTH, so a hostile cycle of bases ends in an error
        copies.sort_by_key(|r| r.loc.base.is_some());
        copies.retain(|r| r.loc.base.is_none() || depth < MAX_DELTA_DEPTH);
        let mut last = None;
        for r in &copies {
            match Box::pin(self.read_at(repo, &r.pack, base, &r.loc, depth)).await {
                Ok(data) => {
                    let data = Arc::new(data);
                    let mut cache = self.bases.lock().unwrap_or_else(|p| p.into_inner());
                    cache.insert(*base, data.clone(), true);
                    return Ok(data);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RepoError::MissingChunk {
            chunk: base.to_hex(),
            needed_by: format!("chunk {} (its delta base)", of.short()),
        }))
    }

    pub(crate) async fn get(&self, repo: &Repository, pack: &Id) -> Result<Arc<ObjectCipher>> {
        if let Some(c) = self.ciphers.lock().unwrap_or_else(|p| p.into_inner()).get(pack) {
            return Ok(c.clone());
        }
        let path = paths::pack(pack);
        let hb = repo.backend.get_range(&path, 0, HEADER_LEN as u64).await?;
        let header =
            Header::decode(&hb, &MAGIC_PACK).map_err(|e| RepoError::format(path.clone(), e))?;
        if header.cipher != repo.cipher {
            return Err(RepoError::Corrupt {
                object: path,
                reason: "pack sealed with another cipher".into(),
            });
        }
        let c = Arc::new(ObjectCipher::new(&repo.keys, &header));
        self.ciphers.lock().unwrap_or_else(|p| p.into_inner()).insert(*pack, c.clone());
        Ok(c)
    }
}

impl PackCiphers {
    /// The plaintexts of these bases that the base cache does not hold, with their ids
    /// unchecked ([`Self::read_chains`]): the index gives a copy of each and of every blob
    /// below it in its chain, down to a whole chunk or one the cache holds.
    ///
    /// Measured (benches/RESULTS.md, "Deeper chains"): with chains four deep, a restore that
    /// checked every level and cached each spent a third of its time hashing bases and decoded
    /// some levels twice once the cache overflowed.
    pub async fn read_bases(
        &self,
        repo: &Repository,
        mut tops: Vec<Id>,
    ) -> HashMap<Id, Arc<Vec<u8>>> {
        tops.sort();
        tops.dedup();
        // chain ends the cache holds now (kept here: the caller may clear it)
        let mut held: HashMap<Id, Arc<Vec<u8>>> = HashMap::new();
        let refs = chain_refs(repo, tops.clone(), |b| {
            let cache = self.bases.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(b).map(|d| held.insert(*b, d.clone())).is_some()
        });
        tops.retain(|t| !held.contains_key(t));
        if tops.is_empty() {
            return HashMap::new();
        }
        let (tops, groups) = within_budget(tops, &refs);
        self.read_chains(repo, groups, tops, held).await.into_iter().collect()
    }

    /// The bases of a [`BasePlan`] that the base cache does not hold, as
    /// [`Self::read_bases`] returns them.
    async fn read_planned(&self, repo: &Repository, plan: BasePlan) -> HashMap<Id, Arc<Vec<u8>>> {
        let BasePlan { tops, groups } = plan;
        // the chains from the tops down to what the cache holds: the levels still needed,
        // and the held ends (kept here: the caller may clear the cache)
        let below: HashMap<Id, Option<Id>> =
            groups.iter().flat_map(|g| g.items.iter().map(|(id, l)| (*id, l.base))).collect();
        let mut held: HashMap<Id, Arc<Vec<u8>>> = HashMap::new();
        let mut needed = std::collections::HashSet::new();
        {
            let cache = self.bases.lock().unwrap_or_else(|p| p.into_inner());
            for t in &tops {
                let mut cur = Some(*t);
                while let Some(c) = cur {
                    if let Some(d) = cache.get(&c) {
                        held.insert(c, d.clone());
                        break;
                    }
                    if !needed.insert(c) {
                        break;
                    }
                    cur = below.get(&c).copied().flatten();
                }
            }
        }
        let tops: Vec<Id> = tops.into_iter().filter(|t| !held.contains_key(t)).collect();
        if tops.is_empty() {
            return HashMap::new();
        }
        // dropping a group with no level still needed only lets go of its share of a read
        let groups = groups
            .into_iter()
            .filter(|g| g.items.iter().any(|(id, _)| needed.contains(id)))
            .collect();
        self.read_chains(repo, groups, tops, held).await.into_iter().collect()
    }

    /// The plaintexts of `tops`, each decoded from the bottom of its chain of bases: the
    /// `groups` ([`chain_groups`] of the chosen copy of each top and of each blob below one)
    /// are fetched at once, `BASE_READS` in flight (neighbouring chunks' bases lie near
    /// each other in older packs, each level of their chains in the packs of one backup),
    /// then the chains are decoded in parallel off the runtime, from the whole chunk or the
    /// plaintext in `held` each ends in. Nothing is hashed: the caller checks the ids it
    /// relies on. Best effort: a top whose chain cannot be read or decoded is left out.
    /// (Reading chains a level at a time, a backup waited for one round of reads per level.)
    pub(crate) async fn read_chains(
        &self,
        repo: &Repository,
        groups: Vec<Group>,
        tops: Vec<Id>,
        held: HashMap<Id, Arc<Vec<u8>>>,
    ) -> Vec<(Id, Arc<Vec<u8>>)> {
        let extra = &AtomicU64::new(0);
        let fetched: Vec<(Group, Arc<ObjectCipher>, Arc<RangeBytes>, u64)> = stream::iter(groups)
            .map(|g| async move {
                let cipher = self.get(repo, &g.pack).await.ok()?;
                let (bytes, start) = self.read_chain_group(repo, &g, extra).await.ok()?;
                Some((g, cipher, bytes, start))
            })
            .buffer_unordered(BASE_READS)
            .filter_map(|f| async move { f })
            .collect()
            .await;
        let decode = move || {
            use rayon::prelude::*;
            let mut at: HashMap<Id, (usize, BlobLocation)> = HashMap::new();
            for (i, (g, _, _, _)) in fetched.iter().enumerate() {
                at.extend(g.items.iter().map(|(id, loc)| (*id, (i, *loc))));
            }
            tops.par_iter()
                .filter_map(|top| {
                    // the chain from the top down to what it ends in (a top is the base of a
                    // delta, so at most MAX_DELTA_DEPTH - 1 deltas deep: a cycle ends here)
                    let (mut chain, mut cur, mut plain) = (Vec::new(), *top, None);
                    loop {
                        if let Some(d) = held.get(&cur) {
                            plain = Some(d.clone());
                            break;
                        }
                        let &(i, loc) = at.get(&cur)?;
                        chain.push((cur, i, loc));
                        match loc.base {
                            Some(_) if chain.len() >= MAX_DELTA_DEPTH as usize => return None,
                            Some(b) => cur = b,
                            None => break,
                        }
                    }
                    for (id, i, loc) in chain.into_iter().rev() {
                        let (g, cipher, bytes, start) = &fetched[i];
                        let base = plain.as_deref().map(|p: &Vec<u8>| p.as_slice());
                        let sealed = sealed_at(bytes, *start, &loc);
                        plain = Some(Arc::new(
                            open_blob(cipher, &g.pack, &id, &loc, sealed, base).ok()?,
                        ));
                    }
                    Some((*top, plain?))
                })
                .collect::<Vec<(Id, Arc<Vec<u8>>)>>()
        };
        tokio::task::spawn_blocking(decode).await.unwrap_or_default()
    }
}

/// What a [`PackCiphers::read_bases`] fetches and returns at once: the groups its range reads
/// span and the decoded bases (a window's bases are about as large as its chunks; unusual or
/// hostile ones fall back to single reads, which the base cache bounds).
const READ_BUDGET: u64 = 2 * BASE_CACHE_BYTES as u64;

/// The grouped range reads of these blobs (in any order).
pub(crate) fn chain_groups(refs: impl IntoIterator<Item = (Id, BlobRef)>) -> Vec<Group> {
    let mut entries: Vec<(Id, BlobRef)> = refs.into_iter().collect();
    entries.sort_by_key(|(id, r)| (r.pack, r.loc.offset, *id));
    group(entries)
}

/// `tops`, halved until the reads of their chains and their decoded bytes fit in
/// [`READ_BUDGET`] (at least one top is kept), and the reads of those chains.
fn within_budget(mut tops: Vec<Id>, refs: &HashMap<Id, BlobRef>) -> (Vec<Id>, Vec<Group>) {
    loop {
        let mut members: HashMap<Id, BlobRef> = HashMap::new();
        for t in &tops {
            let mut cur = Some(*t);
            while let Some(r) = cur.and_then(|c| refs.get(&c).map(|r| (c, *r))) {
                if members.insert(r.0, r.1).is_some() {
                    break; // the rest of this chain is in already (or a cycle)
                }
                cur = r.1.loc.base;
            }
        }
        let decoded: u64 =
            tops.iter().filter_map(|t| refs.get(t)).map(|r| u64::from(r.loc.raw_len)).sum();
        let groups = chain_groups(members);
        let fetched: u64 = groups.iter().map(|g| g.len).sum();
        if decoded + fetched <= READ_BUDGET || tops.len() <= 1 {
            return (tops, groups);
        }
        tops.truncate(tops.len() / 2);
    }
}

/// The index entries of `ids` and of every blob below them in their chains of bases (the
/// copy the index prefers of each), at most [`MAX_DELTA_DEPTH`] levels, passing over what
/// `held` takes (a base the caller has decoded already). Best effort: a blob the index
/// does not know, or a failed lookup, ends its chain.
fn chain_refs(
    repo: &Repository,
    mut ids: Vec<Id>,
    mut held: impl FnMut(&Id) -> bool,
) -> HashMap<Id, BlobRef> {
    let mut refs: HashMap<Id, BlobRef> = HashMap::new();
    let mut levels = 0;
    while !ids.is_empty() && levels < MAX_DELTA_DEPTH {
        levels += 1;
        ids.sort();
        ids.dedup();
        ids.retain(|b| !refs.contains_key(b) && !held(b));
        if ids.is_empty() {
            break;
        }
        let Ok(found) = repo.index.lookup_many(&ids) else { break };
        let mut next = Vec::new();
        for (b, r) in ids.iter().zip(found) {
            if let Some(r) = r {
                next.extend(r.loc.base);
                refs.insert(*b, r);
            }
        }
        ids = next;
    }
    refs
}

/// The base reads of one window of a restore ([`plan_bases`]).
struct BasePlan {
    /// The bases its deltas need.
    tops: Vec<Id>,
    /// The reads of their chains, some shared with windows before or after it.
    groups: Vec<Group>,
}

/// Plans the base reads of these windows together. Each window's bases lie in older packs,
/// a level of their chains in the packs of each older backup, next to the levels the next
/// windows need: read window by window, the twelfth hourly bench dump took 416 small reads
/// (requests, on S3) for its bases. Reads of one pack by nearby windows are shared
/// ([`share_reads`]), so at most [`SHARE_BUDGET`] of them wait for later windows.
fn plan_bases(repo: &Repository, windows: &[Vec<Group>]) -> Vec<BasePlan> {
    let tops: Vec<Vec<Id>> = windows
        .iter()
        .map(|w| {
            let mut t: Vec<Id> =
                w.iter().flat_map(|g| &g.items).filter_map(|(_, l)| l.base).collect();
            t.sort();
            t.dedup();
            t
        })
        .collect();
    let refs = chain_refs(repo, tops.concat(), |_| false);
    let mut plans: Vec<BasePlan> = tops
        .into_iter()
        .map(|t| {
            let (tops, groups) = within_budget(t, &refs);
            BasePlan { tops, groups }
        })
        .collect();
    let counts: Vec<usize> = plans.iter().map(|p| p.groups.len()).collect();
    let mut all: Vec<Group> =
        plans.iter_mut().flat_map(|p| std::mem::take(&mut p.groups)).collect();
    share_reads(&mut all);
    let mut all = all.into_iter();
    for (p, n) in plans.iter_mut().zip(counts) {
        p.groups = all.by_ref().take(n).collect();
    }
    plans
}

/// Opens, decompresses and verifies one sealed blob (`base`: the plaintext of a delta's base).
pub(crate) fn decode_blob(
    repo: &Repository,
    cipher: &ObjectCipher,
    pack: &Id,
    id: &Id,
    loc: &BlobLocation,
    sealed: Vec<u8>,
    base: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let data = open_blob(cipher, pack, id, loc, sealed, base)?;
    let actual = repo.keys.chunk_id(&data);
    if actual != *id {
        return Err(RepoError::Corrupt {
            object: blob_name(pack, id),
            reason: format!("content hashes to {}", actual.short()),
        });
    }
    Ok(data)
}

/// Opens and decompresses one sealed blob without checking its id: for a base that only
/// serves to decode chunks whose ids are checked (the AEAD still authenticates its bytes).
fn open_blob(
    cipher: &ObjectCipher,
    pack: &Id,
    id: &Id,
    loc: &BlobLocation,
    sealed: Vec<u8>,
    base: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let plain = cipher
        .open_vec(loc.offset as u64, sealed)
        .map_err(|e| RepoError::codec(blob_name(pack, id), e))?;
    decompress(loc.flags, plain, loc.raw_len, base)
        .map_err(|e| RepoError::codec(blob_name(pack, id), e))
}

fn blob_name(pack: &Id, id: &Id) -> String {
    format!("blob {} in {}", id.short(), paths::pack(pack))
}

/// Reads one blob by id (through the index), from another copy if the first cannot be read.
/// An id the cache does not know takes in new index files first: a snapshot committed after
/// this process brought its cache up to date names chunks only those index files list.
pub async fn read_blob(repo: &Repository, id: &Id, needed_by: &str) -> Result<Vec<u8>> {
    read_blob_with(repo, &PackCiphers::default(), id, needed_by).await
}

/// [`read_blob`] with the pack ciphers (read from pack headers) of a reader that reads more.
async fn read_blob_with(
    repo: &Repository,
    ciphers: &PackCiphers,
    id: &Id,
    needed_by: &str,
) -> Result<Vec<u8>> {
    let mut r = repo.index.lookup(id)?;
    if r.is_none() {
        repo.index.sync(repo).await?;
        r = repo.index.lookup(id)?;
    }
    let r = r.ok_or_else(|| RepoError::MissingChunk {
        chunk: id.to_hex(),
        needed_by: needed_by.into(),
    })?;
    match ciphers.read(repo, &r.pack, id, &r.loc).await {
        Ok(b) => Ok(b),
        Err(e) => read_other_copy(repo, ciphers, id, &r.pack, e).await,
    }
}

/// After reading `id` from `failed_pack` failed with `first`: tries every other copy the
/// index knows, taking in new index files first if there is none (a pack deleted under a
/// reader whose lease lapsed, or a damaged copy). Returns `first` if no copy can be read.
async fn read_other_copy(
    repo: &Repository,
    ciphers: &PackCiphers,
    id: &Id,
    failed_pack: &Id,
    first: RepoError,
) -> Result<Vec<u8>> {
    for attempt in 0..2 {
        let others: Vec<BlobRef> =
            repo.index.locations(id)?.into_iter().filter(|b| b.pack != *failed_pack).collect();
        for b in &others {
            if let Ok(data) = ciphers.read(repo, &b.pack, id, &b.loc).await {
                return Ok(data);
            }
        }
        if attempt == 0 {
            repo.index.sync(repo).await?;
        }
    }
    Err(first)
}

pub(crate) struct Group {
    pack: Id,
    start: u64,
    len: u64,
    raw: u64,
    /// Plaintext bytes of its deltas: about what their bases take in the base cache.
    deltas: u64,
    items: Vec<(Id, BlobLocation)>,
    /// Bases of its deltas taken from the base cache once its window's bases were read
    /// ([`PackCiphers::pin_bases`]): the next window's prefetch may clear the cache first.
    pinned: HashMap<Id, Arc<Vec<u8>>>,
    /// A read this group shares with other small groups of its pack ([`share_reads`]), which
    /// covers its own range.
    shared: Option<Arc<SharedRead>>,
}

/// A copy of the sealed bytes of `loc` from a read of its pack that starts at `start`.
fn sealed_at(bytes: &RangeBytes, start: u64, loc: &BlobLocation) -> Vec<u8> {
    bytes.copy_range((loc.offset as u64 - start) as usize, loc.stored_len as usize)
}

/// One range read of a pack that several small groups share: the first group due makes it,
/// the others take their blobs from it, and it is freed with the last of them. If it fails,
/// each group reads its own range instead.
pub(crate) struct SharedRead {
    start: u64,
    len: u64,
    /// The bytes read, or `None` once the read failed.
    bytes: tokio::sync::OnceCell<Option<Arc<RangeBytes>>>,
}

/// Groups that small may share a read.
const SHARE_SMALL: u64 = 1 << 20;
/// A shared read spans at most this many bytes.
const SHARE_MAX: u64 = 4 << 20;
/// Groups ahead (in stream order) whose blobs a shared read may serve.
const SHARE_AHEAD: usize = 256;
/// Most bytes of shared reads planned within any [`SHARE_AHEAD`] consecutive groups: every
/// group a read serves lies within that many groups of the one that makes it, so this bounds
/// the shared reads held at once.
const SHARE_BUDGET: u64 = 16 << 20;

/// Lets small groups of one pack share a range read when their blobs lie near each other in
/// the pack but not in the stream. A restore of an hourly dump interleaves the newest
/// backup's deltas (a few hundred bytes each, side by side in its packs) with unchanged chunks
/// in older packs, so nearly every group held one blob: 4,583 reads for 5,918 chunks of the
/// twelfth bench dump, each a request on S3. Groups that share no read keep their own.
fn share_reads(groups: &mut [Group]) {
    let mut planned: std::collections::VecDeque<(usize, u64)> = Default::default();
    let mut in_budget = 0u64;
    for i in 0..groups.len() {
        // reads planned SHARE_AHEAD groups back serve no group from here on
        while let Some(&(_, len)) = planned.front().filter(|&&(at, _)| at + SHARE_AHEAD <= i) {
            planned.pop_front();
            in_budget -= len;
        }
        let g = &groups[i];
        if g.shared.is_some() || g.len > SHARE_SMALL {
            continue;
        }
        let pack = g.pack;
        let mut near: Vec<usize> = (i..groups.len().min(i + SHARE_AHEAD))
            .filter(|&j| {
                let h = &groups[j];
                h.pack == pack && h.shared.is_none() && h.len <= SHARE_SMALL
            })
            .collect();
        if near.len() < 2 {
            continue;
        }
        near.sort_by_key(|&j| groups[j].start);
        // the run of neighbours in the pack (gaps of at most GROUP_GAP) that holds group i
        let (mut members, mut start, mut end, mut found) = (Vec::new(), 0, 0, false);
        for j in near {
            let h = &groups[j];
            let joins = !members.is_empty()
                && h.start <= end + GROUP_GAP
                && (h.start + h.len).max(end) - start <= SHARE_MAX;
            if !joins {
                if found {
                    break;
                }
                members.clear();
                start = h.start;
                end = h.start;
            }
            members.push(j);
            end = end.max(h.start + h.len);
            found |= j == i;
        }
        let len = end - start;
        if members.len() < 2 || in_budget + len > SHARE_BUDGET {
            continue;
        }
        let read = Arc::new(SharedRead { start, len, bytes: Default::default() });
        for j in members {
            groups[j].shared = Some(read.clone());
        }
        planned.push_back((i, len));
        in_budget += len;
    }
}

fn group(entries: Vec<(Id, BlobRef)>) -> Vec<Group> {
    group_within(entries, GROUP_GAP, GROUP_BYTES)
}

/// Groups entries in order: neighbours in one pack at most `gap` apart share a group of at
/// most `max` bytes (stored, and decompressed). A blob that lies within the group's span
/// already (a chunk repeated in the stream, such as the zero regions of a disk image) joins it
/// without another read.
fn group_within(entries: Vec<(Id, BlobRef)>, gap: u64, max: u64) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for (id, r) in entries {
        let (stored, raw) = (r.loc.stored_len as u64, r.loc.raw_len as u64);
        let delta = if r.loc.base.is_some() { raw } else { 0 };
        if let Some(g) = out.last_mut() {
            let (end, at) = (g.start + g.len, r.loc.offset as u64);
            let inside = at >= g.start && at + stored <= end;
            let next = at >= end && at - end <= gap && at + stored - g.start <= max;
            if g.pack == r.pack
                && (inside || next)
                && g.raw + raw <= max
                && g.deltas + delta <= BASE_WINDOW_BYTES
            {
                g.len = g.len.max(at + stored - g.start);
                g.raw += raw;
                g.deltas += delta;
                g.items.push((id, r.loc));
                continue;
            }
        }
        out.push(Group {
            pack: r.pack,
            start: r.loc.offset as u64,
            len: stored,
            raw,
            deltas: delta,
            items: vec![(id, r.loc)],
            pinned: HashMap::new(),
            shared: None,
        });
    }
    out
}

/// Reads the bases a window's deltas need (its [`BasePlan`]) into the base cache, before the
/// window's chunks, so that each delta finds its base decoded. Best effort: a base not read
/// here is read on its own later, with its id checked.
async fn prefetch_bases(repo: &Arc<Repository>, ciphers: &Arc<PackCiphers>, plan: BasePlan) {
    let decoded = ciphers.read_planned(repo, plan).await;
    let bytes: usize = decoded.values().map(|d| d.len()).sum();
    let mut cache = ciphers.bases.lock().unwrap_or_else(|p| p.into_inner());
    cache.make_room(bytes.min(BASE_CACHE_BYTES));
    // only what fits: inserting more would clear the cache, and with it this window's first
    // bases (those left out are read on their own when needed)
    for (id, d) in decoded {
        if cache.bytes + d.len() <= BASE_CACHE_BYTES {
            cache.insert(id, d, false);
        }
    }
}

/// The bytes of `g`'s range, and the pack offset they start at: from its shared read
/// ([`share_reads`]) if it has one, else a read of its own. A shared read that failed (a pack
/// cut short past this group's blobs) is not tried again by each of its groups: each reads
/// its own range, whose error is its own.
async fn read_group(repo: &Repository, g: &Group) -> Result<(Arc<RangeBytes>, u64)> {
    let path = paths::pack(&g.pack);
    if let Some(s) = &g.shared {
        let read = s
            .bytes
            .get_or_init(|| async {
                repo.backend.get_range_pieces(&path, s.start, s.len).await.ok().map(Arc::new)
            })
            .await;
        if let Some(bytes) = read {
            return Ok((bytes.clone(), s.start));
        }
    }
    Ok((Arc::new(repo.backend.get_range_pieces(&path, g.start, g.len).await?), g.start))
}

/// Fetches and decodes a group with one range read; if that fails, each of its chunks on its
/// own, from the same copy or another ([`read_other_copy`]).
async fn fetch_group(
    repo: Arc<Repository>,
    ciphers: Arc<PackCiphers>,
    g: Group,
) -> Result<Vec<Vec<u8>>> {
    let (pack, items) = (g.pack, g.items.clone());
    match fetch_group_once(repo.clone(), ciphers.clone(), g).await {
        Ok(v) => Ok(v),
        Err(_) => {
            // one chunk at a time, each from its own copy again and then from any other, with
            // every base it uses checked: a base decoded unchecked ([`prefetch_bases`]) may
            // have been the cause, and the error then names the damaged base
            let mut out = Vec::with_capacity(items.len());
            for (id, loc) in &items {
                match ciphers.read(&repo, &pack, id, loc).await {
                    Ok(d) => out.push(d),
                    Err(e) => out.push(read_other_copy(&repo, &ciphers, id, &pack, e).await?),
                }
            }
            Ok(out)
        }
    }
}

async fn fetch_group_once(
    repo: Arc<Repository>,
    ciphers: Arc<PackCiphers>,
    g: Group,
) -> Result<Vec<Vec<u8>>> {
    let cipher = ciphers.get(&repo, &g.pack).await?;
    // the group's own bytes and its deltas' bases (usually in older packs), all at once
    let mut wanted: Vec<(Id, Id)> = Vec::new();
    for (id, loc) in &g.items {
        if let Some(b) = loc.base.filter(|b| !wanted.iter().any(|(w, _)| w == b)) {
            wanted.push((b, *id));
        }
    }
    let fetch_bases = futures::future::try_join_all(wanted.iter().map(|(b, of)| async {
        let base = match g.pinned.get(b) {
            Some(pinned) => pinned.clone(),
            None => ciphers.base(&repo, b, of).await?,
        };
        Ok::<_, RepoError>((*b, base))
    }));
    let (bases, (bytes, start)) =
        futures::future::try_join(fetch_bases, read_group(&repo, &g)).await?;
    let bases: HashMap<Id, Arc<Vec<u8>>> = bases.into_iter().collect();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(g.items.len());
        for (id, loc) in &g.items {
            out.push(decode_blob(
                &repo,
                &cipher,
                &g.pack,
                id,
                loc,
                sealed_at(&bytes, start, loc),
                loc.base.and_then(|b| bases.get(&b)).map(|b| b.as_slice()),
            )?);
        }
        Ok(out)
    })
    .await
    .map_err(RepoError::from)?
}

/// Fetches chunks in order with read-ahead and hands their plaintext, in order, to the
/// receiver returned by `new` (in groups; a chunk is never split).
pub struct OrderedReader {
    repo: Arc<Repository>,
    ciphers: Arc<PackCiphers>,
    tx: mpsc::Sender<Vec<Vec<u8>>>,
    label: String,
    /// Totals of the chunks sent so far.
    pub stats: RestoreStats,
}

impl OrderedReader {
    /// A reader that sends decoded chunks to the returned receiver (at most two groups queued);
    /// `label` names what is restored in errors.
    pub fn new(
        repo: Arc<Repository>,
        label: &str,
    ) -> (OrderedReader, mpsc::Receiver<Vec<Vec<u8>>>) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let r = OrderedReader {
            repo,
            ciphers: Arc::new(PackCiphers::default()),
            tx,
            label: label.into(),
            stats: RestoreStats::default(),
        };
        (r, rx)
    }

    /// Sends the chunks named by these content lists. Returns false if the receiver is gone.
    /// Lists end where chunk ids say (about every thousand chunks), not at pack ends: the ids
    /// of several lists are fed together, so that a pack they share is still one read. Lists
    /// are read with this reader's pack ciphers: a pack's header is read once, not once for
    /// each list in it.
    pub async fn feed_lists(&mut self, lists: &[Id]) -> Result<bool> {
        let mut ids: Vec<Id> = Vec::new();
        for list_id in lists {
            let list = read_blob_with(&self.repo, &self.ciphers, list_id, &self.label).await?;
            let entries = decode_list(&list).map_err(|e| {
                RepoError::format(format!("content list {} of {}", list_id.short(), self.label), e)
            })?;
            ids.extend(entries.iter().map(|e| e.0));
            if ids.len() >= LIST_MAX_ENTRIES {
                if !self.feed(&ids).await? {
                    return Ok(false);
                }
                ids.clear();
            }
        }
        self.feed(&ids).await
    }

    /// Sends these chunks. Returns false if the receiver is gone.
    pub async fn feed(&mut self, ids: &[Id]) -> Result<bool> {
        for part in ids.chunks(LIST_MAX_ENTRIES) {
            let mut refs = self.repo.index.lookup_many(part)?;
            if refs.iter().any(|r| r.is_none()) {
                // index files written since the cache was brought up to date (a prune's
                // repacked copies after this reader's lease lapsed)
                self.repo.index.sync(&self.repo).await?;
                refs = self.repo.index.lookup_many(part)?;
            }
            let mut located = Vec::with_capacity(part.len());
            for (id, r) in part.iter().zip(refs) {
                let r = r.ok_or_else(|| RepoError::MissingChunk {
                    chunk: id.to_hex(),
                    needed_by: self.label.clone(),
                })?;
                located.push((*id, r));
            }
            // one read-ahead across the windows: a window's bases are fetched when its first
            // group is due, while the previous window's groups are still in flight
            let mut groups = group(located);
            share_reads(&mut groups);
            let windows = windows(groups);
            let plans = plan_bases(&self.repo, &windows);
            let (repo, ciphers) = (self.repo.clone(), self.ciphers.clone());
            let chunks = stream::iter(windows.into_iter().zip(plans))
                .then(move |(window, plan)| {
                    let (repo, ciphers) = (repo.clone(), ciphers.clone());
                    async move {
                        prefetch_bases(&repo, &ciphers, plan).await;
                        // pinned now: a base read on its own for an early group, or the next
                        // window's prefetch, may clear the cache before a later group is due
                        let mut window = window;
                        for g in &mut window {
                            ciphers.pin_bases(g);
                        }
                        stream::iter(window)
                    }
                })
                .flatten()
                .map(|g| fetch_group(self.repo.clone(), self.ciphers.clone(), g))
                .buffered(READ_AHEAD);
            let mut chunks = std::pin::pin!(chunks);
            while let Some(decoded) = chunks.try_next().await? {
                self.stats.bytes += decoded.iter().map(|c| c.len() as u64).sum::<u64>();
                self.stats.chunks += decoded.len() as u64;
                if self.tx.send(decoded).await.is_err() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Writes the stream of `snap` to `out`, in order. `label` names the snapshot in errors.
pub async fn restore_stream<W: Write + Send + 'static>(
    repo: Arc<Repository>,
    snap: &Snapshot,
    label: &str,
    out: W,
    progress: Arc<dyn Progress>,
) -> Result<RestoreStats> {
    if snap.kind != crate::format::snapshot::SnapshotKind::Stream {
        return Err(RepoError::NotAStream(label.into()));
    }
    let (mut reader, mut rx) = OrderedReader::new(repo, label);
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut out = out;
        while let Some(group) = rx.blocking_recv() {
            for buf in group {
                out.write_all(&buf).map_err(RepoError::Output)?;
                progress.bytes_done(buf.len() as u64);
            }
        }
        out.flush().map_err(RepoError::Output)
    });
    let fed = reader.feed_lists(&snap.lists).await;
    let stats = std::mem::take(&mut reader.stats);
    drop(reader);
    let written = writer.await.map_err(RepoError::from)?;
    written?;
    fed?;
    if stats.bytes != snap.size {
        return Err(RepoError::Corrupt {
            object: label.into(),
            reason: format!("restored {} bytes, snapshot says {}", stats.bytes, snap.size),
        });
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{BlobType, FLAG_DELTA};

    /// Blobs laid end to end in `pack`, `(raw length, delta?)` each, stored as long as raw.
    fn laid_out(pack: u8, blobs: &[(u32, bool)]) -> Vec<(Id, BlobRef)> {
        let mut at = 40;
        blobs
            .iter()
            .enumerate()
            .map(|(i, &(raw, delta))| {
                let loc = BlobLocation {
                    blob_type: BlobType::Data,
                    flags: if delta { FLAG_DELTA } else { 0 },
                    offset: at,
                    stored_len: raw,
                    raw_len: raw,
                    base: delta.then_some(Id([0xbb; 32])),
                };
                at += raw;
                (Id([pack ^ i as u8; 32]), BlobRef { pack: Id([pack; 32]), loc })
            })
            .collect()
    }

    /// The shared reads the groups at stream position `t` hold: those with a group at or
    /// before `t` and one at or after it.
    fn held_at(groups: &[Group], t: usize) -> u64 {
        let mut seen: Vec<*const SharedRead> = Vec::new();
        let mut held = 0;
        for g in &groups[..=t] {
            if let Some(s) = &g.shared {
                let later = groups[t..]
                    .iter()
                    .any(|h| h.shared.as_ref().is_some_and(|x| Arc::ptr_eq(x, s)));
                if later && !seen.contains(&Arc::as_ptr(s)) {
                    seen.push(Arc::as_ptr(s));
                    held += s.len;
                }
            }
        }
        held
    }

    #[test]
    fn small_groups_of_one_pack_share_reads_within_bounds() {
        // a stream alternating between blobs side by side in pack 1 and in pack 2, as an
        // edited dump alternates between the newest backup's deltas and older chunks
        let interleave = |size: u32, n: usize| {
            let (a, b) =
                (laid_out(1, &vec![(size, true); n]), laid_out(2, &vec![(size, false); n]));
            let mut s = Vec::new();
            for (x, y) in a.into_iter().zip(b) {
                s.push(x);
                s.push(y);
            }
            s
        };
        let mut groups = group(interleave(300, 100));
        assert_eq!(groups.len(), 200);
        share_reads(&mut groups);
        let reads = |groups: &[Group]| {
            let r: std::collections::HashSet<*const SharedRead> =
                groups.iter().filter_map(|g| g.shared.as_ref().map(Arc::as_ptr)).collect();
            r.len()
        };
        // two reads: one of each pack, each spanning its blobs
        assert_eq!(reads(&groups), 2);
        assert!(groups.iter().all(|g| {
            let s = g.shared.as_ref().unwrap();
            s.start <= g.start && g.start + g.len <= s.start + s.len
        }));
        // groups further apart than SHARE_AHEAD share no read
        let mut groups = group(interleave(300, 1000));
        share_reads(&mut groups);
        assert!(reads(&groups) >= 2 * 1000 / SHARE_AHEAD, "{} reads", reads(&groups));
        // large groups keep their own reads; the reads held at once stay within the budget
        let mut groups = group(interleave(SHARE_SMALL as u32 + 1, 8));
        share_reads(&mut groups);
        assert!(groups.iter().all(|g| g.shared.is_none()));
        let mut groups = group(interleave(900 << 10, 400));
        share_reads(&mut groups);
        // shared where the budget allows, and not everywhere: 800 groups of 900 KiB
        assert!(groups.iter().any(|g| g.shared.is_some()));
        assert!(groups.iter().any(|g| g.shared.is_none()));
        for t in 0..groups.len() {
            assert!(held_at(&groups, t) <= SHARE_BUDGET, "at {t}: {}", held_at(&groups, t));
        }
        assert!(groups.iter().filter_map(|g| g.shared.as_ref()).all(|s| s.len <= SHARE_MAX));
    }

    #[test]
    fn a_default_size_pack_of_whole_chunks_is_one_group() {
        const MIB: u32 = 1 << 20;
        // 16 MiB and a closing chunk of 512 KiB, then the next pack
        let mut blobs = laid_out(1, &[(MIB / 2, false); 33]);
        blobs.extend(laid_out(2, &[(MIB, false), (MIB, false)]));
        let groups = group(blobs);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].items.len(), groups[0].len), (33, 33 * u64::from(MIB) / 2));
        assert_eq!(groups[1].items.len(), 2);
        // the same pack with a 300 KiB hole (a blob no longer needed) is read in two
        let mut holed = laid_out(1, &[(MIB / 2, false); 4]);
        holed.remove(2);
        holed[2].1.loc.offset += 300 << 10;
        assert_eq!(group(holed).len(), 2);
    }

    #[test]
    fn a_chunk_repeated_in_the_stream_is_read_once() {
        // a zero region: one blob, then the same blob again and again, then its neighbour
        let blobs = laid_out(1, &[(1 << 16, false), (1 << 16, false)]);
        let mut stream = vec![blobs[0]; 5];
        stream.push(blobs[1]);
        stream.push(blobs[0]);
        let groups = group(stream);
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].items.len(), groups[0].len), (7, 2 << 16));
        // a blob behind the group's start is not inside it: a read of its own
        let back = vec![blobs[1], blobs[0]];
        assert_eq!(group(back).len(), 2);
    }

    #[test]
    fn groups_and_windows_hold_at_most_a_base_cache_worth_of_deltas() {
        const MIB: u32 = 1 << 20;
        // 16 MiB of deltas in one pack: two groups, each within the window's budget
        let groups = group(laid_out(1, &[(MIB, true); 16]));
        assert_eq!(groups.len(), 2);
        assert!(groups.iter().all(|g| g.deltas <= BASE_WINDOW_BYTES));
        // whole chunks count nothing toward a window; deltas cut windows between groups
        let mut blobs = laid_out(1, &[(MIB, false); 16]);
        blobs.extend(laid_out(2, &[(3 * MIB, true); 6]));
        blobs.extend(laid_out(3, &[(MIB, false); 4]));
        let sizes = |w: &Vec<Group>| w.iter().map(|g| g.items.len()).collect::<Vec<_>>();
        let ws = windows(group(blobs));
        assert_eq!(ws.iter().map(sizes).collect::<Vec<_>>(), [vec![16, 2], vec![2], vec![2, 4]]);
        assert!(ws.iter().all(|w| w.iter().map(|g| g.deltas).sum::<u64>() <= BASE_WINDOW_BYTES));
    }
}
