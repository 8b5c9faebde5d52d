//! zstd per blob, kept raw where compression does not shrink it.
//!
//! Each thread keeps one compression and one decompression context: creating a zstd context
//! per chunk cost a fifth of restore time.

use std::cell::RefCell;

use super::CodecError;
use crate::format::pack::FLAG_ZSTD;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match c.as_mut() {
            Some((_, z)) => z.compress(data),
            None => zstd::bulk::compress(data, level),
        }
    })
}

fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(z) => z.decompress(data, capacity),
            None => zstd::bulk::decompress(data, capacity),
        }
    })
}

/// Compresses `data`; returns the flags and the bytes to store.
pub fn compress(level: i32, data: Vec<u8>) -> (u8, Vec<u8>) {
    match zstd_compress(&data, level) {
        // only worth a flag and a decompression when it saves at least 1/64
        Ok(c) if c.len() + data.len() / 64 < data.len() => (FLAG_ZSTD, c),
        _ => (0, data),
    }
}

/// Reverses [`compress`]; `raw_len` (from the index) bounds the output buffer.
pub fn decompress(flags: u8, data: Vec<u8>, raw_len: u32) -> Result<Vec<u8>, CodecError> {
    if flags & FLAG_ZSTD == 0 {
        if data.len() != raw_len as usize {
            return Err(CodecError::Decompress(format!(
                "stored {} bytes, expected {raw_len}",
                data.len()
            )));
        }
        return Ok(data);
    }
    let out = zstd_decompress(&data, raw_len as usize)
        .map_err(|e| CodecError::Decompress(e.to_string()))?;
    if out.len() != raw_len as usize {
        return Err(CodecError::Decompress(format!("got {} bytes, expected {raw_len}", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_raw_fallback() {
        let text = b"abcabcabc".repeat(1000);
        let (f, c) = compress(3, text.clone());
        assert_eq!(f, FLAG_ZSTD);
        assert!(c.len() < text.len());
        assert_eq!(decompress(f, c, text.len() as u32).unwrap(), text);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let (f, c) = compress(3, noise.clone());
        assert_eq!(f, 0);
        assert_eq!(c, noise);
        assert!(decompress(FLAG_ZSTD, vec![1, 2, 3], 10).is_err());
    }
}
