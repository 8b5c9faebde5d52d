//! An external sort of key–value records, for building the redb tables of a large repository
//! in key order.
//!
//! Inserting random keys into a B-tree rewrites a leaf page for nearly every key once the
//! table outgrows the page cache: taking in the index of 1.85 M chunks that way took 28 s.
//! Sorted, each leaf is written about once. Records are gathered in memory up to a bound,
//! sorted and spilled to temporary run files, then merged, so memory stays bounded however
//! many records there are.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{RepoError, Result};

/// Bytes of records held in memory before a run is spilled (keys and values, plus 24 bytes
/// of bookkeeping each).
const RUN_BYTES: usize = 16 << 20;

/// One record: key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Gathers records, then yields them in key order (equal keys in no particular order).
pub struct Sorter {
    dir: PathBuf,
    mem: Arena,
    runs: Vec<(PathBuf, File)>,
}

/// Records held in memory: their bytes back to back in one buffer (millions of small
/// records would otherwise be two allocations each), sorted through a table of slots.
#[derive(Default)]
struct Arena {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
}

/// Where a record lies in [`Arena::bytes`], with its key's first eight bytes (big-endian,
/// zero-padded) so that most comparisons touch only the slot table.
#[derive(Clone, Copy)]
struct Slot {
    prefix: u64,
    start: u32,
    key_len: u32,
    value_len: u32,
}

impl Arena {
    fn size(&self) -> usize {
        self.bytes.len() + self.slots.len() * std::mem::size_of::<Slot>()
    }
    fn push(&mut self, key: &[u8], value: &[u8]) {
        let mut p = [0u8; 8];
        let n = key.len().min(8);
        p[..n].copy_from_slice(&key[..n]);
        // a run is spilled before its buffer passes RUN_BYTES, so offsets fit in u32 unless
        // one record is gigabytes long, which no caller makes (ids, locations)
        debug_assert!(self.bytes.len() + key.len() + value.len() <= u32::MAX as usize);
        self.slots.push(Slot {
            prefix: u64::from_be_bytes(p),
            start: self.bytes.len() as u32,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
        });
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
    }
    fn parts(&self, s: &Slot) -> (&[u8], &[u8]) {
        let k = s.start as usize;
        let v = k + s.key_len as usize;
        (&self.bytes[k..v], &self.bytes[v..v + s.value_len as usize])
    }
    /// Sorts by (key, value) and drops exact repeats (a chunk named by many lists).
    fn sort(&mut self) {
        let mut slots = std::mem::take(&mut self.slots);
        slots.sort_unstable_by(|a, b| {
            a.prefix.cmp(&b.prefix).then_with(|| self.parts(a).cmp(&self.parts(b)))
        });
        slots.dedup_by(|a, b| a.prefix == b.prefix && self.parts(a) == self.parts(b));
        self.slots = slots;
    }
    fn clear(&mut self) {
        self.bytes.clear();
        self.slots.clear();
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> RepoError {
    RepoError::Cache { path: path.display().to_string(), reason: e.to_string() }
}

/// A new temporary file under `dir`, opened for reading and writing and already removed: the
/// open handle keeps its bytes until it is dropped, and nothing is left behind if the process
/// is killed. The path is only for error messages.
pub fn unlinked_file(dir: &Path, what: &str) -> Result<(PathBuf, File)> {
    let mut r = [0u8; 8];
    crate::codec::random_bytes(&mut r).map_err(|e| err(dir, e))?;
    let path = dir.join(format!("{what}-{}-{}.tmp", std::process::id(), hex::encode(r)));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| err(&path, e))?;
    std::fs::remove_file(&path).map_err(|e| err(&path, e))?;
    Ok((path, file))
}

impl Sorter {
    /// A sorter whose run files go under `dir`.
    pub fn new(dir: &Path) -> Sorter {
        Sorter { dir: dir.to_path_buf(), mem: Arena::default(), runs: Vec::new() }
    }

    /// Adds a record (copied); spills a sorted run to disk when the memory bound is reached.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.mem.size() + key.len() + value.len() > RUN_BYTES && !self.mem.slots.is_empty() {
            self.spill()?;
        }
        if self.mem.bytes.capacity() == 0 {
            self.mem.bytes.reserve(RUN_BYTES.min(1 << 20));
        }
        self.mem.push(key, value);
        Ok(())
    }

    /// True if no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.mem.slots.is_empty() && self.runs.is_empty()
    }

    fn spill(&mut self) -> Result<()> {
        self.mem.sort();
        let (path, file) = unlinked_file(&self.dir, "run")?;
        let mut w = BufWriter::new(file);
        for slot in &self.mem.slots {
            let (k, v) = self.mem.parts(slot);
            for part in [k, v] {
                w.write_all(&(part.len() as u32).to_le_bytes()).map_err(|e| err(&path, e))?;
                w.write_all(part).map_err(|e| err(&path, e))?;
            }
        }
        let mut file = w.into_inner().map_err(|e| err(&path, e.error()))?;
        std::io::Seek::rewind(&mut file).map_err(|e| err(&path, e))?;
        self.runs.push((path, file));
        self.mem.clear();
        Ok(())
    }

    /// Every record in key order.
    pub fn into_sorted(mut self) -> Result<Sorted> {
        self.mem.sort();
        let mut sources: Vec<Source> = vec![Source::Memory(std::mem::take(&mut self.mem), 0)];
        for (path, file) in self.runs.drain(..) {
            sources.push(Source::Run(path, BufReader::new(file)));
        }
        let mut heap = BinaryHeap::new();
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(r) = s.next()? {
                heap.push(Reverse((r, i)));
            }
        }
        Ok(Sorted { sources, heap })
    }
}

enum Source {
    /// Sorted records in memory, and the next one to yield.
    Memory(Arena, usize),
    Run(PathBuf, BufReader<File>),
}

impl Source {
    fn next(&mut self) -> Result<Option<Record>> {
        match self {
            Source::Memory(a, next) => {
                let Some(slot) = a.slots.get(*next) else { return Ok(None) };
                *next += 1;
                let (k, v) = a.parts(slot);
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            Source::Run(path, r) => {
                let mut read_part = |first: bool| -> Result<Option<Vec<u8>>> {
                    let mut len = [0u8; 4];
                    // the run ends cleanly only before a record: a short length is an error,
                    // never a quiet end (a lost id would look like a dead chunk to prune)
                    let mut got = 0;
                    while got < 4 {
                        match r.read(&mut len[got..]) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(err(path, e)),
                        }
                    }
                    match got {
                        0 if first => return Ok(None),
                        4 => {}
                        _ => return Err(err(path, "run file ends inside a record")),
                    }
                    let mut part = vec![0u8; u32::from_le_bytes(len) as usize];
                    r.read_exact(&mut part).map_err(|e| err(path, e))?;
                    Ok(Some(part))
                };
                let Some(k) = read_part(true)? else { return Ok(None) };
                let v = read_part(false)?.unwrap_or_default();
                Ok(Some((k, v)))
            }
        }
    }
}

/// The merged records, in key order.
pub struct Sorted {
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<(Record, usize)>>,
}

impl Iterator for Sorted {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        let Reverse((r, i)) = self.heap.pop()?;
        match self.sources[i].next() {
            Ok(Some(n)) => self.heap.push(Reverse((n, i))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_key_order_across_spilled_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(dir.path());
        // enough records for several runs; keys in a scrambled order, some repeated
        let n = 3 * RUN_BYTES / 34;
        let key = |i: usize| ((i * 7919) % n).to_be_bytes().to_vec();
        for i in 0..n {
            s.push(&key(i), &vec![i as u8; i % 3]).unwrap();
        }
        s.push(&key(5), &[]).unwrap(); // same key, another value: kept
        assert!(s.runs.len() >= 2, "{} runs", s.runs.len());
        let out: Vec<Record> = s.into_sorted().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(out.len(), n + 1);
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(out.iter().filter(|r| r.0 == key(5)).count(), 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "run files are unlinked");
    }

    #[test]
    fn keys_sharing_their_first_eight_bytes_sort_by_the_rest() {
        // the slot's 8-byte prefix decides most comparisons: short keys (zero-padded),
        // embedded zero bytes and keys equal in their first eight bytes must still come out
        // in plain byte order, as they would from a sort of the whole keys
        let keys: Vec<&[u8]> = vec![
            b"abcdefgh1",
            b"a",
            b"abcdefgh",
            b"a\0",
            b"",
            b"abcdefgh0",
            b"a\0b",
            b"b",
            b"ab",
            b"abcdefgh\0",
            b"\0",
            b"abcdefgi",
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(dir.path());
        for k in &keys {
            s.push(k, b"v").unwrap();
        }
        let out: Vec<Vec<u8>> = s.into_sorted().unwrap().map(|r| r.unwrap().0).collect();
        let mut want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        want.sort();
        assert_eq!(out, want);
    }

    #[test]
    fn exact_repeats_within_a_run_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(dir.path());
        for (k, v) in [(b"b", b"1"), (b"a", b"1"), (b"b", b"1"), (b"b", b"2")] {
            s.push(k, v).unwrap();
        }
        let out: Vec<Record> = s.into_sorted().unwrap().map(|r| r.unwrap()).collect();
        let want: Vec<Record> = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ];
        assert_eq!(out, want);
    }
}
