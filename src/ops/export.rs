//! `repo export DIR`: write snapshots as the classic files runbooks expect
//! (`postgres/fnb-admin-20260214-020000.dump.gz`), from the deduplicated store.
//!
//! * Each file is written under a temporary name beside its final one
//!   (`.tmp-repo-export-…`), fsynced, renamed, and its directory fsynced: a file at its final
//!   name is always complete.
//! * The directory's manifest (`.repo-export.json`, format-spec/export-manifest.md) records
//!   which files export wrote, for which snapshot. A file already exported for the same
//!   snapshot with the same size is skipped without reading anything. A file of the same name
//!   that export did not write is compared byte for byte with what export would write:
//!   identical → adopted and skipped; different → left alone and reported (`force`
//!   replaces it).
//! * `mirror` deletes the files of the manifest whose snapshots are no longer selected (gone
//!   from the repository, or outside `--keep-within`), among the names this export selects.
//!   Nothing the manifest does not list is ever deleted.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::SnapshotInfo;
use super::forget::policy::{Item, Policy, apply};
use super::template::{Fields, Template, stream_extension};
use crate::codec::gzip::ParallelGzWriter;
use crate::format::Id;
use crate::format::snapshot::Snapshot;
use crate::repo::glob_match;
use crate::repo::{Progress, RepoError, Repository, Result, restore_stream};

/// File name of the export manifest at the top of an export directory
/// (`format-spec/export-manifest.md`).
pub const MANIFEST: &str = ".repo-export.json";
const TMP_PREFIX: &str = ".tmp-repo-export-";
/// Manifests larger than this are refused rather than read (hostile or damaged file).
const MAX_MANIFEST: u64 = 64 << 20;

/// How exported files are compressed; the extension (`.gz`, `.zst`) follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip, compressed in parallel as independent members (readable by every gzip reader).
    Gzip {
        /// gzip level, 1 ..= 9.
        level: u32,
    },
    /// One zstd frame.
    Zstd {
        /// zstd level, as the `zstd` tool takes it (negative levels are faster).
        level: i32,
    },
    /// The restored bytes as they are.
    None,
}

impl Compression {
    fn extension(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => ".gz",
            Compression::Zstd { .. } => ".zst",
            Compression::None => "",
        }
    }
}

/// What `repo export` writes, and what it may replace or delete.
pub struct ExportOptions {
    /// `None`: `{name}-{time}` plus an extension from the content (`.dump`, `.sql`, `.tar`)
    /// and the compression's (`.gz`, `.zst`).
    pub template: Option<Template>,
    /// How to compress each file.
    pub compression: Compression,
    /// `--mirror`: delete the files of the manifest whose snapshots are no longer selected, within
    /// `name_scope`.
    pub mirror: bool,
    /// Replace files export did not write when they differ.
    pub force: bool,
    /// Time zone of `{time}` in file names.
    pub tz: chrono_tz::Tz,
    /// The name glob of this export (scope of `mirror`); `None` = every name.
    pub name_scope: Option<String>,
}

/// One file export wrote, skipped, adopted, found in conflict or deleted.
#[derive(Debug, serde::Serialize)]
pub struct ExportedFile {
    /// Path relative to the export directory.
    pub path: String,
    /// written, skipped, adopted, conflict, deleted
    pub action: &'static str,
    /// The snapshot the file holds; `None` for a deleted file.
    pub snapshot: Option<SnapshotInfo>,
    /// Size of the file in bytes (0 for a conflict).
    pub bytes: u64,
}

/// What `repo export` did (JSON output).
#[derive(Debug, Default, serde::Serialize)]
pub struct ExportReport {
    /// The export directory.
    pub directory: String,
    /// Every file considered, in order.
    pub files: Vec<ExportedFile>,
    /// Files written (new or replaced).
    pub written: u64,
    /// Files left as they were: already exported with the recorded size, or adopted because
    /// identical.
    pub skipped: u64,
    /// Files deleted by `--mirror`.
    pub deleted: u64,
    /// Files not written because a different file export did not write was in the way (`--force`
    /// replaces them).
    pub conflicts: u64,
    /// Bytes of the written files on disk (after compression).
    pub bytes_written: u64,
    /// Uncompressed bytes restored for the written files.
    pub bytes_restored: u64,
    /// Temporary files of exports killed over a day ago, removed.
    pub abandoned_removed: u64,
    /// Wall-clock duration of the export, seconds.
    pub seconds: f64,
}

/// What the manifest records about one exported file.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Id of the snapshot the file holds (64 hex digits).
    pub snapshot: String,
    /// The snapshot's name: the scope `--mirror` matches against.
    pub name: String,
    /// Size of the file in bytes when export wrote it; a different size on disk means it is
    /// exported again.
    pub size: u64,
    /// The stream of a server snapshot (kind 3) the file holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// The manifest's key of an exported file: the snapshot id, and `/stream` for a server
/// snapshot.
fn export_key(snapshot_hex: &str, stream: Option<&str>) -> String {
    match stream {
        Some(s) => format!("{snapshot_hex}/{s}"),
        None => snapshot_hex.to_string(),
    }
}

impl ManifestEntry {
    /// What the file was exported from ([`export_key`]).
    fn key(&self) -> String {
        export_key(&self.snapshot, self.stream.as_deref())
    }
}

/// The export manifest, `.repo-export.json` (`format-spec/export-manifest.md`): which files
/// export wrote into the directory, for which snapshot.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Manifest format version; only 1 is read.
    pub version: u32,
    /// Relative path → what export wrote there.
    pub files: BTreeMap<String, ManifestEntry>,
}

/// Why an export manifest does not decode.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the manifest's shape.
    #[error("not an export manifest: {0}")]
    Json(serde_json::Error),
    /// A version this build does not know.
    #[error("export manifest version {0} is not supported (1 is)")]
    Version(u32),
    /// A path that leaves the export directory.
    #[error("export manifest names {0:?}, which is not inside the directory")]
    Outside(String),
    /// A file's snapshot id is not 64 hex digits.
    #[error("export manifest: {0:?} has a malformed snapshot id")]
    SnapshotId(String),
}

impl Manifest {
    /// Parses a manifest, refusing an unknown version, a path leaving the directory or a malformed
    /// snapshot id; the error names what is wrong.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        if m.version != 1 {
            return Err(ManifestError::Version(m.version));
        }
        for (path, e) in &m.files {
            if !safe_relative(path) {
                return Err(ManifestError::Outside(path.clone()));
            }
            if Id::from_hex(&e.snapshot).is_err() {
                return Err(ManifestError::SnapshotId(path.clone()));
            }
        }
        Ok(m)
    }
    /// Pretty JSON (two-space indentation, sorted paths) with a final newline.
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }
}

/// True for a relative `/`-separated path that stays inside the directory: not empty, not absolute,
/// no NUL, and no empty, `.` or `..` component.
pub fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn io_err(path: &Path, e: std::io::Error) -> RepoError {
    RepoError::Output(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn load_manifest(dir: &Path) -> Result<Manifest> {
    let p = dir.join(MANIFEST);
    match std::fs::metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Manifest { version: 1, files: BTreeMap::new() })
        }
        Err(e) => Err(io_err(&p, e)),
        Ok(m) if m.len() > MAX_MANIFEST => Err(RepoError::Corrupt {
            object: p.display().to_string(),
            reason: "export manifest is implausibly large".into(),
        }),
        Ok(_) => {
            let bytes = std::fs::read(&p).map_err(|e| io_err(&p, e))?;
            Manifest::decode(&bytes).map_err(|e| RepoError::Corrupt {
                object: p.display().to_string(),
                reason: e.to_string(),
            })
        }
    }
}

fn save_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let bytes = m.encode().map_err(|e| RepoError::Output(std::io::Error::other(e)))?;
    write_atomic(&dir.join(MANIFEST), &bytes)
}

/// Writes `bytes` to `path` atomically (temporary name, fsync, rename, directory fsync).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_beside(path)?;
    crate::fsutil::write_atomic_via(&tmp, path, bytes).map_err(|e| io_err(path, e))
}

fn sync_dir(path: &Path) -> Result<()> {
    crate::fsutil::sync_dir(path).map_err(|e| io_err(path, e))
}

/// Removes the temporary files that exports killed (SIGKILL, a lost node) over a day ago left
/// anywhere under `dir`; younger ones may belong to an export still running. Best effort: a
/// directory it may not read (`lost+found`) or a file it may not remove is left alone.
fn remove_abandoned_temps(dir: &Path) -> u64 {
    let before = crate::fsutil::abandoned_before();
    let left = crate::fsutil::abandoned_files(dir, true, before, |f| f.starts_with(TMP_PREFIX));
    left.iter().filter(|(p, _)| std::fs::remove_file(p).is_ok()).count() as u64
}

fn temp_beside(path: &Path) -> Result<PathBuf> {
    crate::fsutil::temp_with_prefix(path, TMP_PREFIX).map_err(|e| io_err(path, e))
}

/// Keeps the first bytes of the (uncompressed) stream, to name the file by its content.
struct Head<W> {
    inner: W,
    head: Arc<Mutex<Vec<u8>>>,
}

impl<W: Write> Write for Head<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        let mut h = self.head.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() < 512 {
            let take = (512 - h.len()).min(n);
            h.extend_from_slice(&b[..take]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A zstd encoder whose `flush` ends the frame (restore flushes exactly once, at the end).
struct ZstdSink<W: Write>(zstd::stream::write::Encoder<'static, W>);

impl<W: Write> Write for ZstdSink<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.do_finish()?;
        self.0.get_mut().flush()
    }
}

/// Restores `snap` into a new temporary file beside `final_hint`, compressed as asked.
/// Returns the temporary path, the first bytes of the stream, and the restored size.
#[allow(clippy::too_many_arguments)] // the snapshot, its stream, the target, the format
async fn restore_to_temp(
    repo: &Arc<Repository>,
    id: &Id,
    snap: &Snapshot,
    stream: Option<&str>,
    final_hint: &Path,
    compression: Compression,
    progress: Arc<dyn Progress>,
) -> Result<(PathBuf, Vec<u8>, u64)> {
    if let Some(parent) = final_hint.parent() {
        // durable: the file's rename is fsynced in its directory, which must itself survive
        crate::fsutil::create_dir_all_durable(parent).map_err(|e| io_err(parent, e))?;
    }
    let tmp = temp_beside(final_hint)?;
    let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    // removed on an error, and when an interrupt drops this future mid-write
    let guard = crate::fsutil::TempFile::new(tmp.clone());
    let keep = file.try_clone().map_err(|e| io_err(&tmp, e))?;
    let head = Arc::new(Mutex::new(Vec::new()));
    let buffered = std::io::BufWriter::with_capacity(1 << 20, file);
    let sink: Box<dyn Write + Send> = match compression {
        Compression::Gzip { level } => Box::new(ParallelGzWriter::new(buffered, level)),
        Compression::Zstd { level } => Box::new(ZstdSink(
            zstd::stream::write::Encoder::new(buffered, level).map_err(|e| io_err(&tmp, e))?,
        )),
        Compression::None => Box::new(buffered),
    };
    let out = Head { inner: sink, head: head.clone() };
    let label = format!("snapshot {} ({})", id.short(), snap.name);
    let r = if let Some(f) = stream {
        super::tree::restore::run_file(repo.clone(), id, snap, Path::new(f), out, progress)
            .await
            .map(|r| r.bytes)
    } else if snap.kind.has_catalog() {
        super::tree::tar::write_tar(repo.clone(), id, snap, out, progress).await
    } else {
        restore_stream(repo.clone(), snap, &label, out, progress).await.map(|s| s.bytes)
    };
    let bytes = r?;
    keep.sync_all().map_err(|e| io_err(&tmp, e))?;
    let head = head.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok((guard.keep(), head, bytes))
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    if std::fs::metadata(a)?.len() != std::fs::metadata(b)?.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (
        std::io::BufReader::new(std::fs::File::open(a)?),
        std::io::BufReader::new(std::fs::File::open(b)?),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The name a stream of a server snapshot is exported under: the stream's file stem beside
/// the snapshot name's last component (`postgres/prod` + `fnb-admin.dump` →
/// `postgres/fnb-admin`), so that the default template gives the classic
/// `postgres/fnb-admin-20260214-020000.dump.gz`.
pub fn stream_export_name(snapshot: &str, file: &str) -> String {
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let stem = if stem.is_empty() { file } else { stem };
    match snapshot.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{stem}"),
        None => stem.to_string(),
    }
}

/// The snapshots `forget --keep-within SPAN` keeps: per name, those at or after the newest
/// snapshot's time minus `span_ns`. Order is kept.
pub fn keep_within(selected: Vec<(Id, Snapshot)>, span_ns: i64) -> Vec<(Id, Snapshot)> {
    let policy = Policy { within_ns: Some(span_ns), ..Default::default() };
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, s)) in selected.iter().enumerate() {
        groups.entry(s.name.as_str()).or_default().push(i);
    }
    let mut keep = vec![false; selected.len()];
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    for members in groups.values() {
        let items: Vec<Item> = members
            .iter()
            .map(|&i| Item { time_ns: selected[i].1.time_ns, tags: vec![] })
            .collect();
        for (&i, d) in members.iter().zip(apply(&policy, &items, &chrono::Utc, now)) {
            keep[i] = d.keep;
        }
    }
    selected.into_iter().zip(keep).filter_map(|(s, k)| k.then_some(s)).collect()
}

/// One file to export: a snapshot, and for a server snapshot the stream within it.
struct ExportItem<'a> {
    id: &'a Id,
    snap: &'a Snapshot,
    /// The stream's file name in a server snapshot.
    file: Option<String>,
}

impl ExportItem<'_> {
    /// The manifest's key: the snapshot, and the stream of a server snapshot.
    fn key(&self) -> String {
        export_key(&self.id.to_hex(), self.file.as_deref())
    }
}

/// The files `selected` exports to: one per snapshot, one per stream of a server snapshot.
async fn items<'a>(
    repo: &Arc<Repository>,
    selected: &'a [(Id, Snapshot)],
) -> Result<Vec<ExportItem<'a>>> {
    let mut items = Vec::new();
    for (id, snap) in selected {
        if snap.kind == crate::format::snapshot::SnapshotKind::Streams {
            let label = super::snapshot_label(id, snap);
            for e in crate::repo::tree::read_entries(repo, snap, &label).await? {
                if e.kind() == crate::format::tree::Kind::File {
                    let file = Some(String::from_utf8_lossy(&e.path).into_owned());
                    items.push(ExportItem { id, snap, file });
                }
            }
        } else {
            items.push(ExportItem { id, snap, file: None });
        }
    }
    Ok(items)
}

/// Exports `selected` into `dir` (one file per stream snapshot, a tar per tree, one file per stream
/// of a server snapshot), skipping what the manifest shows is already there, and saving the
/// manifest after every file written or deleted. Stops at the first error.
pub async fn run(
    repo: Arc<Repository>,
    dir: &Path,
    selected: Vec<(Id, Snapshot)>,
    opts: &ExportOptions,
    progress: Arc<dyn Progress>,
) -> Result<ExportReport> {
    let t0 = Instant::now();
    crate::fsutil::create_dir_all_durable(dir).map_err(|e| io_err(dir, e))?;
    let abandoned_removed = remove_abandoned_temps(dir);
    let mut x = Exporter {
        manifest: load_manifest(dir)?,
        report: ExportReport {
            directory: dir.display().to_string(),
            abandoned_removed,
            ..Default::default()
        },
        repo,
        dir,
        opts,
        progress,
    };
    let items = items(&x.repo, &selected).await?;
    for item in &items {
        x.export(item).await?;
    }
    if opts.mirror {
        let selected_keys: HashSet<String> = items.iter().map(ExportItem::key).collect();
        x.mirror(&selected_keys)?;
    }
    x.report.seconds = t0.elapsed().as_secs_f64();
    Ok(x.report)
}

/// The state of one `export` run.
struct Exporter<'a> {
    repo: Arc<Repository>,
    dir: &'a Path,
    opts: &'a ExportOptions,
    progress: Arc<dyn Progress>,
    manifest: Manifest,
    report: ExportReport,
}

impl Exporter<'_> {
    /// Exports one item: skipped when the manifest shows it is there already, else restored
    /// to a temporary file and moved to its name (or kept out of the way of a different file
    /// of that name, unless `--force`).
    async fn export(&mut self, item: &ExportItem<'_>) -> Result<()> {
        let (id, snap, opts) = (item.id, item.snap, self.opts);
        let id_hex = id.to_hex();
        let info = SnapshotInfo::new(id, snap);
        let name = match &item.file {
            Some(f) => stream_export_name(&snap.name, f),
            None => snap.name.clone(),
        };
        let fields = Fields {
            name: &name,
            host: &snap.host,
            tags: &snap.tags,
            id_hex: &id_hex,
            time_ns: snap.time_ns,
        };
        let wanted = match &opts.template {
            Some(t) => Some(t.render(&fields, &opts.tz)?),
            None => None,
        };
        if let Some((path, bytes)) = self.already_there(&item.key(), wanted.as_deref()) {
            self.report.skipped += 1;
            let snapshot = Some(info);
            self.report.files.push(ExportedFile { path, action: "skipped", snapshot, bytes });
            return Ok(());
        }
        // Without a template the extension comes from the content: the stem names the
        // temporary file, the full name is known once the first bytes are restored.
        let stem_path = match &wanted {
            Some(w) => w.clone(),
            None => Template::default_stem().render(&fields, &opts.tz)?,
        };
        let (tmp, head, restored) = restore_to_temp(
            &self.repo,
            id,
            snap,
            item.file.as_deref(),
            &self.dir.join(&stem_path),
            opts.compression,
            self.progress.clone(),
        )
        .await?;
        let rel = match wanted {
            Some(w) => w,
            None => {
                format!("{stem_path}{}{}", stream_extension(&head), opts.compression.extension())
            }
        };
        let size = std::fs::metadata(&tmp).map_err(|e| io_err(&tmp, e))?.len();
        let entry = ManifestEntry {
            snapshot: id_hex,
            name: snap.name.clone(),
            size,
            stream: item.file.clone(),
        };
        let action = self.place(&tmp, &rel, entry, &item.key())?;
        if action == "written" {
            self.report.written += 1;
            self.report.bytes_written += size;
            self.report.bytes_restored += restored;
        }
        let bytes = if action == "conflict" { 0 } else { size };
        self.report.files.push(ExportedFile { path: rel, action, snapshot: Some(info), bytes });
        Ok(())
    }

    /// Moves the restored temporary file to `rel` and records it in the manifest
    /// ("written"); a different file already there is left alone ("conflict", unless
    /// `--force`), an identical one is adopted ("adopted").
    fn place(
        &mut self,
        tmp: &Path,
        rel: &str,
        entry: ManifestEntry,
        key: &str,
    ) -> Result<&'static str> {
        let final_path = self.dir.join(rel);
        let ours = self.manifest.files.get(rel).is_some_and(|e| e.key() == key);
        if final_path.exists() && !ours {
            let identical = same_content(tmp, &final_path).map_err(|e| io_err(&final_path, e))?;
            if identical || !self.opts.force {
                let _ = std::fs::remove_file(tmp);
                if !identical {
                    self.report.conflicts += 1;
                    return Ok("conflict");
                }
                self.manifest.files.insert(rel.into(), entry);
                save_manifest(self.dir, &self.manifest)?;
                self.report.skipped += 1;
                return Ok("adopted");
            }
        }
        std::fs::rename(tmp, &final_path).map_err(|e| io_err(&final_path, e))?;
        sync_dir(&final_path)?;
        self.manifest.files.insert(rel.into(), entry);
        save_manifest(self.dir, &self.manifest)?;
        Ok("written")
    }

    /// The file (path, size) this item was exported to earlier, if it is still there with its
    /// size, has the name the template gives (or, without one, the compression's extension).
    fn already_there(&self, key: &str, wanted: Option<&str>) -> Option<(String, u64)> {
        let fits = |p: &str| match self.opts.compression {
            Compression::None => !p.ends_with(".gz") && !p.ends_with(".zst"),
            c => p.ends_with(c.extension()),
        };
        self.manifest
            .files
            .iter()
            .filter(|(p, e)| e.key() == key && wanted.map_or(fits(p), |w| w == p.as_str()))
            .find(|(p, e)| {
                std::fs::metadata(self.dir.join(p)).map(|m| m.len() == e.size).unwrap_or(false)
            })
            .map(|(p, e)| (p.clone(), e.size))
    }

    /// `--mirror`: removes the files of snapshots (within the name scope) no longer selected.
    fn mirror(&mut self, selected: &HashSet<String>) -> Result<()> {
        let scope = self.opts.name_scope.as_deref();
        let in_scope = |name: &str| scope.is_none_or(|g| glob_match(g, name));
        let gone: Vec<(String, ManifestEntry)> = self
            .manifest
            .files
            .iter()
            .filter(|(_, e)| in_scope(&e.name) && !selected.contains(&e.key()))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        for (rel, e) in gone {
            let p = self.dir.join(&rel);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(er) if er.kind() == std::io::ErrorKind::NotFound => {}
                Err(er) => return Err(io_err(&p, er)),
            }
            self.manifest.files.remove(&rel);
            save_manifest(self.dir, &self.manifest)?;
            self.report.deleted += 1;
            let bytes = e.size;
            self.report.files.push(ExportedFile {
                path: rel,
                action: "deleted",
                snapshot: None,
                bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_golden_bytes_and_hostile_input() {
        let mut m = Manifest { version: 1, files: BTreeMap::new() };
        m.files.insert(
            "postgres/db-20260214-020000.dump.gz".into(),
            ManifestEntry {
                snapshot: "ab".repeat(32),
                name: "postgres/db".into(),
                size: 1234,
                stream: None,
            },
        );
        let golden = format!(
            "{{\n  \"version\": 1,\n  \"files\": {{\n    \"postgres/db-20260214-020000.dump.gz\": {{\n      \"snapshot\": \"{}\",\n      \"name\": \"postgres/db\",\n      \"size\": 1234\n    }}\n  }}\n}}\n",
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(m.encode().unwrap()).unwrap(), golden);
        assert_eq!(Manifest::decode(golden.as_bytes()).unwrap(), m);
        for bad in [
            &b"{"[..],
            br#"{"version":2,"files":{}}"#,
            br#"{"version":1,"files":{"../x":{"snapshot":"00","name":"a","size":1}}}"#,
            br#"{"version":1,"files":{"/etc/passwd":{"snapshot":"00","name":"a","size":1}}}"#,
            br#"{"version":1,"files":{"a":{"snapshot":"zz","name":"a","size":1}}}"#,
            br#"{"version":1,"files":{"a":{"snapshot":"00","name":"a","size":-1}}}"#,
        ] {
            assert!(Manifest::decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
