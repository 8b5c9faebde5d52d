//! Scale: what a command costs in requests and memory as the repository grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ::repo::backend::{Backend, BackendError, MemBackend, ObjectInfo};
use ::repo::repo::{self as engine, Access, SnapshotFilter, list_snapshots, paths};

use crate::common;
use crate::common::engine::{backup, open, small_opts as opts};

/// Counts the objects read under `snapshots/`.
struct CountingBackend {
    inner: Arc<dyn Backend>,
    snapshot_gets: AtomicUsize,
}

#[async_trait::async_trait]
impl Backend for CountingBackend {
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.inner.put(path, data).await
    }
    async fn get(&self, path: &str) -> Result<Vec<u8>, BackendError> {
        if path.starts_with(paths::SNAPSHOTS_DIR) {
            self.snapshot_gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(path).await
    }
    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        self.inner.get_range(path, offset, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(prefix).await
    }
    async fn stat(&self, path: &str) -> Result<Option<u64>, BackendError> {
        self.inner.stat(path).await
    }
    async fn delete(&self, path: &str) -> Result<(), BackendError> {
        self.inner.delete(path).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

/// Listing snapshots fetches each snapshot object once per cache: later listings (every
/// backup looks for its predecessor, every `restore latest` selects) read only new ones,
/// and forgotten snapshots leave the list at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_listings_fetch_only_new_snapshot_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
    engine::init(&mem, Some(b"pw"), &opts()).await.unwrap();
    let counting = Arc::new(CountingBackend { inner: mem.clone(), snapshot_gets: 0.into() });
    let gets = || counting.snapshot_gets.load(Ordering::SeqCst);
    let r = open(counting.clone(), tmp.path(), Access::Backup).await;
    let mut ids = Vec::new();
    for i in 0..5u64 {
        ids.push(backup(&r, &format!("db{i}"), &common::noise(20_000, i)).await);
    }
    let all = SnapshotFilter::default();
    let before = gets();
    for _ in 0..3 {
        assert_eq!(list_snapshots(&r, &all).await.unwrap().len(), 5);
    }
    assert_eq!(gets(), before, "each backup cached the snapshot it stored: nothing to fetch");
    // forgotten: gone from the listing at once, without a request, and from the cache
    mem.delete(&paths::snapshot(&ids[0])).await.unwrap();
    assert_eq!(list_snapshots(&r, &all).await.unwrap().len(), 4);
    assert_eq!(gets(), before);
    let first_two = [Some(ids[0]), Some(ids[1])];
    assert_eq!(r.index().snapshot_objects(&first_two).unwrap()[0], None, "evicted");
    assert!(r.index().snapshot_objects(&first_two).unwrap()[1].is_some());
    // a snapshot another process stored is fetched once
    let other = open(mem.clone(), &tmp.path().join("other"), Access::Backup).await;
    backup(&other, "db9", &common::noise(20_000, 9)).await;
    other.close().await;
    assert_eq!(list_snapshots(&r, &all).await.unwrap().len(), 5);
    assert_eq!(gets(), before + 1);
    assert_eq!(list_snapshots(&r, &all).await.unwrap().len(), 5);
    assert_eq!(gets(), before + 1);
    // a fresh cache (a new pod) fetches every object once, then no more
    let r2 = open(counting.clone(), &tmp.path().join("fresh"), Access::Read).await;
    let before = gets();
    assert_eq!(list_snapshots(&r2, &all).await.unwrap().len(), 5);
    assert_eq!(gets() - before, 5);
    assert_eq!(list_snapshots(&r2, &all).await.unwrap().len(), 5);
    assert_eq!(gets() - before, 5);
    r.close().await;
    r2.close().await;
}
