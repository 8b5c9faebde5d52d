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

/// A temporary name beside `path` (hidden, unique per process and call).
pub fn temp_beside(path: &Path) -> std::io::Result<PathBuf> {
    temp_with_prefix(path, ".repo-tmp-")
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
