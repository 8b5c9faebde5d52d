//! Leases of running backups and prunes (`locks/`), and the prune records backups must honour.
//! The protocol and the argument for its safety are in `format-spec/prune.md`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Condemned, RepoError, Repository, Result, paths};
use crate::backend::Backend;
use crate::format::Id;
use crate::format::envelope::MAGIC_PRUNE_RECORD;
use crate::format::lock::{LeaseBody, LeaseKind, LeaseName};
use crate::format::prune::PruneRecord;

/// How often a lease is refreshed.
pub const LEASE_REFRESH: Duration = Duration::from_secs(5 * 60);
/// A lease not refreshed for this long belongs to a dead process.
pub const LEASE_EXPIRY_SECS: i64 = 30 * 60;

/// Wall-clock time in Unix seconds (0 if the clock is before 1970): lease names and key files use
/// it.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A lease is treated as lapsed by its holder once this long has passed since the start of its
/// last successful refresh: one refresh period earlier than others treat it as expired.
pub const LEASE_SAFE_SECS: i64 = LEASE_EXPIRY_SECS - LEASE_REFRESH.as_secs() as i64;

/// A point in time on this host's two clocks. The boot clock counts time the process was
/// stopped or the machine suspended; the wall clock catches up after a paused VM resumes.
#[derive(Clone, Copy)]
struct Stamp {
    boot: Duration,
    wall: i64,
}

impl Stamp {
    fn now() -> Stamp {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into the timespec it is given and nothing else.
        let boot = if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0 {
            Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
        } else {
            Duration::ZERO
        };
        Stamp { boot, wall: now_secs() }
    }
    /// Seconds since `self` by whichever clock says more.
    fn elapsed(&self) -> i64 {
        let n = Stamp::now();
        (n.boot.saturating_sub(self.boot).as_secs() as i64).max(n.wall - self.wall)
    }
}

/// A lease held by this process.
///
/// Its holder relies on it only while it is *continuous*: every refresh started within
/// [`LEASE_SAFE_SECS`] of the previous one, by this host's own clocks, and the previous name
/// was still in place (a prune removes names it found expired). Once that fails the lease is
/// lapsed for good: a refresh after a long pause (SIGSTOP, a suspended VM, a hung mount) does
/// not revive it, since a prune may already have acted on its expiry.
pub struct Lease {
    backend: Arc<dyn Backend>,
    name: Mutex<LeaseName>,
    /// The previous name while a refresh has not yet deleted it (a refresh stopped between
    /// its put and its delete would leave it behind): [`Lease::release`] removes it too.
    stale: Mutex<Option<LeaseName>>,
    last: Mutex<Stamp>,
    lapsed: AtomicBool,
    /// Held for a whole refresh: the keep-alive task and a holder's own refresh must not
    /// interleave (one would find the name the other just replaced gone, and lapse).
    refreshing: tokio::sync::Mutex<()>,
}

fn lock_path(n: &LeaseName) -> String {
    format!("{}{}", paths::LOCKS_DIR, n.encode())
}

fn body() -> Vec<u8> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    LeaseBody { pid: std::process::id(), host }.encode()
}

impl Lease {
    /// Writes a new lease of `kind`.
    pub async fn acquire(backend: Arc<dyn Backend>, kind: LeaseKind) -> Result<Arc<Lease>> {
        let mut r = [0u8; 8];
        crate::codec::random_bytes(&mut r).map_err(|e| RepoError::codec("lease id", e))?;
        let name = LeaseName { kind, id: u64::from_le_bytes(r), time: now_secs() };
        let started = Stamp::now();
        backend.put(&lock_path(&name), body()).await?;
        Ok(Arc::new(Lease {
            backend,
            stale: Mutex::new(None),
            name: Mutex::new(name),
            last: Mutex::new(started),
            lapsed: AtomicBool::new(false),
            refreshing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The lease's random id, the same in every name it is refreshed under.
    pub fn id(&self) -> u64 {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).id
    }

    /// What the lease announces: backup, read or prune.
    pub fn kind(&self) -> LeaseKind {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).kind
    }

    fn lapse(&self) -> RepoError {
        self.lapsed.store(true, Ordering::SeqCst);
        RepoError::LeaseLapsed { minutes: LEASE_SAFE_SECS / 60 }
    }

    /// Writes the lease under the current time, then removes the older name. Fails, and
    /// lapses the lease for good, if the previous refresh is too long ago or a prune removed
    /// the lease as expired.
    pub async fn refresh(&self) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        if self.lapsed.load(Ordering::SeqCst) {
            return Err(self.lapse());
        }
        let started = Stamp::now();
        let old = self.name.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if self.last.lock().unwrap_or_else(|p| p.into_inner()).elapsed() >= LEASE_SAFE_SECS {
            return Err(self.lapse());
        }
        if self.backend.stat(&lock_path(&old)).await?.is_none() {
            return Err(self.lapse());
        }
        let new = LeaseName { time: now_secs(), ..old.clone() };
        let renamed = new.time != old.time;
        self.backend.put(&lock_path(&new), body()).await?;
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = new;
        // judged again once the new name is in place: a put that hung (a stalled mount) may
        // have let the old name pass the expiry, and a prune may have acted on it meanwhile
        if self.last.lock().unwrap_or_else(|p| p.into_inner()).elapsed() >= LEASE_SAFE_SECS {
            return Err(self.lapse());
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = started;
        // within the same second the name did not change: the put above rewrote it in place
        if renamed {
            *self.stale.lock().unwrap_or_else(|p| p.into_inner()) = Some(old.clone());
            self.backend.delete(&lock_path(&old)).await?;
            *self.stale.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(())
    }

    /// Refreshes every `LEASE_REFRESH` until the returned task is aborted or the lease lapses.
    pub fn keep_alive(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_REFRESH).await;
                // a failed refresh is retried next period; `fresh()` tells when it is too late
                if let Err(RepoError::LeaseLapsed { .. }) = me.refresh().await {
                    return;
                }
            }
        })
    }

    /// True while other processes must still consider this lease alive, with a margin of
    /// one refresh period, and it has been so without a gap since it was acquired.
    pub fn fresh(&self) -> bool {
        !self.lapsed.load(Ordering::SeqCst)
            && self.last.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < LEASE_SAFE_SECS
    }

    /// [`Lease::fresh`] as a result: the check a writer makes before it commits and a prune
    /// makes before it deletes.
    pub fn ensure_fresh(&self) -> Result<()> {
        if self.fresh() { Ok(()) } else { Err(self.lapse()) }
    }

    /// Stops `keep_alive` (this lease's refresh task), waits until it has stopped, then
    /// removes the lease: a refresh under way must not write a new name after the removal.
    pub async fn stop_and_release(&self, keep_alive: Option<tokio::task::JoinHandle<()>>) {
        if let Some(k) = keep_alive {
            k.abort();
            let _ = k.await;
        }
        self.release().await;
    }

    /// Removes the lease (best effort: a name left behind expires). A running
    /// [`Lease::keep_alive`] task must be stopped first ([`Lease::stop_and_release`]).
    pub async fn release(&self) {
        let n = self.name.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = self.backend.delete(&lock_path(&n)).await;
        let stale = self.stale.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = stale {
            let _ = self.backend.delete(&lock_path(&s)).await;
        }
    }

    /// Moves the start of the last refresh `secs` into the past, as a pause would (tests).
    #[doc(hidden)]
    pub fn backdate_for_tests(&self, secs: u64) {
        let mut l = self.last.lock().unwrap_or_else(|p| p.into_inner());
        l.boot = l.boot.saturating_sub(Duration::from_secs(secs));
        l.wall -= secs as i64;
    }
}

/// The newest name of each lease id in one listing of `locks/`, and every parsed name.
async fn list_leases(backend: &Arc<dyn Backend>) -> Result<(Vec<LeaseName>, Vec<LeaseName>)> {
    let mut newest: HashMap<u64, LeaseName> = HashMap::new();
    let mut all = Vec::new();
    for o in backend.list(paths::LOCKS_DIR).await? {
        let Some(Ok(n)) = o.path.rsplit('/').next().map(LeaseName::decode) else { continue };
        if newest.get(&n.id).is_none_or(|m| m.time < n.time) {
            newest.insert(n.id, n.clone());
        }
        all.push(n);
    }
    Ok((newest.into_values().collect(), all))
}

fn expired(n: &LeaseName, now: i64) -> bool {
    now.saturating_sub(n.time) >= LEASE_EXPIRY_SECS
}

/// The live leases: the newest name of each lease id, if refreshed within the expiry time.
pub async fn live_leases(backend: &Arc<dyn Backend>) -> Result<Vec<LeaseName>> {
    let now = now_secs();
    Ok(list_leases(backend).await?.0.into_iter().filter(|n| !expired(n, now)).collect())
}

/// Removes the names of expired leases (dead processes) and superseded names of live ones,
/// judged from one listing. Names it cannot parse (a newer version's kinds) are left alone. A
/// holder that finds its name removed treats its lease as lapsed ([`Lease::refresh`]).
pub async fn remove_expired_leases(backend: &Arc<dyn Backend>) -> Result<u64> {
    let now = now_secs();
    let (newest, all) = list_leases(backend).await?;
    let live: HashSet<String> = newest.iter().filter(|n| !expired(n, now)).map(lock_path).collect();
    let mut n = 0;
    for name in all.iter().map(lock_path).filter(|p| !live.contains(p)) {
        backend.delete(&name).await?;
        n += 1;
    }
    Ok(n)
}

/// Listings of the prune records tried before giving up on one in which none vanished.
const RECORD_LISTINGS: usize = 8;

/// Every readable prune record. Damaged ones (they do not decrypt or decode) are reported as
/// warnings and skipped: a record nobody can read is never swept, so its packs are simply
/// kept. A record the storage fails to deliver is an error: another process may read it.
///
/// A record listed but gone when read was either swept (its packs are gone too) or confirmed,
/// which stores it again under a new name before deleting the old one. Skipping it would
/// miss the confirmed copy, whose `waiting` list may not hold this process's lease (it was
/// written after the prune listed leases): the records are listed again until one listing
/// reads whole.
pub async fn prune_records(repo: &Repository) -> Result<Vec<(Id, PruneRecord)>> {
    for _ in 0..RECORD_LISTINGS {
        let (mut out, mut unreadable) = (Vec::new(), Vec::new());
        let mut vanished = false;
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
                Err(RepoError::Backend(e)) if e.is_not_found() => vanished = true,
                // a record this process could not fetch (the storage failed after retries)
                // may be one the next sweep acts on without waiting for it: going on without
                // its packs could deduplicate against data about to be deleted
                Err(e @ RepoError::Backend(_)) => return Err(e),
                // a damaged record: no prune can read it either, so none sweeps it
                Err(e) => unreadable.push(format!("{e}; the record is ignored")),
            }
        }
        if !vanished {
            unreadable.into_iter().for_each(|w| repo.index.warn(w));
            return Ok(out);
        }
    }
    Err(RepoError::LockConflict(format!(
        "the prune records changed under each of {RECORD_LISTINGS} readings (a prune is \
         running); try again later"
    )))
}

/// What the stored prune records condemn (packs and index files).
pub async fn condemned(repo: &Repository) -> Result<Condemned> {
    let mut c = Condemned::default();
    for (_, r) in prune_records(repo).await? {
        c.packs.extend(r.packs);
    }
    Ok(c)
}
