//! Listing and selecting snapshots.

use futures::stream::{self, StreamExt};

use std::collections::{HashMap, HashSet};

use super::{RepoError, Repository, Result, Unreadable, paths};
use crate::format::Id;
use crate::format::bundle::{self, Bundle};
use crate::format::envelope::{MAGIC_BUNDLE, MAGIC_SNAPSHOT};
use crate::format::snapshot::Snapshot;

/// Which snapshots a command acts on. Names match as globs (`*`, `?`).
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    /// A glob the snapshot name must match; `None` matches every name.
    pub name: Option<String>,
    /// Tags a snapshot must all carry (exact matches).
    pub tags: Vec<String>,
}

/// Glob match with `*` (any run, also across `/`) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl SnapshotFilter {
    /// True if `s` has a matching name and every tag of the filter.
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.name.as_ref().is_none_or(|n| glob_match(n, &s.name))
            && self.tags.iter().all(|t| s.tags.contains(t))
    }
}

/// All snapshots matching `filter`, oldest first. Damaged snapshot files are skipped and
/// reported as warnings on the index cache.
pub async fn list_snapshots(
    repo: &Repository,
    filter: &SnapshotFilter,
) -> Result<Vec<(Id, Snapshot)>> {
    Ok(list_snapshots_checked(repo, filter).await?.0)
}

/// Like [`list_snapshots`], but a snapshot object that cannot be read is an error naming it
/// and `needs` (what cannot be decided without it): for choices that a snapshot not seen
/// would change, such as `latest`.
pub async fn list_snapshots_complete(
    repo: &Repository,
    filter: &SnapshotFilter,
    needs: &'static str,
) -> Result<Vec<(Id, Snapshot)>> {
    let (all, unreadable) = list_snapshots_checked(repo, filter).await?;
    match unreadable.into_iter().next() {
        Some(u) => Err(RepoError::SnapshotUnreadable { object: u.object, error: u.error, needs }),
        None => Ok(all),
    }
}

/// Like [`list_snapshots`], and also returns the snapshot files that could not be read (for
/// callers that must not go on without them, such as prune).
pub async fn list_snapshots_checked(
    repo: &Repository,
    filter: &SnapshotFilter,
) -> Result<(Vec<(Id, Snapshot)>, Vec<Unreadable>)> {
    // the listing made while the repository was opened, if no listing took it yet
    let at_open = repo.listed_at_open.lock().unwrap_or_else(|p| p.into_inner()).take();
    let (all, unreadable) = match at_open {
        Some(l) => l,
        None => list_all(repo).await?,
    };
    Ok((all.into_iter().filter(|(_, s)| filter.matches(s)).collect(), unreadable))
}

/// Every snapshot, oldest first, and the snapshot files that could not be read.
pub type Listing = (Vec<(Id, Snapshot)>, Vec<Unreadable>);

/// Lists and reads every snapshot ([`list_snapshots_checked`] without a filter), from the
/// local cache where it holds them, else from bundles or one object at a time.
pub(super) async fn list_all(repo: &Repository) -> Result<Listing> {
    let files = repo.backend.list(paths::SNAPSHOTS_DIR).await?;
    // objects seen before come from the local cache: a year of hourly snapshots is thousands
    // of requests to S3 otherwise, for every backup and restore of `latest`
    let names: Vec<Option<Id>> = files.iter().map(|f| paths::id_of(&f.path)).collect();
    let cached = repo.index.snapshot_objects(&names).unwrap_or_else(|_| vec![None; files.len()]);
    // many objects to fetch (a fresh pod): bundles hold copies of most of them
    let wanted: HashSet<Id> =
        names.iter().zip(&cached).filter(|(_, c)| c.is_none()).filter_map(|(n, _)| *n).collect();
    let mut bundled = if wanted.len() >= BUNDLE_READ_MIN {
        read_bundles(repo, &wanted).await
    } else {
        HashMap::new()
    };
    let sources: Vec<_> = files
        .into_iter()
        .zip(names)
        .zip(cached)
        .map(|((f, name), cached)| {
            // a bundle's copy (read_bundles kept only those that hash to their id)
            let copy = match (&cached, name) {
                (None, Some(n)) => bundled.remove(&n),
                _ => None,
            };
            let from_bundle = copy.is_some();
            (f, name, cached.or(copy), from_bundle)
        })
        .collect();
    let loaded: Vec<_> = stream::iter(sources)
        .map(|(f, name, have, from_bundle)| async move {
            let loaded = async {
                let (bytes, fetched) = match have {
                    Some(b) => (b, from_bundle),
                    None => {
                        repo.fetched_alone.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        (repo.backend.get(&f.path).await?, true)
                    }
                };
                let body = repo.open_object(MAGIC_SNAPSHOT, &bytes, &f.path)?;
                let s =
                    Snapshot::decode(&body).map_err(|e| RepoError::format(f.path.clone(), e))?;
                let id = Id::of_bytes(&bytes);
                // only objects stored under their own id are cached
                let keep = (fetched && name == Some(id)).then_some(bytes);
                Ok::<_, RepoError>((id, s, keep))
            };
            (loaded.await, f.path)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut listed = std::collections::HashSet::new();
    let mut fetched = Vec::new();
    for (r, path) in loaded {
        match r {
            Ok((id, s, keep)) => {
                listed.insert(id);
                if let Some(b) = keep {
                    fetched.push((id, b));
                }
                out.push((id, s));
            }
            Err(RepoError::Backend(e)) if e.is_not_found() => {} // forgotten meanwhile
            Err(e) => {
                repo.index.warn(format!("{e}; snapshot skipped"));
                skipped.push(Unreadable { object: path, error: e.to_string() });
            }
        }
    }
    // a cache that cannot be written only costs the requests again next time
    if let Err(e) = repo.index.keep_snapshot_objects(&fetched, &listed) {
        repo.index.warn(format!("{e}; snapshots are fetched again next time"));
    }
    out.sort_by_key(|a| (a.1.time_ns, a.0));
    Ok((out, skipped))
}

/// The snapshots matching `filter`, oldest first; with `latest`, only the newest `latest` of
/// each name. With `complete`, a snapshot that cannot be read is an error (it might be among
/// the newest, or one the caller would act on); otherwise it is skipped with a warning.
pub async fn select_snapshots(
    repo: &Repository,
    filter: &SnapshotFilter,
    latest: Option<usize>,
    complete: bool,
) -> Result<Vec<(Id, Snapshot)>> {
    let all = if complete {
        list_snapshots_complete(repo, filter, "the selection is uncertain").await?
    } else {
        list_snapshots(repo, filter).await?
    };
    Ok(match latest {
        None => all,
        Some(k) => newest_per_name(all, k),
    })
}

/// Keeps only the newest `k` snapshots of each name from a list sorted oldest first.
pub fn newest_per_name(all: Vec<(Id, Snapshot)>, k: usize) -> Vec<(Id, Snapshot)> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut kept: Vec<_> = all
        .into_iter()
        .rev()
        .filter(|(_, s)| {
            let n = seen.entry(s.name.clone()).or_default();
            *n += 1;
            *n <= k
        })
        .collect();
    kept.reverse();
    kept
}

/// `latest` (the newest matching `filter`) or a unique id prefix.
pub async fn resolve_snapshot(
    repo: &Repository,
    selector: &str,
    filter: &SnapshotFilter,
) -> Result<(Id, Snapshot)> {
    if selector == "latest" {
        let all = list_snapshots_complete(repo, filter, "the latest is uncertain").await?;
        let what = filter
            .name
            .as_deref()
            .map(|n| format!("latest (name {n})"))
            .unwrap_or_else(|| "latest".into());
        return all.into_iter().next_back().ok_or(RepoError::SnapshotNotFound(what));
    }
    let all = list_snapshots(repo, filter).await?;
    let sel = selector.to_ascii_lowercase();
    let mut hits = all.into_iter().filter(|(id, _)| id.to_hex().starts_with(&sel));
    match (hits.next(), hits.next()) {
        (Some(h), None) => Ok(h),
        (Some(_), Some(_)) => Err(RepoError::AmbiguousSnapshot(selector.into())),
        _ => Err(RepoError::SnapshotNotFound(selector.into())),
    }
}

/// Snapshot objects to fetch from which a listing first reads the bundles.
const BUNDLE_READ_MIN: usize = 8;
/// Snapshot objects a listing fetched one by one (no bundle had them) from which a writer
/// stores a new bundle.
const BUNDLE_WRITE_MIN: usize = 32;
/// Bundles a listing reads at most (normally one or two: each writer deletes the others).
const BUNDLES_READ_MAX: usize = 16;

/// The copies of the `wanted` snapshot objects that bundles this cache has not read yet
/// hold, each checked against its id. Bundles are only a shortcut: one that vanished
/// meanwhile (a writer replaced it) is passed over, and a listing or a bundle that cannot be
/// read is a warning, after which the objects are fetched one by one.
async fn read_bundles(repo: &Repository, wanted: &HashSet<Id>) -> HashMap<Id, Vec<u8>> {
    let mut copies = HashMap::new();
    let listed = match repo.backend.list(paths::BUNDLES_DIR).await {
        Ok(l) => l,
        Err(e) => {
            repo.index.warn(format!("{e}; snapshots are fetched one by one"));
            return copies;
        }
    };
    let listed: Vec<(Id, u64)> =
        listed.iter().filter_map(|o| paths::id_of(&o.path).map(|id| (id, o.size))).collect();
    let done = repo.index.bundles_read().unwrap_or_default();
    let mut unread: Vec<_> = listed.iter().filter(|(id, _)| !done.contains(id)).copied().collect();
    // the largest first: the newest full bundle covers the most
    unread.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    let mut reads = stream::iter(unread.into_iter().take(BUNDLES_READ_MAX))
        .map(|(id, _)| async move {
            let path = paths::bundle(&id);
            let read = async {
                let body = repo.get_object(&path, &id, MAGIC_BUNDLE).await?;
                Bundle::decode(&body).map_err(|e| RepoError::format(path, e))
            };
            (id, read.await)
        })
        .buffer_unordered(4);
    let mut read = Vec::new();
    while let Some((id, r)) = reads.next().await {
        match r {
            Ok(b) => {
                read.push(id);
                for (sid, bytes) in b.objects {
                    if wanted.contains(&sid) && Id::of_bytes(&bytes) == sid {
                        copies.insert(sid, bytes);
                    }
                }
                if copies.len() == wanted.len() {
                    break;
                }
            }
            Err(RepoError::Backend(e)) if e.is_not_found() => {}
            Err(e) => repo.index.warn(format!(
                "{e}; the snapshots that bundle holds are fetched one by one (the next bundle \
                 stored replaces it)"
            )),
        }
    }
    let listed: HashSet<Id> = listed.into_iter().map(|(id, _)| id).collect();
    // best effort: without the note, the bundles are only read again
    let _ = repo.index.note_bundles_read(&read, &listed);
    copies
}

/// After a backup, or a forget (`forgot`: snapshots it deleted): stores one bundle of every
/// listed snapshot object the local cache holds and deletes the other bundles, when this
/// process's listings fetched many snapshot objects one by one (an empty cache, and no bundle
/// or an old one), or when a forget removed snapshots that bundles may still hold. Best
/// effort: a failure is a warning, since a bundle only saves requests. Returns the bundle
/// stored.
pub async fn store_bundle_if_worth(repo: &Repository, forgot: bool) -> Option<Id> {
    let fetched_alone = repo.fetched_alone.swap(0, std::sync::atomic::Ordering::Relaxed);
    if fetched_alone < BUNDLE_WRITE_MIN && !forgot {
        return None;
    }
    let stored = async {
        let old: Vec<Id> = repo
            .backend
            .list(paths::BUNDLES_DIR)
            .await?
            .iter()
            .filter_map(|o| paths::id_of(&o.path))
            .collect();
        if old.is_empty() && fetched_alone < BUNDLE_WRITE_MIN {
            return Ok(None); // a forget, and no bundle to purge
        }
        let files = repo.backend.list(paths::SNAPSHOTS_DIR).await?;
        let names: Vec<Option<Id>> = files.iter().map(|f| paths::id_of(&f.path)).collect();
        let cached = repo.index.snapshot_objects(&names)?;
        let objects: Vec<(Id, Vec<u8>)> = names
            .iter()
            .zip(cached)
            .filter_map(|(n, c)| Some(((*n)?, c?)))
            .filter(|(_, b)| b.len() <= bundle::MAX_OBJECT_LEN)
            .take(bundle::MAX_OBJECTS)
            .collect();
        // a cache that lost its snapshot objects meanwhile (cleared and rebuilt during the
        // run) would replace a full bundle with a near-empty one
        if objects.len() * 10 < names.len() * 9 {
            return Ok(None);
        }
        let body = Bundle { objects }.encode().map_err(|e| RepoError::format("bundle", e))?;
        let sealed = repo.seal(MAGIC_BUNDLE, &body)?;
        let id = Id::of_bytes(&sealed);
        repo.backend.put(&paths::bundle(&id), sealed).await?;
        Ok::<_, RepoError>(Some((id, old)))
    };
    let (id, old) = match stored.await {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            repo.index.warn(format!(
                "{e}; no snapshot bundle was stored (a fresh cache fetches the snapshots one by \
                 one)"
            ));
            return None;
        }
    };
    for b in old.iter().filter(|b| **b != id) {
        match repo.backend.delete(&paths::bundle(b)).await {
            Err(e) if !e.is_not_found() => {
                repo.index.warn(format!("{e}; an old snapshot bundle stays (harmless)"))
            }
            _ => {}
        }
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("postgres/*", "postgres/fnb-admin"));
        assert!(!glob_match("postgres/*", "timescaledb/x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("a?c", "abcd"));
    }
}
