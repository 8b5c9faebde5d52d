//! gzip output on every core: the input is cut into blocks, each block becomes an independent
//! gzip member (RFC 1952 §2.2: a gzip file is a series of members), members are compressed in
//! parallel and written in order. Every gzip reader (gunzip, zcat, Python's gzip, pigz) reads
//! the concatenation as one stream. Independent members cost a little ratio (each starts with
//! an empty dictionary), which large blocks keep small.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Bytes per member. 1 MiB keeps the ratio within a fraction of a percent of one stream.
pub const BLOCK: usize = 1 << 20;

/// A `Write` that gzips on every core: 1 MiB blocks become independent gzip members, compressed on
/// rayon and written in order. Call [`ParallelGzWriter::finish`] (or `flush`): dropping it loses
/// what is still buffered.
pub struct ParallelGzWriter<W: Write> {
    inner: W,
    level: u32,
    buf: Vec<u8>,
    /// Members being compressed, in output order.
    queue: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    /// Whether any member was started: an empty input still needs one (empty) member.
    started: bool,
}

impl<W: Write> ParallelGzWriter<W> {
    /// `level` 1–9 as in gzip (6 is gzip's default).
    pub fn new(inner: W, level: u32) -> Self {
        let threads = rayon::current_num_threads().max(1);
        ParallelGzWriter {
            inner,
            level: level.clamp(1, 9),
            buf: Vec::with_capacity(BLOCK),
            queue: VecDeque::new(),
            max_in_flight: threads * 2,
            started: false,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        self.started = true;
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let (tx, rx) = mpsc::sync_channel(1);
        let level = self.level;
        rayon::spawn(move || {
            let _ = tx.send(compress_member(&block, level));
        });
        self.queue.push_back(rx);
        while self.queue.len() >= self.max_in_flight {
            self.write_front()?;
        }
        Ok(())
    }

    fn write_front(&mut self) -> io::Result<()> {
        if let Some(rx) = self.queue.pop_front() {
            let member = rx.recv().map_err(|_| io::Error::other("gzip worker stopped"))??;
            self.inner.write_all(&member)?;
        }
        Ok(())
    }

    /// Writes everything still buffered and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.inner)
    }
}

fn compress_member(block: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(block.len() / 3 + 64), Compression::new(level));
    enc.write_all(block)?;
    enc.finish()
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit()?;
        }
        Ok(n)
    }
    /// Ends the current member early and writes every pending member: after `flush` the
    /// output is a complete gzip file (later writes append more members).
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() || !self.started {
            self.submit()?;
        }
        while !self.queue.is_empty() {
            self.write_front()?;
        }
        self.inner.flush()
    }
}

/// Whether `head` starts a gzip stream.
pub fn is_gzip(head: &[u8]) -> bool {
    head.len() >= 3 && head[0] == 0x1f && head[1] == 0x8b && head[2] == 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        let words = ["INSERT", "INTO", "events", "VALUES", "(42,", "'2026-02-14'", "NULL", "\n"];
        let mut x = 12345u64;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(words[(x % 8) as usize].as_bytes());
            v.push(b' ');
        }
        v.truncate(len);
        v
    }

    #[test]
    fn members_in_order_decode_as_one_stream() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 777] {
            let data = sample(len);
            let mut w = ParallelGzWriter::new(Vec::new(), 6);
            // odd write sizes cross block boundaries
            for part in data.chunks(333_333) {
                w.write_all(part).unwrap();
            }
            let gz = w.finish().unwrap();
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
            assert!(back == data, "len {len}");
            if len > 0 {
                assert!(is_gzip(&gz));
            }
        }
    }

    #[test]
    fn ratio_close_to_a_single_stream() {
        let data = sample(8 * BLOCK);
        let mut w = ParallelGzWriter::new(Vec::new(), 6);
        w.write_all(&data).unwrap();
        let parallel = w.finish().unwrap().len();
        let single = compress_member(&data, 6).unwrap().len();
        assert!((parallel as f64) < single as f64 * 1.02, "{parallel} vs {single}");
    }
}
