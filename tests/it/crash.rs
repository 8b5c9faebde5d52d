//! Crash safety at every write point, with the fault-injecting backend: a backup that stops
//! after any number of writes leaves a repository whose committed snapshots restore, lists
//! no partial snapshot, and takes the next backup.

use crate::common;
use std::sync::Arc;

use ::repo::backend::{Backend, FaultBackend, MemBackend};
use ::repo::repo::{
    self as engine, Access, InitOptions, NoProgress, Repository, SnapshotFilter, backup_stream,
    list_snapshots,
};

use crate::common::engine::{meta, open, restore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_killed_at_every_write_point_leaves_a_usable_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemBackend::new());
    let base: Arc<dyn Backend> = mem.clone();
    let opts = InitOptions {
        chunk_min: 4096,
        chunk_avg: 16384,
        chunk_max: 65536,
        pack_target: 65536,
        kdf: engine::codec_kdf_for_tests(),
        ..InitOptions::default()
    };
    engine::init(&base, Some(b"pw"), &opts).await.unwrap();
    let v1 = common::noise(400_000, 1);
    let mut v2 = v1.clone();
    v2.extend(common::noise(600_000, 2));
    let r = open(base.clone(), tmp.path(), Access::Backup).await;
    backup_stream(
        r.clone(),
        std::io::Cursor::new(v1.clone()),
        meta("a"),
        Arc::new(NoProgress),
        async { Ok(()) },
    )
    .await
    .unwrap();
    r.close().await;

    let mut points = 0;
    for allowed in 0.. {
        let fault = Arc::new(FaultBackend::new(base.clone(), allowed));
        // the first write is the lease: a process killed there never opened the repository
        let res = match Repository::open(
            fault.clone(),
            Some(b"pw"),
            Some(tmp.path().to_path_buf()),
            Access::Backup,
        )
        .await
        {
            Ok(r) => {
                let r = Arc::new(r);
                backup_stream(
                    r.clone(),
                    std::io::Cursor::new(v2.clone()),
                    meta("b"),
                    Arc::new(NoProgress),
                    async { Ok(()) },
                )
                .await
                .map(|_| ())
            }
            Err(e) => Err(e),
        };
        let r = open(base.clone(), tmp.path(), Access::Backup).await;
        let snaps = list_snapshots(&r, &SnapshotFilter::default()).await.unwrap();
        assert_eq!(restore(&r, "a").await, v1, "committed snapshot intact after {allowed} writes");
        if res.is_ok() {
            assert_eq!(snaps.len(), 2);
            assert_eq!(restore(&r, "b").await, v2);
            break;
        }
        assert_eq!(snaps.len(), 1, "no partial snapshot after {allowed} writes");
        points += 1;
    }
    assert!(points >= 5, "the test covered {points} kill points");
    // and the repository takes the next backup
    let r = open(base.clone(), tmp.path(), Access::Backup).await;
    backup_stream(
        r.clone(),
        std::io::Cursor::new(v2.clone()),
        meta("c"),
        Arc::new(NoProgress),
        async { Ok(()) },
    )
    .await
    .unwrap();
    assert_eq!(restore(&r, "c").await, v2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_gate_writes_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let base: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let opts = InitOptions { kdf: engine::codec_kdf_for_tests(), ..InitOptions::default() };
    engine::init(&base, Some(b"pw"), &opts).await.unwrap();
    let r = open(base.clone(), tmp.path(), Access::Backup).await;
    let res = backup_stream(
        r.clone(),
        std::io::Cursor::new(vec![1u8; 1000]),
        meta("x"),
        Arc::new(NoProgress),
        async {
            Err(engine::RepoError::CommandFailed {
                command: "pg_dump".into(),
                status: "exit status 1".into(),
            })
        },
    )
    .await;
    assert!(res.is_err());
    assert!(base.list("snapshots/").await.unwrap().is_empty());
}
