//! `repo sync DEST`: make DEST an exact copy of the repository, copying only what it lacks.
//!
//! Works on ciphertext and names alone: no password, no index, no cache. Every object of a
//! repository is immutable and named by its content or a random id, so the difference of
//! two listings is exactly what to copy (format-spec/layout.md).
//!
//! Order keeps the destination a consistent repository at every instant, so a sync killed
//! anywhere leaves something `check` passes and the next sync finishes:
//! 1. `keys/`, then `config` (a location with a config is a repository; one with keys and
//!    nothing else is not yet, and an empty repository is consistent);
//! 2. `data/` packs, then `index/` files: an index never names a pack the destination lacks.
//!    The source's index files are listed before its packs, and the round is repeated until
//!    the source's listings did not change during it (a prune that was sweeping when the sync
//!    began); an index file copied in an earlier round that the source has since removed is
//!    removed from the destination too;
//! 3. `snapshots/` last: a snapshot appears only once everything it needs is there. The
//!    source's snapshots are listed *before* its packs and index files, so everything a
//!    listed snapshot needs was already stored when the later listings ran;
//! 4. `bundles/`, copies of snapshot objects for a fresh cache (format-spec/snapshot.md): a
//!    reader takes from one only the objects of snapshots the destination lists, so when
//!    they arrive does not matter;
//! 5. with `--delete`, only once all of that succeeded: bundles and snapshots the source no
//!    longer has, then index files, then packs, then keys — the reverse of the order they
//!    are written.
//!
//! Every copied object is verified: its BLAKE3 must match its name before it is sent (a
//! damaged source object is reported, not shipped), the destination must report the size
//! sent, and on S3 the ETag must equal the MD5 of the bytes.
//!
//! `locks/` and `prune/` belong to the operations running at each location and are neither
//! copied nor deleted. The sync holds a read lease on the source (`format-spec/prune.md`)
//! while it runs, so a prune that condemns data after it started waits for it. It holds a
//! backup lease on the destination, because there it writes as a backup does: a prune of the
//! destination running meanwhile neither condemns the packs it copied before their index
//! files nor sweeps without waiting for it. With `--delete`, nothing is deleted while another
//! live lease is held at the destination (a restore from the copy, or a prune of it): the
//! deletions wait for the next sync, and the report says so.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use crate::backend::{Backend, BackendError, ObjectInfo};
use crate::format::Id;
use crate::format::lock::LeaseKind;
use crate::repo::lease::{Lease, live_leases};
use crate::repo::paths::{self, BUNDLES_DIR, CONFIG, DATA_DIR, INDEX_DIR, KEYS_DIR, SNAPSHOTS_DIR};
use crate::repo::{Progress, RepoError, Result};

/// What `repo sync` may do.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Also delete what the destination holds and the source no longer does.
    pub delete: bool,
    /// Compute and report, change nothing.
    pub dry_run: bool,
    /// Objects copied at the same time.
    pub jobs: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions { delete: false, dry_run: false, jobs: 4 }
    }
}

/// What `repo sync` copied, skipped and deleted (JSON output); objects counted are keys, `config`,
/// packs, index files and snapshots.
#[derive(Debug, Default, serde::Serialize)]
pub struct SyncReport {
    /// Location of the source.
    pub source: String,
    /// Location of the destination.
    pub destination: String,
    /// True when nothing was written or deleted.
    pub dry_run: bool,
    /// Objects copied (or that would be, in a dry run).
    pub copied_objects: u64,
    /// Bytes of those objects.
    pub copied_bytes: u64,
    /// Objects the destination already held.
    pub skipped_objects: u64,
    /// Bytes of those objects.
    pub skipped_bytes: u64,
    /// Objects deleted at the destination: with `--delete`, and index files the source removed
    /// during the sync.
    pub deleted_objects: u64,
    /// Bytes of those objects.
    pub deleted_bytes: u64,
    /// Objects that disappeared from the source while the sync ran (a prune finishing).
    pub vanished_objects: u64,
    /// Damaged snapshot bundles at the source, not copied: a bundle is only a copy of snapshot
    /// objects (format-spec/snapshot.md), and the next one stored there replaces it.
    pub bundles_left_out: u64,
    /// With `--delete`: leases other operations held at the destination, for which the
    /// deletions were left to the next sync (0 when they ran).
    pub deletions_postponed_for_leases: u64,
    /// Wall-clock duration of the sync, seconds.
    pub seconds: f64,
}

/// The object kinds a sync mirrors, in the order it writes them.
const PHASES: [&str; 5] = [KEYS_DIR, DATA_DIR, INDEX_DIR, SNAPSHOTS_DIR, BUNDLES_DIR];

/// Mirrors `src` into `dst` on ciphertext and names alone (see the module docs). Refuses a
/// destination holding another repository's `config`; holds a read lease on the source when it can
/// write one.
pub async fn run(
    src: Arc<dyn Backend>,
    dst: Arc<dyn Backend>,
    opts: &SyncOptions,
    progress: &dyn Progress,
) -> Result<SyncReport> {
    let t0 = Instant::now();
    let mut report = SyncReport {
        source: src.location(),
        destination: dst.location(),
        dry_run: opts.dry_run,
        ..Default::default()
    };

    let config = match src.get(CONFIG).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => {
            return Err(RepoError::NotARepository { location: src.location() });
        }
        Err(e) => return Err(e.into()),
    };
    let dst_has_config = match dst.get(CONFIG).await {
        Ok(theirs) if theirs == config => true,
        Ok(_) => {
            return Err(RepoError::NotACopy { location: dst.location() });
        }
        Err(e) if e.is_not_found() => false,
        Err(e) => return Err(e.into()),
    };

    // A read lease on the source: a prune that condemns data after this point waits for the
    // sync. A source this process may not write to (a read-only mount) is synced without one.
    let lease = match Lease::acquire(src.clone(), LeaseKind::Read).await {
        Ok(l) => Some(l),
        Err(RepoError::Backend(BackendError::PermissionDenied { .. })) => None,
        Err(e) => return Err(e),
    };
    let keep_alive = lease.as_ref().map(|l| l.keep_alive());
    // a backup lease on the destination (see the module docs); a dry run writes nothing
    let dst_lease = if opts.dry_run {
        Ok(None)
    } else {
        Lease::acquire(dst.clone(), LeaseKind::Backup).await.map(Some)
    };
    let synced = match &dst_lease {
        Ok(dl) => {
            let dst_keep_alive = dl.as_ref().map(|l| l.keep_alive());
            let own = dl.as_deref();
            let synced = sync_objects(
                &src,
                &dst,
                (&config, dst_has_config),
                opts,
                own,
                progress,
                &mut report,
            )
            .await;
            if let Some(l) = dl {
                l.stop_and_release(dst_keep_alive).await;
            }
            synced
        }
        Err(_) => Ok(()),
    };
    if let Some(l) = lease {
        l.stop_and_release(keep_alive).await;
    }
    dst_lease?;
    synced?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Rounds of copying packs and index files before a sync gives up on a source that keeps
/// changing under it.
const MAX_ROUNDS: usize = 5;

/// Copies what the destination lacks: rounds of listing and copying packs, then index files,
/// then snapshots, keys and config (its bytes, and whether the destination has it), each only
/// after what it refers to is there. `own_lease` is the sync's lease at the destination.
// Long (about 120 lines) on purpose: the order of the steps is the consistency argument (an
// index file only after its packs, a snapshot only after its index files), and it reads best
// as one sequence.
async fn sync_objects(
    src: &Arc<dyn Backend>,
    dst: &Arc<dyn Backend>,
    (config, dst_has_config): (&[u8], bool),
    opts: &SyncOptions,
    own_lease: Option<&Lease>,
    progress: &dyn Progress,
    report: &mut SyncReport,
) -> Result<()> {
    // Snapshots first: see the module comment.
    let snapshots = src.list(SNAPSHOTS_DIR).await?;
    let mut held: HashMap<&str, HashMap<String, u64>> = HashMap::new();
    for dir in PHASES {
        held.insert(dir, dst.list(dir).await?.into_iter().map(|o| (o.path, o.size)).collect());
    }
    let keys = src.list(KEYS_DIR).await?;
    let keys_paths: HashSet<String> = keys.iter().map(|o| o.path.clone()).collect();
    copy_missing(src, dst, keys, held.entry(KEYS_DIR).or_default(), opts, progress, report).await?;
    // `config` after the keys: a location with a config is a repository, and a repository
    // needs its keys to open.
    let len = config.len() as u64;
    if dst_has_config {
        report.skipped_objects += 1;
        report.skipped_bytes += len;
    } else {
        report.copied_objects += 1;
        report.copied_bytes += len;
        if !opts.dry_run {
            put_verified(&**dst, CONFIG, config.to_vec()).await?;
        }
    }
    // Packs, then index files, until a round finds the source's index files and packs as
    // they were when it listed them: a prune that was already sweeping when the sync began
    // may replace index files and packs meanwhile, and the copy must end with a set that
    // existed together at the source (index files are listed before packs: every pack an
    // index file names was written before it).
    let mut copied_index: HashSet<String> = HashSet::new();
    let (mut index_listed, mut data_listed) = (Vec::new(), Vec::new());
    for round in 0.. {
        if round == MAX_ROUNDS {
            return Err(RepoError::KeptChanging { location: src.location(), rounds: MAX_ROUNDS });
        }
        index_listed = src.list(INDEX_DIR).await?;
        data_listed = src.list(DATA_DIR).await?;
        let have = held.entry(DATA_DIR).or_default();
        copy_missing(src, dst, data_listed.clone(), have, opts, progress, report).await?;
        // the packs just copied are safe from a prune of the destination only while this
        // sync's lease there holds (see the module docs)
        hold(own_lease).await?;
        let have = held.entry(INDEX_DIR).or_default();
        copied_index.extend(
            copy_missing(src, dst, index_listed.clone(), have, opts, progress, report).await?,
        );
        // new objects (a backup running) are harmless: they are copied next time; only
        // objects that vanished during the round (a prune sweeping) call for another round
        let all_still_there = |before: &[ObjectInfo], now: Vec<ObjectInfo>| {
            let now: HashSet<String> = now.into_iter().map(|o| o.path).collect();
            before.iter().all(|o| now.contains(&o.path))
        };
        if opts.dry_run
            || (all_still_there(&index_listed, src.list(INDEX_DIR).await?)
                && all_still_there(&data_listed, src.list(DATA_DIR).await?))
        {
            break;
        }
    }
    let index_now: HashSet<String> = index_listed.iter().map(|o| o.path.clone()).collect();
    // An index file this sync copied that the source has since removed names packs the
    // source deleted, perhaps before they were copied: it goes, --delete or not.
    let mut superseded: Vec<String> =
        copied_index.into_iter().filter(|p| !index_now.contains(p)).collect();
    superseded.sort();
    if !superseded.is_empty() {
        source_still_there(src).await?;
    }
    for p in superseded {
        if let Some(size) = held.entry(INDEX_DIR).or_default().remove(&p) {
            report.deleted_objects += 1;
            report.deleted_bytes += size;
            if !opts.dry_run {
                dst.delete(&p).await?;
            }
        }
    }
    // Copy only snapshots the source still has: one forgotten meanwhile may need packs a
    // prune has removed since the listing.
    let mut wanted = snapshots;
    if !opts.dry_run {
        let now: HashSet<String> =
            src.list(SNAPSHOTS_DIR).await?.into_iter().map(|o| o.path).collect();
        wanted.retain(|o| now.contains(&o.path));
    }
    let snapshot_paths: HashSet<String> = wanted.iter().map(|o| o.path.clone()).collect();
    hold(own_lease).await?;
    let copied_snapshots = copy_missing(
        src,
        dst,
        wanted,
        held.entry(SNAPSHOTS_DIR).or_default(),
        opts,
        progress,
        report,
    )
    .await?;
    if let Err(e) = hold(own_lease).await {
        // the lease lapsed while the snapshots were stored (a long pause): a prune of the
        // destination may have swept what they need without waiting; withdraw them, as a
        // backup does, so that the destination holds no snapshot that may not be whole
        let mut left = Vec::new();
        for p in &copied_snapshots {
            if let Err(d) = dst.delete(p).await {
                left.push((p.clone(), d));
            }
        }
        return match (e, left.first()) {
            (RepoError::LeaseLapsed { minutes }, Some((p, d))) => {
                Err(RepoError::LapsedSnapshotLeft {
                    minutes,
                    snapshot: paths::id_of(p).map(|id| id.short()).unwrap_or_else(|| p.clone()),
                    error: format!("{d}; {} snapshots left in all", left.len()),
                })
            }
            (e, _) => Err(e),
        };
    }
    // a damaged bundle is left out rather than stopping the sync
    let bundles = src.list(BUNDLES_DIR).await?;
    let bundle_paths: HashSet<String> = bundles.iter().map(|o| o.path.clone()).collect();
    for b in bundles {
        let have = held.entry(BUNDLES_DIR).or_default();
        let size = b.size;
        let at_source = format!("{}/{}", src.location(), b.path);
        match copy_missing(src, dst, vec![b], have, opts, progress, report).await {
            // damage at the source only: a copy the destination did not keep stops the sync
            Err(RepoError::Corrupt { object, .. }) if object == at_source => {
                report.bundles_left_out += 1;
                report.copied_objects -= 1;
                report.copied_bytes -= size;
            }
            r => drop(r?),
        }
    }

    // `--delete` goes only while no other operation holds a lease at the destination; asked
    // again after the snapshots go (a reader that starts after that lists none of them)
    let others_at_dst = || async {
        let own = own_lease.map(|l| l.id());
        Ok::<u64, RepoError>(
            live_leases(dst).await?.iter().filter(|l| Some(l.id) != own).count() as u64
        )
    };
    if opts.delete && !opts.dry_run {
        report.deletions_postponed_for_leases = others_at_dst().await?;
    }
    if opts.delete && report.deletions_postponed_for_leases == 0 {
        source_still_there(src).await?;
        // Everything the source holds (its keys too) is at the destination now; remove the
        // rest, in the reverse of the write order.
        let mut source_paths: HashMap<&str, HashSet<String>> = HashMap::new();
        source_paths.insert(BUNDLES_DIR, bundle_paths);
        source_paths.insert(SNAPSHOTS_DIR, snapshot_paths);
        source_paths.insert(KEYS_DIR, keys_paths);
        source_paths.insert(INDEX_DIR, index_now);
        source_paths.insert(DATA_DIR, data_listed.iter().map(|o| o.path.clone()).collect());
        let nothing = HashSet::new();
        for dir in PHASES.iter().rev() {
            if *dir == INDEX_DIR && !opts.dry_run {
                report.deletions_postponed_for_leases = others_at_dst().await?;
                if report.deletions_postponed_for_leases > 0 {
                    break;
                }
            }
            let keep = source_paths.get(dir).unwrap_or(&nothing);
            let mut gone: Vec<(&String, u64)> = held
                .get(dir)
                .into_iter()
                .flatten()
                .filter(|(p, _)| !keep.contains(*p))
                .map(|(p, s)| (p, *s))
                .collect();
            gone.sort();
            for (path, size) in gone {
                report.deleted_objects += 1;
                report.deleted_bytes += size;
                if !opts.dry_run {
                    dst.delete(path).await?;
                }
            }
        }
    }
    Ok(())
}

/// Before deleting anything at the destination because the source no longer lists it: the
/// source still holds its config. A directory that vanished (an automounted NAS that failed
/// to remount, an unmounted SFTP volume) lists as empty, which would pass for a source that
/// forgot every snapshot and pruned every pack.
async fn source_still_there(src: &Arc<dyn Backend>) -> Result<()> {
    match src.stat(CONFIG).await? {
        Some(_) => Ok(()),
        None => Err(RepoError::SourceVanished { location: src.location() }),
    }
}

/// Refreshes the sync's lease at the destination (none in a dry run): fails if it lapsed (a
/// pause past the expiry, or a prune there removed it as expired).
/// A refresh that fails for another reason (the storage, briefly) leaves the lease as good
/// as its age: the check a backup makes before it commits.
async fn hold(lease: Option<&Lease>) -> Result<()> {
    let Some(l) = lease else { return Ok(()) };
    match l.refresh().await {
        Ok(()) => Ok(()),
        Err(e @ RepoError::LeaseLapsed { .. }) => Err(e),
        Err(_) => l.ensure_fresh(),
    }
}

/// Copies the objects of `wanted` that `have` (the destination's listing: path → size) lacks,
/// in parallel, largest first, counts them into `report` and adds them to `have`; returns the
/// paths it copied.
async fn copy_missing(
    src: &Arc<dyn Backend>,
    dst: &Arc<dyn Backend>,
    wanted: Vec<ObjectInfo>,
    have: &mut HashMap<String, u64>,
    opts: &SyncOptions,
    progress: &dyn Progress,
    report: &mut SyncReport,
) -> Result<Vec<String>> {
    let mut todo = Vec::new();
    for o in wanted {
        match have.get(&o.path) {
            Some(&size) if size == o.size => {
                report.skipped_objects += 1;
                report.skipped_bytes += o.size;
            }
            // A different size under an immutable name is an object a killed writer left
            // unfinished on a backend without atomic writes: replace it.
            _ => todo.push(o),
        }
    }
    // Large objects first, so the slowest transfer does not start last.
    todo.sort_by_key(|o| std::cmp::Reverse(o.size));
    for o in &todo {
        report.copied_objects += 1;
        report.copied_bytes += o.size;
    }
    if opts.dry_run {
        return Ok(vec![]);
    }
    let results: Vec<(Result<bool>, ObjectInfo)> = stream::iter(todo)
        .map(|o| async move {
            let copied = copy_object(&**src, &**dst, &o).await;
            if let Ok(true) = copied {
                progress.bytes_done(o.size);
            }
            (copied, o)
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    let mut copied = Vec::new();
    for (r, o) in results {
        if r? {
            have.insert(o.path.clone(), o.size);
            copied.push(o.path);
        } else {
            report.vanished_objects += 1;
            report.copied_objects -= 1;
            report.copied_bytes -= o.size;
        }
    }
    Ok(copied)
}

/// Copies one object and checks the copy's size. `false` when the source no longer has it.
async fn copy_object(src: &dyn Backend, dst: &dyn Backend, o: &ObjectInfo) -> Result<bool> {
    let data = match retrying(|| src.get(&o.path)).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if data.len() as u64 != o.size {
        return Err(RepoError::Corrupt {
            object: format!("{}/{}", src.location(), o.path),
            reason: format!("listed with {} bytes but read {} bytes", o.size, data.len()),
        });
    }
    // Every mirrored object is named by the BLAKE3 of its bytes: a damaged source object is
    // never shipped as if it were good (hashing runs off the async threads).
    if let Some(id) = paths::id_of(&o.path) {
        let (data2, want) = (data, id);
        let (data, ok) = tokio::task::spawn_blocking(move || {
            let ok = Id::of_bytes(&data2) == want;
            (data2, ok)
        })
        .await
        .map_err(RepoError::from)?;
        if !ok {
            return Err(RepoError::Corrupt {
                object: format!("{}/{}", src.location(), o.path),
                reason: "content does not match its name (BLAKE3); not copied — run `repo check` at the source".into(),
            });
        }
        put_verified(dst, &o.path, data).await?;
        return Ok(true);
    }
    put_verified(dst, &o.path, data).await?;
    Ok(true)
}

/// Stores an object and checks that the destination reports the size that was sent.
/// (Remote backends retry transient upload errors inside, with the bytes they hold; no copy
/// of a pack is kept here for a retry.)
async fn put_verified(dst: &dyn Backend, path: &str, data: Vec<u8>) -> Result<()> {
    let len = data.len() as u64;
    dst.put(path, data).await?;
    match dst.stat(path).await? {
        Some(n) if n == len => Ok(()),
        got => Err(RepoError::Corrupt {
            object: format!("{}/{path}", dst.location()),
            reason: format!(
                "copy verification failed: sent {len} bytes, destination holds {got:?}"
            ),
        }),
    }
}

/// Retries transient read failures a few more times with growing pauses (remote backends
/// already retry inside; this covers a service that stays unavailable for longer).
async fn retrying<T, F, Fut>(mut f: F) -> std::result::Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, BackendError>>,
{
    let mut pause = Duration::from_secs(1);
    for _ in 0..3 {
        match f().await {
            Err(BackendError::Remote { temporary: true, .. }) => {
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            other => return other,
        }
    }
    f().await
}
