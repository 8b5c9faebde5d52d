//! Leases of running backups and prunes (`locks/`), and the prune records backups must honour.
//! The protocol and the argument for its safety are in `format-spec/prune.md`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{RepoError, Repository, Result, paths};
use crate::backend::Backend;
use crate::format::Id;
use crate::format::envelope::MAGIC_PRUNE_RECORD;
use crate::format::lock::{LeaseBody, LeaseKind, LeaseName};
use crate::format::prune::PruneRecord;

/// How often a lease is refreshed.
pub const LEASE_REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lease not refreshed for this long belongs to a dead process.
pub const LEASE_EXPIRY_SECS: i64 = 30 * 60;

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A lease held by this process.
pub struct Lease {
    backend: Arc<dyn Backend>,
    name: Mutex<LeaseName>,
}

fn lock_path(n: &LeaseName) -> String {
    format!("{}{}", paths::LOCKS_DIR, n.encode())
}

impl Lease {
    pub async fn acquire(backend: Arc<dyn Backend>, kind: LeaseKind) -> Result<Arc<Lease>> {
        let mut r = [0u8; 8];
        crate::codec::random_bytes(&mut r).map_err(|e| RepoError::codec("lease id", e))?;
        let name = LeaseName { kind, id: u64::from_le_bytes(r), time: now_secs() };
        let body = LeaseBody {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
        };
        backend.put(&lock_path(&name), body.encode()).await?;
        Ok(Arc::new(Lease { backend, name: Mutex::new(name) }))
    }

    pub fn id(&self) -> u64 {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).id
    }

    /// Writes the lease under the current time, then removes the older name.
    pub async fn refresh(&self) -> Result<()> {
        let old = self.name.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let new = LeaseName { time: now_secs(), ..old.clone() };
        let body = LeaseBody {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
        };
        self.backend.put(&lock_path(&new), body.encode()).await?;
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = new;
        self.backend.delete(&lock_path(&old)).await?;
        Ok(())
    }

    /// Refreshes every `LEASE_REFRESH` until the returned task is aborted.
    pub fn keep_alive(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_REFRESH).await;
                let _ = me.refresh().await; // a missed refresh shows in `fresh()`
            }
        })
    }

    /// True while other processes must still consider this lease alive, with a margin of
    /// one refresh period.
    pub fn fresh(&self) -> bool {
        let t = self.name.lock().unwrap_or_else(|p| p.into_inner()).time;
        now_secs() - t < LEASE_EXPIRY_SECS - LEASE_REFRESH.as_secs() as i64
    }

    pub async fn release(&self) {
        let n = self.name.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = self.backend.delete(&lock_path(&n)).await;
    }
}

/// The live leases: the newest name of each lease id, if refreshed within the expiry time.
pub async fn live_leases(backend: &Arc<dyn Backend>) -> Result<Vec<LeaseName>> {
    let mut newest: HashMap<u64, LeaseName> = HashMap::new();
    for o in backend.list(paths::LOCKS_DIR).await? {
        let Some(name) = o.path.rsplit('/').next() else { continue };
        if let Ok(n) = LeaseName::decode(name)
            && newest.get(&n.id).is_none_or(|m| m.time < n.time)
        {
            newest.insert(n.id, n);
        }
    }
    let now = now_secs();
    Ok(newest.into_values().filter(|n| now - n.time < LEASE_EXPIRY_SECS).collect())
}

/// Removes the names of expired leases (dead processes): housekeeping only.
pub async fn remove_expired_leases(backend: &Arc<dyn Backend>) -> Result<u64> {
    let live: HashSet<String> = live_leases(backend).await?.iter().map(lock_path).collect();
    let mut n = 0;
    for o in backend.list(paths::LOCKS_DIR).await? {
        if !live.contains(&o.path) {
            backend.delete(&o.path).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Every readable prune record. Unreadable ones are reported as warnings and skipped: a
/// record nobody can read is never swept, so its packs are simply kept.
pub async fn prune_records(repo: &Repository) -> Result<Vec<(Id, PruneRecord)>> {
    let mut out = Vec::new();
    for o in repo.backend.list(paths::PRUNE_DIR).await? {
        let Some(id) = paths::id_of(&o.path) else { continue };
        let rec = async {
            let bytes = repo.backend.get(&o.path).await?;
            let body = repo.open_object(MAGIC_PRUNE_RECORD, &bytes, &o.path)?;
            PruneRecord::decode(&body).map_err(|e| RepoError::format(o.path.clone(), e))
        }
        .await;
        match rec {
            Ok(r) => out.push((id, r)),
            Err(RepoError::Backend(e)) if e.is_not_found() => {}
            Err(e) => repo.index.warn(format!("{e}; the record is ignored")),
        }
    }
    Ok(out)
}

/// Packs condemned by a prune: a backup must not deduplicate against them.
pub async fn condemned_packs(repo: &Repository) -> Result<HashSet<Id>> {
    Ok(prune_records(repo).await?.into_iter().flat_map(|(_, r)| r.packs).collect())
}
