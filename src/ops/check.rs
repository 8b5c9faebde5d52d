//! `repo check`: structure, optionally every byte, optionally that dumps restore.
//!
//! It only reads the repository (the local cache is the one thing it may rebuild) under a read
//! lease ([`crate::repo::Access::Read`]), so backups run on during a check and a prune neither
//! deletes what it is checking nor makes it report damage that is not there. Damage is reported per
//! damaged object together with
//! every snapshot that needs it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};

use super::verify_restore::{RestoreVerdict, VerifyRestoreOptions, verify_restore};
use crate::backend::ObjectInfo;
use crate::format::Id;
use crate::format::bundle::Bundle;
use crate::format::envelope::{MAGIC_BUNDLE, MAGIC_SNAPSHOT};
use crate::format::index::BlobLocation;
use crate::format::pack::MAX_DELTA_DEPTH;
use crate::format::snapshot::Snapshot;
use crate::format::stream::decode_list;
use crate::repo::{
    BlobRef, CacheReader, Condemned, IndexCache, RepoError, Repository, Result, paths,
    verify_deltas, verify_pack_bytes,
};

/// Which packs `--read-data-subset` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Every pack.
    All,
    /// Part n of m (1-based): a pack is in part `(first 4 bytes of its id as u32 LE) % m + 1`,
    /// so parts 1..=m together read every pack exactly once.
    Part {
        /// Which part to read, 1 ..= `m`.
        n: u32,
        /// How many parts the packs are split into (12 with one part a month reads every pack
        /// once a year).
        m: u32,
    },
    /// Each pack with this probability (0..=1).
    Fraction(f64),
    /// Random packs up to this many bytes.
    Bytes(u64),
}

/// A `--read-data-subset` that does not parse (the argument as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected n/m (1/12), a percentage (5%) or a size (500M, 2G)")]
pub struct SubsetError(pub String);

impl FromStr for Subset {
    type Err = SubsetError;
    fn from_str(s: &str) -> std::result::Result<Self, SubsetError> {
        let bad = || SubsetError(s.into());
        if let Some((n, m)) = s.split_once('/') {
            let (n, m): (u32, u32) =
                (n.trim().parse().map_err(|_| bad())?, m.trim().parse().map_err(|_| bad())?);
            if n == 0 || m == 0 || n > m {
                return Err(bad());
            }
            return Ok(Subset::Part { n, m });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            return Ok(Subset::Fraction(p / 100.0));
        }
        let (num, mult) = match s.trim().chars().last() {
            Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
            Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
            Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
            Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
            _ => (s, 1),
        };
        let n: u64 = num.trim().parse().map_err(|_| bad())?;
        Ok(Subset::Bytes(n.saturating_mul(mult)))
    }
}

impl Subset {
    fn select(&self, packs: Vec<(Id, u64)>) -> Vec<(Id, u64)> {
        match *self {
            Subset::All => packs,
            Subset::Part { n, m } => packs
                .into_iter()
                .filter(|(id, _)| {
                    u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]) % m == n - 1
                })
                .collect(),
            Subset::Fraction(f) => packs.into_iter().filter(|_| random_unit() < f).collect(),
            Subset::Bytes(budget) => {
                let mut keyed: Vec<_> = packs.into_iter().map(|p| (random_unit(), p)).collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut used = 0u64;
                keyed
                    .into_iter()
                    .map(|(_, p)| p)
                    .take_while(|(_, len)| {
                        let take = used < budget;
                        used += len;
                        take
                    })
                    .collect()
            }
        }
    }
}

fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = crate::codec::random_bytes(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// What `repo check` verifies beyond the structure (index files, pack sizes, snapshots and their
/// content lists).
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// `--read-data`/`--read-data-subset`: read and verify these packs byte for byte; `None` reads
    /// no pack data.
    pub read_data: Option<Subset>,
    /// `--verify-restore`: restore snapshots and check that their dumps load.
    pub verify_restore: Option<VerifyRestoreOptions>,
    /// `--max-age` rules: names whose newest snapshot is too old are reported as late.
    pub max_age: Vec<super::freshness::MaxAge>,
}

/// One damaged object and the snapshots that cannot be restored because of it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Damage {
    /// The damaged object: a pack path, an index or snapshot file, `index` for chunks in no index
    /// file, or `snapshot <id>` for a dump that does not restore.
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
    /// The snapshots that need the object (short id, name and time), hence cannot be restored
    /// completely.
    pub snapshots: Vec<String>,
}

/// The result of `repo check` (JSON output); the binary exits 4 when `ok` is false.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    /// True when no damage was found (notes and late names do not count).
    pub ok: bool,
    /// Snapshot files read and decoded (a damaged one is listed in `damage` instead).
    pub snapshots: u64,
    /// Index files listed.
    pub index_files: u64,
    /// Pack files present under `data/`.
    pub packs: u64,
    /// Distinct chunk ids (data and content lists) the index files list.
    pub blobs: u64,
    /// Chunk ids stored in more than one pack (concurrent backups; reclaimed by prune).
    pub duplicate_blobs: u64,
    /// Packs in no index file and not condemned by a prune (a running or killed backup, or a lost
    /// index file).
    pub orphan_packs: u64,
    /// Packs read by the data check.
    pub packs_read: u64,
    /// Bytes of those packs downloaded.
    pub bytes_read: u64,
    /// Ids of the packs read by the data check.
    pub read_packs: Vec<String>,
    /// Every damaged object with the snapshots it hurts, sorted by object.
    pub damage: Vec<Damage>,
    /// Not damage: orphan packs, duplicates, a rebuilt cache.
    pub notes: Vec<String>,
    /// One verdict per snapshot restored by `--verify-restore`.
    pub restores: Vec<RestoreVerdict>,
    /// Full ids of snapshots that cannot be restored completely.
    pub broken_snapshots: Vec<String>,
    /// Delta blobs whose base a prune removed because nothing needed it (not damage).
    pub deltas_without_base: u64,
    /// Names whose newest snapshot is older than `--max-age` allows (not damage).
    pub late: Vec<super::freshness::Late>,
    /// True when index files are damaged or packs are in no index: the index may be
    /// incomplete, so nothing should be removed on the strength of this check.
    pub index_incomplete: bool,
    /// Wall-clock duration of the check, seconds.
    pub seconds: f64,
}

/// Damage causes, keyed by the object at fault, with the snapshots hurt.
#[derive(Default)]
struct Causes(BTreeMap<String, (String, BTreeSet<String>, u64)>);

impl Causes {
    fn add(&mut self, object: String, problem: impl FnOnce() -> String, snapshot: Option<&str>) {
        let e = self.0.entry(object).or_insert_with(|| (problem(), BTreeSet::new(), 0));
        e.2 += 1;
        if let Some(s) = snapshot {
            e.1.insert(s.to_string());
        }
    }
}

/// What the check knows about the index files. Every copy they list is in a temporary redb
/// database (not in memory: a year of hourly dumps is millions of chunks), looked up through
/// one read transaction; only per-pack facts and damage are kept in memory.
struct State {
    /// Every copy the readable index files list (declared first: dropped before the
    /// database it reads).
    reader: CacheReader,
    /// The temporary database `reader` reads, kept open (and removed on drop).
    _index: IndexCache,
    indexed_packs: HashMap<Id, u64>,
    /// What the index files place in each pack: how many copies, and a digest of their
    /// (id, offset) pairs (see [`entry_digest`]).
    pack_entries: HashMap<Id, (u64, u128)>,
    /// Condemned packs a prune has deleted since: their copies do not count.
    gone: HashSet<Id>,
    /// What prunes condemned when the repository was opened: copies in those packs are the
    /// last choice.
    condemned: Arc<Condemned>,
    bad_packs: HashMap<Id, String>,
    bad_blobs: HashSet<(Id, Id)>,
}

impl State {
    /// The copies of `id` that count, those in packs a prune is removing last.
    fn copies(&self, id: &Id) -> Result<Vec<(Id, BlobLocation)>> {
        let mut c: Vec<(Id, BlobLocation)> = self
            .reader
            .copies(id)?
            .into_iter()
            .filter(|b| !self.gone.contains(&b.pack))
            .map(|b| (b.pack, b.loc))
            .collect();
        c.sort_by_key(|(p, _)| self.condemned.packs.contains(p));
        Ok(c)
    }
    /// A copy of `id` that can be read: its pack and blob are not damaged and, for a delta,
    /// its base is usable too.
    fn usable(&self, id: &Id) -> Result<Option<(Id, BlobLocation)>> {
        self.usable_at(id, 0)
    }
    fn usable_at(&self, id: &Id, depth: u32) -> Result<Option<(Id, BlobLocation)>> {
        if depth > MAX_DELTA_DEPTH {
            return Ok(None);
        }
        for (p, l) in self.copies(id)? {
            if self.bad_packs.contains_key(&p) || self.bad_blobs.contains(&(p, *id)) {
                continue;
            }
            match l.base {
                Some(b) if self.usable_at(&b, depth + 1)?.is_none() => continue,
                _ => return Ok(Some((p, l))),
            }
        }
        Ok(None)
    }
    /// The object to blame for an unusable blob (for a delta whose own copy is fine: its
    /// base's).
    fn blame(&self, id: &Id) -> Result<String> {
        self.blame_at(id, 0)
    }
    fn blame_at(&self, id: &Id, depth: u32) -> Result<String> {
        Ok(match self.copies(id)?.first() {
            None => "index".into(),
            Some((p, l)) => match l.base {
                Some(b)
                    if depth < MAX_DELTA_DEPTH
                        && !self.bad_packs.contains_key(p)
                        && !self.bad_blobs.contains(&(*p, *id)) =>
                {
                    self.blame_at(&b, depth + 1)?
                }
                _ => paths::pack(p),
            },
        })
    }
    /// Whether any of `ids` is [`State::missing`]. The lookups run in parallel (one block
    /// read of the cache each: most of check's time at millions of chunks); the missing ones
    /// are blamed in the order given.
    fn any_missing(&self, ids: &[Id], label: &str, causes: &mut Causes) -> Result<bool> {
        use rayon::prelude::*;
        let found: Vec<bool> =
            ids.par_iter().map(|id| Ok(self.usable(id)?.is_none())).collect::<Result<_>>()?;
        let mut any = false;
        for (id, _) in ids.iter().zip(found).filter(|(_, unusable)| *unusable) {
            any |= self.missing(id, label, causes)?;
        }
        Ok(any)
    }
    /// Records damage for `id` when no usable copy exists; true if so.
    fn missing(&self, id: &Id, label: &str, causes: &mut Causes) -> Result<bool> {
        if self.usable(id)?.is_some() {
            return Ok(false);
        }
        causes.add(self.blame(id)?, || NOT_INDEXED.into(), Some(label));
        Ok(true)
    }
}

/// An order-independent digest term of one (chunk id, offset) pair: summed over a pack's
/// entries, equal sums mean the same set of pairs unless something contrived them (the ids
/// are keyed hashes; this guards against damage, and the pairs themselves are authenticated).
fn entry_digest(id: &Id, offset: u32) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&id.0[..16]);
    let h = u128::from_le_bytes(b) ^ (u128::from(offset) << 96);
    // one multiply-xorshift round, so that ids differing in few bits do not cancel
    let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    h ^ (h >> 64)
}

const NOT_INDEXED: &str = "chunks needed by snapshots are in no index file";

/// Checks the repository under a read lease: index files, pack presence and sizes, every snapshot's
/// content lists and chunks against the index, optionally pack data and restores, and `--max-age`.
/// Damage is reported, not returned as an error; the local cache is rebuilt if it disagrees with
/// the index files.
pub async fn run(repo: Arc<Repository>, opts: &CheckOptions) -> Result<CheckReport> {
    let start = Instant::now();
    let mut r = CheckReport::default();
    r.notes.extend(repo.index().take_warnings());
    let mut causes = Causes::default();
    // snapshots are listed before the index files are read: a backup writes its index files
    // before its snapshot, so every snapshot listed has its chunks in the index read after
    // (the other order reported a backup that committed in between as damage)
    let snapshot_files = repo.backend().list(paths::SNAPSHOTS_DIR).await?;
    let (mut st, damaged_index) = load_index(&repo, &mut r).await?;
    let orphans = check_packs(&repo, &mut st, &mut r).await?;
    r.index_incomplete = !damaged_index.is_empty() || orphans > 0;

    if let Some(subset) = opts.read_data {
        read_packs(&repo, &mut st, subset, &mut r, &mut causes).await?;
    }
    let listed: HashSet<Id> = snapshot_files.iter().filter_map(|o| paths::id_of(&o.path)).collect();
    check_snapshots(&repo, snapshot_files, &st, &mut r, &mut causes).await?;
    check_bundles(&repo, &listed, &mut r).await?;
    list_damage(&st, causes, damaged_index, &mut r);
    check_cache(&repo, &st, &mut r).await?;

    if let Some(vr) = &opts.verify_restore {
        r.restores = verify_restore(repo.clone(), vr).await?;
        for v in r.restores.iter().filter(|v| !v.ok) {
            r.damage.push(Damage {
                object: format!("snapshot {}", v.snapshot),
                problem: format!("{} dump does not restore: {}", v.format, v.message),
                snapshots: vec![v.snapshot.clone()],
            });
        }
    }
    if r.deltas_without_base > 0 {
        r.notes.push(format!(
            "{} delta blobs no snapshot needs have lost their base to a prune (reclaimed when \
             their packs are repacked)",
            r.deltas_without_base
        ));
    }
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    r.late = super::freshness::late(&repo, &opts.max_age, now).await?;
    r.damage.sort_by(|a, b| a.object.cmp(&b.object));
    r.ok = r.damage.is_empty();
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// Takes every index file into a temporary database; the damaged ones, with why.
async fn load_index(
    repo: &Arc<Repository>,
    r: &mut CheckReport,
) -> Result<(State, Vec<(String, String)>)> {
    let index = IndexCache::temporary(super::scratch_dir(repo))?;
    let damaged = index.sync(repo).await?;
    index.take_warnings(); // the damaged files are reported as damage instead
    let indexed_packs: HashMap<Id, u64> = index.packs()?.into_iter().collect();
    r.index_files = index.index_files()? + damaged.len() as u64;
    let st = State {
        reader: index.reader()?,
        _index: index,
        indexed_packs,
        pack_entries: HashMap::new(),
        gone: HashSet::new(),
        condemned: repo.condemned(),
        bad_packs: HashMap::new(),
        bad_blobs: HashSet::new(),
    };
    Ok((st, damaged.into_iter().map(|u| (u.object, u.error)).collect()))
}

/// Lists the packs present and compares them with the index: missing and wrong-sized packs
/// go into the state's bad packs; returns how many packs are in no index file.
async fn check_packs(repo: &Arc<Repository>, st: &mut State, r: &mut CheckReport) -> Result<u64> {
    // packs present, listed after the index files: every pack an index file listed above
    // names was written before it, so it is here unless a prune deleted it since; a prune
    // can only do that for packs condemned before this check opened (later records wait for
    // its lease), and those are dropped below rather than reported
    let mut present: HashMap<Id, u64> = HashMap::new();
    for o in repo.backend().list(paths::DATA_DIR).await? {
        match paths::id_of(&o.path) {
            Some(id) => {
                present.insert(id, o.size);
            }
            None => r.notes.push(format!("{}: not a repository object (ignored)", o.path)),
        }
    }
    r.packs = present.len() as u64;

    let condemned = st.condemned.clone();
    st.gone = st
        .indexed_packs
        .keys()
        .filter(|p| !present.contains_key(p) && condemned.packs.contains(p))
        .copied()
        .collect();
    st.indexed_packs.retain(|p, _| !st.gone.contains(p));
    // one pass over every copy: distinct ids, duplicates, and copies per pack
    let (mut last, mut copies) = (None, 0u64);
    for c in st.reader.iter()? {
        let (id, b) = c?;
        if st.gone.contains(&b.pack) {
            continue;
        }
        let e = st.pack_entries.entry(b.pack).or_default();
        e.0 += 1;
        e.1 = e.1.wrapping_add(entry_digest(&id, b.loc.offset));
        if last != Some(id) {
            last = Some(id);
            copies = 0;
            r.blobs += 1;
        }
        copies += 1;
        r.duplicate_blobs += u64::from(copies == 2);
    }
    if r.duplicate_blobs > 0 {
        r.notes.push(format!(
            "{} chunks are stored more than once (concurrent backups; prune reclaims the space)",
            r.duplicate_blobs
        ));
    }

    for (p, len) in &st.indexed_packs {
        match present.get(p) {
            None => drop(st.bad_packs.insert(*p, "missing".into())),
            Some(s) if s != len => {
                drop(st.bad_packs.insert(*p, format!("size {s} bytes, the index says {len}")))
            }
            Some(_) => {}
        }
    }
    // condemned packs are being removed by a prune: their index files may be gone already
    let orphans: Vec<&Id> = present
        .keys()
        .filter(|p| !st.indexed_packs.contains_key(p) && !condemned.packs.contains(p))
        .collect();
    r.orphan_packs = orphans.len() as u64;
    if !orphans.is_empty() {
        r.notes.push(format!(
            "{} packs are in no index file (a backup still running or killed, or a lost index file): {}{}",
            orphans.len(),
            orphans.iter().take(3).map(|p| paths::pack(p)).collect::<Vec<_>>().join(", "),
            if orphans.len() > 3 { ", …" } else { "" }
        ));
    }
    Ok(r.orphan_packs)
}

/// Assembles the damage list: every damaged object, with the snapshots it hurts.
fn list_damage(
    st: &State,
    mut causes: Causes,
    damaged_index: Vec<(String, String)>,
    r: &mut CheckReport,
) {
    for (p, why) in &st.bad_packs {
        let obj = paths::pack(p);
        let hurt = causes.0.remove(&obj).map(|c| c.1).unwrap_or_default();
        r.damage.push(Damage {
            object: obj,
            problem: why.clone(),
            snapshots: hurt.into_iter().collect(),
        });
    }
    let unindexed = causes.0.remove("index");
    for (obj, (problem, hurt, _)) in std::mem::take(&mut causes.0) {
        r.damage.push(Damage { object: obj, problem, snapshots: hurt.into_iter().collect() });
    }
    let unindexed_hurt: Vec<String> =
        unindexed.as_ref().map(|c| c.1.iter().cloned().collect()).unwrap_or_default();
    for (obj, why) in damaged_index {
        r.damage.push(Damage { object: obj, problem: why, snapshots: unindexed_hurt.clone() });
    }
    if let Some((_, hurt, n)) = unindexed {
        let hint = if r.orphan_packs > 0 {
            format!("; {} packs are in no index: run `repo repair index`", r.orphan_packs)
        } else {
            String::new()
        };
        r.damage.push(Damage {
            object: "index".into(),
            problem: format!("{n} {NOT_INDEXED}{hint}"),
            snapshots: hurt.into_iter().collect(),
        });
    }
}

/// `--read-data`: reads the chosen packs (in parallel, at most a few at a time) and verifies
/// every blob, decoding deltas against their bases; damage goes into the state and `causes`.
// Long (about 95 lines): the parallel read loop and the bookkeeping of what each damaged pack
// hurts share most of their state.
async fn read_packs(
    repo: &Arc<Repository>,
    st: &mut State,
    subset: Subset,
    r: &mut CheckReport,
    causes: &mut Causes,
) -> Result<()> {
    // packs a prune is removing are not read: what is needed of them was copied or they
    // are kept (and read by a later check)
    let condemned = repo.condemned();
    let mut candidates: Vec<(Id, u64)> = st
        .indexed_packs
        .iter()
        .filter(|(p, _)| !st.bad_packs.contains_key(*p) && !condemned.packs.contains(*p))
        .map(|(p, l)| (*p, *l))
        .collect();
    candidates.sort();
    let chosen = subset.select(candidates);
    let mut verdicts = stream::iter(chosen)
        .map(|(p, _)| {
            let repo = repo.clone();
            async move {
                let bytes = repo.backend().get(&paths::pack(&p)).await;
                let n = bytes.as_ref().map(|b| b.len() as u64).unwrap_or(0);
                let r2 = repo.clone();
                let mut v = match bytes {
                    Ok(b) => tokio::task::spawn_blocking(move || verify_pack_bytes(&r2, &p, &b))
                        .await
                        .map_err(RepoError::from),
                    Err(e) => Err(RepoError::Backend(e)),
                };
                if let Ok(v) = v.as_mut() {
                    verify_deltas(&repo, v).await; // a delta decodes only with its base
                }
                (p, n, v)
            }
        })
        .buffer_unordered(2);
    while let Some((p, n, v)) = verdicts.next().await {
        r.packs_read += 1;
        r.read_packs.push(p.to_hex());
        r.bytes_read += n;
        let v = match v {
            Ok(v) => v,
            // a storage outage says nothing about the pack: the check stops
            Err(RepoError::Backend(e)) if !e.is_damage() => return Err(RepoError::Backend(e)),
            Err(e) => {
                st.bad_packs.insert(p, e.to_string());
                continue;
            }
        };
        if v.footer.is_none() {
            st.bad_packs.insert(p, v.pack_error.unwrap_or_else(|| "unreadable".into()));
            continue;
        }
        let obj = paths::pack(&p);
        r.deltas_without_base += v.deltas_without_base;
        if let Some(first) = v.bad_blobs.first() {
            let problem =
                format!("{} of {} blobs damaged (first: {})", v.bad_blobs.len(), v.blobs, first.1);
            causes.0.entry(obj.clone()).or_insert_with(|| (problem, BTreeSet::new(), 0));
        } else if let Some(e) = &v.pack_error {
            causes.0.entry(obj.clone()).or_insert_with(|| (e.clone(), BTreeSet::new(), 0));
        }
        for (id, _) in v.bad_blobs {
            st.bad_blobs.insert((p, id));
        }
        // the pack must say what the index says about it: every copy the index files place
        // in it is in its footer at the same offset (footer entries the index agrees with,
        // counted once each, against the copies the index places there)
        if let Some(footer) = v.footer {
            let inside: HashSet<(Id, u32)> =
                footer.blobs.iter().map(|(id, l)| (*id, l.offset)).collect();
            let (listed, digest) = st.pack_entries.get(&p).copied().unwrap_or_default();
            let footer_digest =
                inside.iter().fold(0u128, |d, (id, o)| d.wrapping_add(entry_digest(id, *o)));
            // the same pairs: no lookup needed (the usual case); otherwise count the ones
            // that differ
            let wrong = if listed == inside.len() as u64 && digest == footer_digest {
                0
            } else {
                let mut agreed = 0u64;
                for (id, offset) in &inside {
                    let there = st.reader.copy_in(id, &p)?;
                    agreed += u64::from(there.is_some_and(|l| l.offset == *offset));
                }
                listed.saturating_sub(agreed)
            };
            if wrong > 0 {
                causes.0.entry(obj).or_insert_with(|| {
                    (
                        format!("{wrong} index entries disagree with the pack's own footer"),
                        BTreeSet::new(),
                        0,
                    )
                });
            }
        }
    }
    Ok(())
}

/// Snapshot bundles (format-spec/snapshot.md) are only copies of snapshot objects, which
/// readers check one by one: one that cannot be read (or a listing of them that fails), or
/// copies that are not the objects they name, are notes, not damage.
async fn check_bundles(repo: &Repository, listed: &HashSet<Id>, r: &mut CheckReport) -> Result<()> {
    const REPLACED: &str = "it is only a copy of snapshot objects, which readers then fetch \
                            one by one; a forget that removes snapshots, or a backup that had \
                            to fetch many of them one by one, replaces it";
    let bundles = match repo.backend().list(paths::BUNDLES_DIR).await {
        Ok(b) => b,
        Err(e) => {
            r.notes.push(format!("{e}; snapshot bundles not checked"));
            return Ok(());
        }
    };
    for o in bundles {
        let Some(id) = paths::id_of(&o.path) else { continue };
        let read = async {
            let body = repo.get_object(&o.path, &id, MAGIC_BUNDLE).await?;
            Bundle::decode(&body).map_err(|e| RepoError::format(o.path.clone(), e))
        };
        match read.await {
            Ok(b) => {
                let wrong = b
                    .objects
                    .iter()
                    .filter(|(sid, bytes)| listed.contains(sid) && Id::of_bytes(bytes) != *sid)
                    .count();
                if wrong > 0 {
                    r.notes.push(format!(
                        "{}: {wrong} copies are not the snapshot objects they name; {REPLACED}",
                        o.path
                    ));
                }
            }
            Err(RepoError::Backend(e)) if e.is_not_found() => {} // replaced meanwhile
            Err(e) => r.notes.push(format!("{e}; {REPLACED}")),
        }
    }
    Ok(())
}

/// Reads every snapshot and its content lists (and tree catalogs) and checks that each chunk
/// it needs is indexed in a pack that is present and not damaged.
async fn check_snapshots(
    repo: &Arc<Repository>,
    files: Vec<ObjectInfo>,
    st: &State,
    r: &mut CheckReport,
    causes: &mut Causes,
) -> Result<()> {
    let ciphers = crate::repo::PackCiphers::default();
    // content lists already found whole: hourly dumps share most of their lists, and a list
    // is read and its chunks looked up once (a damaged one again for each snapshot it hurts).
    // One id per list, a few thousand chunks each: small beside the chunks themselves.
    let mut whole_lists: HashSet<Id> = HashSet::new();
    for f in files {
        let Some(sid) = paths::id_of(&f.path) else { continue };
        let snap = async {
            let body = repo.get_object(&f.path, &sid, MAGIC_SNAPSHOT).await?;
            Snapshot::decode(&body).map_err(|e| RepoError::format(f.path.clone(), e))
        }
        .await;
        let snap = match snap {
            Ok(s) => s,
            Err(RepoError::Backend(e)) if e.is_not_found() => continue,
            // the storage did not answer: nothing is known about the snapshot, and calling
            // it broken would let `repair --forget-broken` delete a good one
            Err(RepoError::Backend(e)) => return Err(RepoError::Backend(e)),
            Err(e) => {
                r.damage.push(Damage {
                    object: f.path.clone(),
                    problem: e.to_string(),
                    snapshots: vec![sid.short()],
                });
                r.broken_snapshots.push(sid.to_hex());
                continue;
            }
        };
        r.snapshots += 1;
        let label = format!("{} {} {}", sid.short(), snap.name, super::rfc3339(snap.time_ns));
        let mut broken = false;
        for list in &snap.lists {
            if whole_lists.contains(list) {
                continue;
            }
            if st.usable(list)?.is_none() {
                causes.add(st.blame(list)?, || NOT_INDEXED.into(), Some(&label));
                broken = true;
                continue;
            }
            // every usable copy in turn, as a restore reads them: a damaged copy beside a
            // whole one is damage of its pack, not of the snapshot
            let mut failed = Vec::new();
            let mut read = None;
            for (pack, loc) in st.copies(list)? {
                if st.bad_packs.contains_key(&pack) || st.bad_blobs.contains(&(pack, *list)) {
                    continue;
                }
                match ciphers.read(repo, &pack, list, &loc).await.and_then(|b| {
                    decode_list(&b)
                        .map_err(|e| RepoError::format(format!("content list {}", list.short()), e))
                }) {
                    Ok(e) => {
                        read = Some(e);
                        break;
                    }
                    Err(RepoError::Backend(e)) if !e.is_damage() => {
                        return Err(RepoError::Backend(e));
                    }
                    Err(e) => failed.push((pack, e.to_string())),
                }
            }
            let blamed = if read.is_some() { None } else { Some(label.as_str()) };
            for (pack, e) in failed {
                causes.add(paths::pack(&pack), || e, blamed);
            }
            let Some(entries) = read else {
                broken = true;
                continue;
            };
            let ids: Vec<Id> = entries.iter().map(|(id, _)| *id).collect();
            let whole = !st.any_missing(&ids, &label, causes)?;
            if whole {
                whole_lists.insert(*list);
            }
            broken |= !whole;
        }
        if !broken && snap.kind.has_catalog() {
            let each = |ids: &[Id]| {
                broken |= st.any_missing(ids, &label, causes)?;
                Ok(())
            };
            match crate::repo::tree::file_blobs(repo, &snap, &label, each).await {
                Ok(()) => {}
                Err(RepoError::Backend(e)) if !e.is_damage() => return Err(RepoError::Backend(e)),
                Err(e) => {
                    r.damage.push(Damage {
                        object: format!("snapshot {}", sid.short()),
                        problem: e.to_string(),
                        snapshots: vec![sid.short()],
                    });
                    broken = true;
                }
            }
        }
        if broken {
            r.broken_snapshots.push(sid.to_hex());
        }
    }
    Ok(())
}

/// The local cache must agree with the index files: the copy it offers for each id must be
/// one they list. If not, it is rebuilt. Both databases are read in key order side by side
/// (a merge, not a lookup per chunk).
async fn check_cache(repo: &Repository, st: &State, r: &mut CheckReport) -> Result<()> {
    // first take in the index files written since this process opened (a backup that ended
    // meanwhile): their ids are not missing from the cache, only not yet read. The packs that
    // brings in are newer than this check's own read of the index: their copies are left out
    let before: HashSet<Id> = repo.index().packs()?.into_iter().map(|(p, _)| p).collect();
    repo.index().sync(repo).await?;
    let newer: HashSet<Id> =
        repo.index().packs()?.into_iter().map(|(p, _)| p).filter(|p| !before.contains(p)).collect();
    let disagree = cache_disagreements(repo, st, &newer)?;
    if disagree > 0 {
        r.notes.push(format!(
            "the local cache disagreed with the repository on {disagree} chunks and was rebuilt"
        ));
        repo.index().clear()?;
        repo.index().sync(repo).await?;
    }
    Ok(())
}

/// Ids for which the local cache offers a copy the index files do not list.
fn cache_disagreements(repo: &Repository, st: &State, newer: &HashSet<Id>) -> Result<u64> {
    let cache = repo.index().reader()?;
    let mut offered = Grouped::new(cache.iter()?);
    let mut listed = Grouped::new(st.reader.iter()?);
    let mut disagree = 0u64;
    while let Some((id, mut copies)) = listed.next_group()? {
        copies.retain(|b| !st.gone.contains(&b.pack));
        if copies.is_empty() {
            continue;
        }
        // the cache's group for this id, skipping ids only it knows (they do no harm)
        let theirs = loop {
            match offered.peek_id() {
                Some(o) if o < id => drop(offered.next_group()?),
                Some(o) if o == id => break offered.next_group()?.map(|g| g.1),
                _ => break None,
            }
        };
        // the copy a lookup would give: outside the packs to avoid if there is one. Copies in
        // `newer` packs (index files written since this check read the index: a prune
        // repacking, a backup) are left out; if the cache knows only such copies, it has no
        // wrong answer to give
        let choice = match theirs {
            None => None,
            Some(mut t) => {
                let had = !t.is_empty();
                t.retain(|b| !newer.contains(&b.pack));
                if had && t.is_empty() {
                    continue;
                }
                t.sort_by_key(|b| st.condemned.packs.contains(&b.pack));
                t.first().copied()
            }
        };
        disagree += u64::from(!choice.is_some_and(|c| copies.contains(&c)));
    }
    Ok(disagree)
}

/// Copies in key order, taken one id at a time.
struct Grouped<I: Iterator<Item = Result<(Id, BlobRef)>>> {
    it: std::iter::Peekable<I>,
}

impl<I: Iterator<Item = Result<(Id, BlobRef)>>> Grouped<I> {
    fn new(it: I) -> Self {
        Grouped { it: it.peekable() }
    }
    fn peek_id(&mut self) -> Option<Id> {
        match self.it.peek() {
            Some(Ok((id, _))) => Some(*id),
            Some(Err(_)) => Some(Id([0; 32])), // surfaced by the next next_group
            None => None,
        }
    }
    fn next_group(&mut self) -> Result<Option<(Id, Vec<BlobRef>)>> {
        let Some(first) = self.it.next() else { return Ok(None) };
        let (id, b) = first?;
        let mut copies = vec![b];
        while let Some(Ok((next, _))) = self.it.peek() {
            if *next != id {
                break;
            }
            if let Some(Ok((_, b))) = self.it.next() {
                copies.push(b);
            }
        }
        Ok(Some((id, copies)))
    }
}
