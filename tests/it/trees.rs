//! Tree snapshots through the real binary: metadata round trip (compared entry by entry with
//! the source, xattrs and ACLs read back by getfattr/getfacl), change detection, unreadable
//! files (exit 3), files changing while read, restore safety and refusal to overwrite.

#[cfg(feature = "system-tests")]
use std::collections::BTreeMap;
#[cfg(feature = "system-tests")]
use std::os::unix::fs::{FileTypeExt, MetadataExt};
#[cfg(feature = "system-tests")]
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::common::Fixture;
use crate::common::{noise, small_file_tree};
use std::io::Read;

fn sh(script: &str) {
    let o = Command::new("sh").arg("-ec").arg(script).output().expect("sh");
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
}

#[cfg(feature = "system-tests")]
/// True, or the test fails: the system tier installs attr and acl (scripts/test.sh), so a
/// missing tool is a broken setup, not a reason to check less.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is missing (install attr and acl, or run scripts/test.sh)");
    found
}

#[cfg(feature = "system-tests")]
/// A tree with every kind of entry and metadata the format keeps.
fn make_tree(root: &Path) {
    let r = root.display();
    sh(&format!(
        "cd {r} && mkdir -p data/base/1 data/empty data/setgid && \
         printf 'PG 15\\n' > data/PG_VERSION && : > data/zero && \
         head -c 200000 /dev/urandom > data/base/1/1259 && \
         head -c 12000000 /dev/urandom > data/base/1/big && \
         ln data/base/1/1259 data/base/1/hardlink && ln -s ../PG_VERSION data/base/link && \
         mkfifo data/fifo && mknod data/null c 1 3 && \
         truncate -s 50M data/sparse && printf 'middle' | dd of=data/sparse bs=1 seek=20000000 conv=notrunc 2>/dev/null && \
         chown 65534:65534 data/setgid && chmod 2750 data/setgid && chmod 600 data/PG_VERSION && \
         touch -h -d '2021-03-04 05:06:07.123456789' data/base/link data/PG_VERSION"
    ));
    if have("setfattr") {
        sh(&format!(
            "cd {r} && setfattr -n user.origin -v weekly data/PG_VERSION && setfattr -n user.bin -v 0x00ff00 data/setgid"
        ));
    }
    if have("setfacl") {
        sh(&format!(
            "cd {r} && setfacl -m u:65534:r data/base/1/1259 && setfacl -d -m g:65534:rx data/setgid"
        ));
    }
}

#[cfg(feature = "system-tests")]
#[derive(Debug, PartialEq)]
struct Meta {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    rdev: u64,
    xattrs: String,
}

#[cfg(feature = "system-tests")]
/// Every entry below `dir` with what a restore must keep (directory times included).
fn snapshot_of(dir: &Path) -> BTreeMap<PathBuf, Meta> {
    let mut out = BTreeMap::new();
    for p in walk(dir) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chr"
        } else {
            "file"
        };
        let xattrs = if have("getfattr") && !ft.is_symlink() {
            let o = Command::new("getfattr")
                .args(["-d", "-m", "-", "-e", "hex", "--absolute-names"])
                .arg(&p)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).lines().skip(1).collect::<Vec<_>>().join(";")
        } else {
            String::new()
        };
        out.insert(
            p.strip_prefix(dir).unwrap().to_path_buf(),
            Meta {
                kind: kind.into(),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if ft.is_dir() { 0 } else { m.len() },
                content: ft.is_file().then(|| std::fs::read(&p).unwrap()),
                link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                rdev: m.rdev(),
                xattrs,
            },
        );
    }
    out
}

#[cfg(feature = "system-tests")]
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[cfg(feature = "system-tests")] // root: device nodes, ownership, runuser
#[test]
fn tree_round_trip_keeps_every_kind_of_entry_and_its_metadata() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let root = src.path().to_str().unwrap();
    let r = f
        .run(&["--json", "backup", "--name", "lvm/ubuntu-lv", "--root", root, "data"], b"")
        .ok()
        .json();
    assert_eq!((r["files"].as_u64(), r["files_read"].as_u64()), (Some(6), Some(5)), "{r}");
    assert_eq!(r["errors"].as_array().unwrap().len(), 0);

    let out = tempfile::tempdir().unwrap();
    f.run(
        &["restore", "latest", "--name", "lvm/ubuntu-lv", "--target", out.path().to_str().unwrap()],
        b"",
    )
    .ok();
    let (a, b) = (snapshot_of(src.path()), snapshot_of(out.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(v, &b[k], "{}", k.display());
    }
    if have("getfacl") {
        let acl = Command::new("getfacl")
            .args(["-c", "-d"])
            .arg(out.path().join("data/setgid"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&acl.stdout).contains("group:nogroup:r-x")
                || String::from_utf8_lossy(&acl.stdout).contains("group:65534:r-x")
        );
    }
    // hard links stay one inode; holes stay holes
    let (x, y) = (
        std::fs::metadata(out.path().join("data/base/1/1259")).unwrap(),
        std::fs::metadata(out.path().join("data/base/1/hardlink")).unwrap(),
    );
    assert_eq!((x.ino(), x.nlink()), (y.ino(), 2));
    let sparse = std::fs::metadata(out.path().join("data/sparse")).unwrap();
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file restored with {} blocks",
        sparse.blocks()
    );

    // one file to stdout; ls; a directory without --target is refused
    let one = f.run(&["restore", "latest", "--name", "lvm/ubuntu-lv", "data/base/1/big"], b"").ok();
    assert_eq!(one.stdout, std::fs::read(src.path().join("data/base/1/big")).unwrap());
    let holes = f.run(&["restore", "latest", "--name", "lvm/ubuntu-lv", "data/sparse"], b"").ok();
    assert_eq!(holes.stdout, std::fs::read(src.path().join("data/sparse")).unwrap());
    let ls = f.run(&["ls", "latest", "--name", "lvm/ubuntu-lv", "data/base"], b"").ok().text();
    assert!(
        ls.contains("data/base/link -> ../PG_VERSION")
            && ls.contains("data/base/1/hardlink link to data/base/1/1259"),
        "{ls}"
    );
    assert!(!ls.contains("data/PG_VERSION"), "{ls}");
    let e = f.run(&["restore", "latest", "--name", "lvm/ubuntu-lv", "data/base"], b"");
    assert_eq!(e.code, 1);
    assert!(e.stderr.contains("not a file"), "{}", e.stderr);
    let e = f.run(&["restore", "latest", "--name", "lvm/ubuntu-lv"], b"");
    assert!(e.code == 1 && e.stderr.contains("is a file tree"), "{}", e.stderr);

    // a subtree
    let part = tempfile::tempdir().unwrap();
    f.run(
        &[
            "restore",
            "latest",
            "--name",
            "lvm/ubuntu-lv",
            "--target",
            part.path().to_str().unwrap(),
            "--include",
            "data/base/1",
        ],
        b"",
    )
    .ok();
    assert_eq!(
        std::fs::read(part.path().join("data/base/1/1259")).unwrap(),
        std::fs::read(src.path().join("data/base/1/1259")).unwrap()
    );
    assert!(
        !part.path().join("data/PG_VERSION").exists()
            && !part.path().join("data/base/link").exists()
    );

    // check follows the files' chunks; prune keeps them
    f.run(&["check", "--read-data"], b"").ok();
    f.run(&["prune"], b"").ok();
    let again = tempfile::tempdir().unwrap();
    f.run(
        &[
            "restore",
            "latest",
            "--name",
            "lvm/ubuntu-lv",
            "--target",
            again.path().to_str().unwrap(),
        ],
        b"",
    )
    .ok();
    assert_eq!(snapshot_of(again.path()).len(), a.len());
}

#[cfg(feature = "system-tests")] // root: device nodes, ownership, runuser
#[test]
fn second_backup_reads_only_what_changed() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let root = src.path().to_str().unwrap();
    let args = ["--json", "backup", "--name", "t", "--root", root, "."];
    f.run(&args, b"").ok();
    let r = f.run(&args, b"").ok().json();
    assert_eq!(
        (r["files_read"].as_u64(), r["files_unchanged"].as_u64()),
        (Some(0), Some(5)),
        "{r}"
    );
    assert!(r["new_bytes"].as_u64().unwrap() < 1000, "{r}");
    // content changed (same size, mtime put back): ctime still tells
    sh(&format!(
        "cd {root} && printf 'PG 16\\n' > data/PG_VERSION && touch -d '2021-03-04 05:06:07.123456789' data/PG_VERSION"
    ));
    // replaced by a copy with the same size and mtime: the inode tells
    sh(&format!(
        "cd {root} && cp -p data/base/1/big data/big.tmp && mv data/big.tmp data/base/1/big"
    ));
    let r = f.run(&args, b"").ok().json();
    assert_eq!(
        (r["files_read"].as_u64(), r["files_unchanged"].as_u64()),
        (Some(2), Some(3)),
        "{r}"
    );
    let out = tempfile::tempdir().unwrap();
    f.run(&["restore", "latest", "--name", "t", "--target", out.path().to_str().unwrap()], b"")
        .ok();
    assert_eq!(std::fs::read(out.path().join("data/PG_VERSION")).unwrap(), b"PG 16\n");
    assert_eq!(snapshot_of(out.path()), snapshot_of(src.path()));
}

#[cfg(feature = "system-tests")] // root: device nodes, ownership, runuser
#[test]
fn restore_refuses_to_overwrite_unless_asked() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    sh(&format!("cd {} && mkdir d && echo new > d/a && echo new > d/b", src.path().display()));
    f.run(&["backup", "--name", "t", "--root", src.path().to_str().unwrap(), "d"], b"").ok();
    let out = tempfile::tempdir().unwrap();
    sh(&format!("cd {} && mkdir d && echo old > d/b", out.path().display()));
    let t = out.path().to_str().unwrap();
    let e = f.run(&["restore", "latest", "--name", "t", "--target", t], b"");
    assert_eq!(e.code, 1);
    assert!(e.stderr.contains("d/b: already exists"), "{}", e.stderr);
    assert!(!out.path().join("d/a").exists(), "nothing may be written before the refusal");
    assert_eq!(std::fs::read(out.path().join("d/b")).unwrap(), b"old\n");
    f.run(&["restore", "latest", "--name", "t", "--target", t, "--overwrite"], b"").ok();
    assert_eq!(std::fs::read(out.path().join("d/b")).unwrap(), b"new\n");
}

/// Runs `c` as `nobody` (root reads everything), from `/`.
#[cfg(feature = "system-tests")]
fn as_nobody(c: &Command) -> std::process::Output {
    let argv: Vec<String> = std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let envs: Vec<String> = c
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    let mut run = Command::new("runuser");
    run.args(["-u", "nobody", "--", "env"]).args(&envs).args(&argv).current_dir("/");
    run.output().unwrap()
}

/// A repository and a source directory that `nobody` may use.
#[cfg(feature = "system-tests")]
fn nobodys(f: &Fixture, src: &Path) {
    sh(&format!(
        "chmod 755 {} {} && chmod -R a+rX {} && chown -R nobody {}",
        src.display(),
        f.dir.path().display(),
        f.dir.path().display(),
        f.dir.path().display()
    ));
}

#[cfg(feature = "system-tests")] // root: device nodes, ownership, runuser
#[test]
fn unreadable_files_are_reported_and_give_exit_code_3() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    let d = src.path().display();
    sh(&format!(
        "mkdir {d}/t && echo ok > {d}/t/ok && echo secret > {d}/t/secret && chmod 600 {d}/t/secret"
    ));
    nobodys(&f, src.path());
    let o = as_nobody(&f.cmd(&["backup", "--name", "t", "--root", &d.to_string(), "t"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("t/secret: Permission denied"), "{err}");
    let ls = f.run(&["ls", "latest", "--name", "t"], b"").ok().text();
    assert!(ls.contains("t/ok") && !ls.contains("t/secret"), "{ls}");
}

/// Found in an audit: the second name of a hard-linked file whose first name could not be
/// read was stored as a link to a path the snapshot does not hold, and a restore of the
/// whole tree stopped there. Later names are now left out with the first (exit code 3 names
/// them), or read themselves when the first failed in an earlier batch.
#[cfg(feature = "system-tests")] // root: runuser
#[test]
fn a_hard_link_to_an_unreadable_file_does_not_break_the_restore() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    let d = src.path().display();
    sh(&format!(
        "mkdir {d}/t && echo secret > {d}/t/a && chmod 600 {d}/t/a && ln {d}/t/a {d}/t/b && \
         echo after > {d}/t/c"
    ));
    nobodys(&f, src.path());
    let o = as_nobody(&f.cmd(&["backup", "--name", "t", "--root", &d.to_string(), "t"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("t/a: Permission denied") && err.contains("t/b: not stored"), "{err}");
    let out = tempfile::tempdir().unwrap();
    let t = out.path().to_str().unwrap();
    f.run(&["restore", "latest", "--name", "t", "--target", t], b"").ok();
    assert_eq!(std::fs::read(out.path().join("t/c")).unwrap(), b"after\n");
    assert!(!out.path().join("t/a").exists() && !out.path().join("t/b").exists());
}

/// Found in an audit: a symlink among the directories above a given path (`/home` ->
/// `/data/home`) was stored as a directory with the symlink's mode, 0777: a restore made it
/// world-writable. It is stored as the directory it leads to.
#[test]
fn a_symlinked_directory_above_a_given_path_keeps_the_real_directorys_mode() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    let d = src.path().display();
    sh(&format!(
        "mkdir -p {d}/data/home/tik && chmod 755 {d}/data/home && echo x > {d}/data/home/tik/x \
         && ln -s data/home {d}/home"
    ));
    f.run(&["backup", "--name", "h", "--root", &d.to_string(), "home/tik/x"], b"").ok();
    let out = tempfile::tempdir().unwrap();
    let t = out.path().to_str().unwrap();
    f.run(&["restore", "latest", "--name", "h", "--target", t], b"").ok();
    let home = std::fs::symlink_metadata(out.path().join("home")).unwrap();
    assert!(home.is_dir());
    assert_eq!(home.permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read(out.path().join("home/tik/x")).unwrap(), b"x\n");
}

/// Found in an audit: `--gzip` was ignored when one file of a tree was restored, and a
/// plain file was written under a `.gz` name.
#[test]
fn restore_of_one_tree_file_with_gzip_writes_gzip() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    let body = noise(300_000, 8);
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/db.dump"), &body).unwrap();
    f.run(&["backup", "--name", "t", "--root", src.path().to_str().unwrap(), "d"], b"").ok();
    let gz = src.path().join("db.dump.gz");
    let args = ["restore", "latest", "--name", "t", "d/db.dump", "--gzip", "-o"];
    f.run(&[&args[..], &[gz.to_str().unwrap()]].concat(), b"").ok();
    let to_stdout = f.run(&["restore", "latest", "--name", "t", "d/db.dump", "--gzip"], b"").ok();
    for gz in [std::fs::read(&gz).unwrap(), to_stdout.stdout] {
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_end(&mut plain).unwrap();
        assert!(plain == body, "gunzip gives the file back");
    }
}

#[test]
fn a_file_written_during_the_backup_is_flagged() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    let log = src.path().join("d/growing.log");
    sh(&format!(
        "mkdir {}/d && head -c 30000000 /dev/urandom > {}",
        src.path().display(),
        log.display()
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, l2) = (stop.clone(), log.clone());
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut fh = std::fs::OpenOptions::new().append(true).open(&l2).unwrap();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            fh.write_all(b"a line of log\n").unwrap();
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    let r = f.run(
        &["--json", "backup", "--name", "t", "--root", src.path().to_str().unwrap(), "d"],
        b"",
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let changed = r.json()["changed"].clone();
    assert!(
        changed.as_array().unwrap().iter().any(|c| c.as_str().unwrap().ends_with("d/growing.log")),
        "{changed}"
    );
    let ls = f.run(&["--json", "ls", "latest", "--name", "t", "d/growing.log"], b"").ok().json();
    assert_eq!(ls[0]["changed_while_read"], true);
    // the next backup reads it again rather than trusting the flagged copy
    let r = f
        .run(&["--json", "backup", "--name", "t", "--root", src.path().to_str().unwrap(), "d"], b"")
        .ok()
        .json();
    assert_eq!(r["files_read"], 1, "{r}");
}

#[test]
fn backup_of_missing_path_fails_without_snapshot() {
    let f = Fixture::new();
    let e = f.run(&["backup", "--name", "t", "--root", "/nonexistent-root", "x"], b"");
    assert_eq!(e.code, 1);
    assert!(
        e.stderr.contains("/nonexistent-root/x") && e.stderr.lines().count() == 1,
        "{}",
        e.stderr
    );
    assert_eq!(f.snapshot_count(), 0);
    let e = f.run(&["backup", "--name", "t", "--root", "/", "../etc"], b"");
    assert!(e.code == 1 && e.stderr.contains("`..`"), "{}", e.stderr);
}

/// Commits a tree snapshot whose catalog holds exactly `entries` (bypassing the walker).
async fn hostile_snapshot(f: &Fixture, entries: Vec<::repo::format::tree::Entry>) {
    use ::repo::format::snapshot::SnapshotKind;
    use ::repo::repo::{Content, Repository, SnapshotMeta, backup_with};
    let backend = ::repo::backend::from_url(f.repo().to_str().unwrap()).unwrap();
    let repo = Arc::new(
        Repository::open(
            backend,
            Some(f.password.as_bytes()),
            Some(f.cache()),
            ::repo::repo::Access::Backup,
        )
        .await
        .unwrap(),
    );
    let mut catalog = ::repo::format::tree::catalog_header();
    for e in &entries {
        e.encode_into(&mut catalog).unwrap();
    }
    let meta = SnapshotMeta {
        name: "evil".into(),
        host: "h".into(),
        tags: vec![],
        command: String::new(),
        time_ns: 1,
    };
    let body = move |sink: &mut ::repo::repo::ChunkSink| {
        let p = sink.repo().chunker();
        let lists = sink.store_stream(&catalog[..], p, &::repo::repo::NoProgress)?;
        Ok(Content { lists, size: 0, chunks: entries.len() as u64 })
    };
    backup_with(repo, SnapshotKind::Tree, meta, body, async { Ok(()) }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_hostile_paths_and_symlink_escapes() {
    use ::repo::format::tree::{Content, Entry, Kind};
    let dir = |p: &str| Entry {
        kind: Some(Kind::Dir),
        mode: 0o755,
        path: p.as_bytes().to_vec(),
        ..Default::default()
    };
    let file = |p: &str| Entry {
        kind: Some(Kind::File),
        mode: 0o644,
        path: p.as_bytes().to_vec(),
        content: Content::Inline(vec![]),
        ..Default::default()
    };
    let outside = tempfile::tempdir().unwrap();
    let link = Entry {
        kind: Some(Kind::Symlink),
        path: b"d/escape".to_vec(),
        link: outside.path().to_str().unwrap().as_bytes().to_vec(),
        ..Default::default()
    };
    // found in an audit: a hard link's first name was checked for `..` but not for a
    // symlink among its parents, and link() followed it out of the target
    std::fs::write(outside.path().join("victim"), b"x").unwrap();
    let top_link = Entry {
        kind: Some(Kind::Symlink),
        path: b"d".to_vec(),
        link: outside.path().to_str().unwrap().as_bytes().to_vec(),
        ..Default::default()
    };
    let hard = Entry {
        kind: Some(Kind::Hardlink),
        path: b"pwned".to_vec(),
        link: b"d/victim".to_vec(),
        ..Default::default()
    };
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![dir("d"), file("d/../../pwned")], "`..` component"),
        (vec![file("/etc/pwned")], "absolute"),
        (vec![dir("d"), file("d/./x")], "`.` component"),
        (vec![dir("d"), link, file("d/escape/pwned")], "is a symlink; refusing"),
        (vec![top_link, hard], "is a symlink; refusing"),
    ];
    // an older version stored a hard link to a first name it could not read: the restore
    // goes on without that link and exits 3, naming it
    {
        let dangling = Entry {
            kind: Some(Kind::Hardlink),
            path: b"d/b".to_vec(),
            link: b"d/a".to_vec(),
            ..Default::default()
        };
        let f = Fixture::new();
        hostile_snapshot(&f, vec![dir("d"), dangling, file("d/c")]).await;
        let (target, part) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let t = target.path().to_str().unwrap().to_string();
        let pt = part.path().to_str().unwrap().to_string();
        let (r, rp) = tokio::task::spawn_blocking(move || {
            let whole = f.run(&["restore", "latest", "--name", "evil", "--target", &t], b"");
            // the link alone (its first name outside the selection) likewise
            let args = ["restore", "latest", "--name", "evil", "--target", &pt, "d/b"];
            (whole, f.run(&args, b""))
        })
        .await
        .unwrap();
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert!(r.stderr.contains("d/b: a hard link to"), "{}", r.stderr);
        assert!(target.path().join("d/c").exists(), "the rest is restored");
        assert_eq!(rp.code, 3, "{}", rp.stderr);
        assert!(rp.stderr.contains("d/b: a hard link to"), "{}", rp.stderr);
    }
    for (entries, why) in cases {
        let f = Fixture::new();
        hostile_snapshot(&f, entries).await;
        let target = tempfile::tempdir().unwrap();
        let t = target.path().to_str().unwrap().to_string();
        let r = tokio::task::spawn_blocking(move || {
            f.run(&["restore", "latest", "--name", "evil", "--target", &t], b"")
        })
        .await
        .unwrap();
        assert_eq!(r.code, 1, "{why}: {}", r.stderr);
        assert!(r.stderr.contains(why) && r.stderr.lines().count() == 1, "{why}: {}", r.stderr);
        assert!(
            !outside.path().join("pwned").exists()
                && !target.path().parent().unwrap().join("pwned").exists()
                && !target.path().join("pwned").exists()
        );
    }
}

#[cfg(feature = "system-tests")] // root: device nodes, ownership, runuser
#[test]
fn tree_exported_as_tar_gz_extracts_like_a_restore() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let long = "d".repeat(120);
    sh(&format!(
        "cd {} && mkdir -p data/{long} && echo deep > data/{long}/f",
        src.path().display()
    ));
    let root = src.path().to_str().unwrap();
    f.run(
        &[
            "backup",
            "--name",
            "lvm/ubuntu-lv",
            "--root",
            root,
            "--time",
            "2026-02-14T03:00:00Z",
            "data",
        ],
        b"",
    )
    .ok();
    let exp = tempfile::tempdir().unwrap();
    let e = exp.path().to_str().unwrap();
    let r = f
        .run(
            &[
                "--json",
                "export",
                e,
                "--name",
                "lvm/*",
                "--template",
                "lvm-snapshots/{base}-snap-{time:%Y%m%d}.tar.gz",
            ],
            b"",
        )
        .ok()
        .json();
    let file = exp.path().join("lvm-snapshots/ubuntu-lv-snap-20260214.tar.gz");
    assert!(file.exists(), "{r}");
    sh(&format!("gunzip -t {}", file.display()));

    let (by_tar, by_repo) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    sh(&format!(
        "tar -xzf {} --xattrs --xattrs-include='*' --numeric-owner -C {}",
        file.display(),
        by_tar.path().display()
    ));
    f.run(
        &[
            "restore",
            "latest",
            "--name",
            "lvm/ubuntu-lv",
            "--target",
            by_repo.path().to_str().unwrap(),
        ],
        b"",
    )
    .ok();
    let (a, b) = (snapshot_of(by_repo.path()), snapshot_of(by_tar.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(v, &b[k], "{}", k.display());
    }
    // and both equal the source
    assert_eq!(snapshot_of(src.path()), a);
    // the tar lists the hard link as a link
    let listing = Command::new("tar").arg("-tvzf").arg(&file).output().unwrap();
    assert!(
        String::from_utf8_lossy(&listing.stdout)
            .contains("data/base/1/hardlink link to data/base/1/1259")
    );
}

#[cfg(feature = "system-tests")] // root: device nodes, ownership, runuser
#[test]
fn copy_moves_a_tree_snapshot_into_another_repository() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    f.run(
        &["backup", "--name", "lvm/ubuntu-lv", "--root", src.path().to_str().unwrap(), "data"],
        b"",
    )
    .ok();
    let dst = {
        let d = Fixture::empty();
        let d = Fixture { password: "another password".into(), ..d };
        d.run(&["init", "--kdf-memory", "1024", "--chunk-avg", "8192"], b"").ok();
        d
    };
    let mut c = f.cmd(&["--json", "copy", "--to", dst.repo().to_str().unwrap()]);
    c.env("REPO_TO_PASSWORD", &dst.password);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tempfile::tempdir().unwrap();
    dst.run(
        &["restore", "latest", "--name", "lvm/ubuntu-lv", "--target", out.path().to_str().unwrap()],
        b"",
    )
    .ok();
    assert_eq!(snapshot_of(out.path()), snapshot_of(src.path()));
    dst.run(&["check", "--read-data"], b"").ok();
    // a second copy skips it
    let o = f
        .cmd(&["--json", "copy", "--to", dst.repo().to_str().unwrap()])
        .env("REPO_TO_PASSWORD", &dst.password)
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((r["copied"].as_u64(), r["skipped"].as_u64()), (Some(0), Some(1)), "{r}");
}

#[cfg(feature = "system-tests")] // root: device nodes, ownership, runuser
#[test]
fn import_of_a_classic_tar_gz_gives_a_tree_snapshot() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let files = tempfile::tempdir().unwrap();
    let archive = files.path().join("lvm-snapshots/ubuntu-lv-snap-20260209.tar.gz");
    sh(&format!(
        "mkdir -p {d}/lvm-snapshots && tar --xattrs --xattrs-include='*' --format=pax -czf {a} -C {s} data",
        d = files.path().display(),
        a = archive.display(),
        s = src.path().display()
    ));
    let r = f.run(&["--json", "import", archive.to_str().unwrap()], b"").ok().json();
    assert_eq!(r["imported"], 1, "{r}");
    let name = r["files"][0]["snapshot"]["name"].as_str().unwrap().to_string();
    assert_eq!(name, "lvm-snapshots/ubuntu-lv-snap");
    assert_eq!(r["files"][0]["snapshot"]["time"], "2026-02-09T00:00:00Z");
    let ls = f.run(&["ls", "latest", "--name", &name, "data/base"], b"").ok().text();
    assert!(ls.contains("data/base/1/hardlink link to data/base/1/1259"), "{ls}");
    let out = tempfile::tempdir().unwrap();
    f.run(&["restore", "latest", "--name", &name, "--target", out.path().to_str().unwrap()], b"")
        .ok();
    let (a, b) = (snapshot_of(src.path()), snapshot_of(out.path()));
    for (k, v) in &a {
        let w = &b[k];
        // GNU tar keeps directory times and nanoseconds too; everything must match
        assert_eq!(v, w, "{}", k.display());
    }
    assert_eq!(a.len(), b.len());
    // the same files backed up as a tree afterwards deduplicate against the import
    let r = f
        .run(
            &[
                "--json",
                "backup",
                "--name",
                "lvm/ubuntu-lv",
                "--root",
                src.path().to_str().unwrap(),
                "data",
            ],
            b"",
        )
        .ok()
        .json();
    assert!(r["new_bytes"].as_u64().unwrap() < 100_000, "{r}");
    // importing it again stores nothing
    let r = f.run(&["--json", "import", archive.to_str().unwrap()], b"").ok().json();
    assert_eq!(r["skipped"], 1);
}

/// A tree of 100,000 small files where one changed: the second backup reads that one file,
/// and the catalog (stored as a content-defined stream) costs a small fraction of its size.
#[test]
fn one_changed_file_in_100k_reads_one_and_stores_little_of_the_catalog() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    small_file_tree(src.path(), 100, 1000);
    let root = src.path().to_str().unwrap();
    let args = ["--json", "backup", "--name", "t", "--root", root, "."];
    let first = f.run(&args, b"").ok().json();
    assert_eq!(first["files_read"].as_u64(), Some(100_000), "{first}");
    std::fs::write(src.path().join("d050/f0500"), b"changed, and longer\n").unwrap();
    let second = f.run(&args, b"").ok().json();
    assert_eq!(
        (second["files_read"].as_u64(), second["files_unchanged"].as_u64()),
        (Some(1), Some(99_999)),
        "{second}"
    );
    let (one, two) =
        (first["stored_bytes"].as_u64().unwrap(), second["stored_bytes"].as_u64().unwrap());
    assert!(two * 40 < one, "second backup stored {two} bytes, the first {one}: {second}");
}

/// Names where walk order and byte order differ (`a-b` sorts after `a/…` in a walk, before it
/// in bytes): the re-backup finds every file's previous version by reading the parent's
/// catalog alongside the walk, and reads none of them again.
#[test]
fn rebackup_matches_the_parent_where_walk_and_byte_order_differ() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    for p in ["a/z", "a-b", "a0", "a/b/c", "b", "a.x/y", "a/b-c"] {
        let path = src.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, p.as_bytes()).unwrap();
    }
    let root = src.path().to_str().unwrap();
    let args = ["--json", "backup", "--name", "t", "--root", root, "."];
    assert_eq!(f.run(&args, b"").ok().json()["files_read"].as_u64(), Some(7));
    let again = f.run(&args, b"").ok().json();
    assert_eq!(
        (again["files_read"].as_u64(), again["files_unchanged"].as_u64()),
        (Some(0), Some(7)),
        "{again}"
    );
    // ls lists in walk order: a directory's contents before the next name
    let ls = f.run(&["ls", "latest", "--name", "t"], b"").ok().text();
    let paths: Vec<&str> = ls.lines().filter_map(|l| l.split_whitespace().last()).collect();
    let at = |p: &str| paths.iter().position(|x| *x == p).unwrap_or_else(|| panic!("{p}: {ls}"));
    assert!(at("a/z") < at("a-b") && at("a/b/c") < at("a/b-c") && at("a0") < at("b"), "{ls}");
    let json = f.run(&["--json", "ls", "latest", "--name", "t", "a/b"], b"").ok().json();
    let rows: Vec<&str> =
        json.as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(rows, ["a/b", "a/b/c"]);
}

/// A hard link whose first name is left out of a partial restore becomes a file of its own,
/// with the first name's content; restored with its first name, it stays a link.
#[test]
fn partial_restore_turns_a_link_to_a_left_out_name_into_a_file() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    std::fs::create_dir_all(s.join("d/sub")).unwrap();
    std::fs::write(s.join("d/a"), b"the first name's bytes\n").unwrap();
    std::fs::hard_link(s.join("d/a"), s.join("d/sub/b")).unwrap();
    f.run(&["backup", "--name", "t", "--root", s.to_str().unwrap(), "d"], b"").ok();
    let part = tempfile::tempdir().unwrap();
    let t = part.path().to_str().unwrap();
    f.run(&["restore", "latest", "--name", "t", "--target", t, "--include", "d/sub"], b"").ok();
    assert_eq!(std::fs::read(part.path().join("d/sub/b")).unwrap(), b"the first name's bytes\n");
    assert!(!part.path().join("d/a").exists());
    let whole = tempfile::tempdir().unwrap();
    let w = whole.path().to_str().unwrap();
    f.run(&["restore", "latest", "--name", "t", "--target", w], b"").ok();
    use std::os::unix::fs::MetadataExt;
    let (x, y) = (
        std::fs::metadata(whole.path().join("d/a")).unwrap(),
        std::fs::metadata(whole.path().join("d/sub/b")).unwrap(),
    );
    assert_eq!((x.ino(), x.nlink()), (y.ino(), 2));
    // one file to stdout through the link
    let one = f.run(&["restore", "latest", "--name", "t", "d/sub/b"], b"").ok();
    assert_eq!(one.stdout, b"the first name's bytes\n");
}

/// A hard link whose first name the catalog does not hold: a partial restore leaves it out,
/// as a whole-tree restore does, names it and exits 3 (it was refused before anything was
/// written, while a whole-tree restore stopped halfway; now both restore the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_restore_of_a_link_to_a_missing_first_name_leaves_it_out() {
    use ::repo::format::tree::{Entry, Kind};
    let entry = |kind, p: &str| Entry {
        kind: Some(kind),
        mode: 0o755,
        path: p.as_bytes().to_vec(),
        ..Default::default()
    };
    let mut link = entry(Kind::Hardlink, "d/sub/b");
    link.link = b"d/a".to_vec();
    let f = Fixture::new();
    hostile_snapshot(&f, vec![entry(Kind::Dir, "d"), entry(Kind::Dir, "d/sub"), link]).await;
    let target = tempfile::tempdir().unwrap();
    let t = target.path().to_str().unwrap().to_string();
    let r = tokio::task::spawn_blocking(move || {
        f.run(&["restore", "latest", "--name", "evil", "--target", &t, "--include", "d/sub"], b"")
    })
    .await
    .unwrap();
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d/sub/b: a hard link to"), "{}", r.stderr);
    assert!(target.path().join("d/sub").is_dir() && !target.path().join("d/sub/b").exists());
    assert!(!target.path().join("d/a").exists());
}

/// A tar archive cut at a block boundary (a full disk while `tar` wrote, a dead `tar` under
/// `| gzip`) was imported as a snapshot of its first part, with exit 0: the reader took the
/// end of the input for the end of the archive.
#[test]
fn import_of_a_tar_cut_at_a_block_boundary_is_refused() {
    let f = Fixture::new();
    let files = tempfile::tempdir().unwrap();
    let d = files.path().display();
    // a (1000 bytes) takes blocks 0-2; the archive is cut right after them
    sh(&format!(
        "mkdir -p {d}/src {d}/dumps && head -c 1000 /dev/urandom > {d}/src/a && \
         head -c 1000 /dev/urandom > {d}/src/b && tar -cf {d}/full.tar -C {d}/src a b && \
         head -c 1536 {d}/full.tar | gzip > {d}/dumps/cut-20260209.tar.gz"
    ));
    let r = f.run(&["import", &format!("{d}/dumps/cut-20260209.tar.gz")], b"");
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("end-of-archive"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 0);
}

/// A .tar.gz whose data was damaged where gzip stores it uncompressed: only the gzip CRC,
/// checked once the stream is read to its end, finds it; the import stopped reading at the
/// tar's end marker and committed the damaged file with exit 0.
#[test]
fn import_of_a_tar_gz_with_a_bad_crc_is_refused() {
    let f = Fixture::new();
    let files = tempfile::tempdir().unwrap();
    let d = files.path().display();
    sh(&format!(
        "mkdir -p {d}/src {d}/dumps && head -c 20000 /dev/urandom > {d}/src/a && \
         tar -cf {d}/full.tar -C {d}/src a && \
         python3 -c \"import gzip,sys; b=bytearray(gzip.compress(open('{d}/full.tar','rb').read(), \
         compresslevel=0)); b[5000]^=1; open('{d}/dumps/bad-20260209.tar.gz','wb').write(b)\""
    ));
    let r = f.run(&["import", &format!("{d}/dumps/bad-20260209.tar.gz")], b"");
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 0);
}

/// Found in an audit: the directories of a GNU incremental archive (`tar -g`, type `D`) were
/// dropped without a word (an empty directory vanished), and a sparse file in PAX format
/// (`tar --format=posix -S`, bsdtar's default) was stored under a made-up name with its
/// sparse map for content.
#[test]
fn import_keeps_incremental_directories_and_refuses_pax_sparse_files() {
    let f = Fixture::new();
    let files = tempfile::tempdir().unwrap();
    let d = files.path().display();
    sh(&format!(
        "mkdir -p {d}/src/empty {d}/src/full {d}/dumps && echo x > {d}/src/full/f && \
         tar -g {d}/snar -cf {d}/dumps/inc-20260209.tar -C {d}/src . && \
         truncate -s 1M {d}/sparse && echo tail >> {d}/sparse && \
         tar --format=posix -S -cf {d}/dumps/sparse-20260209.tar -C {d} sparse"
    ));
    f.run(&["import", "--name", "inc", &format!("{d}/dumps/inc-20260209.tar")], b"").ok();
    let out = tempfile::tempdir().unwrap();
    let t = out.path().to_str().unwrap();
    f.run(&["restore", "latest", "--name", "inc", "--target", t], b"").ok();
    assert!(out.path().join("empty").is_dir(), "the empty directory is restored");
    assert_eq!(std::fs::read(out.path().join("full/f")).unwrap(), b"x\n");
    let r = f.run(&["import", &format!("{d}/dumps/sparse-20260209.tar")], b"");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("sparse file in PAX format"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 1, "nothing stored for the refused archive");
}
