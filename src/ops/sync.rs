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
//! 2. `data/` packs, then `index/` files: an index never names a pack the destination lacks;
//! 3. `snapshots/` last: a snapshot appears only once everything it needs is there. The
//!    source's snapshots are listed *before* its packs and index files, so everything a
//!    listed snapshot needs was already stored when the later listings ran;
//! 4. with `--delete`, only once all of that succeeded: snapshots the source no longer has,
//!    then index files, then packs, then keys — the reverse of the order they are written.
//!
//! Every copied object is verified: its BLAKE3 must match its name before it is sent (a
//! damaged source object is reported, not shipped), the destination must report the size
//! sent, and on S3 the ETag must equal the MD5 of the bytes.
//!
//! `locks/` and `prune/` belong to the operations running at each location and are neither
//! copied nor deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use crate::backend::{Backend, BackendError, ObjectInfo};
use crate::format::Id;
use crate::repo::paths::{self, CONFIG, DATA_DIR, INDEX_DIR, KEYS_DIR, SNAPSHOTS_DIR};
use crate::repo::{Progress, RepoError, Result};

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

#[derive(Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub source: String,
    pub destination: String,
    pub dry_run: bool,
    pub copied_objects: u64,
    pub copied_bytes: u64,
    /// Objects the destination already held.
    pub skipped_objects: u64,
    pub skipped_bytes: u64,
    pub deleted_objects: u64,
    pub deleted_bytes: u64,
    /// Objects that disappeared from the source while the sync ran (a prune finishing).
    pub vanished_objects: u64,
    pub seconds: f64,
}

/// The object kinds a sync mirrors, in the order it writes them.
const PHASES: [&str; 4] = [KEYS_DIR, DATA_DIR, INDEX_DIR, SNAPSHOTS_DIR];

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
            return Err(RepoError::Aborted(format!(
                "{} holds a different repository; sync only updates a copy of the same one (use `repo copy` between repositories)",
                dst.location()
            )));
        }
        Err(e) if e.is_not_found() => false,
        Err(e) => return Err(e.into()),
    };

    // Snapshots first: see the module comment.
    let mut source: HashMap<&str, Vec<ObjectInfo>> = HashMap::new();
    for dir in [SNAPSHOTS_DIR, KEYS_DIR, INDEX_DIR, DATA_DIR] {
        source.insert(dir, src.list(dir).await?);
    }
    let mut held: HashMap<&str, HashMap<String, u64>> = HashMap::new();
    for dir in PHASES {
        held.insert(dir, dst.list(dir).await?.into_iter().map(|o| (o.path, o.size)).collect());
    }
    let source_paths: HashMap<&str, HashSet<String>> = source
        .iter()
        .map(|(d, objects)| (*d, objects.iter().map(|o| o.path.clone()).collect()))
        .collect();

    for dir in PHASES {
        let mut wanted = source.remove(dir).unwrap_or_default();
        if dir == SNAPSHOTS_DIR && !opts.dry_run {
            // Copy only snapshots the source still has: one forgotten meanwhile may need
            // packs a prune has removed since the listing.
            let now: HashSet<String> = src.list(dir).await?.into_iter().map(|o| o.path).collect();
            wanted.retain(|o| now.contains(&o.path));
        }
        copy_missing(&src, &dst, wanted, &held[dir], opts, progress, &mut report).await?;
        if dir == KEYS_DIR {
            // `config` after the keys: a location with a config is a repository, and a
            // repository needs its keys to open.
            let len = config.len() as u64;
            if dst_has_config {
                report.skipped_objects += 1;
                report.skipped_bytes += len;
            } else {
                report.copied_objects += 1;
                report.copied_bytes += len;
                if !opts.dry_run {
                    put_verified(&*dst, CONFIG, config.clone()).await?;
                }
            }
        }
    }

    if opts.delete {
        // Everything the source holds (its keys too) is at the destination now; remove the
        // rest, in the reverse of the write order.
        for dir in PHASES.iter().rev() {
            let keep = &source_paths[dir];
            let mut gone: Vec<(&String, u64)> = held[dir]
                .iter()
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
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Copies the objects of `wanted` that `have` (the destination's listing: path → size) lacks,
/// in parallel, largest first, and counts them into `report`.
async fn copy_missing(
    src: &Arc<dyn Backend>,
    dst: &Arc<dyn Backend>,
    wanted: Vec<ObjectInfo>,
    have: &HashMap<String, u64>,
    opts: &SyncOptions,
    progress: &dyn Progress,
    report: &mut SyncReport,
) -> Result<()> {
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
        return Ok(());
    }
    let results: Vec<Result<bool>> = stream::iter(todo)
        .map(|o| async move {
            let copied = copy_object(&**src, &**dst, &o).await?;
            if copied {
                progress.bytes_done(o.size);
            }
            Ok(copied)
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    for r in results {
        if !r? {
            report.vanished_objects += 1;
            report.copied_objects -= 1;
        }
    }
    Ok(())
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
        .map_err(|e| RepoError::Internal(e.to_string()))?;
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
