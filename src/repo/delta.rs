//! Delta encoding of new chunks: a chunk that differs a little from the one it replaced is
//! stored as a zstd frame against that chunk's plaintext (`format-spec/pack.md`, "Delta
//! blobs").
//!
//! Base selection is by locality: walking the new stream in order beside the chunk sequence
//! of its previous version (the previous snapshot of the same name, or a tree file's version
//! in the parent snapshot), a new chunk's base is the old chunk at the same place (a changed
//! row or page turns exactly that chunk into a new one). No index of similar chunks is
//! needed. Chains are at most two levels deep (the writer's `WRITE_DEPTH`): a candidate that
//! is itself a delta of a delta gives the whole chunk its chain ends in.

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
/// A delta at most 1/TINY_DELTA of the chunk is kept without trying plain compression.
const TINY_DELTA: usize = 128;
/// A delta at most 1/CLEAR_SHARE of the stored size of its base chain's whole chunk is kept
/// without trying plain compression.
const CLEAR_SHARE: usize = 4;

/// The chunk sequence of the previous snapshot of a name (or of a file's previous version),
/// and how the new stream lines up with it.
///
/// The alignment is an offset shift: each chunk the new stream deduplicates against fixes
/// where the new stream stands in the old one, and a new chunk's candidate base is the old
/// chunk covering the middle of the new chunk's shifted byte range. Following byte offsets
/// rather than counting chunks keeps the alignment through long runs of new chunks whose cut
/// points moved (a table whose every page changed), where counting drifts off by a chunk.
pub struct Predecessor {
    seq: Vec<Id>,
    /// Start offset of each chunk of `seq`, and the total length at the end.
    starts: Vec<u64>,
    pos: HashMap<Id, u32>,
    /// Old offset minus new offset, as of the last deduplicated chunk.
    shift: i64,
    /// Offset of the next chunk of the new stream.
    offset: u64,
}

impl Predecessor {
    /// The newest stream snapshot named `name`, if any. Memory: about 90 bytes per chunk of
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

    /// The chunk sequence these content lists describe (a stream, a stream file of a server
    /// snapshot, or a large file of a tree).
    pub async fn from_lists(repo: &Repository, lists: &[Id], label: &str) -> Result<Predecessor> {
        let mut seq = Vec::new();
        for l in lists {
            let list = decode_list(&super::read_blob(repo, l, label).await?)
                .map_err(|e| RepoError::format(format!("content list of {label}"), e))?;
            seq.extend(list);
        }
        Ok(Predecessor::from_chunks(seq))
    }

    /// The sequence of these chunks (id, length), in order.
    pub fn from_chunks(chunks: Vec<(Id, u32)>) -> Predecessor {
        let mut starts = Vec::with_capacity(chunks.len() + 1);
        let mut at = 0u64;
        let mut seq = Vec::with_capacity(chunks.len());
        for (id, len) in chunks {
            starts.push(at);
            at += u64::from(len);
            seq.push(id);
        }
        starts.push(at);
        let pos = seq.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
        Predecessor { seq, starts, pos, shift: 0, offset: 0 }
    }

    /// Advances over one chunk of the new stream, in order: `stored` if it deduplicated.
    /// Returns the candidate base for a new chunk.
    pub fn step(&mut self, id: &Id, len: u32, stored: bool) -> Option<Id> {
        let here = self.offset;
        self.offset += u64::from(len);
        if stored {
            if let Some(p) = self.pos.get(id) {
                self.shift = self.starts[*p as usize] as i64 - here as i64;
            }
            return None;
        }
        let middle = here as i64 + i64::from(len / 2) + self.shift;
        let middle = u64::try_from(middle).ok()?;
        // the last chunk starting at or before the middle, if the middle is inside the sequence
        let i = self.starts.partition_point(|s| *s <= middle).checked_sub(1)?;
        self.seq.get(i).copied()
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

/// A delta base as the writer found it.
#[derive(Clone)]
pub struct Base {
    /// The base chunk's id (the delta names it).
    pub id: Id,
    /// Its plaintext.
    pub plain: Arc<Vec<u8>>,
    /// The stored size of the whole chunk its chain ends in (the chunk itself when it is
    /// stored whole): what a chunk like this one costs compressed on its own, about.
    pub whole: usize,
}

/// Compresses `chunk` against `base` and, unless the delta is clearly smaller, on its own;
/// keeps the delta when it is at most three quarters of the plain encoding.
pub fn encode(level: i32, chunk: Vec<u8>, base: Option<Base>) -> Encoded {
    let delta =
        base.and_then(|b| Some((b.id, b.whole, compress_delta(level, &b.plain, &chunk).ok()?)));
    let Some((b, whole, d)) = delta else {
        let (flags, data) = compress(level, chunk);
        return Encoded { flags, data, base: None };
    };
    // a delta under 1/128 of the chunk, or under a quarter of what the base chain's whole
    // chunk is stored in, is kept without compressing the chunk on its own: the first costs
    // at worst its own few hundred bytes over that, and the second would need the chunk to
    // compress three times better than its predecessor before plain compression won (a wrong
    // guess, such as text written where random bytes were, costs a delta about as large as
    // plain compression that keeps its base alive). Each saves a compression per changed
    // chunk (measured: most of the delta writer's extra time on text, benches/RESULTS.md).
    let cost = d.len() + 32;
    if cost * TINY_DELTA <= chunk.len() || cost * CLEAR_SHARE <= whole {
        return Encoded { flags: FLAG_DELTA, data: d, base: Some(b) };
    }
    let (flags, data) = compress(level, chunk);
    if cost * 4 <= data.len() * KEEP_QUARTERS {
        Encoded { flags: FLAG_DELTA, data: d, base: Some(b) }
    } else {
        Encoded { flags, data, base: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn a_new_chunk_gets_the_old_chunk_at_the_same_place_as_its_base() {
        let mut p = Predecessor::from_chunks((1..=5).map(|n| (id(n), 100)).collect());
        assert_eq!(p.step(&id(9), 100, false), Some(id(1)), "a new first chunk replaced the first");
        assert_eq!(p.step(&id(2), 100, true), None);
        assert_eq!(p.step(&id(8), 100, false), Some(id(3)), "2 matched, so 8 replaced 3");
        assert_eq!(p.step(&id(7), 100, false), Some(id(4)), "two changed chunks in a row");
        assert_eq!(p.step(&id(5), 100, true), None);
        assert_eq!(p.step(&id(6), 100, false), None, "past the end of the previous stream");
    }

    #[test]
    fn moved_cut_points_do_not_shift_the_bases_of_the_chunks_after_them() {
        let mut p = Predecessor::from_chunks((1..=6).map(|n| (id(n), 100)).collect());
        // the first old chunk came back as two new ones; the rest keep their places
        assert_eq!(p.step(&id(10), 40, false), Some(id(1)));
        assert_eq!(p.step(&id(11), 60, false), Some(id(1)));
        assert_eq!(p.step(&id(12), 100, false), Some(id(2)));
        // 50 bytes inserted before chunk 4 (seen by its match), then new chunks again
        assert_eq!(p.step(&id(13), 150, false), Some(id(3)));
        assert_eq!(p.step(&id(4), 100, true), None);
        assert_eq!(p.step(&id(14), 100, false), Some(id(5)), "aligned by the match, not the count");
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
        let b = |plain: &Vec<u8>, whole| {
            Some(Base { id: id(1), plain: Arc::new(plain.clone()), whole })
        };
        let e = encode(3, near, b(&base, 0));
        assert_eq!((e.flags, e.base), (FLAG_DELTA, Some(id(1))));
        assert!(e.data.len() < 100, "{}", e.data.len());
        // text unrelated to the base: the delta is no smaller than plain compression
        let mut y = 99u64;
        let text: Vec<u8> = (0..16384)
            .map(|_| {
                y ^= y << 13;
                y ^= y >> 7;
                y ^= y << 17;
                b"abcdefghijklmnop"[(y >> 60) as usize]
            })
            .collect();
        let e = encode(3, text.clone(), b(&base, 0));
        assert_eq!(e.base, None, "a chunk that compresses as well alone is not a delta");
        // a delta under 1/128 of the chunk is kept without trying plain compression: at
        // worst it costs its own size (here a run of zeros, tiny either way)
        let zeros = vec![0u8; 16384];
        let e = encode(3, zeros, b(&base, 0));
        assert_eq!(e.base, Some(id(1)));
        assert!((e.data.len() + 32) * TINY_DELTA <= 16384, "{}", e.data.len());
        // a delta under a quarter of the base chain's stored whole chunk is kept without
        // trying plain compression: the unrelated text above, against a base whose chain
        // ends in a whole chunk stored in 1 MB, is taken as a delta
        let e = encode(3, text, b(&base, 1 << 20));
        assert_eq!(e.base, Some(id(1)));
    }
}
