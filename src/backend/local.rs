//! The local filesystem: the default backend. Writes go to a temporary file in the target
//! directory, are fsynced, renamed into place, and the directory is fsynced.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;

use super::{Backend, BackendError, ObjectInfo};

/// Temporary files of unfinished writes start with this; `list` skips them.
pub const TEMP_PREFIX: &str = ".tmp-";

/// The repository in a local directory (or a mounted file system): `put` writes a temporary file,
/// fsyncs it, renames it into place and fsyncs the directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend rooted at `root`; nothing is touched until the first operation.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }
    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(BackendError::Io {
            path: String::new(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

fn put_sync(full: &Path, rel: &str, data: &[u8]) -> Result<(), BackendError> {
    let err = |e| BackendError::from_io(rel, e);
    let dir = full
        .parent()
        .ok_or_else(|| BackendError::from_io(rel, std::io::Error::other("no parent")))?;
    crate::fsutil::create_dir_all_durable(dir).map_err(err)?;
    let mut rnd = [0u8; 8];
    crate::codec::random_bytes(&mut rnd)
        .map_err(|e| BackendError::from_io(rel, std::io::Error::other(e.to_string())))?;
    // random temporary names: several hosts may write to one shared directory
    let tmp = dir.join(format!("{TEMP_PREFIX}{}", hex::encode(rnd)));
    crate::fsutil::write_atomic_via(&tmp, full, data).map_err(err)
}

fn list_sync(root: &Path, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(prefix)];
    while let Some(dir) = stack.pop() {
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(BackendError::from_io(&dir.to_string_lossy(), e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| BackendError::from_io(&dir.to_string_lossy(), e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            // an object deleted between the directory read and its stat (a prune sweeping)
            // is simply not listed, as if the listing had come a moment later
            let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
            let ft = match ent.file_type() {
                Ok(ft) => ft,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(BackendError::from_io(&name, e)),
            };
            if ft.is_dir() {
                stack.push(ent.path());
            } else if ft.is_file() {
                let size = match ent.metadata() {
                    Ok(m) => m.len(),
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(BackendError::from_io(&name, e)),
                };
                let rel = ent
                    .path()
                    .strip_prefix(root)
                    .map(|p| p.to_string_lossy().replace('\\', "/"))
                    .unwrap_or(name);
                out.push(ObjectInfo { path: rel, size });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[async_trait]
impl Backend for LocalBackend {
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), BackendError> {
        let (full, rel) = (self.full(path), path.to_string());
        blocking(move || put_sync(&full, &rel, &data)).await
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, BackendError> {
        let (full, rel) = (self.full(path), path.to_string());
        blocking(move || fs::read(&full).map_err(|e| BackendError::from_io(&rel, e))).await
    }

    async fn get_into(&self, path: &str, mut buf: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        let (full, rel) = (self.full(path), path.to_string());
        blocking(move || {
            let err = |e| BackendError::from_io(&rel, e);
            let mut f = fs::File::open(&full).map_err(err)?;
            buf.clear();
            f.read_to_end(&mut buf).map_err(err)?;
            Ok(buf)
        })
        .await
    }

    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        let (full, rel) = (self.full(path), path.to_string());
        blocking(move || {
            let err = |e| BackendError::from_io(&rel, e);
            let mut f = fs::File::open(&full).map_err(err)?;
            let size = f.metadata().map_err(err)?.len();
            if offset.saturating_add(len) > size {
                return Err(BackendError::ShortRead {
                    path: rel.clone(),
                    expected: len,
                    got: size.saturating_sub(offset),
                });
            }
            f.seek(SeekFrom::Start(offset)).map_err(err)?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf).map_err(err)?;
            Ok(buf)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let (root, prefix) = (self.root.clone(), prefix.to_string());
        blocking(move || list_sync(&root, &prefix)).await
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>, BackendError> {
        let (full, rel) = (self.full(path), path.to_string());
        blocking(move || match fs::metadata(&full) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::from_io(&rel, e)),
        })
        .await
    }

    async fn delete(&self, path: &str) -> Result<(), BackendError> {
        let (full, rel) = (self.full(path), path.to_string());
        blocking(move || match fs::remove_file(&full) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::from_io(&rel, e)),
        })
        .await
    }

    async fn list_abandoned(&self, before: SystemTime) -> Result<Vec<ObjectInfo>, BackendError> {
        let root = self.root.clone();
        blocking(move || {
            let ours = |f: &str| f.starts_with(TEMP_PREFIX);
            let left = crate::fsutil::abandoned_files(&root, true, before, ours);
            Ok(left
                .into_iter()
                .filter_map(|(p, size)| {
                    let rel = p.strip_prefix(&root).ok()?.to_string_lossy().replace('\\', "/");
                    Some(ObjectInfo { path: rel, size })
                })
                .collect())
        })
        .await
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}
