//! How much the chunking of one file depends on the repository's secret chunker key: chunks
//! the file with `KEYS` random keys (default 200) and the default parameters (128 KiB
//! average, a quarter and four times that for min and max; `CHUNK_AVG` and `CHUNK_MIN` to
//! change them) and prints the chunk counts, sorted, with how many chunks are within 1/16 of
//! the minimum size. A measuring tool for benches/RESULTS.md ("Chunk counts by key").
//!
//! Usage: cargo run --release --example chunk_keys -- FILE
use repo::codec::chunker::{ChunkerParams, Gear, chunk_slice};

fn main() {
    let path = std::env::args().nth(1).expect("usage: chunk_keys FILE");
    let data = std::fs::read(&path).expect("read the file");
    let var = |k: &str, d: u32| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let avg = var("CHUNK_AVG", 128 << 10);
    let min = var("CHUNK_MIN", avg / 4);
    let params = ChunkerParams::new(min, avg, avg * 4).expect("chunker parameters");
    let mut rows = Vec::new();
    for k in 0..var("KEYS", 200) {
        let key = *blake3::hash(&k.to_le_bytes()).as_bytes();
        let chunks = chunk_slice(&data, &Gear::from_key(&key), params);
        let near_min = chunks.iter().filter(|c| c.len() < (min + min / 16) as usize).count();
        rows.push((chunks.len(), near_min));
    }
    rows.sort_unstable();
    for (n, near) in &rows {
        println!("{n}\t{near}");
    }
}
