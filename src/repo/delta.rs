//! Delta encoding of new chunks: a chunk that differs a little from the one it replaced is
//! stored as a zstd frame against that chunk's plaintext (`format-spec/pack.md`, "Delta
//! blobs").
//!
//! Base selection is by stream locality: walking the new stream in order beside the chunk
//! sequence of the previous snapshot of the same name, a new chunk's base is the chunk that
//! followed the last chunk this backup deduplicated against (a changed row turns exactly that
//! chunk into a new one). No index of similar chunks is needed. Bases are always full chunks
//! (one level deep): when the candidate is itself stored as a delta, its own base is used.

use std::collections::HashMap;
use std::sync::Arc;

use super::{RepoError, Repository, Result, SnapshotFilter, list_snapshots};
use crate::codec::compress::{compress, compress_delta};
use crate::format::Id;
use crate::format::pack::FLAG_DELTA;
use crate::format::snapshot::SnapshotKind;
use crate::format::stream::decode_list;

/// A delta is kept only if it is at most this share of the plain compressed chunk (in
/// quarters): a smaller saving is not worth a second read on restore.
const KEEP_QUARTERS: usize = 3;

/// The chunk sequence of the previous snapshot of a name, and where the new stream stands in
/// it.
pub struct Predecessor {
    seq: Vec<Id>,
    pos: HashMap<Id, u32>,
    cursor: Option<usize>,
}

impl Predecessor {
    /// The newest stream snapshot named `name`, if any. Memory: about 80 bytes per chunk of
    /// that snapshot.
    pub async fn for_name(repo: &Repository, name: &str) -> Result<Option<Predecessor>> {
        // exact name (the filter's globs would also match other names)
        let filter = SnapshotFilter { name: None, tags: vec![] };
        let Some((id, snap)) = list_snapshots(repo, &filter)
            .await?
            .into_iter()
            .rfind(|(_, s)| s.name == name && s.kind == SnapshotKind::Stream)
        else {
            return Ok(None);
        };
        let label = format!("snapshot {}", id.short());
        Ok(Some(Predecessor::from_lists(repo, &snap.lists, &label).await?))
    }

    /// The chunk sequence these content lists describe (a stream, or one stream file of a
    /// server snapshot).
    pub async fn from_lists(repo: &Repository, lists: &[Id], label: &str) -> Result<Predecessor> {
        let mut seq = Vec::new();
        for l in lists {
            let list = decode_list(&super::read_blob(repo, l, label).await?)
                .map_err(|e| RepoError::format(format!("content list of {label}"), e))?;
            seq.extend(list.into_iter().map(|e| e.0));
        }
        let pos = seq.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
        Ok(Predecessor { seq, pos, cursor: None })
    }

    /// Advances over one chunk of the new stream, in order: `stored` if it deduplicated.
    /// Returns the candidate base for a new chunk.
    pub fn step(&mut self, id: &Id, stored: bool) -> Option<Id> {
        if stored {
            if let Some(p) = self.pos.get(id) {
                self.cursor = Some(*p as usize);
            }
            return None;
        }
        let next = self.cursor.map_or(0, |c| c + 1);
        self.cursor = Some(next);
        self.seq.get(next).copied()
    }
}

/// A new chunk as it goes into a pack.
pub struct Encoded {
    /// `0` raw, `FLAG_ZSTD`, or `FLAG_DELTA` when stored against `base`.
    pub flags: u8,
    /// The blob plaintext to seal: the raw chunk, its zstd frame, or the delta frame.
    pub data: Vec<u8>,
    /// The chunk the delta was made against; `None` unless `flags` is `FLAG_DELTA`.
    pub base: Option<Id>,
}

/// Compresses `chunk` on its own and, given a base, against it; keeps the delta when it is
/// at most three quarters of the plain encoding.
pub fn encode(level: i32, chunk: Vec<u8>, base: Option<(Id, Arc<Vec<u8>>)>) -> Encoded {
    let delta = base.and_then(|(b, plain)| Some((b, compress_delta(level, &plain, &chunk).ok()?)));
    let (flags, data) = compress(level, chunk);
    match delta {
        Some((b, d)) if (d.len() + 32) * 4 <= data.len() * KEEP_QUARTERS => {
            Encoded { flags: FLAG_DELTA, data: d, base: Some(b) }
        }
        _ => Encoded { flags, data, base: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn a_new_chunk_gets_the_chunk_after_the_last_match_as_its_base() {
        let seq = vec![id(1), id(2), id(3), id(4), id(5)];
        let pos = seq.iter().enumerate().map(|(i, x)| (*x, i as u32)).collect();
        let mut p = Predecessor { seq, pos, cursor: None };
        assert_eq!(p.step(&id(9), false), Some(id(1)), "a new first chunk replaced the first");
        assert_eq!(p.step(&id(2), true), None);
        assert_eq!(p.step(&id(8), false), Some(id(3)), "2 matched, so 8 replaced 3");
        assert_eq!(p.step(&id(7), false), Some(id(4)), "two changed chunks in a row");
        assert_eq!(p.step(&id(5), true), None);
        assert_eq!(p.step(&id(6), false), None, "past the end of the previous stream");
    }

    #[test]
    fn a_delta_is_kept_only_when_it_pays() {
        let mut x = 7u64;
        let base: Vec<u8> = (0..16384)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let mut near = base.clone();
        near[100] ^= 1;
        let e = encode(3, near, Some((id(1), Arc::new(base.clone()))));
        assert_eq!((e.flags, e.base), (FLAG_DELTA, Some(id(1))));
        assert!(e.data.len() < 100, "{}", e.data.len());
        let unrelated = vec![0u8; 16384];
        let e = encode(3, unrelated, Some((id(1), Arc::new(base))));
        assert_eq!(e.base, None, "a chunk that compresses well alone is not a delta");
    }
}
