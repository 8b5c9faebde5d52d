//! `repo copy --to DEST`: copy selected snapshots into another repository (its own key and
//! chunker), deduplicating against what it holds — production to staging.
//!
//! Each snapshot is restored from the source and backed up into the destination through an
//! in-process pipe, with its name, time, host, tags and command kept. The destination's
//! backup runs under its own lease like any backup, and commits only if the source's restore
//! finished without error, so a failure leaves no partial snapshot. A snapshot the
//! destination already holds (same name, time, host and size) is skipped: copying twice
//! makes no second snapshot.

use std::sync::Arc;
use std::time::Instant;

use super::SnapshotInfo;
use crate::format::snapshot::Snapshot;
use crate::repo::{
    NoProgress, Progress, RepoError, Repository, Result, SnapshotFilter, SnapshotMeta,
    list_snapshots, restore_stream,
};

/// One selected source snapshot and what became of it.
#[derive(Debug, serde::Serialize)]
pub struct CopiedSnapshot {
    /// The snapshot in the source repository.
    pub source: SnapshotInfo,
    /// The new snapshot in the destination, or `None` when it was already there.
    pub copy: Option<SnapshotInfo>,
    /// Bytes the destination stored for it (after deduplication and compression).
    pub bytes_written: u64,
}

/// What `repo copy` did (JSON output).
#[derive(Debug, serde::Serialize)]
pub struct CopyReport {
    /// Location of the source repository.
    pub source: String,
    /// Location of the destination repository.
    pub destination: String,
    /// Every selected snapshot, in the order copied.
    pub snapshots: Vec<CopiedSnapshot>,
    /// Snapshots newly stored in the destination.
    pub copied: u64,
    /// Snapshots the destination already held (same name, time, host and size).
    pub skipped: u64,
    /// Wall-clock duration of the copy, seconds.
    pub seconds: f64,
}

fn same(a: &Snapshot, b: &Snapshot) -> bool {
    a.name == b.name && a.time_ns == b.time_ns && a.host == b.host && a.size == b.size
}

/// Copies `selected` (source snapshots, oldest first is best for deduplication order).
pub async fn run(
    src: Arc<Repository>,
    dst: Arc<Repository>,
    selected: Vec<(crate::format::Id, Snapshot)>,
    progress: Arc<dyn Progress>,
) -> Result<CopyReport> {
    let t0 = Instant::now();
    let existing = list_snapshots(&dst, &SnapshotFilter::default()).await?;
    let mut report = CopyReport {
        source: src.location(),
        destination: dst.location(),
        snapshots: Vec::new(),
        copied: 0,
        skipped: 0,
        seconds: 0.0,
    };
    for (id, snap) in selected {
        let info = SnapshotInfo::new(&id, &snap);
        if existing.iter().any(|(_, s)| same(s, &snap)) {
            report.skipped += 1;
            report.snapshots.push(CopiedSnapshot { source: info, copy: None, bytes_written: 0 });
            continue;
        }
        if snap.kind.has_catalog() {
            let meta = SnapshotMeta {
                name: snap.name.clone(),
                host: snap.host.clone(),
                tags: snap.tags.clone(),
                command: snap.command.clone(),
                time_ns: snap.time_ns,
            };
            let (new_id, new, stats) = super::tree::copy::run(
                src.clone(),
                dst.clone(),
                &id,
                &snap,
                meta,
                progress.clone(),
            )
            .await?;
            report.copied += 1;
            report.snapshots.push(CopiedSnapshot {
                source: info,
                copy: Some(SnapshotInfo::new(&new_id, &new)),
                bytes_written: stats.bytes_written,
            });
            continue;
        }
        let (reader, writer) = std::io::pipe().map_err(RepoError::Pipe)?;
        let label = format!("snapshot {}", &info.short_id);
        let (s2, snap2) = (src.clone(), snap.clone());
        let producer = tokio::spawn(async move {
            restore_stream(s2, &snap2, &label, writer, Arc::new(NoProgress)).await.map(|_| ())
        });
        let meta = SnapshotMeta {
            name: snap.name.clone(),
            host: snap.host.clone(),
            tags: snap.tags.clone(),
            command: snap.command.clone(),
            time_ns: snap.time_ns,
        };
        let r = super::backup::run(
            dst.clone(),
            super::backup::Source::Piped { input: Box::new(reader), producer },
            meta,
            progress.clone(),
        )
        .await?;
        report.copied += 1;
        report.snapshots.push(CopiedSnapshot {
            source: info,
            copy: Some(r.snapshot),
            bytes_written: r.stats.bytes_written,
        });
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}
