//! Recognises compressed input, which deduplicates poorly: gzip and zstd streams, and
//! `pg_dump -Fc` archives written with compression (the default without `-Z0`).

use std::io::Read;
use std::sync::{Arc, Mutex};

const HEAD: usize = 32;

/// Passes reads through and keeps the first bytes for [`advice`].
pub struct Sniff<R> {
    inner: R,
    head: Arc<Mutex<Vec<u8>>>,
}

impl<R: Read> Sniff<R> {
    /// Wraps `inner`; the returned buffer fills with the first 32 bytes read.
    pub fn new(inner: R) -> (Self, Arc<Mutex<Vec<u8>>>) {
        let head = Arc::new(Mutex::new(Vec::with_capacity(HEAD)));
        (Sniff { inner, head: head.clone() }, head)
    }
}

impl<R: Read> Read for Sniff<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut h = self.head.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() < HEAD {
            let take = (HEAD - h.len()).min(n);
            h.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

/// Compression of a pg_dump custom-format archive, from its header: archive versions up to
/// 1.14 store the zlib level as an int (sign byte + `int_size` bytes, little-endian; -1 means
/// the default level), 1.15 and later store the algorithm as one byte (0 = none).
fn pg_dump_compressed(h: &[u8]) -> Option<bool> {
    if !h.starts_with(b"PGDMP") || h.len() < 12 {
        return None;
    }
    let (vmaj, vmin, int_size) = (h[5], h[6], h[8] as usize);
    if (vmaj, vmin) >= (1, 15) {
        return Some(h[11] != 0);
    }
    let digits = h.get(12..12 + int_size)?;
    Some(digits.iter().any(|b| *b != 0))
}

/// A one-line warning when the stream's first bytes show compressed data.
pub fn advice(head: &[u8]) -> Option<String> {
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some("the input is gzip-compressed, which deduplicates poorly: back up the uncompressed stream (drop `| gzip`; for pg_dump -Fc add -Z0)".into());
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some("the input is zstd-compressed, which deduplicates poorly: back up the uncompressed stream".into());
    }
    if pg_dump_compressed(head) == Some(true) {
        return Some("the input is a compressed pg_dump archive, which deduplicates poorly: run pg_dump -Fc with -Z0 (repo compresses each chunk itself)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_compressed_inputs() {
        // headers of real pg_dump 15 archives: default compression (-1) and -Z0
        let fc = [b'P', b'G', b'D', b'M', b'P', 1, 14, 0, 4, 8, 1, 1, 1, 0, 0, 0, 0, 0x2b];
        let fc0 = [b'P', b'G', b'D', b'M', b'P', 1, 14, 0, 4, 8, 1, 0, 0, 0, 0, 0, 0, 0x2b];
        assert!(advice(&fc).is_some_and(|a| a.contains("-Z0")));
        assert_eq!(advice(&fc0), None);
        // archive 1.15 (PostgreSQL 16): one algorithm byte
        assert!(advice(&[b'P', b'G', b'D', b'M', b'P', 1, 15, 0, 4, 8, 1, 1]).is_some());
        assert_eq!(advice(&[b'P', b'G', b'D', b'M', b'P', 1, 15, 0, 4, 8, 1, 0]), None);
        assert!(advice(&[0x1f, 0x8b, 8, 0]).is_some_and(|a| a.contains("gzip")));
        assert_eq!(advice(b"--\n-- PostgreSQL database dump\n"), None);
        assert_eq!(advice(b"PGDMP"), None, "too short to tell");
    }
}
