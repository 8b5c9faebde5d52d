//! Leases (`locks/<name>`): a running backup or prune announces itself. Nothing ever waits
//! for a backup lease; a prune only delays deleting data until the leases that existed when it
//! condemned the data are gone (see `format-spec/prune.md`).
//!
//! Name: `<kind>-<lease id: 16 hex digits>-<refresh time: Unix seconds, decimal>`, kind =
//! `backup` | `prune` | `read` (restore, check, export, copy's source, sync: a prune delays
//! deleting data until the readers that may be using it are gone, as for backups). A lease is
//! refreshed by writing the same kind and id with a new time and
//! then deleting the older name, so the newest time of a lease id is its last refresh, readable
//! from a listing alone. Body (informational, for messages):
//! ```text
//! 0 4 magic b"RLCK" | 4 1 version 1 | 5 4 pid u32 | 9 str16 host (<= 255)
//! ```

use super::{FormatError, Reader, Writer, invalid};

/// Magic at the start of a lease body.
pub const MAGIC_LOCK: [u8; 4] = *b"RLCK";

/// What the holder of a lease is doing; the first part of the lease's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseKind {
    /// A backup (or anything else that writes data, index files and snapshots).
    Backup,
    /// A prune; prunes exclude each other.
    Prune,
    /// A reader: restore, check, export, verify-restore, copy's source, sync.
    Read,
}

impl LeaseKind {
    /// The name prefix: `backup`, `prune` or `read`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseKind::Backup => "backup",
            LeaseKind::Prune => "prune",
            LeaseKind::Read => "read",
        }
    }
}

/// The parsed name of a lease object: everything a prune needs comes from a listing alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseName {
    /// What the holder does.
    pub kind: LeaseKind,
    /// Random id of the lease, kept across refreshes (16 hex digits in the name).
    pub id: u64,
    /// Time of the last refresh, Unix seconds by the holder's clock; the lease is dead 30 minutes
    /// after it.
    pub time: i64,
}

impl LeaseName {
    /// `<kind>-<id: 16 hex digits>-<time>`, the object name under `locks/`.
    pub fn encode(&self) -> String {
        format!("{}-{:016x}-{}", self.kind.as_str(), self.id, self.time)
    }
    /// Parses a name under `locks/`; an unknown kind or malformed part is an error (callers leave
    /// such names alone).
    pub fn decode(name: &str) -> Result<LeaseName, FormatError> {
        let mut parts = name.splitn(3, '-');
        let kind = match parts.next() {
            Some("backup") => LeaseKind::Backup,
            Some("prune") => LeaseKind::Prune,
            Some("read") => LeaseKind::Read,
            _ => return Err(invalid("lease name", name.chars().take(80).collect::<String>())),
        };
        let id =
            parts.next().filter(|s| s.len() == 16).and_then(|s| u64::from_str_radix(s, 16).ok());
        let time = parts.next().and_then(|s| s.parse::<i64>().ok());
        match (id, time) {
            (Some(id), Some(time)) => Ok(LeaseName { kind, id, time }),
            _ => Err(invalid("lease name", name.chars().take(80).collect::<String>())),
        }
    }
}

/// The informational body of a lease: who holds it, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseBody {
    /// Process id of the holder on its host.
    pub pid: u32,
    /// Host name of the holder, cut to 255 characters (written empty if those exceed 255 bytes).
    pub host: String,
}

impl LeaseBody {
    /// The body bytes: magic, version 1, pid, host.
    pub fn encode(&self) -> Vec<u8> {
        let host: String = self.host.chars().take(255).collect();
        let host = if host.len() > 255 { String::new() } else { host };
        let mut w = Writer::new();
        w.bytes(&MAGIC_LOCK).u8(1).u32(self.pid).str16(&host);
        w.finish()
    }
    /// Decodes a body; an unknown version is refused.
    pub fn decode(data: &[u8]) -> Result<LeaseBody, FormatError> {
        let mut r = Reader::new(data);
        r.expect_magic(&MAGIC_LOCK)?;
        let v = r.u8()?;
        if v != 1 {
            return Err(FormatError::UnsupportedVersion(v));
        }
        let b = LeaseBody { pid: r.u32()?, host: r.str16("host", 255)? };
        r.finish()?;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_lease() {
        let n = LeaseName { kind: LeaseKind::Backup, id: 0xabc, time: 1_771_034_400 };
        assert_eq!(n.encode(), "backup-0000000000000abc-1771034400");
        assert_eq!(LeaseName::decode(&n.encode()).unwrap(), n);
        assert!(LeaseName::decode("backup-xyz-1").is_err());
        assert!(LeaseName::decode("other-0000000000000abc-1").is_err());
        let r = LeaseName { kind: LeaseKind::Read, id: 1, time: 2 };
        assert_eq!(r.encode(), "read-0000000000000001-2");
        assert_eq!(LeaseName::decode("read-0000000000000001-2").unwrap(), r);
        let b = LeaseBody { pid: 7, host: "h".into() };
        assert_eq!(b.encode(), vec![b'R', b'L', b'C', b'K', 1, 7, 0, 0, 0, 1, 0, b'h']);
        assert_eq!(LeaseBody::decode(&b.encode()).unwrap(), b);
    }
}
