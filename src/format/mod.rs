//! Layer 1: the bytes of every on-disk structure. No I/O, no cryptography.
//!
//! Every structure uses fixed-width little-endian integers and bounds every length it reads
//! before allocating. `format-spec/` is the normative description of these bytes; a change
//! here changes the spec in the same commit.

pub mod bundle;
pub mod config;
pub mod envelope;
pub mod index;
pub mod key;
pub mod lock;
pub mod pack;
pub mod prune;
pub mod snapshot;
pub mod stream;
pub mod tree;

mod wire;
pub use wire::{Reader, Writer};

use std::fmt;

/// A 32-byte identifier: a chunk id (keyed BLAKE3 of the plaintext) or an object name
/// (BLAKE3 of the stored bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Lowercase hex, 64 characters: the form used in object names and on the command line.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses exactly 64 hex digits (either case); anything else is [`FormatError::BadId`].
    pub fn from_hex(s: &str) -> Result<Id, FormatError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| FormatError::BadId(s.chars().take(80).collect()))?;
        Ok(Id(out))
    }
    /// BLAKE3 of `bytes`: the name of an immutable object (pack, index, snapshot, key file).
    pub fn of_bytes(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }
    /// The first 8 bytes as a big-endian number: it orders like the id, and for uniformly
    /// random ids it nearly always decides a comparison without a `memcmp`.
    pub fn prefix(&self) -> u64 {
        let b = &self.0;
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    /// The first 4 bytes as 8 hex digits, for logs and `Debug`; not unique, never an object name.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}
impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Errors decoding bytes. Decoding never panics and never allocates more than the input
/// can justify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The input ended before a field could be read whole.
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Byte offset in the input where the failed read started.
        offset: usize,
        /// How many bytes the read lacked beyond the end of the input.
        needed: usize,
    },
    /// The first 4 bytes are not the magic of the structure being decoded: another kind of object,
    /// or damage.
    #[error("bad magic: expected {expected:?}, found {found:?}")]
    BadMagic {
        /// The magic this structure must start with, e.g. `RPCK`.
        expected: [u8; 4],
        /// The 4 bytes actually found.
        found: [u8; 4],
    },
    /// A version byte this reader does not know (it knows 1); it never guesses at a newer layout.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// A field is out of its stated range or otherwise malformed (unknown flag bits, non-zero
    /// reserved bytes, an unknown enum value, a count over its maximum).
    #[error("invalid field {field}: {reason}")]
    Invalid {
        /// The field's name, as in `format-spec/`.
        field: &'static str,
        /// What is wrong with it, for the operator.
        reason: String,
    },
    /// The structure decoded completely but this many bytes followed it.
    #[error("{0} trailing bytes after the structure")]
    TrailingBytes(usize),
    /// A string that is not 64 hex digits where an id was expected (first 80 characters kept).
    #[error("not a valid id: {0:?}")]
    BadId(String),
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> FormatError {
    FormatError::Invalid { field, reason: reason.into() }
}
