//! Scale: what a command costs in requests and memory as the repository grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ::repo::backend::{Backend, BackendError, MemBackend, ObjectInfo};
use ::repo::repo::{self as engine, Access, SnapshotFilter, list_snapshots, paths};

use crate::common;
use crate::common::engine::{backup, open, small_opts as opts};

/// Counts the objects read under `snapshots/`; with `refuse_bundles`, listing `bundles/`
/// fails (a storage policy that does not allow it).
struct CountingBackend {
    inner: Arc<dyn Backend>,
    snapshot_gets: AtomicUsize,
    refuse_bundles: std::sync::atomic::AtomicBool,
    bundle_gets: AtomicUsize,
    /// Range reads of packs longer than 1 MiB (reads of many chunks at once).
    pack_reads: AtomicUsize,
    /// Range reads of packs of any size (headers too).
    data_reads: AtomicUsize,
    /// Range reads of each pack (offset, length; headers too), by path.
    reads_by_pack: std::sync::Mutex<std::collections::HashMap<String, Vec<(u64, u64)>>>,
    /// Range reads of packs longer than this fail (a proxy that limits ranges).
    refuse_over: std::sync::atomic::AtomicU64,
    /// Range reads refused so.
    refused: AtomicUsize,
}

impl CountingBackend {
    fn new(inner: Arc<dyn Backend>) -> Self {
        CountingBackend {
            inner,
            snapshot_gets: 0.into(),
            refuse_bundles: false.into(),
            bundle_gets: 0.into(),
            pack_reads: 0.into(),
            data_reads: 0.into(),
            refuse_over: u64::MAX.into(),
            refused: 0.into(),
            reads_by_pack: Default::default(),
        }
    }
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
        if path.starts_with(paths::BUNDLES_DIR) {
            self.bundle_gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(path).await
    }
    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        if path.starts_with(paths::DATA_DIR) && len > 1 << 20 {
            self.pack_reads.fetch_add(1, Ordering::SeqCst);
        }
        if path.starts_with(paths::DATA_DIR) {
            self.data_reads.fetch_add(1, Ordering::SeqCst);
            let mut by_pack = self.reads_by_pack.lock().unwrap();
            by_pack.entry(path.into()).or_default().push((offset, len));
            if len > self.refuse_over.load(Ordering::SeqCst) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(BackendError::Injected { path: path.into() });
            }
        }
        self.inner.get_range(path, offset, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        if prefix == paths::BUNDLES_DIR && self.refuse_bundles.load(Ordering::SeqCst) {
            return Err(BackendError::Injected { path: prefix.into() });
        }
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

/// A restore reads a pack of the default size with one request: servers that copy the whole
/// object for each request (moto_server) or bill per request pay once per pack, not two or
/// three times (reads of at most 8 MiB did), also where a content list ends inside a pack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_reads_each_default_size_pack_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
    // small chunks, so that the stream needs many content lists; default-size packs
    let opts = engine::InitOptions { pack_target: 16 << 20, ..opts() };
    engine::init(&mem, Some(b"pw"), &opts).await.unwrap();
    let data = common::noise(56 << 20, 7);
    let w = open(mem.clone(), &tmp.path().join("w"), Access::Backup).await;
    backup(&w, "db", &data).await;
    w.close().await;
    let packs = mem.list(paths::DATA_DIR).await.unwrap().len();
    assert!(packs >= 3, "{packs} packs");
    let counting = Arc::new(CountingBackend::new(mem.clone()));
    let r = open(counting.clone(), &tmp.path().join("r"), Access::Read).await;
    let f = SnapshotFilter { name: Some("db".into()), tags: vec![] };
    let (_, snap) = engine::resolve_snapshot(&r, "latest", &f).await.unwrap();
    // list boundaries follow the keyed ids, so their number varies with the repository key
    // (8 to 15 in runs, once 4): two lists are enough for one to end inside a pack, and
    // about 11,000 chunks all without a boundary happen once in 10^5 keys
    assert!(snap.lists.len() >= 2, "{} content list", snap.lists.len());
    assert!(common::engine::restore(&r, "db").await == data);
    assert_eq!(counting.pack_reads.load(Ordering::SeqCst), packs);
    r.close().await;
}

/// A chunk repeated through the stream (the zero regions of a disk image) is read with the
/// group it lies in, not once per repeat: a 1 GiB image with 1 GiB of zeros took 10.6-12.3 s
/// to restore from moto_server with a request for each repeat, and 0.95-1.28 s without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_repeated_in_the_stream_is_read_once_per_group() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
    engine::init(&mem, Some(b"pw"), &opts()).await.unwrap();
    let mut data = common::noise(1 << 20, 3);
    data.extend(std::iter::repeat_n(0u8, 48 << 20));
    data.extend(common::noise(1 << 20, 4));
    let w = open(mem.clone(), &tmp.path().join("w"), Access::Backup).await;
    backup(&w, "img", &data).await;
    w.close().await;
    let packs = mem.list(paths::DATA_DIR).await.unwrap().len();
    let counting = Arc::new(CountingBackend::new(mem.clone()));
    let r = open(counting.clone(), &tmp.path().join("r"), Access::Read).await;
    assert!(common::engine::restore(&r, "img").await == data);
    // the zero chunk's repeats share groups of up to 17 MiB of output: a read or two per
    // pack (and its header, read twice when two groups of it start at once), where one read
    // per repeat was 3,134 reads for 31 packs
    let reads = counting.data_reads.load(Ordering::SeqCst);
    assert!(reads <= 3 * packs + 8, "{reads} reads for {packs} packs");
    r.close().await;
}

/// An edited stream is read a pack region at a time, not a chunk at a time: its changed
/// chunks (deltas, side by side in the newest pack) alternate in the stream with unchanged
/// chunks in older packs, and each was a read of its own (4,972 requests to restore the
/// twelfth hourly bench dump from moto_server, 17-18 s; with shared reads 597, 2.6-3.2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_stream_is_read_a_pack_region_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let opts = engine::InitOptions { pack_target: 1 << 20, ..opts() };
    engine::init(&mem, Some(b"pw"), &opts).await.unwrap();
    let v1 = common::noise(4 << 20, 11);
    let mut v2 = v1.clone();
    // one byte in every 8 KiB: about every other 4 KiB chunk changes
    for i in (0..v2.len()).step_by(8192) {
        v2[i] ^= 0x5a;
    }
    let w = open(mem.clone(), &tmp.path().join("w"), Access::Backup).await;
    backup(&w, "db", &v1).await;
    let id = backup(&w, "db", &v2).await;
    w.close().await;
    let packs = mem.list(paths::DATA_DIR).await.unwrap().len();
    let counting = Arc::new(CountingBackend::new(mem.clone()));
    let r = open(counting.clone(), &tmp.path().join("r"), Access::Read).await;
    let before = counting.data_reads.load(Ordering::SeqCst);
    assert!(common::engine::restore_id(&r, "db", &id).await == v2);
    let reads = counting.data_reads.load(Ordering::SeqCst) - before;
    // about 1,000 chunks, half of them deltas: a read per group was about a thousand reads
    assert!(reads <= 4 * packs + 40, "{reads} reads for {packs} packs");
    // shared reads that fail are tried once, then each group reads its own range (every
    // member retrying a read of up to 4 MiB was a download of it per group)
    counting.refuse_over.store(64 << 10, Ordering::SeqCst);
    let r = open(counting.clone(), &tmp.path().join("r2"), Access::Read).await;
    assert!(common::engine::restore_id(&r, "db", &id).await == v2);
    let refused = counting.refused.load(Ordering::SeqCst);
    assert!((1..=4 * packs + 40).contains(&refused), "{refused} reads refused");
    r.close().await;
}

/// Text-like rows (compressible, as a dump's are).
fn rows(n: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 8] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n * 40);
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (a, b) = (WORDS[(x % 8) as usize], WORDS[((x >> 3) % 8) as usize]);
        out.extend_from_slice(format!("{i:08}\t{a}\t{b}\t{:06x}\n", x >> 40).as_bytes());
    }
    out
}

/// The bases of an hourly dump's deltas are read a pack region at a time, by its backup and
/// by its restore: each level of their chains lies in the packs of one older backup, and
/// every window of a restore (8 MiB of deltas) and every batch of a backup (4 MiB) made its
/// own small read of each of those packs (the twelfth hourly bench dump: 502 requests to
/// restore it from moto_server, 819 to back it up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bases_of_many_windows_are_read_a_pack_region_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let opts = engine::InitOptions {
        chunk_min: 4096,
        chunk_avg: 16384,
        chunk_max: 65536,
        pack_target: 1 << 20,
        ..opts()
    };
    engine::init(&mem, Some(b"pw"), &opts).await.unwrap();
    // 40 MiB of rows, five hours; every hour changes a byte in every 2 KiB, so that every
    // chunk of the last is a delta four levels deep (five windows of bases)
    let mut data = rows(3 << 19, 5);
    let w = open(mem.clone(), &tmp.path().join("w"), Access::Backup).await;
    backup(&w, "db", &data).await;
    let whole: Vec<String> =
        mem.list(paths::DATA_DIR).await.unwrap().into_iter().map(|o| o.path).collect();
    for hour in 1..4u8 {
        for i in (usize::from(hour) * 397..data.len()).step_by(2048) {
            data[i] = b'a' + hour;
        }
        backup(&w, "db", &data).await;
    }
    // the packs of the older hours hold the bases (the newest backup's own pack holds its
    // deltas and content lists, read as before)
    let older: Vec<String> =
        mem.list(paths::DATA_DIR).await.unwrap().into_iter().map(|o| o.path).collect();
    let f = SnapshotFilter { name: Some("db".into()), tags: vec![] };
    let lists = engine::resolve_snapshot(&w, "latest", &f).await.unwrap().1.lists.len();
    w.close().await;
    drop(w); // its cache, warm, for the next backup
    for i in (4 * 397..data.len()).step_by(2048) {
        data[i] = b'e';
    }
    let counting = Arc::new(CountingBackend::new(mem.clone()));
    // ranges read from each of these packs, past its header
    let ranges = |packs: &mut dyn Iterator<Item = &String>| -> Vec<(usize, String)> {
        let reads = std::mem::take(&mut *counting.reads_by_pack.lock().unwrap());
        let count = |r: &Vec<(u64, u64)>| r.iter().filter(|(o, l)| *o > 0 || *l > 64).count();
        packs.map(|p| (reads.get(p).map_or(0, count), p.clone())).collect()
    };
    // the backup reads its bases a batch (4 MiB) at a time: each hour's pack of deltas was
    // read ten times, now at most three times (a first read, then reads ahead of 256 KiB),
    // and once more where a chunk resembles one of another version than its candidate's (the
    // bases that sketches find are read in a second pass of the batch); the last hour's
    // packs also hold the content lists the backup reads first
    let w = open(counting.clone(), &tmp.path().join("w"), Access::Backup).await;
    let id = backup(&w, "db", &data).await;
    w.close().await;
    let of_deltas = ranges(&mut older.iter().filter(|p| !whole.contains(p)));
    let total: usize = of_deltas.iter().map(|r| r.0).sum();
    assert!(total <= lists + 4 * of_deltas.len(), "{total} reads of {} packs", of_deltas.len());
    // each older pack is one range of bases, or two or three where shared reads end; read by
    // window, each hour's pack of deltas was read once per window (five or six times)
    let r = open(counting.clone(), &tmp.path().join("r"), Access::Read).await;
    assert!(common::engine::restore_id(&r, "db", &id).await == data);
    let most = ranges(&mut older.iter()).into_iter().max().unwrap();
    assert!((1..=3).contains(&most.0), "{} read in {} ranges", most.1, most.0);
    r.close().await;
}

/// Listing snapshots fetches each snapshot object once per cache: later listings (every
/// backup looks for its predecessor, every `restore latest` selects) read only new ones,
/// and forgotten snapshots leave the list at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_listings_fetch_only_new_snapshot_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
    engine::init(&mem, Some(b"pw"), &opts()).await.unwrap();
    let counting = Arc::new(CountingBackend::new(mem.clone()));
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

/// A command whose first step is a listing (a backup's predecessor, a restore's `latest`)
/// opens with the snapshots listed during the index download: its first listing is that one
/// (filtered, without a request), and later listings list again and see what was stored
/// since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_made_while_opening_serves_the_first_listing_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
    engine::init(&mem, Some(b"pw"), &opts()).await.unwrap();
    let w = open(mem.clone(), &tmp.path().join("writer"), Access::Backup).await;
    backup(&w, "db0", &common::noise(20_000, 0)).await;
    backup(&w, "db1", &common::noise(20_000, 1)).await;
    let counting = Arc::new(CountingBackend::new(mem.clone()));
    let gets = || counting.snapshot_gets.load(Ordering::SeqCst);
    let cache = Some(tmp.path().join("fresh"));
    let r = engine::Repository::open_with(counting.clone(), Some(b"pw"), cache, Access::Read, true)
        .await
        .unwrap();
    assert_eq!(gets(), 2, "both snapshots were read while the repository was opened");
    backup(&w, "db2", &common::noise(20_000, 2)).await;
    let one = SnapshotFilter { name: Some("db1".into()), tags: vec![] };
    let first = list_snapshots(&r, &one).await.unwrap();
    assert_eq!(first.len(), 1, "the filter applies to the listing made while opening");
    assert_eq!(first[0].1.name, "db1");
    assert_eq!(gets(), 2, "the first listing made no request");
    let all = SnapshotFilter::default();
    assert_eq!(list_snapshots(&r, &all).await.unwrap().len(), 3, "the next one lists again");
    assert_eq!(gets(), 3);
    // without the listing at open, the first listing reads the objects itself
    let plain = open(counting.clone(), &tmp.path().join("plain"), Access::Read).await;
    assert_eq!(gets(), 3);
    assert_eq!(list_snapshots(&plain, &all).await.unwrap().len(), 3);
    assert_eq!(gets(), 6);
    for repo in [&w, &plain] {
        repo.close().await;
    }
    r.close().await;
}

/// A fresh pod at many snapshots: the first backup that has to fetch the snapshot objects one
/// by one leaves a bundle of them, and the next fresh cache reads that bundle instead of one
/// object per snapshot. A bundle is only a copy: an entry whose bytes are not the object it
/// names is fetched on its own, and a snapshot forgotten since stays forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_cache_lists_many_snapshots_from_a_bundle() {
    use ::repo::format::bundle::Bundle;
    use ::repo::format::envelope::MAGIC_BUNDLE;
    let tmp = tempfile::tempdir().unwrap();
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new());
    engine::init(&mem, Some(b"pw"), &opts()).await.unwrap();
    let counting = Arc::new(CountingBackend::new(mem.clone()));
    let gets = || counting.snapshot_gets.load(Ordering::SeqCst);
    let all = SnapshotFilter::default();
    let warm = open(counting.clone(), &tmp.path().join("warm"), Access::Backup).await;
    for i in 0..40u64 {
        backup(&warm, &format!("db{}", i % 4), &common::noise(2_000, i)).await;
    }
    let bundles = || async { mem.list(paths::BUNDLES_DIR).await.unwrap() };
    assert!(bundles().await.is_empty(), "a warm cache fetched nothing one by one: no bundle");
    // a fresh pod's backup fetches the 40 objects one by one, and leaves a bundle
    let pod = open(counting.clone(), &tmp.path().join("pod1"), Access::Backup).await;
    let before = gets();
    backup(&pod, "db0", &common::noise(2_000, 99)).await;
    assert_eq!(gets() - before, 40);
    let listed = bundles().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    pod.close().await;
    // the next fresh pod reads the bundle: no snapshot object fetched, the same listing
    let expected: Vec<_> = list_snapshots(&warm, &all).await.unwrap();
    assert_eq!(expected.len(), 41);
    let fresh = |n: &str| {
        let dir = tmp.path().join(n);
        let b: Arc<dyn Backend> = counting.clone();
        async move { open(b, &dir, Access::Read).await }
    };
    let pod = fresh("pod2").await;
    let before = gets();
    let got = list_snapshots(&pod, &all).await.unwrap();
    assert_eq!(gets() - before, 0, "every object came from the bundle");
    let key = |v: &[(::repo::format::Id, ::repo::format::snapshot::Snapshot)]| {
        v.iter().map(|(id, s)| (*id, s.name.clone(), s.time_ns)).collect::<Vec<_>>()
    };
    assert_eq!(key(&got), key(&expected));
    // later listings of that cache fetch new snapshots one by one, without the bundle again
    let mut extra = Vec::new();
    for i in 0..8u64 {
        extra.push(backup(&warm, "db3", &common::noise(2_000, 200 + i)).await);
    }
    let (before, bundle_gets) = (gets(), counting.bundle_gets.load(Ordering::SeqCst));
    assert_eq!(list_snapshots(&pod, &all).await.unwrap().len(), 49);
    assert_eq!((gets() - before, counting.bundle_gets.load(Ordering::SeqCst)), (8, bundle_gets));
    for id in &extra {
        mem.delete(&paths::snapshot(id)).await.unwrap();
    }
    // a bundle (stored under its own name, sealed with the key) whose first two entries carry
    // each other's bytes: both are fetched on their own
    let stored = &listed[0].path;
    let mut b = Bundle::decode(
        &pod.open_object(MAGIC_BUNDLE, &mem.get(stored).await.unwrap(), stored).unwrap(),
    )
    .unwrap();
    let first = b.objects[0].1.clone();
    b.objects[0].1 = b.objects[1].1.clone();
    b.objects[1].1 = first;
    let forged = pod.seal(MAGIC_BUNDLE, &b.encode().unwrap()).unwrap();
    let path = &paths::bundle(&::repo::format::Id::of_bytes(&forged));
    mem.put(path, forged).await.unwrap();
    mem.delete(stored).await.unwrap();
    // and a snapshot forgotten since the bundle was stored
    let gone = expected[5].0;
    mem.delete(&paths::snapshot(&gone)).await.unwrap();
    pod.close().await;
    let pod = fresh("pod3").await;
    let before = gets();
    let got = list_snapshots(&pod, &all).await.unwrap();
    assert_eq!(gets() - before, 2, "the two swapped entries");
    let mut want = expected.clone();
    want.retain(|(id, _)| *id != gone);
    assert_eq!(key(&got), key(&want), "forgotten stays forgotten; swapped bytes not trusted");
    pod.close().await;
    // a bundle that cannot be opened is a warning, and the listing goes on one by one
    mem.put(path, vec![0; 100]).await.unwrap();
    let pod = fresh("pod4").await;
    let before = gets();
    assert_eq!(key(&list_snapshots(&pod, &all).await.unwrap()), key(&want));
    assert_eq!(gets() - before, 40);
    let warnings = pod.index().take_warnings();
    assert!(warnings.iter().any(|w| w.contains("bundle")), "{warnings:?}");
    pod.close().await;
    // check names it in a note; it is no damage
    let c = ::repo::ops::check::run(warm.clone(), &Default::default()).await.unwrap();
    assert!(c.damage.is_empty(), "{:?}", c.damage);
    assert!(c.notes.iter().any(|n| n.contains(path.as_str())), "{:?}", c.notes);
    // the next fresh pod's backup replaces the damaged bundle
    let pod = open(counting.clone(), &tmp.path().join("pod5"), Access::Backup).await;
    backup(&pod, "db1", &common::noise(2_000, 98)).await;
    let now = bundles().await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0].path, *path, "the damaged bundle is gone");
    pod.close().await;
    let pod = fresh("pod6").await;
    let before = gets();
    assert_eq!(list_snapshots(&pod, &all).await.unwrap().len(), want.len() + 1);
    assert_eq!(gets() - before, 0);
    pod.close().await;
    // storage that refuses to list bundles/: the listing goes on one by one, with a warning
    counting.refuse_bundles.store(true, Ordering::SeqCst);
    let pod = fresh("pod6b").await;
    let before = gets();
    assert_eq!(list_snapshots(&pod, &all).await.unwrap().len(), want.len() + 1);
    assert_eq!(gets() - before, want.len() + 1);
    assert!(pod.index().take_warnings().iter().any(|w| w.contains("one by one")));
    pod.close().await;
    let c = ::repo::ops::check::run(warm.clone(), &Default::default()).await.unwrap();
    assert!(c.damage.is_empty() && c.notes.iter().any(|n| n.contains("bundles not checked")));
    counting.refuse_bundles.store(false, Ordering::SeqCst);
    // a forget leaves no copy of what it removed in a bundle (the warm cache holds every
    // snapshot object, so it can store the replacement at once)
    let victim = list_snapshots(&warm, &all).await.unwrap()[3].0;
    let f = ::repo::ops::forget::ForgetOptions {
        policy: Default::default(),
        ids: vec![victim.to_hex()],
        filter: SnapshotFilter::default(),
        tz: chrono_tz::UTC,
        dry_run: false,
    };
    ::repo::ops::forget::run(&warm, &f).await.unwrap();
    let after = bundles().await;
    assert_eq!(after.len(), 1, "{after:?}");
    let b = Bundle::decode(
        &warm.open_object(MAGIC_BUNDLE, &mem.get(&after[0].path).await.unwrap(), "b").unwrap(),
    )
    .unwrap();
    assert!(b.objects.iter().all(|(id, _)| *id != victim));
    assert_eq!(b.objects.len(), list_snapshots(&warm, &all).await.unwrap().len());
    // a mirror gets the bundle too: a fresh cache there (a restore after losing the site)
    // fetches no snapshot object either; with --delete, a bundle the source replaced goes
    let copy: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let sync = |delete| {
        let (src, dst) = (mem.clone(), copy.clone());
        async move {
            let opts = ::repo::ops::sync::SyncOptions { delete, ..Default::default() };
            ::repo::ops::sync::run(src, dst, &opts, &::repo::repo::NoProgress).await.unwrap()
        }
    };
    // a damaged bundle at the source is left out and named in the report, not a failed sync
    let junk = paths::bundle(&::repo::format::Id([0xab; 32]));
    mem.put(&junk, vec![1; 64]).await.unwrap();
    assert_eq!(sync(false).await.bundles_left_out, 1);
    assert!(copy.list(paths::BUNDLES_DIR).await.unwrap().iter().all(|o| o.path != junk));
    mem.delete(&junk).await.unwrap();
    let mirror = Arc::new(CountingBackend::new(copy.clone()));
    let pod = open(mirror.clone(), &tmp.path().join("pod7"), Access::Read).await;
    assert_eq!(list_snapshots(&pod, &all).await.unwrap().len(), want.len());
    assert_eq!(mirror.snapshot_gets.load(Ordering::SeqCst), 0);
    pod.close().await;
    let old = bundles().await[0].path.clone();
    mem.delete(&old).await.unwrap();
    sync(true).await;
    assert!(copy.list(paths::BUNDLES_DIR).await.unwrap().iter().all(|o| o.path != old));
    warm.close().await;
}
