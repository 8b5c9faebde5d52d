//! Snapshot bundles (`bundles/<id>`): copies of many sealed snapshot objects in one object, so
//! that a client with an empty cache (a fresh pod) lists thousands of snapshots with a few
//! requests instead of one per snapshot (`format-spec/snapshot.md`, "Snapshot bundles").
//! Body of a sealed object (magic b"RSBN"):
//! ```text
//! count  u32   (<= 1048576)
//! count × (id 32, len u32 (<= 1048576), len bytes: the sealed snapshot object stored
//!              under snapshots/<id>, byte for byte)
//! ```
//! A bundle is only ever a copy: readers use an object from it only when `snapshots/` lists
//! its id and the bytes hash to it.

use super::{FormatError, Id, Reader, Writer};

/// The most objects one bundle holds.
pub const MAX_OBJECTS: usize = 1 << 20;
/// The largest snapshot object a bundle carries (larger ones are fetched on their own).
pub const MAX_OBJECT_LEN: usize = 1 << 20;

/// The body of a snapshot bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    /// Snapshot ids and their sealed objects.
    pub objects: Vec<(Id, Vec<u8>)>,
}

impl Bundle {
    /// The body, to be sealed under the `RSBN` magic. Objects longer than
    /// [`MAX_OBJECT_LEN`], and any beyond [`MAX_OBJECTS`], are the caller's to leave out: the
    /// encoder refuses them.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        if self.objects.len() > MAX_OBJECTS {
            return Err(super::invalid("objects", format!("{} objects", self.objects.len())));
        }
        let mut w = Writer::new();
        w.u32(self.objects.len() as u32);
        for (id, bytes) in &self.objects {
            if bytes.len() > MAX_OBJECT_LEN {
                return Err(super::invalid("object", format!("{} bytes", bytes.len())));
            }
            w.id(id).u32(bytes.len() as u32).bytes(bytes);
        }
        Ok(w.finish())
    }

    /// Decodes a body; every count and length is checked against its maximum and the bytes
    /// left before anything is allocated.
    pub fn decode(data: &[u8]) -> Result<Bundle, FormatError> {
        let mut r = Reader::new(data);
        let n = r.count("objects", 36, MAX_OBJECTS)?;
        let mut objects = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.id()?;
            let len = r.u32()? as usize;
            if len > MAX_OBJECT_LEN {
                return Err(super::invalid("object length", format!("{len}")));
            }
            objects.push((id, r.take(len)?.to_vec()));
        }
        r.finish()?;
        Ok(Bundle { objects })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bundle() {
        let b = Bundle { objects: vec![(Id([7; 32]), vec![1, 2, 3]), (Id([9; 32]), vec![])] };
        let bytes = b.encode().unwrap();
        let mut want = vec![2, 0, 0, 0];
        want.extend([7; 32]);
        want.extend([3, 0, 0, 0, 1, 2, 3]);
        want.extend([9; 32]);
        want.extend([0, 0, 0, 0]);
        assert_eq!(bytes, want);
        assert_eq!(Bundle::decode(&bytes).unwrap(), b);
        for cut in 0..bytes.len() {
            assert!(Bundle::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Bundle::decode(&trailing).is_err());
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused_before_allocating() {
        // a count the remaining bytes cannot hold
        assert!(Bundle::decode(&[0xff, 0xff, 0x0f, 0]).is_err());
        // a length above the maximum
        let mut b = vec![1, 0, 0, 0];
        b.extend([0; 32]);
        b.extend(((MAX_OBJECT_LEN + 1) as u32).to_le_bytes());
        assert!(Bundle::decode(&b).is_err());
        // an object too long to encode
        let big = Bundle { objects: vec![(Id([0; 32]), vec![0; MAX_OBJECT_LEN + 1])] };
        assert!(big.encode().is_err());
    }
}
