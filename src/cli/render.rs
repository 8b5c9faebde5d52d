//! Human-readable rendering of reports.

use repo::format::tree::{Entry, Kind};
use repo::ops::SnapshotInfo;
use repo::ops::backup::BackupReport;
use repo::ops::check::CheckReport;
use repo::ops::copy::CopyReport;
use repo::ops::export::ExportReport;
use repo::ops::forget::ForgetReport;
use repo::ops::import::ImportReport;
use repo::ops::init::InitReport;
use repo::ops::prune::PruneReport;
use repo::ops::repair::{RepairIndexReport, RepairSnapshotsReport};
use repo::ops::restore::RestoreReport;
use repo::ops::stats::StatsReport;
use repo::ops::sync::SyncReport;
use repo::ops::tree::backup::TreeBackupReport;
use repo::ops::tree::restore::TreeRestoreReport;

pub fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

pub fn init(r: &InitReport) -> String {
    format!(
        "created repository {} at {} (encryption: {})",
        &r.repository_id[..8],
        r.location,
        r.encryption
    )
}

pub fn backup(r: &BackupReport) -> String {
    let s = &r.stats;
    format!(
        "snapshot {} saved: {} at {}, {} read, {} new in {} of {} chunks ({} as deltas), {} written, {:.1} s",
        r.snapshot.short_id,
        r.snapshot.name,
        r.snapshot.time,
        size(s.bytes_read),
        size(s.new_bytes),
        s.new_chunks,
        s.chunks,
        s.delta_chunks,
        size(s.bytes_written),
        r.seconds
    )
}

pub fn snapshots(list: &[SnapshotInfo]) -> String {
    let mut out =
        format!("{:<8}  {:<25}  {:<30}  {:>10}  {}\n", "ID", "Time", "Name", "Size", "Tags");
    for s in list {
        out += &format!(
            "{:<8}  {:<25}  {:<30}  {:>10}  {}\n",
            s.short_id,
            s.time,
            s.name,
            size(s.size),
            s.tags.join(",")
        );
    }
    out += &format!("{} snapshots", list.len());
    out
}

pub fn restore(r: &RestoreReport) -> String {
    format!(
        "restored snapshot {} ({}): {} in {:.1} s",
        r.snapshot.short_id,
        r.snapshot.name,
        size(r.stats.bytes),
        r.seconds
    )
}

pub fn stats(r: &StatsReport) -> String {
    format!(
        "repository   {}\nencryption   {}\nsnapshots    {}\ntotal size   {}\nunique data  {}\nstored       {} in {} packs ({} blobs, {} index files)\nratio        {:.2}x",
        r.location,
        r.encryption,
        r.snapshots,
        size(r.total_size),
        size(r.unique_bytes),
        size(r.pack_bytes),
        r.packs,
        r.blobs,
        r.index_files,
        r.ratio
    )
}

pub fn check(r: &CheckReport) -> String {
    let mut out = format!(
        "checked {} snapshots, {} index files, {} packs ({} chunks)",
        r.snapshots, r.index_files, r.packs, r.blobs
    );
    if r.packs_read > 0 {
        out += &format!(
            "; read {} packs ({}) in {:.1} s",
            r.packs_read,
            size(r.bytes_read),
            r.seconds
        );
    }
    for n in &r.notes {
        out += &format!("\nnote: {n}");
    }
    for v in &r.restores {
        out += &format!(
            "\nrestore {}  {} {} ({}, {}): {}",
            if v.ok { "ok    " } else { "FAILED" },
            v.snapshot,
            v.name,
            v.format,
            size(v.bytes),
            v.message
        );
    }
    for l in &r.late {
        out += &match (&l.name, &l.newest, l.age_hours) {
            (Some(n), Some(t), Some(h)) => {
                format!("\nLATE {n}: newest snapshot {t} is {h:.1} h old (--max-age {})", l.rule)
            }
            _ => format!("\nLATE {}: no snapshot matches", l.rule),
        };
    }
    for d in &r.damage {
        out += &format!("\nDAMAGE {}: {}", d.object, d.problem);
        if !d.snapshots.is_empty() {
            out += &format!(
                "\n  needed by {} snapshots: {}",
                d.snapshots.len(),
                d.snapshots.join("; ")
            );
        }
    }
    out += &if r.ok {
        "\nno damage found".to_string()
    } else {
        format!("\n{} damaged objects found", r.damage.len())
    };
    out
}

pub fn repair_index(r: &RepairIndexReport) -> String {
    let mut out = format!(
        "read {} packs ({} blobs); wrote {} index files, removed {} old ones",
        r.packs_read, r.blobs, r.index_files_written, r.index_files_removed
    );
    if r.index_files_kept > 0 {
        out += &format!(
            "; kept {} old ones that name packs the new index does not cover",
            r.index_files_kept
        );
    }
    for u in &r.unreadable_packs {
        out += &format!("\nunreadable pack (its data is not indexed): {u}");
    }
    out
}

pub fn repair_snapshots(r: &RepairSnapshotsReport) -> String {
    if r.broken.is_empty() {
        return "no broken snapshots".into();
    }
    let mut out = format!("{} snapshots cannot be restored completely:", r.broken.len());
    for b in &r.broken {
        out += &format!(
            "\n  {}{}",
            &b[..8.min(b.len())],
            if r.removed.contains(b) { " (removed)" } else { "" }
        );
    }
    if r.removed.is_empty() {
        out += "\nnothing removed: pass --forget-broken to remove them";
    }
    out
}

pub fn forget(r: &ForgetReport) -> String {
    let mut out = String::new();
    for g in &r.groups {
        out += &format!("{}: keep {}, remove {}\n", g.name, g.keep.len(), g.remove.len());
        for e in &g.keep {
            out += &format!(
                "  keep    {}  {}  ({})\n",
                e.snapshot.short_id,
                e.snapshot.time,
                e.reasons.join(", ")
            );
        }
        for e in &g.remove {
            out += &format!("  remove  {}  {}\n", e.snapshot.short_id, e.snapshot.time);
        }
    }
    out += &format!(
        "{} {} snapshots, kept {}",
        if r.dry_run { "would remove" } else { "removed" },
        r.removed,
        r.kept
    );
    out
}

pub fn prune(r: &PruneReport) -> String {
    let mut out = format!(
        "{} snapshots need {} chunks in {} packs; {} {} packs ({}), {} of them repacked into {}",
        r.snapshots,
        r.live_chunks,
        r.packs,
        if r.dry_run { "would condemn" } else { "condemned" },
        r.packs_condemned,
        size(r.bytes_condemned),
        r.packs_repacked,
        size(r.bytes_repacked_into)
    );
    if r.index_consolidated {
        out += &if r.dry_run {
            format!("\n{} index files would be consolidated", r.index_files)
        } else {
            format!("\n{} index files consolidated into {}", r.index_files, r.index_files_written)
        };
    }
    if r.delta_bases_kept > 0 {
        out += &format!(
            "\n{} chunks no snapshot needs stay as bases of deltas ({})",
            r.delta_bases_kept,
            size(r.delta_base_bytes)
        );
    }
    if !r.dry_run {
        out += &format!(
            "\ndeleted {} packs and {} index files: {} freed",
            r.packs_deleted,
            r.index_files_deleted,
            size(r.bytes_freed)
        );
        if r.packs_resurrected > 0 {
            out += &format!(
                "; {} packs kept because snapshots committed meanwhile need them",
                r.packs_resurrected
            );
        }
        if r.records_waiting > 0 {
            out += &format!(
                "\n{} prune records wait for {} running backups; the next prune finishes them",
                r.records_waiting, r.running_backups
            );
        }
    }
    if r.abandoned_files > 0 {
        out += &format!(
            "\n{} {} temporary files of writes abandoned over a day ago ({})",
            if r.dry_run { "would remove" } else { "removed" },
            r.abandoned_files,
            size(r.abandoned_bytes)
        );
    }
    out
}

pub fn sync(r: &SyncReport) -> String {
    let rate = r.copied_bytes as f64 / r.seconds.max(0.001);
    let mut out = format!(
        "{}{} → {}: copied {} objects ({}), {} already there ({}), deleted {} ({}) in {:.1} s ({}/s)",
        if r.dry_run { "dry run: " } else { "" },
        r.source,
        r.destination,
        r.copied_objects,
        size(r.copied_bytes),
        r.skipped_objects,
        size(r.skipped_bytes),
        r.deleted_objects,
        size(r.deleted_bytes),
        r.seconds,
        size(rate as u64)
    );
    if r.vanished_objects > 0 {
        out += &format!(
            "\nnote: {} objects disappeared from the source during the sync (a prune); the next sync settles them",
            r.vanished_objects
        );
    }
    if r.bundles_left_out > 0 {
        out += &format!(
            "\nnote: {} damaged snapshot bundles at the source were not copied (they only save requests; the next backup or forget there that stores a bundle replaces them)",
            r.bundles_left_out
        );
    }
    if r.deletions_postponed_for_leases > 0 {
        out += &format!(
            "\nnote: --delete removed nothing: {} other operations hold leases at the destination (a restore or a prune there); the next sync deletes",
            r.deletions_postponed_for_leases
        );
    }
    out
}

pub fn copy(r: &CopyReport) -> String {
    let mut lines = Vec::new();
    for s in &r.snapshots {
        match &s.copy {
            Some(c) => lines.push(format!(
                "copied  {} {} {} → {} ({} stored)",
                s.source.short_id,
                s.source.name,
                s.source.time,
                c.short_id,
                size(s.bytes_written)
            )),
            None => lines.push(format!(
                "present {} {} {} (already in the destination)",
                s.source.short_id, s.source.name, s.source.time
            )),
        }
    }
    lines.push(format!(
        "{} → {}: {} snapshots copied, {} already there, {:.1} s",
        r.source, r.destination, r.copied, r.skipped, r.seconds
    ));
    lines.join("\n")
}

pub fn export(r: &ExportReport) -> String {
    let mut lines: Vec<String> =
        r.files.iter().map(|f| format!("{:<8} {} ({})", f.action, f.path, size(f.bytes))).collect();
    let rate = r.bytes_restored as f64 / r.seconds.max(0.001);
    lines.push(format!(
        "{}: {} written ({}), {} unchanged, {} deleted, {} conflicts in {:.1} s ({}/s of dump data)",
        r.directory, r.written, size(r.bytes_written), r.skipped, r.deleted, r.conflicts, r.seconds, size(rate as u64)
    ));
    lines.join("\n")
}

pub fn import(r: &ImportReport) -> String {
    let mut lines: Vec<String> = r
        .files
        .iter()
        .map(|f| {
            format!(
                "{:<8} {} → {} {} {} ({} stored)",
                f.action,
                f.file,
                f.snapshot.short_id,
                f.snapshot.name,
                f.snapshot.time,
                size(f.bytes_written)
            )
        })
        .collect();
    lines.push(format!(
        "{} imported ({} of files, {} stored), {} already there, {:.1} s",
        r.imported,
        size(r.file_bytes),
        size(r.bytes_written),
        r.skipped,
        r.seconds
    ));
    lines.join("\n")
}

pub fn streams_backup(r: &repo::ops::streams::StreamsReport) -> String {
    let s = &r.stats;
    let mut out = format!(
        "snapshot {} saved: {} at {}, {} streams, {} read, {} new ({} chunks as deltas), {} written, {:.1} s",
        r.snapshot.short_id,
        r.snapshot.name,
        r.snapshot.time,
        r.streams.len(),
        size(s.bytes_read),
        size(s.new_bytes),
        s.delta_chunks,
        size(s.bytes_written),
        r.seconds
    );
    for st in &r.streams {
        out += &format!("\n  {}  {}  ({})", st.file, size(st.bytes), st.command);
    }
    out
}

pub fn tree_backup(r: &TreeBackupReport) -> String {
    let t = &r.tree;
    let mut s = format!(
        "snapshot {} saved: {} files, {} directories, {} other; {} read, {} unchanged ({}); {} new in {} packs; {:.1}s",
        r.snapshot.short_id,
        t.files,
        t.dirs,
        t.other,
        t.files_read,
        t.files_unchanged,
        size(t.bytes_unchanged),
        size(r.stats.new_bytes),
        r.stats.packs_written,
        r.seconds
    );
    if !t.errors.is_empty() {
        s.push_str(&format!(
            "\n{} files or their metadata could not be read (named above; exit code 3)",
            t.errors.len()
        ));
    }
    s
}

pub fn tree_restore(r: &TreeRestoreReport) -> String {
    format!(
        "restored {} files, {} directories, {} other, {} in {:.1}s",
        r.files,
        r.dirs,
        r.other,
        size(r.bytes),
        r.seconds
    )
}

fn mode_string(e: &Entry) -> String {
    let t = match e.kind() {
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::CharDev => 'c',
        Kind::BlockDev => 'b',
        Kind::Fifo => 'p',
        Kind::File | Kind::Hardlink => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (e.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn owner(name: &[u8], id: u32) -> String {
    if name.is_empty() { id.to_string() } else { String::from_utf8_lossy(name).into_owned() }
}

/// `ls -l`-like: mode, owner/group, size, mtime (UTC), path[ -> link].
pub fn ls_line(e: &Entry) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(e.mtime_ns).format("%Y-%m-%d %H:%M:%S");
    let mut s = format!(
        "{} {}/{} {:>12} {} {}",
        mode_string(e),
        owner(&e.user, e.uid),
        owner(&e.group, e.gid),
        e.size,
        time,
        String::from_utf8_lossy(&e.path)
    );
    match e.kind() {
        Kind::Symlink => s.push_str(&format!(" -> {}", String::from_utf8_lossy(&e.link))),
        Kind::Hardlink => s.push_str(&format!(" link to {}", String::from_utf8_lossy(&e.link))),
        _ => {}
    }
    s
}

pub fn ls_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "path": String::from_utf8_lossy(&e.path),
        "type": e.kind(),
        "mode": format!("{:04o}", e.mode),
        "uid": e.uid, "gid": e.gid,
        "user": String::from_utf8_lossy(&e.user), "group": String::from_utf8_lossy(&e.group),
        "size": e.size,
        "mtime": repo::ops::rfc3339(e.mtime_ns),
        "link": if e.link.is_empty() { None } else { Some(String::from_utf8_lossy(&e.link)) },
        "xattrs": e.xattrs.iter().map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect::<Vec<_>>(),
        "sparse": e.flags & repo::format::tree::FLAG_SPARSE != 0,
        "changed_while_read": e.flags & repo::format::tree::FLAG_CHANGED != 0,
    })
}
