//! Damaged repositories and killed processes, through the real binary: one clear line
//! naming the object, the documented exit code, never a panic, nothing half-committed.

use crate::common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn no_panic(r: &Run) {
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn flipped_byte_in_a_pack_names_the_pack() {
    let f = Fixture::new();
    f.backup("db", &noise(2_000_000, 1));
    let pack = f.files("data").pop().unwrap();
    let mut b = std::fs::read(&pack).unwrap();
    b[1000] ^= 0x01;
    std::fs::write(&pack, b).unwrap();
    let r = f.run(&["restore", "latest"], b"");
    no_panic(&r);
    assert_eq!(r.code, 1);
    let name = pack.file_name().unwrap().to_string_lossy().to_string();
    assert!(r.stderr.contains(&name) && r.stderr.contains("corrupt"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn truncated_index_is_reported_and_the_repository_stays_usable() {
    let f = Fixture::new();
    let d1 = noise(1_000_000, 2);
    f.backup("db", &d1);
    let idx = f.files("index").pop().unwrap();
    let b = std::fs::read(&idx).unwrap();
    std::fs::write(&idx, &b[..b.len() / 2]).unwrap();
    std::fs::remove_dir_all(f.cache()).unwrap();
    // any command that reads the index (not `snapshots`, which reads no index file)
    let r = f.run(&["stats"], b"");
    no_panic(&r);
    assert_eq!(r.code, 0);
    let name = idx.file_name().unwrap().to_string_lossy().to_string();
    assert!(r.stderr.contains(&name) && r.stderr.contains("warning"), "{}", r.stderr);
    let r = f.run(&["restore", "latest"], b"");
    no_panic(&r);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not in the index"), "{}", r.stderr);
    // a new backup stores what the index lost, and restores
    let d2 = noise(1_000_000, 2);
    f.backup("db", &d2);
    assert_eq!(f.restore("latest"), d2);
}

#[test]
fn damaged_snapshot_file_is_skipped_with_a_warning() {
    let f = Fixture::new();
    f.backup("a", b"one");
    f.backup("b", b"two");
    let snap = f.files("snapshots").pop().unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x40;
    std::fs::write(&snap, b).unwrap();
    // a fresh cache (a new pod): this host's cache still holds the copy its backup stored,
    // and `check` (which always reads storage) is what finds the damage there
    std::fs::remove_dir_all(f.cache()).unwrap();
    let r = f.run(&["--json", "snapshots"], b"");
    no_panic(&r);
    assert_eq!(r.code, 0);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert!(
        r.stderr.contains(&snap.file_name().unwrap().to_string_lossy().to_string()),
        "{}",
        r.stderr
    );
}

/// Found in an audit: with the newest snapshot object damaged, `restore latest` restored the
/// one before it and exited 0 (yesterday's dump into `pg_restore --clean`), and `export
/// --mirror` deleted the exported file of the snapshot it could not read (perhaps the last
/// good copy of that dump). Both must stop and name the object instead.
#[test]
fn a_damaged_newest_snapshot_stops_latest_and_mirror() {
    let f = Fixture::new();
    let staging = Fixture::new();
    let staging_repo = staging.repo().display().to_string();
    let exported = f.dir.path().join("export");
    let dir = exported.to_str().unwrap();
    let (old, new) = (noise(50_000, 1), noise(50_000, 2));
    let t = |h: u32| format!("2026-02-14T{h:02}:00:00Z");
    let time = t(1);
    f.run(&["backup", "--stdin", "--name", "db", "--time", &time], &old).ok();
    let time = t(2);
    let newest = f.run(&["--json", "backup", "--stdin", "--name", "db", "--time", &time], &new);
    let newest = newest.ok().json()["snapshot"]["id"].as_str().unwrap().to_string();
    f.run(&["export", dir], b"").ok();
    let files_before = std::fs::read_dir(&exported).unwrap().count();
    let snap = f.repo().join("snapshots").join(&newest);
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x40;
    std::fs::write(&snap, b).unwrap();
    std::fs::remove_dir_all(f.cache()).unwrap(); // a new pod: nothing cached
    for args in [
        vec!["restore", "latest", "--name", "db"],
        vec!["export", dir, "--mirror"],
        vec!["export", dir, "--latest", "1"],
        vec!["copy", "--to", &staging_repo, "--latest", "1"],
    ] {
        let r = f.run(&args, b"");
        no_panic(&r);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?} wrote {} bytes", r.stdout.len());
        assert!(r.stderr.contains(&newest) && r.stderr.contains("cannot be read"), "{}", r.stderr);
    }
    assert_eq!(std::fs::read_dir(&exported).unwrap().count(), files_before, "nothing deleted");
    // what does not depend on the damaged one goes on: an id, a plain listing, export
    let older = f.run(&["--json", "snapshots"], b"").ok().json()[0]["short_id"].clone();
    assert_eq!(f.restore(older.as_str().unwrap()), old);
    let r = f.run(&["export", dir], b"").ok();
    assert!(r.stderr.contains(&newest) && r.stderr.contains("snapshot skipped"), "{}", r.stderr);
}

#[test]
fn sigkill_in_the_middle_of_a_backup_commits_nothing_and_harms_nothing() {
    let f = Fixture::with_init(&["--pack-size", "65536", "--chunk-avg", "16384"]);
    let d1 = noise(500_000, 3);
    f.backup("db", &d1);
    let packs_before = f.files("data").len();
    let mut child = f
        .cmd(&["backup", "--stdin", "--name", "db"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let start = Instant::now();
    // feed until new packs appear, then kill without closing the input
    let mut seed = 100;
    while f.files("data").len() < packs_before + 3 {
        stdin.write_all(&noise(256 * 1024, seed)).unwrap();
        seed += 1;
        assert!(start.elapsed() < Duration::from_secs(60), "no packs written");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(f.snapshot_count(), 1, "no partial snapshot");
    assert_eq!(f.restore("latest"), d1);
    let d2 = noise(700_000, 4);
    f.backup("db", &d2);
    assert_eq!(f.restore("latest"), d2);
    // temporary files of the killed write are never listed as objects
    assert!(f.files("").iter().all(|p| p.starts_with(f.repo().join("data"))
        || !p.file_name().unwrap().to_string_lossy().starts_with(".tmp-")));
}

#[cfg(feature = "system-tests")] // needs root
#[test]
fn full_disk_is_one_clear_line_and_no_snapshot() {
    let f = Fixture::empty();
    std::fs::create_dir_all(f.repo()).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(f.repo())
        .status();
    assert!(matches!(ok, Ok(s) if s.success()), "cannot mount a small tmpfs (needs root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(f.repo());
    f.run(&["init", "--kdf-memory", "1024"], b"").ok();
    let r = f.run(&["backup", "--stdin", "--name", "db"], &noise(4 << 20, 5));
    no_panic(&r);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no space left"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 0);
}

/// Found in review: copying a tree whose source lost a pack said only "the chunk feeder
/// stopped early"; the error must name what is missing.
#[test]
fn copy_of_a_tree_from_a_damaged_source_names_the_damage() {
    let f = Fixture::with_init(&["--pack-size", "65536"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("relation"), noise(400_000, 3)).unwrap();
    let root = src.path().to_str().unwrap();
    f.run(&["backup", "--name", "t", "--root", root, "."], b"").ok();
    // the first pack written holds the start of the file (the catalog comes last)
    let mut packs = f.files("data");
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    std::fs::remove_file(&packs[0]).unwrap();
    let to = f.dir.path().join("staging");
    let mut init = f.cmd(&["init", "--kdf-memory", "1024"]);
    init.env("REPO_REPOSITORY", &to);
    run_with_input(init, b"").ok();
    let r = f.run(&["copy", "--to", to.to_str().unwrap()], b"");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("stopped early"), "{}", r.stderr);
    assert!(r.stderr.contains("data/") || r.stderr.contains("chunk"), "{}", r.stderr);
}
