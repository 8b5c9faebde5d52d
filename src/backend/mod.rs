//! Layer 2b: storage. A small async trait with honest guarantees, and its implementations.

mod fault;
mod local;
mod mem;
mod remote;
mod throttle;

pub use fault::FaultBackend;
pub use local::LocalBackend;
pub use mem::MemBackend;
pub use remote::{RemoteBackend, RemoteUrl};
pub use throttle::{RateError, Throttle, ThrottledBackend, parse_rate};

use std::time::SystemTime;

use async_trait::async_trait;

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the repository root, with `/` separators.
    pub path: String,
    /// Size of the object in bytes.
    pub size: u64,
}

/// Storage errors, each naming the object (or location) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist; callers decide whether that is damage or expected (a lease or
    /// record removed meanwhile).
    #[error("{path}: not found")]
    NotFound {
        /// Path of the object, relative to the repository.
        path: String,
    },
    /// The disk or quota is full: nothing more can be stored until space is freed.
    #[error("{path}: no space left on the device")]
    NoSpace {
        /// Path of the object being written.
        path: String,
    },
    /// The storage refused access: check the credentials or file permissions.
    #[error("{path}: permission denied")]
    PermissionDenied {
        /// Path of the object (prefixed with the location for remote backends).
        path: String,
    },
    /// Any other local I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The object or directory concerned.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A ranged read returned fewer bytes than asked: the object is shorter than an index or footer
    /// says (truncated or damaged).
    #[error("{path}: read {got} bytes, expected {expected} (the object is cut short or damaged)")]
    ShortRead {
        /// Path of the object, relative to the repository.
        path: String,
        /// Bytes asked for.
        expected: u64,
        /// Bytes actually returned.
        got: u64,
    },
    /// A write refused by [`FaultBackend`] to simulate a crash at that point (tests only).
    #[error("{path}: injected fault")]
    Injected {
        /// Path of the object that was not written or deleted.
        path: String,
    },
    /// A storage service answered with an error (after the retries for transient ones).
    #[error("{path}: {message}")]
    Remote {
        /// Location and path of the object.
        path: String,
        /// The service's message and innermost cause, with anything that may hold secrets cut.
        message: String,
        /// Whether the service called the error transient (timeout, 5xx, throttling): worth
        /// retrying later.
        temporary: bool,
    },
    /// The repository URL or the service configuration is unusable.
    #[error("{location}: {message}")]
    Config {
        /// The redacted URL (no user, password or query options).
        location: String,
        /// What is wrong with it.
        message: String,
    },
}

impl BackendError {
    /// Maps an I/O error to the typed variants an operator can act on (not found, no space,
    /// permission denied), else [`BackendError::Io`].
    pub fn from_io(path: &str, e: std::io::Error) -> Self {
        let path = path.to_string();
        match e.kind() {
            std::io::ErrorKind::NotFound => BackendError::NotFound { path },
            std::io::ErrorKind::StorageFull => BackendError::NoSpace { path },
            std::io::ErrorKind::PermissionDenied => BackendError::PermissionDenied { path },
            // writes refused as a whole, like a key without write access: readers go on
            // without a lease (a read-only NFS export or bind mount)
            std::io::ErrorKind::ReadOnlyFilesystem => {
                BackendError::PermissionDenied { path: format!("{path} (read-only file system)") }
            }
            _ => BackendError::Io { path, source: e },
        }
    }
    /// True for [`BackendError::NotFound`]: lets callers treat a vanished object as expected.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }
    /// True when the error shows the object itself is missing or short (damage); false when
    /// the storage failed to answer (an outage, a permission, a full disk), which says
    /// nothing about the object: a check must not call it broken for that.
    pub fn is_damage(&self) -> bool {
        matches!(self, BackendError::NotFound { .. } | BackendError::ShortRead { .. })
    }
}

/// The bytes of a range read in the pieces they arrived in: a network body comes in frames,
/// and joining them into one buffer would copy (and page in) every byte once more before the
/// reader copies each blob out of it anyway.
#[derive(Debug, Default)]
pub struct RangeBytes {
    pieces: Vec<bytes::Bytes>,
    len: usize,
}

impl RangeBytes {
    /// Bytes in all pieces.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bytes were read.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of `len` bytes from `from` (within [`Self::len`]), spanning pieces as needed.
    pub fn copy_range(&self, from: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut skip = from;
        for p in &self.pieces {
            if out.len() == len {
                break;
            }
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            let take = (p.len() - skip).min(len - out.len());
            out.extend_from_slice(&p[skip..skip + take]);
            skip = 0;
        }
        out
    }
}

impl From<Vec<u8>> for RangeBytes {
    fn from(v: Vec<u8>) -> Self {
        let len = v.len();
        RangeBytes { pieces: vec![v.into()], len }
    }
}

impl FromIterator<bytes::Bytes> for RangeBytes {
    fn from_iter<I: IntoIterator<Item = bytes::Bytes>>(iter: I) -> Self {
        let pieces: Vec<bytes::Bytes> = iter.into_iter().filter(|p| !p.is_empty()).collect();
        let len = pieces.iter().map(|p| p.len()).sum();
        RangeBytes { pieces, len }
    }
}

/// Object storage as the repository needs it. Paths are relative, `/`-separated.
///
/// Guarantees every implementation keeps:
/// * `put` is atomic: a reader sees the whole object or no object, also after a crash.
///   When `put` returns, the object is durable.
/// * Objects are immutable: the repository only writes names derived from the content or
///   random, so a `put` to an existing name carries the same bytes.
/// * `list` returns only complete objects (never temporary files of an unfinished `put`).
/// * `delete` of a missing object is not an error.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stores `data` under `path` atomically and durably; writing an existing name again is allowed
    /// (it carries the same bytes).
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), BackendError>;
    /// The whole object's bytes; a missing object is [`BackendError::NotFound`].
    async fn get(&self, path: &str) -> Result<Vec<u8>, BackendError>;
    /// [`Self::get`] into `buf` (emptied first), for a caller that reads many objects in turn
    /// and reuses one buffer's memory: a fresh buffer per object is paged in and zeroed by the
    /// kernel each time (a fresh pod's hundreds of MB of index files).
    async fn get_into(&self, path: &str, buf: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        drop(buf);
        self.get(path).await
    }
    /// `len` bytes from `offset`; fewer bytes available is `ShortRead`.
    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError>;
    /// [`Self::get_range`] for a reader that copies parts out of the range: the bytes stay in
    /// the pieces they arrived in.
    async fn get_range_pieces(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeBytes, BackendError> {
        Ok(self.get_range(path, offset, len).await?.into())
    }
    /// Every object whose path starts with `prefix` (a directory such as `"data/"`), recursively.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;
    /// The size of an object, or `None` when it does not exist.
    async fn stat(&self, path: &str) -> Result<Option<u64>, BackendError>;
    /// Removes an object; a missing one is not an error.
    async fn delete(&self, path: &str) -> Result<(), BackendError>;
    /// The temporary files of `put`s that never finished (their process was killed), last
    /// written before `before` by the storage's clock; [`Backend::delete`] removes one. Backends
    /// whose `put` never leaves such files have none.
    async fn list_abandoned(&self, before: SystemTime) -> Result<Vec<ObjectInfo>, BackendError> {
        let _ = before;
        Ok(Vec::new())
    }
    /// A human-readable location for messages.
    fn location(&self) -> String;
}

/// Opens the backend a repository URL names: a plain path (or `file://`) is the local
/// filesystem, `s3://`, `sftp://`, `webdav://` and every other scheme the storage library
/// offers go through [`RemoteBackend`].
pub fn from_url(url: &str) -> Result<std::sync::Arc<dyn Backend>, BackendError> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme == "file" {
            return Ok(std::sync::Arc::new(LocalBackend::new(rest)));
        }
        return Ok(std::sync::Arc::new(RemoteBackend::open(url)?));
    }
    Ok(std::sync::Arc::new(LocalBackend::new(url)))
}

#[cfg(test)]
mod tests {
    use super::RangeBytes;

    #[test]
    fn range_bytes_copy_across_pieces() {
        let whole: Vec<u8> = (0..100u8).collect();
        let pieces: RangeBytes =
            [&whole[..7], &whole[7..7], &whole[7..50], &whole[50..51], &whole[51..]]
                .into_iter()
                .map(bytes::Bytes::copy_from_slice)
                .collect();
        assert_eq!(pieces.len(), 100);
        for (from, len) in
            [(0, 100), (0, 7), (3, 10), (7, 43), (49, 2), (50, 1), (60, 40), (99, 1), (5, 0)]
        {
            assert_eq!(pieces.copy_range(from, len), &whole[from..from + len], "{from}+{len}");
        }
        let one = RangeBytes::from(whole.clone());
        assert_eq!(one.copy_range(10, 90), &whole[10..]);
        assert!(RangeBytes::default().is_empty());
    }
}
