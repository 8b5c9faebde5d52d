//! Index files (`index/<id>`): where each blob lives. Body of a sealed object (magic b"RIDX").
//!
//! ```text
//! supersedes_count u32, then that many 32-byte index file ids this file replaces (prune)
//! pack_count u32, then per pack:
//!   pack id        32
//!   pack_len       u64
//!   blob_count     u32
//!   blob_count entries of 48 bytes (80 for a delta):
//!     0  1  blob type
//!     1  1  flags       as in a pack footer (0, 1 = zstd, 2 = delta)
//!     2  2  reserved 0
//!     4  4  offset      of the sealed blob in the pack
//!     8  4  stored_len
//!     12 4  raw_len
//!     16 32 id
//!     48 32 base        only for a delta: the id of its base chunk
//! ```

use super::pack::{BlobType, MAX_BLOB_LEN, MAX_PACK_BLOBS, check_flags};
use super::{FormatError, Id, Reader, Writer, invalid};

/// Bytes of an index entry without a base id (a delta's entry has 32 more).
pub const INDEX_ENTRY_LEN: usize = 48;
/// Most packs one index file may list.
pub const MAX_INDEX_PACKS: usize = 1 << 20;
/// Most index file ids one index file may supersede.
pub const MAX_SUPERSEDES: usize = 1 << 20;

/// Where one blob lives in a pack, as listed by an index file and the local cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// Data chunk or content list.
    pub blob_type: BlobType,
    /// `0` raw, [`FLAG_ZSTD`](super::pack::FLAG_ZSTD) or [`FLAG_DELTA`](super::pack::FLAG_DELTA).
    pub flags: u8,
    /// Byte offset of the sealed blob in the pack file; also its nonce counter.
    pub offset: u32,
    /// Sealed length in bytes (compressed length plus the 16-byte tag).
    pub stored_len: u32,
    /// Plaintext length in bytes after decompression (at most 64 MiB).
    pub raw_len: u32,
    /// The base chunk of a delta (`flags == FLAG_DELTA`): needed to decode this one, and kept
    /// alive by it.
    pub base: Option<Id>,
}

/// One pack as listed by an index file: only packs already durably stored are listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPack {
    /// The pack's name (BLAKE3 of its bytes).
    pub pack: Id,
    /// Size of the pack file in bytes; every blob must end within it.
    pub pack_len: u64,
    /// Each blob's chunk id and location, in pack order.
    pub blobs: Vec<(Id, BlobLocation)>,
}

/// The body of an index file: the blobs of some packs, and the index files it replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// Index files this one replaces (written by prune; empty for backups): a reader that has this
    /// file may ignore them.
    pub supersedes: Vec<Id>,
    /// The packs described, each with all of its blobs.
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    /// The body of the sealed `RIDX` object (`format-spec/index.md`).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.supersedes.len() as u32);
        for s in &self.supersedes {
            w.id(s);
        }
        w.u32(self.packs.len() as u32);
        for p in &self.packs {
            w.id(&p.pack).u64(p.pack_len).u32(p.blobs.len() as u32);
            for (id, l) in &p.blobs {
                put_entry(&mut w, id, l);
            }
        }
        w.finish()
    }

    /// Decodes and checks an index body: counts against the input size, flags, and that every blob
    /// lies within its pack.
    pub fn decode(data: &[u8]) -> Result<IndexFile, FormatError> {
        let mut f = IndexFile::default();
        visit(data, |item| match item {
            IndexItem::Supersedes(id) => f.supersedes.push(id),
            IndexItem::Pack { pack, pack_len, blobs } => {
                f.packs.push(IndexPack { pack, pack_len, blobs: Vec::with_capacity(blobs) })
            }
            IndexItem::Blob(id, loc) => {
                if let Some(p) = f.packs.last_mut() {
                    p.blobs.push((id, loc));
                }
            }
        })?;
        Ok(f)
    }
}

/// One item of an index body, in the order of the body ([`visit`]).
#[derive(Clone, Copy, Debug)]
pub enum IndexItem {
    /// An index file this one replaces.
    Supersedes(Id),
    /// A pack: its id, its length, and how many blobs follow for it.
    Pack {
        /// The pack's name.
        pack: Id,
        /// Size of the pack file in bytes.
        pack_len: u64,
        /// Number of [`IndexItem::Blob`] items that follow for this pack.
        blobs: usize,
    },
    /// A blob of the last pack given: its chunk id and location.
    Blob(Id, BlobLocation),
}

/// Walks an index body item by item, with the checks of [`IndexFile::decode`] (which is
/// written on top of it), without building the file: a fresh pod's cache takes in millions
/// of entries this way without allocating them twice. On an error `item` may already have
/// seen part of the body: callers that must not act on a damaged file check it first
/// (`visit(data, |_| {})`).
pub fn visit(data: &[u8], mut item: impl FnMut(IndexItem)) -> Result<(), FormatError> {
    let mut r = Reader::new(data);
    let ns = r.count("supersedes", 32, MAX_SUPERSEDES)?;
    for _ in 0..ns {
        item(IndexItem::Supersedes(r.id()?));
    }
    let np = r.count("pack count", 44, MAX_INDEX_PACKS)?;
    for _ in 0..np {
        let pack = r.id()?;
        let pack_len = r.u64()?;
        let nb = r.count("blob count", INDEX_ENTRY_LEN, MAX_PACK_BLOBS)?;
        item(IndexItem::Pack { pack, pack_len, blobs: nb });
        for _ in 0..nb {
            let (id, loc) = entry(&mut r, pack_len)?;
            item(IndexItem::Blob(id, loc));
        }
    }
    r.finish()
}

/// Reads one entry (48 bytes, 80 for a delta) of a blob in a pack of `pack_len` bytes, with
/// the checks of `format-spec/index.md`.
fn entry(r: &mut Reader<'_>, pack_len: u64) -> Result<(Id, BlobLocation), FormatError> {
    // one bounds check per entry: a fresh pod reads millions of them
    let e: &[u8; INDEX_ENTRY_LEN] =
        r.take(INDEX_ENTRY_LEN)?.try_into().map_err(|_| invalid("index entry", "cut"))?;
    let u32_at = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
    let blob_type = BlobType::from_u8(e[0])?;
    let flags = e[1];
    let delta = check_flags(blob_type, flags)?;
    if e[2] != 0 || e[3] != 0 {
        return Err(invalid("index entry", "reserved bits set"));
    }
    let (offset, stored_len, raw_len) = (u32_at(4), u32_at(8), u32_at(12));
    if raw_len > MAX_BLOB_LEN
        || !(16..=MAX_BLOB_LEN + 16).contains(&stored_len)
        || offset as u64 + stored_len as u64 > pack_len
    {
        return Err(invalid(
            "index entry",
            format!(
                "blob at {offset}+{stored_len} (raw {raw_len}) outside pack of {pack_len} \
                 or larger than any blob"
            ),
        ));
    }
    let mut id = Id([0; 32]);
    id.0.copy_from_slice(&e[16..]);
    let base = if delta { Some(r.id()?) } else { None };
    Ok((id, BlobLocation { blob_type, flags, offset, stored_len, raw_len, base }))
}

/// One entry as an index file stores it (48 bytes, 80 for a delta).
pub fn encode_entry(id: &Id, l: &BlobLocation) -> Vec<u8> {
    let mut w = Writer::new();
    put_entry(&mut w, id, l);
    w.finish()
}

/// Decodes one entry [`encode_entry`] wrote, checked against a pack of `pack_len` bytes.
pub fn decode_entry(data: &[u8], pack_len: u64) -> Result<(Id, BlobLocation), FormatError> {
    let mut r = Reader::new(data);
    let e = entry(&mut r, pack_len)?;
    r.finish()?;
    Ok(e)
}

fn put_entry(w: &mut Writer, id: &Id, l: &BlobLocation) {
    w.u8(l.blob_type as u8)
        .u8(l.flags)
        .u16(0)
        .u32(l.offset)
        .u32(l.stored_len)
        .u32(l.raw_len)
        .id(id);
    if let Some(b) = &l.base {
        w.id(b);
    }
}

/// Most entries one part of a sorted index may hold.
pub const MAX_PART_ENTRIES: usize = 1 << 20;

/// One item of a sorted index part (`RIXS`), in the order of the body ([`visit_sorted`]).
#[derive(Debug)]
pub enum SortedItem<'a> {
    /// The part's set and its pack table (shared by every part of the set), first.
    Table {
        /// The set this part belongs to.
        set: Id,
        /// Every pack of the set with its length, in increasing id order.
        packs: &'a [(Id, u64)],
    },
    /// One entry: its pack (an index into the table), chunk id and location.
    Blob(u32, Id, BlobLocation),
}

/// Encodes one part of a sorted index (`format-spec/index.md`, "Sorted index parts"):
/// `entries` are (pack number, chunk id, location), in increasing (chunk id, pack number)
/// order, and `packs` in increasing id order.
pub fn encode_sorted(
    set: &Id,
    packs: &[(Id, u64)],
    entries: &[(u32, Id, BlobLocation)],
) -> Vec<u8> {
    let mut w = Writer::new();
    w.id(set).u32(packs.len() as u32);
    for (p, len) in packs {
        w.id(p).u64(*len);
    }
    w.u32(entries.len() as u32);
    for (n, id, l) in entries {
        w.u32(*n);
        put_entry(&mut w, id, l);
    }
    w.finish()
}

/// Walks a sorted index part with every check of the format: pack ids strictly increasing,
/// entries strictly increasing by (chunk id, pack number), pack numbers within the table,
/// every blob within its pack. On an error `item` may already have seen part of the body.
pub fn visit_sorted(data: &[u8], mut item: impl FnMut(SortedItem<'_>)) -> Result<(), FormatError> {
    let mut r = Reader::new(data);
    let (set, packs) = read_table(&mut r)?;
    item(SortedItem::Table { set, packs: &packs });
    let ne = r.count("entry count", 4 + INDEX_ENTRY_LEN, MAX_PART_ENTRIES)?;
    let mut last: Option<(Id, u32)> = None;
    for _ in 0..ne {
        let n = r.u32()?;
        let Some(&(_, pack_len)) = packs.get(n as usize) else {
            return Err(invalid("sorted index", "pack number outside the table"));
        };
        let (id, loc) = entry(&mut r, pack_len)?;
        if last.is_some_and(|l| !key_before(&l, &(id, n))) {
            return Err(invalid("sorted index", "entries out of order"));
        }
        last = Some((id, n));
        item(SortedItem::Blob(n, id, loc));
    }
    r.finish()
}

/// The set id and the pack table at the start of a sorted part, checked.
pub fn sorted_table(data: &[u8]) -> Result<(Id, Vec<(Id, u64)>), FormatError> {
    read_table(&mut Reader::new(data))
}

fn read_table(r: &mut Reader<'_>) -> Result<(Id, Vec<(Id, u64)>), FormatError> {
    let set = r.id()?;
    let np = r.count("pack count", 40, MAX_INDEX_PACKS)?;
    if np == 0 {
        return Err(invalid("sorted index", "no packs"));
    }
    let mut packs = Vec::with_capacity(np);
    for _ in 0..np {
        let p = r.id()?;
        let len = r.u64()?;
        if packs.last().is_some_and(|(q, _): &(Id, u64)| *q >= p) {
            return Err(invalid("sorted index", "pack ids out of order"));
        }
        packs.push((p, len));
    }
    Ok((set, packs))
}

/// One entry of a sorted part as stored: its pack number and its bytes (48, or 80 for a
/// delta: type, flags, reserved, offset, stored and raw length, chunk id, base id).
pub struct RawSortedEntry<'a> {
    /// An index into the part's pack table.
    pub pack: u32,
    /// The entry's bytes.
    pub bytes: &'a [u8],
}

/// Walks the entries of a sorted part that [`visit_sorted`] accepted, without its checks:
/// a fresh pod checks each part on the thread that fetched it, and then takes the entries in
/// as stored. Reads stay bounds-checked, so a body never accepted gives an error or wrong
/// entries, never a panic.
pub fn walk_checked_sorted(
    data: &[u8],
    mut entry: impl FnMut(RawSortedEntry<'_>),
) -> Result<(), FormatError> {
    let mut r = Reader::new(data);
    read_table(&mut r)?;
    let ne = r.u32()?;
    for _ in 0..ne {
        let pack = r.u32()?;
        let at = data.len() - r.remaining();
        let head = r.take(INDEX_ENTRY_LEN)?;
        let len =
            if head[1] == super::pack::FLAG_DELTA { INDEX_ENTRY_LEN + 32 } else { head.len() };
        r.take(len - INDEX_ENTRY_LEN)?;
        let bytes = &data[at..at + len];
        entry(RawSortedEntry { pack, bytes });
    }
    r.finish()
}

/// Whether key `a` (chunk id, pack number) sorts before `b`. Chunk ids are uniformly random,
/// so their first eight bytes nearly always decide: a call of `memcmp` per entry was a fifth
/// of a fresh pod's cache build.
fn key_before(a: &(Id, u32), b: &(Id, u32)) -> bool {
    match a.0.prefix().cmp(&b.0.prefix()) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => a < b,
    }
}

impl IndexFile {
    /// Decodes a sorted index part into the packs it has entries for, each with those entries
    /// (in chunk id order; the pack's other blobs are in the set's other parts).
    pub fn decode_sorted(data: &[u8]) -> Result<IndexFile, FormatError> {
        let mut packs: Vec<IndexPack> = Vec::new();
        visit_sorted(data, |item| match item {
            SortedItem::Table { packs: t, .. } => {
                packs = t
                    .iter()
                    .map(|&(pack, pack_len)| IndexPack { pack, pack_len, blobs: Vec::new() })
                    .collect();
            }
            SortedItem::Blob(n, id, loc) => {
                if let Some(p) = packs.get_mut(n as usize) {
                    p.blobs.push((id, loc));
                }
            }
        })?;
        packs.retain(|p| !p.blobs.is_empty());
        Ok(IndexFile { supersedes: vec![], packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole data blob at offset 40: 100 bytes stored, 200 raw.
    fn sample_loc() -> BlobLocation {
        BlobLocation {
            blob_type: BlobType::Data,
            flags: 1,
            offset: 40,
            stored_len: 100,
            raw_len: 200,
            base: None,
        }
    }

    #[test]
    fn golden_index() {
        let f = IndexFile {
            supersedes: vec![],
            packs: vec![IndexPack {
                pack: Id([5; 32]),
                pack_len: 4096,
                blobs: vec![(Id([6; 32]), sample_loc())],
            }],
        };
        let b = f.encode();
        assert_eq!(b.len(), 4 + 4 + 32 + 8 + 4 + 48);
        assert_eq!(&b[..8], &[0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[40..52], &[0, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[52..68], &[0, 1, 0, 0, 40, 0, 0, 0, 100, 0, 0, 0, 200, 0, 0, 0]);
        assert_eq!(IndexFile::decode(&b).unwrap(), f);
        // truncated anywhere: an error, never a panic
        for cut in 0..b.len() {
            assert!(IndexFile::decode(&b[..cut]).is_err());
        }
        // a delta entry: flags 2, then its base id after the chunk id
        let mut d = f.clone();
        d.packs[0].blobs[0].1.flags = crate::format::pack::FLAG_DELTA;
        d.packs[0].blobs[0].1.base = Some(Id([7; 32]));
        let b = d.encode();
        assert_eq!(b.len(), 4 + 4 + 32 + 8 + 4 + 80);
        assert_eq!(&b[52..56], &[0, 2, 0, 0]);
        assert_eq!(&b[68..100], &[6; 32]);
        assert_eq!(&b[100..132], &[7; 32]);
        assert_eq!(IndexFile::decode(&b).unwrap(), d);
        for cut in 0..b.len() {
            assert!(IndexFile::decode(&b[..cut]).is_err());
        }
        // a stored length beyond the largest blob's (as the pack footer bounds it)
        let mut huge = d.clone();
        huge.packs[0].pack_len = u64::MAX / 2;
        huge.packs[0].blobs[0].1.stored_len = MAX_BLOB_LEN + 17;
        assert!(IndexFile::decode(&huge.encode()).is_err());
        huge.packs[0].blobs[0].1.stored_len = MAX_BLOB_LEN + 16;
        assert!(IndexFile::decode(&huge.encode()).is_ok());
        let mut list_delta = b.clone();
        list_delta[52] = 1; // a content list cannot be a delta
        assert!(IndexFile::decode(&list_delta).is_err());
    }

    /// A whole blob's location, a delta's, and a table of two packs: sorted part samples.
    fn sorted_samples() -> (BlobLocation, BlobLocation, [(Id, u64); 2]) {
        let whole = sample_loc();
        let delta = BlobLocation {
            flags: crate::format::pack::FLAG_DELTA,
            base: Some(Id([7; 32])),
            ..whole
        };
        (whole, delta, [(Id([5; 32]), 4096), (Id([8; 32]), 8192)])
    }

    /// The raw walk of a checked part gives each entry as stored, the same entries the
    /// checking visit decodes; cut short it is an error, not a panic.
    #[test]
    fn a_checked_sorted_part_walks_as_stored() {
        let (whole, delta, table) = sorted_samples();
        let entries = [(1, Id([6; 32]), whole), (0, Id([9; 32]), delta), (1, Id([9; 32]), whole)];
        let b = encode_sorted(&Id([3; 32]), &table, &entries);
        let mut walked = Vec::new();
        walk_checked_sorted(&b, |e| {
            let (id, loc) = decode_entry(e.bytes, table[e.pack as usize].1).unwrap();
            assert_eq!(e.bytes, encode_entry(&id, &loc));
            walked.push((e.pack, id, loc));
        })
        .unwrap();
        assert_eq!(walked, entries);
        assert_eq!(sorted_table(&b).unwrap(), (Id([3; 32]), table.to_vec()));
        for cut in 0..b.len() {
            assert!(walk_checked_sorted(&b[..cut], |_| {}).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn golden_sorted_index_part() {
        let (whole, delta, table) = sorted_samples();
        let entries = [(1, Id([6; 32]), whole), (0, Id([9; 32]), delta)];
        let b = encode_sorted(&Id([3; 32]), &table, &entries);
        assert_eq!(b.len(), 32 + 4 + 2 * 40 + 4 + (4 + 48) + (4 + 80));
        assert_eq!(&b[..32], &[3; 32]);
        assert_eq!(&b[32..36], &[2, 0, 0, 0]);
        assert_eq!(&b[36..68], &[5; 32]);
        assert_eq!(&b[68..76], &[0, 0x10, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[116..120], &[2, 0, 0, 0]);
        // entry 0: pack number 1, then the 48 bytes of an RIDX entry
        assert_eq!(&b[120..124], &[1, 0, 0, 0]);
        assert_eq!(&b[124..140], &[0, 1, 0, 0, 40, 0, 0, 0, 100, 0, 0, 0, 200, 0, 0, 0]);
        assert_eq!(&b[140..172], &[6; 32]);
        assert_eq!(&b[172..176], &[0, 0, 0, 0]);
        assert_eq!(&b[176..180], &[0, 2, 0, 0]);
        assert_eq!(&b[224..256], &[7; 32]);
        let f = IndexFile::decode_sorted(&b).unwrap();
        assert_eq!(f.packs.len(), 2);
        assert_eq!(
            (f.packs[0].pack, f.packs[0].blobs.clone()),
            (Id([5; 32]), vec![(Id([9; 32]), delta)])
        );
        assert_eq!((f.packs[1].pack, f.packs[1].pack_len), (Id([8; 32]), 8192));
        for cut in 0..b.len() {
            assert!(IndexFile::decode_sorted(&b[..cut]).is_err(), "cut at {cut}");
        }
        // out of order: entries swapped, or the same key twice, or pack ids descending
        let swapped = encode_sorted(&Id([3; 32]), &table, &[entries[1], entries[0]]);
        assert!(IndexFile::decode_sorted(&swapped).is_err());
        let twice = encode_sorted(&Id([3; 32]), &table, &[entries[0], entries[0]]);
        assert!(IndexFile::decode_sorted(&twice).is_err());
        let desc = encode_sorted(&Id([3; 32]), &[table[1], table[0]], &entries[..1]);
        assert!(IndexFile::decode_sorted(&desc).is_err());
        // the same id in two packs, in pack order: valid
        let copies = encode_sorted(&Id([3; 32]), &table, &[(0, Id([6; 32]), whole), entries[0]]);
        assert_eq!(IndexFile::decode_sorted(&copies).unwrap().packs.len(), 2);
        // a pack number outside the table, a blob outside its pack, trailing bytes
        let mut b2 = b.clone();
        b2[120] = 2;
        assert!(IndexFile::decode_sorted(&b2).is_err());
        let small = encode_sorted(&Id([3; 32]), &[(Id([5; 32]), 100), table[1]], &entries[1..]);
        assert!(IndexFile::decode_sorted(&small).is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(IndexFile::decode_sorted(&long).is_err());
        // visit gives the table first, then every entry with its pack number
        let mut seen = vec![];
        visit_sorted(&b, |i| match i {
            SortedItem::Table { set, packs } => seen.push((set, packs.len() as u32)),
            SortedItem::Blob(n, id, _) => seen.push((id, n)),
        })
        .unwrap();
        assert_eq!(seen, vec![(Id([3; 32]), 2), (Id([6; 32]), 1), (Id([9; 32]), 0)]);
    }
}
