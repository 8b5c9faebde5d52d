//! Tree catalogs: the entries of a tree snapshot (snapshot kind 2), in one byte stream that is
//! chunked and stored like a dump stream (the snapshot's content lists describe it).
//!
//! ```text
//! catalog   = magic b"RTRE", version u8 (1), reserved 3 (0), then entries until the end
//! entry     = body_len u32 (<= MAX_ENTRY), body
//! body      = kind u8, flags u8, reserved u16 (0),
//!             mode u32 (permission bits, st_mode & 0o7777), uid u32, gid u32,
//!             mtime_ns i64, ctime_ns i64, ino u64, size u64, rdev u64,
//!             path bytes16, user bytes16, group bytes16, link bytes16,
//!             xattr_count u16, then xattr_count × (name bytes16, value bytes32),
//!             extent_count u32, then extent_count × (offset u64, len u64),
//!             content_count u32, then content_count × (raw_len u32, chunk id 32)   [inline]
//!                                       or content_count × list id 32          [FLAG_LISTS]
//! ```
//! bytes16 / bytes32 = u16 / u32 byte length + bytes (not necessarily UTF-8: paths are the
//! file system's bytes). Entries come in depth-first order, names sorted by bytes, a
//! directory before its contents. See `format-spec/tree.md`.

use super::{FormatError, Id, Reader, Writer, invalid};

/// Magic at the start of a catalog stream (inside a snapshot's content, not an object).
pub const CATALOG_MAGIC: &[u8; 4] = b"RTRE";
/// The only catalog version this build reads or writes.
pub const CATALOG_VERSION: u8 = 1;
/// Bytes of the catalog header: magic, version, 3 reserved bytes.
pub const CATALOG_HEADER_LEN: usize = 8;
/// Largest entry body in bytes (16 MiB).
pub const MAX_ENTRY: usize = 16 << 20;
/// Longest path or link target in bytes.
pub const MAX_PATH: usize = 4096;
/// Longest owner or group name in bytes.
pub const MAX_OWNER: usize = 255;
/// Most extended attributes on one entry.
pub const MAX_XATTRS: usize = 1024;
/// Longest extended attribute name in bytes.
pub const MAX_XATTR_NAME: usize = 255;
/// Largest extended attribute value in bytes (64 KiB).
pub const MAX_XATTR_VALUE: usize = 64 << 10;

/// Content is described by content-list blobs (type 1) rather than inline chunks.
pub const FLAG_LISTS: u8 = 1;
/// A sparse file: only the extents hold data, the rest are holes.
pub const FLAG_SPARSE: u8 = 2;
/// The file changed while it was read: the stored content may be inconsistent.
pub const FLAG_CHANGED: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_LISTS | FLAG_SPARSE | FLAG_CHANGED;

/// The file type of a catalog entry (sockets are not stored, as with tar).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Kind {
    /// A directory.
    Dir = 1,
    /// A regular file: the only kind with content.
    File = 2,
    /// A symbolic link; `link` is its target.
    Symlink = 3,
    /// A further name of a file stored earlier in the catalog (`link` = that entry's path).
    Hardlink = 4,
    /// A character device; `rdev` is its device number.
    CharDev = 5,
    /// A block device; `rdev` is its device number.
    BlockDev = 6,
    /// A named pipe.
    Fifo = 7,
}

impl Kind {
    fn from_u8(k: u8) -> Result<Kind, FormatError> {
        Ok(match k {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            4 => Kind::Hardlink,
            5 => Kind::CharDev,
            6 => Kind::BlockDev,
            7 => Kind::Fifo,
            k => return Err(invalid("entry kind", format!("unknown kind {k}"))),
        })
    }
}

/// How a file's bytes are stored.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Content {
    /// No content: anything but a regular file.
    #[default]
    None,
    /// The chunks themselves, in order: (id, raw length).
    Inline(Vec<(Id, u32)>),
    /// Content-list blobs, in order (for large files; same format as a stream's lists).
    Lists(Vec<Id>),
}

/// One catalog entry: a path with its metadata and, for a regular file, the chunks of its content
/// (`format-spec/tree.md`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Entry {
    /// The file type; `None` (the default) counts as a regular file, and decoding always sets it.
    pub kind: Option<Kind>,
    /// [`FLAG_LISTS`], [`FLAG_SPARSE`], [`FLAG_CHANGED`]; other bits are invalid.
    pub flags: u8,
    /// Permission bits only: `st_mode & 0o7777` (setuid, setgid and sticky included).
    pub mode: u32,
    /// Numeric owner; restore uses it, not `user`.
    pub uid: u32,
    /// Numeric group; restore uses it, not `group`.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the Unix epoch: change detection only, never restored.
    pub ctime_ns: i64,
    /// Inode number at backup time: change detection only.
    pub ino: u64,
    /// File size in bytes (0 for anything but a regular file), holes of a sparse file included.
    pub size: u64,
    /// Device number (`st_rdev`) of a device node, else whatever `lstat` gave.
    pub rdev: u64,
    /// Path relative to the backup root, `/`-separated file-system bytes (1 ..= 4096, no NUL).
    pub path: Vec<u8>,
    /// Owner name at backup time, for display (at most 255 bytes; may be empty).
    pub user: Vec<u8>,
    /// Group name at backup time, for display (at most 255 bytes; may be empty).
    pub group: Vec<u8>,
    /// Symlink target, or for a hard link the path of the entry stored first under the same inode;
    /// else empty.
    pub link: Vec<u8>,
    /// Extended attributes as (name, value) bytes, POSIX ACLs included (`system.posix_acl_*`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data extents of a sparse file (offset, length); empty for other files.
    pub extents: Vec<(u64, u64)>,
    /// Where the file's bytes are: chunks, content lists, or nothing.
    pub content: Content,
}

/// The 8 bytes a catalog starts with: `RTRE`, version 1, three zero bytes.
pub fn catalog_header() -> Vec<u8> {
    let mut h = CATALOG_MAGIC.to_vec();
    h.extend_from_slice(&[CATALOG_VERSION, 0, 0, 0]);
    h
}

/// Checks the 8-byte catalog header: magic, a known version and zero reserved bytes.
pub fn check_header(h: &[u8]) -> Result<(), FormatError> {
    let mut r = Reader::new(h);
    r.expect_magic(CATALOG_MAGIC)?;
    let v = r.u8()?;
    if v != CATALOG_VERSION {
        return Err(FormatError::UnsupportedVersion(v));
    }
    if r.array::<3>()? != [0; 3] {
        return Err(invalid("catalog reserved", "not zero"));
    }
    Ok(())
}

fn bytes16(w: &mut Writer, b: &[u8]) {
    w.u16(b.len() as u16).bytes(b);
}

fn read_bytes(
    r: &mut Reader,
    len: usize,
    field: &'static str,
    max: usize,
) -> Result<Vec<u8>, FormatError> {
    if len > max {
        return Err(invalid(field, format!("length {len} exceeds {max}")));
    }
    Ok(r.take(len)?.to_vec())
}

impl Entry {
    /// The entry's file type, a regular file when unset.
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::File)
    }

    /// Checks the rules a reader enforces (`format-spec/tree.md`): limits, known flags, content
    /// only on regular files and matching the LISTS flag, sorted extents within `size`, and inline
    /// chunk lengths adding up to the data length.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.path.is_empty() || self.path.len() > MAX_PATH || self.path.contains(&0) {
            return Err(invalid("path", "empty, too long or containing NUL"));
        }
        if self.link.len() > MAX_PATH || self.user.len() > MAX_OWNER || self.group.len() > MAX_OWNER
        {
            return Err(invalid("link/owner", "too long"));
        }
        if self.xattrs.len() > MAX_XATTRS
            || self
                .xattrs
                .iter()
                .any(|(n, v)| n.len() > MAX_XATTR_NAME || v.len() > MAX_XATTR_VALUE)
        {
            return Err(invalid("xattrs", "too many or too long"));
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(invalid("flags", format!("unknown flags {:#x}", self.flags)));
        }
        let lists = self.flags & FLAG_LISTS != 0;
        match (&self.content, lists) {
            (Content::Lists(_), false) | (Content::Inline(_), true) => {
                return Err(invalid("content", "does not match the lists flag"));
            }
            _ => {}
        }
        if self.flags & FLAG_SPARSE == 0 && !self.extents.is_empty() {
            return Err(invalid("extents", "present without the sparse flag"));
        }
        if (self.kind() == Kind::File) == matches!(self.content, Content::None) {
            return Err(invalid("content", "a file needs content and nothing else may have it"));
        }
        let mut end = 0u64;
        for &(off, len) in &self.extents {
            let stop = off.checked_add(len).ok_or_else(|| invalid("extents", "overflow"))?;
            if off < end || stop > self.size {
                return Err(invalid("extents", "unordered, overlapping or beyond the size"));
            }
            end = stop;
        }
        if let Content::Inline(c) = &self.content
            && c.iter().map(|(_, l)| *l as u64).sum::<u64>() != self.data_len()
        {
            return Err(invalid("content", "chunk lengths do not add up to the data length"));
        }
        Ok(())
    }

    /// Bytes of stored data: the size, or the sum of the extents of a sparse file.
    pub fn data_len(&self) -> u64 {
        self.data_extents().iter().map(|e| e.1).sum()
    }

    /// Where the stored data goes in the file: the extents of a sparse file, else all of it.
    pub fn data_extents(&self) -> Vec<(u64, u64)> {
        if self.flags & FLAG_SPARSE != 0 { self.extents.clone() } else { vec![(0, self.size)] }
    }

    /// Appends `body_len` and the body to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.validate()?;
        let mut w = Writer::new();
        w.u8(self.kind() as u8).u8(self.flags).u16(0);
        w.u32(self.mode).u32(self.uid).u32(self.gid);
        w.i64(self.mtime_ns).i64(self.ctime_ns).u64(self.ino).u64(self.size).u64(self.rdev);
        for b in [&self.path, &self.user, &self.group, &self.link] {
            bytes16(&mut w, b);
        }
        w.u16(self.xattrs.len() as u16);
        for (n, v) in &self.xattrs {
            bytes16(&mut w, n);
            w.u32(v.len() as u32).bytes(v);
        }
        w.u32(self.extents.len() as u32);
        for (o, l) in &self.extents {
            w.u64(*o).u64(*l);
        }
        match &self.content {
            Content::None => {
                w.u32(0);
            }
            Content::Inline(c) => {
                w.u32(c.len() as u32);
                for (id, len) in c {
                    w.u32(*len).id(id);
                }
            }
            Content::Lists(l) => {
                w.u32(l.len() as u32);
                for id in l {
                    w.id(id);
                }
            }
        }
        let body = w.finish();
        if body.len() > MAX_ENTRY {
            return Err(invalid("entry", format!("{} bytes exceeds {MAX_ENTRY}", body.len())));
        }
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Decodes one entry body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Entry, FormatError> {
        let mut r = Reader::new(body);
        let kind = Kind::from_u8(r.u8()?)?;
        let flags = r.u8()?;
        if r.u16()? != 0 {
            return Err(invalid("entry reserved", "not zero"));
        }
        let mut e = Entry { kind: Some(kind), flags, ..Default::default() };
        e.mode = r.u32()?;
        e.uid = r.u32()?;
        e.gid = r.u32()?;
        e.mtime_ns = r.i64()?;
        e.ctime_ns = r.i64()?;
        e.ino = r.u64()?;
        e.size = r.u64()?;
        e.rdev = r.u64()?;
        let n = r.u16()? as usize;
        e.path = read_bytes(&mut r, n, "path", MAX_PATH)?;
        let n = r.u16()? as usize;
        e.user = read_bytes(&mut r, n, "user", MAX_OWNER)?;
        let n = r.u16()? as usize;
        e.group = read_bytes(&mut r, n, "group", MAX_OWNER)?;
        let n = r.u16()? as usize;
        e.link = read_bytes(&mut r, n, "link", MAX_PATH)?;
        let nx = r.u16()? as usize;
        if nx > MAX_XATTRS {
            return Err(invalid("xattrs", "too many"));
        }
        for _ in 0..nx {
            let n = r.u16()? as usize;
            let name = read_bytes(&mut r, n, "xattr name", MAX_XATTR_NAME)?;
            let n = r.u32()? as usize;
            let value = read_bytes(&mut r, n, "xattr value", MAX_XATTR_VALUE)?;
            e.xattrs.push((name, value));
        }
        let ne = r.count("extent count", 16, MAX_ENTRY / 16)?;
        for _ in 0..ne {
            e.extents.push((r.u64()?, r.u64()?));
        }
        if flags & FLAG_LISTS != 0 {
            let n = r.count("list count", 32, MAX_ENTRY / 32)?;
            let mut l = Vec::with_capacity(n);
            for _ in 0..n {
                l.push(r.id()?);
            }
            e.content = Content::Lists(l);
        } else {
            let n = r.count("chunk count", 36, MAX_ENTRY / 36)?;
            if n > 0 || matches!(kind, Kind::File) {
                let mut c = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.u32()?;
                    if len > super::pack::MAX_BLOB_LEN {
                        return Err(invalid("chunk length", len.to_string()));
                    }
                    c.push((r.id()?, len));
                }
                e.content = Content::Inline(c);
            }
        }
        r.finish()?;
        e.validate()?;
        Ok(e)
    }
}

/// Splits catalog bytes (header included) into entries, one at a time.
pub struct CatalogIter<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Checks the catalog header and iterates over its entries; the iterator stops after the first
/// error.
pub fn entries(catalog: &[u8]) -> Result<CatalogIter<'_>, FormatError> {
    let header = catalog.get(..CATALOG_HEADER_LEN).ok_or_else(|| FormatError::Truncated {
        offset: 0,
        needed: CATALOG_HEADER_LEN.saturating_sub(catalog.len()),
    })?;
    check_header(header)?;
    Ok(CatalogIter { rest: &catalog[CATALOG_HEADER_LEN..], failed: false })
}

impl Iterator for CatalogIter<'_> {
    type Item = Result<Entry, FormatError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let r = match next_entry(self.rest) {
            Ok(Some((e, n))) => {
                self.rest = &self.rest[n..];
                Ok(e)
            }
            Ok(None) => Err(FormatError::Truncated { offset: 0, needed: 4 }),
            Err(e) => Err(e),
        };
        self.failed = r.is_err();
        Some(r)
    }
}

/// The entry framed at the start of `buf` (the catalog after its header, or a later part of
/// it) and the bytes it takes; `None` if `buf` holds only the beginning of it. A reader that
/// gets the catalog in pieces decodes it as they arrive.
pub fn next_entry(buf: &[u8]) -> Result<Option<(Entry, usize)>, FormatError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let len = Reader::new(len).u32()? as usize;
    if len > MAX_ENTRY {
        return Err(invalid("entry length", format!("{len} exceeds {MAX_ENTRY}")));
    }
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    Ok(Some((Entry::decode(body)?, 4 + len)))
}

/// The order of a catalog written by a backup: depth-first, names compared by bytes, so a
/// directory comes right before its contents (`a`, `a/z`, `a-b`). This is byte order on the
/// paths with `/` sorting before every other byte.
pub fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|c| *c == b'/').cmp(b.split(|c| *c == b'/'))
}

/// Decodes a whole catalog (the fuzz and mutation entry point).
pub fn decode_catalog(catalog: &[u8]) -> Result<Vec<Entry>, FormatError> {
    entries(catalog)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Vec<Entry> {
        let dir = Entry {
            kind: Some(Kind::Dir),
            mode: 0o700,
            uid: 105,
            gid: 109,
            mtime_ns: 1_771_034_400_123_456_789,
            path: b"mnt/data/postgres".to_vec(),
            user: b"postgres".to_vec(),
            group: b"postgres".to_vec(),
            ..Default::default()
        };
        let file = Entry {
            kind: Some(Kind::File),
            flags: FLAG_SPARSE,
            mode: 0o600,
            size: 10,
            ino: 7,
            path: b"mnt/data/postgres/PG_VERSION".to_vec(),
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
            extents: vec![(0, 3)],
            content: Content::Inline(vec![(Id([9; 32]), 3)]),
            ..Default::default()
        };
        vec![dir, file]
    }

    #[test]
    fn golden_catalog() {
        let mut b = catalog_header();
        for e in sample() {
            e.encode_into(&mut b).unwrap();
        }
        assert_eq!(&b[..8], b"RTRE\x01\x00\x00\x00");
        // first entry: length, kind 1, flags 0, reserved, mode 0o700
        assert_eq!(&b[8..20], &[107, 0, 0, 0, 1, 0, 0, 0, 0xc0, 1, 0, 0]);
        assert_eq!(&b[68..87], b"\x11\x00mnt/data/postgres");
        assert_eq!(b.len(), 8 + 4 + 107 + 4 + 167);
        assert_eq!(decode_catalog(&b).unwrap(), sample());
        for cut in 0..b.len() {
            if cut == CATALOG_HEADER_LEN {
                continue;
            }
            if cut != 8 + 4 + 107 {
                assert!(decode_catalog(&b[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn entries_decode_from_pieces() {
        let mut b = vec![];
        for e in sample() {
            e.encode_into(&mut b).unwrap();
        }
        let first = 4 + 107;
        for cut in 0..first {
            assert!(next_entry(&b[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let (e, n) = next_entry(&b).unwrap().unwrap();
        assert_eq!((e, n), (sample()[0].clone(), first));
        assert_eq!(next_entry(&b[first..]).unwrap().unwrap().0, sample()[1]);
        let mut huge = ((MAX_ENTRY + 1) as u32).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(next_entry(&huge).is_err(), "an oversized length is refused before waiting");
    }

    #[test]
    fn walk_order_puts_a_directory_before_its_contents() {
        use std::cmp::Ordering::*;
        let mut v: Vec<&[u8]> = vec![b"a-b", b"a/z", b"a", b"a/b/c", b"a0", b"b", b"a/b"];
        v.sort_by(|x, y| walk_order(x, y));
        assert_eq!(v, [&b"a"[..], b"a/b", b"a/b/c", b"a/z", b"a-b", b"a0", b"b"]);
        assert_eq!(walk_order(b"x/y", b"x/y"), Equal);
        assert_eq!(walk_order(b"x", b"x/y"), Less);
        // byte order would put `a-b` (0x2d) before `a/z` (0x2f)
        assert_eq!(walk_order(b"a-b", b"a/z"), Greater);
    }

    #[test]
    fn rejects_inconsistent_entries() {
        let mut e = sample().remove(1);
        e.content = Content::Inline(vec![(Id([9; 32]), 4)]);
        assert!(e.encode_into(&mut vec![]).is_err());
        let mut e = sample().remove(1);
        e.extents = vec![(0, 11)];
        assert!(e.encode_into(&mut vec![]).is_err());
        let mut e = sample().remove(0);
        e.path = b"a\0b".to_vec();
        assert!(e.encode_into(&mut vec![]).is_err());
    }
}
