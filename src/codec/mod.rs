//! Layer 2a: pure transformations on bytes: chunking, chunk ids, compression, encryption.
//! Everything here is synchronous and CPU-bound; callers run it on worker threads.

pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod gzip;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("authentication failed: the bytes were altered or the key is wrong")]
    Auth,
    #[error("wrong password: no key file could be opened with it")]
    WrongPassword,
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("chunk id mismatch: content hashes to {actual}, expected {expected}")]
    IdMismatch { expected: String, actual: String },
    #[error("invalid chunker parameters: {0}")]
    ChunkerParams(String),
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CodecError> {
    getrandom::fill(buf).map_err(|e| CodecError::Random(e.to_string()))
}
