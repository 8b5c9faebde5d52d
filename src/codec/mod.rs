//! Layer 2a: pure transformations on bytes: chunking, chunk ids, compression, encryption.
//! Everything here is synchronous and CPU-bound; callers run it on worker threads.

pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod gzip;
pub mod sketch;

/// Errors of the byte transformations: sealing, key unwrapping, compression, chunking.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A sealed part failed authentication (or its checksum tag, without encryption): the stored
    /// bytes were damaged or altered, or the object belongs to another repository.
    #[error("authentication failed: the bytes were altered or the key is wrong")]
    Auth,
    /// The password opened no key file; also returned when a password-protected key file is opened
    /// without a password.
    #[error("wrong password: no key file could be opened with it")]
    WrongPassword,
    /// Argon2id refused its parameters or failed; the message is the library's.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// A blob or delta could not be decoded: a zstd error, a delta without its base, or a length
    /// other than the recorded one (also used when no zstd context could be allocated).
    #[error("decompression failed: {0}")]
    Decompress(String),
    /// Chunker sizes out of the range `config` allows; the message gives the limits.
    #[error("invalid chunker parameters: {0}")]
    ChunkerParams(String),
    /// The operating system's random source failed (no salts, nonces or keys can be made).
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CodecError> {
    getrandom::fill(buf).map_err(|e| CodecError::Random(e.to_string()))
}
