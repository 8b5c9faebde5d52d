//! Helpers for tests that drive the engine through the library.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ::repo::backend::Backend;
use ::repo::repo::{
    self as engine, Access, NoProgress, Repository, SnapshotFilter, SnapshotMeta, restore_stream,
};

/// A writer whose bytes the test can read afterwards.
#[derive(Clone, Default)]
pub struct Shared(pub Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn meta(name: &str) -> SnapshotMeta {
    SnapshotMeta {
        name: name.into(),
        host: "h".into(),
        tags: vec![],
        command: String::new(),
        time_ns: 0,
    }
}

/// Opens with password "pw" and the lease `access` calls for.
pub async fn open(b: Arc<dyn Backend>, cache: &std::path::Path, access: Access) -> Arc<Repository> {
    Arc::new(
        Repository::open(b, Some(b"pw"), Some(cache.to_path_buf()), access).await.expect("open"),
    )
}

/// The newest snapshot named `name`, restored into memory.
pub async fn restore(r: &Arc<Repository>, name: &str) -> Vec<u8> {
    restore_selected(r, name, "latest").await
}

/// The stream of snapshot `id` (snapshots this module writes all carry time 0, so "latest"
/// of several is any of them).
pub async fn restore_id(r: &Arc<Repository>, name: &str, id: &::repo::format::Id) -> Vec<u8> {
    restore_selected(r, name, &id.to_hex()).await
}

async fn restore_selected(r: &Arc<Repository>, name: &str, selector: &str) -> Vec<u8> {
    let f = SnapshotFilter { name: Some(name.into()), tags: vec![] };
    let (_, snap) = engine::resolve_snapshot(r, selector, &f).await.expect("resolve");
    let out = Shared::default();
    restore_stream(r.clone(), &snap, name, out.clone(), Arc::new(NoProgress))
        .await
        .expect("restore");

    out.0.lock().unwrap().clone()
}

/// Small chunks and packs, so that a few hundred kB make several packs (cheap KDF).
pub fn small_opts() -> engine::InitOptions {
    engine::InitOptions {
        chunk_min: 1024,
        chunk_avg: 4096,
        chunk_max: 16384,
        pack_target: 65536,
        kdf: engine::codec_kdf_for_tests(),
        ..engine::InitOptions::default()
    }
}

/// A repository initialised in memory with [`small_opts`] and the password "pw".
pub async fn mem_repo() -> Arc<dyn Backend> {
    let base: Arc<dyn Backend> = Arc::new(::repo::backend::MemBackend::new());
    engine::init(&base, Some(b"pw"), &small_opts()).await.unwrap();
    base
}

/// Backs up `data` as a stream snapshot named `name`; its id.
pub async fn backup(r: &Arc<Repository>, name: &str, data: &[u8]) -> ::repo::format::Id {
    engine::backup_stream(
        r.clone(),
        std::io::Cursor::new(data.to_vec()),
        meta(name),
        Arc::new(NoProgress),
        async { Ok(()) },
    )
    .await
    .expect("backup")
    .0
}

/// What `check --read-data` finds.
pub async fn check_all(r: &Arc<Repository>) -> ::repo::ops::check::CheckReport {
    let opts = ::repo::ops::check::CheckOptions {
        read_data: Some(::repo::ops::check::Subset::All),
        ..Default::default()
    };
    ::repo::ops::check::run(r.clone(), &opts).await.expect("check")
}

/// `check --read-data` finds no damage.
pub async fn clean(r: &Arc<Repository>) {
    let c = check_all(r).await;
    assert!(c.ok, "damage: {:?} notes {:?}", c.damage, c.notes);
}
