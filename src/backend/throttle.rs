//! Upload bandwidth limit (`--limit-upload`): a token bucket shared by every upload of a
//! process. Objects are whole (up to a pack), so a `put` pays for its bytes before it starts
//! and the bucket may run into debt; the average rate over a few objects is the limit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{Backend, BackendError, ObjectInfo, RangeBytes};

/// A token bucket in bytes per second, shared by every upload of the process.
pub struct Throttle {
    bytes_per_sec: f64,
    /// The instant from which the bucket is free again (the debt, as a time).
    free_at: Mutex<Instant>,
}

impl Throttle {
    /// A bucket refilling at `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Throttle {
        Throttle { bytes_per_sec: bytes_per_sec.max(1) as f64, free_at: Mutex::new(Instant::now()) }
    }

    /// Waits until `bytes` may be sent. A burst of up to one second of the rate goes at once.
    pub async fn take(&self, bytes: u64) {
        let wait = {
            let mut free_at = self.free_at.lock().await;
            let now = Instant::now();
            let burst = Duration::from_secs(1);
            let start = (*free_at).max(now.checked_sub(burst).unwrap_or(now));
            *free_at = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
            free_at.saturating_duration_since(now + burst)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why a rate does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RateError {
    /// No number where the rate should start.
    #[error("{0:?} is not a rate (examples: 500K, 10M, 1.5MiB)")]
    NotANumber(String),
    /// A unit other than B, K, M, G (with an optional iB or /s).
    #[error("{given:?}: unknown unit {unit:?} (use K, M or G)")]
    UnknownUnit {
        /// The whole argument.
        given: String,
        /// The unit part of it.
        unit: String,
    },
    /// A rate in bits (`10Mbps`, `10Mbit/s`): read as bytes it would allow 8 times as much.
    #[error("{0:?} looks like bits per second; give bytes per second (10 Mbit/s is 1.25M)")]
    Bits(String),
    /// Zero, negative or not finite.
    #[error("{0:?}: the limit must be at least 1 byte per second")]
    TooSmall(String),
}

/// A rate as operators write it: `500K`, `10M`, `1.5MiB`, `2G` (binary units, bytes per
/// second; an optional `/s`). A bare number is KiB/s, as in rclone's `--bwlimit`. Rates in
/// bits (`10Mbps`, `10Mbit/s`) are refused rather than misread as bytes.
pub fn parse_rate(s: &str) -> Result<u64, RateError> {
    let t = s.trim();
    let t = t.strip_suffix("/s").or_else(|| t.strip_suffix("ps")).unwrap_or(t);
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| RateError::NotANumber(s.into()))?;
    let unit = unit.trim();
    // B is bytes; a lowercase b, bit or bits is bits (10Mbps, 10Mb/s, 10Mbit)
    let lower = unit.to_ascii_lowercase();
    if lower.ends_with("bit") || lower.ends_with("bits") || unit.ends_with('b') {
        return Err(RateError::Bits(s.into()));
    }
    let mult: f64 = match unit.to_ascii_lowercase().trim_end_matches("ib").trim_end_matches('b') {
        "" if unit.is_empty() => 1024.0,
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(RateError::UnknownUnit { given: s.into(), unit: unit.into() }),
    };
    let v = n * mult;
    if v.is_nan() || v < 1.0 || !v.is_finite() {
        return Err(RateError::TooSmall(s.into()));
    }
    Ok(v as u64)
}

/// Charges every `put` to a [`Throttle`].
pub struct ThrottledBackend {
    inner: Arc<dyn Backend>,
    throttle: Arc<Throttle>,
}

impl ThrottledBackend {
    /// Wraps `inner` so that every `put` first waits for its bytes in `throttle`; reads are not
    /// limited.
    pub fn new(inner: Arc<dyn Backend>, throttle: Arc<Throttle>) -> ThrottledBackend {
        ThrottledBackend { inner, throttle }
    }
}

#[async_trait]
impl Backend for ThrottledBackend {
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), BackendError> {
        self.throttle.take(data.len() as u64).await;
        self.inner.put(path, data).await
    }
    async fn get(&self, path: &str) -> Result<Vec<u8>, BackendError> {
        self.inner.get(path).await
    }
    async fn get_into(&self, path: &str, buf: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        self.inner.get_into(path, buf).await
    }
    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        self.inner.get_range(path, offset, len).await
    }
    async fn get_range_pieces(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeBytes, BackendError> {
        self.inner.get_range_pieces(path, offset, len).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list(prefix).await
    }
    async fn stat(&self, path: &str) -> Result<Option<u64>, BackendError> {
        self.inner.stat(path).await
    }
    async fn delete(&self, path: &str) -> Result<(), BackendError> {
        self.inner.delete(path).await
    }
    async fn list_abandoned(&self, before: SystemTime) -> Result<Vec<ObjectInfo>, BackendError> {
        self.inner.list_abandoned(before).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500K").unwrap(), 500 * 1024);
        assert_eq!(parse_rate("10M").unwrap(), 10 << 20);
        assert_eq!(parse_rate("1.5MiB/s").unwrap(), 3 << 19);
        assert_eq!(parse_rate("2G").unwrap(), 2 << 30);
        assert_eq!(parse_rate("100").unwrap(), 100 * 1024);
        assert_eq!(parse_rate("100B").unwrap(), 100);
        assert!(parse_rate("fast").is_err());
        // found in review: 10Mbps (megabits) was read as 10 MiB/s, 8 times the limit meant
        assert_eq!(parse_rate("10Mbps"), Err(RateError::Bits("10Mbps".into())));
        assert_eq!(parse_rate("10Mbit/s"), Err(RateError::Bits("10Mbit/s".into())));
        assert_eq!(parse_rate("10MB/s").unwrap(), 10 << 20);
        assert_eq!(parse_rate("10MBps").unwrap(), 10 << 20);
        assert_eq!(parse_rate("1MiBps").unwrap(), 1 << 20);
        for bits in ["10Mb", "10Mb/s", "10Mbits", "10mbit/s"] {
            assert_eq!(parse_rate(bits), Err(RateError::Bits(bits.into())), "{bits}");
        }
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("10X").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_average_rate_is_the_limit() {
        // 1 MiB/s: the first second of bytes goes at once, then 4 MiB more take 4 s.
        let t = Throttle::new(1 << 20);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            t.take(1 << 20).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(3900) && took <= Duration::from_millis(4100),
            "{took:?}"
        );
    }
}
