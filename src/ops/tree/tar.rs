//! A tree snapshot as a pax tar stream (for `repo export`: the classic `.tar.gz` files).
//!
//! pax extended headers carry what ustar cannot: nanosecond mtimes, long or non-ASCII paths
//! and link targets, and extended attributes as `SCHILY.xattr.<name>` (GNU tar restores them
//! with `--xattrs --xattrs-include='*'`; POSIX ACLs are the `system.posix_acl_*` attributes).
//! Sparse files are written with their holes as zeros.

use std::io::{self, Write};
use std::sync::Arc;

use tar::{EntryType, Header};

use super::restore::{Chunks, ContentReader, PlanEntries, plan, read_plan};
use crate::format::Id;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Kind;
use crate::repo::{Progress, RepoError, Repository, Result};

/// Writes the whole tree of `snap` as a tar stream to `out`; returns the bytes of file data.
pub async fn write_tar<W: Write + Send + 'static>(
    repo: Arc<Repository>,
    id: &Id,
    snap: &Snapshot,
    out: W,
    progress: Arc<dyn Progress>,
) -> Result<u64> {
    let label = crate::ops::snapshot_label(id, snap);
    let plan = plan(&repo, snap, &label, &[], |_| Ok(())).await?;
    read_plan(&repo, &label, plan, move |entries, chunks| {
        write_entries(entries, chunks, out, &*progress)
    })
    .await
}

fn out_err(e: io::Error) -> RepoError {
    RepoError::Output(e)
}

fn write_entries<W: Write>(
    mut entries: PlanEntries,
    mut chunks: Chunks,
    out: W,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut b = tar::Builder::new(out);
    let mut bytes = 0;
    while let Some(e) = entries.next()? {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut path = e.path.clone();
        if e.kind() == Kind::Dir {
            path.push(b'/');
        }
        let mut h = Header::new_ustar();
        if path.len() > 100 || !path.is_ascii() {
            pax.push(("path".into(), path.clone()));
        }
        set_name(&mut h, &path);
        if e.link.len() > 100 || !e.link.is_ascii() {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if !e.link.is_empty() {
            let n = e.link.len().min(100);
            h.as_old_mut().linkname[..n].copy_from_slice(&e.link[..n]);
        }
        let secs = e.mtime_ns.div_euclid(1_000_000_000);
        pax.push(("mtime".into(), pax_time(e.mtime_ns).into_bytes()));
        for (n, v) in &e.xattrs {
            pax.push((format!("SCHILY.xattr.{}", String::from_utf8_lossy(n)), v.clone()));
        }
        h.set_mode(e.mode);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_mtime(secs.max(0) as u64);
        if let Ok(u) = std::str::from_utf8(&e.user) {
            let _ = h.set_username(u);
        }
        if let Ok(g) = std::str::from_utf8(&e.group) {
            let _ = h.set_groupname(g);
        }
        let (kind, size) = match e.kind() {
            Kind::Dir => (EntryType::Directory, 0),
            Kind::File => (EntryType::Regular, e.size),
            Kind::Symlink => (EntryType::Symlink, 0),
            Kind::Hardlink => (EntryType::Link, 0),
            Kind::CharDev => (EntryType::Char, 0),
            Kind::BlockDev => (EntryType::Block, 0),
            Kind::Fifo => (EntryType::Fifo, 0),
        };
        h.set_entry_type(kind);
        h.set_size(size);
        if matches!(e.kind(), Kind::CharDev | Kind::BlockDev) {
            let (major, minor) =
                (libc::major(e.rdev as libc::dev_t), libc::minor(e.rdev as libc::dev_t));
            h.set_device_major(major).map_err(out_err)?;
            h.set_device_minor(minor).map_err(out_err)?;
        }
        if size > 8_589_934_591 {
            pax.push(("size".into(), size.to_string().into_bytes()));
        }
        h.set_cksum();
        b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(out_err)?;
        if e.kind() == Kind::File {
            let mut r = ContentReader::new(&e, &mut chunks, true, progress);
            b.append(&h, &mut r).map_err(|err| r.error.take().unwrap_or(RepoError::Output(err)))?;
            bytes += e.data_len();
        } else {
            b.append(&h, io::empty()).map_err(out_err)?;
        }
    }
    let mut out = b.into_inner().map_err(out_err)?;
    out.flush().map_err(out_err)?;
    Ok(bytes)
}

/// The ustar name field (and prefix) for paths that fit; pax `path` covers the rest.
fn set_name(h: &mut Header, path: &[u8]) {
    let old = h.as_old_mut();
    let n = path.len().min(100);
    old.name = [0; 100];
    old.name[..n].copy_from_slice(&path[..n]);
}

/// A pax `mtime` value: signed seconds and nine decimals, the sign applying to both (tar
/// readers take `-1.5` as one and a half seconds before 1970).
pub(super) fn pax_time(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// Reads a pax time (`1771034400.123456789`, `-0.5`); `None` when it is malformed or out of
/// the nanosecond range.
pub(super) fn parse_pax_time(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut f: String = frac.chars().take(9).collect();
    if !f.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while f.len() < 9 {
        f.push('0');
    }
    let abs = secs.parse::<i64>().ok()?.checked_mul(1_000_000_000)?.checked_add(f.parse().ok()?)?;
    Some(if neg { -abs } else { abs })
}

#[cfg(test)]
mod pax_time_tests {
    use super::*;

    /// Found in an audit: a time before 1970 with a fraction was written as `-2.5` for
    /// -1.5 s (read back one second early), `-0.5` was read as +0.5, and times far out
    /// wrapped around.
    #[test]
    fn pax_times_round_trip_on_both_sides_of_1970() {
        for ns in [0, 1, -1, -1_500_000_000, -500_000_000, 1_771_034_400_123_456_789, i64::MIN + 1]
        {
            assert_eq!(parse_pax_time(&pax_time(ns)), Some(ns), "{}", pax_time(ns));
        }
        assert_eq!(pax_time(-1_500_000_000), "-1.500000000");
        assert_eq!(parse_pax_time("-0.5"), Some(-500_000_000));
        assert_eq!(parse_pax_time("1771034400"), Some(1_771_034_400_000_000_000));
        assert_eq!(parse_pax_time("10000000000.5"), None, "beyond 2262");
        assert_eq!(parse_pax_time("1.2x"), None);
        assert_eq!(parse_pax_time("+1"), None);
    }
}
