//! Durability helpers for local files, each with its contract.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old file or the
/// whole new one, never a part: the bytes go to a temporary name in the same directory, are
/// fsynced, renamed over `path`, and the directory is fsynced so the rename survives a power
/// loss. The temporary file is removed again on error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_via(&temp_beside(path)?, path, bytes)
}

/// [`write_atomic`] through the temporary name `tmp`, which must be in the same directory as
/// `path` (a rename is atomic only within one file system). For callers that choose their own
/// temporary names: storage shared by several hosts needs names unique across them.
pub fn write_atomic_via(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = (|| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)?;
        sync_dir(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// Creates `dir` and its missing parents, and makes each creation durable (fsyncs the
/// directory that holds each new one): a file renamed into a new directory survives a power
/// loss only if the directory's own entry does. Concurrent callers may race; both succeed,
/// but one that finds the directory already there returns without waiting for the other's
/// fsync of its parent (a window of one fsync in which that caller's file is not yet durable).
pub fn create_dir_all_durable(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    // outermost first: each entry is made durable once the directory holding it is
    for m in missing.iter().rev() {
        sync_dir(m)?;
    }
    Ok(())
}

/// Fsyncs the directory holding `path`, making a rename or create in it durable. File systems
/// that cannot fsync a directory (some FUSE, 9p and SMB mounts answer EINVAL or ENOTSUP) give
/// no stronger promise than the rename itself, and that is not an error.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match std::fs::File::open(dir)?.sync_all() {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The prefix of [`temp_beside`]'s names.
const TEMP_BESIDE: &str = ".repo-tmp-";

/// A temporary name beside `path` (hidden, unique per process and call).
pub fn temp_beside(path: &Path) -> std::io::Result<PathBuf> {
    temp_with_prefix(path, TEMP_BESIDE)
}

/// How long a temporary file stays untouched before its writer is taken for dead (killed,
/// its node lost): far longer than any lease (a live writer refreshes its lease every few
/// minutes and finishes a pack in seconds), so a slow upload is never cut off.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Now less [`ABANDONED_AFTER`]: temporary files untouched since are left by dead writers.
pub fn abandoned_before() -> std::time::SystemTime {
    std::time::SystemTime::now() - ABANDONED_AFTER
}

/// The regular files in `dir` (with `recursive`, in its subdirectories too) whose name
/// `ours` accepts and that nobody touched since `before`, with their sizes: what killed
/// writers left. Best effort: what cannot be read (`lost+found`, a file renamed meanwhile)
/// is passed over.
pub fn abandoned_files(
    dir: &Path,
    recursive: bool,
    before: std::time::SystemTime,
    ours: impl Fn(&str) -> bool,
) -> Vec<(PathBuf, u64)> {
    let (mut out, mut stack) = (Vec::new(), vec![dir.to_path_buf()]);
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && recursive {
                stack.push(e.path());
            } else if ft.is_file()
                && ours(&e.file_name().to_string_lossy())
                && let Ok(m) = e.metadata()
                && m.modified().is_ok_and(|t| t < before)
            {
                out.push((e.path(), m.len()));
            }
        }
    }
    out.sort();
    out
}

/// Removes the temporary files [`temp_beside`] named for `path` that a killed process left
/// (see [`abandoned_files`]). Best effort (another user's file in a shared directory stays);
/// returns how many went.
pub fn remove_stale_temps(path: &Path) -> u64 {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return 0;
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // `.repo-tmp-<pid>-<counter>-<random>-<name>`, for exactly this name
    let ours = |f: &str| {
        f.strip_prefix(TEMP_BESIDE)
            .and_then(|rest| rest.splitn(4, '-').nth(3))
            .is_some_and(|rest| rest == name)
    };
    let left = abandoned_files(dir, false, abandoned_before(), ours);
    left.iter().filter(|(p, _)| std::fs::remove_file(p).is_ok()).count() as u64
}

/// A temporary file removed when this is dropped unless [`TempFile::keep`] took it: an output
/// interrupted by SIGINT/SIGTERM (the command's future is dropped) or failing leaves nothing.
pub struct TempFile(Option<PathBuf>);

impl TempFile {
    /// Takes charge of `path` (created by the caller).
    pub fn new(path: PathBuf) -> Self {
        TempFile(Some(path))
    }
    /// The file's path.
    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    /// Keeps the file (renamed into place by the caller) and gives its path.
    pub fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A temporary name in the directory of `path`: `prefix`, then the process id, a counter and
/// random bytes (unique per call, also between hosts sharing the directory), then `path`'s file
/// name. A command that cleans up its own leftovers recognises them by `prefix`. Fails only
/// when the operating system's random source does.
pub fn temp_with_prefix(path: &Path, prefix: &str) -> std::io::Result<PathBuf> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = [0u8; 6];
    crate::codec::random_bytes(&mut r).map_err(std::io::Error::other)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(dir.join(format!("{prefix}{}-{n}-{}-{name}", std::process::id(), hex::encode(r))))
}

/// Makes everything written to the file system holding `dir` durable (`syncfs`: one call
/// for the data and metadata of every file a restore created, instead of an fsync per file
/// and per directory). Elsewhere than Linux, fsyncs `dir` itself only.
pub fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    FsSync::open(dir)?.sync()
}

/// A handle on the file system holding a directory, opened *before* writing to it and synced
/// after ([`FsSync::sync`]). Linux reports a write-back error to `syncfs` only through a
/// descriptor opened before the error happened (since 5.8): a handle opened after the writes
/// would miss an error of the background write-back the writes themselves started (a full
/// quota on NFS, a failing disk) and a restore would report success.
pub struct FsSync(std::fs::File);

impl FsSync {
    /// Opens `dir` (which must exist).
    pub fn open(dir: &Path) -> std::io::Result<FsSync> {
        std::fs::File::open(dir).map(FsSync)
    }

    /// Flushes the file system (Linux: `syncfs`; elsewhere the directory's own fsync) and
    /// reports any write-back error since [`FsSync::open`].
    pub fn sync(&self) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a file descriptor `self` owns for the whole call.
            if unsafe { libc::syncfs(self.0.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        self.0.sync_all()
    }
}

/// A file being written whose dirty pages are handed to the kernel's writeback as it goes
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: starts the writes, waits for none), every
/// `WRITEBACK_EVERY` bytes and when dropped. A restore of many files in a pod otherwise leaves
/// its page cache dirty until the flusher gets to it, and a cgroup-v1 memory limit counts that
/// cache while its direct reclaim does not write dirty file pages: a restore of 100,000 files
/// inside 64 MiB (its own memory about 40 MB) was once OOM-killed in CI. Measured at the end
/// of that restore: 3–7 MB of its cache still dirty before, 0.1–0.3 MB with this. Nothing is
/// made durable here; errors are ignored (a file system without the call writes back later).
pub struct WritebackFile {
    file: std::fs::File,
    unsubmitted: u64,
}

/// Bytes written to a [`WritebackFile`] between two writeback requests.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl WritebackFile {
    /// Wraps `file`.
    pub fn new(file: std::fs::File) -> Self {
        WritebackFile { file, unsubmitted: 0 }
    }

    /// The file itself (for metadata calls such as `set_len`).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    fn submit(&mut self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a file descriptor this value owns; offset 0 and
            // length 0 mean the whole file.
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        self.unsubmitted = 0;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsubmitted += n as u64;
        if self.unsubmitted >= WRITEBACK_EVERY {
            self.submit();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl std::io::Seek for WritebackFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Drop for WritebackFile {
    fn drop(&mut self) {
        if self.unsubmitted > 0 {
            self.submit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_durable_creates_every_missing_level_and_accepts_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("data").join("ab");
        create_dir_all_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all_durable(&deep).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(create_dir_all_durable(&dir.path().join("file").join("sub")).is_err());
    }

    #[test]
    fn sync_filesystem_flushes_a_directory_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"data").unwrap();
        sync_filesystem(dir.path()).unwrap();
        let e = sync_filesystem(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
