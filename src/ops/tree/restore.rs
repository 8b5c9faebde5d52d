//! Restore of a tree snapshot into a directory (all of it or some paths), one file of it to
//! a writer, and listing (`repo ls`).
//!
//! Safety: every stored path must be relative and made of normal components (no `..`, no
//! `.`, no empty or absolute parts); nothing is created below a symlink; and unless
//! `overwrite` is set, a restore that would replace anything already present is refused
//! before anything is written.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::fsmeta;
use crate::format::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Entry, Kind};
use crate::ops::SnapshotInfo;
use crate::repo::{OrderedReader, Progress, RepoError, Repository, Result};

/// What a tree restore (or a one-file restore) wrote (JSON output).
#[derive(Debug, Default, serde::Serialize)]
pub struct TreeRestoreReport {
    /// The snapshot restored.
    pub snapshot: Option<SnapshotInfo>,
    /// Regular files created, hard links included.
    pub files: u64,
    /// Directories created or reused.
    pub dirs: u64,
    /// Symlinks, device nodes and FIFOs created.
    pub other: u64,
    /// Bytes of file data written (holes of sparse files not counted).
    pub bytes: u64,
    /// Metadata that could not be applied (an owner without privileges, xattrs on a file
    /// system without them); the data itself was restored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Wall-clock duration of the restore, seconds.
    pub seconds: f64,
}

/// Where and what a tree restore writes.
pub struct TreeRestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Stored paths to restore (with everything below them); empty = all.
    pub include: Vec<PathBuf>,
    /// Replace files already present; without it a restore that would replace anything is refused
    /// before anything is written.
    pub overwrite: bool,
}

/// A stored path as a safe relative path, or an error naming it.
pub fn safe_path(stored: &[u8]) -> Result<PathBuf> {
    let bad = |why: &str| RepoError::Target {
        path: String::from_utf8_lossy(stored).into_owned(),
        reason: format!("unsafe path in the snapshot ({why}); refused"),
    };
    if stored.is_empty() || stored.starts_with(b"/") {
        return Err(bad("absolute or empty"));
    }
    let mut out = PathBuf::new();
    for part in stored.split(|b| *b == b'/') {
        match part {
            b"" | b"." => return Err(bad("empty or `.` component")),
            b".." => return Err(bad("`..` component")),
            p => out.push(OsStr::from_bytes(p)),
        }
    }
    Ok(out)
}

fn include_bytes(include: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    include
        .iter()
        .map(|p| super::backup::relative(p).map(|r| r.as_os_str().as_bytes().to_vec()))
        .collect()
}

fn under(path: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// The entries at or below `prefix` (all for an empty prefix).
pub async fn list(
    repo: &Arc<Repository>,
    id: &Id,
    snap: &Snapshot,
    prefix: &Path,
) -> Result<Vec<Entry>> {
    let label = crate::ops::snapshot_label(id, snap);
    let prefix = include_bytes(&[prefix.to_path_buf()])?.remove(0);
    let entries = crate::repo::tree::read_entries(repo, snap, &label).await?;
    let out: Vec<Entry> = entries.into_iter().filter(|e| under(&e.path, &prefix)).collect();
    if out.is_empty() && !prefix.is_empty() {
        return Err(RepoError::Target {
            path: String::from_utf8_lossy(&prefix).into_owned(),
            reason: format!("not in {label}"),
        });
    }
    Ok(out)
}

/// The entries to restore, with hard links whose first name is not restored turned into
/// files of their own.
pub(super) fn select(entries: Vec<Entry>, include: &[Vec<u8>]) -> Result<Vec<Entry>> {
    let files: HashMap<Vec<u8>, Entry> = entries
        .iter()
        .filter(|e| e.kind() == Kind::File)
        .map(|e| (e.path.clone(), e.clone()))
        .collect();
    let mut out = Vec::new();
    let mut restored: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for mut e in entries {
        if !include.is_empty() && !include.iter().any(|i| under(&e.path, i)) {
            continue;
        }
        safe_path(&e.path)?;
        if e.kind() == Kind::Hardlink && !restored.contains(&e.link) {
            let first = files.get(&e.link).ok_or_else(|| RepoError::Target {
                path: String::from_utf8_lossy(&e.path).into_owned(),
                reason: "hard link to a file the snapshot does not hold".into(),
            })?;
            let path = std::mem::take(&mut e.path);
            e = first.clone();
            e.path = path;
        }
        if e.kind() == Kind::File {
            restored.insert(e.path.clone());
        }
        out.push(e);
    }
    Ok(out)
}

/// Refuses anything under a symlink or outside `target`.
fn check_parents(target: &Path, rel: &Path) -> Result<()> {
    let mut p = target.to_path_buf();
    let comps: Vec<Component> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(RepoError::Target {
                    path: p.display().to_string(),
                    reason: "is a symlink; refusing to restore below it".into(),
                });
            }
            Ok(m) if !m.is_dir() => {
                return Err(RepoError::Target {
                    path: p.display().to_string(),
                    reason: "is not a directory".into(),
                });
            }
            Ok(_) => {}
            Err(_) => {
                fs::create_dir(&p).map_err(|e| RepoError::Target {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
    }
    Ok(())
}

/// Restores the selected entries of a tree snapshot under `opts.target`: every stored path is
/// checked for safety, data is fetched while files are written, and metadata that cannot be applied
/// becomes a warning.
pub async fn run(
    repo: Arc<Repository>,
    id: &Id,
    snap: &Snapshot,
    opts: TreeRestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<TreeRestoreReport> {
    let start = Instant::now();
    let label = crate::ops::snapshot_label(id, snap);
    let include = include_bytes(&opts.include)?;
    let entries = crate::repo::tree::read_entries(&repo, snap, &label).await?;
    let plan = select(entries, &include)?;
    if plan.is_empty() {
        return Err(RepoError::Target {
            path: opts
                .include
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            reason: format!("not in {label}"),
        });
    }
    fs::create_dir_all(&opts.target).map_err(|e| RepoError::Target {
        path: opts.target.display().to_string(),
        reason: e.to_string(),
    })?;
    if !opts.overwrite {
        for e in &plan {
            let p = opts.target.join(safe_path(&e.path)?);
            if let Ok(m) = fs::symlink_metadata(&p)
                && replaces(e, &m)
            {
                return Err(RepoError::Target {
                    path: p.display().to_string(),
                    reason: "already exists; nothing was restored (use --overwrite to replace)"
                        .into(),
                });
            }
        }
    }
    let contents: Vec<Content> = plan.iter().map(|e| e.content.clone()).collect();
    let target = opts.target.clone();
    let mut report = read_contents(&repo, &label, contents, move |chunks| {
        write_tree(&target, plan, chunks, opts.overwrite, &*progress)
    })
    .await?;
    report.snapshot = Some(SnapshotInfo::new(id, snap));
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

async fn feed(reader: &mut OrderedReader, contents: &[Content]) -> Result<()> {
    for c in contents {
        let more = match c {
            Content::None => true,
            Content::Inline(v) => reader.feed(&v.iter().map(|c| c.0).collect::<Vec<Id>>()).await?,
            Content::Lists(l) => reader.feed_lists(l).await?,
        };
        if !more {
            break; // the consumer stopped; its error is the one reported
        }
    }
    Ok(())
}

/// Starts fetching the chunks of `contents`, in order; the returned [`Chunks`] yields them.
/// The task's error (a missing or damaged chunk) comes back when it is awaited.
pub(super) fn spawn_feed(
    repo: &Arc<Repository>,
    label: &str,
    contents: Vec<Content>,
) -> (tokio::task::JoinHandle<Result<()>>, Chunks) {
    let (mut reader, rx) = OrderedReader::new(repo.clone(), label);
    let task = tokio::spawn(async move { feed(&mut reader, &contents).await });
    (task, Chunks::new(rx))
}

/// Runs `consume` on a blocking thread over the chunks of `contents`, fetched concurrently.
pub(super) async fn read_contents<T: Send + 'static>(
    repo: &Arc<Repository>,
    label: &str,
    contents: Vec<Content>,
    consume: impl FnOnce(Chunks) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (fed, chunks) = spawn_feed(repo, label, contents);
    let consumed =
        tokio::task::spawn_blocking(move || consume(chunks)).await.map_err(RepoError::from)?;
    // a failed fetch (a damaged or missing chunk) is the cause of the consumer's failure
    fed.await.map_err(RepoError::from)??;
    consumed
}

/// File contents in catalog order. A chunk never spans two files.
pub(super) struct Chunks {
    rx: mpsc::Receiver<Vec<Vec<u8>>>,
    group: std::vec::IntoIter<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Chunks {
    fn new(rx: mpsc::Receiver<Vec<Vec<u8>>>) -> Chunks {
        Chunks { rx, group: Vec::new().into_iter(), current: Vec::new(), at: 0 }
    }

    /// Up to `max` (> 0) next bytes, from the current chunk or the next one.
    fn take(&mut self, max: usize) -> Result<&[u8]> {
        while self.at == self.current.len() {
            match self.group.next() {
                Some(c) => (self.current, self.at) = (c, 0),
                None => match self.rx.blocking_recv() {
                    Some(g) => self.group = g.into_iter(),
                    None => {
                        return Err(RepoError::WorkerStopped("chunk feeder"));
                    }
                },
            }
        }
        let n = max.min(self.current.len() - self.at);
        self.at += n;
        Ok(&self.current[self.at - n..self.at])
    }

    /// A file's content must end where one of its chunks ends.
    fn end_file(&self, e: &Entry) -> Result<()> {
        if self.at != self.current.len() {
            return Err(RepoError::Corrupt {
                object: String::from_utf8_lossy(&e.path).into_owned(),
                reason: "stored content is longer than the file".into(),
            });
        }
        Ok(())
    }

    /// Writes a file's data at its offsets; the holes of a sparse file are left as holes.
    fn copy_to(
        &mut self,
        e: &Entry,
        out: &mut (impl Write + Seek),
        progress: &dyn Progress,
    ) -> Result<u64> {
        for (off, len) in e.data_extents() {
            out.seek(SeekFrom::Start(off)).map_err(RepoError::Output)?;
            let mut left = len as usize;
            while left > 0 {
                let part = self.take(left)?;
                out.write_all(part).map_err(RepoError::Output)?;
                progress.bytes_done(part.len() as u64);
                left -= part.len();
            }
        }
        self.end_file(e)?;
        Ok(e.data_len())
    }
}

/// One file's bytes as a reader: its data, with the holes of a sparse file as zeros if
/// `holes` is set (tar, stdout) or left out (the data alone, to store again). An engine
/// error while reading is kept in `error` (the `io::Error` only carries its message).
pub(super) struct ContentReader<'a> {
    chunks: &'a mut Chunks,
    entry: &'a Entry,
    progress: &'a dyn Progress,
    /// (length, is data) segments, in file order.
    segments: std::vec::IntoIter<(u64, bool)>,
    current: Option<(u64, bool)>,
    pub(super) error: Option<RepoError>,
}

impl<'a> ContentReader<'a> {
    pub(super) fn new(
        entry: &'a Entry,
        chunks: &'a mut Chunks,
        holes: bool,
        progress: &'a dyn Progress,
    ) -> ContentReader<'a> {
        let mut segments = Vec::new();
        if holes {
            let mut pos = 0;
            for (off, len) in entry.data_extents() {
                segments.extend([(off - pos, false), (len, true)]);
                pos = off + len;
            }
            segments.push((entry.size - pos, false));
        } else {
            segments.push((entry.data_len(), true));
        }
        ContentReader {
            chunks,
            entry,
            progress,
            segments: segments.into_iter(),
            current: None,
            error: None,
        }
    }

    fn fail(&mut self, e: RepoError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.error = Some(e);
        err
    }
}

impl io::Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some((left, data)) = self.current.take().or_else(|| self.segments.next()) else {
                return match self.chunks.end_file(self.entry) {
                    Ok(()) => Ok(0),
                    Err(e) => Err(self.fail(e)),
                };
            };
            if left == 0 {
                continue;
            }
            let want = (left as usize).min(buf.len());
            let n = if data {
                match self.chunks.take(want) {
                    Ok(part) => {
                        buf[..part.len()].copy_from_slice(part);
                        part.len()
                    }
                    Err(e) => return Err(self.fail(e)),
                }
            } else {
                buf[..want].fill(0);
                want
            };
            if data {
                self.progress.bytes_done(n as u64);
            }
            self.current = Some((left - n as u64, data));
            return Ok(n);
        }
    }
}

/// Restoring `e` would replace what is at its path (an existing directory is merged into).
fn replaces(e: &Entry, existing: &fs::Metadata) -> bool {
    !(e.kind() == Kind::Dir && existing.is_dir())
}

fn target_err(p: &Path) -> impl Fn(io::Error) -> RepoError + '_ {
    move |e| RepoError::Target { path: p.display().to_string(), reason: e.to_string() }
}

fn write_tree(
    target: &Path,
    plan: Vec<Entry>,
    mut chunks: Chunks,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<TreeRestoreReport> {
    let mut r = TreeRestoreReport::default();
    let mut dirs = Vec::new();
    for e in plan {
        let rel = safe_path(&e.path)?;
        check_parents(target, &rel)?;
        let p = target.join(&rel);
        let existing = fs::symlink_metadata(&p).ok();
        if let Some(m) = &existing
            && replaces(&e, m)
        {
            if !overwrite {
                return Err(RepoError::Target {
                    path: p.display().to_string(),
                    reason: "appeared during the restore; not replaced".into(),
                });
            }
            if m.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) }
                .map_err(target_err(&p))?;
        }
        match e.kind() {
            Kind::Dir => {
                if !existing.is_some_and(|m| m.is_dir()) {
                    fs::create_dir(&p).map_err(target_err(&p))?;
                }
                r.dirs += 1;
                dirs.push((p, e));
                continue;
            }
            Kind::File => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)
                    .map_err(target_err(&p))?;
                r.bytes += chunks.copy_to(&e, &mut f, progress)?;
                f.set_len(e.size).map_err(target_err(&p))?;
                r.files += 1;
            }
            Kind::Hardlink => {
                let first = target.join(safe_path(&e.link)?);
                fs::hard_link(&first, &p).map_err(target_err(&p))?;
                r.files += 1;
                continue; // the metadata is the first name's
            }
            Kind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.link), &p)
                    .map_err(target_err(&p))?;
                r.other += 1;
            }
            Kind::CharDev | Kind::BlockDev | Kind::Fifo => {
                let t = match e.kind() {
                    Kind::CharDev => libc::S_IFCHR,
                    Kind::BlockDev => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                fsmeta::mknod(&p, t | (e.mode & 0o777), e.rdev).map_err(target_err(&p))?;
                r.other += 1;
            }
        }
        apply_meta(&p, &e, &mut r.warnings);
    }
    // directories last, deepest first, so their times are not disturbed by their contents
    for (p, e) in dirs.iter().rev() {
        apply_meta(p, e, &mut r.warnings);
    }
    Ok(r)
}

/// xattrs (ACLs included), owner, mode, then mtime; failures become warnings.
fn apply_meta(p: &Path, e: &Entry, warnings: &mut Vec<String>) {
    let mut warn = |what: &str, err: io::Error| {
        if warnings.len() < 100 {
            warnings.push(format!("{}: {what}: {err}", p.display()));
        }
    };
    for (name, value) in &e.xattrs {
        if let Err(err) = fsmeta::set_xattr(p, name, value) {
            warn(&format!("xattr {}", String::from_utf8_lossy(name)), err);
        }
    }
    if let Err(err) = std::os::unix::fs::lchown(p, Some(e.uid), Some(e.gid)) {
        warn("owner", err);
    }
    if e.kind() != Kind::Symlink
        && let Err(err) = fs::set_permissions(p, fs::Permissions::from_mode(e.mode))
    {
        warn("mode", err);
    }
    if let Err(err) = fsmeta::set_mtime(p, e.mtime_ns) {
        warn("mtime", err);
    }
}

/// Writes one file of a tree snapshot (holes as zeros) to `out`.
pub async fn run_file<W: Write + Send + 'static>(
    repo: Arc<Repository>,
    id: &Id,
    snap: &Snapshot,
    path: &Path,
    out: W,
    progress: Arc<dyn Progress>,
) -> Result<TreeRestoreReport> {
    let start = Instant::now();
    let label = crate::ops::snapshot_label(id, snap);
    let want = include_bytes(&[path.to_path_buf()])?.remove(0);
    let entries = crate::repo::tree::read_entries(&repo, snap, &label).await?;
    let not_found = || RepoError::Target {
        path: path.display().to_string(),
        reason: format!("not in {label}"),
    };
    let mut e = entries.iter().find(|e| e.path == want).cloned().ok_or_else(not_found)?;
    if e.kind() == Kind::Hardlink {
        e = entries
            .iter()
            .find(|f| f.path == e.link && f.kind() == Kind::File)
            .cloned()
            .ok_or_else(not_found)?;
    }
    if e.kind() != Kind::File {
        return Err(RepoError::Target {
            path: path.display().to_string(),
            reason: format!("is a {:?}, not a file: restore it with --target DIR", e.kind())
                .to_lowercase(),
        });
    }
    let e2 = e.clone();
    let bytes = read_contents(&repo, &label, vec![e.content.clone()], move |mut chunks| {
        let mut out = out;
        let mut r = ContentReader::new(&e2, &mut chunks, true, &*progress);
        io::copy(&mut r, &mut out)
            .map_err(|err| r.error.take().unwrap_or(RepoError::Output(err)))?;
        out.flush().map_err(RepoError::Output)?;
        Ok(e2.data_len())
    })
    .await?;
    Ok(TreeRestoreReport {
        snapshot: Some(SnapshotInfo::new(id, snap)),
        files: 1,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        ..Default::default()
    })
}
