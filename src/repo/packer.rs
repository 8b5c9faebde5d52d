//! Builds pack files in memory: sealed blobs appended in order, then the sealed footer.

use super::{RepoError, Result};
use crate::codec::crypto::{FOOTER_COUNTER, MasterKeys, ObjectCipher};
use crate::format::Id;
use crate::format::envelope::{CipherKind, Header, MAGIC_PACK, TAG_LEN};
use crate::format::index::{BlobLocation, IndexPack};
use crate::format::pack::{BlobType, MAX_PACK_BLOBS, PackEntry, encode_footer};

/// Most blobs this writer puts in one pack (readers accept up to [`MAX_PACK_BLOBS`]). A backup
/// holds a pack's entries, and the ids it stored until their index file is in the cache, in
/// memory: with tiny blobs (a tree of one-line files compresses each to about 30 bytes) a pack
/// of the target size would hold half a million of them, and memory would follow. Up to about
/// seven packs' ids are held at once (being filled, queued, uploading, waiting for their index
/// file): at 65,536 blobs a pack that was 52 MB of the heap in a backup of 2.5 M tiny chunks
/// (peak RSS 235 MB); at 16,384 the same backup peaks at 129 MB. A 16 MiB pack of 1 KiB
/// chunks holds about this many anyway.
pub const WRITER_PACK_BLOBS: usize = 16384;
const _: () = assert!(WRITER_PACK_BLOBS < MAX_PACK_BLOBS);

/// A finished pack: its name, bytes, and what the index must say about it.
pub struct FinishedPack {
    /// The pack's name: BLAKE3 of `bytes`.
    pub id: Id,
    /// The whole pack file: header, sealed blobs, sealed footer, footer length.
    pub bytes: Vec<u8>,
    /// The pack as an index file lists it, with each blob's offset.
    pub index: IndexPack,
}

/// Bytes a stream backup's pack may grow past its target ([`PackBuilder::fits`]).
const PACK_OVERSHOOT: usize = 1 << 20;

/// Builds one pack in memory under a fresh salt; [`PackBuilder::finish`] seals the footer.
pub struct PackBuilder {
    cipher: ObjectCipher,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    target: usize,
}

impl PackBuilder {
    /// An empty pack (just its header) that counts as full at `target` bytes.
    pub fn new(keys: &MasterKeys, kind: CipherKind, target: u32) -> Result<Self> {
        let mut salt = [0u8; 32];
        crate::codec::random_bytes(&mut salt).map_err(|e| RepoError::codec("pack salt", e))?;
        let header = Header { magic: MAGIC_PACK, cipher: kind, salt };
        let mut buf = Vec::with_capacity(target as usize + PACK_OVERSHOOT);
        buf.extend_from_slice(&header.encode());
        Ok(PackBuilder {
            cipher: ObjectCipher::new(keys, &header),
            buf,
            entries: vec![],
            target: target as usize,
        })
    }

    /// True before the first blob: such a pack is not worth storing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Whether a blob of `len` bytes (before sealing) still fits: an empty pack takes any
    /// blob, others at most 1 MiB past `target` (the room the buffer is made with). With
    /// chunks of up to 4 MiB a pack closed by its last chunk reached 20 MiB: five such packs
    /// in flight made a backup of random data peak 25-35 MB higher than with 128 KiB chunks,
    /// and a restore read such a pack in two pieces (benches/RESULTS.md, "A megabyte per
    /// chunk").
    pub fn fits(&self, len: usize) -> bool {
        self.is_empty() || self.buf.len() + len + TAG_LEN <= self.target + PACK_OVERSHOOT
    }

    /// True once the pack holds `target` bytes or [`WRITER_PACK_BLOBS`] blobs: store it and
    /// start another.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.target || self.entries.len() >= WRITER_PACK_BLOBS
    }

    /// Seals `data` (already compressed as `flags` says; a delta against `base`) and appends
    /// it.
    pub fn add(
        &mut self,
        blob_type: BlobType,
        id: Id,
        flags: u8,
        raw_len: u32,
        base: Option<Id>,
        mut data: Vec<u8>,
    ) -> Result<()> {
        // the nonce counter of a blob is its byte offset in the pack (unique within the pack)
        self.cipher
            .seal_in_place(self.buf.len() as u64, &mut data)
            .map_err(|e| RepoError::codec("pack", e))?;
        self.entries.push(PackEntry {
            blob_type,
            flags,
            raw_len,
            stored_len: data.len() as u32,
            id,
            base,
        });
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    /// Seals the footer and appends its length; the pack is ready to store under `data/`.
    pub fn finish(mut self) -> Result<FinishedPack> {
        let footer = self
            .cipher
            .seal(FOOTER_COUNTER, &encode_footer(&self.entries))
            .map_err(|e| RepoError::codec("pack footer", e))?;
        self.buf.extend_from_slice(&footer);
        self.buf.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        let id = Id::of_bytes(&self.buf);
        let mut offset = crate::format::envelope::HEADER_LEN as u32;
        let blobs = self
            .entries
            .iter()
            .map(|e| {
                let l = BlobLocation {
                    blob_type: e.blob_type,
                    flags: e.flags,
                    offset,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                    base: e.base,
                };
                offset += e.stored_len;
                (e.id, l)
            })
            .collect();
        Ok(FinishedPack {
            id,
            index: IndexPack { pack: id, pack_len: self.buf.len() as u64, blobs },
            bytes: self.buf,
        })
    }
}
