//! Reading packs and index files back for verification and repair.

use super::object::Opened;
use super::reader::decode_blob;
use super::{RepoError, Repository, Result, paths};
use crate::codec::crypto::{FOOTER_COUNTER, ObjectCipher};
use crate::format::Id;
use crate::format::envelope::{HEADER_LEN, Header, MAGIC_INDEX, MAGIC_INDEX_SORTED, MAGIC_PACK};
use crate::format::index::{BlobLocation, IndexFile, IndexPack};
use crate::format::pack::{decode_footer, footer_range};

/// Reads and decodes one index file. The hash, decryption and decoding (about 9 ms for a
/// full index file) run on a blocking thread, so that callers reading several files at once
/// decode them in parallel instead of one after another on their task.
pub async fn load_index_file(repo: &Repository, id: &Id) -> Result<IndexFile> {
    load_index_with(repo, id, Vec::new(), |body| match body {
        IndexBody::Packs(b) => IndexFile::decode(&b),
        IndexBody::Sorted(b) => IndexFile::decode_sorted(&b),
    })
    .await
}

/// The body of an index file, by layout (`format-spec/index.md`), decrypted in the buffer
/// it was fetched into.
pub enum IndexBody {
    /// `RIDX`: entries grouped by pack.
    Packs(Opened),
    /// `RIXS`: one part of a sorted index, entries in chunk id order.
    Sorted(Opened),
}

impl IndexBody {
    /// The buffer the file was fetched into, for the next one.
    pub fn into_buffer(self) -> Vec<u8> {
        match self {
            IndexBody::Packs(b) | IndexBody::Sorted(b) => b.into_buffer(),
        }
    }
}

/// The body of index file `id`, decrypted and checked as [`IndexFile::decode`] checks it, but
/// not decoded into entries: for a cache that takes them in one by one
/// ([`crate::format::index::visit`], [`crate::format::index::visit_sorted`]).
/// The file is fetched into `buf`'s memory.
pub async fn load_index_body(repo: &Repository, id: &Id, buf: Vec<u8>) -> Result<IndexBody> {
    load_index_with(repo, id, buf, |body| {
        match &body {
            IndexBody::Packs(b) => crate::format::index::visit(b, |_| {})?,
            IndexBody::Sorted(b) => crate::format::index::visit_sorted(b, |_| {})?,
        }
        Ok(body)
    })
    .await
}

/// Fetches index file `id`, then checks its name, decrypts it (under the magic it starts
/// with: either layout) and hands its body to `decode`, all on a blocking thread.
async fn load_index_with<T: Send + 'static>(
    repo: &Repository,
    id: &Id,
    buf: Vec<u8>,
    decode: impl FnOnce(IndexBody) -> std::result::Result<T, crate::format::FormatError>
    + Send
    + 'static,
) -> Result<T> {
    let bytes = repo.backend.get_into(&paths::index(id), buf).await?;
    let (keys, cipher, id) = (repo.keys.clone(), repo.cipher, *id);
    tokio::task::spawn_blocking(move || {
        let path = paths::index(&id);
        let sorted = bytes.starts_with(&MAGIC_INDEX_SORTED);
        let magic = if sorted { MAGIC_INDEX_SORTED } else { MAGIC_INDEX };
        let body = super::object::open_named_vec(&keys, cipher, magic, bytes, &path, &id)?;
        let body = if sorted { IndexBody::Sorted(body) } else { IndexBody::Packs(body) };
        decode(body).map_err(|e| RepoError::format(path, e))
    })
    .await?
}

/// Index files a few at a time (decoded in parallel), in the order of `ids`: for callers that
/// read every index file in turn (prune), so that fetching and decoding overlap.
pub fn load_index_files(
    repo: &Repository,
    ids: Vec<Id>,
) -> impl futures::Stream<Item = Result<IndexFile>> + '_ {
    use futures::stream::StreamExt;
    futures::stream::iter(ids)
        .map(move |id| async move { load_index_file(repo, &id).await })
        .buffered(INDEX_FILES_IN_FLIGHT)
}

/// Index files fetched and decoded at once (a fresh pod on S3 waits on round trips, not
/// bandwidth, for small files). Each is held decoded until taken in: this writer's files
/// hold at most [`super::INDEX_FILE_BLOBS`] entries (about 7 MB decoded), others are bounded
/// by their size.
pub const INDEX_FILES_IN_FLIGHT: usize = 4;

fn pack_cipher(repo: &Repository, path: &str, head: &[u8]) -> Result<ObjectCipher> {
    let header = Header::decode(head, &MAGIC_PACK).map_err(|e| RepoError::format(path, e))?;
    if header.cipher != repo.cipher {
        return Err(RepoError::Corrupt {
            object: path.into(),
            reason: "pack sealed with another cipher".into(),
        });
    }
    Ok(ObjectCipher::new(&repo.keys, &header))
}

/// Decodes a pack's footer (with the pack's cipher, built from its header) into index
/// entries, checking that the blobs tile the space between header and footer.
fn footer_entries(
    cipher: &ObjectCipher,
    pack: &Id,
    footer: &[u8],
    footer_start: u64,
) -> Result<IndexPack> {
    let path = paths::pack(pack);
    let plain = cipher
        .open(FOOTER_COUNTER, footer)
        .map_err(|e| RepoError::codec(format!("{path} footer"), e))?;
    let entries =
        decode_footer(&plain).map_err(|e| RepoError::format(format!("{path} footer"), e))?;
    let mut offset = HEADER_LEN as u64;
    let mut blobs = Vec::with_capacity(entries.len());
    for e in entries {
        // locations hold 32-bit offsets: the writer never makes a pack that large
        if offset + e.stored_len as u64 > u32::MAX as u64 {
            return Err(RepoError::Corrupt {
                object: path,
                reason: "its footer places blobs beyond 4 GiB".into(),
            });
        }
        blobs.push((
            e.id,
            BlobLocation {
                blob_type: e.blob_type,
                flags: e.flags,
                offset: offset as u32,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                base: e.base,
            },
        ));
        offset += e.stored_len as u64;
    }
    if offset != footer_start {
        return Err(RepoError::Corrupt {
            object: path,
            reason: format!("blobs end at {offset}, footer starts at {footer_start}"),
        });
    }
    Ok(IndexPack { pack: *pack, pack_len: footer_start + footer.len() as u64 + 4, blobs })
}

/// Reads only the header and footer of a pack: what `repair index` needs.
pub async fn read_pack_footer(repo: &Repository, pack: &Id, pack_len: u64) -> Result<IndexPack> {
    let path = paths::pack(pack);
    if pack_len < HEADER_LEN as u64 + 24 {
        return Err(RepoError::Corrupt {
            object: path,
            reason: format!("{pack_len} bytes is too short for a pack"),
        });
    }
    let head = repo.backend.get_range(&path, 0, HEADER_LEN as u64).await?;
    let tail = repo.backend.get_range(&path, pack_len - 4, 4).await?;
    let t: [u8; 4] = [tail[0], tail[1], tail[2], tail[3]];
    let (start, len) =
        footer_range(&t, pack_len).map_err(|e| RepoError::format(path.clone(), e))?;
    let footer = repo.backend.get_range(&path, start, len).await?;
    footer_entries(&pack_cipher(repo, &path, &head)?, pack, &footer, start)
}

/// Parses a whole pack held in memory: its cipher and what its footer says.
pub fn parse_pack(repo: &Repository, pack: &Id, bytes: &[u8]) -> Result<(ObjectCipher, IndexPack)> {
    let path = paths::pack(pack);
    if bytes.len() < HEADER_LEN + 24 {
        return Err(RepoError::Corrupt { object: path, reason: "too short".into() });
    }
    let n = bytes.len();
    let t: [u8; 4] = [bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]];
    let (start, flen) =
        footer_range(&t, n as u64).map_err(|e| RepoError::format(path.clone(), e))?;
    let cipher = pack_cipher(repo, &path, &bytes[..HEADER_LEN])?;
    let footer =
        footer_entries(&cipher, pack, &bytes[start as usize..(start + flen) as usize], start)?;
    Ok((cipher, footer))
}

/// The outcome of reading a whole pack.
#[derive(Debug, Default)]
pub struct PackVerdict {
    /// A problem with the pack as a whole (name mismatch, unreadable footer).
    pub pack_error: Option<String>,
    /// Blobs that failed to decrypt, decompress or hash to their id, with the reason.
    pub bad_blobs: Vec<(Id, String)>,
    /// Blobs the footer lists, each checked (deltas only authenticated).
    pub blobs: u64,
    /// What the footer says (when readable).
    pub footer: Option<IndexPack>,
    /// Delta blobs, authenticated but not decoded (that needs their base chunks): id,
    /// location and the opened zstd frame. See [`verify_deltas`].
    pub deltas: Vec<(Id, BlobLocation, Vec<u8>)>,
    /// Deltas whose base is in no index file: left in a pack that stays after a prune deleted
    /// the base, which no snapshot needed. Not damage by themselves: a snapshot that needs
    /// such a chunk is reported by the snapshot check.
    pub deltas_without_base: u64,
}

/// Decodes the deltas a [`verify_pack_bytes`] left, fetching their bases, and moves every
/// one that does not decode to its id into `bad_blobs`. The bases of about
/// `BASE_WINDOW_BYTES` of deltas at a time are read together, unchecked
/// ([`super::PackCiphers::read_bases`]); a delta that does not decode to its id against
/// such a base, or whose base was not read that way, is checked again with its base read on
/// its own and checked, so that a damaged base is blamed as such.
///
/// Measured (benches/RESULTS.md, "Deeper chains"): reading each delta's base on its own,
/// `check --read-data` of twelve hourly dumps took 23% longer with chains four deep than
/// two deep.
pub async fn verify_deltas(repo: &Repository, v: &mut PackVerdict) {
    let ciphers = super::PackCiphers::default();
    let deltas = std::mem::take(&mut v.deltas);
    let mut rest = &deltas[..];
    while !rest.is_empty() {
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|(_, loc, _)| {
                let first = bytes == 0;
                bytes += u64::from(loc.raw_len);
                first || bytes <= super::reader::BASE_WINDOW_BYTES
            })
            .count();
        let (batch, after) = rest.split_at(n);
        rest = after;
        let bases = ciphers.read_bases(repo, batch.iter().filter_map(|d| d.1.base).collect()).await;
        for (id, loc, frame) in batch {
            let Some(base_id) = loc.base else { continue };
            if let Some(base) = bases.get(&base_id)
                && decode_delta(repo, id, loc, frame, base).is_ok()
            {
                continue;
            }
            let checked = match ciphers.base(repo, &base_id, id).await {
                Err(RepoError::MissingChunk { .. }) => {
                    v.deltas_without_base += 1;
                    continue;
                }
                Ok(base) => decode_delta(repo, id, loc, frame, &base),
                Err(e) => Err(format!("its base {}: {e}", base_id.short())),
            };
            if let Err(e) = checked {
                v.bad_blobs.push((*id, e));
            }
        }
    }
}

/// Decodes an opened delta frame against its base and checks the id.
fn decode_delta(
    repo: &Repository,
    id: &Id,
    loc: &BlobLocation,
    frame: &[u8],
    base: &[u8],
) -> std::result::Result<(), String> {
    let data = crate::codec::compress::decompress_delta(base, frame, loc.raw_len)
        .map_err(|e| e.to_string())?;
    let actual = repo.keys.chunk_id(&data);
    if actual == *id {
        Ok(())
    } else {
        Err(format!("delta decodes to content hashing to {}", actual.short()))
    }
}

/// Verifies every byte of a pack already in memory: its name, its footer and every blob.
pub fn verify_pack_bytes(repo: &Repository, pack: &Id, bytes: &[u8]) -> PackVerdict {
    let mut v = PackVerdict::default();
    if Id::of_bytes(bytes) != *pack {
        v.pack_error = Some("content does not match its name".into());
    }
    let (cipher, footer) = match parse_pack(repo, pack, bytes) {
        Ok(parsed) => parsed,
        Err(e) => {
            v.pack_error = Some(e.to_string());
            return v;
        }
    };
    for (id, loc) in &footer.blobs {
        v.blobs += 1;
        let sealed = &bytes[loc.offset as usize..(loc.offset + loc.stored_len) as usize];
        if loc.base.is_some() {
            // authenticated here; decoded by the caller, which can fetch the base
            match cipher.open(loc.offset as u64, sealed) {
                Ok(frame) => v.deltas.push((*id, *loc, frame)),
                Err(e) => v.bad_blobs.push((*id, e.to_string())),
            }
            continue;
        }
        if let Err(e) = decode_blob(repo, &cipher, pack, id, loc, sealed.to_vec(), None) {
            v.bad_blobs.push((*id, e.to_string()));
        }
    }
    v.footer = Some(footer);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::crypto::MasterKeys;
    use crate::format::envelope::CipherKind;
    use crate::format::pack::{BlobType, FLAG_ZSTD, MAX_BLOB_LEN, PackEntry, encode_footer};

    /// A footer whose blobs add up to more than a 32-bit offset can name (one only the key
    /// holder could seal) is refused, not wrapped around.
    #[test]
    fn a_footer_reaching_beyond_4_gib_is_refused() {
        let keys = MasterKeys::from_bytes(&[7u8; 96]);
        let header = Header { magic: MAGIC_PACK, cipher: CipherKind::Aes256Gcm, salt: [1; 32] };
        let cipher = ObjectCipher::new(&keys, &header);
        let n = (u32::MAX / MAX_BLOB_LEN) as usize + 1;
        let entries: Vec<PackEntry> = (0..n)
            .map(|i| PackEntry {
                blob_type: BlobType::Data,
                flags: FLAG_ZSTD,
                raw_len: MAX_BLOB_LEN,
                stored_len: MAX_BLOB_LEN,
                id: Id::of_bytes(&i.to_le_bytes()),
                base: None,
            })
            .collect();
        let sealed = cipher.seal(FOOTER_COUNTER, &encode_footer(&entries)).unwrap();
        let footer_start = HEADER_LEN as u64 + n as u64 * MAX_BLOB_LEN as u64;
        let pack = Id::of_bytes(b"pack");
        let err = footer_entries(&cipher, &pack, &sealed, footer_start).unwrap_err();
        assert!(err.to_string().contains("beyond 4 GiB"), "{err}");
        // one blob fewer fits and is read
        let fits = cipher.seal(FOOTER_COUNTER, &encode_footer(&entries[..n - 1])).unwrap();
        let start = footer_start - MAX_BLOB_LEN as u64;
        assert_eq!(footer_entries(&cipher, &pack, &fits, start).unwrap().blobs.len(), n - 1);
    }
}
