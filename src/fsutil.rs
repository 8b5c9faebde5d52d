//! Durability helpers for local files, each with its contract.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old file or the
/// whole new one, never a part: the bytes go to a temporary name in the same directory, are
/// fsynced, renamed over `path`, and the directory is fsynced so the rename survives a power
/// loss. The temporary file is removed again on error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_via(&temp_beside(path), path, bytes)
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

/// Fsyncs the directory holding `path`, making a rename or create in it durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// A temporary name beside `path` (hidden, unique per process and call).
pub fn temp_beside(path: &Path) -> PathBuf {
    temp_with_prefix(path, ".repo-tmp-")
}

/// A temporary name in the directory of `path`: `prefix`, then the process id and a counter
/// (unique per process and call), then `path`'s file name. A command that cleans up its own
/// leftovers recognises them by `prefix`.
pub fn temp_with_prefix(path: &Path, prefix: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join(format!("{prefix}{}-{n}-{name}", std::process::id()))
}
