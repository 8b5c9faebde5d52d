//! Object names inside a repository (see `format-spec/layout.md`).

use crate::format::Id;

pub const CONFIG: &str = "config";
pub const KEYS_DIR: &str = "keys/";
pub const DATA_DIR: &str = "data/";
pub const INDEX_DIR: &str = "index/";
pub const SNAPSHOTS_DIR: &str = "snapshots/";
pub const LOCKS_DIR: &str = "locks/";
pub const PRUNE_DIR: &str = "prune/";

pub fn key(id: &Id) -> String {
    format!("keys/{}", id.to_hex())
}
pub fn pack(id: &Id) -> String {
    let h = id.to_hex();
    format!("data/{}/{}", &h[..2], h)
}
pub fn index(id: &Id) -> String {
    format!("index/{}", id.to_hex())
}
pub fn snapshot(id: &Id) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// The id in an object path (`data/ab/abcd…` → `abcd…`), if its last component is one.
pub fn id_of(path: &str) -> Option<Id> {
    let name = path.rsplit('/').next()?;
    Id::from_hex(name).ok()
}
pub fn prune_record(id: &Id) -> String {
    format!("prune/{}", id.to_hex())
}
