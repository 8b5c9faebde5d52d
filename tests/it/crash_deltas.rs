//! Crash safety with delta blobs, at every write point: a backup whose new chunks are deltas
//! against the previous hour's, and a prune that must keep (and may repack) the bases of live
//! deltas, each stopped after any number of writes (and, for prune, deletes).

use crate::common;
use std::sync::Arc;

use ::repo::backend::{Backend, FaultBackend};
use ::repo::ops::prune::{self, PruneOptions};
use ::repo::repo::{
    self as engine, Access, NoProgress, Repository, SnapshotFilter, backup_stream, list_snapshots,
};

use crate::common::engine::{backup, clean, mem_repo, meta, open, restore};

/// The snapshot metadata of hour `h` of stream "db" ("latest" is the highest hour).
fn at(h: i64) -> engine::SnapshotMeta {
    engine::SnapshotMeta { time_ns: h * 3_600_000_000_000, ..meta("db") }
}

async fn backup_hour(r: &Arc<Repository>, h: i64, data: &[u8]) -> engine::BackupStats {
    let src = std::io::Cursor::new(data.to_vec());
    backup_stream(r.clone(), src, at(h), Arc::new(NoProgress), async { Ok(()) })
        .await
        .expect("backup")
        .2
}

/// Compares restored bytes without printing megabytes on a mismatch.
fn same(a: &[u8], b: &[u8]) -> bool {
    a == b
}

/// Restores each hour of stream "db" and compares it with what was backed up.
async fn every_hour_restores(r: &Arc<Repository>, hours: &[Vec<u8>]) {
    let f = SnapshotFilter { name: Some("db".into()), tags: vec![] };
    let snaps = list_snapshots(r, &f).await.unwrap();
    for (h, data) in hours.iter().enumerate() {
        let (_, snap) = snaps.iter().find(|(_, s)| s.time_ns == at(h as i64).time_ns).unwrap();
        let out = crate::common::engine::Shared::default();
        engine::restore_stream(r.clone(), snap, "db", out.clone(), Arc::new(NoProgress))
            .await
            .unwrap();
        assert!(same(&out.0.lock().unwrap(), data), "hour {h} restores byte-exact");
    }
}

/// 200 kB of "rows" with `edits` 8-byte changes spread over them (a changed row each).
fn hour(edits: u64) -> Vec<u8> {
    let mut v = common::noise(200_000, 7);
    for i in 0..edits {
        let at = ((i * 7919 + 13) * 104_729 % 199_000) as usize;
        v[at..at + 8].copy_from_slice(&(i + 1).to_le_bytes());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_backup_killed_at_every_write_point_leaves_a_usable_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    // hour 2 also appends new rows, so that it writes several packs
    let (h1, mut h2) = (hour(0), hour(20));
    h2.extend(common::noise(200_000, 9));
    let r = open(base.clone(), tmp.path(), Access::Backup).await;
    backup(&r, "db", &h1).await;
    r.close().await;

    let mut points = 0;
    for allowed in 0.. {
        let fault = Arc::new(FaultBackend::new(base.clone(), allowed));
        let cache = tmp.path().join(format!("k{allowed}"));
        let res = match Repository::open(fault, Some(b"pw"), Some(cache), Access::Backup).await {
            Ok(r) => {
                let src = std::io::Cursor::new(h2.clone());
                backup_stream(Arc::new(r), src, at(2), Arc::new(NoProgress), async { Ok(()) }).await
            }
            Err(e) => Err(e),
        };
        let r = open(base.clone(), &tmp.path().join("after"), Access::Backup).await;
        let snaps = list_snapshots(&r, &SnapshotFilter::default()).await.unwrap();
        if res.is_ok() {
            // the interrupted runs stored most chunks, so count the deltas in the index
            let mut deltas = 0;
            r.index()
                .for_each_delta(|_, _| {
                    deltas += 1;
                    Ok(())
                })
                .unwrap();
            assert!(deltas > 0, "hour 2 was stored as deltas");
            assert_eq!(snaps.len(), 2);
            assert!(same(&restore(&r, "db").await, &h2), "hour 2 restores");
            clean(&r).await;
            break;
        }
        assert_eq!(snaps.len(), 1, "no partial snapshot after {allowed} writes");
        assert!(same(&restore(&r, "db").await, &h1), "hour 1 intact after {allowed} writes");
        points += 1;
    }
    assert!(points >= 5, "the test covered {points} kill points");
    // the next hour deltas against what the interrupted runs left behind, and restores
    let r = open(base.clone(), &tmp.path().join("next"), Access::Backup).await;
    let h3 = hour(35);
    assert!(backup_hour(&r, 3, &h3).await.delta_chunks > 0);
    assert!(same(&restore(&r, "db").await, &h3));
    clean(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_of_bases_stopped_at_every_write_point_loses_no_delta() {
    let mut points = 0;
    for allowed in 0.. {
        let tmp = tempfile::tempdir().unwrap();
        let base = mem_repo().await;
        // hour 1 also holds rows that hour 2 dropped, between the others: its packs mix
        // garbage with the bases hour 2's deltas need, so the prune repacks bases
        let (rows, h2) = (hour(0), hour(25));
        let mut h1 = Vec::new();
        for (i, part) in rows.chunks(50_000).enumerate() {
            h1.extend_from_slice(part);
            h1.extend(common::noise(20_000, 100 + i as u64));
        }
        let r = open(base.clone(), tmp.path(), Access::Backup).await;
        let first = backup(&r, "db", &h1).await;
        let stats = backup_hour(&r, 2, &h2).await;
        assert!(stats.delta_chunks > 0, "{stats:?}");
        base.delete(&engine::paths::snapshot(&first)).await.unwrap(); // forgotten
        r.close().await;

        let fault: Arc<dyn Backend> =
            Arc::new(FaultBackend::counting_deletes(base.clone(), allowed));
        let rf = open(fault, &tmp.path().join("f"), Access::Unleased).await;
        let res =
            prune::run(rf, &PruneOptions { dry_run: false, max_unused: 0.0, ..Default::default() })
                .await;

        // the killed prune's lease expires; every delta must still find its base
        for l in base.list("locks/").await.unwrap() {
            base.delete(&l.path).await.unwrap();
        }
        let r = open(base.clone(), &tmp.path().join("after"), Access::Backup).await;
        assert!(same(&restore(&r, "db").await, &h2), "hour 2 intact after {allowed} writes");
        clean(&r).await;
        if let Ok(p) = res {
            assert!(p.packs_repacked > 0, "bases were repacked: {p:?}");
            break;
        }
        points += 1;
        prune::run(
            r.clone(),
            &PruneOptions { dry_run: false, max_unused: 0.0, ..Default::default() },
        )
        .await
        .expect("rerun");
        let r = open(base.clone(), &tmp.path().join("rerun"), Access::Backup).await;
        assert!(same(&restore(&r, "db").await, &h2), "after the rerun");
        clean(&r).await;
    }
    eprintln!("prune kill points tested: {points}");
    assert!(points >= 10, "only {points} kill points");
}

/// Hour after hour of new changes everywhere (8% of the bytes each hour, never the same ones):
/// every chunk's chain reaches four levels after four hours, and its restart against the
/// whole chunk would carry five hours of changes, 40% of the chunk. That is more than a third
/// of the whole chunk, so such chunks are stored whole instead. (Kept as deltas, restarts grow
/// with a chain's age and, over days of hourly dumps, cost more than the chunk stored anew.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_that_outgrew_a_third_of_the_whole_chunk_store_it_anew() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let r = open(base.clone(), tmp.path(), Access::Backup).await;
    let hours: Vec<Vec<u8>> = (0..7u64)
        .map(|h| {
            let mut v = common::noise(200_000, 7);
            for k in 1..=h {
                for i in 0..100u64 {
                    // 160 bytes in each 2,000, at a place of their own for every hour
                    let at = (i * 2_000 + k * 250) as usize;
                    v[at..at + 160].copy_from_slice(&common::noise(160, k * 1_000 + i));
                }
            }
            v
        })
        .collect();
    let deltas = |r: &Arc<Repository>| {
        let mut pairs = std::collections::HashMap::new();
        r.index()
            .for_each_delta(|id, b| {
                pairs.insert(id, b);
                Ok(())
            })
            .unwrap();
        pairs
    };
    let (mut first, mut before) = (Default::default(), Default::default());
    for (h, data) in hours.iter().enumerate() {
        backup_hour(&r, h as i64, data).await;
        match h {
            1 => first = deltas(&r),
            4 => before = deltas(&r),
            _ => {}
        }
    }
    // hour 0's chunks, as the bases of hour 1's deltas; a delta against one of them written
    // after hour 4 is a restart (no chunk of hour 0 is left unchanged by hour 4)
    let roots: std::collections::HashSet<_> = first.values().copied().collect();
    let stored = |id: &::repo::format::Id, base: Option<::repo::format::Id>| {
        let copies = r.index().locations(id).unwrap();
        copies.iter().find(|c| c.loc.base == base).map(|c| c.loc.stored_len as usize)
    };
    let mut big = Vec::new();
    for (id, b) in deltas(&r) {
        if before.contains_key(&id) || !roots.contains(&b) {
            continue;
        }
        let (delta, whole) = (stored(&id, Some(b)).unwrap(), stored(&b, None).unwrap());
        if delta * 3 > whole + 100 {
            big.push((delta, whole));
        }
    }
    assert!(big.is_empty(), "restarts over a third of their whole chunk: {big:?}");
    every_hour_restores(&r, &hours).await;
    clean(&r).await;
}

/// Hour after hour of edits to the same rows: deltas chain against the previous hour, never
/// more than four levels deep (the writer's limit), then branch again from a shallower level
/// (the whole chunk while the chain is young), and every hour restores byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_edits_chain_at_most_four_levels_deep() {
    let tmp = tempfile::tempdir().unwrap();
    let base = mem_repo().await;
    let r = open(base.clone(), tmp.path(), Access::Backup).await;
    // the same rows change every hour, so their chunks chain one level deeper each hour
    let hours: Vec<Vec<u8>> = (0..8u64)
        .map(|h| {
            let mut v = hour(7);
            for i in 0..7u64 {
                let at = ((i * 7919 + 13) * 104_729 % 199_000) as usize;
                v[at..at + 8].copy_from_slice(&(h * 100 + i).to_le_bytes());
            }
            v
        })
        .collect();
    for (h, data) in hours.iter().enumerate() {
        backup_hour(&r, h as i64, data).await;
    }
    let mut base_of = std::collections::HashMap::new();
    r.index()
        .for_each_delta(|id, b| {
            base_of.insert(id, b);
            Ok(())
        })
        .unwrap();
    let depth = |mut id| {
        let mut d = 0;
        while let Some(b) = base_of.get(&id) {
            id = *b;
            d += 1;
        }
        d
    };
    let depths: Vec<u32> = base_of.keys().map(|id| depth(*id)).collect();
    assert_eq!(depths.iter().max(), Some(&4), "deltas four deep, and no deeper");
    every_hour_restores(&r, &hours).await;
    clean(&r).await;
}
