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
//! 0            magic "repo-rn3" (8)
//! 8            count records: chunk id (32), pack number (u32, an index into the pack
//!              table), value length (1: 14, or 46 with a delta's base), value (cache.rs
//!              `encode_loc`), grouped in blocks of at most BLOCK records
//! records_end  pack_count × 32: the pack ids, in increasing order (so that the order of
//!              (chunk id, pack number) is the order of the key (chunk id, pack id))
//! ...          block_count × 44: the chunk id of each block's first record, the byte offset
//!              of the block and its length (u32), in key order
//! end - 40     count u64, pack_count u64, block_count u64, records_end u64, "repo-end" (8)
//! ```
//! A record is 51 bytes, 83 for a delta: the pack id of the key is a 4-byte number, and a
//! value is not padded to the longest (the first layout had fixed 111-byte records; a fresh
//! pod writes every record twice, once to a bucket and once to the run, so the bytes written
//! are most of the build's time). Blocks need not lie in key order in the file: a run built
//! from the parts of a sorted index ([`Segments`]) writes each part as it arrives, in
//! whatever order the parts are fetched, and the block table puts them in order (version
//! "repo-rn2" had blocks in key order and no lengths). Memory: the pack table (32 bytes a
//! pack) and the block table as read (20 bytes per BLOCK records: the first 8 bytes of each
//! block's first id, its offset and length, 4.7 MB at 7.5 M entries).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"repo-rn3";
const END: &[u8; 8] = b"repo-end";
const KEY: usize = 64;
/// A record's fixed part: chunk id, pack number, value length.
const HEAD: usize = 32 + 4 + 1;
/// The two value lengths (cache.rs `encode_loc`: 14 bytes, 46 with a delta's base).
const VALUE_SHORT: usize = 14;
const VALUE_LONG: usize = 46;
/// The longest record.
const RECORD_MAX: usize = HEAD + VALUE_LONG;
/// Records per block: a lookup reads one block (1.6-2.7 KiB) and scans half of it on average.
/// 32 rather than 64: `check` at 7.5 M chunks spent a third of its time copying and scanning
/// blocks.
const BLOCK: usize = 32;
const TRAILER: usize = 40;
/// A block table entry: first chunk id, offset, length.
const BLOCK_ENTRY: usize = 32 + 8 + 4;
/// The most bytes one block may hold.
const BLOCK_MAX: usize = BLOCK * RECORD_MAX;

/// One entry: its key (chunk id, pack id) and value.
pub type Entry = ([u8; KEY], Vec<u8>);

/// An open run.
pub struct Run {
    file: File,
    path: PathBuf,
    count: u64,
    packs: Vec<[u8; 32]>,
    /// The first 8 bytes of each block's first chunk id, as big-endian numbers: a lookup's
    /// binary search compares these (a `memcmp` of whole ids per step was a quarter of
    /// `check`'s time at 7.5 M chunks).
    first_prefixes: Vec<u64>,
    /// The byte offset of each block.
    offsets: Vec<u64>,
    /// The byte length of each block.
    lens: Vec<u32>,
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("damaged cache run: {what}"))
}

/// The length of the record starting `buf` (which holds at least its fixed part).
fn record_len(buf: &[u8]) -> std::io::Result<usize> {
    match buf.get(HEAD - 1).map(|&n| n as usize) {
        Some(VALUE_SHORT) => Ok(HEAD + VALUE_SHORT),
        Some(VALUE_LONG) => Ok(HEAD + VALUE_LONG),
        _ => Err(bad("value length")),
    }
}

/// The first 8 bytes of a chunk id (or of a record, which starts with one) as a big-endian
/// number: it orders like the bytes.
fn prefix(id: &[u8]) -> u64 {
    u64::from_be_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]])
}

fn pack_number(rec: &[u8]) -> u32 {
    u32::from_le_bytes([rec[32], rec[33], rec[34], rec[35]])
}

/// The records of `buf` (whole records, as a block or a bucket holds them).
fn records(buf: &[u8]) -> impl Iterator<Item = std::io::Result<&[u8]>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let rest = &buf[at..];
        let r = match record_len(rest) {
            Ok(n) if n <= rest.len() => Ok(&rest[..n]),
            Ok(_) => Err(bad("record cut")),
            Err(e) => Err(e),
        };
        at = if r.is_ok() { at + r.as_ref().map_or(0, |r| r.len()) } else { buf.len() };
        Some(r)
    })
}

/// Builds a run from entries in any order without a general external sort: chunk ids are
/// uniformly random (keyed hashes), so records are spread over `BUCKETS` temporary files by
/// the first byte of the id, and each bucket (1/256 of the entries: 1.5 MB at 7.5 M entries)
/// is then sorted in memory and appended to the run. Memory: the buckets' write buffers, the
/// pack ids, and four times the largest bucket (three being read, sorted or written, and its
/// records as written). The bucket files are unlinked as soon as they are
/// created, so a killed process leaves none behind.
pub struct Builder {
    dir: PathBuf,
    buckets: Vec<Option<BufWriter<File>>>,
    /// Pack ids in the order they were first seen (a bucket record holds that number).
    packs: Vec<[u8; 32]>,
    numbers: HashMap<[u8; 32], u32>,
    /// The pack of the last entry and its number (entries come pack by pack).
    last: Option<([u8; 32], u32)>,
}

const BUCKETS: usize = 256;
const BUCKET_BUFFER: usize = 32 << 10;

impl Builder {
    /// A builder whose temporary files go to `dir`.
    pub fn new(dir: &Path) -> Builder {
        Builder {
            dir: dir.to_path_buf(),
            buckets: (0..BUCKETS).map(|_| None).collect(),
            packs: Vec::new(),
            numbers: HashMap::new(),
            last: None,
        }
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.is_none())
    }

    /// Adds one entry (key: chunk id then pack id; value: 14 or 46 bytes).
    pub fn push(&mut self, key: &[u8; KEY], value: &[u8]) -> std::io::Result<()> {
        if value.len() != VALUE_SHORT && value.len() != VALUE_LONG {
            return Err(bad("value length"));
        }
        let pack: [u8; 32] = key[32..].try_into().map_err(|_| bad("key"))?;
        let number = match self.last {
            Some((p, n)) if p == pack => n,
            _ => {
                let next = u32::try_from(self.packs.len())
                    .ok()
                    .filter(|n| *n < u32::MAX)
                    .ok_or_else(|| bad("too many packs"))?;
                let n = *self.numbers.entry(pack).or_insert(next);
                if n == next {
                    self.packs.push(pack);
                }
                self.last = Some((pack, n));
                n
            }
        };
        let w = match &mut self.buckets[key[0] as usize] {
            Some(w) => w,
            slot => {
                let (_, f) = super::sorted::unlinked_file(&self.dir, "run-bucket")
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                slot.insert(BufWriter::with_capacity(BUCKET_BUFFER, f))
            }
        };
        let mut rec = [0u8; RECORD_MAX];
        rec[..32].copy_from_slice(&key[..32]);
        rec[32..36].copy_from_slice(&number.to_le_bytes());
        rec[36] = value.len() as u8;
        rec[HEAD..HEAD + value.len()].copy_from_slice(value);
        w.write_all(&rec[..HEAD + value.len()])
    }

    /// Writes the run to `path` (repeated keys once), fsynced when `durable`; returns the
    /// number of records.
    pub fn finish(mut self, path: &Path, durable: bool) -> std::io::Result<u64> {
        // pack numbers in pack id order, so that records sort by (chunk id, pack number)
        let mut by_id: Vec<u32> = (0..self.packs.len() as u32).collect();
        by_id.sort_unstable_by_key(|&n| self.packs[n as usize]);
        let mut rank = vec![0u32; self.packs.len()];
        for (r, &n) in by_id.iter().enumerate() {
            rank[n as usize] = r as u32;
        }
        let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
        w.write_all(MAGIC)?;
        let (mut count, mut at) = (0u64, MAGIC.len() as u64);
        let (mut firsts, mut offsets) = (Vec::new(), Vec::new());
        // one bucket's records as written (pack numbers ranked), reused from bucket to bucket
        let mut out: Vec<u8> = Vec::new();
        let buckets: Vec<BufWriter<File>> =
            self.buckets.iter_mut().filter_map(Option::take).collect();
        let rank = &rank;
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
                    let sorted = buf.fill(bw, rank).map(|()| buf);
                    let stop = sorted.is_err();
                    if tx.send(sorted).is_err() || stop {
                        return;
                    }
                }
            });
            for sorted in rx {
                let sorted = sorted?;
                out.clear();
                for s in &sorted.order {
                    let r = &sorted.bytes[s.at as usize..s.at as usize + s.len as usize];
                    if count % BLOCK as u64 == 0 {
                        let mut id = [0u8; 32];
                        id.copy_from_slice(&r[..32]);
                        firsts.push(id);
                        offsets.push(at);
                    }
                    let n = rank.get(pack_number(r) as usize).ok_or_else(|| bad("pack number"))?;
                    let from = out.len();
                    out.extend_from_slice(r);
                    out[from + 32..from + 36].copy_from_slice(&n.to_le_bytes());
                    count += 1;
                    at += r.len() as u64;
                }
                w.write_all(&out)?;
                let _ = back.send(sorted);
            }
            Ok::<(), std::io::Error>(())
        })?;
        for &n in &by_id {
            w.write_all(&self.packs[n as usize])?;
        }
        offsets.push(at);
        let blocks: Vec<BlockEntry> = firsts
            .iter()
            .zip(offsets.windows(2))
            .map(|(f, o)| (*f, o[0], (o[1] - o[0]) as u32))
            .collect();
        write_tables(&mut w, self.packs.len(), &blocks, count, at)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        if durable {
            file.sync_all()?;
        }
        Ok(count)
    }
}

/// A block's first chunk id, byte offset and length.
type BlockEntry = ([u8; 32], u64, u32);

/// Writes the block table (the pack table is written already) and the trailer.
fn write_tables(
    w: &mut impl Write,
    packs: usize,
    blocks: &[BlockEntry],
    count: u64,
    records_end: u64,
) -> std::io::Result<()> {
    for (f, o, l) in blocks {
        w.write_all(f)?;
        w.write_all(&o.to_le_bytes())?;
        w.write_all(&l.to_le_bytes())?;
    }
    for n in [count, packs as u64, blocks.len() as u64, records_end] {
        w.write_all(&n.to_le_bytes())?;
    }
    w.write_all(END)
}

/// Writes a run from the parts of one sorted index (`format-spec/index.md`, "Sorted index
/// parts") as they arrive, in any order: each part's entries are already in key order and
/// the parts cover disjoint ranges of keys, so each part is written once, straight into the
/// run, and only the block table is put in order at the end. A fresh pod's cache is then
/// written while the index downloads, instead of being bucketed, sorted and written again
/// after the last file arrived.
pub struct Segments {
    path: PathBuf,
    /// The run being written, its pages handed to writeback as it goes: the parts arrive
    /// over the whole download, and the final fsync then waits for little.
    w: Option<BufWriter<crate::fsutil::WritebackFile>>,
    /// The set taken, and its pack table (the run's).
    set: Option<([u8; 32], Vec<[u8; 32]>)>,
    blocks: Vec<BlockEntry>,
    /// Per part written: its first and last key (chunk id, pack number) and its blocks.
    parts: Vec<Part>,
    /// The part being written: its first and last key, and its records in its last block.
    open: Option<Part>,
    in_block: usize,
    at: u64,
    count: u64,
    /// The file exists, and is removed on drop unless `finished`.
    created: bool,
    finished: bool,
}

/// A part's key range and where its blocks are in [`Segments::blocks`].
struct Part {
    first: ([u8; 32], u32),
    last: ([u8; 32], u32),
    blocks: std::ops::Range<usize>,
}

impl Segments {
    /// A run to be written at `path` (created with the first part).
    pub fn new(path: PathBuf) -> Segments {
        Segments {
            path,
            w: None,
            set: None,
            blocks: Vec::new(),
            parts: Vec::new(),
            open: None,
            in_block: 0,
            at: 0,
            count: 0,
            created: false,
            finished: false,
        }
    }

    /// Whether a part of `set` with this pack table can go into this run: the first part
    /// given fixes the set; a part of another set (or with another table) cannot.
    pub fn accepts(&mut self, set: &[u8; 32], packs: &[[u8; 32]]) -> bool {
        match &self.set {
            Some((s, p)) => s == set && p.as_slice() == packs,
            None => {
                self.set = Some((*set, packs.to_vec()));
                true
            }
        }
    }

    /// Starts a part (of the set [`Segments::accepts`] took).
    pub fn begin(&mut self) -> std::io::Result<()> {
        self.end();
        if self.w.is_none() {
            let f = File::create(&self.path)?;
            self.created = true;
            let mut w = BufWriter::with_capacity(1 << 20, crate::fsutil::WritebackFile::new(f));
            w.write_all(MAGIC)?;
            self.at = MAGIC.len() as u64;
            self.w = Some(w);
        }
        self.in_block = 0;
        let n = self.blocks.len();
        self.open = Some(Part { first: ([0; 32], 0), last: ([0; 32], 0), blocks: n..n });
        Ok(())
    }

    /// Adds the next record of the part begun, which must follow the last in key order.
    pub fn push(&mut self, id: &[u8; 32], pack: u32, value: &[u8]) -> std::io::Result<()> {
        if value.len() != VALUE_SHORT && value.len() != VALUE_LONG {
            return Err(bad("value length"));
        }
        let in_table = self.set.as_ref().is_some_and(|(_, p)| (pack as usize) < p.len());
        let (Some(part), Some(w), true) = (&mut self.open, &mut self.w, in_table) else {
            return Err(bad("record outside a part"));
        };
        let key = (*id, pack);
        if part.blocks.is_empty() {
            part.first = key;
        } else if !(prefix(id) > prefix(&part.last.0) || key > part.last) {
            return Err(bad("part out of order"));
        }
        part.last = key;
        let len = (HEAD + value.len()) as u32;
        if part.blocks.is_empty() || self.in_block == BLOCK {
            self.blocks.push((*id, self.at, 0));
            part.blocks.end = self.blocks.len();
            self.in_block = 0;
        }
        if let Some(b) = self.blocks.last_mut() {
            b.2 += len;
        }
        self.in_block += 1;
        let mut rec = [0u8; RECORD_MAX];
        rec[..32].copy_from_slice(id);
        rec[32..36].copy_from_slice(&pack.to_le_bytes());
        rec[36] = value.len() as u8;
        rec[HEAD..HEAD + value.len()].copy_from_slice(value);
        w.write_all(&rec[..len as usize])?;
        self.at += u64::from(len);
        self.count += 1;
        Ok(())
    }

    /// Ends the part begun (a part without records is dropped).
    pub fn end(&mut self) {
        if let Some(p) = self.open.take().filter(|p| !p.blocks.is_empty()) {
            self.parts.push(p);
        }
    }

    /// Records written.
    pub fn records(&self) -> u64 {
        self.count
    }

    /// Writes the tables and closes the run, fsynced when `durable`; returns the number of
    /// records. Parts whose key ranges overlap (not one set's) are refused.
    pub fn finish(mut self, durable: bool) -> std::io::Result<u64> {
        self.end();
        let (Some(mut w), Some((_, packs))) = (self.w.take(), self.set.take()) else {
            return Err(bad("no part"));
        };
        self.parts.sort_unstable_by_key(|a| a.first);
        if self.parts.windows(2).any(|p| p[0].last >= p[1].first) {
            return Err(bad("the parts of a sorted index overlap"));
        }
        for p in &packs {
            w.write_all(p)?;
        }
        let blocks: Vec<BlockEntry> =
            self.parts.iter().flat_map(|p| self.blocks[p.blocks.clone()].iter().copied()).collect();
        write_tables(&mut w, packs.len(), &blocks, self.count, self.at)?;
        w.flush()?;
        if durable {
            w.get_ref().file().sync_all()?;
        }
        self.finished = true;
        Ok(self.count)
    }

    /// The run's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Segments {
    /// A run not finished is removed (an error part way, or nothing accepted).
    fn drop(&mut self) {
        if !self.finished && self.created {
            self.w = None;
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a record of a bucket starts, and its length.
#[derive(Clone, Copy)]
struct Slot {
    /// The first 8 bytes of the chunk id, big-endian: most comparisons end here.
    prefix: u64,
    at: u32,
    len: u8,
}

/// A bucket's records and their order by key (repeats left out), in buffers reused from
/// bucket to bucket.
#[derive(Default)]
struct Sorted {
    bytes: Vec<u8>,
    order: Vec<Slot>,
}

impl Sorted {
    fn fill(&mut self, bw: BufWriter<File>, rank: &[u32]) -> std::io::Result<()> {
        let mut f = bw.into_inner().map_err(|e| e.into_error())?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
        self.bytes.clear();
        f.read_to_end(&mut self.bytes)?;
        drop(f);
        if self.bytes.len() > u32::MAX as usize {
            return Err(bad("bucket too large"));
        }
        self.order.clear();
        let mut at = 0usize;
        for r in records(&self.bytes) {
            let r = r?;
            let prefix = prefix(r);
            self.order.push(Slot { prefix, at: at as u32, len: r.len() as u8 });
            at += r.len();
        }
        let bytes = &self.bytes;
        let rest = |s: &Slot| &bytes[s.at as usize + 8..s.at as usize + 32];
        let pack = |s: &Slot| {
            rank.get(pack_number(&bytes[s.at as usize..]) as usize).copied().unwrap_or(u32::MAX)
        };
        let key_order = |x: &Slot, y: &Slot| {
            x.prefix
                .cmp(&y.prefix)
                .then_with(|| rest(x).cmp(rest(y)))
                .then_with(|| pack(x).cmp(&pack(y)))
        };
        // by the 8-byte prefix alone first (uniformly random: ties are copies of one chunk,
        // or rare), then each run of equal prefixes by the whole key: comparing whole keys
        // throughout was a sixth of a fresh pod's open
        self.order.sort_unstable_by_key(|s| s.prefix);
        for same in self.order.chunk_by_mut(|x, y| x.prefix == y.prefix) {
            if same.len() > 1 {
                same.sort_unstable_by(key_order);
            }
        }
        self.order.dedup_by(|x, y| key_order(x, y).is_eq());
        Ok(())
    }
}

impl Run {
    /// Opens a run written by [`Builder::finish`], checking its tables against its size.
    pub fn open(path: &Path) -> std::io::Result<Run> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        if size < (MAGIC.len() + TRAILER) as u64 {
            return Err(bad("too short"));
        }
        let mut t = [0u8; TRAILER];
        file.read_exact_at(&mut t, size - TRAILER as u64)?;
        let u = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().unwrap_or([0xff; 8]));
        let (count, npacks, blocks, records_end) = (u(0), u(8), u(16), u(24));
        // every block holds 1..=BLOCK records
        let blocks_ok = blocks <= count && count <= blocks.saturating_mul(BLOCK as u64);
        if &t[32..] != END || !blocks_ok {
            return Err(bad("trailer"));
        }
        // a damaged trailer must not make the sums wrap (and a huge allocation pass the check)
        let expected = npacks
            .checked_mul(32)
            .and_then(|p| p.checked_add(blocks.checked_mul(BLOCK_ENTRY as u64)?))
            .and_then(|n| n.checked_add(records_end))
            .and_then(|n| n.checked_add(TRAILER as u64));
        let records_fit = count
            .checked_mul((HEAD + VALUE_SHORT) as u64)
            .and_then(|min| min.checked_add(MAGIC.len() as u64))
            .is_some_and(|min| records_end >= min);
        // pack numbers are u32 (the tables' bytes are bounded by the file's size)
        if expected != Some(size) || !records_fit || npacks > u64::from(u32::MAX) {
            return Err(bad("size"));
        }
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0)?;
        if &magic != MAGIC {
            return Err(bad("magic"));
        }
        let mut tables = vec![0u8; (npacks * 32 + blocks * BLOCK_ENTRY as u64) as usize];
        file.read_exact_at(&mut tables, records_end)?;
        let (p, b) = tables.split_at(npacks as usize * 32);
        let id = |c: &[u8]| -> [u8; 32] { c[..32].try_into().unwrap_or([0; 32]) };
        let packs: Vec<[u8; 32]> = p.chunks_exact(32).map(id).collect();
        let table = || b.chunks_exact(BLOCK_ENTRY);
        let first_prefixes: Vec<u64> = table().map(prefix).collect();
        let offsets: Vec<u64> = table()
            .map(|c| u64::from_le_bytes(c[32..40].try_into().unwrap_or([0xff; 8])))
            .collect();
        let lens: Vec<u32> =
            table().map(|c| u32::from_le_bytes(c[40..].try_into().unwrap_or([0xff; 4]))).collect();
        // a block is read whole: its length stays bounded, and the blocks cover the records
        // (their sum is the records' bytes; each lies within them)
        let blocks_fit = offsets.iter().zip(&lens).all(|(&o, &l)| {
            (1..=BLOCK_MAX as u32).contains(&l)
                && o >= MAGIC.len() as u64
                && o.checked_add(u64::from(l)).is_some_and(|e| e <= records_end)
        });
        let covered = lens.iter().map(|&l| u64::from(l)).sum::<u64>() + MAGIC.len() as u64;
        let ordered = first_prefixes.windows(2).all(|w| w[0] <= w[1]);
        if !blocks_fit
            || covered != records_end
            || !ordered
            || !packs.windows(2).all(|w| w[0] < w[1])
        {
            return Err(bad("tables"));
        }
        Ok(Run { file, path: path.to_path_buf(), count, packs, first_prefixes, offsets, lens })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records in the run.
    pub fn records(&self) -> u64 {
        self.count
    }

    /// The key and value of a record.
    fn entry(&self, r: &[u8]) -> std::io::Result<Entry> {
        let pack = self.packs.get(pack_number(r) as usize).ok_or_else(|| bad("pack number"))?;
        let mut k = [0u8; KEY];
        k[..32].copy_from_slice(&r[..32]);
        k[32..].copy_from_slice(pack);
        Ok((k, r[HEAD..].to_vec()))
    }

    /// The first block that may hold a key starting with `id`: the last one starting below
    /// it (the records of an id starting a block may begin at the end of the block before).
    fn start_block(&self, id: &[u8]) -> usize {
        // every block before the one found starts below `id`'s prefix, so the first record at
        // or above `id` is in the block before it or later (blocks starting with the same
        // prefix, which only repeated copies of one id make likely, are then scanned through)
        let want = prefix(id);
        self.first_prefixes.partition_point(|p| *p < want).saturating_sub(1)
    }

    fn block(&self, b: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; self.lens[b] as usize];
        self.file.read_exact_at(&mut buf, self.offsets[b])?;
        Ok(buf)
    }

    /// Every entry whose key starts with `id`, in key order.
    pub fn copies(&self, id: &[u8; 32]) -> std::io::Result<Vec<Entry>> {
        let mut b = self.start_block(id);
        let want = prefix(id);
        let mut out = Vec::new();
        while b < self.first_prefixes.len() {
            let buf = self.block(b)?;
            for r in records(&buf) {
                let r = r?;
                match prefix(r).cmp(&want).then_with(|| r[..32].cmp(&id[..])) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => out.push(self.entry(r)?),
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
        while b < self.first_prefixes.len() {
            if cursor.as_ref().is_none_or(|(at, _)| *at != b) {
                *cursor = Some((b, self.block(b)?));
            }
            let Some((_, buf)) = cursor.as_ref() else { return Ok(None) };
            for r in records(buf) {
                let r = r?;
                match r[..32].cmp(&key[..32]) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Greater => return Ok(None),
                    std::cmp::Ordering::Equal => {}
                }
                let (k, v) = self.entry(r)?;
                match k.cmp(key) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => return Ok(Some(v)),
                    std::cmp::Ordering::Greater => return Ok(None),
                }
            }
            b += 1;
        }
        Ok(None)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> std::io::Result<RunIter<'_>> {
        Ok(RunIter { run: self, next_block: 0, buf: Vec::new(), at: 0 })
    }
}

/// Bytes an iteration reads at once: consecutive blocks that lie one after the other in the
/// file are read together.
const ITER_READ: u64 = 1 << 20;

/// The entries of a run in key order ([`Run::iter`]).
pub struct RunIter<'a> {
    run: &'a Run,
    next_block: usize,
    /// Whole blocks read, and where the next record starts in them.
    buf: Vec<u8>,
    at: usize,
}

impl RunIter<'_> {
    /// Reads the next blocks in key order, as many as lie back to back (up to `ITER_READ`).
    fn fill(&mut self) -> std::io::Result<bool> {
        let (offsets, lens) = (&self.run.offsets, &self.run.lens);
        let Some(&from) = offsets.get(self.next_block) else { return Ok(false) };
        let mut to = from;
        while let (Some(&o), Some(&l)) = (offsets.get(self.next_block), lens.get(self.next_block)) {
            if o != to || (to > from && to - from + u64::from(l) > ITER_READ) {
                break;
            }
            to += u64::from(l);
            self.next_block += 1;
        }
        self.buf.resize((to - from) as usize, 0);
        self.run.file.read_exact_at(&mut self.buf, from)?;
        self.at = 0;
        Ok(true)
    }
}

impl Iterator for RunIter<'_> {
    type Item = std::io::Result<Entry>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.buf.len() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(self.stop(e))),
            }
        }
        let r =
            records(&self.buf[self.at..]).next()?.and_then(|r| Ok((self.run.entry(r)?, r.len())));
        match r {
            Ok((e, n)) => {
                self.at += n;
                Some(Ok(e))
            }
            Err(e) => Some(Err(self.stop(e))),
        }
    }
}

impl RunIter<'_> {
    /// Ends the iteration after an error: nothing after a failed read or a damaged record
    /// can be trusted.
    fn stop(&mut self, e: std::io::Error) -> std::io::Error {
        self.next_block = usize::MAX;
        self.buf.clear();
        self.at = 0;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of either length: the longer one (a delta's) for odd ids.
    fn value(id: u8, pack: u8) -> Vec<u8> {
        let mut v = vec![id, pack];
        v.resize(if id % 2 == 1 { VALUE_LONG } else { VALUE_SHORT }, 7);
        v
    }

    fn key(id: u8, pack: u8) -> Vec<u8> {
        let mut k = vec![id; 32];
        k.extend_from_slice(&[pack; 32]);
        k
    }

    /// A run of ids 0..200, each in packs 0..3: every copy of `ids` is found, and iteration
    /// gives all 600 records in key order.
    fn assert_three_copies_of_200(run: &Run, ids: &[u8]) {
        assert_eq!(run.records(), 600);
        for &id in ids {
            let c = run.copies(&[id; 32]).unwrap();
            assert_eq!(c.len(), 3, "id {id}");
            assert!(
                c.iter()
                    .enumerate()
                    .all(|(p, (k, v))| k[32] == p as u8 && v == &value(id, p as u8))
            );
        }
        assert!(run.copies(&[200; 32]).unwrap().is_empty());
        let all: Vec<Entry> = run.iter().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(all.len(), 600);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn a_run_finds_every_copy_across_blocks_and_iterates_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.run");
        // 3 copies of each of 200 ids: 600 records, blocks of 64 split some ids' copies
        let mut entries = vec![];
        for id in 0..200u8 {
            for pack in 0..3u8 {
                entries.push((key(id, pack), value(id, pack)));
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
        assert_three_copies_of_200(&run, &[0, 85, 86, 170, 199]);
    }

    #[test]
    fn ids_that_share_their_first_eight_bytes_keep_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.run");
        // one 8-byte prefix for all: the order rests on the bytes after it, then on the pack
        let mut entries = vec![];
        for tail in [200u8, 3, 77, 3, 150, 0] {
            for pack in [2u8, 0, 1] {
                let mut k = key(9, pack);
                k[20] = tail;
                entries.push((k, value(tail, pack)));
            }
        }
        let mut b = Builder::new(dir.path());
        for (k, v) in &entries {
            b.push(&k.clone().try_into().unwrap(), v).unwrap();
        }
        // the repeated tail 3 holds the same three keys twice: written once
        assert_eq!(b.finish(&path, true).unwrap(), 15);
        let run = Run::open(&path).unwrap();
        let all: Vec<Entry> = run.iter().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(all.len(), 15);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let mut id = [9u8; 32];
        id[20] = 77;
        let c = run.copies(&id).unwrap();
        assert_eq!(c.iter().map(|(k, _)| k[32]).collect::<Vec<_>>(), vec![0, 1, 2]);
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
        let count = u64::MAX / 51;
        b[n - 40..n - 32].copy_from_slice(&count.to_le_bytes());
        b[n - 24..n - 16].copy_from_slice(&count.div_ceil(BLOCK as u64).to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        assert!(Run::open(&path).is_err());
        // a record's damaged value length or pack number is an error when read, not a panic
        for (at, byte) in [(8 + 36, 15u8), (8 + 32, 9)] {
            let mut b = bytes.clone();
            b[at] = byte;
            std::fs::write(&path, &b).unwrap();
            let run = Run::open(&path).unwrap();
            assert!(run.copies(&[0; 32]).is_err());
            assert!(run.iter().unwrap().any(|e| e.is_err()));
        }
        // a value too long for a record is refused, and no bucket file is left behind
        let mut b = Builder::new(dir.path());
        assert!(b.is_empty());
        b.push(&key(1, 0).try_into().unwrap(), &[0; 14]).unwrap();
        assert!(!b.is_empty());
        assert!(b.push(&key(2, 0).try_into().unwrap(), &[0; 47]).is_err());
        assert!(b.push(&key(2, 0).try_into().unwrap(), &[0; 15]).is_err());
        drop(b);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "only the run: {left:?}");
    }

    #[test]
    fn parts_written_in_any_order_are_found_and_iterated_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.run");
        let packs: Vec<[u8; 32]> = (0..3u8).map(|p| [p; 32]).collect();
        let mut s = Segments::new(path.clone());
        // three parts of ids [0, 70), [70, 140), [140, 200), each id in packs 0..3; taken in
        // the order 2, 0, 1 (as downloads finish)
        for range in [140u8..200, 0..70, 70..140] {
            assert!(s.accepts(&[1; 32], &packs));
            s.begin().unwrap();
            for id in range {
                for p in 0..3u8 {
                    s.push(&[id; 32], u32::from(p), &value(id, p)).unwrap();
                }
            }
            s.end();
        }
        // another set, or another table, is not taken
        assert!(!s.accepts(&[2; 32], &packs));
        assert!(!s.accepts(&[1; 32], &packs[..2]));
        assert_eq!(s.finish(true).unwrap(), 600);
        let run = Run::open(&path).unwrap();
        assert_three_copies_of_200(&run, &[0, 69, 70, 139, 140, 199]);
        let mut cursor = None;
        let key: [u8; 64] = key(75, 2).try_into().unwrap();
        assert_eq!(run.get_sorted(&key, &mut cursor).unwrap(), Some(value(75, 2)));

        // parts whose ranges overlap are refused, and the unfinished file is removed
        let path = dir.path().join("o.run");
        let mut s = Segments::new(path.clone());
        for range in [0u8..10, 5..15] {
            assert!(s.accepts(&[1; 32], &packs));
            s.begin().unwrap();
            for id in range {
                s.push(&[id; 32], 0, &value(id, 0)).unwrap();
            }
        }
        assert!(s.finish(true).is_err());
        assert!(!path.exists());
        // records out of order within a part are refused
        let mut s = Segments::new(dir.path().join("d.run"));
        assert!(s.accepts(&[1; 32], &packs));
        s.begin().unwrap();
        s.push(&[5; 32], 1, &value(5, 1)).unwrap();
        assert!(s.push(&[5; 32], 0, &value(5, 0)).is_err());
        assert!(s.push(&[5; 32], 3, &value(5, 0)).is_err(), "pack number outside the table");
        drop(s);
        assert!(!dir.path().join("d.run").exists());
    }
}
