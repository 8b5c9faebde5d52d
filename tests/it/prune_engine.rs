//! Prune through the library: the interleaving a CLI test cannot force (a backup that opened
//! the repository before the prune condemned data it then deduplicates against), and prune
//! stopped after every possible number of writes and deletes.

use crate::common;
use std::sync::Arc;

use ::repo::backend::{Backend, FaultBackend};
use ::repo::format::lock::LeaseKind;
use ::repo::ops::prune::{self, PruneOptions};
use ::repo::repo::lease::Lease;
use ::repo::repo::{
    self as engine, Access, NoProgress, SnapshotFilter, backup_stream, list_snapshots,
};

use crate::common::engine::{backup, clean, mem_repo, meta, open, restore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_a_running_backup_deduplicated_against_is_resurrected_not_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let data = common::noise(300_000, 1);
    let r = open(base.clone(), tmp.path(), Access::Backup).await;
    let first = backup(&r, "db", &data).await;
    backup(&r, "other", b"something else").await;

    // backup B starts: lease first, then (no prune record yet) it knows every pack
    let b_lease = Lease::acquire(base.clone(), LeaseKind::Backup).await.unwrap();
    let b_repo = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;

    // the only snapshot needing `data` is forgotten; prune condemns its packs but must wait for B
    base.delete(&engine::paths::snapshot(&first)).await.unwrap();
    let p = prune::run(r.clone(), &PruneOptions::default()).await.unwrap();
    assert!(p.packs_condemned > 0 && p.records_waiting == 1 && p.packs_deleted == 0, "{p:?}");

    // B deduplicates the same data entirely against the condemned packs and commits
    let (_, _, stats) = backup_stream(
        b_repo.clone(),
        std::io::Cursor::new(data.clone()),
        meta("db"),
        Arc::new(NoProgress),
        async { Ok(()) },
    )
    .await
    .unwrap();
    assert_eq!(stats.new_chunks, 0, "B stored nothing new: it relies on condemned packs");
    b_lease.release().await;
    b_repo.close().await;

    // the next prune sees B's snapshot, keeps (resurrects) those packs, deletes the rest
    let p = prune::run(r.clone(), &PruneOptions::default()).await.unwrap();
    assert!(p.packs_resurrected > 0, "{p:?}");
    let r2 = open(base.clone(), &tmp.path().join("fresh"), Access::Backup).await;
    assert_eq!(restore(&r2, "db").await, data);
    clean(&r2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_stopped_at_every_write_point_loses_nothing_and_a_rerun_finishes() {
    let mut points = 0;
    for allowed in 0.. {
        let tmp = tempfile::tempdir().unwrap();
        let base = mem_repo().await;
        let keep = {
            let mut v = common::noise(100_000, 10);
            v.extend(common::noise(60_000, 11));
            v
        };
        let r = open(base.clone(), tmp.path(), Access::Backup).await;
        for i in 0..3u64 {
            let mut v = common::noise(100_000, 10);
            v.extend(common::noise(60_000, 20 + i));
            let id = backup(&r, &format!("old{i}"), &v).await;
            base.delete(&engine::paths::snapshot(&id)).await.unwrap(); // forgotten
        }
        backup(&r, "keep", &keep).await;
        r.close().await;

        let fault: Arc<dyn Backend> =
            Arc::new(FaultBackend::counting_deletes(base.clone(), allowed));
        // unleased: the prune's own lease is then its first write (a kill point too)
        let rf = open(fault, &tmp.path().join("f"), Access::Unleased).await;
        let res =
            prune::run(rf, &PruneOptions { dry_run: false, max_unused: 0.0, ..Default::default() })
                .await;

        // the killed prune's lease expires (30 minutes); the repository must be intact
        for l in base.list("locks/").await.unwrap() {
            base.delete(&l.path).await.unwrap();
        }
        let r = open(base.clone(), &tmp.path().join("after"), Access::Backup).await;
        assert_eq!(restore(&r, "keep").await, keep, "after {allowed} writes");
        clean(&r).await;
        assert_eq!(list_snapshots(&r, &SnapshotFilter::default()).await.unwrap().len(), 1);
        if res.is_ok() {
            assert!(base.list("prune/").await.unwrap().is_empty());
            break;
        }
        points += 1;
        let p = prune::run(
            r.clone(),
            &PruneOptions { dry_run: false, max_unused: 0.0, ..Default::default() },
        )
        .await
        .expect("rerun");
        assert!(base.list("prune/").await.unwrap().is_empty(), "rerun finished the job: {p:?}");
        let r = open(base.clone(), &tmp.path().join("rerun"), Access::Backup).await;
        assert_eq!(restore(&r, "keep").await, keep);
        clean(&r).await;
    }
    eprintln!("prune kill points tested: {points}");
    assert!(points >= 10, "only {points} kill points");
}

/// Two backups of the same data that did not see each other store every chunk twice; prune
/// keeps one copy of each (in whichever pack), repacks or deletes the other, and both
/// snapshots restore from what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_stored_twice_keep_exactly_one_copy_after_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let data = common::noise(400_000, 5);
    // both open before either stores anything: neither deduplicates against the other
    let a = open(base.clone(), &tmp.path().join("a"), Access::Backup).await;
    let b = open(base.clone(), &tmp.path().join("b"), Access::Backup).await;
    backup(&a, "db", &data).await;
    let mut other = data.clone();
    other.extend(common::noise(50_000, 6)); // and a part only the second has
    backup(&b, "db2", &other).await;
    a.close().await;
    b.close().await;
    let r = open(base.clone(), &tmp.path().join("r"), Access::Backup).await;
    let check = |r: Arc<engine::Repository>| async move {
        ::repo::ops::check::run(r, &::repo::ops::check::CheckOptions::default()).await.unwrap()
    };
    let before = check(r.clone()).await;
    assert!(before.duplicate_blobs > 10, "{before:?}");
    let p = prune::run(
        r.clone(),
        &PruneOptions { dry_run: false, max_unused: 0.0, ..Default::default() },
    )
    .await
    .unwrap();
    assert!(p.packs_condemned > 0, "{p:?}");
    let r2 = open(base.clone(), &tmp.path().join("fresh"), Access::Backup).await;
    let after = check(r2.clone()).await;
    assert_eq!(after.duplicate_blobs, 0, "{after:?}");
    assert_eq!(after.blobs, before.blobs, "every chunk is still there once");
    assert_eq!(restore(&r2, "db").await, data);
    assert_eq!(restore(&r2, "db2").await, other);
    clean(&r2).await;
}

/// Prune writes a sorted index cut into parts that share a pack table, so a pack's entries
/// lie in several index files. A fresh cache writes the parts into its run in whatever order
/// they download; a later backup's own index file joins them; a second prune must count
/// every part's entries for each pack: taking a pack's entries only from the first file
/// naming it would find a pack of mostly dead chunks unused and condemn the live ones with it
/// (left to the sweep's last look at the footers to catch). Every snapshot restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sorted_index_in_many_parts_keeps_every_chunk_through_prunes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let r = open(base.clone(), &tmp.path().join("a"), Access::Backup).await;
    let gone = backup(&r, "gone", &common::noise(200_000, 39)).await;
    // each `mixed` stores a large part that dies with it and a small one its `small` keeps,
    // in the same packs; several, so that the old count's miss is not left to the order in
    // which one pack's parts are read
    let mut mixed = vec![];
    for i in 0..6u64 {
        let tail = common::noise(30_000, 70 + i);
        let mut m = common::noise(150_000, 40 + i);
        m.extend(&tail);
        let id = backup(&r, &format!("mixed{i}"), &m).await;
        backup(&r, &format!("small{i}"), &tail).await;
        mixed.push((id, m, tail));
    }
    r.close().await;
    let forget_and_prune = |ids: Vec<::repo::format::Id>, cache: &'static str, set_packs: usize| {
        let (base, dir) = (base.clone(), tmp.path().join(cache));
        async move {
            for id in ids {
                base.delete(&engine::paths::snapshot(&id)).await.unwrap();
            }
            let pr = open(base.clone(), &dir, Access::Unleased).await;
            let opts = PruneOptions {
                max_unused: 0.0,
                index_part_entries: 7,
                index_set_packs: set_packs,
                ..Default::default()
            };
            let p = prune::run(pr.clone(), &opts).await.unwrap();
            pr.close().await;
            // nothing ran beside it: a needed chunk in a pack the mark condemned would only
            // be saved by the sweep
            assert!(p.packs_deleted > 0 && p.packs_resurrected == 0, "{p:?}");
            let mut parts = 0;
            for f in base.list("index/").await.unwrap() {
                parts += usize::from(base.get(&f.path).await.unwrap().starts_with(b"RIXS"));
            }
            assert!(parts >= 4, "{parts} parts for {} live chunks", p.live_chunks);
        }
    };

    // one set: each pack's entries spread over many parts, which the second prune reads
    forget_and_prune(vec![gone], "p1", 1 << 14).await;
    let fresh = open(base.clone(), &tmp.path().join("fresh1"), Access::Backup).await;
    for (i, (_, m, tail)) in mixed.iter().enumerate() {
        assert_eq!(&restore(&fresh, &format!("mixed{i}")).await, m);
        assert_eq!(&restore(&fresh, &format!("small{i}")).await, tail);
    }
    clean(&fresh).await;
    // a backup after the prune writes an index file of the first layout beside the parts
    let new = common::noise(120_000, 60);
    backup(&fresh, "new", &new).await;
    fresh.close().await;
    let fresh = open(base.clone(), &tmp.path().join("fresh2"), Access::Backup).await;
    assert_eq!(restore(&fresh, "new").await, new);
    clean(&fresh).await;
    fresh.close().await;

    // sets of 4 packs: the fresh cache below takes one set straight into its run and the
    // others through the database
    forget_and_prune(mixed.iter().map(|m| m.0).collect(), "p2", 4).await;
    let last = open(base.clone(), &tmp.path().join("fresh3"), Access::Backup).await;
    for (i, (_, _, tail)) in mixed.iter().enumerate() {
        assert_eq!(&restore(&last, &format!("small{i}")).await, tail);
    }
    assert_eq!(restore(&last, "new").await, new);
    clean(&last).await;
}
