//! Trust: no prune takes data from under a reader or a writer, and nobody with write access to
//! the storage can switch encryption off. Each test forces one interleaving (or one forged
//! object) through the library or the real binary; each is named after the failure it pins.

use crate::common;
use std::sync::Arc;

use ::repo::backend::{Backend, MemBackend};
use ::repo::codec::crypto::{KdfParams, MasterKeys, wrap_master};
use ::repo::format::Id;
use ::repo::format::config::Config;
use ::repo::format::envelope::{CipherKind, MAGIC_CONFIG};
use ::repo::format::lock::LeaseKind;
use ::repo::ops::prune::{self, PruneOptions};
use ::repo::repo::lease::Lease;
use ::repo::repo::{self as engine, Access, NoProgress, backup_stream, paths, seal_object};

use crate::common::engine::{backup, clean, mem_repo, meta, open, restore, small_opts as opts};

fn repack_all() -> PruneOptions {
    PruneOptions { max_unused: 0.0, ..PruneOptions::default() }
}

/// Two dumps sharing half their content, the forgotten one stored first, so that forgetting
/// it leaves partly used packs (which a prune repacks).
async fn kept_and_forgotten(base: &Arc<dyn Backend>, cache: &std::path::Path) -> Vec<u8> {
    let r = open(base.clone(), cache, Access::Backup).await;
    let mut keep = Vec::new();
    let mut drop = Vec::new();
    for i in 0..40u64 {
        keep.extend(common::noise(6000, i));
        drop.extend(common::noise(6000, i));
        drop.extend(common::noise(6000, 1000 + i));
    }
    let gone = backup(&r, "forgotten", &drop).await;
    backup(&r, "kept", &keep).await;
    r.close().await;
    base.delete(&paths::snapshot(&gone)).await.unwrap();
    keep
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_opened_before_a_repacking_prune_reads_every_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let keep = kept_and_forgotten(&base, &tmp.path().join("w")).await;

    // the reader opens (and resolves its snapshot), then a prune repacks everything it needs
    let reader = open(base.clone(), &tmp.path().join("r"), Access::Read).await;
    let pruner = open(base.clone(), &tmp.path().join("p"), Access::Prune).await;
    let p = prune::run(pruner.clone(), &repack_all()).await.unwrap();
    assert!(p.packs_repacked > 0, "{p:?}");
    assert_eq!(restore(&reader, "kept").await, keep);
    assert_eq!(p.packs_deleted, 0, "the reader's lease holds the sweep: {p:?}");
    reader.close().await;

    // with the reader gone the next prune frees the space, and everything still restores
    let p = prune::run(pruner.clone(), &repack_all()).await.unwrap();
    assert!(p.packs_deleted > 0, "{p:?}");
    pruner.close().await;
    let fresh = open(base.clone(), &tmp.path().join("f"), Access::Read).await;
    assert_eq!(restore(&fresh, "kept").await, keep);
    clean(&fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_opened_between_mark_and_sweep_avoids_the_condemned_copies() {
    // the cache used to keep one copy per chunk, whichever index file it read last: repeat
    // so that a lucky order cannot pass
    for _ in 0..6 {
        let tmp = tempfile::tempdir().unwrap();
        let base = mem_repo().await;
        let keep = kept_and_forgotten(&base, &tmp.path().join("w")).await;

        // a running backup makes the prune stop after the mark: every kept chunk now has two
        // copies, the condemned old one and the repacked new one
        let backup_lease = Lease::acquire(base.clone(), LeaseKind::Backup).await.unwrap();
        let pruner = open(base.clone(), &tmp.path().join("p"), Access::Prune).await;
        let p = prune::run(pruner.clone(), &repack_all()).await.unwrap();
        assert!(p.packs_repacked > 0 && p.records_waiting == 1, "{p:?}");

        // a reader opens now: it must read the new copies, since the old ones go any moment
        let reader = open(base.clone(), &tmp.path().join("r"), Access::Read).await;
        backup_lease.release().await;
        let p = prune::run(pruner.clone(), &repack_all()).await.unwrap();
        assert!(p.packs_deleted > 0, "the record predates the reader, so it is swept: {p:?}");
        assert_eq!(restore(&reader, "kept").await, keep);
        clean(&reader).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_that_opened_before_a_prune_never_deduplicates_against_deleted_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let data = common::noise(200_000, 7);
    let w = open(base.clone(), &tmp.path().join("w"), Access::Backup).await;
    let first = backup(&w, "db", &data).await;
    w.close().await;

    // the next backup has opened the repository (its cache knows `data`'s chunks) ...
    let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
    // ... when the only snapshot with `data` is forgotten and pruned
    base.delete(&paths::snapshot(&first)).await.unwrap();
    let pruner = open(base.clone(), &tmp.path().join("p"), Access::Prune).await;
    prune::run(pruner.clone(), &PruneOptions::default()).await.unwrap();
    // the backup stores the same data again and commits; a later prune runs too
    backup(&b, "db", &data).await;
    b.close().await;
    prune::run(pruner.clone(), &PruneOptions::default()).await.unwrap();
    pruner.close().await;

    let fresh = open(base.clone(), &tmp.path().join("f"), Access::Read).await;
    assert_eq!(restore(&fresh, "db").await, data);
    clean(&fresh).await;
}

/// `repair index` while a record waits indexes the condemned packs again. A prune stopped at
/// any point after its sweep must leave no index entry for a pack it deleted: the next backup
/// would deduplicate against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_keeps_a_condemned_pack_that_a_remaining_index_file_names() {
    for allowed in 0.. {
        let tmp = tempfile::tempdir().unwrap();
        let base = mem_repo().await;
        let data = common::noise(200_000, 9);
        let w = open(base.clone(), &tmp.path().join("w"), Access::Backup).await;
        let first = backup(&w, "db", &data).await;
        backup(&w, "other", &common::noise(20_000, 10)).await;
        w.close().await;
        base.delete(&paths::snapshot(&first)).await.unwrap();

        // the prune condemns the packs but waits for a running backup ...
        let lease = Lease::acquire(base.clone(), LeaseKind::Backup).await.unwrap();
        let pruner = open(base.clone(), &tmp.path().join("p"), Access::Prune).await;
        let p = prune::run(pruner.clone(), &PruneOptions::default()).await.unwrap();
        assert!(p.packs_condemned > 0 && p.packs_deleted == 0, "{p:?}");
        pruner.close().await;
        // ... meanwhile `repair index` indexes every pack again, the condemned ones included
        let fixer = open(base.clone(), &tmp.path().join("x"), Access::Backup).await;
        ::repo::ops::repair::repair_index(fixer.clone()).await.unwrap();
        fixer.close().await;
        lease.release().await;
        // the next prune stops after `allowed` writes and deletes
        let fault: Arc<dyn Backend> =
            Arc::new(::repo::backend::FaultBackend::counting_deletes(base.clone(), allowed));
        let pf = open(fault, &tmp.path().join("pf"), Access::Unleased).await;
        let done = prune::run(pf.clone(), &PruneOptions::default()).await.is_ok();

        // whatever the index names is there: check is clean, and a backup that
        // deduplicates against it restores
        for o in base.list(paths::LOCKS_DIR).await.unwrap() {
            base.delete(&o.path).await.unwrap();
        }
        let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
        clean(&b).await;
        backup(&b, "db", &data).await;
        b.close().await;
        let fresh = open(base.clone(), &tmp.path().join("f"), Access::Read).await;
        assert_eq!(restore(&fresh, "db").await, data, "stopped after {allowed} writes");
        if done {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_whose_lease_was_removed_as_expired_refuses_to_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
    // the backup is paused past the expiry: a prune sees an old lease and removes it
    for o in base.list(paths::LOCKS_DIR).await.unwrap() {
        base.delete(&o.path).await.unwrap();
    }
    // on waking up, the keep-alive refreshes the lease; the backup must notice the lapse
    b.lease().expect("a backup holds a lease").refresh().await.ok();
    let r = backup_stream(
        b.clone(),
        std::io::Cursor::new(common::noise(50_000, 3)),
        meta("db"),
        Arc::new(NoProgress),
        async { Ok(()) },
    )
    .await;
    let e = r.expect_err("a lapsed lease must not commit");
    assert!(e.to_string().contains("lease"), "{e}");
    assert!(base.list(paths::SNAPSHOTS_DIR).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_with_a_damaged_index_file_deletes_nothing_even_if_warnings_were_drained() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let w = open(base.clone(), &tmp.path().join("w"), Access::Backup).await;
    backup(&w, "db", &common::noise(100_000, 1)).await;
    w.close().await;
    let ix = base.list(paths::INDEX_DIR).await.unwrap();
    let mut bytes = base.get(&ix[0].path).await.unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    base.delete(&ix[0].path).await.unwrap();
    base.put(&ix[0].path, bytes).await.unwrap();
    let packs_before = base.list(paths::DATA_DIR).await.unwrap();

    let pruner = open(base.clone(), &tmp.path().join("p"), Access::Prune).await;
    let _ = pruner.index().take_warnings(); // what the CLI does after opening
    let e = prune::run(pruner.clone(), &PruneOptions::default()).await.expect_err("must stop");
    assert!(e.to_string().contains(&ix[0].path), "{e}");
    assert_eq!(base.list(paths::DATA_DIR).await.unwrap(), packs_before);
}

/// A plaintext config (cipher 0) forged from the format spec alone, with a fresh repository id.
fn forged_plaintext_config() -> Vec<u8> {
    let attacker = MasterKeys::generate().unwrap();
    let c = Config {
        repo_id: [7; 32],
        chunk_min: 4096,
        chunk_avg: 16384,
        chunk_max: 65536,
        pack_target: 16 << 20,
        zstd_level: 3,
    };
    seal_object(&attacker, CipherKind::None, MAGIC_CONFIG, &c.encode()).unwrap()
}

#[test]
fn forged_plaintext_config_in_an_encrypted_repository_is_refused() {
    let f = common::Fixture::new();
    f.backup("db", b"first");
    std::fs::write(f.repo().join("config"), forged_plaintext_config()).unwrap();
    let r = f.run(&["-q", "backup", "--stdin", "--name", "db"], b"secret rows in the clear");
    assert_ne!(r.code, 0, "a downgraded config must not be used");
    assert!(r.stderr.contains("config"), "{}", r.stderr);
    for p in f.files("data") {
        let bytes = std::fs::read(&p).unwrap();
        assert!(!bytes.windows(11).any(|w| w == b"secret rows"), "plaintext written to {p:?}");
    }
}

#[test]
fn unencrypted_key_file_is_refused_when_a_password_is_given() {
    let f = common::Fixture::new();
    f.backup("db", b"first");
    // the attacker replaces every key file by one with kdf = 0 (keys in the clear), and the
    // config by a plaintext one under those keys
    let attacker = MasterKeys::generate().unwrap();
    for k in f.files("keys") {
        std::fs::remove_file(k).unwrap();
    }
    let kf = wrap_master(&attacker, None, KdfParams::default(), 0).unwrap().encode();
    let kid = ::repo::format::Id::of_bytes(&kf);
    std::fs::write(f.repo().join(paths::key(&kid)), kf).unwrap();
    let body = Config {
        repo_id: [7; 32],
        chunk_min: 4096,
        chunk_avg: 16384,
        chunk_max: 65536,
        pack_target: 16 << 20,
        zstd_level: 3,
    }
    .encode();
    let cfg = seal_object(&attacker, CipherKind::None, MAGIC_CONFIG, &body).unwrap();
    std::fs::write(f.repo().join("config"), cfg).unwrap();
    let r = f.run(&["-q", "backup", "--stdin", "--name", "db"], b"secret rows in the clear");
    assert_ne!(r.code, 0, "a password was given: an unencrypted key must not be used");
    assert!(r.stderr.contains("key"), "{}", r.stderr);
}

#[test]
fn key_file_demanding_gigabytes_of_kdf_memory_is_refused_without_allocating() {
    let f = common::Fixture::new();
    // a key file that asks for 2 GiB of Argon2 memory (the password is irrelevant)
    let keys = MasterKeys::generate().unwrap();
    let p = KdfParams { m_cost_kib: 1024, t_cost: 1, p_cost: 1 };
    let mut kf = wrap_master(&keys, Some(b"x"), p, 0).unwrap();
    kf.m_cost = 2 * 1024 * 1024;
    for k in f.files("keys") {
        std::fs::remove_file(k).unwrap();
    }
    let bytes = kf.encode();
    std::fs::write(f.repo().join(paths::key(&::repo::format::Id::of_bytes(&bytes))), bytes)
        .unwrap();
    let r = f.run(&["snapshots"], b"");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("2048 MiB of Argon2 memory"), "{}", r.stderr);
}

#[test]
fn init_refuses_kdf_memory_a_reader_would_refuse() {
    let f = common::Fixture::empty();
    let r = f.run(&["init", "--kdf-memory", "2097152"], b"");
    assert_ne!(r.code, 0);
    assert!(!f.repo().join("config").exists());
}

type Hook = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A backend that runs `hook` (another process's work, on the inner backend) just before
/// the `nth` listing of `prefix` (or with `on_get`, the `nth` read of an object under it):
/// an interleaving a test cannot otherwise force.
struct HookBackend {
    inner: Arc<dyn Backend>,
    prefix: &'static str,
    on_get: bool,
    nth: std::sync::atomic::AtomicI32,
    hook: tokio::sync::Mutex<Option<Hook>>,
    ran: std::sync::atomic::AtomicBool,
    ran_notify: tokio::sync::Notify,
}

impl HookBackend {
    fn new(inner: Arc<dyn Backend>, prefix: &'static str, nth: i32, hook: Hook) -> Arc<Self> {
        Arc::new(HookBackend {
            inner,
            prefix,
            on_get: false,
            nth: nth.into(),
            hook: tokio::sync::Mutex::new(Some(hook)),
            ran: false.into(),
            ran_notify: tokio::sync::Notify::new(),
        })
    }
    fn on_get(inner: Arc<dyn Backend>, prefix: &'static str, nth: i32, hook: Hook) -> Arc<Self> {
        let mut h = Arc::into_inner(Self::new(inner, prefix, nth, hook)).unwrap();
        h.on_get = true;
        Arc::new(h)
    }
    /// Runs the hook at the `nth` matching call; later matching calls (reads in flight
    /// beside it) wait until it has run.
    async fn maybe_run(&self, matches: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        if !matches {
            return;
        }
        match self.nth.fetch_sub(1, SeqCst) {
            1 => {
                let hook = self.hook.lock().await.take();
                if let Some(h) = hook {
                    h.await;
                }
                self.ran.store(true, SeqCst);
                self.ran_notify.notify_waiters();
            }
            n if n < 1 => loop {
                let notified = self.ran_notify.notified();
                if self.ran.load(SeqCst) {
                    break;
                }
                notified.await;
            },
            _ => {}
        }
    }
}

#[async_trait::async_trait]
impl Backend for HookBackend {
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), ::repo::backend::BackendError> {
        self.inner.put(path, data).await
    }
    async fn get(&self, path: &str) -> Result<Vec<u8>, ::repo::backend::BackendError> {
        self.maybe_run(self.on_get && path.starts_with(self.prefix)).await;
        self.inner.get(path).await
    }
    async fn get_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ::repo::backend::BackendError> {
        self.inner.get_range(path, offset, len).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<::repo::backend::ObjectInfo>, ::repo::backend::BackendError> {
        self.maybe_run(!self.on_get && prefix == self.prefix).await;
        self.inner.list(prefix).await
    }
    async fn stat(&self, path: &str) -> Result<Option<u64>, ::repo::backend::BackendError> {
        self.inner.stat(path).await
    }
    async fn delete(&self, path: &str) -> Result<(), ::repo::backend::BackendError> {
        self.inner.delete(path).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_while_a_prune_repacks_reports_no_damage_that_is_not_there() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let keep = kept_and_forgotten(&base, &tmp.path().join("w")).await;
    // while the check runs (at its listing of index files), a prune repacks and sweeps
    let (b2, dir) = (base.clone(), tmp.path().join("p"));
    let prune_now: Hook = Box::pin(async move {
        let pruner = open(b2, &dir, Access::Prune).await;
        prune::run(pruner.clone(), &repack_all()).await.unwrap();
        pruner.close().await;
    });
    let hooked: Arc<dyn Backend> = HookBackend::new(base.clone(), paths::INDEX_DIR, 2, prune_now);
    let checker = open(hooked, &tmp.path().join("c"), Access::Read).await;
    clean(&checker).await;
    assert_eq!(restore(&checker, "kept").await, keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_delete_while_a_prune_sweeps_leaves_a_consistent_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let keep = kept_and_forgotten(&base, &tmp.path().join("w")).await;
    let dst: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let sync_opts = ::repo::ops::sync::SyncOptions { delete: true, ..Default::default() };
    ::repo::ops::sync::run(base.clone(), dst.clone(), &sync_opts, &NoProgress).await.unwrap();

    // a prune has condemned data and waits for a backup; the sync starts; the backup ends
    // and a prune sweeps while the sync copies (at its listing of packs)
    let lease = Lease::acquire(base.clone(), LeaseKind::Backup).await.unwrap();
    let pruner = open(base.clone(), &tmp.path().join("p"), Access::Prune).await;
    let p = prune::run(pruner.clone(), &repack_all()).await.unwrap();
    assert!(p.packs_repacked > 0 && p.records_waiting == 1, "{p:?}");
    let sweep_now: Hook = Box::pin(async move {
        lease.release().await;
        let p = prune::run(pruner.clone(), &repack_all()).await.unwrap();
        assert!(p.packs_deleted > 0, "{p:?}");
        pruner.close().await;
    });
    let hooked: Arc<dyn Backend> = HookBackend::new(base.clone(), paths::DATA_DIR, 1, sweep_now);
    ::repo::ops::sync::run(hooked, dst.clone(), &sync_opts, &NoProgress).await.unwrap();

    let copy = open(dst.clone(), &tmp.path().join("d"), Access::Read).await;
    clean(&copy).await;
    assert_eq!(restore(&copy, "kept").await, keep);
}

/// Found in an audit: a source that vanished during `sync --delete` (an autofs NAS mount
/// that failed to remount, an unmounted SFTP volume: listings of a missing directory are
/// empty) made the sync delete every snapshot, index file and pack of the mirror, and
/// report success. The source must still hold its config before anything is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_delete_from_a_source_that_vanished_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("nas");
    let src: Arc<dyn Backend> = Arc::new(::repo::backend::LocalBackend::new(&src_dir));
    engine::init(&src, Some(b"pw"), &opts()).await.unwrap();
    let data = common::noise(200_000, 11);
    let b = open(src.clone(), &tmp.path().join("b"), Access::Backup).await;
    backup(&b, "db", &data).await;
    b.close().await;
    let dst: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let sync_opts = ::repo::ops::sync::SyncOptions { delete: true, ..Default::default() };
    ::repo::ops::sync::run(src.clone(), dst.clone(), &sync_opts, &NoProgress).await.unwrap();
    let before = dst.list("").await.unwrap().len();
    let (from, to) = (src_dir.clone(), tmp.path().join("unmounted"));
    let unmount: Hook = Box::pin(async move { std::fs::rename(from, to).unwrap() });
    let hooked: Arc<dyn Backend> = HookBackend::new(src.clone(), paths::DATA_DIR, 1, unmount);
    let r = ::repo::ops::sync::run(hooked, dst.clone(), &sync_opts, &NoProgress).await;
    let e = r.expect_err("a vanished source is an error");
    assert!(e.to_string().contains("config"), "{e}");
    assert_eq!(dst.list("").await.unwrap().len(), before, "nothing deleted at the mirror");
    let copy = open(dst.clone(), &tmp.path().join("d"), Access::Read).await;
    assert_eq!(restore(&copy, "db").await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_refreshed_after_a_pause_past_the_margin_stays_lapsed() {
    let base: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let l = Lease::acquire(base.clone(), LeaseKind::Backup).await.unwrap();
    l.refresh().await.unwrap();
    assert!(l.fresh());
    // SIGSTOP, a suspended VM or a hung mount: 26 minutes without a refresh
    l.backdate_for_tests(26 * 60);
    assert!(!l.fresh());
    let e = l.refresh().await.expect_err("a refresh after the pause must not revive the lease");
    assert!(e.to_string().contains("lease"), "{e}");
    assert!(!l.fresh(), "still lapsed after the refresh attempt");
}

/// Two refreshes within one second give the lease the same name: the second must not delete
/// the name it has just written (found in review: the lease vanished from storage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_within_one_second_keep_the_lease_in_storage() {
    let base: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let l = Lease::acquire(base.clone(), LeaseKind::Backup).await.unwrap();
    for _ in 0..3 {
        l.refresh().await.unwrap();
        assert_eq!(base.list("locks/").await.unwrap().len(), 1, "the lease is in storage");
    }
    l.release().await;
    assert!(base.list("locks/").await.unwrap().is_empty());
}

/// A delta whose own pack stays but whose base a prune condemned must not be reused: a sweep
/// that does not wait for this backup deletes the base (found in review of delta blobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_does_not_reuse_a_delta_whose_base_is_condemned() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let d = common::noise(200_000, 21);
    let mut changed = d.clone();
    changed[100_000] ^= 0xff; // one chunk becomes a delta against its predecessor
    let e = common::noise(200_000, 22);
    let w = open(base.clone(), &tmp.path().join("w"), Access::Backup).await;
    let s1 = backup(&w, "a", &d).await;
    let mut s2_data = changed.clone();
    s2_data.extend(&e);
    let s2 = backup_stream(
        w.clone(),
        std::io::Cursor::new(s2_data),
        meta("a"),
        Arc::new(NoProgress),
        async { Ok(()) },
    )
    .await
    .unwrap();
    assert!(s2.2.delta_chunks > 0, "{:?}", s2.2);
    backup(&w, "c", &e).await; // keeps the delta's pack alive
    w.close().await;
    base.delete(&paths::snapshot(&s1)).await.unwrap();
    base.delete(&paths::snapshot(&s2.0)).await.unwrap();

    // a prune condemns the base's pack (never repacking), then waits for a running backup
    let lease = Lease::acquire(base.clone(), LeaseKind::Backup).await.unwrap();
    let pruner = open(base.clone(), &tmp.path().join("p"), Access::Prune).await;
    let keep_packs = PruneOptions { max_unused: 1.0, ..PruneOptions::default() };
    let p = prune::run(pruner.clone(), &keep_packs).await.unwrap();
    assert!(p.packs_condemned > 0 && p.records_waiting == 1, "{p:?}");
    // the next backup opens (knowing the record); meanwhile the other backup ends and the
    // sweep runs without waiting for this one
    let (b2, l2, p2, k2) = (base.clone(), lease.clone(), pruner.clone(), keep_packs.clone());
    let sweep: Hook = Box::pin(async move {
        l2.release().await;
        let p = prune::run(p2, &k2).await.unwrap();
        assert!(p.packs_deleted > 0, "{p:?}");
    });
    let hooked: Arc<dyn Backend> = HookBackend::new(b2, paths::SNAPSHOTS_DIR, 1, sweep);
    let b = open(hooked, &tmp.path().join("b"), Access::Backup).await;
    backup(&b, "a", &changed).await;
    b.close().await;
    pruner.close().await;
    let fresh = open(base.clone(), &tmp.path().join("f"), Access::Read).await;
    assert_eq!(restore(&fresh, "a").await, changed);
    clean(&fresh).await;
}

/// Found in review of the open that lists `index/` beside the prune records: a warm cache
/// does not read again an index file it holds, so a listing made before a sweep (still
/// naming the file the sweep deletes) with the records read after it (the record gone too)
/// kept the entries of a deleted pack, and the backup deduplicated against it. A cache that
/// holds index files lists them after the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_backup_opened_as_a_sweep_runs_does_not_reuse_the_swept_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let gone = common::noise(200_000, 31);
    let kept = common::noise(200_000, 32);
    let warm = tmp.path().join("b");
    let w = open(base.clone(), &warm, Access::Backup).await;
    let s1 = backup(&w, "gone", &gone).await;
    backup(&w, "kept", &kept).await;
    w.close().await;
    drop(w); // its database is locked while open: a later open would use a temporary one
    base.delete(&paths::snapshot(&s1)).await.unwrap();
    // a prune condemns the forgotten dump's pack, then waits for a running backup
    let lease = Lease::acquire(base.clone(), LeaseKind::Backup).await.unwrap();
    let pruner = open(base.clone(), &tmp.path().join("p"), Access::Prune).await;
    let keep_packs = PruneOptions { max_unused: 1.0, ..PruneOptions::default() };
    let p = prune::run(pruner.clone(), &keep_packs).await.unwrap();
    assert!(p.packs_condemned > 0 && p.records_waiting == 1, "{p:?}");
    // the warm cache takes in what the prune wrote: it holds every index file listed now
    let r = open(base.clone(), &warm, Access::Read).await;
    r.close().await;
    drop(r);
    // the warm backup opens; as it lists the records, the other backup ends and the sweep
    // deletes the index file, the pack and the record
    let (b2, l2, p2, k2) = (base.clone(), lease.clone(), pruner.clone(), keep_packs.clone());
    let sweep: Hook = Box::pin(async move {
        // requests made beside the listing of the records are answered first
        tokio::task::yield_now().await;
        l2.release().await;
        let p = prune::run(p2, &k2).await.unwrap();
        assert!(p.packs_deleted > 0, "{p:?}");
    });
    let hooked: Arc<dyn Backend> = HookBackend::new(b2, paths::PRUNE_DIR, 1, sweep);
    let b = open(hooked, &warm, Access::Backup).await;
    backup(&b, "gone", &gone).await;
    b.close().await;
    pruner.close().await;
    let fresh = open(base.clone(), &tmp.path().join("f"), Access::Read).await;
    assert_eq!(restore(&fresh, "gone").await, gone);
    clean(&fresh).await;
}

/// The CI failure of the loop test in prune.rs: a backup committed between the prune's read of
/// new index files and its listing of snapshots. The snapshot is listed, but the index files
/// written before it were not read, so its content list looked missing and the prune failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_listing_a_snapshot_committed_after_its_index_read_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let keep = kept_and_forgotten(&base, &tmp.path().join("w")).await;
    let fresh: Vec<u8> = (0..20u64).flat_map(|i| common::noise(6000, 5000 + i)).collect();
    let (b2, dir, data) = (base.clone(), tmp.path().join("b"), fresh.clone());
    let backup_now: Hook = Box::pin(async move {
        let b = open(b2, &dir, Access::Backup).await;
        backup(&b, "new", &data).await;
        b.close().await;
    });
    let hooked: Arc<dyn Backend> =
        HookBackend::new(base.clone(), paths::SNAPSHOTS_DIR, 1, backup_now);
    let pruner = open(hooked, &tmp.path().join("p"), Access::Prune).await;
    let p = prune::run(pruner.clone(), &repack_all()).await.unwrap();
    assert!(p.packs_repacked > 0 && p.snapshots == 2, "{p:?}");
    pruner.close().await;
    let r = open(base.clone(), &tmp.path().join("f"), Access::Read).await;
    assert_eq!(restore(&r, "new").await, fresh);
    assert_eq!(restore(&r, "kept").await, keep);
    clean(&r).await;
}

/// The same interleaving for check: a backup that committed after the check read the index
/// files but before it listed the snapshots was reported as "chunks in no index file".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_no_damage_for_a_backup_committed_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    kept_and_forgotten(&base, &tmp.path().join("w")).await;
    let (b2, dir) = (base.clone(), tmp.path().join("b"));
    let backup_now: Hook = Box::pin(async move {
        let b = open(b2, &dir, Access::Backup).await;
        backup(&b, "new", &common::noise(100_000, 77)).await;
        b.close().await;
    });
    let hooked: Arc<dyn Backend> =
        HookBackend::new(base.clone(), paths::SNAPSHOTS_DIR, 1, backup_now);
    let checker = open(hooked, &tmp.path().join("c"), Access::Read).await;
    let c = ::repo::ops::check::run(checker.clone(), &Default::default()).await.unwrap();
    assert!(c.ok, "{:?}", c.damage);
    // nor does it call its local cache wrong for not knowing that backup yet
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    checker.close().await;
}

/// Overlapping hourly runs of one dump: the newer backup opened before the older committed,
/// then found the older one's snapshot as the one to compare with, but not its index files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_whose_predecessor_committed_after_it_opened_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let first = common::noise(200_000, 3);
    let (b2, dir, d) = (base.clone(), tmp.path().join("a"), first.clone());
    let other_commits: Hook = Box::pin(async move {
        let a = open(b2, &dir, Access::Backup).await;
        backup(&a, "db", &d).await;
        a.close().await;
    });
    let hooked: Arc<dyn Backend> =
        HookBackend::new(base.clone(), paths::SNAPSHOTS_DIR, 1, other_commits);
    let b = open(hooked, &tmp.path().join("b"), Access::Backup).await;
    let mut second = first.clone();
    second[100_000..100_100].fill(7);
    let id = backup(&b, "db", &second).await;
    // it compared with that snapshot (before: a warning, and every changed chunk stored whole)
    let warnings = b.index().take_warnings();
    assert!(warnings.is_empty(), "{warnings:?}");
    b.close().await;
    // both snapshots carry the same time: name this one by its id
    let r = open(base.clone(), &tmp.path().join("f"), Access::Read).await;
    let f = engine::SnapshotFilter::default();
    let (_, snap) = engine::resolve_snapshot(&r, &id.to_hex(), &f).await.unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = common::engine::Shared(out.clone());
    engine::restore_stream(r.clone(), &snap, "db", sink, Arc::new(NoProgress)).await.unwrap();
    assert!(*out.lock().unwrap() == second, "restored bytes differ");
    clean(&r).await;
}

/// A repository (two dumps, one forgotten) where a prune stopped right after its mark (the
/// write that confirms its record failed), so its record stays unconfirmed. Each budget of
/// writes is tried on a fresh repository (a stopped prune's repacked packs would change what
/// the next one writes). Returns the storage and the packs the record condemns.
async fn unconfirmed_record(dir: &std::path::Path) -> (Arc<dyn Backend>, Vec<Id>) {
    for budget in 0..200 {
        let base = mem_repo().await;
        let dir = dir.join(budget.to_string());
        kept_and_forgotten(&base, &dir.join("w")).await;
        let fb: Arc<dyn Backend> =
            Arc::new(::repo::backend::FaultBackend::new(base.clone(), budget));
        let Ok(p) =
            engine::Repository::open(fb, Some(b"pw"), Some(dir.join("p")), Access::Prune).await
        else {
            continue;
        };
        let p = Arc::new(p);
        let r = prune::run(p.clone(), &repack_all()).await;
        p.close().await;
        if r.is_err() && !base.list(paths::PRUNE_DIR).await.unwrap().is_empty() {
            let reader = open(base.clone(), &dir.join("r"), Access::Read).await;
            let packs: Vec<Id> = reader.condemned().packs.iter().copied().collect();
            reader.close().await;
            assert!(!packs.is_empty());
            return (base, packs);
        }
    }
    panic!("no budget left a record behind");
}

/// A record confirmed (stored again under a new name, the old one deleted) between an
/// opener's listing of the records and its read of them: the opener skipped it as gone, and
/// so could deduplicate against packs a sweep that does not wait for it deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opener_reading_a_record_as_it_is_confirmed_still_knows_its_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, packs) = unconfirmed_record(&tmp.path().join("u")).await;
    let (b2, dir) = (base.clone(), tmp.path().join("p2"));
    let confirm_now: Hook = Box::pin(async move {
        let pruner = open(b2, &dir, Access::Prune).await;
        prune::run(pruner.clone(), &repack_all()).await.unwrap();
        pruner.close().await;
    });
    let hooked: Arc<dyn Backend> =
        HookBackend::on_get(base.clone(), paths::PRUNE_DIR, 1, confirm_now);
    let b = open(hooked, &tmp.path().join("b"), Access::Backup).await;
    let known = b.condemned();
    for p in &packs {
        assert!(
            known.packs.contains(p),
            "the backup does not know pack {} is condemned",
            p.short()
        );
    }
    b.close().await;
}

/// A sweep that resurrects a pack (a backup deduplicated against it while the record waited)
/// between check's listing of the index files and its reading of them: the file that named
/// the pack was gone and the one the sweep wrote for it was never listed, so check called a
/// good snapshot broken (and `repair snapshots --forget-broken` would have deleted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reading_index_files_as_a_sweep_resurrects_a_pack_finds_no_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let data = common::noise(300_000, 1);
    let r = open(base.clone(), &tmp.path().join("w"), Access::Backup).await;
    let first = backup(&r, "db", &data).await;
    backup(&r, "other", b"something else").await;
    // backup B opens; the only snapshot needing `data` is forgotten and a prune condemns its
    // packs, waiting for B; B stores the same data (deduplicated against them) and ends
    let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
    base.delete(&paths::snapshot(&first)).await.unwrap();
    let p = prune::run(r.clone(), &PruneOptions::default()).await.unwrap();
    assert!(p.packs_condemned > 0 && p.records_waiting == 1, "{p:?}");
    backup(&b, "db", &data).await;
    b.close().await;
    // check opens knowing the record; a sweep resurrects the packs as it reads index files
    let (r2, swept) = (r.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let s2 = swept.clone();
    let sweep_now: Hook = Box::pin(async move {
        let p = prune::run(r2, &PruneOptions::default()).await.unwrap();
        assert!(p.packs_resurrected > 0 && p.index_files_deleted > 0, "{p:?}");
        s2.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let warm = open(base.clone(), &tmp.path().join("c"), Access::Read).await;
    warm.close().await;
    drop(warm); // its cache is up to date, and free: the open below reads no index file
    let hooked: Arc<dyn Backend> =
        HookBackend::on_get(base.clone(), paths::INDEX_DIR, 1, sweep_now);
    let c = open(hooked, &tmp.path().join("c"), Access::Read).await;
    let report = ::repo::ops::check::run(c.clone(), &Default::default()).await.unwrap();
    assert!(swept.load(std::sync::atomic::Ordering::SeqCst));
    assert!(report.ok, "{:?}", report.damage);
    c.close().await;
    r.close().await;
}

/// `repair index` opened knowing a record (so it leaves the record's packs out of its new
/// index); a sweep then resurrected one of them for a snapshot, writing an index file for it,
/// before repair listed the old index files: repair removed that file with the others, and
/// the snapshot's chunks were in no index file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_index_keeps_the_file_a_sweep_wrote_for_a_resurrected_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let data = common::noise(300_000, 1);
    let r = open(base.clone(), &tmp.path().join("w"), Access::Backup).await;
    let first = backup(&r, "db", &data).await;
    backup(&r, "other", b"something else").await;
    let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
    base.delete(&paths::snapshot(&first)).await.unwrap();
    let p = prune::run(r.clone(), &PruneOptions::default()).await.unwrap();
    assert!(p.packs_condemned > 0 && p.records_waiting == 1, "{p:?}");
    backup(&b, "db", &data).await; // deduplicated against the condemned packs
    b.close().await;
    let r2 = r.clone();
    let sweep_now: Hook = Box::pin(async move {
        let p = prune::run(r2, &PruneOptions::default()).await.unwrap();
        assert!(p.packs_resurrected > 0, "{p:?}");
    });
    // listing 1 of index/ is the open's cache sync, listing 2 repair's list of old files
    let hooked: Arc<dyn Backend> = HookBackend::new(base.clone(), paths::INDEX_DIR, 2, sweep_now);
    let repairer = open(hooked, &tmp.path().join("x"), Access::Backup).await;
    let rep = ::repo::ops::repair::repair_index(repairer.clone()).await.unwrap();
    assert!(rep.index_files_kept > 0, "{rep:?}");
    repairer.close().await;
    r.close().await;
    let fresh = open(base.clone(), &tmp.path().join("f"), Access::Read).await;
    assert!(restore(&fresh, "db").await == data, "restored bytes differ");
    clean(&fresh).await;
}

/// A prune of the copy while `sync` writes to it: the packs copied before their index files
/// looked like a dead backup's, and with no lease at the destination the prune condemned and
/// swept them at once; the index files copied next named deleted packs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_of_the_destination_during_a_sync_keeps_what_it_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let src = mem_repo().await;
    let data = common::noise(400_000, 4);
    let w = open(src.clone(), &tmp.path().join("w"), Access::Backup).await;
    backup(&w, "db", &data).await;
    w.close().await;
    assert!(src.list(paths::DATA_DIR).await.unwrap().len() >= 4);
    let dst: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let (d2, dir) = (dst.clone(), tmp.path().join("p"));
    let prune_copy: Hook = Box::pin(async move {
        assert!(!d2.list(paths::DATA_DIR).await.unwrap().is_empty(), "packs copied before");
        assert!(d2.list(paths::INDEX_DIR).await.unwrap().is_empty(), "no index file yet");
        let p = open(d2, &dir, Access::Prune).await;
        let r = prune::run(p.clone(), &PruneOptions::default()).await.unwrap();
        assert_eq!(r.packs_condemned, 0, "{r:?}");
        p.close().await;
    });
    // before the third pack is read from the source, two are at the destination, unindexed
    // (one copy at a time, so that they are)
    let hooked: Arc<dyn Backend> = HookBackend::on_get(src.clone(), paths::DATA_DIR, 3, prune_copy);
    let sync_opts = ::repo::ops::sync::SyncOptions { jobs: 1, ..Default::default() };
    ::repo::ops::sync::run(hooked, dst.clone(), &sync_opts, &NoProgress).await.unwrap();
    assert!(dst.list(paths::LOCKS_DIR).await.unwrap().is_empty(), "the sync's lease is gone");
    let copy = open(dst.clone(), &tmp.path().join("d"), Access::Read).await;
    assert!(restore(&copy, "db").await == data, "restored bytes differ");
    clean(&copy).await;
}

/// `sync --delete` while a restore reads the copy: it deleted the packs of a snapshot the
/// source had forgotten, under the reader. Deletions now wait for a sync with no other lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_delete_waits_while_the_copy_is_being_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = mem_repo().await;
    let keep = kept_and_forgotten(&src, &tmp.path().join("w")).await;
    let dst: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let delete = ::repo::ops::sync::SyncOptions { delete: true, ..Default::default() };
    ::repo::ops::sync::run(src.clone(), dst.clone(), &delete, &NoProgress).await.unwrap();
    let p = open(src.clone(), &tmp.path().join("p"), Access::Prune).await;
    let r = prune::run(p.clone(), &repack_all()).await.unwrap();
    assert!(r.packs_deleted > 0, "{r:?}");
    p.close().await;
    let reader = Lease::acquire(dst.clone(), LeaseKind::Read).await.unwrap();
    let s = ::repo::ops::sync::run(src.clone(), dst.clone(), &delete, &NoProgress).await.unwrap();
    assert_eq!(s.deletions_postponed_for_leases, 1, "{s:?}");
    assert_eq!(s.deleted_objects, 0, "{s:?}");
    reader.release().await;
    let s = ::repo::ops::sync::run(src.clone(), dst.clone(), &delete, &NoProgress).await.unwrap();
    assert!(s.deleted_objects > 0 && s.deletions_postponed_for_leases == 0, "{s:?}");
    let copy = open(dst.clone(), &tmp.path().join("d"), Access::Read).await;
    assert!(restore(&copy, "kept").await == keep, "restored bytes differ");
    clean(&copy).await;
}

/// Storage with faults under chosen prefixes: reads or deletes that fail (an outage that
/// outlasts the retries), and a callback run as an object is written (a pause mid-write).
#[derive(Default)]
struct Faults {
    inner: Option<Arc<dyn Backend>>,
    fail_get: Option<&'static str>,
    fail_delete: Option<&'static str>,
    on_put: Option<(&'static str, OnPut)>,
}

/// What [`Faults`] runs as an object under its prefix is written.
type OnPut = Box<dyn Fn() + Send + Sync>;

impl Faults {
    fn inner(&self) -> &Arc<dyn Backend> {
        self.inner.as_ref().expect("an inner backend")
    }
}

fn outage(path: &str) -> ::repo::backend::BackendError {
    let source = std::io::Error::other("connection reset");
    ::repo::backend::BackendError::Io { path: path.into(), source }
}

#[async_trait::async_trait]
impl Backend for Faults {
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), ::repo::backend::BackendError> {
        if let Some((prefix, f)) = &self.on_put
            && path.starts_with(prefix)
        {
            f();
        }
        self.inner().put(path, data).await
    }
    async fn get(&self, path: &str) -> Result<Vec<u8>, ::repo::backend::BackendError> {
        if self.fail_get.is_some_and(|p| path.starts_with(p)) {
            return Err(outage(path));
        }
        self.inner().get(path).await
    }
    async fn get_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ::repo::backend::BackendError> {
        self.inner().get_range(path, offset, len).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<::repo::backend::ObjectInfo>, ::repo::backend::BackendError> {
        self.inner().list(prefix).await
    }
    async fn stat(&self, path: &str) -> Result<Option<u64>, ::repo::backend::BackendError> {
        self.inner().stat(path).await
    }
    async fn delete(&self, path: &str) -> Result<(), ::repo::backend::BackendError> {
        if self.fail_delete.is_some_and(|p| path.starts_with(p)) {
            return Err(outage(path));
        }
        self.inner().delete(path).await
    }
    fn location(&self) -> String {
        self.inner().location()
    }
}

/// A backup that could not fetch a prune record went on without it, with a warning: it could
/// deduplicate against the record's packs, which a sweep that does not wait for it deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_that_cannot_fetch_a_prune_record_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = unconfirmed_record(&tmp.path().join("u")).await;
    let failing: Arc<dyn Backend> = Arc::new(Faults {
        inner: Some(base),
        fail_get: Some(paths::PRUNE_DIR),
        ..Faults::default()
    });
    let r =
        engine::Repository::open(failing, Some(b"pw"), Some(tmp.path().join("b")), Access::Backup)
            .await;
    let e = r.err().expect("the open must fail");
    assert!(e.to_string().contains("connection reset"), "{e}");
}

/// Found in an audit: `init` that stored its key file but failed before its config (a full
/// disk, Ctrl-C), run again with the same password, left two key files the password opens;
/// when the stale one sorted first, every command failed with "config: corrupt". The key
/// file that opens the config is the one used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_key_file_from_a_failed_init_is_passed_over() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let real = base.list(paths::KEYS_DIR).await.unwrap().remove(0).path;
    // a key file of another init with the same password, sorting before the real one
    let stale = loop {
        let other = mem_repo().await;
        let k = other.list(paths::KEYS_DIR).await.unwrap().remove(0).path;
        if k < real {
            break (k.clone(), other.get(&k).await.unwrap());
        }
    };
    base.put(&stale.0, stale.1).await.unwrap();
    let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
    backup(&b, "db", &common::noise(50_000, 1)).await;
    b.close().await;
}

/// Found in an audit: a snapshot dated years ahead (a host clock far off) counted as the
/// newest of its name, so `--max-age` never called the name late after its backups stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_dated_in_the_future_does_not_hide_a_stopped_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let day = 86_400_000_000_000i64;
    for (t, seed) in [(now - 3 * day, 1), (now + 3650 * day, 2)] {
        let m = engine::SnapshotMeta { time_ns: t, ..common::engine::meta("postgres/db") };
        let data = std::io::Cursor::new(common::noise(10_000, seed));
        backup_stream(b.clone(), data, m, Arc::new(NoProgress), async { Ok(()) }).await.unwrap();
    }
    let rule: ::repo::ops::freshness::MaxAge = "postgres/*=26h".parse().unwrap();
    let late = ::repo::ops::freshness::late(&b, &[rule], now).await.unwrap();
    assert_eq!(late.len(), 1, "{late:?}");
    assert!(late[0].age_hours.unwrap() > 70.0, "judged by the snapshot three days old");
    b.close().await;
}

/// Found in an audit: check called a snapshot it could not fetch (a storage outage) broken,
/// and `repair snapshots --forget-broken` deleted that good snapshot. An outage now stops
/// the check, and the repair with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_does_not_forget_a_snapshot_the_storage_failed_to_deliver() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
    backup(&b, "db", &common::noise(100_000, 5)).await;
    b.close().await;
    let failing: Arc<dyn Backend> = Arc::new(Faults {
        inner: Some(base.clone()),
        fail_get: Some(paths::SNAPSHOTS_DIR),
        ..Faults::default()
    });
    let fixer = open(failing, &tmp.path().join("r"), Access::Read).await;
    let r = ::repo::ops::repair::repair_snapshots(fixer.clone(), true).await;
    let e = r.expect_err("an outage is not damage");
    assert!(e.to_string().contains("connection reset"), "{e}");
    assert_eq!(base.list(paths::SNAPSHOTS_DIR).await.unwrap().len(), 1, "the snapshot stays");
    fixer.close().await;
    // nor does `check --read-data` call a pack it could not fetch damaged
    let failing: Arc<dyn Backend> = Arc::new(Faults {
        inner: Some(base.clone()),
        fail_get: Some(paths::DATA_DIR),
        ..Faults::default()
    });
    let checker = open(failing, &tmp.path().join("c"), Access::Read).await;
    let opts = ::repo::ops::check::CheckOptions {
        read_data: Some(::repo::ops::check::Subset::All),
        ..Default::default()
    };
    let r = ::repo::ops::check::run(checker.clone(), &opts).await;
    let e = r.expect_err("an outage is not damage");
    assert!(e.to_string().contains("connection reset"), "{e}");
    checker.close().await;
}

/// A sync whose lease at the destination lapsed after it copied packs (a long pause; a prune
/// there removed the lease as expired, then condemned and swept the unindexed packs): it went
/// on to copy the index files and snapshots that need them, and reported success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_whose_destination_lease_lapsed_copies_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let src = mem_repo().await;
    let data = common::noise(400_000, 5);
    let w = open(src.clone(), &tmp.path().join("w"), Access::Backup).await;
    backup(&w, "db", &data).await;
    w.close().await;
    let dst: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let (d2, dir) = (dst.clone(), tmp.path().join("p"));
    let pause_and_prune: Hook = Box::pin(async move {
        for l in d2.list(paths::LOCKS_DIR).await.unwrap() {
            d2.delete(&l.path).await.unwrap(); // found expired by a prune
        }
        let p = open(d2, &dir, Access::Prune).await;
        let r = prune::run(p.clone(), &PruneOptions::default()).await.unwrap();
        assert!(r.packs_deleted > 0, "{r:?}");
        p.close().await;
    });
    // the hook runs as the first index file is read from the source: every pack is copied
    let hooked: Arc<dyn Backend> =
        HookBackend::on_get(src.clone(), paths::INDEX_DIR, 1, pause_and_prune);
    let sync_opts = ::repo::ops::sync::SyncOptions::default();
    let r = ::repo::ops::sync::run(hooked, dst.clone(), &sync_opts, &NoProgress).await;
    assert!(matches!(r, Err(engine::RepoError::LeaseLapsed { .. })), "{r:?}");
    assert!(dst.list(paths::SNAPSHOTS_DIR).await.unwrap().is_empty());
    // the next sync completes the copy
    ::repo::ops::sync::run(src.clone(), dst.clone(), &sync_opts, &NoProgress).await.unwrap();
    let copy = open(dst.clone(), &tmp.path().join("d"), Access::Read).await;
    assert!(restore(&copy, "db").await == data, "restored bytes differ");
    clean(&copy).await;
}

/// A backup whose lease lapsed while its snapshot was stored (a hung mount), and whose
/// removal of that snapshot then failed: the error was the storage's alone, and did not say
/// that a snapshot which may not be whole was left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_that_cannot_withdraw_its_snapshot_after_a_lapse_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let lease: Arc<std::sync::OnceLock<Arc<Lease>>> = Arc::default();
    let l2 = lease.clone();
    let pause = move || {
        if let Some(l) = l2.get() {
            l.backdate_for_tests(26 * 60);
        }
    };
    let faulty: Arc<dyn Backend> = Arc::new(Faults {
        inner: Some(base.clone()),
        fail_delete: Some(paths::SNAPSHOTS_DIR),
        on_put: Some((paths::SNAPSHOTS_DIR, Box::new(pause))),
        ..Faults::default()
    });
    let b = open(faulty, &tmp.path().join("b"), Access::Backup).await;
    let _ = lease.set(b.lease().expect("a backup holds a lease").clone());
    let r = backup_stream(
        b.clone(),
        std::io::Cursor::new(common::noise(50_000, 3)),
        meta("db"),
        Arc::new(NoProgress),
        async { Ok(()) },
    )
    .await;
    let e = r.expect_err("a lapsed lease must not commit");
    let left = base.list(paths::SNAPSHOTS_DIR).await.unwrap();
    assert_eq!(left.len(), 1);
    let short = paths::id_of(&left[0].path).unwrap().short();
    assert!(e.to_string().contains(short.as_str()) && e.to_string().contains("forget"), "{e}");
}
