//! Adds N snapshots to an existing repository quickly, for measuring commands at thousands
//! of snapshots (issue: a year of hourly dumps): each is a copy of the newest snapshot of
//! NAME with a time one hour earlier than the last, sealed and stored through the library.
//!
//! Usage: REPO_PASSWORD=… cargo run --release --example many_snapshots -- REPO NAME N
use std::sync::Arc;

use repo::format::Id;
use repo::format::envelope::MAGIC_SNAPSHOT;
use repo::repo::{Access, Repository, SnapshotFilter, list_snapshots, paths};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (url, name, n): (&str, &str, u64) = (&args[1], &args[2], args[3].parse().unwrap());
    let backend = repo::backend::from_url(url).unwrap();
    let pw = std::env::var("REPO_PASSWORD").ok().map(String::into_bytes);
    let cache = std::env::temp_dir().join(format!("many-snapshots-{}", std::process::id()));
    let r = Arc::new(
        Repository::open(backend.clone(), pw.as_deref(), Some(cache.clone()), Access::Backup)
            .await
            .unwrap(),
    );
    let f = SnapshotFilter { name: Some(name.into()), tags: vec![] };
    let (_, newest) = list_snapshots(&r, &f).await.unwrap().pop().expect("a snapshot of NAME");
    let puts = (0..n).map(|i| {
        let mut s = newest.clone();
        s.time_ns -= (i as i64 + 1) * 3_600_000_000_000;
        let bytes = r.seal(MAGIC_SNAPSHOT, &s.encode().unwrap()).unwrap();
        let id = Id::of_bytes(&bytes);
        let b = backend.clone();
        async move { b.put(&paths::snapshot(&id), bytes).await.unwrap() }
    });
    use futures::StreamExt;
    futures::stream::iter(puts).buffer_unordered(16).collect::<Vec<_>>().await;
    r.close().await;
    let _ = std::fs::remove_dir_all(cache);
    println!("added {n} snapshots of {name}");
}
