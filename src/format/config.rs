//! The repository configuration (the body of the sealed `config` object).
//!
//! ```text
//! 0   32  repository id   random; names the local cache directory
//! 32   4  chunk_min       bytes
//! 36   4  chunk_avg       bytes
//! 40   4  chunk_max       bytes
//! 44   4  pack_target     bytes: a pack is closed once it holds at least this much
//! 48   4  zstd_level      i32
//! = 52 bytes
//! ```

use super::{FormatError, Reader, Writer, invalid};

/// Hard limits for chunker parameters accepted from disk or the command line.
pub const MIN_CHUNK_FLOOR: u32 = 256;
/// Largest `chunk_max` accepted: 16 MiB.
pub const MAX_CHUNK_CEIL: u32 = 16 * 1024 * 1024;

/// The repository's fixed parameters, sealed in `config` (`format-spec/config.md`); they never
/// change after `init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Random id of the repository; its hex names the local cache directory.
    pub repo_id: [u8; 32],
    /// Smallest chunk the chunker cuts, in bytes (256 ..= 1 MiB, even).
    pub chunk_min: u32,
    /// Target average chunk size in bytes (a power of two, `chunk_min < chunk_avg <= 4 MiB`).
    pub chunk_avg: u32,
    /// Largest chunk in bytes (`chunk_avg < chunk_max <= 16 MiB`, even): the chunker always cuts
    /// here.
    pub chunk_max: u32,
    /// Pack size in bytes (64 KiB ..= 1 GiB) at or above which a pack is closed and stored.
    pub pack_target: u32,
    /// zstd level (-7 ..= 22) for the blobs of packs: chunks, deltas and content lists.
    pub zstd_level: i32,
}

impl Config {
    /// Checks the chunker and packer parameters; bad values are an error, never a panic later.
    pub fn validate(&self) -> Result<(), FormatError> {
        let (min, avg, max) = (self.chunk_min, self.chunk_avg, self.chunk_max);
        if !(MIN_CHUNK_FLOOR..=1 << 20).contains(&min)
            || avg > 4 << 20
            || max > MAX_CHUNK_CEIL
            || !(min < avg && avg < max)
        {
            return Err(invalid(
                "chunker",
                format!(
                    "need {MIN_CHUNK_FLOOR} <= min <= 1 MiB, min < avg <= 4 MiB, avg < max <= 16 MiB; got {min}/{avg}/{max}"
                ),
            ));
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return Err(invalid("chunker", "sizes must be even"));
        }
        if !avg.is_power_of_two() {
            return Err(invalid("chunker", "average size must be a power of two"));
        }
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.pack_target) {
            return Err(invalid("pack_target", format!("{} out of range", self.pack_target)));
        }
        if !(-7..=22).contains(&self.zstd_level) {
            return Err(invalid("zstd_level", format!("{} out of range", self.zstd_level)));
        }
        Ok(())
    }

    /// The 52-byte body, in the field order of `format-spec/config.md`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.repo_id).u32(self.chunk_min).u32(self.chunk_avg).u32(self.chunk_max);
        w.u32(self.pack_target).u32(self.zstd_level as u32);
        w.finish()
    }

    /// Decodes a 52-byte body and validates it, so a hostile config cannot reach the chunker or
    /// packer with bad sizes.
    pub fn decode(data: &[u8]) -> Result<Config, FormatError> {
        let mut r = Reader::new(data);
        let c = Config {
            repo_id: r.array()?,
            chunk_min: r.u32()?,
            chunk_avg: r.u32()?,
            chunk_max: r.u32()?,
            pack_target: r.u32()?,
            zstd_level: r.u32()? as i32,
        };
        r.finish()?;
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_config() {
        let c = Config {
            repo_id: [7; 32],
            chunk_min: 16384,
            chunk_avg: 65536,
            chunk_max: 262144,
            pack_target: 16 << 20,
            zstd_level: 3,
        };
        let b = c.encode();
        assert_eq!(b.len(), 52);
        assert_eq!(&b[32..], &[0, 0x40, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 1, 3, 0, 0, 0]);
        assert_eq!(Config::decode(&b).unwrap(), c);
        let mut bad = c.clone();
        bad.chunk_avg = 1000;
        assert!(Config::decode(&bad.encode()).is_err());
    }
}
