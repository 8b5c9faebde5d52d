//! Where the bytes of hourly delta backups go: chunks a series of dumps of one database with
//! the default chunker and reports, for each policy of base choice and chain depth, what the
//! new chunks of each hour cost and the decode work a restore of the newest dump needs.
//! A measuring tool for benches/RESULTS.md ("Delta blobs").
//!
//! Usage: cargo run --release --example delta_analysis -- DUMP1 DUMP2 ...
//! Options (environment): POLICIES="depth,window,level ...", TALLY, DLEVEL, SINGLES, BEST,
//! NDEPTH, CHUNK_AVG; at the depth limit FALLBACK=base (the newest ancestor shallow enough instead of the
//! chain's whole chunk) or FALLBACK=both (the smaller delta of the two), and REROOT=p (a delta
//! against an older chunk than the one replaced is kept only under p% of plain compression).
//! RESEMBLANCE=1 with two dumps: the new chunks' delta bytes with the locality base, with the
//! base `codec::sketch` suggests, and with the smaller of the two.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use repo::codec::chunker::{ChunkerParams, Gear, chunk_slice};
use repo::codec::compress::{compress, compress_delta, decompress_delta};

type H = [u8; 32];

struct Stored {
    depth: u32,
    root: H,
    // the bases of this chunk when it is a delta
    bases: Vec<H>,
    plain: Arc<Vec<u8>>,
}

fn run(files: &[String], max_depth: u32, window: usize, level: i32) {
    let gear = Gear::from_key(&[7; 32]);
    // CHUNK_AVG (bytes; default the repository default's 1 MiB), min and max at 1/4 and 4×
    let avg: u32 = std::env::var("CHUNK_AVG").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
    let params = ChunkerParams::new(avg / 4, avg, avg * 4).unwrap();
    let mut store: HashMap<H, Stored> = HashMap::new();
    let mut prev: Vec<H> = vec![];
    let mut per_hour = vec![];
    let mut last_ids = vec![];
    for f in files {
        let data = std::fs::read(f).unwrap();
        let chunks = chunk_slice(&data, &gear, params);
        let pos: HashMap<H, usize> = prev.iter().enumerate().map(|(i, x)| (*x, i)).collect();
        let starts: Vec<u64> = prev
            .iter()
            .scan(0u64, |at, id| {
                let s = *at;
                *at += store[id].plain.len() as u64;
                Some(s)
            })
            .collect();
        let (mut shift, mut off) = (0i64, 0u64);
        let mut bytes = 0usize;
        let mut tally = (0usize, 0usize, 0usize, 0usize);
        let mut ids = vec![];
        for c in chunks {
            let id = *blake3::hash(&c).as_bytes();
            ids.push(id);
            let here = off;
            off += c.len() as u64;
            if store.contains_key(&id) {
                if let Some(p) = pos.get(&id) {
                    shift = starts[*p] as i64 - here as i64;
                }
                continue;
            }
            // the old chunk at the same (shifted) offset, as the writer chooses it
            let mid = here as i64 + c.len() as i64 / 2 + shift;
            let next = if mid < 0 {
                usize::MAX
            } else {
                starts.partition_point(|s| *s as i64 <= mid).checked_sub(1).unwrap_or(usize::MAX)
            };
            let plain = compress(level, c.clone()).1.len();
            let lo = if next == usize::MAX { prev.len() } else { next.saturating_sub(window / 2) };
            let cands: Vec<H> = prev.iter().skip(lo).take(window).copied().collect();
            let centre = prev.get(next).copied();
            // resolve each candidate: itself when shallow enough; the centre (the chunk at the
            // same place) gives its chain's root when too deep, a neighbour is then left out
            let nmax: u32 =
                std::env::var("NDEPTH").ok().and_then(|v| v.parse().ok()).unwrap_or(max_depth);
            let resolve = |c: &H| {
                let s = &store[c];
                let shallow = if Some(*c) == centre { max_depth } else { nmax };
                if s.depth < shallow {
                    Some(*c)
                } else if Some(*c) == centre {
                    // FALLBACK=base: the newest ancestor shallow enough, not the root
                    if std::env::var("FALLBACK").is_ok_and(|v| v == "base") {
                        let mut b = *c;
                        while store[&b].depth >= max_depth {
                            b = store[&b].bases[0];
                        }
                        return Some(b);
                    }
                    Some(s.root)
                } else {
                    None
                }
            };
            let mut bases: Vec<H> = vec![];
            for c in &cands {
                if let Some(b) = resolve(c).filter(|b| !bases.contains(b)) {
                    bases.push(b);
                }
            }
            let mut rec = Stored { depth: 0, root: id, bases: vec![], plain: Arc::new(c.clone()) };
            let mut cost = plain;
            let mut tries = if std::env::var("SINGLES").is_ok() {
                bases.iter().map(|b| vec![*b]).collect()
            } else {
                vec![bases.clone()]
            };
            // FALLBACK=both: at the depth limit, also try the newest ancestor shallow enough
            if std::env::var("FALLBACK").is_ok_and(|v| v == "both")
                && let Some(c) = centre.filter(|c| store[c].depth >= max_depth)
            {
                let mut b = c;
                while store[&b].depth >= max_depth {
                    b = store[&b].bases[0];
                }
                tries.push(vec![b]);
            }
            let single = centre.as_ref().and_then(resolve);
            if let Some(b) = single.filter(|_| std::env::var("BEST").is_ok() && bases.len() > 1) {
                tries.push(vec![b]);
            }
            for bases in tries.into_iter().filter(|b| !b.is_empty()) {
                let prefix: Vec<u8> =
                    bases.iter().flat_map(|b| store[b].plain.iter().copied()).collect();
                let t = Instant::now();
                let d = compress_delta(delta_level(level), &prefix, &c).unwrap().len()
                    + 32 * bases.len();
                DELTA_NS.with(|n| n.set(n.get() + t.elapsed().as_nanos() as u64));
                // REROOT=p: a delta against an older chunk than the one replaced (the
                // candidate was at the depth limit) is kept only under p% of plain
                let at_limit = centre.is_some_and(|c| store[&c].depth >= max_depth);
                let reroot: usize =
                    std::env::var("REROOT").ok().and_then(|v| v.parse().ok()).unwrap_or(75);
                if at_limit && d * 100 > plain * reroot {
                    continue;
                }
                if d * 4 <= plain * 3 && d < cost {
                    cost = d;
                    let depth = bases.iter().map(|b| store[b].depth + 1).max().unwrap_or(1);
                    let root =
                        centre.and_then(|c| resolve(&c)).map_or(bases[0], |b| store[&b].root);
                    rec = Stored { depth, root, bases, plain: rec.plain.clone() };
                }
            }
            bytes += cost + 60; // index entry, footer entry, list entry
            if rec.bases.is_empty() {
                tally.0 += 1;
                tally.1 += cost;
            } else {
                tally.2 += 1;
                tally.3 += cost;
            }
            store.insert(id, rec);
        }
        if std::env::var("TALLY").is_ok() {
            eprintln!(
                "  whole {} chunks {:.2} MB, deltas {} chunks {:.2} MB",
                tally.0,
                tally.1 as f64 / 1e6,
                tally.2,
                tally.3 as f64 / 1e6
            );
        }
        per_hour.push(bytes);
        prev = ids.clone();
        last_ids = ids;
    }
    // restore of the newest: decode every chain (each level once per chunk, no sharing)
    let t = Instant::now();
    let mut decodes = 0usize;
    let mut maxd = 0;
    for id in &last_ids {
        decode(&store, id, level, &mut decodes);
        maxd = maxd.max(store[id].depth);
    }
    let growth: Vec<String> =
        per_hour[1..].iter().map(|b| format!("{:.2}", *b as f64 / 1e6)).collect();
    println!(
        "depth<={max_depth:2} window {window} l{level}/d{}: MB/h {} | delta encode {:.2}s | restore decodes {decodes} ({:.2}/chunk, max depth {maxd}) {:.3}s",
        delta_level(level),
        growth.join(" "),
        DELTA_NS.with(|n| n.get()) as f64 / 1e9,
        decodes as f64 / last_ids.len() as f64,
        t.elapsed().as_secs_f64()
    );
}

thread_local! {
    static DELTA_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The level of delta frames: DLEVEL, else the plain level.
fn delta_level(level: i32) -> i32 {
    std::env::var("DLEVEL").ok().and_then(|v| v.parse().ok()).unwrap_or(level)
}

fn decode(store: &HashMap<H, Stored>, id: &H, level: i32, n: &mut usize) -> Vec<u8> {
    let s = &store[id];
    if s.bases.is_empty() {
        return s.plain.to_vec();
    }
    let prefix: Vec<u8> = s.bases.iter().flat_map(|b| decode(store, b, level, n)).collect();
    // re-encode to get a real frame to time its decoding (the encode time is not counted
    // separately: both are reported together as an upper bound)
    let frame = compress_delta(level, &prefix, &s.plain).unwrap();
    *n += 1;
    decompress_delta(&prefix, &frame, s.plain.len() as u32).unwrap()
}

/// First backup: chunk i is a delta against the last full chunk of its group of `k`.
fn first(file: &str, k: usize, level: i32) {
    let gear = Gear::from_key(&[7; 32]);
    // CHUNK_AVG (bytes; default the repository default's 1 MiB), min and max at 1/4 and 4×
    let avg: u32 = std::env::var("CHUNK_AVG").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
    let params = ChunkerParams::new(avg / 4, avg, avg * 4).unwrap();
    let data = std::fs::read(file).unwrap();
    let chunks = chunk_slice(&data, &gear, params);
    let (mut plain, mut grouped) = (0, 0);
    for (i, c) in chunks.iter().enumerate() {
        let p = compress(level, c.clone()).1.len();
        plain += p;
        grouped += if i % k == 0 {
            p
        } else {
            (compress_delta(level, &chunks[i - i % k], c).unwrap().len() + 32).min(p)
        };
    }
    println!("{file}: {} chunks, plain {plain}, groups of {k} {grouped}", chunks.len());
    // SOLID=g: runs of g consecutive chunks compressed together in one frame (a format this
    // repository does not have), for the size such groups would give
    if let Some(g) = std::env::var("SOLID").ok().and_then(|v| v.parse::<usize>().ok()) {
        let t = std::time::Instant::now();
        // SOLID_BYTES: a run also ends before it would exceed this many bytes
        let cap: usize =
            std::env::var("SOLID_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
        let mut runs: Vec<Vec<u8>> = vec![Vec::new()];
        let mut n = 0;
        for c in &chunks {
            let last = runs.last_mut().unwrap();
            if n == g || (n > 0 && last.len() + c.len() > cap) {
                runs.push(Vec::new());
                n = 0;
            }
            runs.last_mut().unwrap().extend_from_slice(c);
            n += 1;
        }
        let solid: usize = runs.into_iter().map(|run| compress(level, run).1.len()).sum();
        println!(
            "{file}: runs of {g} chunks in one frame {solid} ({:.2} s)",
            t.elapsed().as_secs_f64()
        );
    }
}

/// Locality against resemblance as base selection, from dump PREV to dump CUR: the stored
/// size of CUR's new chunks with each base, with the better of the two, and with both as one
/// two-chunk prefix.
fn resemblance(prev_f: &str, cur_f: &str, level: i32) {
    let gear = Gear::from_key(&[7; 32]);
    // CHUNK_AVG (bytes; default the repository default's 1 MiB), min and max at 1/4 and 4×
    let avg: u32 = std::env::var("CHUNK_AVG").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
    let params = ChunkerParams::new(avg / 4, avg, avg * 4).unwrap();
    let (prev, cur) = (std::fs::read(prev_f).unwrap(), std::fs::read(cur_f).unwrap());
    let a = chunk_slice(&prev, &gear, params);
    let b = chunk_slice(&cur, &gear, params);
    let ida: Vec<H> = a.iter().map(|c| *blake3::hash(c).as_bytes()).collect();
    let pos: HashMap<H, usize> = ida.iter().enumerate().map(|(i, x)| (*x, i)).collect();
    let mut by_sf: Vec<HashMap<u64, usize>> = vec![HashMap::new(); 16];
    for (i, c) in a.iter().enumerate() {
        let skc = repo::codec::sketch::sketch(c);
        for (k, s) in skc.iter().enumerate() {
            by_sf[k].insert(*s, i);
        }
    }
    let starts: Vec<u64> = a
        .iter()
        .scan(0u64, |at, c| {
            let s = *at;
            *at += c.len() as u64;
            Some(s)
        })
        .collect();
    let (mut shift, mut off) = (0i64, 0u64);
    let (mut plain, mut loc, mut res, mut best, mut two, mut differ, mut found) =
        (0, 0, 0, 0, 0, 0, 0);
    for c in &b {
        let id = *blake3::hash(c).as_bytes();
        let here = off;
        off += c.len() as u64;
        if let Some(p) = pos.get(&id) {
            shift = starts[*p] as i64 - here as i64;
            continue;
        }
        let p = compress(level, c.clone()).1.len();
        plain += p;
        let mid = here as i64 + c.len() as i64 / 2 + shift;
        let l = (mid >= 0)
            .then(|| starts.partition_point(|s| *s as i64 <= mid).checked_sub(1))
            .flatten();
        let sk = repo::codec::sketch::sketch(c);
        let mut votes: HashMap<usize, usize> = HashMap::new();
        for (k, s) in sk.iter().enumerate() {
            if let Some(i) = by_sf[k].get(s) {
                *votes.entry(*i).or_default() += 1;
            }
        }
        let r = votes.into_iter().max_by_key(|(i, v)| (*v, usize::MAX - i)).map(|(i, _)| i);
        let d = |i: Option<usize>| {
            i.map_or(p, |i| (compress_delta(level, &a[i], c).unwrap().len() + 32).min(p))
        };
        let (dl, dr) = (d(l), d(r));
        if r.is_some() {
            found += 1;
        }
        if r.is_some() && r != l {
            differ += 1;
        }
        loc += dl;
        res += dr;
        best += dl.min(dr);
        two += match (l, r) {
            (Some(x), Some(y)) if x != y => {
                let pre = [a[x].as_slice(), a[y].as_slice()].concat();
                (compress_delta(level, &pre, c).unwrap().len() + 64).min(p)
            }
            _ => dl.min(dr),
        };
    }
    println!(
        "{cur_f}: plain {plain} locality {loc} resemblance {res} (found for {found}, differs {differ}) better-of-two {best} two-base {two}"
    );
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var("RESEMBLANCE").is_ok() {
        resemblance(&files[0], &files[1], 3);
        return;
    }
    if let Ok(k) = std::env::var("FIRST") {
        for f in &files {
            first(f, k.parse().unwrap(), delta_level(3));
        }
        return;
    }
    let pol: Vec<(u32, usize, i32)> = std::env::var("POLICIES")
        .unwrap_or("1,1,3 2,1,3 4,1,3 8,1,3 99,1,3 1,3,3 4,3,3 99,3,3".into())
        .split(' ')
        .map(|p| {
            let v: Vec<&str> = p.split(',').collect();
            (v[0].parse().unwrap(), v[1].parse().unwrap(), v[2].parse().unwrap())
        })
        .collect();
    for (d, w, l) in pol {
        run(&files, d, w, l);
    }
}
