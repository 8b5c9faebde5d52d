//! `sync` stopped after every possible number of writes (and deletes) at the destination:
//! at each point the destination is a consistent repository (check --read-data clean, every
//! snapshot it lists restores byte-exact), and a rerun finishes with an exact copy.

use crate::common;
use std::collections::BTreeMap;
use std::sync::Arc;

use ::repo::backend::{Backend, FaultBackend, LocalBackend};
use ::repo::ops::check::{self, CheckOptions, Subset};
use ::repo::ops::sync::{self as sync_op, SyncOptions};
use ::repo::repo::{
    self as engine, Access, InitOptions, NoProgress, SnapshotFilter, backup_stream, list_snapshots,
    restore_stream,
};

use crate::common::engine::{Shared, meta, open};

async fn listing(b: &Arc<dyn Backend>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for dir in ["keys/", "data/", "index/", "snapshots/"] {
        for o in b.list(dir).await.unwrap() {
            m.insert(o.path, o.size);
        }
    }
    m
}

/// Every snapshot at `dst` restores to the bytes the source snapshot of that name holds,
/// and a full check reads every pack without damage.
async fn assert_consistent(
    dst: &Arc<dyn Backend>,
    expected: &BTreeMap<String, Vec<u8>>,
    cache: &std::path::Path,
    at: &str,
) {
    if dst.stat("config").await.unwrap().is_none() {
        // Not a repository yet (only keys so far): nothing may be there but keys.
        let l = listing(dst).await;
        assert!(l.keys().all(|p| p.starts_with("keys/")), "{at}: objects before the config: {l:?}");
        return;
    }
    let r = open(dst.clone(), cache, Access::Backup).await;
    let snaps = list_snapshots(&r, &SnapshotFilter::default()).await.unwrap();
    for (id, s) in &snaps {
        let out = Shared::default();
        restore_stream(r.clone(), s, &id.to_hex(), out.clone(), Arc::new(NoProgress))
            .await
            .unwrap_or_else(|e| panic!("{at}: restore {}: {e}", s.name));
        assert!(*out.0.lock().unwrap() == expected[&s.name], "{at}: {} differs", s.name);
    }
    let report =
        check::run(r, &CheckOptions { read_data: Some(Subset::All), ..Default::default() })
            .await
            .unwrap();
    assert!(report.ok && report.damage.is_empty(), "{at}: {:?}", report.damage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_stopped_at_every_write_leaves_a_consistent_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let src: Arc<dyn Backend> = Arc::new(LocalBackend::new(tmp.path().join("src")));
    let opts = InitOptions {
        chunk_min: 4096,
        chunk_avg: 16384,
        chunk_max: 65536,
        pack_target: 65536,
        kdf: engine::codec_kdf_for_tests(),
        ..InitOptions::default()
    };
    engine::init(&src, Some(b"pw"), &opts).await.unwrap();
    let mut expected = BTreeMap::new();
    let r = open(src.clone(), &tmp.path().join("cache"), Access::Backup).await;
    for (i, len) in [(0u64, 150_000usize), (1, 200_000), (2, 120_000)] {
        let data = common::noise(len, i);
        let name = format!("db{i}");
        backup_stream(
            r.clone(),
            std::io::Cursor::new(data.clone()),
            meta(&name),
            Arc::new(NoProgress),
            async { Ok(()) },
        )
        .await
        .unwrap();
        expected.insert(name, data);
    }
    r.close().await;
    let wanted = listing(&src).await;

    let sync_opts = SyncOptions { jobs: 2, ..SyncOptions::default() };
    let mut points = 0;
    for allowed in 0.. {
        // A fresh destination each time: the sync stops after exactly `allowed` writes.
        let dst: Arc<dyn Backend> =
            Arc::new(LocalBackend::new(tmp.path().join(format!("dst-{allowed}"))));
        let fault: Arc<dyn Backend> = Arc::new(FaultBackend::new(dst.clone(), allowed));
        let res = sync_op::run(src.clone(), fault, &sync_opts, &NoProgress).await;
        if res.is_ok() {
            assert_eq!(listing(&dst).await, wanted);
            break;
        }
        points += 1;
        let at = format!("after {allowed} writes");
        assert_consistent(&dst, &expected, &tmp.path().join(format!("cache-{allowed}")), &at).await;
        // the rerun finishes the job, copying only what is missing (some of the writes were
        // the sync's lease at the destination, not objects)
        let config = dst.stat("config").await.unwrap().is_some();
        let held = listing(&dst).await.len() as u64 + u64::from(config);
        let r = sync_op::run(src.clone(), dst.clone(), &sync_opts, &NoProgress).await.unwrap();
        assert_eq!(r.skipped_objects, held, "{at}: {r:?}");
        assert_eq!(listing(&dst).await, wanted, "{at}");
    }
    assert!(points >= 10, "only {points} kill points");
    let dst: Arc<dyn Backend> = Arc::new(LocalBackend::new(tmp.path().join("dst-0")));
    assert_consistent(&dst, &expected, &tmp.path().join("cache-final"), "complete").await;
    let again = sync_op::run(src.clone(), dst.clone(), &sync_opts, &NoProgress).await.unwrap();
    assert_eq!(again.copied_objects, 0);

    // Forget one snapshot and prune at the source, then --delete stopped at every write and
    // delete, each time on a fresh copy of the complete destination.
    let r = open(src.clone(), &tmp.path().join("cache"), Access::Backup).await;
    let snaps = list_snapshots(&r, &SnapshotFilter { name: Some("db1".into()), tags: vec![] })
        .await
        .unwrap();
    src.delete(&format!("snapshots/{}", snaps[0].0.to_hex())).await.unwrap();
    r.close().await;
    let r = open(src.clone(), &tmp.path().join("cache"), Access::Prune).await;
    let pruned = ::repo::ops::prune::run(r.clone(), &Default::default()).await.unwrap();
    r.close().await;
    let wanted = listing(&src).await;
    assert!(wanted.len() < listing(&dst).await.len(), "the prune removed nothing: {pruned:?}");
    let del_opts = SyncOptions { delete: true, ..sync_opts };
    let mut delete_points = 0;
    for allowed in 0.. {
        let copy: Arc<dyn Backend> =
            Arc::new(LocalBackend::new(tmp.path().join(format!("del-{allowed}"))));
        for (path, _) in listing(&dst).await.into_iter().chain([("config".to_string(), 0)]) {
            copy.put(&path, dst.get(&path).await.unwrap()).await.unwrap();
        }
        let fault: Arc<dyn Backend> =
            Arc::new(FaultBackend::counting_deletes(copy.clone(), allowed));
        if sync_op::run(src.clone(), fault, &del_opts, &NoProgress).await.is_ok() {
            assert_eq!(listing(&copy).await, wanted, "the destination mirrors the pruned source");
            break;
        }
        delete_points += 1;
        assert_consistent(
            &copy,
            &expected,
            &tmp.path().join(format!("cache-d{allowed}")),
            &format!("--delete after {allowed} writes"),
        )
        .await;
    }
    assert!(delete_points >= 3, "only {delete_points} kill points with --delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_source_object_is_reported_and_not_shipped() {
    let tmp = tempfile::tempdir().unwrap();
    let src: Arc<dyn Backend> = Arc::new(LocalBackend::new(tmp.path().join("src")));
    let dst: Arc<dyn Backend> = Arc::new(LocalBackend::new(tmp.path().join("dst")));
    let opts = InitOptions { kdf: engine::codec_kdf_for_tests(), ..InitOptions::default() };
    engine::init(&src, Some(b"pw"), &opts).await.unwrap();
    let r = open(src.clone(), &tmp.path().join("cache"), Access::Backup).await;
    backup_stream(
        r.clone(),
        std::io::Cursor::new(common::noise(300_000, 3)),
        meta("db"),
        Arc::new(NoProgress),
        async { Ok(()) },
    )
    .await
    .unwrap();
    let pack = src.list("data/").await.unwrap().remove(0).path;
    let file = tmp.path().join("src").join(&pack);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();

    let err = sync_op::run(src.clone(), dst.clone(), &SyncOptions::default(), &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&pack) && err.contains("does not match its name"), "{err}");
    assert_eq!(dst.stat(&pack).await.unwrap(), None, "the damaged pack was shipped");
    assert!(dst.list("snapshots/").await.unwrap().is_empty(), "a snapshot needing it was shipped");
}
