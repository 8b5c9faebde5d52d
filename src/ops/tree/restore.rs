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
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Entry, Kind, FLAG_SPARSE};
use crate::format::Id;
use crate::ops::SnapshotInfo;
use crate::repo::{OrderedReader, Progress, RepoError, Repository, Result};

#[derive(Debug, Default, serde::Serialize)]
pub struct TreeRestoreReport {
    pub snapshot: Option<SnapshotInfo>,
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    /// Metadata that could not be applied (an owner without privileges, xattrs on a file
    /// system without them); the data itself was restored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub seconds: f64,
}

pub struct TreeRestoreOptions {
    pub target: PathBuf,
    /// Stored paths to restore (with everything below them); empty = all.
    pub include: Vec<PathBuf>,
    pub overwrite: bool,
}

/// A stored path as a safe relative path, or an error naming it.
pub fn safe_path(stored: &[u8]) -> Result<PathBuf> {
    let bad = |why: &str| RepoError::Target { path: String::from_utf8_lossy(stored).into_owned(), reason: format!("unsafe path in the snapshot ({why}); refused") };
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
    include.iter().map(|p| super::backup::relative(p).map(|r| r.as_os_str().as_bytes().to_vec())).collect()
}

fn under(path: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty() || path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// The entries at or below `prefix` (all for an empty prefix).
pub async fn list(repo: &Arc<Repository>, id: &Id, snap: &Snapshot, prefix: &Path) -> Result<Vec<Entry>> {
    let label = format!("snapshot {} ({})", &id.to_hex()[..8], snap.name);
    let prefix = include_bytes(&[prefix.to_path_buf()])?.remove(0);
    let entries = crate::repo::tree::read_entries(repo, snap, &label).await?;
    let out: Vec<Entry> = entries.into_iter().filter(|e| under(&e.path, &prefix)).collect();
    if out.is_empty() && !prefix.is_empty() {
        return Err(RepoError::Target { path: String::from_utf8_lossy(&prefix).into_owned(), reason: format!("not in {label}") });
    }
    Ok(out)
}

/// The entries to restore, with hard links whose first name is not restored turned into
/// files of their own.
pub(super) fn select(entries: Vec<Entry>, include: &[Vec<u8>]) -> Result<Vec<Entry>> {
    let files: HashMap<Vec<u8>, Entry> = entries.iter().filter(|e| e.kind() == Kind::File).map(|e| (e.path.clone(), e.clone())).collect();
    let mut out = Vec::new();
    let mut restored: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for mut e in entries {
        if !include.is_empty() && !include.iter().any(|i| under(&e.path, i)) {
            continue;
        }
        safe_path(&e.path)?;
        if e.kind() == Kind::Hardlink && !restored.contains(&e.link) {
            let first = files.get(&e.link).ok_or_else(|| RepoError::Target { path: String::from_utf8_lossy(&e.path).into_owned(), reason: "hard link to a file the snapshot does not hold".into() })?;
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
                return Err(RepoError::Target { path: p.display().to_string(), reason: "is a symlink; refusing to restore below it".into() });
            }
            Ok(m) if !m.is_dir() => return Err(RepoError::Target { path: p.display().to_string(), reason: "is not a directory".into() }),
            Ok(_) => {}
            Err(_) => {
                fs::create_dir(&p).map_err(|e| RepoError::Target { path: p.display().to_string(), reason: e.to_string() })?;
            }
        }
    }
    Ok(())
}

pub async fn run(repo: Arc<Repository>, id: &Id, snap: &Snapshot, opts: TreeRestoreOptions, progress: Arc<dyn Progress>) -> Result<TreeRestoreReport> {
    let start = Instant::now();
    let label = format!("snapshot {} ({})", &id.to_hex()[..8], snap.name);
    let include = include_bytes(&opts.include)?;
    let entries = crate::repo::tree::read_entries(&repo, snap, &label).await?;
    let plan = select(entries, &include)?;
    if plan.is_empty() {
        return Err(RepoError::Target { path: opts.include.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "), reason: format!("not in {label}") });
    }
    fs::create_dir_all(&opts.target).map_err(|e| RepoError::Target { path: opts.target.display().to_string(), reason: e.to_string() })?;
    if !opts.overwrite {
        for e in &plan {
            let p = opts.target.join(safe_path(&e.path)?);
            if let Ok(m) = fs::symlink_metadata(&p)
                && !(e.kind() == Kind::Dir && m.is_dir()) {
                    return Err(RepoError::Target { path: p.display().to_string(), reason: "already exists; nothing was restored (use --overwrite to replace)".into() });
                }
        }
    }
    let contents: Vec<Content> = plan.iter().map(|e| e.content.clone()).collect();
    let (mut reader, rx) = OrderedReader::new(repo.clone(), &label);
    let target = opts.target.clone();
    let writer = tokio::task::spawn_blocking(move || write_tree(&target, plan, rx, opts.overwrite, &*progress));
    let fed = feed(&mut reader, &contents).await;
    drop(reader);
    let mut report = writer.await.map_err(|e| RepoError::Internal(e.to_string()))??;
    fed?;
    report.snapshot = Some(SnapshotInfo::new(id, snap));
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

pub(super) async fn feed(reader: &mut OrderedReader, contents: &[Content]) -> Result<()> {
    for c in contents {
        let more = match c {
            Content::None => true,
            Content::Inline(v) => reader.feed(&v.iter().map(|c| c.0).collect::<Vec<Id>>()).await?,
            Content::Lists(l) => reader.feed_lists(l).await?,
        };
        if !more {
            break; // the writer stopped; its error is the one reported
        }
    }
    Ok(())
}

/// Chunks in the order the feeder sends them.
pub(super) struct Chunks {
    rx: mpsc::Receiver<Vec<Vec<u8>>>,
    group: std::vec::IntoIter<Vec<u8>>,
}

impl Chunks {
    pub(super) fn new(rx: mpsc::Receiver<Vec<Vec<u8>>>) -> Chunks {
        Chunks { rx, group: Vec::new().into_iter() }
    }

    pub(super) fn next(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Some(c) = self.group.next() {
                return Ok(c);
            }
            match self.rx.blocking_recv() {
                Some(g) => self.group = g.into_iter(),
                None => return Err(RepoError::Internal("the chunk feeder stopped early".into())),
            }
        }
    }

    /// Writes `len` bytes of content; sparse extents are written at their offsets.
    fn copy_to(&mut self, e: &Entry, out: &mut (impl Write + Seek), progress: &dyn Progress) -> Result<u64> {
        let extents = if e.flags & FLAG_SPARSE != 0 { e.extents.clone() } else { vec![(0, e.size)] };
        let mut pending: Vec<u8> = Vec::new();
        let mut at = 0usize;
        for (off, len) in extents {
            out.seek(SeekFrom::Start(off)).map_err(RepoError::Output)?;
            let mut left = len as usize;
            while left > 0 {
                if at == pending.len() {
                    pending = self.next()?;
                    at = 0;
                }
                let n = left.min(pending.len() - at);
                out.write_all(&pending[at..at + n]).map_err(RepoError::Output)?;
                progress.bytes_done(n as u64);
                at += n;
                left -= n;
            }
        }
        if at != pending.len() {
            return Err(RepoError::Corrupt { object: String::from_utf8_lossy(&e.path).into_owned(), reason: "stored content is longer than the file".into() });
        }
        Ok(e.data_len())
    }
}

fn target_err(p: &Path) -> impl Fn(io::Error) -> RepoError + '_ {
    move |e| RepoError::Target { path: p.display().to_string(), reason: e.to_string() }
}

fn write_tree(target: &Path, plan: Vec<Entry>, rx: mpsc::Receiver<Vec<Vec<u8>>>, overwrite: bool, progress: &dyn Progress) -> Result<TreeRestoreReport> {
    let mut chunks = Chunks { rx, group: Vec::new().into_iter() };
    let mut r = TreeRestoreReport::default();
    let mut dirs = Vec::new();
    for e in plan {
        let rel = safe_path(&e.path)?;
        check_parents(target, &rel)?;
        let p = target.join(&rel);
        let existing = fs::symlink_metadata(&p).ok();
        if let Some(m) = &existing
            && !(e.kind() == Kind::Dir && m.is_dir()) {
                if !overwrite {
                    return Err(RepoError::Target { path: p.display().to_string(), reason: "appeared during the restore; not replaced".into() });
                }
                if m.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) }.map_err(target_err(&p))?;
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
                let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&p).map_err(target_err(&p))?;
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
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.link), &p).map_err(target_err(&p))?;
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
        && let Err(err) = fs::set_permissions(p, fs::Permissions::from_mode(e.mode)) {
            warn("mode", err);
        }
    if let Err(err) = fsmeta::set_mtime(p, e.mtime_ns) {
        warn("mtime", err);
    }
}

/// Writes one file of a tree snapshot (holes as zeros) to `out`.
pub async fn run_file<W: Write + Send + 'static>(repo: Arc<Repository>, id: &Id, snap: &Snapshot, path: &Path, out: W, progress: Arc<dyn Progress>) -> Result<TreeRestoreReport> {
    let start = Instant::now();
    let label = format!("snapshot {} ({})", &id.to_hex()[..8], snap.name);
    let want = include_bytes(&[path.to_path_buf()])?.remove(0);
    let entries = crate::repo::tree::read_entries(&repo, snap, &label).await?;
    let not_found = || RepoError::Target { path: path.display().to_string(), reason: format!("not in {label}") };
    let mut e = entries.iter().find(|e| e.path == want).cloned().ok_or_else(not_found)?;
    if e.kind() == Kind::Hardlink {
        e = entries.iter().find(|f| f.path == e.link && f.kind() == Kind::File).cloned().ok_or_else(not_found)?;
    }
    if e.kind() != Kind::File {
        return Err(RepoError::Target { path: path.display().to_string(), reason: format!("is a {:?}, not a file: restore it with --target DIR", e.kind()).to_lowercase() });
    }
    let (mut reader, rx) = OrderedReader::new(repo.clone(), &label);
    let e2 = e.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut chunks = Chunks { rx, group: Vec::new().into_iter() };
        let mut out = ZeroFill { out, pos: 0 };
        let n = chunks.copy_to(&e2, &mut out, &*progress)?;
        out.seek(SeekFrom::Start(e2.size)).map_err(RepoError::Output)?;
        out.out.flush().map_err(RepoError::Output)?;
        Ok(n)
    });
    let fed = feed(&mut reader, std::slice::from_ref(&e.content)).await;
    drop(reader);
    let bytes = writer.await.map_err(|e| RepoError::Internal(e.to_string()))??;
    fed?;
    Ok(TreeRestoreReport { snapshot: Some(SnapshotInfo::new(id, snap)), files: 1, bytes, seconds: start.elapsed().as_secs_f64(), ..Default::default() })
}

/// A forward-only writer whose seeks past the end write zeros (holes on a pipe).
struct ZeroFill<W: Write> {
    out: W,
    pos: u64,
}

impl<W: Write> Write for ZeroFill<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Seek for ZeroFill<W> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Start(at) = to else { return Err(io::Error::other("only forward seeks")) };
        if at < self.pos {
            return Err(io::Error::other("backward seek"));
        }
        let zeros = vec![0u8; 64 << 10];
        while self.pos < at {
            let n = ((at - self.pos) as usize).min(zeros.len());
            self.out.write_all(&zeros[..n])?;
            self.pos += n as u64;
        }
        Ok(self.pos)
    }
}
