//! Layer 4: one module per command. Each takes options, does the work through the engine and
//! returns a serialisable report; none of them prints.

pub mod backup;
pub mod check;
pub mod copy;
pub mod export;
pub mod forget;
pub mod freshness;
pub mod fs_snapshot;
pub mod import;
pub mod init;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod sniff;
pub mod stats;
pub mod streams;
pub mod sync;
pub mod template;
pub mod tree;
pub mod verify_restore;

use crate::format::Id;
use crate::format::snapshot::Snapshot;

/// RFC 3339 (UTC, whole seconds) of a snapshot time.
pub fn rfc3339(time_ns: i64) -> String {
    let dt = chrono::DateTime::from_timestamp_nanos(time_ns);
    dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How a snapshot is named in error messages: "snapshot 3fa1c2d4 (postgres/db)".
pub fn snapshot_label(id: &Id, snap: &Snapshot) -> String {
    format!("snapshot {} ({})", id.short(), snap.name)
}

/// How a snapshot is shown in reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotInfo {
    /// Snapshot id, 64 hex digits.
    pub id: String,
    /// First 8 hex digits of the id, as shown in tables.
    pub short_id: String,
    /// Snapshot time, RFC 3339 in UTC, to the second.
    pub time: String,
    /// Snapshot name.
    pub name: String,
    /// Host that made it.
    pub host: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Bytes of the stream (a tree: of its regular files; a server snapshot: of its streams).
    pub size: u64,
    /// Chunks of a stream; catalog entries of a tree; streams of a server snapshot.
    pub chunks: u64,
    /// The command line of a command-mode backup; left out of the JSON when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub command: String,
}

impl SnapshotInfo {
    /// The report form of snapshot `id`.
    pub fn new(id: &Id, s: &Snapshot) -> Self {
        SnapshotInfo {
            id: id.to_hex(),
            short_id: id.short(),
            time: rfc3339(s.time_ns),
            name: s.name.clone(),
            host: s.host.clone(),
            tags: s.tags.clone(),
            size: s.size,
            chunks: s.chunks,
            command: s.command.clone(),
        }
    }
}

/// Where temporary databases go: see [`crate::repo::IndexCache::scratch`].
pub(crate) fn scratch_dir(repo: &crate::repo::Repository) -> &std::path::Path {
    repo.index().scratch()
}
