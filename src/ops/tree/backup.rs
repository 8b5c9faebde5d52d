//! `repo backup [--root DIR] PATH...`: a file tree as one snapshot (kind 2).
//!
//! The walk is sequential and sorted (depth-first, names by bytes); file contents are read in
//! parallel: small files in batches (read and chunked on rayon, then hashed, deduplicated and
//! compressed together), large and sparse files one at a time as a stream. A file whose size,
//! mtime, ctime and inode match the previous snapshot of the same name keeps that snapshot's
//! chunks and is not read. The catalog is stored last, as the snapshot's content stream.
//!
//! Memory does not grow with the number of files: the previous snapshot's catalog is read
//! alongside the walk (both are in walk order, so finding a file's previous version is a
//! merge), and the new catalog is written to an unlinked temporary file until it is stored.
//! What stays in memory per file is only for files with several hard links.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use super::Catalog;
use super::fsmeta::{self, Owners};
use crate::codec::chunker::chunk_slice;
use crate::format::Id;
use crate::format::snapshot::SnapshotKind;
use crate::format::tree::{
    Content, Entry, FLAG_CHANGED, FLAG_LISTS, FLAG_SPARSE, Kind, walk_order,
};
use crate::ops::SnapshotInfo;
use crate::repo::delta::Predecessor;
use crate::repo::tree::Entries;
use crate::repo::{
    BackupStats, ChunkSink, Progress, RepoError, Repository, Result, SnapshotFilter, SnapshotMeta,
    list_snapshots,
};

/// Files up to this size are read whole, in parallel batches.
const SMALL_FILE: u64 = 8 << 20;
const BATCH_BYTES: u64 = 32 << 20;
const BATCH_FILES: usize = 1024;

/// What a tree backup reads and how it can be stopped.
pub struct TreeOptions {
    /// Paths are stored relative to this directory (`/` by default).
    pub root: PathBuf,
    /// What to back up, relative to `root` (a leading `/` is ignored); `.` is all of it.
    pub paths: Vec<PathBuf>,
    /// Set to stop the walk (SIGINT, SIGTERM); the backup then fails with `Interrupted`.
    pub cancel: Arc<AtomicBool>,
}

/// What the walk of a tree backup found (flattened into its report).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TreeCounts {
    /// Regular files met, hard links to an earlier name included.
    pub files: u64,
    /// Directories stored, the parents of the given paths included.
    pub dirs: u64,
    /// Symlinks, device nodes and FIFOs stored (sockets are skipped).
    pub other: u64,
    /// Files whose content was read (not reused from the parent snapshot).
    pub files_read: u64,
    /// Files whose content was reused from the parent snapshot without reading them (same path,
    /// size, mtime, ctime and inode).
    pub files_unchanged: u64,
    /// Bytes of those unchanged files.
    pub bytes_unchanged: u64,
    /// Files that vanished or could not be read (not in the snapshot), and metadata that could
    /// not be (the file stored without it): exit code 3.
    pub errors: Vec<String>,
    /// Files that changed while they were read: stored as read, flagged in the catalog.
    pub changed: Vec<String>,
    /// The snapshot whose unchanged files were reused, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// What `repo backup PATH...` stored (JSON output).
#[derive(Debug, serde::Serialize)]
pub struct TreeBackupReport {
    /// The snapshot committed.
    pub snapshot: SnapshotInfo,
    /// What the walk found (flattened into the report).
    #[serde(flatten)]
    pub tree: TreeCounts,
    /// Totals of the backup (flattened into the report).
    #[serde(flatten)]
    pub stats: BackupStats,
    /// Wall-clock duration of the backup, seconds.
    pub seconds: f64,
}

/// Makes `p` a relative path of normal components (a leading `/` is dropped); `.` gives an
/// empty path (the whole root). `..` is refused.
pub fn relative(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RepoError::Source {
                    path: p.display().to_string(),
                    reason: "paths to back up may not contain `..`".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Backs up `opts.paths` under `opts.root` as one tree snapshot, reusing unchanged files of the
/// newest tree snapshot of the same name. Unreadable files are reported in [`TreeCounts::errors`]
/// and left out; the snapshot still commits.
pub async fn run(
    repo: Arc<Repository>,
    opts: TreeOptions,
    meta: SnapshotMeta,
    progress: Arc<dyn Progress>,
) -> Result<TreeBackupReport> {
    let mut rels: Vec<PathBuf> = opts.paths.iter().map(|p| relative(p)).collect::<Result<_>>()?;
    rels.sort();
    rels.dedup();
    // a path inside another one given is already covered
    let rels: Vec<PathBuf> = rels
        .iter()
        .filter(|p| !rels.iter().any(|q| q != *p && p.starts_with(q)))
        .cloned()
        .collect();
    for r in &rels {
        let abs = opts.root.join(r);
        std::fs::symlink_metadata(&abs).map_err(|e| RepoError::Source {
            path: abs.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let start = Instant::now();
    let (parent_id, parent) = parent_files(&repo, &meta.name).await?;
    let catalog = Catalog::create(crate::ops::scratch_dir(&repo))?;
    // the walker's counts, kept also when the walk fails (the body's result is the catalog)
    let counts = Arc::new(std::sync::Mutex::new(TreeCounts::default()));
    let c2 = counts.clone();
    let body = move |sink: &mut ChunkSink| {
        let counts = TreeCounts { parent: parent_id, ..Default::default() };
        let mut w = Walker {
            sink,
            root: opts.root,
            parent,
            owners: Owners::load(),
            links: HashMap::new(),
            queue: vec![],
            queued_bytes: 0,
            catalog,
            counts,
            cancel: opts.cancel,
            progress: &*progress,
            size: 0,
            entries: 0,
        };
        let r = w.walk_all(&rels);
        let Walker { catalog, size, entries, counts, .. } = w;
        *c2.lock().unwrap_or_else(|p| p.into_inner()) = counts;
        r?;
        let lists = catalog.store(sink)?;
        Ok(crate::repo::Content { lists, size, chunks: entries })
    };
    let (id, snap, stats) =
        super::commit_tree(repo, SnapshotKind::Tree, meta, body, async { Ok(()) }).await?;
    let tree = std::mem::take(&mut *counts.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(TreeBackupReport {
        snapshot: SnapshotInfo::new(&id, &snap),
        tree,
        stats,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The newest tree snapshot named `name`, whose files are compared with the walk.
async fn parent_files(repo: &Arc<Repository>, name: &str) -> Result<(Option<String>, Parent)> {
    let filter = SnapshotFilter { name: Some(name.to_string()), tags: vec![] };
    let snaps = list_snapshots(repo, &filter).await?;
    let Some((id, snap)) = snaps
        .into_iter()
        .filter(|(_, s)| s.kind == SnapshotKind::Tree && s.name == name)
        .max_by_key(|(_, s)| s.time_ns)
    else {
        return Ok((None, Parent::default()));
    };
    let label = crate::ops::snapshot_label(&id, &snap);
    let entries = Entries::open(repo, &snap, &label)?;
    Ok((Some(id.short()), Parent { entries: Some(entries), ..Default::default() }))
}

/// The parent snapshot's catalog, read alongside the walk. Both are in walk order
/// ([`walk_order`]), so a file's previous version is found by reading forward: memory holds
/// one entry, not a map of every file.
#[derive(Default)]
struct Parent {
    entries: Option<Entries>,
    /// The next entry the walk has not passed yet.
    ahead: Option<Entry>,
    /// The path of the last entry read, to notice a catalog out of walk order (one imported
    /// from a tar archive): from there on, files are read again.
    last: Option<Vec<u8>>,
}

impl Parent {
    /// The parent's regular file at `path`, unless it changed while it was read. Paths must
    /// be asked for in walk order; an error reading the parent fails the backup.
    fn file(&mut self, path: &[u8]) -> Result<Option<Entry>> {
        loop {
            let Some(ahead) = &self.ahead else {
                let Some(entries) = &mut self.entries else { return Ok(None) };
                let Some(e) = entries.blocking_next()? else {
                    self.entries = None;
                    return Ok(None);
                };
                if self.last.as_ref().is_some_and(|l| walk_order(l, &e.path).is_ge()) {
                    self.entries = None;
                    return Ok(None);
                }
                self.last = Some(e.path.clone());
                self.ahead = Some(e);
                continue;
            };
            match walk_order(&ahead.path, path) {
                std::cmp::Ordering::Less => self.ahead = None,
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Equal => {
                    return Ok(self
                        .ahead
                        .take()
                        .filter(|e| e.kind() == Kind::File && e.flags & FLAG_CHANGED == 0));
                }
            }
        }
    }
}

/// An entry waiting for the current batch of small files to be read.
struct Queued {
    entry: Entry,
    /// Set for a file whose content is still to be read.
    read: Option<PathBuf>,
    /// The chunks of the file's version in the parent, for delta bases.
    previous: Vec<Id>,
}

struct Walker<'a, 's> {
    sink: &'a mut ChunkSink<'s>,
    root: PathBuf,
    parent: Parent,
    owners: Owners,
    /// (dev, ino) of files with several links → the path stored first.
    links: HashMap<(u64, u64), Vec<u8>>,
    queue: Vec<Queued>,
    queued_bytes: u64,
    catalog: Catalog,
    counts: TreeCounts,
    cancel: Arc<AtomicBool>,
    progress: &'a dyn Progress,
    size: u64,
    entries: u64,
}

fn mtime_ns(m: &Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec())
}
fn ctime_ns(m: &Metadata) -> i64 {
    m.ctime().saturating_mul(1_000_000_000).saturating_add(m.ctime_nsec())
}

/// The file was modified between the walk's lstat and the end of reading it.
fn changed_since(before: &Metadata, after: &Metadata) -> bool {
    before.len() != after.len()
        || mtime_ns(before) != mtime_ns(after)
        || ctime_ns(before) != ctime_ns(after)
}

/// Reads exactly `want` bytes (zero-padded if the file shrank); true if it was short.
fn read_exact_padded(r: &mut impl Read, want: u64, out: &mut Vec<u8>) -> io::Result<bool> {
    let got = r.take(want).read_to_end(out)? as u64;
    if got < want {
        out.resize(out.len() + (want - got) as usize, 0);
    }
    Ok(got < want)
}

/// Opens a file the walk found regular, without following a symlink or blocking on a FIFO
/// that replaced it since: another user swapping in a symlink to a file only this process
/// may read must not get that file's content stored under their name.
fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other("replaced by a symlink during the backup"),
            _ => e,
        })?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(io::Error::other("no longer a regular file (replaced during the backup)"));
    }
    Ok((f, md))
}

/// A small file's chunks, and whether it changed while it was read.
type SmallFile = (Vec<Vec<u8>>, bool);

/// Reads a small file whole and chunks it.
fn read_small(
    path: &Path,
    entry: &Entry,
    gear: &crate::codec::chunker::Gear,
    params: crate::codec::chunker::ChunkerParams,
) -> io::Result<SmallFile> {
    let (mut f, before) = open_regular(path)?;
    let mut data = Vec::with_capacity(entry.size as usize);
    let short = read_exact_padded(&mut f, entry.size, &mut data)?;
    let after = f.metadata()?;
    let changed = short
        || changed_since(&before, &after)
        || before.ino() != entry.ino
        || before.len() != entry.size
        || mtime_ns(&before) != entry.mtime_ns;
    Ok((chunk_slice(&data, gear, params), changed))
}

/// Reads the data extents of a file in order, zero-padding whatever is missing.
struct ExtentReader {
    file: File,
    /// Checked on every read, so that SIGINT/SIGTERM stop a large file promptly.
    cancel: Arc<AtomicBool>,
    extents: std::vec::IntoIter<(u64, u64)>,
    current: Option<(u64, u64)>,
    short: bool,
}

impl Read for ExtentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("interrupted"));
        }
        loop {
            let Some((off, len)) = self.current.or_else(|| self.extents.next()) else {
                return Ok(0);
            };
            if len == 0 {
                self.current = None;
                continue;
            }
            let n = (len.min(buf.len() as u64)) as usize;
            let mut got = self.file.read_at(&mut buf[..n], off)?;
            if got == 0 {
                self.short = true;
                buf[..n].fill(0);
                got = n;
            }
            self.current = Some((off + got as u64, len - got as u64));
            return Ok(got);
        }
    }
}

impl Walker<'_, '_> {
    fn walk_all(&mut self, rels: &[PathBuf]) -> Result<()> {
        let mut emitted_dirs: Vec<PathBuf> = Vec::new();
        for rel in rels {
            // the directories above a given path, with their metadata, as tar stores them
            let mut above = PathBuf::new();
            let comps: Vec<_> = rel.components().collect();
            for c in comps.iter().take(comps.len().saturating_sub(1)) {
                above.push(c);
                if !emitted_dirs.contains(&above) {
                    emitted_dirs.push(above.clone());
                    let abs = self.root.join(&above);
                    // followed: a symlink on the way (`/home` -> `/data/home`) is stored as
                    // the directory it leads to, with that directory's owner and mode, not
                    // as a directory with the symlink's 0777
                    let md = std::fs::metadata(&abs).map_err(|e| RepoError::Source {
                        path: abs.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    if !md.is_dir() {
                        return Err(RepoError::Source {
                            path: abs.display().to_string(),
                            reason: "not a directory".into(),
                        });
                    }
                    // its xattrs and ACLs too: those of the directory, not of the symlink
                    let real = std::fs::canonicalize(&abs).unwrap_or_else(|_| abs.clone());
                    let e = self.base_entry(above.as_os_str().as_bytes(), &real, &md, Kind::Dir);
                    self.counts.dirs += 1;
                    self.push(e, None)?;
                }
            }
            if rel.as_os_str().is_empty() {
                let root = self.root.clone();
                self.walk_children(&root, &[])?;
            } else {
                let abs = self.root.join(rel);
                self.walk(rel.as_os_str().as_bytes().to_vec(), &abs)?;
            }
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(RepoError::Interrupted);
        }
        self.flush()
    }

    fn error(&mut self, path: &Path, e: &io::Error) {
        let what = if e.kind() == io::ErrorKind::NotFound {
            "vanished during the backup".to_string()
        } else {
            e.to_string()
        };
        self.counts.errors.push(format!("{}: {what} (not in the snapshot)", path.display()));
    }

    fn base_entry(&mut self, rel: &[u8], abs: &Path, md: &Metadata, kind: Kind) -> Entry {
        let xattrs = match fsmeta::get_xattrs(abs) {
            Ok(x) => x,
            Err(e) => {
                self.counts.errors.push(format!(
                    "{}: extended attributes: {e} (stored without them)",
                    abs.display()
                ));
                vec![]
            }
        };
        Entry {
            kind: Some(kind),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime_ns: mtime_ns(md),
            ctime_ns: ctime_ns(md),
            ino: md.ino(),
            size: if kind == Kind::File { md.len() } else { 0 },
            rdev: md.rdev(),
            path: rel.to_vec(),
            user: self.owners.user(md.uid()),
            group: self.owners.group(md.gid()),
            xattrs,
            content: if kind == Kind::File { Content::Inline(vec![]) } else { Content::None },
            ..Default::default()
        }
    }

    fn walk_children(&mut self, abs: &Path, rel: &[u8]) -> Result<()> {
        let mut names: Vec<std::ffi::OsString> = match std::fs::read_dir(abs) {
            Ok(rd) => {
                let mut v = Vec::new();
                for d in rd {
                    match d {
                        Ok(d) => v.push(d.file_name()),
                        Err(e) => self.error(abs, &e),
                    }
                }
                v
            }
            Err(e) => {
                self.error(abs, &e);
                return Ok(());
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(n.as_bytes());
            self.walk(child, &abs.join(&n))?;
        }
        Ok(())
    }

    fn walk(&mut self, rel: Vec<u8>, abs: &Path) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(RepoError::Interrupted);
        }
        if rel.len() > crate::format::tree::MAX_PATH {
            self.counts.errors.push(format!(
                "{}: path longer than {} bytes, skipped",
                abs.display(),
                crate::format::tree::MAX_PATH
            ));
            return Ok(());
        }
        let md = match std::fs::symlink_metadata(abs) {
            Ok(m) => m,
            Err(e) => {
                self.error(abs, &e);
                return Ok(());
            }
        };
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            return Ok(()); // sockets are recreated by their servers, as tar does
        };
        let mut e = self.base_entry(&rel, abs, &md, kind);
        match kind {
            Kind::Dir => {
                self.counts.dirs += 1;
                self.push(e, None)?;
                return self.walk_children(abs, &rel);
            }
            Kind::Symlink => match std::fs::read_link(abs) {
                Ok(t) => e.link = t.as_os_str().as_bytes().to_vec(),
                Err(err) => {
                    self.error(abs, &err);
                    return Ok(());
                }
            },
            Kind::File => return self.file(e, abs, &md),
            _ => {}
        }
        self.counts.other += 1;
        self.push(e, None)
    }

    fn file(&mut self, mut e: Entry, abs: &Path, md: &Metadata) -> Result<()> {
        self.counts.files += 1;
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                e.kind = Some(Kind::Hardlink);
                e.link = first.clone();
                e.size = 0;
                e.content = Content::None;
                return self.push(e, None);
            }
            self.links.insert((md.dev(), md.ino()), e.path.clone());
        }
        self.size += e.size;
        let parent = self.parent.file(&e.path)?;
        if let Some(p) = &parent
            && p.size == e.size
            && p.mtime_ns == e.mtime_ns
            && p.ctime_ns == e.ctime_ns
            && p.ino == e.ino
            && self.reusable(&p.content)?
        {
            e.flags = p.flags;
            e.extents = p.extents.clone();
            e.content = p.content.clone();
            self.counts.files_unchanged += 1;
            self.counts.bytes_unchanged += e.size;
            return self.push(e, None);
        }
        self.counts.files_read += 1;
        let sparse = md.blocks() * 512 < md.len();
        if e.size <= SMALL_FILE && !sparse {
            self.queued_bytes += e.size;
            let previous = match parent.map(|p| p.content) {
                Some(Content::Inline(v)) => v.iter().map(|c| c.0).collect(),
                _ => vec![],
            };
            self.queue.push(Queued { entry: e, read: Some(abs.to_path_buf()), previous });
            return self.queued();
        }
        self.flush()?;
        match self.read_large(&mut e, abs, sparse, parent)? {
            Ok(()) => self.push(e, None),
            Err(err) => {
                self.size -= e.size;
                self.error(abs, &err);
                self.unread_link_target(&e.path);
                Ok(())
            }
        }
    }

    /// The first name of a hard-linked file could not be read: later names are read
    /// themselves instead of pointing at a path the snapshot does not hold.
    fn unread_link_target(&mut self, path: &[u8]) {
        self.links.retain(|_, first| first.as_slice() != path);
    }

    /// The chunk sequence of a file's previous version, for delta bases; `None` when there
    /// is none or it cannot be read (the file's chunks are then stored whole).
    fn predecessor(&self, c: &Content) -> Option<Predecessor> {
        match c {
            Content::Inline(v) => Some(Predecessor::from_chunks(v.clone())),
            Content::Lists(l) => {
                let read = Predecessor::from_lists(self.sink.repo(), l, "the parent's file");
                tokio::runtime::Handle::current().block_on(read).ok()
            }
            Content::None => None,
        }
    }

    fn reusable(&self, c: &Content) -> Result<bool> {
        match c {
            Content::Inline(v) => self.sink.all_stored(&v.iter().map(|c| c.0).collect::<Vec<Id>>()),
            Content::Lists(l) => self.sink.all_stored(l),
            Content::None => Ok(false),
        }
    }

    /// Streams a large or sparse file into the sink and fills the entry's content. The inner
    /// error is the file's (it is skipped); the outer one fails the backup.
    fn read_large(
        &mut self,
        e: &mut Entry,
        abs: &Path,
        sparse: bool,
        parent: Option<Entry>,
    ) -> Result<io::Result<()>> {
        let opened = open_regular(abs).and_then(|(f, before)| {
            let extents =
                if sparse { fsmeta::data_extents(&f, e.size)? } else { vec![(0, e.size)] };
            Ok((f, before, extents))
        });
        let (file, before, extents) = match opened {
            Ok(x) => x,
            Err(err) => return Ok(Err(err)),
        };
        if sparse {
            e.flags |= FLAG_SPARSE;
            e.extents = extents.clone();
        }
        let mut reader = ExtentReader {
            file,
            cancel: self.cancel.clone(),
            extents: extents.into_iter(),
            current: None,
            short: false,
        };
        let params = self.sink.repo().chunker().for_tree_files();
        // relation files change in place, page by page: a changed chunk is stored as a delta
        // against the chunk at the same place in the parent's version of the file
        let pred = parent.and_then(|p| self.predecessor(&p.content));
        self.sink.set_predecessor(pred);
        let stored = self.sink.store_stream(&mut reader, params, self.progress);
        self.sink.set_predecessor(None);
        let lists = match stored {
            Ok(l) => l,
            Err(RepoError::Input(err)) => return Ok(Err(err)),
            Err(other) => return Err(other),
        };
        let after = match reader.file.metadata() {
            Ok(m) => m,
            Err(err) => return Ok(Err(err)),
        };
        // against the walk's lstat too: a file rewritten between it and the open is read
        // only up to the size the walk saw
        if reader.short
            || changed_since(&before, &after)
            || before.ino() != e.ino
            || before.len() != e.size
            || mtime_ns(&before) != e.mtime_ns
        {
            e.flags |= FLAG_CHANGED;
            self.counts.changed.push(abs.display().to_string());
        }
        e.flags |= FLAG_LISTS;
        e.content = Content::Lists(lists);
        Ok(Ok(()))
    }

    fn push(&mut self, e: Entry, read: Option<PathBuf>) -> Result<()> {
        self.queue.push(Queued { entry: e, read, previous: vec![] });
        self.queued()
    }

    fn queued(&mut self) -> Result<()> {
        if self.queued_bytes >= BATCH_BYTES || self.queue.len() >= BATCH_FILES {
            self.flush()?;
        }
        Ok(())
    }

    /// Reads the queued small files in parallel, stores them, and writes the queued entries
    /// to the catalog in walk order.
    fn flush(&mut self) -> Result<()> {
        let queue = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        let (gear, params) =
            (&self.sink.repo().gear(), self.sink.repo().chunker().for_tree_files());
        let read: Vec<Option<io::Result<SmallFile>>> = queue
            .par_iter()
            .map(|q| q.read.as_ref().map(|p| read_small(p, &q.entry, gear, params)))
            .collect();
        let mut ok_files = Vec::new();
        let mut keep = Vec::with_capacity(queue.len());
        let mut unread = std::collections::HashSet::new();
        for (q, r) in queue.into_iter().zip(read) {
            match r {
                None => keep.push((q.entry, false)),
                Some(Ok((chunks, changed))) => {
                    let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                    self.progress.bytes_done(n);
                    ok_files.push((chunks, q.previous));
                    let mut e = q.entry;
                    if changed {
                        e.flags |= FLAG_CHANGED;
                        self.counts.changed.push(q.read.unwrap_or_default().display().to_string());
                    }
                    keep.push((e, true));
                }
                Some(Err(err)) => {
                    let p = q.read.unwrap_or_default();
                    self.size -= q.entry.size;
                    self.error(&p, &err);
                    self.unread_link_target(&q.entry.path);
                    unread.insert(q.entry.path);
                }
            }
        }
        let mut stored = self.sink.store_files(ok_files)?.into_iter();
        for (mut e, was_read) in keep {
            if e.kind() == Kind::Hardlink && unread.contains(&e.link) {
                // queued before its first name failed: a link to nothing would stop a restore
                self.counts.errors.push(format!(
                    "{}: not stored: a hard link to {}, which could not be read",
                    String::from_utf8_lossy(&e.path),
                    String::from_utf8_lossy(&e.link)
                ));
                continue;
            }
            if was_read {
                e.content = Content::Inline(stored.next().unwrap_or_default());
            }
            self.catalog.add(&e)?;
            self.entries += 1;
        }
        Ok(())
    }
}
