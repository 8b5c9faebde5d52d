//! Where the bytes of hourly delta backups go: chunks a series of dumps of one database with
//! the default chunker and reports, for each policy of base choice and chain depth, what the
//! new chunks of each hour cost and the decode work a restore of the newest dump needs.
//! A measuring tool for benches/RESULTS.md ("Delta blobs").
//!
//! Usage: cargo run --release --example delta_analysis -- DUMP1 DUMP2 ...
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
    let params = ChunkerParams::new(16 << 10, 64 << 10, 256 << 10).unwrap();
    let mut store: HashMap<H, Stored> = HashMap::new();
    let mut prev: Vec<H> = vec![];
    let mut per_hour = vec![];
    let mut last_ids = vec![];
    for f in files {
        let data = std::fs::read(f).unwrap();
        let chunks = chunk_slice(&data, &gear, params);
        let pos: HashMap<H, usize> = prev.iter().enumerate().map(|(i, x)| (*x, i)).collect();
        let mut cursor: Option<usize> = None;
        let mut bytes = 0usize;
        let mut ids = vec![];
        for c in chunks {
            let id = *blake3::hash(&c).as_bytes();
            ids.push(id);
            if store.contains_key(&id) {
                if let Some(p) = pos.get(&id) {
                    cursor = Some(*p);
                }
                continue;
            }
            let next = cursor.map_or(0, |x| x + 1);
            cursor = Some(next);
            let plain = compress(level, c.clone()).1.len();
            let lo = next.saturating_sub(window / 2);
            let cands: Vec<H> = prev.iter().skip(lo).take(window).copied().collect();
            // resolve each candidate: itself when shallow enough, else its chain's root
            let mut bases: Vec<H> = vec![];
            let mut depth = 0;
            for c in &cands {
                let s = &store[c];
                let b = if s.depth < max_depth { *c } else { s.root };
                if !bases.contains(&b) {
                    bases.push(b);
                    depth = depth.max(store[&b].depth + 1);
                }
            }
            let mut rec = Stored { depth: 0, root: id, bases: vec![], plain: Arc::new(c.clone()) };
            let mut cost = plain;
            if !bases.is_empty() {
                let prefix: Vec<u8> =
                    bases.iter().flat_map(|b| store[b].plain.iter().copied()).collect();
                let d = compress_delta(level, &prefix, &c).unwrap().len() + 32 * bases.len();
                if d * 4 <= plain * 3 {
                    cost = d;
                    let root = store[&bases[0]].root;
                    rec = Stored { depth, root, bases, plain: rec.plain };
                }
            }
            bytes += cost + 60; // index entry, footer entry, list entry
            store.insert(id, rec);
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
        "depth<={max_depth:2} window {window} l{level}: MB/h {} | restore decodes {decodes} ({:.2}/chunk, max depth {maxd}) {:.3}s",
        growth.join(" "),
        decodes as f64 / last_ids.len() as f64,
        t.elapsed().as_secs_f64()
    );
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
    let params = ChunkerParams::new(16 << 10, 64 << 10, 256 << 10).unwrap();
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
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if let Ok(k) = std::env::var("FIRST") {
        for f in &files {
            first(f, k.parse().unwrap(), 3);
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
