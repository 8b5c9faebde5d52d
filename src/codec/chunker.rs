//! Content-defined chunking: FastCDC (v2020 cut points from the `fastcdc` crate) over a
//! secret gear table.
//!
//! A public gear table lets anyone who can guess part of a backup's plaintext predict its
//! chunk boundaries, and so recognise it from chunk sizes. The table here is 256 u64 words
//! from the BLAKE3 XOF keyed by the repository's chunker key, so boundaries depend on a
//! secret. (The crate's own seed only XORs one 64-bit value into its public table.)

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, select_masks};

use super::CodecError;
use crate::format::config::Config;

/// Validated chunker sizes in bytes: `min < avg < max`, `avg` a power of two (see
/// [`Config::validate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is shorter, except the last one of a stream.
    pub min: usize,
    /// The average the cut-point masks aim for.
    pub avg: usize,
    /// Every chunk is cut at this length at the latest.
    pub max: usize,
}

impl ChunkerParams {
    /// Validated parameters; bad sizes are an error, never a panic in the scan loop.
    pub fn new(min: u32, avg: u32, max: u32) -> Result<Self, CodecError> {
        let probe = Config {
            repo_id: [0; 32],
            chunk_min: min,
            chunk_avg: avg,
            chunk_max: max,
            pack_target: 1 << 20,
            zstd_level: 3,
        };
        probe.validate().map_err(|e| CodecError::ChunkerParams(e.to_string()))?;
        Ok(ChunkerParams { min: min as usize, avg: avg as usize, max: max as usize })
    }
    /// The repository's stream chunker, from its `config`.
    pub fn from_config(c: &Config) -> Result<Self, CodecError> {
        Self::new(c.chunk_min, c.chunk_avg, c.chunk_max)
    }

    /// The parameters for the files of tree snapshots: each size scaled so that the average
    /// is `TREE_AVG` (×16 for the 16 KiB average of older repositories, ×4 for 64 KiB, ×2 for
    /// 128 KiB, ÷4 for today's 1 MiB), clamped to the limits (min <= 1 MiB, avg <= 4 MiB, max
    /// <= 16 MiB). Data files of a database compress far better in larger chunks than 16 KiB,
    /// and their week-to-week changes are scattered over whole files anyway (benches/RESULTS.md,
    /// "File trees"); at a 1 MiB average a tree backup's peak RSS rose by 18 MB for 3% less
    /// stored ("A megabyte per chunk"), so tree files keep 256 KiB.
    pub fn for_tree_files(&self) -> ChunkerParams {
        if self.avg > TREE_AVG {
            // sizes given by hand may not divide into valid ones: then the default's
            return self.divided(self.avg / TREE_AVG).unwrap_or(ChunkerParams {
                min: TREE_AVG / 4,
                avg: TREE_AVG,
                max: TREE_AVG * 4,
            });
        }
        let factor = TREE_AVG / self.avg;
        let scale = |v: usize, cap: usize| (v * factor).min(cap);
        let (min, avg, max) =
            (scale(self.min, 1 << 20), scale(self.avg, 4 << 20), scale(self.max, 16 << 20));
        if min < avg && avg < max { ChunkerParams { min, avg, max } } else { *self }
    }

    /// The parameters for catalogs (of trees and server snapshots): each size divided so that
    /// the average is at most `CATALOG_AVG` (÷16 for today's 1 MiB; never below ÷1). A file
    /// changed in a large tree makes the catalog chunk around its entry new, and catalog
    /// chunks are stored whole: at 256 KiB a one-file change cost 3.4% of the first backup of
    /// 100,000 small files, at 64 KiB under 1%.
    pub fn for_catalogs(&self) -> ChunkerParams {
        self.divided((self.avg / CATALOG_AVG).max(1)).unwrap_or(*self)
    }

    /// Each size divided by `factor`, if the results are valid parameters.
    fn divided(&self, factor: usize) -> Option<ChunkerParams> {
        let (min, avg, max) = (self.min / factor, self.avg / factor, self.max / factor);
        ChunkerParams::new(min as u32, avg as u32, max as u32).ok()
    }
}

/// The average chunk size of tree files (when the repository's average is smaller).
pub const TREE_AVG: usize = 256 * 1024;

/// The largest average chunk size of catalogs (when the repository's average is larger).
pub const CATALOG_AVG: usize = 64 * 1024;

/// Bytes that fill long runs in what this tool stores: zero pages and NUL padding, and the
/// blank padding of `char(n)` columns and fixed-width text.
const PADDING_BYTES: [u8; 2] = [0x00, 0x20];

/// The secret gear tables (the plain one and the one shifted left by one bit, which the
/// v2020 two-bytes-at-a-time loop needs).
pub struct Gear {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Gear {
    /// Derives the secret gear table from the repository's 32-byte chunker key (BLAKE3 XOF of
    /// `"repo gear table v1"` keyed by it).
    pub fn from_key(key: &[u8; 32]) -> Gear {
        let mut xof = blake3::Hasher::new_keyed(key).update(b"repo gear table v1").finalize_xof();
        let mut raw = [0u8; 256 * 8];
        xof.fill(&mut raw);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for i in 0..256 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&raw[i * 8..i * 8 + 8]);
            gear[i] = u64::from_le_bytes(w);
            gear_ls[i] = gear[i] << 1;
        }
        Gear { gear, gear_ls }
    }

    /// Whether long runs of a padding byte can hold cut points. Inside a run of byte `b` the
    /// rolling hash's bit `k` settles, after `k + 1` bytes of the run, to that bit of
    /// `-gear[b]`. If the lowest bit a cut mask tests is 0 there, every position deep in a
    /// run leaves the cut to the mask's higher bits alone: for about one key in 500, the
    /// 84-blank rows of a pgbench dump offered a cut point every few rows, and the dump was
    /// cut into minimum-size chunks (benches/RESULTS.md, "Cut points in padding"). When this
    /// is false, no cut point lies more than 17 bytes into such a run, for every mask FastCDC
    /// uses (their lowest bits are 4, 8, 12 or 16).
    pub fn cuts_in_padding(&self) -> bool {
        // the lowest bit of each mask (`m & -m`), all in one word
        let lowest = fastcdc::v2020::MASKS.iter().fold(0, |acc, m| acc | (m & m.wrapping_neg()));
        PADDING_BYTES.iter().any(|&b| self.gear[b as usize].wrapping_neg() & lowest != lowest)
    }
}

/// Splits bytes already in memory into chunks, with the same boundaries as [`StreamChunker`]
/// (the cut point depends only on the next `max` bytes) but without its buffer.
pub fn chunk_slice(data: &[u8], gear: &Gear, params: ChunkerParams) -> Vec<Vec<u8>> {
    if data.len() <= params.min {
        return if data.is_empty() { vec![] } else { vec![data.to_vec()] };
    }
    let (ms, ml) = select_masks(params.avg, Normalization::Level1);
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let (_, len) = cut_gear(
            &data[at..],
            params.min,
            params.avg,
            params.max,
            ms,
            ml,
            ms << 1,
            ml << 1,
            &gear.gear[..],
            &gear.gear_ls[..],
        );
        out.push(data[at..at + len].to_vec());
        at += len;
    }
    out
}

/// Splits a byte stream into chunks. Memory: one buffer of twice the maximum chunk size.
pub struct StreamChunker<'g, R: Read> {
    source: R,
    gear: &'g Gear,
    params: ChunkerParams,
    masks: (u64, u64),
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<'g, R: Read> StreamChunker<'g, R> {
    /// A chunker over `source`; allocates a buffer of `2 * params.max` bytes up front.
    pub fn new(source: R, gear: &'g Gear, params: ChunkerParams) -> Self {
        StreamChunker {
            source,
            gear,
            params,
            masks: select_masks(params.avg, Normalization::Level1),
            buf: vec![0u8; params.max * 2],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.end - self.start < self.params.max && !self.eof {
            self.fill()?;
        }
        if self.start == self.end {
            return Ok(None);
        }
        let (ms, ml) = self.masks;
        let (_, len) = cut_gear(
            &self.buf[self.start..self.end],
            self.params.min,
            self.params.avg,
            self.params.max,
            ms,
            ml,
            ms << 1,
            ml << 1,
            &self.gear.gear[..],
            &self.gear.gear_ls[..],
        );
        let chunk = self.buf[self.start..self.start + len].to_vec();
        self.start += len;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Cut points that lie more than 17 bytes into a run of blanks (leaving out the end of the
    /// data and cuts forced at the maximum size).
    fn cuts_deep_in_blanks(data: &[u8], gear: &Gear, p: ChunkerParams) -> usize {
        let chunks = chunk_slice(data, gear, p);
        let mut at = 0;
        let mut deep = 0;
        for c in &chunks[..chunks.len() - 1] {
            at += c.len();
            let forced = c.len() == p.max;
            deep += usize::from(!forced && data[at - 18..at].iter().all(|&b| b == b' '));
        }
        deep
    }

    #[test]
    fn a_screened_gear_never_cuts_deep_in_padding() {
        // rows like pgbench's: a counter, constant fields and 84 blanks
        let mut data = Vec::new();
        for i in 0..60_000u32 {
            data.extend_from_slice(format!("{i}\t4\t0\t{:84}\n", "").as_bytes());
        }
        let p = ChunkerParams::new(32 << 10, 128 << 10, 512 << 10).unwrap();
        // a gear whose hash settles to zero in blanks cuts there as soon as it may
        let mut bad = Gear::from_key(&[9; 32]);
        bad.gear[0x20] = 0;
        bad.gear_ls[0x20] = 0;
        assert!(bad.cuts_in_padding());
        let deep = cuts_deep_in_blanks(&data, &bad, p);
        assert!(deep > 100, "{deep}");
        // keys as `init` draws them
        let mut screened = 0;
        for k in 0..2000u32 {
            let gear = Gear::from_key(blake3::hash(&k.to_le_bytes()).as_bytes());
            if gear.cuts_in_padding() {
                continue;
            }
            screened += 1;
            assert_eq!(cuts_deep_in_blanks(&data, &gear, p), 0, "key {k}");
            if screened == 3 {
                break;
            }
        }
        assert_eq!(screened, 3);
    }

    #[test]
    fn slice_and_stream_chunkers_cut_alike() {
        let gear = Gear::from_key(&[5; 32]);
        let p = ChunkerParams::new(1024, 4096, 16384).unwrap();
        let mut x = 1u64;
        let data: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for len in [0, 10, 1024, 1025, 5000, 300_000] {
            let mut c = StreamChunker::new(&data[..len], &gear, p);
            let mut streamed = Vec::new();
            while let Some(ch) = c.next_chunk().unwrap() {
                streamed.push(ch);
            }
            assert_eq!(chunk_slice(&data[..len], &gear, p), streamed, "{len}");
        }
    }

    /// A deterministic pseudo-random test stream (xorshift), independent of any crate.
    pub fn test_stream(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn lengths(data: &[u8], key: [u8; 32], p: ChunkerParams) -> Vec<usize> {
        let gear = Gear::from_key(&key);
        let mut c = StreamChunker::new(data, &gear, p);
        let mut v = vec![];
        while let Some(ch) = c.next_chunk().unwrap() {
            v.push(ch.len());
        }
        v
    }

    #[test]
    fn pinned_boundaries() {
        let data = test_stream(1 << 20, 42);
        let p = ChunkerParams::new(16 * 1024, 64 * 1024, 256 * 1024).unwrap();
        let l = lengths(&data, [7; 32], p);
        assert_eq!(l.iter().sum::<usize>(), data.len());
        assert_eq!(l, PINNED);
        // another key, other boundaries: they are secret
        assert_ne!(lengths(&data, [8; 32], p), PINNED);
    }
    const PINNED: &[usize] = &[
        82875, 56374, 75995, 66836, 119810, 70912, 92879, 41199, 86925, 83306, 70834, 21230, 55894,
        62134, 61373,
    ];

    #[test]
    fn insertion_only_changes_nearby_chunks() {
        let a = test_stream(4 << 20, 1);
        let mut b = a.clone();
        b.splice(2_000_000..2_000_000, test_stream(5000, 9));
        let p = ChunkerParams::new(4096, 16384, 65536).unwrap();
        let gear = Gear::from_key(&[1; 32]);
        let set = |d: &[u8]| {
            let mut c = StreamChunker::new(d, &gear, p);
            let mut s = std::collections::HashSet::new();
            while let Some(ch) = c.next_chunk().unwrap() {
                s.insert(blake3::hash(&ch));
            }
            s
        };
        let (sa, sb) = (set(&a), set(&b));
        let new = sb.difference(&sa).count();
        assert!(new <= 3, "{new} new chunks after one insertion");
    }

    #[test]
    fn tree_files_and_catalogs_scale_the_repository_sizes() {
        let sizes = |p: ChunkerParams| (p.min >> 10, p.avg >> 10, p.max >> 10);
        let today = ChunkerParams::new(256 << 10, 1 << 20, 4 << 20).unwrap();
        assert_eq!(sizes(today.for_tree_files()), (64, 256, 1024));
        assert_eq!(sizes(today.for_catalogs()), (16, 64, 256));
        let large = ChunkerParams::new(1 << 20, 4 << 20, 16 << 20).unwrap();
        assert_eq!(sizes(large.for_tree_files()), (64, 256, 1024));
        assert_eq!(sizes(large.for_catalogs()), (16, 64, 256));
        // a hand-picked least that divides into no valid size (odd)
        let odd = ChunkerParams::new(300_006, 1 << 20, 4 << 20).unwrap();
        assert_eq!(sizes(odd.for_tree_files()), (64, 256, 1024));
        let previous = ChunkerParams::new(32 << 10, 128 << 10, 512 << 10).unwrap();
        assert_eq!(sizes(previous.for_tree_files()), (64, 256, 1024));
        assert_eq!(sizes(previous.for_catalogs()), (16, 64, 256));
        let before = ChunkerParams::new(16 << 10, 64 << 10, 256 << 10).unwrap();
        assert_eq!(sizes(before.for_tree_files()), (64, 256, 1024));
        assert_eq!(sizes(before.for_catalogs()), (16, 64, 256), "as such repositories always did");
        let first = ChunkerParams::new(4 << 10, 16 << 10, 64 << 10).unwrap();
        assert_eq!(sizes(first.for_tree_files()), (64, 256, 1024));
        assert_eq!(sizes(first.for_catalogs()), (4, 16, 64));
    }

    #[test]
    fn bad_params_are_errors() {
        assert!(ChunkerParams::new(0, 64, 128).is_err());
        assert!(ChunkerParams::new(4096, 3000, 65536).is_err());
        assert!(ChunkerParams::new(4096, 65536, 32768).is_err());
    }
}
