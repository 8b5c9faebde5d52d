//! Pack files (`data/<xx>/<id>`): many sealed blobs, then a sealed footer describing them.
//!
//! ```text
//! header (40 bytes, magic b"RPCK", see envelope)
//! blob 0 sealed (ciphertext + 16-byte tag), nonce counter = its offset (40)
//! ...
//! blob n-1 sealed, nonce counter = its offset
//! footer sealed, nonce counter u64::MAX
//! footer_len  u32: length of the sealed footer
//! ```
//! Footer plaintext: `count u32` then `count` entries of 44 bytes (76 for a delta):
//! ```text
//! 0  1  blob type   0 = data chunk, 1 = stream content list
//! 1  1  flags       0 = raw, 1 = zstd-compressed, 2 = delta (data chunks only)
//! 2  2  reserved    0
//! 4  4  raw_len     plaintext length after decompression
//! 8  4  stored_len  sealed length in the pack (compressed length + 16)
//! 12 32 id          chunk id
//! 44 32 base        only when flags = 2: id of the chunk whose plaintext the delta refers to
//! ```
//! A delta blob is a zstd frame compressed with the base chunk's plaintext as a raw-content
//! prefix (`format-spec/pack.md`, "Delta blobs").
//! Blob i starts at 40 + sum(stored_len of blobs 0..i).

use super::{FormatError, Id, Reader, Writer, invalid};

/// Bytes of a footer entry without a base id (a delta's entry has 32 more).
pub const FOOTER_ENTRY_LEN: usize = 44;
/// Most blobs one pack (and one index entry for a pack) may hold.
pub const MAX_PACK_BLOBS: usize = 1 << 20;
/// No blob may exceed this, before or after compression (bounds decompression buffers).
pub const MAX_BLOB_LEN: u32 = 64 * 1024 * 1024;
/// The blob is a zstd frame of the plaintext; without a flag it is stored raw.
pub const FLAG_ZSTD: u8 = 1;
/// A data chunk stored as a zstd frame against the plaintext of a base chunk (its id follows
/// the entry). Never combined with [`FLAG_ZSTD`].
pub const FLAG_DELTA: u8 = 2;

/// Readers follow at most this many levels of bases, so a hostile cycle of bases ends in an
/// error. Writers make chains this deep (a chunk stored twice, whole and as a delta, counts as
/// whole: prune keeps its whole copy).
pub const MAX_DELTA_DEPTH: u32 = 4;

/// Checks the flags of an entry; true for a delta (whose base id follows the entry).
pub(crate) fn check_flags(blob_type: BlobType, flags: u8) -> Result<bool, FormatError> {
    match (flags, blob_type) {
        (0 | FLAG_ZSTD, _) => Ok(false),
        (FLAG_DELTA, BlobType::Data) => Ok(true),
        _ => Err(invalid("flags", format!("unknown flags {flags:#x} for {blob_type:?}"))),
    }
}

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobType {
    /// A chunk of stream or file data.
    Data = 0,
    /// A content list: the `(raw_len, chunk id)` entries of part of a stream
    /// (`format-spec/snapshot.md`).
    List = 1,
}

impl BlobType {
    /// The type for its on-disk byte; any value but 0 or 1 is invalid.
    pub fn from_u8(v: u8) -> Result<Self, FormatError> {
        match v {
            0 => Ok(BlobType::Data),
            1 => Ok(BlobType::List),
            _ => Err(invalid("blob type", format!("unknown type {v}"))),
        }
    }
}

/// One entry of a pack footer: the blob at this position, as a reader without the index sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// Data chunk or content list.
    pub blob_type: BlobType,
    /// `0` raw, [`FLAG_ZSTD`] or [`FLAG_DELTA`].
    pub flags: u8,
    /// Plaintext length in bytes after decompression (at most [`MAX_BLOB_LEN`]).
    pub raw_len: u32,
    /// Sealed length in bytes (compressed length plus the 16-byte tag); blob offsets are the
    /// running sum of these after the header.
    pub stored_len: u32,
    /// Chunk id of the decompressed plaintext.
    pub id: Id,
    /// The base chunk of a delta (`flags == FLAG_DELTA`).
    pub base: Option<Id>,
}

impl PackEntry {
    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(self.blob_type as u8)
            .u8(self.flags)
            .u16(0)
            .u32(self.raw_len)
            .u32(self.stored_len)
            .id(&self.id);
        if let Some(b) = &self.base {
            w.id(b);
        }
    }
    pub(crate) fn read(r: &mut Reader) -> Result<PackEntry, FormatError> {
        let blob_type = BlobType::from_u8(r.u8()?)?;
        let flags = r.u8()?;
        let delta = check_flags(blob_type, flags)?;
        if r.u16()? != 0 {
            return Err(invalid("reserved", "not zero"));
        }
        let raw_len = r.u32()?;
        let stored_len = r.u32()?;
        if raw_len > MAX_BLOB_LEN || !(16..=MAX_BLOB_LEN + 16).contains(&stored_len) {
            return Err(invalid("blob length", format!("raw {raw_len} stored {stored_len}")));
        }
        let id = r.id()?;
        let base = if delta { Some(r.id()?) } else { None };
        Ok(PackEntry { blob_type, flags, raw_len, stored_len, id, base })
    }
}

/// The footer plaintext (`count`, then the entries in blob order), to be sealed with counter
/// `u64::MAX`.
pub fn encode_footer(entries: &[PackEntry]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(entries.len() as u32);
    for e in entries {
        e.write(&mut w);
    }
    w.finish()
}

/// Decodes a footer plaintext; the count is checked against the input before allocating.
pub fn decode_footer(data: &[u8]) -> Result<Vec<PackEntry>, FormatError> {
    let mut r = Reader::new(data);
    let n = r.count("footer count", FOOTER_ENTRY_LEN, MAX_PACK_BLOBS)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(PackEntry::read(&mut r)?);
    }
    r.finish()?;
    Ok(v)
}

/// Reads the trailing footer length of a pack of `pack_len` bytes and returns the byte range
/// of the sealed footer, checking it fits after the header.
pub fn footer_range(pack_tail: &[u8; 4], pack_len: u64) -> Result<(u64, u64), FormatError> {
    let flen = u32::from_le_bytes(*pack_tail) as u64;
    let header = super::envelope::HEADER_LEN as u64;
    if flen < 20 || flen + 4 + header > pack_len {
        return Err(invalid(
            "footer length",
            format!("{flen} does not fit a pack of {pack_len} bytes"),
        ));
    }
    Ok((pack_len - 4 - flen, flen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_footer() {
        let e = PackEntry {
            blob_type: BlobType::List,
            flags: FLAG_ZSTD,
            raw_len: 1000,
            stored_len: 516,
            id: Id([9; 32]),
            base: None,
        };
        let b = encode_footer(&[e]);
        assert_eq!(&b[..16], &[1, 0, 0, 0, 1, 1, 0, 0, 0xE8, 3, 0, 0, 4, 2, 0, 0]);
        assert_eq!(&b[16..], &[9; 32]);
        assert_eq!(decode_footer(&b).unwrap(), vec![e]);
        // a count that the bytes cannot hold is refused before allocating
        assert!(decode_footer(&[0xFF, 0xFF, 0x0F, 0]).is_err());
        assert!(footer_range(&100u32.to_le_bytes(), 120).is_err());
        // a delta entry carries its base id after the chunk id
        let d = PackEntry {
            blob_type: BlobType::Data,
            flags: FLAG_DELTA,
            raw_len: 16384,
            stored_len: 300,
            id: Id([7; 32]),
            base: Some(Id([8; 32])),
        };
        let b = encode_footer(&[d, e]);
        assert_eq!(b.len(), 4 + 76 + 44);
        assert_eq!(&b[4..16], &[0, 2, 0, 0, 0, 0x40, 0, 0, 0x2C, 1, 0, 0]);
        assert_eq!(&b[16..48], &[7; 32]);
        assert_eq!(&b[48..80], &[8; 32]);
        assert_eq!(decode_footer(&b).unwrap(), vec![d, e]);
        // a delta of a content list, or zstd and delta together, is refused
        let mut bad = b.clone();
        bad[4] = 1;
        assert!(decode_footer(&bad).is_err());
        let mut bad = b.clone();
        bad[5] = 3;
        assert!(decode_footer(&bad).is_err());
        // a truncated base id is an error, not a panic
        assert!(decode_footer(&b[..60]).is_err());
        assert_eq!(footer_range(&100u32.to_le_bytes(), 1000).unwrap(), (896, 100));
    }
}
