//! `repo import` of a `.tar` / `.tar.gz` file: stored as a tree snapshot, entry by entry
//! (paths, owners, modes, nanosecond mtimes from pax, links, devices, `SCHILY.xattr.*`
//! attributes), so that it deduplicates with tree backups and restores as a tree.

use std::io::Read;
use std::sync::Arc;

use crate::codec::chunker::chunk_slice;
use crate::format::Id;
use crate::format::snapshot::{Snapshot, SnapshotKind};
use crate::format::tree::{Content, Entry, FLAG_LISTS, Kind, catalog_header};
use crate::repo::{
    BackupStats, ChunkSink, NoProgress, Progress, RepoError, Repository, Result, SnapshotMeta,
};

const SMALL_FILE: u64 = 8 << 20;

/// A tar member's path as a stored path: leading `/` and `./` dropped, no trailing `/`;
/// `None` for the archive root itself. `..` is refused.
fn stored_path(raw: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut parts = Vec::new();
    for p in raw.split(|b| *b == b'/') {
        match p {
            b"" | b"." => {}
            b".." => {
                return Err(RepoError::Source {
                    path: String::from_utf8_lossy(raw).into_owned(),
                    reason: "tar member with a `..` component; refused".into(),
                });
            }
            p => parts.push(p),
        }
    }
    Ok(if parts.is_empty() { None } else { Some(parts.join(&b'/')) })
}

fn bad(what: &str, e: impl std::fmt::Display) -> RepoError {
    RepoError::Input(std::io::Error::other(format!("{what}: {e}")))
}

fn entry_of<R: Read>(en: &mut tar::Entry<R>) -> Result<Option<Entry>> {
    let h = en.header().clone();
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            Kind::File
        }
        // `D`: a directory of a GNU incremental archive (`tar -g`); its data, the names it
        // held, is skipped
        tar::EntryType::Directory => Kind::Dir,
        t if t.as_byte() == b'D' => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Link => Kind::Hardlink,
        tar::EntryType::Char => Kind::CharDev,
        tar::EntryType::Block => Kind::BlockDev,
        tar::EntryType::Fifo => Kind::Fifo,
        // defaults for later entries (none this reader uses), a volume label: no file
        tar::EntryType::XGlobalHeader => return Ok(None),
        t if t.as_byte() == b'V' => return Ok(None),
        // anything else (a multi-volume continuation, an unknown type) would be lost
        // without a word: refused
        other => {
            let path = String::from_utf8_lossy(&en.path_bytes()).into_owned();
            let t = other.as_byte() as char;
            return Err(bad("tar", format!("{path}: entry type '{t}' is not supported")));
        }
    };
    let Some(path) = stored_path(&en.path_bytes())? else { return Ok(None) };
    let mut e = Entry { kind: Some(kind), path, ..Default::default() };
    e.mode = h.mode().map_err(|x| bad("tar header mode", x))? & 0o7777;
    e.uid = h.uid().map_err(|x| bad("tar header uid", x))? as u32;
    e.gid = h.gid().map_err(|x| bad("tar header gid", x))? as u32;
    e.mtime_ns =
        (h.mtime().map_err(|x| bad("tar header mtime", x))? as i64).saturating_mul(1_000_000_000);
    e.user = h.username_bytes().unwrap_or_default().to_vec();
    e.group = h.groupname_bytes().unwrap_or_default().to_vec();
    if let Some(l) = en.link_name_bytes() {
        e.link = if kind == Kind::Hardlink {
            stored_path(&l)?.unwrap_or_default()
        } else {
            l.into_owned()
        };
    }
    if matches!(kind, Kind::CharDev | Kind::BlockDev) {
        let (ma, mi) = (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        );
        e.rdev = libc::makedev(ma, mi);
    }
    if let Some(pax) = en.pax_extensions().map_err(|x| bad("tar pax header", x))? {
        for ext in pax {
            let ext = ext.map_err(|x| bad("tar pax header", x))?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                if let Some(ns) =
                    std::str::from_utf8(ext.value_bytes()).ok().and_then(super::tar::parse_pax_time)
                {
                    e.mtime_ns = ns;
                }
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                e.xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
            } else if key.starts_with(b"GNU.sparse.") {
                // the reader would take the sparse map and packed data for the content, under
                // a made-up name: refused rather than stored wrong
                return Err(bad(
                    "tar",
                    format!(
                        "{}: a sparse file in PAX format (tar --format=posix -S, bsdtar) is not \
                         supported; create the archive without -S or with --format=gnu",
                        String::from_utf8_lossy(&e.path)
                    ),
                ));
            }
        }
    }
    e.xattrs.sort();
    if kind == Kind::File {
        e.size = en.size();
        e.content = Content::Inline(vec![]);
    }
    Ok(Some(e))
}

fn store_archive(
    sink: &mut ChunkSink,
    input: Box<dyn Read + Send>,
    progress: &dyn Progress,
) -> Result<crate::repo::Content> {
    let mut ar = tar::Archive::new(input);
    let mut catalog = catalog_header();
    let (mut size, mut n) = (0u64, 0u64);
    let repo_params = sink.repo().chunker().for_tree_files();
    let entries = ar.entries().map_err(|x| bad("tar", x))?;
    for en in entries {
        let mut en = en.map_err(|x| bad("tar", x))?;
        let Some(mut e) = entry_of(&mut en)? else { continue };
        if e.kind() == Kind::File {
            size += e.size;
            if e.size <= SMALL_FILE {
                let mut data = Vec::with_capacity(e.size as usize);
                en.read_to_end(&mut data).map_err(|x| bad("tar member", x))?;
                progress.bytes_done(data.len() as u64);
                let chunks = chunk_slice(&data, sink.repo().gear(), repo_params);
                e.content = Content::Inline(
                    sink.store_files(vec![(chunks, vec![])])?.pop().unwrap_or_default(),
                );
            } else {
                e.content = Content::Lists(sink.store_stream(&mut en, repo_params, progress)?);
                e.flags |= FLAG_LISTS;
            }
        }
        e.encode_into(&mut catalog).map_err(|x| {
            RepoError::format(format!("tar member {}", String::from_utf8_lossy(&e.path)), x)
        })?;
        n += 1;
    }
    end_of_archive(ar.into_inner())?;
    let lists =
        sink.store_stream(&catalog[..], sink.repo().chunker().for_catalogs(), &NoProgress)?;
    Ok(crate::repo::Content { lists, size, chunks: n })
}

/// Reads what follows the last member, up to the end of the input. The tar reader stops at
/// the first zero block, and also at an end of input on a block boundary: an archive cut
/// there (a full disk, a `tar` that died under `| gzip`) would otherwise be taken whole.
/// A complete archive ends with two zero blocks (and zeros up to its record size): the
/// reader took the first, so at least one more must follow, and nothing but zeros. Reading
/// to the end also lets the decompressor check its trailer (the gzip CRC and length, zstd's
/// frame checksum), which finds damage in data gzip stored uncompressed.
fn end_of_archive(mut rest: impl Read) -> Result<()> {
    let (mut buf, mut zeros) = (vec![0u8; 64 << 10], 0u64);
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad("tar", e)),
        };
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(bad("tar", "data after the end-of-archive blocks"));
        }
        zeros += n as u64;
    }
    if zeros < 512 {
        return Err(bad("tar", "the archive ends without its end-of-archive blocks (truncated)"));
    }
    Ok(())
}

/// Stores the tar stream `input` as a tree snapshot.
pub async fn run(
    repo: Arc<Repository>,
    input: Box<dyn Read + Send>,
    meta: SnapshotMeta,
    progress: Arc<dyn Progress>,
) -> Result<(Id, Snapshot, BackupStats)> {
    let body = move |sink: &mut ChunkSink| store_archive(sink, input, &*progress);
    super::commit_tree(repo, SnapshotKind::Tree, meta, body, async { Ok(()) }).await
}

#[cfg(test)]
mod tests {
    use super::super::tar::parse_pax_time;
    use super::*;

    #[test]
    fn tar_paths_and_times() {
        assert_eq!(stored_path(b"./mnt/data/").unwrap(), Some(b"mnt/data".to_vec()));
        assert_eq!(stored_path(b"/etc//passwd").unwrap(), Some(b"etc/passwd".to_vec()));
        assert_eq!(stored_path(b"./").unwrap(), None);
        assert!(stored_path(b"a/../../etc").is_err());
        assert_eq!(parse_pax_time("1771034400.5"), Some(1_771_034_400_500_000_000));
        assert_eq!(parse_pax_time("12"), Some(12_000_000_000));
    }
}
