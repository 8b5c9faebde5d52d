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

pub const MAGIC_PRUNE: [u8; 4] = *b"RPRN";
const MAX_ITEMS: usize = 1 << 24;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneRecord {
    pub time_ns: i64,
    pub confirmed: bool,
    pub waiting: Vec<u64>,
    pub packs: Vec<Id>,
    pub index_files: Vec<Id>,
}

impl PruneRecord {
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
