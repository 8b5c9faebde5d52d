//! `repo import FILE...`: take an existing directory of classic dump files in, so a site
//! switches over without losing its history.
//!
//! gzip (also multi-member, as pigz writes) and zstd files are decompressed before chunking,
//! so imported dumps deduplicate with each other and with later backups; other files are
//! stored as they are. Name and time come from the file name
//! (`postgres/fnb-admin-20260214-020000.dump.gz`
//! → `postgres/fnb-admin` at 2026-02-14T02:00:00Z), from a template, or from `--name` /
//! `--time`. A file whose name and time already have a snapshot is skipped, so importing
//! twice makes no second snapshot.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::SnapshotInfo;
use super::template::Template;
use crate::codec::gzip::is_gzip;
use crate::repo::{
    Progress, RepoError, Repository, Result, SnapshotFilter, SnapshotMeta, list_snapshots,
};

/// How `repo import` names, dates and labels the snapshots it makes.
pub struct ImportOptions {
    /// `--name`: the snapshot name for every file, overriding the file name and template.
    pub name: Option<String>,
    /// `--time`: the snapshot time for every file, nanoseconds since the Unix epoch.
    pub time_ns: Option<i64>,
    /// `--template`: the file-name template that gives name and time (see
    /// [`Template::match_path`]); without it the classic `base-TIME.kind[.gz]` spellings are
    /// recognised.
    pub template: Option<Template>,
    /// Host recorded in the snapshots.
    pub host: String,
    /// Tags recorded in the snapshots.
    pub tags: Vec<String>,
}

/// One file and what became of it.
#[derive(Debug, serde::Serialize)]
pub struct ImportedFile {
    /// The file as given on the command line.
    pub file: String,
    /// imported, skipped
    pub action: &'static str,
    /// The snapshot made, or the existing one of the same name and time.
    pub snapshot: SnapshotInfo,
    /// Size of the file on disk in bytes (compressed, if it was).
    pub file_bytes: u64,
    /// Bytes the repository stored for it (0 when skipped).
    pub bytes_written: u64,
}

/// What `repo import` did (JSON output).
#[derive(Debug, Default, serde::Serialize)]
pub struct ImportReport {
    /// Every file, in the order given.
    pub files: Vec<ImportedFile>,
    /// Files stored as new snapshots.
    pub imported: u64,
    /// Files skipped because a snapshot of the same name and time exists.
    pub skipped: u64,
    /// Sum of the imported files' sizes as they were on disk.
    pub file_bytes: u64,
    /// What the repository stored for them.
    pub bytes_written: u64,
    /// Wall-clock duration of the import, seconds.
    pub seconds: f64,
}

const COMPRESSED: [&str; 3] = [".gz", ".zst", ".tgz"];
const KINDS: [&str; 4] = [".dump", ".sql", ".tar", ".backup"];
const TIMES: [&str; 6] = [
    "%Y%m%d-%H%M%S",
    "%Y%m%dT%H%M%SZ",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d-%H%M%S",
    "%Y%m%d",
    "%Y-%m-%d",
];

/// Name and time from a file name: `[dir/]base-TIME.kind[.gz]` with the time in one of the
/// usual cron spellings.
pub fn from_file_name(path: &str) -> Option<(String, i64)> {
    let mut stem = path.to_string();
    for ext in COMPRESSED {
        if let Some(s) = stem.strip_suffix(ext) {
            stem = s.to_string();
            break;
        }
    }
    for ext in KINDS {
        if let Some(s) = stem.strip_suffix(ext) {
            stem = s.to_string();
            break;
        }
    }
    for fmt in TIMES {
        let Ok(t) = Template::parse(&format!("{{base}}-{{time:{fmt}}}")) else { continue };
        if let Some((Some(name), Some(time))) = t.match_path(&stem) {
            return Some((name, time));
        }
    }
    None
}

fn open_decompressed(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut f = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let head = std::io::BufRead::fill_buf(&mut f)?.to_vec();
    Ok(if is_gzip(&head) {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(f)?)
    } else {
        Box::new(f)
    })
}

/// Reads the first 512 bytes to tell a tar archive (ustar magic) from a dump; gives the whole
/// stream back.
fn peek_tar(mut input: Box<dyn Read + Send>) -> std::io::Result<(Box<dyn Read + Send>, bool)> {
    let mut head = Vec::with_capacity(512);
    (&mut input).take(512).read_to_end(&mut head)?;
    let tar = head.len() == 512 && &head[257..262] == b"ustar";
    Ok((Box::new(std::io::Cursor::new(head).chain(input)), tar))
}

/// Every file's snapshot name and time, worked out before anything is stored: a file that
/// cannot be named stops the import before it starts, not halfway.
fn plan(files: &[PathBuf], opts: &ImportOptions) -> Result<Vec<(PathBuf, String, i64)>> {
    let mut plan: Vec<(PathBuf, String, i64)> = Vec::new();
    for f in files {
        let shown = f.display().to_string();
        let (mut name, mut time) = (None, None);
        match &opts.template {
            Some(t) => {
                if let Some((n, tm)) = t.match_path(&shown) {
                    (name, time) = (n, tm);
                } else if opts.name.is_none() || opts.time_ns.is_none() {
                    return Err(RepoError::TemplateMismatch { file: shown });
                }
            }
            None => {
                if let Some((n, tm)) = from_file_name(&shown) {
                    (name, time) = (Some(n), Some(tm));
                }
            }
        }
        let unnamed = |what, option| RepoError::NotNamed { file: shown.clone(), what, option };
        let name = opts.name.clone().or(name).ok_or_else(|| unnamed("snapshot name", "name"))?;
        let time = opts.time_ns.or(time).ok_or_else(|| unnamed("time", "time"))?;
        // two files of one import as one snapshot: the second would be skipped as done
        if let Some((other, _, _)) = plan.iter().find(|(_, n, t)| *n == name && *t == time) {
            return Err(RepoError::ImportClash {
                file: shown,
                name,
                other: format!("would also come from {}", other.display()),
            });
        }
        plan.push((f.clone(), name, time));
    }
    Ok(plan)
}

/// The command recorded for an import of `path`: its file name.
fn import_command(path: &Path) -> String {
    let base = path.file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
    format!("import {base}")
}

/// Imports `files` in order: a tar archive (after decompression) becomes a tree snapshot, anything
/// else a stream snapshot. Every file's name and time is worked out before anything is stored, so a
/// file that cannot be named stops the import before it starts.
pub async fn run(
    repo: Arc<Repository>,
    files: &[PathBuf],
    opts: &ImportOptions,
    progress: Arc<dyn Progress>,
) -> Result<ImportReport> {
    let t0 = Instant::now();
    let plan = plan(files, opts)?;
    let mut report = ImportReport::default();
    // the snapshots of each name, read once before anything is stored: a file whose name and
    // time another snapshot holds stops the import before its first file
    type Listed = Vec<(crate::format::Id, crate::format::snapshot::Snapshot)>;
    let mut existing_of: std::collections::HashMap<String, Listed> = Default::default();
    for (path, name, time_ns) in &plan {
        if !existing_of.contains_key(name) {
            let filter = SnapshotFilter { name: Some(name.clone()), tags: vec![] };
            existing_of.insert(name.clone(), list_snapshots(&repo, &filter).await?);
        }
        let command = import_command(path);
        let clash = existing_of[name]
            .iter()
            .find(|(_, s)| s.name == *name && s.time_ns == *time_ns && s.command != command);
        if let Some((id, s)) = clash {
            return Err(RepoError::ImportClash {
                file: path.display().to_string(),
                name: name.clone(),
                other: format!("exists already ({}, \"{}\")", id.short(), s.command),
            });
        }
    }
    for (path, name, time_ns) in plan {
        let existing = &existing_of[&name];
        let file_bytes = std::fs::metadata(&path)
            .map_err(|e| {
                RepoError::Input(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
            })?
            .len();
        let command = import_command(&path);
        // the same file imported before is skipped (anything else of that name and time
        // was refused above)
        let same_time = existing.iter().find(|(_, s)| s.name == name && s.time_ns == time_ns);
        if let Some((id, s)) = same_time {
            report.skipped += 1;
            report.files.push(ImportedFile {
                file: path.display().to_string(),
                action: "skipped",
                snapshot: SnapshotInfo::new(id, s),
                file_bytes,
                bytes_written: 0,
            });
            continue;
        }
        let in_err = |e: std::io::Error| {
            RepoError::Input(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        let (input, tar) = peek_tar(open_decompressed(&path).map_err(in_err)?).map_err(in_err)?;
        let meta = SnapshotMeta {
            name,
            host: opts.host.clone(),
            tags: opts.tags.clone(),
            command,
            time_ns,
        };
        let named = |e: RepoError| match e {
            RepoError::Input(io) => RepoError::Input(std::io::Error::new(
                io.kind(),
                format!("{}: {io}", path.display()),
            )),
            other => other,
        };
        // a tar archive becomes a tree snapshot; anything else a stream
        let (snapshot, written) = if tar {
            let (id, snap, stats) =
                super::tree::import_tar::run(repo.clone(), input, meta, progress.clone())
                    .await
                    .map_err(named)?;
            (SnapshotInfo::new(&id, &snap), stats.bytes_written)
        } else {
            let r = super::backup::run(
                repo.clone(),
                super::backup::Source::Reader(input),
                meta,
                progress.clone(),
            )
            .await
            .map_err(named)?;
            (r.snapshot, r.stats.bytes_written)
        };
        report.imported += 1;
        report.file_bytes += file_bytes;
        report.bytes_written += written;
        report.files.push(ImportedFile {
            file: path.display().to_string(),
            action: "imported",
            snapshot,
            file_bytes,
            bytes_written: written,
        });
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_nanos_opt().unwrap()
    }

    #[test]
    fn names_and_times_from_classic_file_names() {
        let cases = [
            (
                "/mnt/backup/postgres/fnb-admin-20260214-020000.dump.gz",
                "postgres/fnb-admin",
                "2026-02-14T02:00:00Z",
            ),
            (
                "/mnt/backup/timescaledb/timescaledb-20260214-020000.dump.gz",
                "timescaledb/timescaledb",
                "2026-02-14T02:00:00Z",
            ),
            (
                "/mnt/backup/lvm-snapshots/ubuntu-lv-snap-20260209.tar.gz",
                "lvm-snapshots/ubuntu-lv-snap",
                "2026-02-09T00:00:00Z",
            ),
            ("db-2026-02-14.sql", "db", "2026-02-14T00:00:00Z"),
        ];
        for (path, name, time) in cases {
            assert_eq!(from_file_name(path), Some((name.to_string(), ns(time))), "{path}");
        }
        assert_eq!(
            from_file_name("/backup/hourly/backup-2022-11-28T08:51:08Z-dumpall.sql.gz"),
            None
        );
        assert_eq!(from_file_name("notes.txt"), None);
    }
}
