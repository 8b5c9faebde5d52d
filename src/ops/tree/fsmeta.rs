//! The file-system calls std does not offer: extended attributes (POSIX ACLs are the
//! `system.posix_acl_*` attributes), data extents of sparse files, device nodes and FIFOs,
//! and times of symlinks. Thin wrappers over libc; each returns `io::Result`.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// The extended attributes of `path` (not following a final symlink), sorted by name.
/// A file system without xattr support gives none.
pub fn get_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: the buffer pointer and length describe a live, writable Vec.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && names.len() < 1 << 20 {
            names.resize(names.len() * 4, 0);
            continue;
        }
        return if unsupported(&e) { Ok(vec![]) } else { Err(e) };
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).map_err(|_| io::Error::other("bad xattr name"))?;
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: as above.
            let m = unsafe {
                libc::lgetxattr(c.as_ptr(), cn.as_ptr(), value.as_mut_ptr().cast(), value.len())
            };
            if m >= 0 {
                value.truncate(m as usize);
                out.push((name.to_vec(), value));
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) && value.len() < 1 << 17 {
                value.resize(value.len() * 8, 0);
                continue;
            }
            if e.raw_os_error() == Some(libc::ENODATA) {
                break; // removed since it was listed
            }
            return Err(e);
        }
    }
    out.sort();
    Ok(out)
}

/// Sets one extended attribute without following a final symlink (`lsetxattr`).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cn = CString::new(name).map_err(|_| io::Error::other("bad xattr name"))?;
    // SAFETY: pointers and lengths describe live buffers.
    let r =
        unsafe { libc::lsetxattr(c.as_ptr(), cn.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The data extents (offset, length) of an open file of `size` bytes, found with
/// SEEK_DATA/SEEK_HOLE. A file system without them reports one extent covering the file.
pub fn data_extents(f: &std::fs::File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on a valid descriptor has no memory effects.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole remains
                Some(libc::EINVAL) => return Ok(vec![(0, size)]),
                _ => return Err(e),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = (hole as u64).min(size);
        if end > data as u64 {
            out.push((data as u64, end - data as u64));
        }
        pos = hole;
    }
    Ok(out)
}

/// Creates a device node or FIFO.
pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: a valid C string; mknod has no memory effects.
    let r = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sets access and modification time to `mtime_ns` without following a final symlink.
pub fn set_mtime(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let c = cpath(path)?;
    let ts = libc::timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = [ts, ts];
    // SAFETY: a valid C string and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sets the permission bits of `path` without following a symlink there (one a local user
/// swapped in during a restore must not lend its target the snapshot's mode).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: a valid C string.
    let r = unsafe {
        libc::fchmodat(
            libc::AT_FDCWD,
            c.as_ptr(),
            (mode & 0o7777) as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // a C library or kernel without the flag's support for this file, or a symlink
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
                return Err(io::Error::other("replaced by a symlink during the restore"));
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        }
        _ => Err(err),
    }
}

/// User and group names by id, read once from /etc/passwd and /etc/group.
#[derive(Default)]
pub struct Owners {
    users: std::collections::HashMap<u32, Vec<u8>>,
    groups: std::collections::HashMap<u32, Vec<u8>>,
}

impl Owners {
    /// Reads `/etc/passwd` and `/etc/group` (missing files give no names; NSS sources such as LDAP
    /// are not consulted).
    pub fn load() -> Owners {
        let parse = |file: &str| {
            let mut m = std::collections::HashMap::new();
            for line in std::fs::read(file).unwrap_or_default().split(|b| *b == b'\n') {
                let f: Vec<&[u8]> = line.split(|b| *b == b':').collect();
                if let (Some(name), Some(id)) = (
                    f.first(),
                    f.get(2).and_then(|i| std::str::from_utf8(i).ok()?.parse::<u32>().ok()),
                ) && name.len() <= crate::format::tree::MAX_OWNER
                {
                    m.entry(id).or_insert_with(|| name.to_vec());
                }
            }
            m
        };
        Owners { users: parse("/etc/passwd"), groups: parse("/etc/group") }
    }
    /// The user name of `uid`, or empty if unknown.
    pub fn user(&self, uid: u32) -> Vec<u8> {
        self.users.get(&uid).cloned().unwrap_or_default()
    }
    /// The group name of `gid`, or empty if unknown.
    pub fn group(&self, gid: u32) -> Vec<u8> {
        self.groups.get(&gid).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A symlink swapped in where a restored file was keeps the snapshot's mode off its
    /// target; a plain file gets it.
    #[test]
    fn set_mode_does_not_follow_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let (file, link) = (d.path().join("f"), d.path().join("l"));
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(set_mode(&link, 0o777).is_err());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&file), 0o600, "the symlink's target is untouched");
        set_mode(&file, 0o100640).unwrap();
        assert_eq!(mode(&file), 0o640);
    }
}
