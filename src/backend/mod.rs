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
pub use throttle::{Throttle, ThrottledBackend, parse_rate};

use async_trait::async_trait;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the repository root, with `/` separators.
    pub path: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: no space left on the device")]
    NoSpace { path: String },
    #[error("{path}: permission denied")]
    PermissionDenied { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: read {got} bytes, expected {expected}")]
    ShortRead { path: String, expected: u64, got: u64 },
    #[error("{path}: injected fault")]
    Injected { path: String },
    /// A storage service answered with an error (after the retries for transient ones).
    #[error("{path}: {message}")]
    Remote { path: String, message: String, temporary: bool },
    /// The repository URL or the service configuration is unusable.
    #[error("{location}: {message}")]
    Config { location: String, message: String },
}

impl BackendError {
    pub fn from_io(path: &str, e: std::io::Error) -> Self {
        let path = path.to_string();
        match e.kind() {
            std::io::ErrorKind::NotFound => BackendError::NotFound { path },
            std::io::ErrorKind::StorageFull => BackendError::NoSpace { path },
            std::io::ErrorKind::PermissionDenied => BackendError::PermissionDenied { path },
            _ => BackendError::Io { path, source: e },
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
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
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), BackendError>;
    async fn get(&self, path: &str) -> Result<Vec<u8>, BackendError>;
    /// `len` bytes from `offset`; fewer bytes available is `ShortRead`.
    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError>;
    /// Every object whose path starts with `prefix` (a directory such as `"data/"`), recursively.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;
    /// The size of an object, or `None` when it does not exist.
    async fn stat(&self, path: &str) -> Result<Option<u64>, BackendError>;
    async fn delete(&self, path: &str) -> Result<(), BackendError>;
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
