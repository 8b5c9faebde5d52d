//! Little-endian readers and writers with bounds checks.

use super::{FormatError, Id, invalid};

/// Appends little-endian fields to a buffer.
#[derive(Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Appends a `u16`, little-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u32`, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a `u64`, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends an `i64`, little-endian (two's complement).
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends raw bytes, without a length prefix.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Appends the 32 bytes of an id.
    pub fn id(&mut self, id: &Id) -> &mut Self {
        self.bytes(&id.0)
    }
    /// A string as u16 length + UTF-8 bytes. The caller has checked the length limit.
    pub fn str16(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.len() <= u16::MAX as usize);
        self.u16(s.len() as u16).bytes(s.as_bytes())
    }
    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian fields from a slice; every read is bounds-checked.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    /// The next `n` bytes, borrowed from the input; [`FormatError::Truncated`] if fewer remain.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return Err(FormatError::Truncated { offset: self.pos, needed: n - self.remaining() });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// The next `N` bytes as a fixed-size array (magics, salts, nonces).
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    /// Reads a little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// Reads a 32-byte id.
    pub fn id(&mut self) -> Result<Id, FormatError> {
        Ok(Id(self.array()?))
    }
    /// A u16-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str16(&mut self, field: &'static str, max: usize) -> Result<String, FormatError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(invalid(field, format!("length {len} exceeds {max}")));
        }
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| invalid(field, "not UTF-8"))
    }
    /// A count that must be satisfiable by the remaining bytes at `min_each` bytes per item
    /// and at most `max`: bounds allocations by the input size.
    pub fn count(
        &mut self,
        field: &'static str,
        min_each: usize,
        max: usize,
    ) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(invalid(field, format!("count {n} exceeds {max}")));
        }
        if n.saturating_mul(min_each) > self.remaining() {
            return Err(FormatError::Truncated {
                offset: self.pos,
                needed: n * min_each - self.remaining(),
            });
        }
        Ok(n)
    }
    /// Reads 4 bytes and fails with [`FormatError::BadMagic`] unless they are `expected`.
    pub fn expect_magic(&mut self, expected: &[u8; 4]) -> Result<(), FormatError> {
        let found: [u8; 4] = self.array()?;
        if &found != expected {
            return Err(FormatError::BadMagic { expected: *expected, found });
        }
        Ok(())
    }
    /// Succeeds only if every byte was read: trailing bytes are an error, never ignored.
    pub fn finish(self) -> Result<(), FormatError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(FormatError::TrailingBytes(n)),
        }
    }
}
