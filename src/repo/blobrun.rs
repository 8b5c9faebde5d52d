//! A sealed run of the index cache: the blob entries of a cache built from scratch (a fresh
//! pod's first open, or the rebuild after a prune), written once in key order to a flat file
//! instead of being inserted one by one into the redb B-tree.
//!
//! Inserting into redb cost about 1.3 µs an entry, sorted: 9.5-12.9 s for the 7.5 M entries of
//! a large repository against 0.7-0.9 s to download its index (benches/RESULTS.md). A run is
//! written sequentially; entries that later backups add go to redb as before, and lookups and
//! iteration merge the two. A run is a local file of one cache, never shared between
//! processes (redb locks the cache to one process) and never modified after it is named in
//! the cache's metadata.
//!
//! Layout (little-endian):
//! ```text
//! 0            magic "repo-run" (8)
//! 8            count records of RECORD bytes: key (64: chunk id, pack id), value length (1),
//!              value (VALUE_MAX, zero-padded; cache.rs `encode_loc`)
//! ...          blocks ids of 32 bytes: the chunk id of every BLOCK-th record (the first of
//!              each block), for lookups
//! end - 24     count u64, blocks u64, magic "repo-end" (8)
//! ```
//! Memory: the block ids, 32 bytes per BLOCK entries (3.75 MB at 7.5 M entries).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"repo-run";
const END: &[u8; 8] = b"repo-end";
const KEY: usize = 64;
/// The longest value (cache.rs `encode_loc`: 14 bytes, 46 with a delta's base).
const VALUE_MAX: usize = 46;
const RECORD: usize = KEY + 1 + VALUE_MAX;
/// Records per block (one read of about 7 KiB per lookup).
const BLOCK: usize = 64;

/// One entry: its key (chunk id, pack id) and value.
pub type Entry = ([u8; KEY], Vec<u8>);

/// An open run.
pub struct Run {
    file: File,
    path: PathBuf,
    count: u64,
    /// The chunk id of the first record of each block.
    firsts: Vec<[u8; 32]>,
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("damaged cache run: {what}"))
}

fn record(buf: &[u8]) -> std::io::Result<Entry> {
    let mut k = [0u8; KEY];
    k.copy_from_slice(&buf[..KEY]);
    let n = buf[KEY] as usize;
    if n > VALUE_MAX {
        return Err(bad("value length"));
    }
    Ok((k, buf[KEY + 1..KEY + 1 + n].to_vec()))
}

/// Builds a run from entries in any order without a general external sort: chunk ids are
/// uniformly random (keyed hashes), so records are spread over `BUCKETS` temporary files by
/// the first byte of the id, and each bucket (1/256 of the entries: 3 MB at 7.5 M entries) is
/// then sorted in memory and appended to the run. Memory: the buckets' write buffers and the
/// largest bucket. The bucket files are unlinked as soon as they are created, so a killed
/// process leaves none behind.
pub struct Builder {
    dir: PathBuf,
    buckets: Vec<Option<BufWriter<File>>>,
}

const BUCKETS: usize = 256;
const BUCKET_BUFFER: usize = 32 << 10;

impl Builder {
    /// A builder whose temporary files go to `dir`.
    pub fn new(dir: &Path) -> Builder {
        Builder { dir: dir.to_path_buf(), buckets: (0..BUCKETS).map(|_| None).collect() }
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.is_none())
    }

    /// Adds one entry (key: chunk id then pack id; value at most `VALUE_MAX` bytes).
    pub fn push(&mut self, key: &[u8; KEY], value: &[u8]) -> std::io::Result<()> {
        if value.len() > VALUE_MAX {
            return Err(bad("value length"));
        }
        let w = match &mut self.buckets[key[0] as usize] {
            Some(w) => w,
            slot => {
                let (_, f) = super::sorted::unlinked_file(&self.dir, "run-bucket")
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                slot.insert(BufWriter::with_capacity(BUCKET_BUFFER, f))
            }
        };
        let mut rec = [0u8; RECORD];
        rec[..KEY].copy_from_slice(key);
        rec[KEY] = value.len() as u8;
        rec[KEY + 1..KEY + 1 + value.len()].copy_from_slice(value);
        w.write_all(&rec)
    }

    /// Writes the run to `path` (repeated keys once), fsynced when `durable`; returns the
    /// number of records.
    pub fn finish(mut self, path: &Path, durable: bool) -> std::io::Result<u64> {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
        w.write_all(MAGIC)?;
        let (mut count, mut firsts) = (0u64, Vec::new());
        let buckets: Vec<BufWriter<File>> =
            self.buckets.iter_mut().filter_map(Option::take).collect();
        // one thread reads and sorts the next buckets while this one writes (the two halves
        // of the build's last step take about as long each). Buffers go back and forth: fresh
        // pages for each bucket cost a fifth of the build
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Sorted>>(1);
            let (back, spare) = std::sync::mpsc::channel::<Sorted>();
            for _ in 0..3 {
                let _ = back.send(Sorted::default());
            }
            scope.spawn(move || {
                for bw in buckets {
                    let Ok(mut buf) = spare.recv() else { return };
                    let sorted = buf.fill(bw).map(|()| buf);
                    let stop = sorted.is_err();
                    if tx.send(sorted).is_err() || stop {
                        return;
                    }
                }
            });
            for sorted in rx {
                let sorted = sorted?;
                for &i in &sorted.order {
                    let r = &sorted.bytes[i as usize * RECORD..(i as usize + 1) * RECORD];
                    if count % BLOCK as u64 == 0 {
                        let mut id = [0u8; 32];
                        id.copy_from_slice(&r[..32]);
                        firsts.push(id);
                    }
                    w.write_all(r)?;
                    count += 1;
                }
                let _ = back.send(sorted);
            }
            Ok::<(), std::io::Error>(())
        })?;
        for f in &firsts {
            w.write_all(f)?;
        }
        w.write_all(&count.to_le_bytes())?;
        w.write_all(&(firsts.len() as u64).to_le_bytes())?;
        w.write_all(END)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        if durable {
            file.sync_all()?;
        }
        Ok(count)
    }
}

/// A bucket's records and their order by key (repeats left out), in buffers reused from
/// bucket to bucket.
#[derive(Default)]
struct Sorted {
    bytes: Vec<u8>,
    order: Vec<u32>,
}

impl Sorted {
    fn fill(&mut self, bw: BufWriter<File>) -> std::io::Result<()> {
        let mut f = bw.into_inner().map_err(|e| e.into_error())?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
        self.bytes.clear();
        f.read_to_end(&mut self.bytes)?;
        drop(f);
        let n = self.bytes.len() / RECORD;
        let bytes = &self.bytes;
        let key = |i: u32| &bytes[i as usize * RECORD..i as usize * RECORD + KEY];
        self.order.clear();
        self.order.extend(0..n as u32);
        self.order.sort_unstable_by(|&x, &y| key(x).cmp(key(y)));
        self.order.dedup_by(|x, y| key(*x) == key(*y));
        Ok(())
    }
}

impl Run {
    /// Opens a run written by [`Builder::finish`], checking its size against its trailer.
    pub fn open(path: &Path) -> std::io::Result<Run> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        if size < 8 + 24 {
            return Err(bad("too short"));
        }
        let mut t = [0u8; 24];
        file.read_exact_at(&mut t, size - 24)?;
        let u = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().unwrap_or([0xff; 8]));
        let (count, blocks) = (u(0), u(8));
        if &t[16..] != END || blocks != count.div_ceil(BLOCK as u64) {
            return Err(bad("trailer"));
        }
        // a damaged trailer must not make the sums wrap (and a huge allocation pass the check)
        let expected = count
            .checked_mul(RECORD as u64)
            .and_then(|body| body.checked_add(blocks.checked_mul(32)?))
            .and_then(|n| n.checked_add(8 + 24));
        if expected != Some(size) {
            return Err(bad("size"));
        }
        let body = count * RECORD as u64;
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0)?;
        if &magic != MAGIC {
            return Err(bad("magic"));
        }
        let mut ids = vec![0u8; blocks as usize * 32];
        file.read_exact_at(&mut ids, 8 + body)?;
        let firsts = ids
            .chunks_exact(32)
            .map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(c);
                id
            })
            .collect();
        Ok(Run { file, path: path.to_path_buf(), count, firsts })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records in the run.
    #[cfg(test)]
    pub fn records(&self) -> u64 {
        self.count
    }

    /// The first block that may hold a key starting with `id`: the last one starting below
    /// it (the records of an id starting a block may begin at the end of the block before).
    fn start_block(&self, id: &[u8]) -> usize {
        self.firsts.partition_point(|f| &f[..] < id).saturating_sub(1)
    }

    fn block(&self, b: usize) -> std::io::Result<Vec<u8>> {
        let first = (b * BLOCK) as u64;
        let n = (self.count - first).min(BLOCK as u64) as usize;
        let mut buf = vec![0u8; n * RECORD];
        self.file.read_exact_at(&mut buf, 8 + first * RECORD as u64)?;
        Ok(buf)
    }

    /// Every entry whose key starts with `id`, in key order.
    pub fn copies(&self, id: &[u8; 32]) -> std::io::Result<Vec<Entry>> {
        let mut b = self.start_block(id);
        let mut out = Vec::new();
        while b < self.firsts.len() {
            let buf = self.block(b)?;
            for r in buf.chunks_exact(RECORD) {
                match r[..32].cmp(&id[..]) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => out.push(record(r)?),
                    std::cmp::Ordering::Greater => return Ok(out),
                }
            }
            b += 1;
        }
        Ok(out)
    }

    /// The value stored under `key`, for keys asked in increasing order: `cursor` keeps the
    /// block read last, so a dense sorted ingest reads each block once.
    pub fn get_sorted(
        &self,
        key: &[u8; KEY],
        cursor: &mut Option<(usize, Vec<u8>)>,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let mut b = self.start_block(&key[..32]);
        while b < self.firsts.len() {
            if cursor.as_ref().is_none_or(|(at, _)| *at != b) {
                *cursor = Some((b, self.block(b)?));
            }
            let Some((_, buf)) = cursor.as_ref() else { return Ok(None) };
            for r in buf.chunks_exact(RECORD) {
                match r[..KEY].cmp(&key[..]) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return Ok(Some(record(r)?.1)),
                    std::cmp::Ordering::Greater => return Ok(None),
                }
            }
            b += 1;
        }
        Ok(None)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> std::io::Result<RunIter> {
        let mut f = self.file.try_clone()?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(8))?;
        Ok(RunIter { r: BufReader::with_capacity(1 << 20, f), left: self.count })
    }
}

/// The entries of a run in key order ([`Run::iter`]).
pub struct RunIter {
    r: BufReader<File>,
    left: u64,
}

impl Iterator for RunIter {
    type Item = std::io::Result<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut buf = [0u8; RECORD];
        Some(self.r.read_exact(&mut buf).and_then(|_| record(&buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8, pack: u8) -> Vec<u8> {
        let mut k = vec![id; 32];
        k.extend_from_slice(&[pack; 32]);
        k
    }

    #[test]
    fn a_run_finds_every_copy_across_blocks_and_iterates_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.run");
        // 3 copies of each of 200 ids: 600 records, blocks of 64 split some ids' copies
        let mut entries = vec![];
        for id in 0..200u8 {
            for pack in 0..3u8 {
                entries.push((key(id, pack), vec![id, pack, 7]));
            }
        }
        // a repeated key is written once; the builder takes entries in any order
        entries.insert(5, entries[4].clone());
        entries.reverse();
        let mut b = Builder::new(dir.path());
        for (k, v) in &entries {
            b.push(&k.clone().try_into().unwrap(), v).unwrap();
        }
        let n = b.finish(&path, true).unwrap();
        assert_eq!(n, 600);
        let run = Run::open(&path).unwrap();
        assert_eq!(run.records(), 600);
        for id in [0u8, 85, 86, 170, 199] {
            let c = run.copies(&[id; 32]).unwrap();
            assert_eq!(c.len(), 3, "id {id}");
            assert!(
                c.iter().enumerate().all(|(p, (k, v))| k[32] == p as u8 && v == &[id, p as u8, 7])
            );
        }
        assert!(run.copies(&[200; 32]).unwrap().is_empty());
        let all: Vec<Entry> = run.iter().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(all.len(), 600);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn a_damaged_or_truncated_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.run");
        let mut b = Builder::new(dir.path());
        for i in 0..10u8 {
            b.push(&key(i, 0).try_into().unwrap(), &[1; 14]).unwrap();
        }
        b.finish(&path, false).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(Run::open(&path).is_err());
        let mut b = bytes.clone();
        b[0] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(Run::open(&path).is_err());
        // a trailer claiming a count whose size would overflow
        let mut b = bytes.clone();
        let n = b.len();
        let count = u64::MAX / RECORD as u64;
        b[n - 24..n - 16].copy_from_slice(&count.to_le_bytes());
        b[n - 16..n - 8].copy_from_slice(&count.div_ceil(BLOCK as u64).to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        assert!(Run::open(&path).is_err());
        // a value too long for a record is refused, and no bucket file is left behind
        let mut b = Builder::new(dir.path());
        assert!(b.is_empty());
        b.push(&key(1, 0).try_into().unwrap(), &[0; 14]).unwrap();
        assert!(!b.is_empty());
        assert!(b.push(&key(2, 0).try_into().unwrap(), &[0; 47]).is_err());
        drop(b);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "only the run: {left:?}");
    }
}
