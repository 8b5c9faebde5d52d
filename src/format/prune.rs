//! Prune records (`prune/<id>`): data a prune has condemned but not yet deleted. Body of a
//! sealed object (magic b"RPRN"):
//! ```text
//! time_ns        i64   when the data was condemned
//! confirmed      u8    1 = `waiting` lists every backup lease alive after this record was
//!                      stored; 0 = not yet known (a prune died before listing the leases)
//! waiting_count  u32, then that many u64 lease ids
//! pack_count     u32, then that many 32-byte pack ids to delete
//! index_count    u32, then that many 32-byte index file ids to delete (superseded)
//! ```

use super::{FormatError, Id, Reader, Writer, invalid};

const MAX_ITEMS: usize = 1 << 24;

/// The body of a prune record (`prune/<id>`): data condemned by a prune's mark, deleted by a later
/// sweep once every lease in `waiting` has ended (`format-spec/prune.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneRecord {
    /// When the data was condemned, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// Whether `waiting` has been filled in: false until a prune lists the leases alive after the
    /// record was stored.
    pub confirmed: bool,
    /// Ids of the backup and read leases alive when the record was confirmed; the record is ready
    /// to sweep once none of them remains.
    pub waiting: Vec<u64>,
    /// Packs to delete when the record is swept (unless resurrected or still named by an index
    /// file).
    pub packs: Vec<Id>,
    /// Index files to delete when the record is swept: those that existed at the start of the mark.
    pub index_files: Vec<Id>,
}

impl PruneRecord {
    /// The record body, to be sealed under the `RPRN` magic.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.time_ns).u8(self.confirmed as u8).u32(self.waiting.len() as u32);
        for l in &self.waiting {
            w.u64(*l);
        }
        w.u32(self.packs.len() as u32);
        for p in &self.packs {
            w.id(p);
        }
        w.u32(self.index_files.len() as u32);
        for i in &self.index_files {
            w.id(i);
        }
        w.finish()
    }

    /// Decodes a record body; each list holds at most 2^24 ids.
    pub fn decode(data: &[u8]) -> Result<PruneRecord, FormatError> {
        let mut r = Reader::new(data);
        let time_ns = r.i64()?;
        let confirmed = match r.u8()? {
            0 => false,
            1 => true,
            v => return Err(invalid("confirmed", format!("{v}"))),
        };
        let n = r.count("waiting", 8, MAX_ITEMS)?;
        let waiting = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
        let n = r.count("packs", 32, MAX_ITEMS)?;
        let packs = (0..n).map(|_| r.id()).collect::<Result<_, _>>()?;
        let n = r.count("index files", 32, MAX_ITEMS)?;
        let index_files = (0..n).map(|_| r.id()).collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(PruneRecord { time_ns, confirmed, waiting, packs, index_files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_prune_record() {
        let p = PruneRecord {
            time_ns: 1,
            confirmed: true,
            waiting: vec![2],
            packs: vec![Id([3; 32])],
            index_files: vec![],
        };
        let b = p.encode();
        assert_eq!(&b[..21], &[1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[21..25], &[1, 0, 0, 0]);
        assert_eq!(b.len(), 25 + 32 + 4);
        assert_eq!(PruneRecord::decode(&b).unwrap(), p);
        for cut in 0..b.len() {
            assert!(PruneRecord::decode(&b[..cut]).is_err());
        }
    }
}
