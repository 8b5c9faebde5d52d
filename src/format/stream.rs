//! Stream content lists: blobs of type `List` holding the ordered chunks of a stream.
//!
//! ```text
//! count u32, then count entries of 36 bytes: raw_len u32, chunk id 32
//! ```
//! A stream longer than `LIST_MAX_ENTRIES` chunks is described by several list blobs, whose
//! ids the snapshot holds in order; so memory for any stream size stays bounded.

use super::{FormatError, Id, Reader, Writer};

/// Bytes of one list entry: `raw_len` u32 and a 32-byte chunk id.
pub const LIST_ENTRY_LEN: usize = 36;
/// Most entries in one list blob; the writer usually ends lists far earlier, at id-defined
/// boundaries (`format-spec/snapshot.md`).
pub const LIST_MAX_ENTRIES: usize = 16384;

/// The plaintext of a `List` blob from `(chunk id, raw_len in bytes)` pairs in stream order (on
/// disk the length comes first).
pub fn encode_list(entries: &[(Id, u32)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(entries.len() as u32);
    for (id, len) in entries {
        w.u32(*len).id(id);
    }
    w.finish()
}

/// Decodes a `List` blob into `(chunk id, raw_len in bytes)` pairs; each length is at most 64 MiB.
pub fn decode_list(data: &[u8]) -> Result<Vec<(Id, u32)>, FormatError> {
    let mut r = Reader::new(data);
    let n = r.count("list count", LIST_ENTRY_LEN, LIST_MAX_ENTRIES)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u32()?;
        if len > super::pack::MAX_BLOB_LEN {
            return Err(super::invalid("list entry", format!("chunk length {len}")));
        }
        v.push((r.id()?, len));
    }
    r.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_list() {
        let b = encode_list(&[(Id([3; 32]), 65536)]);
        assert_eq!(&b[..8], &[1, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(decode_list(&b).unwrap(), vec![(Id([3; 32]), 65536)]);
        assert!(decode_list(&b[..10]).is_err());
    }
}
