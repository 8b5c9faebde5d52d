//! A backend that stops writing at a chosen point, for crash tests: after `puts_allowed`
//! successful writes every further `put` fails, as if the process had died there. With
//! `count_deletes`, deletes count as writes too (for prune, whose steps are mostly deletes).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;

use super::{Backend, BackendError, ObjectInfo, RangeBytes};

/// Wraps a backend and fails every write after a budget (see the module docs): crash tests stop a
/// command after every possible number of writes.
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    puts_allowed: AtomicI64,
    puts_done: AtomicU64,
    count_deletes: bool,
}

impl FaultBackend {
    /// `puts_allowed < 0` never fails.
    pub fn new(inner: Arc<dyn Backend>, puts_allowed: i64) -> Self {
        FaultBackend {
            inner,
            puts_allowed: AtomicI64::new(puts_allowed),
            puts_done: AtomicU64::new(0),
            count_deletes: false,
        }
    }
    /// Like `new`, but deletes count as writes and fail too once the budget is spent.
    pub fn counting_deletes(inner: Arc<dyn Backend>, writes_allowed: i64) -> Self {
        FaultBackend { count_deletes: true, ..Self::new(inner, writes_allowed) }
    }
    fn spend(&self, path: &str) -> Result<(), BackendError> {
        let allowed = self.puts_allowed.load(Ordering::SeqCst);
        if allowed >= 0 && self.puts_done.fetch_add(1, Ordering::SeqCst) >= allowed as u64 {
            return Err(BackendError::Injected { path: path.into() });
        }
        Ok(())
    }
    /// Writes (and with `counting_deletes`, deletes) attempted so far, failed ones included.
    pub fn puts_done(&self) -> u64 {
        self.puts_done.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Backend for FaultBackend {
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.spend(path)?;
        self.inner.put(path, data).await
    }
    async fn get(&self, path: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.get(path).await
    }
    async fn get_into(&self, path: &str, buf: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        self.inner.get_into(path, buf).await
    }
    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        self.inner.get_range(path, offset, len).await
    }
    async fn get_range_pieces(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeBytes, BackendError> {
        self.inner.get_range_pieces(path, offset, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(prefix).await
    }
    async fn stat(&self, path: &str) -> Result<Option<u64>, BackendError> {
        self.inner.stat(path).await
    }
    async fn delete(&self, path: &str) -> Result<(), BackendError> {
        if self.count_deletes {
            self.spend(path)?;
        }
        self.inner.delete(path).await
    }
    async fn list_abandoned(&self, before: SystemTime) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list_abandoned(before).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}
