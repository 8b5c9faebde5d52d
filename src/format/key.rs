//! Key files (`keys/<id>`): the master keys wrapped under a password-derived key.
//!
//! ```text
//! 0    4  magic      b"RKEY"
//! 4    1  version    1
//! 5    1  kdf        0 = none (master keys stored in the clear), 1 = Argon2id
//! 6    2  reserved   0
//! 8    8  created    i64, Unix seconds
//! 16   4  m_cost     Argon2 memory in KiB
//! 20   4  t_cost     Argon2 passes
//! 24   4  p_cost     Argon2 lanes
//! 28  32  salt       KDF salt
//! 60  12  nonce      AES-256-GCM nonce for the wrapped keys
//! 72 112  wrapped    96 bytes of master keys + 16-byte tag
//! = 184 bytes
//! ```
//! Bytes 0..72 are the associated data of the wrapping, so KDF parameters cannot be altered.

use super::{FormatError, Reader, Writer, invalid};

/// Magic at the start of every key file.
pub const MAGIC_KEY: [u8; 4] = *b"RKEY";
/// The only key-file version this build reads or writes.
pub const KEY_VERSION: u8 = 1;
/// Bytes of the master keys: `enc`, `id` and `chunker`, 32 each.
pub const MASTER_LEN: usize = 96;
/// Size of every key file in bytes: 184.
pub const KEY_FILE_LEN: usize = 72 + MASTER_LEN + 16;
/// Bytes at the start of the key file authenticated as associated data of the wrapping.
pub const AAD_LEN: usize = 72;

/// Upper bounds on KDF parameters accepted from disk at all (beyond them a key file is
/// corrupt). Openers apply a lower memory limit of their own before running the KDF
/// (`repo::kdf_memory_limit_kib`, 256 MiB by default).
pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
/// Most Argon2id passes accepted.
pub const MAX_T_COST: u32 = 10;
/// Most Argon2id lanes accepted.
pub const MAX_P_COST: u32 = 16;

/// How a key file protects the master keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kdf {
    /// Keys in the clear with a checksum tag: a repository made with `--encryption none`. A
    /// password opener refuses such a key file, since anyone who can write the storage can plant
    /// one.
    None = 0,
    /// Keys wrapped with AES-256-GCM under an Argon2id key derived from the password.
    Argon2id = 1,
}

/// A decoded key file (`keys/<id>`, `format-spec/key-file.md`): one password's wrapping of the
/// repository's master keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// Whether the keys are wrapped under a password ([`Kdf::Argon2id`]) or stored in the clear.
    pub kdf: Kdf,
    /// When the key file was made, in Unix seconds.
    pub created: i64,
    /// Argon2id memory in KiB (0 without a KDF).
    pub m_cost: u32,
    /// Argon2id passes (0 without a KDF).
    pub t_cost: u32,
    /// Argon2id lanes (0 without a KDF).
    pub p_cost: u32,
    /// Random Argon2id salt (zero without a KDF).
    pub salt: [u8; 32],
    /// Random AES-GCM nonce of the wrapping (zero without a KDF).
    pub nonce: [u8; 12],
    /// The 96 bytes of master keys, encrypted or in the clear, followed by the 16-byte tag.
    pub wrapped: [u8; MASTER_LEN + 16],
}

impl KeyFile {
    /// The first 72 bytes: authenticated with the wrapped keys.
    pub fn aad(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&MAGIC_KEY).u8(KEY_VERSION).u8(self.kdf as u8).u16(0).i64(self.created);
        w.u32(self.m_cost).u32(self.t_cost).u32(self.p_cost).bytes(&self.salt).bytes(&self.nonce);
        w.finish()
    }

    /// The 184 bytes of the file; its BLAKE3 is its name.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.aad();
        b.extend_from_slice(&self.wrapped);
        b
    }

    /// Decodes a key file, refusing KDF parameters beyond the hard limits above (a per-opener
    /// memory limit is applied later, before running the KDF).
    pub fn decode(data: &[u8]) -> Result<KeyFile, FormatError> {
        let mut r = Reader::new(data);
        r.expect_magic(&MAGIC_KEY)?;
        let v = r.u8()?;
        if v != KEY_VERSION {
            return Err(FormatError::UnsupportedVersion(v));
        }
        let kdf = match r.u8()? {
            0 => Kdf::None,
            1 => Kdf::Argon2id,
            k => return Err(invalid("kdf", format!("unknown kdf {k}"))),
        };
        if r.u16()? != 0 {
            return Err(invalid("reserved", "not zero"));
        }
        let created = r.i64()?;
        let (m_cost, t_cost, p_cost) = (r.u32()?, r.u32()?, r.u32()?);
        if kdf == Kdf::Argon2id
            && (m_cost > MAX_M_COST_KIB
                || t_cost == 0
                || t_cost > MAX_T_COST
                || p_cost == 0
                || p_cost > MAX_P_COST)
        {
            return Err(invalid(
                "kdf parameters",
                format!("m={m_cost} t={t_cost} p={p_cost} out of range"),
            ));
        }
        let k = KeyFile {
            kdf,
            created,
            m_cost,
            t_cost,
            p_cost,
            salt: r.array()?,
            nonce: r.array()?,
            wrapped: r.array()?,
        };
        r.finish()?;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_key_file() {
        let k = KeyFile {
            kdf: Kdf::Argon2id,
            created: 1_700_000_000,
            m_cost: 65536,
            t_cost: 3,
            p_cost: 1,
            salt: [1; 32],
            nonce: [2; 12],
            wrapped: [3; 112],
        };
        let b = k.encode();
        assert_eq!(b.len(), KEY_FILE_LEN);
        assert_eq!(
            &b[..16],
            &[b'R', b'K', b'E', b'Y', 1, 1, 0, 0, 0x00, 0xF1, 0x53, 0x65, 0, 0, 0, 0]
        );
        assert_eq!(&b[16..28], &[0, 0, 1, 0, 3, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(KeyFile::decode(&b).unwrap(), k);
        let mut hostile = b.clone();
        hostile[19] = 0xFF; // m_cost = 0xFF010000 KiB
        assert!(KeyFile::decode(&hostile).is_err());
        let just_over = KeyFile { m_cost: MAX_M_COST_KIB + 1, ..k.clone() };
        assert!(KeyFile::decode(&just_over.encode()).is_err(), "4 GiB is the format's cap");
        let at_cap = KeyFile { m_cost: MAX_M_COST_KIB, t_cost: MAX_T_COST, ..k.clone() };
        assert!(KeyFile::decode(&at_cap.encode()).is_ok());
        assert!(KeyFile::decode(&b[..100]).is_err());
    }
}
