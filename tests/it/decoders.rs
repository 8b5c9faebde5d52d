//! The fuzz targets' entry points on stable: every decoder gets random bytes and mutations of
//! valid encodings (bit flips, truncations, extensions). Each must return, never panic. The
//! same decoders are fuzzed coverage-guided by `fuzz/` (see the README).

use repo::codec::crypto::MasterKeys;
use repo::format::Id;
use repo::format::bundle::Bundle;
use repo::format::config::Config;
use repo::format::envelope::{CipherKind, MAGIC_SNAPSHOT};
use repo::format::index::{BlobLocation, IndexFile, IndexPack};
use repo::format::key::{Kdf, KeyFile};
use repo::format::lock::{LeaseBody, LeaseName};
use repo::format::pack::{BlobType, PackEntry, decode_footer, encode_footer};
use repo::format::prune::PruneRecord;
use repo::format::snapshot::{Snapshot, SnapshotKind};
use repo::format::stream::{decode_list, encode_list};
use repo::format::tree::{self, decode_catalog};
use repo::ops::export::{Manifest, ManifestEntry};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let e = PackEntry {
        blob_type: BlobType::Data,
        flags: 1,
        raw_len: 100,
        stored_len: 60,
        id: Id([1; 32]),
        base: None,
    };
    let idx = IndexFile {
        supersedes: vec![Id([2; 32])],
        packs: vec![IndexPack {
            pack: Id([3; 32]),
            pack_len: 1000,
            blobs: vec![(
                Id([4; 32]),
                BlobLocation {
                    blob_type: BlobType::List,
                    flags: 0,
                    offset: 40,
                    stored_len: 60,
                    raw_len: 44,
                    base: None,
                },
            )],
        }],
    };
    let snap = Snapshot {
        time_ns: 5,
        kind: SnapshotKind::Stream,
        size: 9,
        chunks: 1,
        name: "n".into(),
        host: "h".into(),
        tags: vec!["t".into()],
        command: "c".into(),
        program: "p".into(),
        lists: vec![Id([5; 32])],
    };
    let key = KeyFile {
        kdf: Kdf::None,
        created: 1,
        m_cost: 0,
        t_cost: 0,
        p_cost: 0,
        salt: [0; 32],
        nonce: [0; 12],
        wrapped: [9; 112],
    };
    let cfg = Config {
        repo_id: [1; 32],
        chunk_min: 1024,
        chunk_avg: 4096,
        chunk_max: 16384,
        pack_target: 1 << 20,
        zstd_level: 3,
    };
    let keys = MasterKeys::from_bytes(&[7u8; 96]);
    let sealed =
        repo::repo::seal_object(&keys, CipherKind::None, MAGIC_SNAPSHOT, &snap.encode().unwrap())
            .unwrap();
    let delta = PackEntry {
        flags: repo::format::pack::FLAG_DELTA,
        base: Some(Id([2; 32])),
        blob_type: BlobType::Data,
        ..e
    };
    let mut idx_delta = idx.clone();
    idx_delta.packs[0].blobs.push((
        Id([5; 32]),
        BlobLocation {
            blob_type: BlobType::Data,
            flags: repo::format::pack::FLAG_DELTA,
            offset: 100,
            stored_len: 60,
            raw_len: 44,
            base: Some(Id([4; 32])),
        },
    ));
    vec![
        ("footer", encode_footer(&[e, e])),
        ("footer-delta", encode_footer(&[e, delta, e])),
        ("index-delta", idx_delta.encode()),
        ("delta-frame", delta_sample()),
        ("index", idx.encode()),
        ("index-sorted", {
            let l = idx_delta.packs[0].blobs[1].1;
            let entries = [(0, Id([1; 32]), l), (1, Id([1; 32]), l), (0, Id([3; 32]), l)];
            let table = [(Id([2; 32]), 4096), (Id([3; 32]), 4096)];
            repo::format::index::encode_sorted(&Id([9; 32]), &table, &entries)
        }),
        ("snapshot", snap.encode().unwrap()),
        ("key", key.encode()),
        ("config", cfg.encode()),
        ("list", encode_list(&[(Id([6; 32]), 10), (Id([7; 32]), 20)])),
        ("bundle", {
            let b = Bundle { objects: vec![(Id([1; 32]), sealed.clone()), (Id([2; 32]), vec![3])] };
            b.encode().unwrap()
        }),
        ("object", sealed),
        (
            "prune",
            PruneRecord {
                time_ns: 3,
                confirmed: true,
                waiting: vec![1, 2],
                packs: vec![Id([8; 32])],
                index_files: vec![Id([9; 32])],
            }
            .encode(),
        ),
        ("lease", LeaseBody { pid: 1, host: "host".into() }.encode()),
        ("lease-name", b"backup-0000000000000abc-1771034400".to_vec()),
        ("catalog", {
            let mut c = tree::catalog_header();
            let dir = tree::Entry {
                kind: Some(tree::Kind::Dir),
                mode: 0o755,
                path: b"d".to_vec(),
                xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
                ..Default::default()
            };
            let file = tree::Entry {
                kind: Some(tree::Kind::File),
                flags: tree::FLAG_SPARSE,
                size: 100,
                path: b"d/f".to_vec(),
                extents: vec![(10, 5)],
                content: tree::Content::Inline(vec![(Id([3; 32]), 5)]),
                ..Default::default()
            };
            let big = tree::Entry {
                kind: Some(tree::Kind::File),
                flags: tree::FLAG_LISTS,
                size: 1 << 30,
                path: b"d/g".to_vec(),
                content: tree::Content::Lists(vec![Id([4; 32])]),
                ..Default::default()
            };
            for e in [dir, file, big] {
                e.encode_into(&mut c).unwrap();
            }
            c
        }),
        ("export-manifest", {
            let mut m = Manifest { version: 1, files: Default::default() };
            m.files.insert(
                "postgres/db-20260214-020000.dump.gz".into(),
                ManifestEntry {
                    snapshot: "ab".repeat(32),
                    name: "postgres/db".into(),
                    size: 7,
                    stream: None,
                },
            );
            m.encode().unwrap()
        }),
    ]
}

/// A delta sample: `base length u16 LE, base, zstd frame against the base`.
fn delta_sample() -> Vec<u8> {
    let base: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut data = base.clone();
    data[500..520].copy_from_slice(&[1; 20]);
    let frame = repo::codec::compress::compress_delta(3, &base, &data).unwrap();
    let mut out = (base.len() as u16).to_le_bytes().to_vec();
    out.extend(&base);
    out.extend(frame);
    out
}

/// Decodes a delta sample (the layout of `delta_sample`), as the fuzz target does.
fn decode_delta_sample(b: &[u8]) -> Option<Vec<u8>> {
    let n = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
    let base = b.get(2..2 + n)?;
    repo::codec::compress::decompress_delta(base, b.get(2 + n..)?, 2000).ok()
}

fn decode_all(kind: &str, b: &[u8]) {
    match kind {
        "footer" | "footer-delta" => drop(decode_footer(b)),
        "index-delta" => drop(IndexFile::decode(b)),
        "delta-frame" => drop(decode_delta_sample(b)),
        "index" => drop(IndexFile::decode(b)),
        "index-sorted" => {
            drop(IndexFile::decode_sorted(b));
            drop(repo::format::index::sorted_table(b));
            drop(repo::format::index::walk_checked_sorted(b, |_| {}));
        }
        "snapshot" => drop(Snapshot::decode(b)),
        "key" => drop(KeyFile::decode(b)),
        "config" => drop(Config::decode(b)),
        "list" => drop(decode_list(b)),
        "prune" => drop(PruneRecord::decode(b)),
        "lease" => drop(LeaseBody::decode(b)),
        "lease-name" => drop(LeaseName::decode(&String::from_utf8_lossy(b))),
        "export-manifest" => drop(Manifest::decode(b)),
        "catalog" => drop(decode_catalog(b)),
        "bundle" => drop(Bundle::decode(b)),
        _ => {
            let keys = MasterKeys::from_bytes(&[7u8; 96]);
            for c in [CipherKind::None, CipherKind::Aes256Gcm] {
                if let Ok(body) = repo::repo::open_object(&keys, c, MAGIC_SNAPSHOT, b, "t") {
                    drop(Snapshot::decode(&body));
                }
            }
        }
    }
}

#[test]
fn valid_samples_decode() {
    for (k, b) in samples() {
        match k {
            "footer" => assert!(decode_footer(&b).is_ok()),
            "footer-delta" => assert_eq!(decode_footer(&b).unwrap()[1].base, Some(Id([2; 32]))),
            "index-delta" => assert!(IndexFile::decode(&b).is_ok()),
            "delta-frame" => assert_eq!(decode_delta_sample(&b).map(|d| d.len()), Some(2000)),
            "index" => assert!(IndexFile::decode(&b).is_ok()),
            "index-sorted" => assert_eq!(IndexFile::decode_sorted(&b).unwrap().packs.len(), 2),
            "snapshot" => assert!(Snapshot::decode(&b).is_ok()),
            "key" => assert!(KeyFile::decode(&b).is_ok()),
            "config" => assert!(Config::decode(&b).is_ok()),
            "list" => assert!(decode_list(&b).is_ok()),
            "prune" => assert!(PruneRecord::decode(&b).is_ok()),
            "lease" => assert!(LeaseBody::decode(&b).is_ok()),
            "lease-name" => assert!(LeaseName::decode(&String::from_utf8_lossy(&b)).is_ok()),
            "export-manifest" => assert!(Manifest::decode(&b).is_ok()),
            "catalog" => assert_eq!(decode_catalog(&b).unwrap().len(), 3),
            "bundle" => assert_eq!(Bundle::decode(&b).unwrap().objects.len(), 2),
            _ => {}
        }
    }
}

#[test]
fn mutated_and_random_inputs_never_panic() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (kind, base) in samples() {
        for _ in 0..3000 {
            let mut b = base.clone();
            match rng.below(4) {
                0 => {
                    let n = 1 + rng.below(4);
                    for _ in 0..n {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                }
                1 => b.truncate(rng.below(b.len())),
                2 => {
                    // large counts in the first words: must not allocate by them
                    let i = rng.below(b.len().saturating_sub(4));
                    b[i..i + 4].copy_from_slice(&u32::MAX.to_le_bytes()[..]);
                }
                _ => b = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            }
            decode_all(kind, &b);
        }
    }
}
