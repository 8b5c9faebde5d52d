//! Snapshots (`snapshots/<id>`): the commit point of a backup. Body of a sealed object
//! (magic b"RSNP").
//!
//! ```text
//! time_ns     i64   snapshot time, nanoseconds since the Unix epoch (UTC)
//! kind        u8    1 = stream, 2 = tree (the lists describe its catalog), 3 = streams (the
//!                   lists describe a catalog of regular files, one per stream: a database
//!                   server's globals and every database, taken together)
//! reserved    3     0
//! size        u64   bytes of the stream
//! chunks      u64   number of chunks of the stream
//! name        str16 (<= 1024 bytes, not empty)
//! host        str16 (<= 255)
//! tag_count   u16   (<= 256), then tag_count str16 (<= 255 each)
//! command     str16 (<= 4096): the command line in command mode, else empty
//! program     str16 (<= 255): the writer's name and version
//! list_count  u32   then list_count 32-byte ids of List blobs, in stream order
//! ```
//! str16 = u16 byte length + UTF-8 bytes.

use super::{FormatError, Id, Reader, Writer, invalid};

/// Longest snapshot name in bytes.
pub const MAX_NAME: usize = 1024;
/// Longest host name in bytes; also the limit for `program`.
pub const MAX_HOST: usize = 255;
/// Most tags on one snapshot.
pub const MAX_TAGS: usize = 256;
/// Longest tag in bytes.
pub const MAX_TAG: usize = 255;
/// Longest recorded command line in bytes.
pub const MAX_COMMAND: usize = 4096;
/// Most content lists one snapshot may name.
pub const MAX_LISTS: usize = 1 << 24;

/// What a snapshot's content lists describe (`format-spec/snapshot.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SnapshotKind {
    /// One byte stream (a dump or a command's output): the lists name its chunks directly.
    Stream = 1,
    /// A file tree: the content lists describe its catalog (`format::tree`).
    Tree = 2,
    /// Several streams taken together (`repo backup --stream NAME=CMD …`): a catalog like a
    /// tree's whose entries are regular files, one per stream.
    Streams = 3,
}

impl SnapshotKind {
    /// True for the kinds whose content lists describe a catalog.
    pub fn has_catalog(self) -> bool {
        matches!(self, SnapshotKind::Tree | SnapshotKind::Streams)
    }
}

/// The body of a snapshot (`snapshots/<id>`), the commit point of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Snapshot time, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// Stream, tree or server snapshot; decides what the lists describe.
    pub kind: SnapshotKind,
    /// Bytes of the stream; for a tree the sum of its regular files' sizes, for a server snapshot
    /// the sum of its streams.
    pub size: u64,
    /// Chunks of the stream; for a tree the number of catalog entries, for a server snapshot the
    /// number of streams.
    pub chunks: u64,
    /// What the snapshot is grouped by, e.g. `postgres/fnb-admin` (1 ..= 1024 bytes).
    pub name: String,
    /// Host that made the snapshot (at most 255 bytes).
    pub host: String,
    /// Free-form labels (at most 256 of 255 bytes each).
    pub tags: Vec<String>,
    /// The command line in command mode, else empty (at most 4096 bytes).
    pub command: String,
    /// Writer's name and version, e.g. `repo 0.1.0` (at most 255 bytes).
    pub program: String,
    /// Ids of the content-list blobs, in stream order.
    pub lists: Vec<Id>,
}

impl Snapshot {
    /// Checks the limits the decoder enforces, so that whatever is written can be read back.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.name.is_empty() || self.name.len() > MAX_NAME {
            return Err(invalid("name", format!("length must be 1..={MAX_NAME}")));
        }
        if self.host.len() > MAX_HOST {
            return Err(invalid("host", "too long"));
        }
        if self.tags.len() > MAX_TAGS || self.tags.iter().any(|t| t.len() > MAX_TAG) {
            return Err(invalid("tags", "too many or too long"));
        }
        if self.command.len() > MAX_COMMAND || self.program.len() > MAX_HOST {
            return Err(invalid("command", "too long"));
        }
        Ok(())
    }

    /// The snapshot body; fails instead of writing what [`Snapshot::decode`] would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let mut w = Writer::new();
        w.i64(self.time_ns).u8(self.kind as u8).bytes(&[0; 3]).u64(self.size).u64(self.chunks);
        w.str16(&self.name).str16(&self.host).u16(self.tags.len() as u16);
        for t in &self.tags {
            w.str16(t);
        }
        w.str16(&self.command).str16(&self.program).u32(self.lists.len() as u32);
        for l in &self.lists {
            w.id(l);
        }
        Ok(w.finish())
    }

    /// Decodes and checks a snapshot body; an unknown kind is refused, never guessed.
    pub fn decode(data: &[u8]) -> Result<Snapshot, FormatError> {
        let mut r = Reader::new(data);
        let time_ns = r.i64()?;
        let kind = match r.u8()? {
            1 => SnapshotKind::Stream,
            2 => SnapshotKind::Tree,
            3 => SnapshotKind::Streams,
            k => return Err(invalid("kind", format!("unknown snapshot kind {k}"))),
        };
        if r.array::<3>()? != [0; 3] {
            return Err(invalid("reserved", "not zero"));
        }
        let size = r.u64()?;
        let chunks = r.u64()?;
        let name = r.str16("name", MAX_NAME)?;
        let host = r.str16("host", MAX_HOST)?;
        let ntags = r.u16()? as usize;
        if ntags > MAX_TAGS {
            return Err(invalid("tags", "too many"));
        }
        let mut tags = Vec::with_capacity(ntags.min(r.remaining() / 2));
        for _ in 0..ntags {
            tags.push(r.str16("tag", MAX_TAG)?);
        }
        let command = r.str16("command", MAX_COMMAND)?;
        let program = r.str16("program", MAX_HOST)?;
        let nl = r.count("list count", 32, MAX_LISTS)?;
        let mut lists = Vec::with_capacity(nl);
        for _ in 0..nl {
            lists.push(r.id()?);
        }
        r.finish()?;
        let s = Snapshot { time_ns, kind, size, chunks, name, host, tags, command, program, lists };
        s.validate()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            time_ns: 1_771_034_400_000_000_000,
            kind: SnapshotKind::Stream,
            size: 5,
            chunks: 1,
            name: "postgres/db".into(),
            host: "h".into(),
            tags: vec!["daily".into()],
            command: String::new(),
            program: "repo 0.1.0".into(),
            lists: vec![Id([4; 32])],
        }
    }

    #[test]
    fn golden_snapshot() {
        let s = sample();
        let b = s.encode().unwrap();
        assert_eq!(&b[..12], &[0, 64, 255, 72, 103, 250, 147, 24, 1, 0, 0, 0]);
        assert_eq!(&b[28..41], b"\x0b\x00postgres/db");
        assert_eq!(b.len(), 28 + 13 + 3 + 2 + 7 + 2 + 12 + 4 + 32);
        assert_eq!(Snapshot::decode(&b).unwrap(), s);
        for cut in 0..b.len() {
            assert!(Snapshot::decode(&b[..cut]).is_err());
        }
        let mut empty = s.clone();
        empty.name.clear();
        assert!(empty.encode().is_err());
        // a server snapshot is kind 3 at byte 8; kind 4 is unknown
        let streams = Snapshot { kind: SnapshotKind::Streams, ..s.clone() };
        let mut b = streams.encode().unwrap();
        assert_eq!(b[8], 3);
        assert_eq!(Snapshot::decode(&b).unwrap(), streams);
        assert!(streams.kind.has_catalog() && !SnapshotKind::Stream.has_catalog());
        b[8] = 4;
        assert!(Snapshot::decode(&b).is_err());
    }
}
