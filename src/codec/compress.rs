//! zstd per blob, kept raw where compression does not shrink it.
//!
//! Each thread keeps one compression and one decompression context: creating a zstd context
//! per chunk cost a fifth of restore time.

use std::cell::RefCell;

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

use super::CodecError;
use crate::format::pack::{FLAG_DELTA, FLAG_ZSTD};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Shortest match zstd looks for at the default level (3), whose own choice for inputs of up
/// to 128 KiB is 5. Measured on 64 KiB chunks of the bench dumps (benches/RESULTS.md): 6 makes
/// delta frames 3-5% smaller and whole chunks about 1% smaller, in the same time or less.
/// Other levels keep zstd's choice. The frames are ordinary zstd frames either way.
const MIN_MATCH_AT_LEVEL_3: u32 = 6;

fn tuned(level: i32) -> Option<CParameter> {
    (level == 3).then_some(CParameter::MinMatch(MIN_MATCH_AT_LEVEL_3))
}

fn zstd_compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut z = zstd::bulk::Compressor::new(level)?;
            if let Some(p) = tuned(level) {
                z.set_parameter(p)?;
            }
            *c = Some((level, z));
        }
        match c.as_mut() {
            Some((_, z)) => z.compress(data),
            None => zstd::bulk::compress(data, level),
        }
    })
}

fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(z) => z.decompress(data, capacity),
            None => zstd::bulk::decompress(data, capacity),
        }
    })
}

/// Compresses `data`; returns the flags and the bytes to store.
pub fn compress(level: i32, data: Vec<u8>) -> (u8, Vec<u8>) {
    match zstd_compress(&data, level) {
        // only worth a flag and a decompression when it saves at least 1/64
        Ok(c) if c.len() + data.len() / 64 < data.len() => (FLAG_ZSTD, c),
        _ => (0, data),
    }
}

fn zstd_error(code: usize) -> CodecError {
    CodecError::Decompress(zstd_safe::get_error_name(code).to_string())
}

thread_local! {
    /// One compression context per thread for deltas, at the level it was set to: creating
    /// one per chunk (and touching its fresh tables) cost a sixth of a backup's time.
    static DELTA_CCTX: RefCell<Option<(i32, CCtx<'static>)>> = const { RefCell::new(None) };
}

/// The window a delta frame declares: the smallest power of two that holds base and chunk
/// together, so every match can reach the start of the base (zstd's own choice at level 3 is
/// 2 MiB, and long-distance matching alone would declare 128 MiB). At least zstd's minimum
/// (2^10); chunks of at most 16 MiB make it at most 2^25. Readers decompress into a buffer of
/// the chunk's length, so the window allocates nothing there.
fn delta_window_log(span: usize) -> u32 {
    span.next_power_of_two().trailing_zeros().clamp(10, 25)
}

/// Delta frames are searched with zstd's long-distance matcher, which finds the runs a chunk
/// shares with its base by hashing sparsely and extending far, before the level's own match
/// finder looks at what lies between them. Repetitive data (table rows that differ in a few
/// digits and end in the same blanks) misled the level-3 finder alone: its hash tables keep
/// the newest position of each short string, which for such rows is the row just before, not
/// the same row in the base. Measured on the bench dumps (benches/RESULTS.md, "Long-distance
/// matches in delta frames"): the deltas of an hour of the pgbench dump went from 0.59 to
/// 0.14 MB. Shorter matches are left to the level's finder: with zstd's default (64) the
/// deltas were 6% larger.
const LONG_MATCH_MIN: u32 = 256;
/// One position in 2^this enters the long-distance table (zstd's default at these windows is
/// one in 2^7; denser entries found more, shorter matches, and larger deltas).
const LONG_MATCH_RATE_LOG: u32 = 8;
/// At the default level, between the long matches zstd's fastest strategy searches with a
/// table of 2^16 entries. The level's own (two-table) finder there made each delta take 60%
/// more time than before long matching; this one about a third more, and hourly backups of
/// the bench workload take as long as before. Text deltas (the docs dump) stay within 1% of
/// their size with the level's finder; a table of 2^14 entries made them 4% larger.
const FAST_HASH_LOG: u32 = 16;
/// A quick delta frame's short-match table: zstd loads only the last 2^(this + 3) bytes of
/// the base into it (the long-distance table still holds the whole base), which spares most
/// of a delta's cost of loading its base where the long matches find the changes anyway.
const QUICK_HASH_LOG: u32 = 12;
/// The least chain table zstd takes: at the fastest strategy it is unused, but the larger of
/// the two tables decides how much of the base is loaded.
const QUICK_CHAIN_LOG: u32 = 6;

/// How hard a delta frame searches the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// Long matches in the whole base and short ones everywhere in it.
    Full,
    /// Long matches in the whole base, short ones only near its end: about a quarter less
    /// time than [`Search::Full`] (most of loading the base is spared; measured on the bench
    /// dump's deltas), the same delta where a chunk differs from its base in a few places,
    /// and larger ones where it differs throughout (text rows). Only at the default level 3;
    /// other levels search fully.
    Quick,
}

/// The match-finder settings of a delta frame at `level`, beyond the level itself.
fn delta_parameters(level: i32, span: usize, search: Search) -> Vec<CParameter> {
    let mut p = vec![
        CParameter::WindowLog(delta_window_log(span)),
        CParameter::EnableLongDistanceMatching(true),
        CParameter::LdmMinMatch(LONG_MATCH_MIN),
        CParameter::LdmHashRateLog(LONG_MATCH_RATE_LOG),
    ];
    if level == 3 {
        p.push(CParameter::Strategy(zstd_safe::Strategy::ZSTD_fast));
        p.extend(match search {
            Search::Full => [CParameter::HashLog(FAST_HASH_LOG), CParameter::ChainLog(0)],
            Search::Quick => {
                [CParameter::HashLog(QUICK_HASH_LOG), CParameter::ChainLog(QUICK_CHAIN_LOG)]
            }
        });
    }
    p
}

/// Compresses `data` as a zstd frame against `base` (the plaintext of another chunk, used as
/// a raw-content prefix, not a dictionary).
pub fn compress_delta(level: i32, base: &[u8], data: &[u8]) -> Result<Vec<u8>, CodecError> {
    compress_delta_with(level, base, data, Search::Full)
}

/// [`compress_delta`] with the given search of the base.
pub fn compress_delta_with(
    level: i32,
    base: &[u8],
    data: &[u8],
    search: Search,
) -> Result<Vec<u8>, CodecError> {
    DELTA_CCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut c =
                CCtx::try_create().ok_or_else(|| CodecError::Decompress("no memory".into()))?;
            c.set_parameter(CParameter::CompressionLevel(level)).map_err(zstd_error)?;
            if let Some(p) = tuned(level) {
                c.set_parameter(p).map_err(zstd_error)?;
            }
            *cell = Some((level, c));
        }
        let Some((level, c)) = cell.as_mut() else { unreachable!("set above") };
        // SAFETY: zstd keeps a referenced prefix for one frame only: starting the frame in
        // `compress2` takes the reference and clears it, and `ref_prefix` itself first drops
        // any earlier one. What the finished frame's window still points at lies below its
        // low limit and is never read again. On an error the whole context is dropped below,
        // so no context ever uses `base` after this call, although its type says 'static.
        let base: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(base) };
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
        let span = base.len() + data.len();
        let done = delta_parameters(*level, span, search)
            .into_iter()
            .try_for_each(|p| c.set_parameter(p).map(drop))
            .and_then(|_| c.ref_prefix(base))
            .and_then(|_| c.compress2(&mut out, data));
        if let Err(code) = done {
            *cell = None;
            return Err(zstd_error(code));
        }
        Ok(out)
    })
}

thread_local! {
    /// One decompression context per thread for deltas (creating one per chunk cost a
    /// twentieth of a restore).
    static DELTA_DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Reverses [`compress_delta`]. At most `raw_len` bytes are ever allocated; a wrong base
/// gives an error or wrong bytes (callers verify the chunk id).
pub fn decompress_delta(base: &[u8], frame: &[u8], raw_len: u32) -> Result<Vec<u8>, CodecError> {
    DELTA_DCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell =
                Some(DCtx::try_create().ok_or_else(|| CodecError::Decompress("no memory".into()))?);
        }
        let Some(d) = cell.as_mut() else { unreachable!("set above") };
        // SAFETY: the prefix is referenced for one frame; the reset below (also after an
        // error) drops the context's reference to `base` before this call returns, so the
        // context never holds `base` beyond it, although its type says 'static.
        let base: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(base) };
        let mut out = Vec::with_capacity(raw_len as usize);
        let done = d.ref_prefix(base).and_then(|_| d.decompress(&mut out, frame));
        let _ = d.reset(zstd_safe::ResetDirective::SessionAndParameters);
        let n = done.map_err(zstd_error)?;
        if n != raw_len as usize {
            return Err(CodecError::Decompress(format!("got {n} bytes, expected {raw_len}")));
        }
        Ok(out)
    })
}

/// Reverses [`compress`] (and [`compress_delta`] when `flags` says delta: `base` is then the
/// base chunk's plaintext); `raw_len` (from the index) bounds the output buffer.
pub fn decompress(
    flags: u8,
    data: Vec<u8>,
    raw_len: u32,
    base: Option<&[u8]>,
) -> Result<Vec<u8>, CodecError> {
    if flags == FLAG_DELTA {
        let base = base.ok_or_else(|| CodecError::Decompress("delta without its base".into()))?;
        return decompress_delta(base, &data, raw_len);
    }
    if flags & FLAG_ZSTD == 0 {
        if data.len() != raw_len as usize {
            return Err(CodecError::Decompress(format!(
                "stored {} bytes, expected {raw_len}",
                data.len()
            )));
        }
        return Ok(data);
    }
    let out = zstd_decompress(&data, raw_len as usize)
        .map_err(|e| CodecError::Decompress(e.to_string()))?;
    if out.len() != raw_len as usize {
        return Err(CodecError::Decompress(format!("got {} bytes, expected {raw_len}", out.len())));
    }
    Ok(out)
}

/// `n` pseudo-random bytes (xorshift from `seed`; seeds differing in the lowest bit only
/// give the same bytes), for tests.
#[cfg(test)]
pub(crate) fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_raw_fallback() {
        let text = b"abcabcabc".repeat(1000);
        let (f, c) = compress(3, text.clone());
        assert_eq!(f, FLAG_ZSTD);
        assert!(c.len() < text.len());
        assert_eq!(decompress(f, c, text.len() as u32, None).unwrap(), text);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let (f, c) = compress(3, noise.clone());
        assert_eq!(f, 0);
        assert_eq!(c, noise);
        assert!(decompress(FLAG_ZSTD, vec![1, 2, 3], 10, None).is_err());
    }

    #[test]
    fn delta_against_a_similar_base_is_small_and_needs_that_base() {
        let base = noise(1, 16384);
        let mut data = base.clone();
        data[5000..5100].copy_from_slice(&noise(2, 100)); // a changed row
        let (_, plain) = compress(3, data.clone());
        let delta = compress_delta(3, &base, &data).unwrap();
        assert!(delta.len() < 400 && plain.len() > 16000, "{} vs {}", delta.len(), plain.len());
        assert_eq!(decompress(FLAG_DELTA, delta.clone(), 16384, Some(&base)).unwrap(), data);
        assert!(decompress(FLAG_DELTA, delta.clone(), 16384, None).is_err());
        // a wrong raw length or a damaged frame: an error, no oversized buffer
        assert!(decompress(FLAG_DELTA, delta.clone(), 100, Some(&base)).is_err());
        let mut bad = delta.clone();
        bad.truncate(bad.len() / 2);
        assert!(decompress(FLAG_DELTA, bad, 16384, Some(&base)).is_err());
        // with another base the output differs (the caller's id check catches it)
        let other = noise(3, 16384);
        assert_ne!(decompress(FLAG_DELTA, delta, 16384, Some(&other)).ok(), Some(data));
    }

    #[test]
    fn a_delta_reaches_back_over_the_whole_of_a_large_base() {
        // 4 MiB chunks (the largest of a 1 MiB average): base and chunk do not fit in the 2 MiB
        // window zstd picks at level 3, so without a larger one the start of the base was out
        // of reach
        let base = noise(7, 4 << 20);
        let mut data = base.clone();
        data[100..108].copy_from_slice(b"changed!");
        let delta = compress_delta(3, &base, &data).unwrap();
        // long-distance matching finds the unchanged 4 MiB (6 kB measured; 3 MB with the
        // window alone, whose hash table of 2^17 entries loses most of the base, 4 MB before)
        assert!(delta.len() < 16384, "{} bytes for an 8-byte change", delta.len());
        assert_eq!(decompress(FLAG_DELTA, delta, 4 << 20, Some(&base)).unwrap(), data);
    }

    /// pgbench_accounts as `pg_dump` writes it: rows of an id, a branch, a balance and 84
    /// blanks, in heap order, pages of 61 rows.
    fn accounts(rows: &[(u32, i64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (aid, balance) in rows {
            out.extend_from_slice(
                format!("{aid}\t{}\t{balance}\t{:84}\n", 1 + aid / 100_000, "").as_bytes(),
            );
        }
        out
    }

    #[test]
    fn a_delta_of_repetitive_rows_finds_each_row_in_the_base() {
        // 3,300 rows (about 330 KiB, a default-size chunk); an hour updates 6 of them: each
        // updated row leaves its place and its new version is written at the end of its page
        let mut rows: Vec<(u32, i64)> = (1..=3300).map(|a| (a, 0)).collect();
        let base = accounts(&rows);
        let mut x = 11u64;
        for _ in 0..6 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = (x >> 33) as usize % rows.len();
            let (aid, balance) = rows.remove(at);
            let page_end = ((at / 61 + 1) * 61 - 1).min(rows.len());
            rows.insert(page_end, (aid, balance - 4321));
        }
        let data = accounts(&rows);
        let delta = compress_delta(3, &base, &data).unwrap();
        // the level-3 finder alone: 1,890 bytes; with long matches 173
        assert!(delta.len() < 400, "{} bytes for six moved rows", delta.len());
        // a quick search finds the same rows through the long matches alone
        let quick = compress_delta_with(3, &base, &data, Search::Quick).unwrap();
        assert!(quick.len() < 400, "{} bytes searched quickly", quick.len());
        assert_eq!(decompress(FLAG_DELTA, quick, data.len() as u32, Some(&base)).unwrap(), data);
        assert_eq!(decompress(FLAG_DELTA, delta, data.len() as u32, Some(&base)).unwrap(), data);
    }

    #[test]
    fn a_quick_search_misses_short_matches_and_leaves_full_frames_as_they_were() {
        // text rows of which every eighth changes a word: the short matches of each row lie
        // all over the base, beyond the quick search's reach of its last 32 KiB
        let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
        let row = |i: usize, v: usize| {
            let (a, b) = (words[i * 7 % 8], words[(i / 8 + v) % 8]);
            format!("{i}\t{a}\t{b}\t{}\n", i * 31 % 977)
        };
        let base: Vec<u8> = (0..4000).flat_map(|i| row(i, 0).into_bytes()).collect();
        let data: Vec<u8> =
            (0..4000).flat_map(|i| row(i, usize::from(i % 8 == 0)).into_bytes()).collect();
        let full = compress_delta(3, &base, &data).unwrap();
        let quick = compress_delta_with(3, &base, &data, Search::Quick).unwrap();
        assert!(quick.len() > full.len(), "quick {} against full {}", quick.len(), full.len());
        assert_eq!(decompress(FLAG_DELTA, quick, data.len() as u32, Some(&base)).unwrap(), data);
        // a quick frame made on this thread's context does not change the next full one
        assert_eq!(compress_delta(3, &base, &data).unwrap(), full);
    }
}
