//! The 40-byte header every sealed object (config, pack, index, snapshot) starts with.
//!
//! ```text
//! 0   4  magic        b"RCFG" | b"RPCK" | b"RIDX" | b"RSNP"
//! 4   1  version      FORMAT_VERSION (1)
//! 5   1  cipher       0 = none (BLAKE3 checksum tags), 1 = AES-256-GCM
//! 6   2  reserved     0
//! 8  32  salt         random; the object's subkey is derived from the master key and this salt
//! ```
//! The header is the associated data of every sealed part of the object.

use super::{FormatError, Reader, Writer};

/// The only version byte this build writes or reads in headers and structures.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of the sealed-object header; also the offset of the first blob in a pack.
pub const HEADER_LEN: usize = 40;
/// Length of the authentication tag appended to every sealed part.
pub const TAG_LEN: usize = 16;

/// Magic of the sealed `config` object.
pub const MAGIC_CONFIG: [u8; 4] = *b"RCFG";
/// Magic of a pack file (`data/<xx>/<id>`).
pub const MAGIC_PACK: [u8; 4] = *b"RPCK";
/// Magic of an index file (`index/<id>`).
pub const MAGIC_INDEX: [u8; 4] = *b"RIDX";
/// Magic of one part of a sorted index (`index/<id>`, written by prune).
pub const MAGIC_INDEX_SORTED: [u8; 4] = *b"RIXS";
/// Magic of a snapshot (`snapshots/<id>`).
pub const MAGIC_SNAPSHOT: [u8; 4] = *b"RSNP";
/// Magic of a prune record (`prune/<id>`, `format-spec/prune.md`).
pub const MAGIC_PRUNE_RECORD: [u8; 4] = *b"RPRN";
/// Magic of a snapshot bundle (`bundles/<id>`, `format-spec/snapshot.md`).
pub const MAGIC_BUNDLE: [u8; 4] = *b"RSBN";

/// How an object's parts are protected: the header's `cipher` byte. Every object of a repository
/// carries the cipher its key file implies (`format-spec/crypto.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CipherKind {
    /// No confidentiality; tags are truncated BLAKE3 checksums that detect damage.
    None = 0,
    /// AES-256-GCM under a per-object subkey; the nonce is the part's byte offset in the object.
    Aes256Gcm = 1,
}

impl CipherKind {
    /// The cipher for a header byte; any value but 0 or 1 is invalid.
    pub fn from_u8(v: u8) -> Result<Self, FormatError> {
        match v {
            0 => Ok(CipherKind::None),
            1 => Ok(CipherKind::Aes256Gcm),
            _ => Err(super::invalid("cipher", format!("unknown cipher {v}"))),
        }
    }
}

/// The decoded 40-byte header of a sealed object; its bytes are the associated data of every part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Which kind of object this is (`RCFG`, `RPCK`, `RIDX`, `RSNP`, `RPRN`).
    pub magic: [u8; 4],
    /// The cipher its parts are sealed with; must equal the repository's.
    pub cipher: CipherKind,
    /// Random per object; with the master key it derives the object's subkey.
    pub salt: [u8; 32],
}

impl Header {
    /// The 40 bytes, with version [`FORMAT_VERSION`] and zero reserved bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut w = Writer::new();
        w.bytes(&self.magic).u8(FORMAT_VERSION).u8(self.cipher as u8).u16(0).bytes(&self.salt);
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Decodes the header at the start of `data`, checking the magic and version.
    pub fn decode(data: &[u8], magic: &[u8; 4]) -> Result<Header, FormatError> {
        let mut r = Reader::new(data);
        r.expect_magic(magic)?;
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let cipher = CipherKind::from_u8(r.u8()?)?;
        if r.u16()? != 0 {
            return Err(super::invalid("reserved", "not zero"));
        }
        Ok(Header { magic: *magic, cipher, salt: r.array()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header() {
        let h = Header { magic: MAGIC_INDEX, cipher: CipherKind::Aes256Gcm, salt: [0xAB; 32] };
        let b = h.encode();
        assert_eq!(&b[..8], &[b'R', b'I', b'D', b'X', 1, 1, 0, 0]);
        assert_eq!(&b[8..], &[0xAB; 32]);
        assert_eq!(Header::decode(&b, &MAGIC_INDEX).unwrap(), h);
        assert!(matches!(Header::decode(&b, &MAGIC_PACK), Err(FormatError::BadMagic { .. })));
        let mut v2 = b;
        v2[4] = 2;
        assert_eq!(Header::decode(&v2, &MAGIC_INDEX), Err(FormatError::UnsupportedVersion(2)));
        assert!(matches!(
            Header::decode(&b[..20], &MAGIC_INDEX),
            Err(FormatError::Truncated { .. })
        ));
    }
}
