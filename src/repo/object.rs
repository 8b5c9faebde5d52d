//! Sealed single-part objects: config, index files, snapshots.

use super::{RepoError, Result};
use crate::codec::crypto::{MasterKeys, ObjectCipher};
use crate::format::Id;
use crate::format::envelope::{CipherKind, HEADER_LEN, Header};

/// Seals `body` as a single-part object under a fresh random salt: the 40-byte header, then the
/// body sealed with counter 0. The object's name is the BLAKE3 of the result.
pub fn seal_object(
    keys: &MasterKeys,
    cipher: CipherKind,
    magic: [u8; 4],
    body: &[u8],
) -> Result<Vec<u8>> {
    let mut salt = [0u8; 32];
    crate::codec::random_bytes(&mut salt).map_err(|e| RepoError::codec("salt", e))?;
    let header = Header { magic, cipher, salt };
    let c = ObjectCipher::new(keys, &header);
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&c.seal(0, body).map_err(|e| RepoError::codec("seal", e))?);
    Ok(out)
}

/// Opens a sealed object named by `id` (the BLAKE3 of its bytes): bytes that are not the
/// object the name says (damaged, or another object put in its place) are `Corrupt`.
pub(crate) fn open_named(
    keys: &MasterKeys,
    expected: CipherKind,
    magic: [u8; 4],
    bytes: &[u8],
    path: &str,
    id: &Id,
) -> Result<Vec<u8>> {
    Ok(open_named_vec(keys, expected, magic, bytes.to_vec(), path, id)?.into_vec())
}

/// [`open_named`], decrypting in the buffer fetched (index files: hundreds of MB for a fresh
/// pod, which a copy per file, or a move of the body over the header, would page in or
/// copy once more).
pub(crate) fn open_named_vec(
    keys: &MasterKeys,
    expected: CipherKind,
    magic: [u8; 4],
    mut bytes: Vec<u8>,
    path: &str,
    id: &Id,
) -> Result<Opened> {
    if Id::of_bytes(&bytes) != *id {
        return Err(RepoError::Corrupt {
            object: path.into(),
            reason: "content does not match its name".into(),
        });
    }
    let c = checked_cipher(keys, expected, magic, &bytes, path)?;
    let len =
        c.open_in_place(0, &mut bytes[HEADER_LEN..]).map_err(|e| RepoError::codec(path, e))?;
    Ok(Opened { buf: bytes, end: HEADER_LEN + len })
}

/// The plaintext of an object opened where it was fetched: the bytes after its header, up to
/// the tag.
pub(crate) struct Opened {
    buf: Vec<u8>,
    end: usize,
}

impl Opened {
    /// The plaintext as a vector of its own (moved to the front of the buffer).
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.truncate(self.end);
        self.buf.drain(..HEADER_LEN);
        self.buf
    }

    /// The buffer fetched, for the next object to be fetched into.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

impl std::ops::Deref for Opened {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[HEADER_LEN..self.end]
    }
}

/// The cipher of a sealed object whose header must say `expected` cipher.
fn checked_cipher(
    keys: &MasterKeys,
    expected: CipherKind,
    magic: [u8; 4],
    bytes: &[u8],
    path: &str,
) -> Result<ObjectCipher> {
    let header = Header::decode(bytes, &magic).map_err(|e| RepoError::format(path, e))?;
    if header.cipher != expected {
        return Err(RepoError::Corrupt {
            object: path.into(),
            reason: format!("sealed with {:?}, the repository uses {expected:?}", header.cipher),
        });
    }
    Ok(ObjectCipher::new(keys, &header))
}

/// Opens a sealed object whose header must say `expected` cipher.
pub fn open_object(
    keys: &MasterKeys,
    expected: CipherKind,
    magic: [u8; 4],
    bytes: &[u8],
    path: &str,
) -> Result<Vec<u8>> {
    let c = checked_cipher(keys, expected, magic, bytes, path)?;
    c.open(0, &bytes[HEADER_LEN..]).map_err(|e| RepoError::codec(path, e))
}
