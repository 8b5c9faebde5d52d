//! An in-memory backend for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Backend, BackendError, ObjectInfo};

/// Objects in a map in memory, gone with the process: for tests.
#[derive(Default)]
pub struct MemBackend {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // a panicking test thread cannot leave the map half-updated: every update is one insert
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Replaces an object's bytes: for tests that damage a repository.
    pub fn tamper(&self, path: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(v) = self.map().get_mut(path) {
            f(v);
        }
    }
}

#[async_trait]
impl Backend for MemBackend {
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.map().insert(path.to_string(), data);
        Ok(())
    }
    async fn get(&self, path: &str) -> Result<Vec<u8>, BackendError> {
        self.map().get(path).cloned().ok_or_else(|| BackendError::NotFound { path: path.into() })
    }
    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        let m = self.map();
        let v = m.get(path).ok_or_else(|| BackendError::NotFound { path: path.into() })?;
        let end = offset.saturating_add(len);
        if end > v.len() as u64 {
            return Err(BackendError::ShortRead {
                path: path.into(),
                expected: len,
                got: (v.len() as u64).saturating_sub(offset),
            });
        }
        Ok(v[offset as usize..end as usize].to_vec())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        Ok(self
            .map()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo { path: k.clone(), size: v.len() as u64 })
            .collect())
    }
    async fn stat(&self, path: &str) -> Result<Option<u64>, BackendError> {
        Ok(self.map().get(path).map(|v| v.len() as u64))
    }
    async fn delete(&self, path: &str) -> Result<(), BackendError> {
        self.map().remove(path);
        Ok(())
    }
    fn location(&self) -> String {
        "memory".into()
    }
}
