//! `repo prune`: reclaim the space of data no snapshot needs, safely while backups run.
//!
//! Two phases (`format-spec/prune.md` argues the safety):
//! * mark: compute the chunks every snapshot needs (an on-disk set), write new index files for
//!   the packs that stay (repacking partly used packs while more than `max_unused` of the stored
//!   bytes would be unused), and store a prune record condemning the other packs and the old
//!   index files. Nothing is deleted in this phase.
//! * sweep: a record is confirmed by listing the backup leases alive after it was stored; once
//!   every one of them is gone, the packs it condemns are deleted, except any that a snapshot
//!   committed meanwhile needs (those are indexed again: "resurrected"). Old index files go
//!   before the packs, so a crash in between leaves only unindexed packs, never an index entry
//!   for a deleted pack.
//!
//! A run sweeps what earlier runs condemned, marks, and sweeps its own record at once when no
//! backup is running; otherwise the next run finishes it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use crate::format::Id;
use crate::format::envelope::MAGIC_PRUNE_RECORD;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::lock::LeaseKind;
use crate::format::prune::PruneRecord;
use crate::format::stream::decode_list;
use crate::repo::idset::{IdSet, Keep};
use crate::repo::lease::{Lease, live_leases, prune_records, remove_expired_leases};
use crate::repo::packer::PackBuilder;
use crate::repo::sorted::Sorter;
use crate::repo::{
    INDEX_FILE_BLOBS, INDEX_FILE_PACKS, RepoError, Repository, Result, SnapshotFilter,
    SortedIndexWriter, Unreadable, list_snapshots_checked, load_index_files, parse_pack, paths,
    read_blob, read_pack_footer, write_index,
};

/// How `repo prune` runs.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Compute what would be condemned and repacked, and write and delete nothing.
    pub dry_run: bool,
    /// Repack partly used packs while unused bytes exceed this share of the stored bytes.
    pub max_unused: f64,
    /// Entries per part of the sorted index a prune writes, and packs per set of it (tests
    /// make both small).
    pub index_part_entries: usize,
    /// See `index_part_entries`.
    pub index_set_packs: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused: 0.05,
            index_part_entries: INDEX_PART_ENTRIES,
            index_set_packs: crate::repo::SORTED_SET_PACKS,
        }
    }
}

/// Entries per part of the sorted index prune writes: 2.4 MB of entries or more per part,
/// beside the set's pack table (40 bytes a pack) that every part repeats.
pub const INDEX_PART_ENTRIES: usize = 1 << 16;

/// What `repo prune` did (JSON output). Counts of a sweep cover every record it finished, from this
/// run or earlier ones.
#[derive(Debug, Default, serde::Serialize)]
pub struct PruneReport {
    /// True when nothing was written or deleted.
    pub dry_run: bool,
    /// Snapshots read to compute the needed chunks.
    pub snapshots: u64,
    /// Distinct chunks and content lists the snapshots need, delta bases included.
    pub live_chunks: u64,
    /// Chunks no snapshot needs, kept only because a needed chunk is stored as a delta against
    /// them (included in `live_chunks`).
    pub delta_bases_kept: u64,
    /// Stored bytes of those chunks: space the deltas hold on to after a forget.
    pub delta_base_bytes: u64,
    /// Packs named by index files (not counting packs earlier records already condemn).
    pub packs: u64,
    /// Packs condemned by this run (no chunk needed, or repacked).
    pub packs_condemned: u64,
    /// Partly used packs whose needed blobs were copied into new packs (included in
    /// `packs_condemned`).
    pub packs_repacked: u64,
    /// Bytes of the packs condemned by this run.
    pub bytes_condemned: u64,
    /// Bytes of the new packs the repacking wrote.
    pub bytes_repacked_into: u64,
    /// Index files the mark wrote for the packs that stay.
    pub index_files_written: u64,
    /// Index files the mark found.
    pub index_files: u64,
    /// The index files were rewritten because there were many more than their entries need
    /// (small ones from many backups), whether or not packs were condemned.
    pub index_consolidated: bool,
    /// Deleted by this run (from this or earlier records).
    pub packs_deleted: u64,
    /// Bytes of the deleted packs.
    pub bytes_freed: u64,
    /// Index files deleted (superseded by those a mark wrote).
    pub index_files_deleted: u64,
    /// Condemned packs kept and indexed again because a snapshot committed meanwhile needs a chunk
    /// found only there.
    pub packs_resurrected: u64,
    /// Condemned packs kept because an index file that stays names them.
    pub packs_still_indexed: u64,
    /// Prune records swept (their packs deleted and the record removed).
    pub records_swept: u64,
    /// Records that wait for backups still running (finished by a later prune).
    pub records_waiting: u64,
    /// Backup and read leases (other than this prune's) alive when a record was found waiting for
    /// them.
    pub running_backups: u64,
    /// Temporary files of writes that never finished (killed processes), untouched for
    /// [`crate::fsutil::ABANDONED_AFTER`], removed (a dry run counts them).
    pub abandoned_files: u64,
    /// Their bytes.
    pub abandoned_bytes: u64,
    /// Wall-clock duration of the prune, seconds.
    pub seconds: f64,
}

/// Counts, and unless `dry_run` removes, the temporary files of writes abandoned long ago.
/// Best effort, after the prune's real work: a failure leaves them for the next prune.
async fn remove_abandoned(repo: &Repository, r: &mut PruneReport, dry_run: bool) {
    let before = crate::fsutil::abandoned_before();
    let Ok(abandoned) = repo.backend().list_abandoned(before).await else { return };
    for o in abandoned {
        if dry_run || repo.backend().delete(&o.path).await.is_ok() {
            r.abandoned_files += 1;
            r.abandoned_bytes += o.size;
        }
    }
}

/// The leases of this prune: the repository's own (opened with
/// [`crate::repo::Access::Prune`], or any other access, in which case a prune lease is taken
/// for the run). They are not waited for, and must hold without a gap until the last deletion.
struct Own {
    ids: HashSet<u64>,
    extra: Option<(Arc<Lease>, tokio::task::JoinHandle<()>)>,
}

impl Own {
    async fn take(repo: &Repository) -> Result<Own> {
        let mut ids: HashSet<u64> = repo.lease().map(|l| l.id()).into_iter().collect();
        let extra = match repo.lease() {
            Some(l) if l.kind() == LeaseKind::Prune => None,
            _ => {
                let l = Lease::acquire(repo.backend().clone(), LeaseKind::Prune).await?;
                ids.insert(l.id());
                let k = l.keep_alive();
                Some((l, k))
            }
        };
        Ok(Own { ids, extra })
    }
    fn ensure_fresh(&self, repo: &Repository) -> Result<()> {
        repo.ensure_lease()?;
        self.extra.as_ref().map_or(Ok(()), |(l, _)| l.ensure_fresh())
    }
    async fn release(self) {
        if let Some((l, k)) = self.extra {
            l.stop_and_release(Some(k)).await;
        }
    }
}

/// Runs a prune (a dry run only reads). Open the repository with
/// [`crate::repo::Access::Prune`]; with another access a prune lease is taken for the run.
pub async fn run(repo: Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport> {
    let start = Instant::now();
    let mut r = PruneReport { dry_run: opts.dry_run, ..Default::default() };
    if opts.dry_run {
        let live = live_set(&repo, &mut r, None).await?;
        let own = Own { ids: HashSet::new(), extra: None };
        mark(&repo, &live.set, opts, &mut r, &HashSet::new(), &own).await?;
        remove_abandoned(&repo, &mut r, true).await;
        r.seconds = start.elapsed().as_secs_f64();
        return Ok(r);
    }
    let own = Own::take(&repo).await?;
    let result = prune_under(&repo, opts, &mut r, &own).await;
    own.release().await;
    result?;
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

async fn prune_under(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    r: &mut PruneReport,
    own: &Own,
) -> Result<()> {
    let others: Vec<_> = live_leases(repo.backend())
        .await?
        .into_iter()
        .filter(|l| l.kind == LeaseKind::Prune && !own.ids.contains(&l.id))
        .collect();
    if let Some(o) = others.first() {
        let age = crate::repo::lease::now_secs().saturating_sub(o.time);
        let when = if age >= 0 {
            format!("refreshed {age} s ago")
        } else {
            "dated in the future by its holder's clock".into()
        };
        return Err(RepoError::LockConflict(format!(
            "another prune is running (lease {:016x}, {when}); try again later",
            o.id
        )));
    }
    // one live set serves the whole run, each step adding the snapshots committed since
    let live = sweep(repo, r, own, None).await?;
    let live = live_set(repo, r, live).await?;
    let waiting: HashSet<Id> =
        prune_records(repo).await?.into_iter().flat_map(|(_, rec)| rec.packs).collect();
    mark(repo, &live.set, opts, r, &waiting, own).await?;
    sweep(repo, r, own, Some(live)).await?;
    remove_expired_leases(repo.backend()).await?;
    remove_abandoned(repo, r, false).await;
    Ok(())
}

/// The live set and what it was built from.
struct Live {
    /// Every chunk, content list and delta base the snapshots below need.
    set: IdSet,
    /// Snapshots whose needs are in the set.
    snapshots: HashSet<Id>,
    /// Content lists read (their chunks are in the set).
    lists: HashSet<Id>,
    /// Chunks added only as bases of needed deltas, and their stored bytes.
    bases: (u64, u64),
}

/// Every chunk and content list that some snapshot needs. Any unreadable snapshot or list
/// stops the prune: nothing is deleted while unsure.
///
/// With `prev` (built earlier in this run), only snapshots committed since are read and
/// added: a snapshot forgotten since leaves its chunks in the set, which only keeps more,
/// never less. The live set of 925,000 chunks took most of a prune's time when it was built
/// three times (sweep, mark, sweep).
async fn live_set(repo: &Arc<Repository>, r: &mut PruneReport, prev: Option<Live>) -> Result<Live> {
    // a damaged index file hides packs (they would look unindexed and be condemned) and a
    // damaged snapshot hides needed chunks: either way, stop before anything is written.
    // Snapshots are listed before the index files are read: a backup writes its index files
    // before its snapshot, so every snapshot listed has its chunks in the index read after
    // (the other order missed a backup that committed between the two)
    let (snaps, mut unreadable) = list_snapshots_checked(repo, &SnapshotFilter::default()).await?;
    unreadable.extend(repo.index().sync(repo).await?);
    if !unreadable.is_empty() {
        return Err(RepoError::PruneUnsure { unreadable });
    }
    let mut live = match prev {
        Some(l) => l,
        None => Live {
            set: IdSet::temp(super::scratch_dir(repo))?,
            snapshots: HashSet::new(),
            lists: HashSet::new(),
            bases: (0, 0),
        },
    };
    r.snapshots = snaps.len() as u64;
    let mut batch = live.set.batch();
    for (id, s) in &snaps {
        if !live.snapshots.insert(*id) {
            continue;
        }
        let label = super::snapshot_label(id, s);
        batch.add(&s.lists)?;
        // a list already read for an earlier snapshot (unchanged regions of hourly dumps
        // share their lists) has its chunks in the batch or the set already
        for l in &s.lists {
            if !live.lists.insert(*l) {
                continue;
            }
            let entries = decode_list(&read_blob(repo, l, &label).await?)
                .map_err(|e| RepoError::format(format!("content list of {label}"), e))?;
            let ids: Vec<Id> = entries.into_iter().map(|e| e.0).collect();
            batch.add(&ids)?;
        }
        if s.kind.has_catalog() {
            crate::repo::tree::file_blobs(repo, s, &label, |ids| batch.add(ids)).await?;
        }
    }
    live.set.insert_batch(batch)?;
    let (n, bytes) = keep_delta_bases(repo, &live.set)?;
    live.bases = (live.bases.0 + n, live.bases.1 + bytes);
    (r.delta_bases_kept, r.delta_base_bytes) = live.bases;
    r.live_chunks = live.set.len()?;
    Ok(live)
}

/// Adds to `live` the base of every delta copy of a live chunk, and the bases of those bases
/// (a chunk stored twice may be a base in one copy and a delta in another), until nothing is
/// added. Conservative: a base is kept if any copy of a live chunk needs it. Returns how many
/// chunks were kept only as bases, and their stored bytes.
fn keep_delta_bases(repo: &Repository, live: &IdSet) -> Result<(u64, u64)> {
    fn flush(repo: &Repository, live: &IdSet, pairs: &mut Vec<(Id, Id)>) -> Result<(u64, u64)> {
        let ids: Vec<Id> = pairs.iter().map(|p| p.0).collect();
        let bases: Vec<Id> = pairs
            .drain(..)
            .zip(live.contains_many(&ids)?)
            .filter(|(_, live)| *live)
            .map(|((_, base), _)| base)
            .collect();
        let mut missing: Vec<Id> = bases
            .iter()
            .zip(live.contains_many(&bases)?)
            .filter(|(_, there)| !*there)
            .map(|(b, _)| *b)
            .collect();
        missing.sort_unstable();
        missing.dedup(); // a base shared by several deltas counts once
        live.insert_many(&missing)?;
        let refs = repo.index().lookup_many(&missing)?;
        let bytes = refs.iter().flatten().map(|b| u64::from(b.loc.stored_len)).sum();
        Ok((missing.len() as u64, bytes))
    }
    let (mut kept, mut bytes) = (0, 0);
    loop {
        let before = kept;
        let mut pairs = Vec::new();
        let mut add = |(n, b): (u64, u64)| {
            kept += n;
            bytes += b;
        };
        repo.index().for_each_delta(|id, base| {
            pairs.push((id, base));
            if pairs.len() >= 4096 {
                add(flush(repo, live, &mut pairs)?);
            }
            Ok(())
        })?;
        add(flush(repo, live, &mut pairs)?);
        if kept == before {
            break;
        }
    }
    Ok((kept, bytes))
}

/// Pass 1 of the mark: which copy of each needed chunk is kept, and how much of each pack
/// (named by the index files `index_ids`, less the packs earlier records condemn) is used.
///
/// The copies the index files list are sorted by chunk id (external sort) and merged with
/// the live set, which is in id order too: no lookup per copy. A needed chunk is kept in its
/// first copy in (id, whole before delta, pack) order: a whole copy whenever there is one,
/// because writers count a chunk with a whole copy as a chain's end, and keeping a delta copy
/// of it instead would make every chain built on it deeper than readers follow (writers chain
/// deltas four deep, the most readers follow). Only chunks stored more than once have that
/// choice written into the set, for the repacking ([`IdSet::keep_many`] gives the only copy
/// of the others to whichever pack asks). This relies on every value in the set being "no
/// pack yet" when the mark starts: nothing before it may record a pack. Asking the set once
/// per copy, in random order, took 9 of the 21 seconds of a prune of 1.85 M chunks.
async fn pack_usage(
    repo: &Arc<Repository>,
    live: &IdSet,
    index_ids: &[Id],
    doomed_before: &HashSet<Id>,
) -> Result<HashMap<Id, PackUse>> {
    let mut usage: HashMap<Id, PackUse> = HashMap::new();
    let mut copies = Sorter::new(super::scratch_dir(repo));
    let mut files = std::pin::pin!(load_index_files(repo, index_ids.to_vec()));
    while let Some(f) = files.next().await {
        for p in &f?.packs {
            if doomed_before.contains(&p.pack) {
                continue;
            }
            // a pack's entries may be spread over several files (the parts of a sorted
            // index), and a pack may be named twice (a prune that ended before its sweep):
            // every entry is taken, and repeats of one (id, pack) are passed over below
            usage.entry(p.pack).or_insert(PackUse { len: p.pack_len, ..Default::default() });
            for (id, loc) in &p.blobs {
                // whole copies sort first (see above)
                let mut v = [0u8; 37];
                v[0] = u8::from(loc.base.is_some());
                v[1..33].copy_from_slice(&p.pack.0);
                v[33..].copy_from_slice(&loc.stored_len.to_le_bytes());
                copies.push(&id.0, &v)?;
            }
        }
    }
    let mut kept = live.batch();
    live.with_sorted(|needed| {
        // the smallest needed id not yet passed
        let mut head: Option<Id> = needed.next().transpose()?;
        // the id of the copies being merged, whether it is needed, and its first copy's pack
        let mut current: Option<(Id, bool, Id)> = None;
        let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
        for c in copies.into_sorted()? {
            let (k, v) = c?;
            // the same copy listed twice (its records are equal, and adjacent once sorted)
            if last.as_ref().is_some_and(|(lk, lv)| *lk == k && *lv == v) {
                continue;
            }
            let (Ok(id), Some(pack), Some(len)) = (
                <[u8; 32]>::try_from(&k[..]).map(Id),
                v.get(1..33).and_then(|b| <[u8; 32]>::try_from(b).ok()).map(Id),
                v.get(33..37).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes),
            ) else {
                let path = super::scratch_dir(repo).display().to_string();
                return Err(RepoError::Cache { path, reason: "sorted copy record damaged".into() });
            };
            let u = usage.entry(pack).or_default();
            match current {
                Some((cur, is_needed, first)) if cur == id => {
                    // a further copy: dead, and the first copy's pack is written down
                    u.dead += u64::from(len);
                    if is_needed && first != pack {
                        kept.add_kept(&id, &first)?;
                    }
                }
                _ => {
                    let is_needed = loop {
                        match head {
                            Some(n) if n < id => head = needed.next().transpose()?,
                            Some(n) => break n == id,
                            None => break false,
                        }
                    };
                    if is_needed {
                        u.live += u64::from(len);
                    } else {
                        u.dead += u64::from(len);
                    }
                    current = Some((id, is_needed, pack));
                }
            }
            last = Some((k, v));
        }
        Ok(())
    })?;
    live.assign_batch(kept)?;
    Ok(usage)
}

#[derive(Default, Clone, Copy)]
struct PackUse {
    len: u64,
    live: u64,
    dead: u64,
}

/// Index files beyond twice what the entries need before a prune rewrites them all.
const CONSOLIDATE_SLACK: u64 = 16;

/// The mark: the live set from every snapshot (and the bases of live deltas), packs sorted
/// into kept, repacked and condemned, repacking, new index files, then the prune record.
// Long (about 115 lines) on purpose: each step's place in the order is part of the safety
// argument in format-spec/prune.md (lease checks before writes, listings before leases, the
// record last); split into helpers the order would no longer be visible in one place.
async fn mark(
    repo: &Arc<Repository>,
    live: &IdSet,
    opts: &PruneOptions,
    r: &mut PruneReport,
    doomed_before: &HashSet<Id>,
    own: &Own,
) -> Result<()> {
    let index_ids: Vec<Id> = repo
        .backend()
        .list(paths::INDEX_DIR)
        .await?
        .iter()
        .filter_map(|o| paths::id_of(&o.path))
        .collect();
    let usage = pack_usage(repo, live, &index_ids, doomed_before).await?;
    r.packs = usage.len() as u64;
    r.index_files = index_ids.len() as u64;
    // packs in no index: a dead backup's, unless a backup is running (then maybe its own).
    // `data/` is listed before the leases: a pack listed was written under a lease written
    // before it, so its writer is either seen running here or has ended (and a pack it indexed
    // meanwhile is kept by the sweep, which keeps every pack an index file still names)
    let listed = repo.backend().list(paths::DATA_DIR).await?;
    let running = live_leases(repo.backend())
        .await?
        .iter()
        .filter(|l| l.kind == LeaseKind::Backup && !own.ids.contains(&l.id))
        .count();
    let mut condemned: Vec<(Id, u64)> =
        usage.iter().filter(|(_, u)| u.live == 0).map(|(p, u)| (*p, u.len)).collect();
    if running == 0 {
        for o in listed {
            if let Some(p) = paths::id_of(&o.path)
                .filter(|p| !usage.contains_key(p) && !doomed_before.contains(p))
            {
                condemned.push((p, o.size));
            }
        }
    }
    // repack the emptiest packs while too much stored space is unused
    let total: u64 = usage.values().map(|u| u.live + u.dead).sum();
    let mut unused: u64 = usage.values().filter(|u| u.live > 0).map(|u| u.dead).sum();
    let mut partly: Vec<(Id, PackUse)> =
        usage.iter().filter(|(_, u)| u.live > 0 && u.dead > 0).map(|(p, u)| (*p, *u)).collect();
    partly.sort_by(|a, b| (b.1.dead * a.1.len).cmp(&(a.1.dead * b.1.len)).then(a.0.cmp(&b.0)));
    let mut repack = Vec::new();
    for (p, u) in partly {
        if (unused as f64) <= opts.max_unused * total as f64 {
            break;
        }
        unused -= u.dead;
        repack.push((p, u.len));
    }
    r.packs_condemned = (condemned.len() + repack.len()) as u64;
    r.packs_repacked = repack.len() as u64;
    r.bytes_condemned = condemned.iter().chain(&repack).map(|(_, l)| l).sum();
    // many small index files (a backup writes at least one) are rewritten into full ones even
    // when nothing else is to do, so that a fresh cache does not fetch thousands of objects
    let needed = (usage.len().div_ceil(INDEX_FILE_PACKS) as u64)
        .max(r.live_chunks.div_ceil(INDEX_FILE_BLOBS as u64))
        .max(1);
    r.index_consolidated = index_ids.len() as u64 > 2 * needed + CONSOLIDATE_SLACK;
    if opts.dry_run || (condemned.is_empty() && repack.is_empty() && !r.index_consolidated) {
        return Ok(());
    }
    // what the mark writes rests on listings made under this prune's lease: after a long
    // pause another prune may have replaced them
    own.ensure_fresh(repo)?;
    let new_packs = repack_packs(repo, live, &repack, r).await?;
    // pass 2: index files for everything that stays, then the record; nothing deleted yet
    let gone: HashSet<Id> = condemned
        .iter()
        .chain(&repack)
        .map(|(p, _)| *p)
        .chain(doomed_before.iter().copied())
        .collect();
    // one sorted index of every entry that stays (format-spec/index.md): a fresh cache
    // writes its parts straight into its run as they download
    let mut index = SortedIndexWriter::new(
        super::scratch_dir(repo),
        opts.index_part_entries,
        opts.index_set_packs,
    );
    for p in &new_packs {
        index.add(p)?;
    }
    let mut files = std::pin::pin!(load_index_files(repo, index_ids.clone()));
    while let Some(f) = files.next().await {
        for p in f?.packs {
            if !gone.contains(&p.pack) {
                index.add(&p)?;
            }
        }
    }
    r.index_files_written += index.write(repo).await?;
    let rec = PruneRecord {
        time_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        confirmed: false,
        waiting: vec![],
        packs: condemned.iter().chain(&repack).map(|(p, _)| *p).collect(),
        index_files: index_ids,
    };
    own.ensure_fresh(repo)?;
    put_record(repo, &rec).await?;
    Ok(())
}

async fn put_record(repo: &Repository, rec: &PruneRecord) -> Result<Id> {
    let bytes = repo.seal(MAGIC_PRUNE_RECORD, &rec.encode())?;
    let id = Id::of_bytes(&bytes);
    repo.backend().put(&paths::prune_record(&id), bytes).await?;
    Ok(id)
}

/// Copies the kept chunks of `packs` into new packs; returns their index entries.
async fn repack_packs(
    repo: &Arc<Repository>,
    live: &IdSet,
    packs: &[(Id, u64)],
    r: &mut PruneReport,
) -> Result<Vec<IndexPack>> {
    let mut out = Vec::new();
    let mut builder: Option<PackBuilder> = None;
    for (p, _) in packs {
        // one read per pack: it is small, and every kept blob of it is needed
        let bytes = repo.backend().get(&paths::pack(p)).await?;
        let (cipher, footer) = parse_pack(repo, p, &bytes)?;
        let ids: Vec<Id> = footer.blobs.iter().map(|b| b.0).collect();
        let keep = live.keep_many(&ids, p)?;
        for ((id, loc), k) in footer.blobs.iter().zip(keep) {
            if k != Keep::Here {
                continue;
            }
            let sealed = &bytes[loc.offset as usize..(loc.offset + loc.stored_len) as usize];
            let stored = cipher.open(loc.offset as u64, sealed).map_err(|e| {
                RepoError::codec(format!("blob {} in {}", id.short(), paths::pack(p)), e)
            })?;
            let b = match builder.as_mut() {
                Some(b) => b,
                None => builder.insert(repo.pack_builder(repo.config().pack_target)?),
            };
            b.add(loc.blob_type, *id, loc.flags, loc.raw_len, loc.base, stored)?;
            if b.is_full()
                && let Some(full) = builder.take()
            {
                out.push(store_pack(repo, full, r).await?);
            }
        }
    }
    if let Some(b) = builder.filter(|b| !b.is_empty()) {
        out.push(store_pack(repo, b, r).await?);
    }
    Ok(out)
}

async fn store_pack(repo: &Repository, b: PackBuilder, r: &mut PruneReport) -> Result<IndexPack> {
    let f = b.finish()?;
    r.bytes_repacked_into += f.bytes.len() as u64;
    repo.backend().put(&paths::pack(&f.id), f.bytes).await?;
    Ok(f.index)
}

/// Confirms unconfirmed records, then deletes what every confirmed record whose backups have
/// all ended condemns, resurrecting packs that snapshots committed meanwhile need.
// Long (about 115 lines) on purpose, as `mark`: the order of confirm, wait for leases,
// resurrect, delete packs, delete index files and records is the safety argument.
async fn sweep(
    repo: &Arc<Repository>,
    r: &mut PruneReport,
    own: &Own,
    prev: Option<Live>,
) -> Result<Option<Live>> {
    let records = prune_records(repo).await?;
    if records.is_empty() {
        return Ok(prev);
    }
    // backups and readers alike: a reader that missed a record may be using what it condemns
    let backups: HashSet<u64> = live_leases(repo.backend())
        .await?
        .iter()
        .filter(|l| l.kind != LeaseKind::Prune && !own.ids.contains(&l.id))
        .map(|l| l.id)
        .collect();
    let mut ready = Vec::new();
    for (mut rid, mut rec) in records {
        if !rec.confirmed {
            // the leases alive now include every backup or reader that could have missed
            // this record
            rec.confirmed = true;
            rec.waiting = backups.iter().copied().collect();
            rec.waiting.sort();
            let confirmed = put_record(repo, &rec).await?;
            repo.backend().delete(&paths::prune_record(&rid)).await?;
            rid = confirmed;
        }
        if rec.waiting.iter().any(|l| backups.contains(l)) {
            r.records_waiting += 1;
            r.running_backups = backups.len() as u64;
            continue;
        }
        ready.push((rid, rec));
    }
    if ready.is_empty() {
        return Ok(prev);
    }
    // snapshots listed now include every backup that ended before the leases were listed
    let mut scratch = PruneReport::default();
    let live = live_set(repo, &mut scratch, prev).await?;
    let doomed_packs: HashSet<Id> =
        ready.iter().flat_map(|(_, rec)| rec.packs.iter().copied()).collect();
    let doomed_index: HashSet<Id> =
        ready.iter().flat_map(|(_, rec)| rec.index_files.iter().copied()).collect();
    // chunks available in packs that stay, per the index files that stay; and condemned
    // packs that an index file that stays still names (`repair index` ran, or a backup that
    // ended after the mark indexed a pack the mark saw unindexed): deleting those would leave
    // index entries that backups deduplicate against, so they are kept
    let avail = IdSet::temp(super::scratch_dir(repo))?;
    let mut available = avail.batch();
    let mut still_named: HashSet<Id> = HashSet::new();
    let staying: Vec<Id> = repo
        .backend()
        .list(paths::INDEX_DIR)
        .await?
        .iter()
        .filter_map(|o| paths::id_of(&o.path).filter(|i| !doomed_index.contains(i)))
        .collect();
    let mut files = std::pin::pin!(load_index_files(repo, staying));
    while let Some(f) = files.next().await {
        let f: IndexFile = f?;
        for p in &f.packs {
            if doomed_packs.contains(&p.pack) {
                still_named.insert(p.pack);
            } else {
                available.add(&p.blobs.iter().map(|b| b.0).collect::<Vec<_>>())?;
            }
        }
    }
    avail.insert_batch(available)?;
    let sizes: HashMap<Id, u64> = repo
        .backend()
        .list(paths::DATA_DIR)
        .await?
        .iter()
        .filter_map(|o| paths::id_of(&o.path).map(|i| (i, o.size)))
        .collect();
    let mut delete = Vec::new();
    for p in &doomed_packs {
        let Some(size) = sizes.get(p) else { continue };
        if still_named.contains(p) {
            r.packs_still_indexed += 1;
            continue;
        }
        let footer = match read_pack_footer(repo, p, *size).await {
            Ok(f) => f,
            Err(e) => {
                let unreadable = vec![Unreadable { object: paths::pack(p), error: e.to_string() }];
                return Err(RepoError::PruneUnsure { unreadable });
            }
        };
        let ids: Vec<Id> = footer.blobs.iter().map(|b| b.0).collect();
        let needed = live.set.contains_many(&ids)?;
        let there = avail.contains_many(&ids)?;
        if needed.iter().zip(&there).any(|(n, a)| *n && !*a) {
            write_index(repo, vec![footer], vec![]).await?; // needed again: keep and index it
            avail.insert_many(&ids)?;
            r.packs_resurrected += 1;
        } else {
            delete.push((*p, *size));
        }
    }
    // deleting on the strength of leases is only sound while this prune's own lease has held:
    // after a long pause, another prune may have run meanwhile
    own.ensure_fresh(repo)?;
    for ix in &doomed_index {
        repo.backend().delete(&paths::index(ix)).await?;
        r.index_files_deleted += 1;
    }
    let mut deletions = stream::iter(delete)
        .map(|(p, size)| async move { repo.backend().delete(&paths::pack(&p)).await.map(|_| size) })
        .buffer_unordered(8);
    while let Some(res) = deletions.next().await {
        r.bytes_freed += res?;
        r.packs_deleted += 1;
    }
    for (rid, _) in &ready {
        repo.backend().delete(&paths::prune_record(rid)).await?;
        r.records_swept += 1;
    }
    repo.index().clear()?;
    repo.index().sync(repo).await?;
    Ok(Some(live))
}
