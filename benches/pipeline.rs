//! Micro-benchmarks of the backup pipeline's stages: chunking, hashing, compression with
//! encryption, and the packer. `cargo bench`; figures go to benches/RESULTS.md.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use repo::codec::chunker::{ChunkerParams, Gear, StreamChunker};
use repo::codec::compress::compress;
use repo::codec::crypto::{MasterKeys, ObjectCipher};
use repo::codec::sketch::sketch;
use repo::format::envelope::{CipherKind, Header, MAGIC_PACK};
use repo::format::pack::BlobType;
use repo::repo::packer::PackBuilder;

/// Dump-like input: repetitive rows with varying numbers (compressible, like pg_dump output).
fn input(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while v.len() < len {
        i += 1;
        v.extend_from_slice(
            format!(
                "{}\t{}\t{}\tsome text of a row {}\n",
                i,
                i * 7919 % 1000,
                (i * 2654435761) % 100000,
                i % 97
            )
            .as_bytes(),
        );
    }
    v.truncate(len);
    v
}

fn bench(c: &mut Criterion) {
    let data = input(32 << 20);
    let keys = MasterKeys::from_bytes(&[3u8; 96]);
    let gear = Gear::from_key(&keys.chunker);
    let p = ChunkerParams::new(16 << 10, 64 << 10, 256 << 10).expect("params");
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("chunking (FastCDC, secret gear, 64 KiB avg)", |b| {
        b.iter(|| {
            let mut ch = StreamChunker::new(&data[..], &gear, p);
            let mut n = 0;
            while let Ok(Some(c)) = ch.next_chunk() {
                n += c.len();
            }
            n
        })
    });
    g.bench_function("resemblance sketch, 128 KiB pieces", |b| {
        b.iter(|| data.chunks(128 << 10).map(|c| sketch(c)[0]).fold(0u64, |a, x| a ^ x))
    });
    g.bench_function("hashing (keyed BLAKE3, 64 KiB pieces)", |b| {
        b.iter(|| data.chunks(64 << 10).map(|c| keys.chunk_id(c).0[0]).fold(0u8, |a, x| a ^ x))
    });
    let header = Header { magic: MAGIC_PACK, cipher: CipherKind::Aes256Gcm, salt: [1; 32] };
    let cipher = ObjectCipher::new(&keys, &header);
    g.bench_function("compress zstd-3 + seal AES-256-GCM, 64 KiB pieces", |b| {
        b.iter_batched(
            || data.chunks(64 << 10).map(|c| c.to_vec()).collect::<Vec<_>>(),
            |pieces| {
                let mut off = 40u64;
                for p in pieces {
                    let (_, mut d) = compress(3, p);
                    cipher.seal_in_place(off, &mut d).expect("seal");
                    off += d.len() as u64;
                }
                off
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("seal only (AES-256-GCM), 64 KiB pieces", |b| {
        b.iter_batched(
            || data.chunks(64 << 10).map(|c| c.to_vec()).collect::<Vec<_>>(),
            |pieces| {
                let mut off = 40u64;
                for mut p in pieces {
                    cipher.seal_in_place(off, &mut p).expect("seal");
                    off += p.len() as u64;
                }
                off
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("packer (seal + footer, 16 MiB packs of 64 KiB blobs)", |b| {
        b.iter_batched(
            || data.chunks(64 << 10).map(|c| (keys.chunk_id(c), c.to_vec())).collect::<Vec<_>>(),
            |blobs| {
                let mut packs = 0;
                let mut pb =
                    PackBuilder::new(&keys, CipherKind::Aes256Gcm, 16 << 20).expect("packer");
                for (id, d) in blobs {
                    let n = d.len() as u32;
                    pb.add(BlobType::Data, id, 0, n, None, d).expect("add");
                    if pb.is_full() {
                        packs += pb.finish().expect("finish").bytes.len();
                        pb = PackBuilder::new(&keys, CipherKind::Aes256Gcm, 16 << 20)
                            .expect("packer");
                    }
                }
                packs
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
