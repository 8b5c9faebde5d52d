//! Delta encoding of new chunks: a chunk that differs a little from the one it replaced is
//! stored as a zstd frame against that chunk's plaintext (`format-spec/pack.md`, "Delta
//! blobs").
//!
//! Base selection is by locality: walking the new stream in order beside the chunk sequence
//! of its previous version (the previous snapshot of the same name, or a tree file's version
//! in the parent snapshot), a new chunk's base is the old chunk at the same place (a changed
//! row or page turns exactly that chunk into a new one). Rows that moved elsewhere in their
//! table are found through resemblance sketches (`codec::sketch`, kept in the local cache):
//! the writer keeps the smaller delta of the two bases ([`Delta::smaller`]). Chains are at most four
//! levels deep (the writer's `WRITE_DEPTH`): a candidate that is itself four levels deep
//! gives a level of its chain instead, often the whole chunk it ends in (a restart, kept only
//! while it is small: `RESTART_SHARE`).

use std::collections::HashMap;
use std::sync::Arc;

use super::{RepoError, Repository, Result, SnapshotFilter, list_snapshots};
use crate::codec::compress::{Search, compress, compress_delta_with};
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
/// A restart (a delta against the whole chunk its candidate's chain ends in, because the
/// candidate was as deep as chains go) is kept only while it is at most 1/RESTART_SHARE of
/// that whole chunk's stored size; a larger one is stored whole and starts a new chain.
///
/// A restart carries every change since its whole chunk was stored, so restarts grow with the
/// chain's age while the chain's other deltas stay the size of one hour's changes. Storing
/// the chunk whole costs about its whole size once and resets the age. With restarts every
/// `d` versions, changes of `c` bytes per version and `w` for the whole chunk, the cost per
/// version is lowest when chains restart anew after about `sqrt(2·d·w/c)` versions, when a
/// restart has grown to about `sqrt(2·d·c/w)·w`: 0.37·w for the bench dump's accounts
/// (`w/c` about 60, `d` 4). Measured over 72 hours of the bench workload (benches/RESULTS.md,
/// "Long horizons"): keeping restarts up to 3/4 of the plain size, the growth per hour rose
/// from 3.3 MB in the first twelve hours to about 5 MB after two days.
const RESTART_SHARE: usize = 3;

/// A new chunk whose end lies within this many bytes of an old chunk boundary (where the
/// shift puts it) lines the streams up at that boundary: the chunker cuts at the same
/// content in both, and the rows changed before it moved it by a few bytes. (At least
/// 1/[`SLACK_SHARE`] and at most a sixteenth of the shortest old chunk.)
const SNAP_BYTES: i64 = 256;
/// Chunk lengths within this many bytes of each other match when a lost alignment is
/// searched for (updated rows move: a chunk gains or loses a row or two). (At least
/// 1/[`SLACK_SHARE`] of the shortest old chunk.)
const LENGTH_SLACK: u32 = 256;
/// Larger chunks hold more rows, and more of them move every hour, so a chunk's length
/// changes by more than 256 bytes: with 1 MiB chunks the alignment of the bench dump was
/// lost after the rows inserted into another table (hourly backups with sketch lookups off
/// made 3 to 53 of their 99-100 new chunks deltas; 83-84 with the snap and slack at 1/128 of
/// the shortest chunk, benches/RESULTS.md, "A megabyte per chunk"). Both stay 256 bytes
/// where the shortest old chunk is 32 KiB (the least of the former 128 KiB default); they
/// are at least 2 KiB at today's default (256 KiB least) and 512 bytes for tree files
/// (64 KiB least).
const SLACK_SHARE: u32 = 128;

/// The chunk sequence of the previous snapshot of a name (or of a file's previous version),
/// and how the new stream lines up with it.
///
/// The alignment is an offset shift: each chunk the new stream deduplicates against fixes
/// where the new stream stands in the old one, and a new chunk's candidate base is the old
/// chunk covering the middle of the new chunk's shifted byte range. Following byte offsets
/// rather than counting chunks keeps the alignment through long runs of new chunks whose cut
/// points moved (a table whose every page changed), where counting drifts off by a chunk.
///
/// Where every chunk changed (rows updated all over a table, in large chunks), no chunk
/// deduplicates, and content inserted before (new rows of another table) would leave the
/// shift off by the inserted length for the rest of the stream. Content-defined cut points
/// come back in step after a change, so the shift also follows the chunk ends: a new chunk
/// ending next to an old boundary fixes the shift there, and three chunk lengths in a row
/// that match exactly one run of old chunks (lengths carry the content's cut points) find
/// the alignment again after an insertion.
pub struct Predecessor {
    seq: Vec<Id>,
    /// Start offset of each chunk of `seq`, and the total length at the end.
    starts: Vec<u64>,
    pos: HashMap<Id, u32>,
    /// Old offset minus new offset, as of the last deduplicated chunk or matched boundary.
    shift: i64,
    /// Offset of the next chunk of the new stream.
    offset: u64,
    /// Lengths of the two previous chunks of the new stream (0 at the start).
    last_lens: [u32; 2],
    /// Whether the previous new chunk's end was not next to an old boundary.
    missed: bool,
    /// The old chunks by length, built when first needed.
    lengths: Option<Lengths>,
}

/// The old chunks' lengths, for finding a lost alignment.
struct Lengths {
    /// Old chunk indexes (from 2: a run of three ends there) by length / `slack`.
    by_length: HashMap<u32, Vec<u32>>,
    /// The shortest and longest old chunk: lengths at the chunker's bounds say nothing.
    shortest: u32,
    longest: u32,
    /// How near an old boundary a chunk end snaps to it.
    snap: i64,
    /// How near two chunk lengths match.
    slack: u32,
}

impl Lengths {
    fn new(starts: &[u64]) -> Lengths {
        let lens: Vec<u32> = starts.windows(2).map(|w| (w[1] - w[0]) as u32).collect();
        // the last chunk is cut by the end of the stream, not by the chunker
        let cut = &lens[..lens.len().saturating_sub(1)];
        let shortest = cut.iter().copied().min().unwrap_or(0);
        let longest = cut.iter().copied().max().unwrap_or(0);
        let slack = LENGTH_SLACK.max(shortest / SLACK_SHARE);
        let mut by_length: HashMap<u32, Vec<u32>> = HashMap::new();
        for (k, l) in lens.iter().enumerate().skip(2) {
            by_length.entry(l / slack).or_default().push(k as u32);
        }
        let snap = SNAP_BYTES.max(i64::from(shortest / SLACK_SHARE)).min(i64::from(shortest / 16));
        Lengths { by_length, shortest, longest, snap, slack }
    }

    fn informative(&self, len: u32) -> bool {
        self.shortest < len && len < self.longest
    }
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
        Predecessor {
            seq,
            starts,
            pos,
            shift: 0,
            offset: 0,
            last_lens: [0; 2],
            missed: false,
            lengths: None,
        }
    }

    /// Advances over one chunk of the new stream, in order: `stored` if it deduplicated.
    /// Returns the candidate base for a new chunk.
    pub fn step(&mut self, id: &Id, len: u32, stored: bool) -> Option<Id> {
        let here = self.offset;
        self.offset += u64::from(len);
        let before = self.last_lens;
        self.last_lens = [before[1], len];
        if stored {
            self.missed = false;
            if let Some(p) = self.pos.get(id) {
                self.shift = self.starts[*p as usize] as i64 - here as i64;
            }
            return None;
        }
        self.realign(self.offset, before, len);
        let middle = here as i64 + i64::from(len / 2) + self.shift;
        let middle = u64::try_from(middle).ok()?;
        // the last chunk starting at or before the middle, if the middle is inside the sequence
        let i = self.starts.partition_point(|s| *s <= middle).checked_sub(1)?;
        self.seq.get(i).copied()
    }

    /// Follows the new chunk ending at `end` (of length `len`, after chunks of `before`) with
    /// the shift: to the old boundary next to where the shift puts `end`, or else, when the
    /// previous chunk's end missed too, to the end of the one run of three old chunks whose
    /// lengths match these three.
    fn realign(&mut self, end: u64, before: [u32; 2], len: u32) {
        let starts = &self.starts;
        let lengths = self.lengths.get_or_insert_with(|| Lengths::new(starts));
        let at = end as i64 + self.shift;
        let i = starts.partition_point(|s| (*s as i64) < at);
        let nearest = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter_map(|k| starts.get(k))
            .map(|b| *b as i64)
            .min_by_key(|b| (b - at).abs());
        let missed = std::mem::replace(&mut self.missed, false);
        if let Some(b) = nearest.filter(|b| (b - at).abs() <= lengths.snap) {
            self.shift = b - end as i64;
            return;
        }
        self.missed = true;
        if let Some(k) = matching_run(lengths, starts, before, len).filter(|_| missed) {
            self.shift = starts[k + 1] as i64 - end as i64;
        }
    }
}

/// The old chunk `k` whose length and its two predecessors' match `len` and `before`, if
/// exactly one does.
fn matching_run(lengths: &Lengths, starts: &[u64], before: [u32; 2], len: u32) -> Option<usize> {
    if !before.iter().chain([&len]).all(|l| lengths.informative(*l)) {
        return None;
    }
    let old_len = |k: usize| (starts[k + 1] - starts[k]) as u32;
    let near = |a: u32, b: u32| a.abs_diff(b) <= lengths.slack;
    let bucket = len / lengths.slack;
    let mut found = None;
    for b in bucket.saturating_sub(1)..=bucket + 1 {
        for &k in lengths.by_length.get(&b).into_iter().flatten() {
            let k = k as usize;
            if k >= 2
                && near(old_len(k), len)
                && near(old_len(k - 1), before[1])
                && near(old_len(k - 2), before[0])
            {
                if found.is_some_and(|f| f != k) {
                    return None;
                }
                found = Some(k);
            }
        }
    }
    found
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
    /// Whether this is a restart: the candidate was as deep as chains go, and this base is the
    /// whole chunk its chain ends in ([`RESTART_SHARE`]).
    pub restart: bool,
}

/// Compresses `chunk` against `base` and, unless the delta is clearly smaller, on its own;
/// keeps the delta when it is at most three quarters of the plain encoding. A restart is kept
/// only while it is at most a third of its whole chunk's stored size. (The writer takes these
/// steps batch by batch, [`delta`] or [`delta_trying`] then [`keep`]; this states them for one
/// chunk, for tests.)
#[cfg(test)]
pub fn encode(level: i32, chunk: Vec<u8>, base: Option<Base>) -> Encoded {
    encode_either(level, chunk, base, None)
}

/// A delta made by [`delta`], not yet weighed against plain compression ([`keep`]).
pub struct Delta {
    base: Id,
    /// The stored size of the whole chunk the base's chain ends in ([`Base::whole`]).
    whole: usize,
    data: Vec<u8>,
    /// The stored size with the base id.
    cost: usize,
}

impl Delta {
    /// Under 1/128 of the chunk: kept without compressing the chunk on its own, and no other
    /// base is worth trying.
    pub fn tiny(&self, chunk_len: usize) -> bool {
        self.cost * TINY_DELTA <= chunk_len
    }

    /// The smaller of two deltas.
    pub fn smaller(a: Option<Delta>, b: Option<Delta>) -> Option<Delta> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.cost < a.cost { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// `chunk` compressed against `base`; `None` without a base, when zstd fails, or for a
/// restart that costs over a third of its whole chunk.
pub fn delta(level: i32, chunk: &[u8], base: Option<Base>) -> Option<Delta> {
    delta_with(level, chunk, base, Search::Full)
}

/// [`delta`], searched quickly first when `quick_first`: a quick delta that is tiny is kept,
/// any other is searched again fully (the smaller of the two is returned).
pub fn delta_trying(
    level: i32,
    chunk: &[u8],
    base: Option<Base>,
    quick_first: bool,
) -> Option<Delta> {
    if !quick_first {
        return delta(level, chunk, base);
    }
    let quick = delta_with(level, chunk, base.clone(), Search::Quick);
    if quick.as_ref().is_some_and(|d| d.tiny(chunk.len())) {
        return quick;
    }
    Delta::smaller(delta(level, chunk, base), quick)
}

fn delta_with(level: i32, chunk: &[u8], base: Option<Base>, search: Search) -> Option<Delta> {
    let b = base?;
    let data = compress_delta_with(level, &b.plain, chunk, search).ok()?;
    let cost = data.len() + 32;
    (!b.restart || cost * RESTART_SHARE <= b.whole).then_some(Delta {
        base: b.id,
        whole: b.whole,
        data,
        cost,
    })
}

/// [`encode`] against whichever of two bases gives the smaller delta: `base`, the chunk at
/// the same place in the previous snapshot, and `similar`, a chunk whose sketch resembles
/// this one's (content that moved), tried only when the delta against `base` is not already
/// tiny (the writer's `store` takes the same steps for a batch at a time).
#[cfg(test)]
pub fn encode_either(
    level: i32,
    chunk: Vec<u8>,
    base: Option<Base>,
    similar: Option<Base>,
) -> Encoded {
    let d = match delta(level, &chunk, base) {
        Some(d) if d.tiny(chunk.len()) => Some(d),
        d => Delta::smaller(d, delta(level, &chunk, similar)),
    };
    keep(level, chunk, d)
}

/// The blob of `chunk`: the delta `d` when it pays, else the chunk compressed on its own
/// (compressed at most once).
pub fn keep(level: i32, chunk: Vec<u8>, d: Option<Delta>) -> Encoded {
    let Some(d) = d else {
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
    if d.tiny(chunk.len()) || d.cost * CLEAR_SHARE <= d.whole {
        return Encoded { flags: FLAG_DELTA, data: d.data, base: Some(d.base) };
    }
    let (flags, data) = compress(level, chunk);
    if d.cost * 4 <= data.len() * KEEP_QUARTERS {
        Encoded { flags: FLAG_DELTA, data: d.data, base: Some(d.base) }
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
    fn a_stream_whose_every_chunk_changed_finds_its_place_after_an_insertion() {
        // old chunks of varied lengths; the new stream starts with 3 new chunks of inserted
        // rows (another table grew), then holds every old chunk again, each with a row or two
        // moved (a few dozen bytes longer or shorter) and none unchanged: no chunk
        // deduplicates, so only the chunk ends can line the streams up
        let lens: Vec<u32> =
            (0..40u32).map(|i| 70_000 + (i * 7919 % 97) * 3_001 + i % 5 * 17).collect();
        let mut p = Predecessor::from_chunks(
            lens.iter().enumerate().map(|(i, l)| (id(i as u8), *l)).collect(),
        );
        for (n, l) in [(200, 90_000), (201, 120_000), (202, 80_000)] {
            p.step(&id(n), l, false);
        }
        let mut got = vec![];
        for (i, l) in lens.iter().enumerate() {
            let drift = [0i64, 40, -24, 96, -100][i % 5];
            got.push(p.step(&id(100 + i as u8), (*l as i64 + drift) as u32, false));
        }
        // the first three are placed by the stale shift (the inserted 290,000 bytes ahead);
        // from the third on, their lengths find them, and each end keeps them in step
        let placed = got.iter().enumerate().skip(3).filter(|(i, b)| **b == Some(id(*i as u8)));
        assert_eq!(placed.count(), lens.len() - 3, "{got:?}");
    }

    #[test]
    fn large_chunks_that_each_lost_rows_find_their_place_after_an_insertion() {
        // megabyte chunks: each new one is a few kB shorter than the old one at its place
        // (rows moved out), and 1.5 MB of new rows come first; 256 bytes of slack never snap
        let lens: Vec<u32> = (0..30u32).map(|i| (1 << 20) + (i * 7919 % 97) * 30_011).collect();
        let mut p = Predecessor::from_chunks(
            lens.iter().enumerate().map(|(i, l)| (id(i as u8), *l)).collect(),
        );
        p.step(&id(200), 1_500_000, false);
        let mut got = vec![];
        for (i, l) in lens.iter().enumerate() {
            got.push(p.step(&id(100 + i as u8), l - 2_000 - i as u32 % 3 * 500, false));
        }
        let placed = got.iter().enumerate().skip(3).filter(|(i, b)| **b == Some(id(*i as u8)));
        assert_eq!(placed.count(), lens.len() - 3, "{got:?}");
    }

    #[test]
    fn of_two_bases_the_one_giving_the_smaller_delta_is_kept() {
        use crate::codec::compress::noise;
        let chunk = noise(1, 32768);
        let b = |n: u8, plain: Vec<u8>| {
            Some(Base { id: id(n), plain: Arc::new(plain), whole: 40000, restart: false })
        };
        // the chunk at the same place holds other rows; the moved rows are in another chunk
        let mut moved = chunk.clone();
        moved[500] ^= 1;
        let e = encode_either(3, chunk.clone(), b(1, noise(3, 32768)), b(2, moved.clone()));
        assert_eq!((e.flags, e.base), (FLAG_DELTA, Some(id(2))));
        // the same place holds half of it: still the better base is kept
        let mut half = chunk[..16384].to_vec();
        half.extend(noise(5, 16384));
        let e = encode_either(3, chunk.clone(), b(1, half.clone()), b(2, moved.clone()));
        assert_eq!(e.base, Some(id(2)));
        let e = encode_either(3, chunk.clone(), b(1, moved.clone()), b(2, half));
        assert_eq!(e.base, Some(id(1)));
        // neither resembles it: stored whole; only the second given: a delta against it
        let e = encode_either(3, chunk.clone(), b(1, noise(7, 32768)), b(2, noise(9, 32768)));
        assert_eq!(e.base, None);
        assert_eq!(encode_either(3, chunk, None, b(2, moved)).base, Some(id(2)));
    }

    #[test]
    fn a_quick_delta_is_kept_when_tiny_and_searched_again_fully_when_not() {
        use crate::codec::compress::noise;
        let base = noise(1, 128 << 10);
        let b = || {
            Some(Base { id: id(1), plain: Arc::new(base.clone()), whole: 131_000, restart: false })
        };
        let cost = |d: Option<Delta>| d.map(|d| d.cost).unwrap();
        // one changed byte: the long matches alone find the rest
        let mut one = base.clone();
        one[70_000] ^= 1;
        let d = delta_trying(3, &one, b(), true).unwrap();
        assert!(d.tiny(one.len()), "{} bytes", d.cost);
        // a byte in every 64 changed: only the short-match search over the whole base finds
        // the runs between them; the quick one sees the last 32 KiB
        let mut many = base.clone();
        for i in (0..many.len()).step_by(64) {
            many[i] ^= 0x55;
        }
        let quick = super::delta_with(3, &many, b(), Search::Quick).unwrap().cost;
        let full = cost(delta(3, &many, b()));
        assert!(full * 2 < quick, "full {full}, quick {quick}");
        assert_eq!(cost(delta_trying(3, &many, b(), true)), full);
        assert_eq!(cost(delta_trying(3, &many, b(), false)), full);
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
            Some(Base { id: id(1), plain: Arc::new(plain.clone()), whole, restart: false })
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

    #[test]
    fn a_restart_is_kept_only_while_it_is_a_third_of_its_whole_chunk() {
        // random bytes (a stream of them, cut up): the whole chunk is stored in about its
        // raw size, and every changed byte costs one in a delta
        let mut stream =
            crate::codec::chunker::tests::test_stream(16384 + 300 + 7168, 11).into_iter();
        let mut noise = |n: usize| -> Vec<u8> { stream.by_ref().take(n).collect() };
        let base = noise(16384);
        let whole = 16384;
        let restart = |chunk: Vec<u8>, restart: bool| {
            let b = Base { id: id(1), plain: Arc::new(base.clone()), whole, restart };
            encode(3, chunk, Some(b))
        };
        // a few hundred bytes changed since the whole chunk: kept either way
        let mut small = base.clone();
        small[1000..1300].copy_from_slice(&noise(300));
        assert_eq!(restart(small.clone(), true).base, Some(id(1)));
        assert_eq!(restart(small, false).base, Some(id(1)));
        // 7 KiB changed: a delta of under 3/4 of the chunk, kept as an ordinary delta, but as
        // a restart over a third of the whole chunk, so stored whole
        let mut big = base.clone();
        big[2000..9168].copy_from_slice(&noise(7168));
        let e = restart(big.clone(), false);
        assert_eq!(e.base, Some(id(1)));
        assert!((e.data.len() + 32) * RESTART_SHARE > whole, "{}", e.data.len());
        let e = restart(big.clone(), true);
        assert_eq!((e.base, e.flags & FLAG_DELTA), (None, 0));
        assert_eq!(crate::codec::compress::decompress(e.flags, e.data, 16384, None).unwrap(), big);
    }
}
