//! Adds one stream snapshot of N distinct small chunks to an existing repository, fast, for
//! measuring commands at millions of chunks (issue: a year of hourly dumps). The chunks are
//! pseudo-random bytes (incompressible, distinct from any earlier run) fed straight into the
//! backup pipeline, skipping the chunker: the repository, its packs, index files and content
//! lists are exactly what a backup writes, at 10 M chunks in about a gigabyte of disk.
//!
//! Usage: REPO_PASSWORD=… cargo run --release --example synth_repo -- REPO NAME N [BYTES]
//! (BYTES per chunk, 64 by default)
use std::sync::Arc;

use repo::format::snapshot::SnapshotKind;
use repo::repo::{
    Access, ChunkSink, Content, NoProgress, Repository, SnapshotMeta, StreamMsg, backup_with,
};

const BATCH: usize = 16384;

/// xorshift64*: enough to make chunks distinct and incompressible.
struct Rng(u64);
impl Rng {
    fn fill(&mut self, out: &mut [u8]) {
        for w in out.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            w.copy_from_slice(&v[..w.len()]);
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: synth_repo REPO NAME N [BYTES]");
        std::process::exit(2);
    }
    let (url, name) = (&args[1], args[2].clone());
    let n: u64 = args[3].parse().expect("N: a number of chunks");
    let bytes: usize = args.get(4).map_or(64, |b| b.parse().expect("BYTES: a number"));
    assert!(bytes >= 16, "BYTES: at least 16, or chunks repeat");
    let backend = repo::backend::from_url(url).expect("a repository location");
    let pw = std::env::var("REPO_PASSWORD").ok().map(String::into_bytes);
    let cache = std::env::var_os("REPO_CACHE_DIR").map(std::path::PathBuf::from);
    let r = Arc::new(
        Repository::open(backend, pw.as_deref(), cache, Access::Backup)
            .await
            .expect("open the repository"),
    );
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).expect("a random seed");
    let mut rng = Rng(u64::from_le_bytes(seed) | 1);
    let meta = SnapshotMeta {
        name,
        host: "synth".into(),
        tags: vec![],
        command: String::new(),
        time_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
    };
    let body = move |sink: &mut ChunkSink| {
        let (tx, rx) = crossbeam_channel::bounded(2);
        std::thread::spawn(move || {
            let mut left = n;
            while left > 0 {
                let k = left.min(BATCH as u64);
                let batch: Vec<Vec<u8>> = (0..k)
                    .map(|_| {
                        let mut c = vec![0u8; bytes];
                        rng.fill(&mut c);
                        c
                    })
                    .collect();
                if tx.send(StreamMsg::Batch(0, batch)).is_err() {
                    return;
                }
                left -= k;
            }
            let _ = tx.send(StreamMsg::End(0, Ok(n * bytes as u64)));
        });
        let mut out = sink.store_interleaved(vec![None], rx, &NoProgress)?;
        let (lists, size) = out.pop().unwrap_or_default();
        Ok(Content { lists, size, chunks: n })
    };
    let (id, _, stats) = backup_with(r.clone(), SnapshotKind::Stream, meta, body, async { Ok(()) })
        .await
        .expect("backup");
    r.close().await;
    println!(
        "snapshot {}: {} chunks, {} packs, {} index files",
        &id.to_hex()[..8],
        stats.chunks,
        stats.packs_written,
        stats.index_files_written
    );
}
