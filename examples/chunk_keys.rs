//! How much the chunking of one file depends on the repository's secret chunker key: chunks
//! the file with `KEYS` random keys (default 200) and the default parameters (1 MiB
//! average, a quarter and four times that for min and max; `CHUNK_AVG` and `CHUNK_MIN` to
//! change them) and prints the chunk counts, sorted, with how many chunks are within 1/16 of
//! the minimum size and the key's number. A measuring tool for benches/RESULTS.md ("Chunk counts by key").
//!
//! `SCREEN=1`: only keys that `init` would draw. `SHOW=k`: only key `k`, and the 48 bytes before each of its first cut points (the bytes
//! the cut test reads).
//!
//! Usage: cargo run --release --example chunk_keys -- FILE
use repo::codec::chunker::{ChunkerParams, Gear, chunk_slice};

fn main() {
    let path = std::env::args().nth(1).expect("usage: chunk_keys FILE");
    let data = std::fs::read(&path).expect("read the file");
    let var = |k: &str, d: u32| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let avg = var("CHUNK_AVG", 1 << 20);
    let min = var("CHUNK_MIN", avg / 4);
    let params = ChunkerParams::new(min, avg, avg * 4).expect("chunker parameters");
    if let Ok(k) = std::env::var("SHOW").map(|k| k.parse::<u32>().expect("SHOW=key number")) {
        let key = *blake3::hash(&k.to_le_bytes()).as_bytes();
        let mut at = 0;
        for c in
            chunk_slice(&data, &Gear::from_key(&key), params).iter().take(var("TAKE", 12) as usize)
        {
            at += c.len();
            println!("{at}\t{}\t{:?}", c.len(), String::from_utf8_lossy(&data[at - 48..at]));
        }
        return;
    }
    // SCREEN=1: only keys `init` would draw (`Gear::cuts_in_padding` false)
    let screen = std::env::var_os("SCREEN").is_some();
    let mut rows = Vec::new();
    let mut next = 0u32;
    while rows.len() < var("KEYS", 200) as usize {
        let k = next;
        next += 1;
        let key = *blake3::hash(&k.to_le_bytes()).as_bytes();
        let gear = Gear::from_key(&key);
        if screen && gear.cuts_in_padding() {
            continue;
        }
        let chunks = chunk_slice(&data, &gear, params);
        let near_min = chunks.iter().filter(|c| c.len() < (min + min / 16) as usize).count();
        rows.push((chunks.len(), near_min, k));
    }
    rows.sort_unstable();
    for (n, near, k) in &rows {
        println!("{n}\t{near}\t{k}");
    }
}
