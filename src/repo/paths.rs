//! Object names inside a repository (see `format-spec/layout.md`).

use crate::format::Id;

/// The sealed config: its presence makes a location a repository.
pub const CONFIG: &str = "config";
/// Key files: each wraps the master keys under one password.
pub const KEYS_DIR: &str = "keys/";
/// Pack files, under a two-hex-digit fan-out directory.
pub const DATA_DIR: &str = "data/";
/// Index files: which pack holds each blob.
pub const INDEX_DIR: &str = "index/";
/// Snapshots: each one a backup's commit point, written after all of its data.
pub const SNAPSHOTS_DIR: &str = "snapshots/";
/// Snapshot bundles: copies of many snapshot objects in one, for a client with an empty cache.
pub const BUNDLES_DIR: &str = "bundles/";
/// Leases of running processes (never mirrored).
pub const LOCKS_DIR: &str = "locks/";
/// Prune records (never mirrored).
pub const PRUNE_DIR: &str = "prune/";

/// `keys/<hex>`.
pub fn key(id: &Id) -> String {
    format!("keys/{}", id.to_hex())
}
/// `data/<first two hex digits>/<hex>`.
pub fn pack(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}
/// `index/<hex>`.
pub fn index(id: &Id) -> String {
    format!("index/{}", id.to_hex())
}
/// `snapshots/<hex>`.
pub fn snapshot(id: &Id) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// The id in an object path (`data/ab/abcd…` → `abcd…`), if its last component is one.
pub fn id_of(path: &str) -> Option<Id> {
    let name = path.rsplit('/').next()?;
    Id::from_hex(name).ok()
}
/// `bundles/<hex>`.
pub fn bundle(id: &Id) -> String {
    format!("bundles/{}", id.to_hex())
}
/// `prune/<hex>`.
pub fn prune_record(id: &Id) -> String {
    format!("prune/{}", id.to_hex())
}
