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
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::fsmeta;
use crate::format::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Content, Entry, Kind, walk_order};
use crate::ops::SnapshotInfo;
use crate::repo::tree::Entries;
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
    /// Entries left out because they cannot be made: a hard link to a first name the
    /// snapshot lacks (written by versions that linked to a file they could not read). The
    /// rest is restored; the command exits 3.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_restored: Vec<String>,
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

/// Hands `each` the entries at or below `prefix` (all for an empty prefix), in catalog order;
/// returns how many there were.
pub async fn list(
    repo: &Arc<Repository>,
    id: &Id,
    snap: &Snapshot,
    prefix: &Path,
    mut each: impl FnMut(&Entry) -> Result<()>,
) -> Result<u64> {
    let label = crate::ops::snapshot_label(id, snap);
    let prefix = include_bytes(&[prefix.to_path_buf()])?.remove(0);
    let mut entries = Entries::open(repo, snap, &label)?;
    let mut n = 0;
    while let Some(e) = entries.next().await? {
        if under(&e.path, &prefix) {
            each(&e)?;
            n += 1;
        }
    }
    if n == 0 && !prefix.is_empty() {
        return Err(RepoError::Target {
            path: String::from_utf8_lossy(&prefix).into_owned(),
            reason: format!("not in {label}"),
        });
    }
    Ok(n)
}

/// The entries a restore, an export or a copy writes, found by a first pass over the catalog
/// and kept in an unlinked temporary file, so that nothing is written before every path was
/// checked and a tree of millions of files is not held in memory.
pub(super) struct Plan {
    path: PathBuf,
    input: BufReader<fs::File>,
    /// Entries selected.
    pub(super) entries: u64,
    /// The selected entries are in walk order (a backup's catalog; not an imported tar's), so a
    /// directory's contents end where the next entry is not below it.
    ordered: bool,
    /// First names of hard links, for links whose first name is not restored: the link is
    /// written as a file of its own with the first name's content.
    firsts: HashMap<Vec<u8>, Option<Entry>>,
}

fn plan_err(path: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Cache { path: path.display().to_string(), reason: format!("restore plan: {e}") }
}

/// Reads the catalog of `snap`, keeps the entries at or below `include` (all if empty), checks
/// each stored path for safety and with `check`, and spools them. A hard link whose first name
/// is left out gets that name's entry (read in a second pass, only when there are such links).
pub(super) async fn plan(
    repo: &Arc<Repository>,
    snap: &Snapshot,
    label: &str,
    include: &[Vec<u8>],
    mut check: impl FnMut(&Entry) -> Result<()>,
) -> Result<Plan> {
    let included = |p: &[u8]| include.is_empty() || include.iter().any(|i| under(p, i));
    let mut out = super::Catalog::create(crate::ops::scratch_dir(repo))?;
    let mut entries = Entries::open(repo, snap, label)?;
    let (mut n, mut ordered) = (0, true);
    let mut last: Option<Vec<u8>> = None;
    let mut firsts: HashMap<Vec<u8>, Option<Entry>> = HashMap::new();
    while let Some(e) = entries.next().await? {
        if !included(&e.path) {
            continue;
        }
        safe_path(&e.path)?;
        check(&e)?;
        if e.kind() == Kind::Hardlink && !included(&e.link) {
            firsts.entry(e.link.clone()).or_default();
        }
        ordered &= last.as_ref().is_none_or(|l| walk_order(l, &e.path).is_lt());
        out.add(&e)?;
        last = Some(e.path);
        n += 1;
    }
    if !firsts.is_empty() {
        let mut entries = Entries::open(repo, snap, label)?;
        while let Some(e) = entries.next().await? {
            if e.kind() == Kind::File
                && let Some(slot) = firsts.get_mut(&e.path)
            {
                *slot = Some(e);
            }
        }
        // a first name the snapshot lacks: its links stay links to a missing name, which
        // the writer reports as not restored (exit 3), as for a whole-tree restore
        firsts.retain(|_, e| e.is_some());
    }
    let (path, mut input) = out.into_reader()?;
    // the spool is a catalog: its header first
    let mut header = [0u8; crate::format::tree::CATALOG_HEADER_LEN];
    input.read_exact(&mut header).map_err(|err| plan_err(&path, err))?;
    Ok(Plan { path, input, entries: n, ordered, firsts })
}

/// Reads a plan's entries back, in order, turning links to a left-out first name into files.
struct PlanReader {
    path: PathBuf,
    input: BufReader<fs::File>,
    firsts: HashMap<Vec<u8>, Option<Entry>>,
    buf: Vec<u8>,
}

impl PlanReader {
    fn next(&mut self) -> Result<Option<Entry>> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(plan_err(&self.path, e)),
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > crate::format::tree::MAX_ENTRY {
            return Err(plan_err(&self.path, "entry length out of bounds"));
        }
        self.buf.resize(n, 0);
        self.input.read_exact(&mut self.buf).map_err(|e| plan_err(&self.path, e))?;
        let mut e = Entry::decode(&self.buf).map_err(|e| plan_err(&self.path, e))?;
        if e.kind() == Kind::Hardlink
            && let Some(Some(first)) = self.firsts.get(&e.link)
        {
            let path = std::mem::take(&mut e.path);
            e = first.clone();
            e.path = path;
        }
        Ok(Some(e))
    }
}

/// Chunk ids of consecutive small files are fetched together, up to this many.
const FEED_IDS: usize = 4096;
/// Entries queued between the feeder and the writer. The feeder fetches a batch of small
/// files' chunks before it has queued more than half of this, so the writer never waits for
/// chunks of an entry the feeder holds back.
const ENTRY_QUEUE: usize = 1024;

/// Sends the plan's entries to `tx` and fetches their contents, in the same order.
async fn feed_plan(
    repo: &Repository,
    reader: &mut OrderedReader,
    mut plan: PlanReader,
    tx: mpsc::Sender<Option<Entry>>,
    label: &str,
) -> Result<()> {
    let (mut ids, mut pending) = (Vec::new(), 0usize);
    while let Some(e) = plan.next()? {
        // the writer takes exactly a file's length from the chunks: chunks that say otherwise
        // would leave the two out of step, so they are refused here
        let declared = |total: u64| {
            if total == e.data_len() {
                return Ok(());
            }
            Err(RepoError::Corrupt {
                object: format!("{} in {label}", String::from_utf8_lossy(&e.path)),
                reason: format!("its chunks hold {total} bytes, its entry {}", e.data_len()),
            })
        };
        let lists = match &e.content {
            Content::None => None,
            Content::Inline(v) => {
                declared(v.iter().map(|c| u64::from(c.1)).sum())?;
                ids.extend(v.iter().map(|c| c.0));
                None
            }
            Content::Lists(l) => {
                // summed a list at a time, and read again as they are fed below: a large
                // file's lists (36 bytes a chunk) are never all in memory at once
                let mut total = 0u64;
                for id in l {
                    let list = crate::repo::tree::read_list(repo, id, label).await?;
                    total += list.iter().map(|c| u64::from(c.1)).sum::<u64>();
                }
                declared(total)?;
                Some(l.clone())
            }
        };
        if lists.is_some() && !ids.is_empty() {
            if !reader.feed(&std::mem::take(&mut ids)).await? {
                return Ok(());
            }
            pending = 0;
        }
        if tx.send(Some(e)).await.is_err() {
            return Ok(()); // the writer stopped; its error is the one reported
        }
        pending += 1;
        if let Some(l) = lists
            && !reader.feed_lists(&l).await?
        {
            return Ok(());
        }
        if ids.len() >= FEED_IDS || pending >= ENTRY_QUEUE / 2 {
            if !reader.feed(&std::mem::take(&mut ids)).await? {
                return Ok(());
            }
            pending = 0;
        }
    }
    if !ids.is_empty() && !reader.feed(&ids).await? {
        return Ok(());
    }
    // the end, said explicitly: a writer that sees the queue close without it stops with an
    // error instead of finishing a shorter tree or tar stream
    let _ = tx.send(None).await;
    Ok(())
}

/// The entries of a plan as the feeder sends them, for a blocking thread.
pub(super) struct PlanEntries(mpsc::Receiver<Option<Entry>>);

impl PlanEntries {
    /// The next entry, `None` after the last; an error if the feeder stopped before the end
    /// (its own error is reported by [`read_plan`] or the copy's commit).
    pub(super) fn next(&mut self) -> Result<Option<Entry>> {
        match self.0.blocking_recv() {
            Some(e) => Ok(e),
            None => Err(RepoError::WorkerStopped("restore feeder")),
        }
    }
}

/// Runs `consume` on a blocking thread over the plan's entries and their chunks, fetched
/// concurrently. The feeder's error (a missing or damaged chunk) is reported first.
pub(super) async fn read_plan<T: Send + 'static>(
    repo: &Arc<Repository>,
    label: &str,
    plan: Plan,
    consume: impl FnOnce(PlanEntries, Chunks) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (fed, entries, chunks) = spawn_plan_feed(repo, label, plan);
    let consumed = tokio::task::spawn_blocking(move || consume(entries, chunks))
        .await
        .map_err(RepoError::from)?;
    fed.await.map_err(RepoError::from)??;
    consumed
}

/// Starts the feeder of a plan: the entries come out of the receiver, their chunks out of
/// [`Chunks`], in the same order.
pub(super) fn spawn_plan_feed(
    repo: &Arc<Repository>,
    label: &str,
    plan: Plan,
) -> (tokio::task::JoinHandle<Result<()>>, PlanEntries, Chunks) {
    let (mut reader, rx) = OrderedReader::new(repo.clone(), label);
    let (tx, entries) = mpsc::channel(ENTRY_QUEUE);
    let plan =
        PlanReader { path: plan.path, input: plan.input, firsts: plan.firsts, buf: Vec::new() };
    let (label, repo) = (label.to_string(), repo.clone());
    let task = tokio::spawn(async move { feed_plan(&repo, &mut reader, plan, tx, &label).await });
    (task, PlanEntries(entries), Chunks::new(rx))
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
    let target = opts.target.clone();
    let overwrite = opts.overwrite;
    // nothing is written before every entry was checked
    let plan = plan(&repo, snap, &label, &include, |e| {
        let p = target.join(safe_path(&e.path)?);
        if !overwrite
            && let Ok(m) = fs::symlink_metadata(&p)
            && replaces(e, &m)
        {
            return Err(RepoError::Target {
                path: p.display().to_string(),
                reason: "already exists; nothing was restored (use --overwrite to replace)".into(),
            });
        }
        Ok(())
    })
    .await?;
    if plan.entries == 0 {
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
    let target_err = |e: std::io::Error| RepoError::Target {
        path: opts.target.display().to_string(),
        reason: e.to_string(),
    };
    fs::create_dir_all(&opts.target).map_err(target_err)?;
    // opened before anything is written: see FsSync
    let flush = crate::fsutil::FsSync::open(&opts.target).map_err(target_err)?;
    let ordered = plan.ordered;
    let mut report = read_plan(&repo, &label, plan, move |entries, chunks| {
        write_tree(&target, entries, ordered, chunks, overwrite, &*progress)
    })
    .await?;
    // a restore reports success only once what it wrote would survive a power loss
    tokio::task::spawn_blocking(move || flush.sync()).await.map_err(RepoError::from)?.map_err(
        |e| RepoError::Target {
            path: opts.target.display().to_string(),
            reason: format!("restored, but flushing it to disk failed: {e}"),
        },
    )?;
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

/// Writes the entries under `target`. A directory's metadata is applied once its contents are
/// written: when the next entry is not below it if the entries are in walk order (`ordered`;
/// memory then holds the directories above the current entry), else at the end.
fn write_tree(
    target: &Path,
    mut entries: PlanEntries,
    ordered: bool,
    mut chunks: Chunks,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<TreeRestoreReport> {
    let mut r = TreeRestoreReport::default();
    // directories whose metadata is still to be applied, outermost first
    let mut dirs: Vec<(PathBuf, Entry)> = Vec::new();
    while let Some(e) = entries.next()? {
        while ordered && dirs.last().is_some_and(|(_, d)| !under(&e.path, &d.path)) {
            if let Some((p, d)) = dirs.pop() {
                apply_meta(&p, &d, &mut r.warnings);
            }
        }
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
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&p)
                    .map_err(target_err(&p))?;
                let mut f = crate::fsutil::WritebackFile::new(f);
                r.bytes += chunks.copy_to(&e, &mut f, progress)?;
                f.file().set_len(e.size).map_err(target_err(&p))?;
                r.files += 1;
            }
            Kind::Hardlink => {
                let first_rel = safe_path(&e.link)?;
                let first = target.join(&first_rel);
                if let Err(err) = fs::symlink_metadata(&first) {
                    // not restored before this link: the snapshot lacks it (see the report)
                    r.not_restored.push(format!(
                        "{}: a hard link to {}, which the snapshot does not hold: {err}",
                        p.display(),
                        first.display()
                    ));
                    continue;
                }
                // the first name's parents are checked as every entry's are: `link()` would
                // follow a symlink among them out of the target
                check_parents(target, &first_rel)?;
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
    // the rest last, deepest first, so their times are not disturbed by their contents
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
        && let Err(err) = fsmeta::set_mode(p, e.mode)
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
    let not_found = || RepoError::Target {
        path: path.display().to_string(),
        reason: format!("not in {label}"),
    };
    let mut e = find(&repo, snap, &label, |e| e.path == want).await?.ok_or_else(not_found)?;
    if e.kind() == Kind::Hardlink {
        let first = std::mem::take(&mut e.link);
        e = find(&repo, snap, &label, |f| f.path == first && f.kind() == Kind::File)
            .await?
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

/// The first entry of the catalog that `hit` accepts.
async fn find(
    repo: &Arc<Repository>,
    snap: &Snapshot,
    label: &str,
    hit: impl Fn(&Entry) -> bool,
) -> Result<Option<Entry>> {
    let mut entries = Entries::open(repo, snap, label)?;
    while let Some(e) = entries.next().await? {
        if hit(&e) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}
