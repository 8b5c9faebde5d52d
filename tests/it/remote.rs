//! Every command against real remote servers on 127.0.0.1: an S3-compatible server in its
//! own process (moto_server) and a private OpenSSH sshd; `repo sync` both ways, `repo copy`,
//! a sync killed midway, and an unchanged second sync that copies nothing.

use crate::common;
use crate::common::servers;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::servers::{Moto, Sshd};
use crate::common::{BIN, Fixture, noise, run_with_input};

/// Two versions of a 3 MiB "dump": the second changes a few regions.
fn versions() -> (Vec<u8>, Vec<u8>) {
    let a = noise(3 << 20, 7);
    let mut b = a.clone();
    for at in [100_000usize, 1_500_000, 2_900_000] {
        b[at..at + 5000].copy_from_slice(&noise(5000, at as u64));
    }
    (a, b)
}

/// Every object of a local repository directory: path → size (without locks/ and prune/).
fn objects(dir: &Path) -> BTreeMap<String, u64> {
    common::files_below(dir)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(),
                std::fs::metadata(&p).unwrap().len(),
            )
        })
        .filter(|(p, _)| {
            !p.starts_with("locks/") && !p.starts_with("prune/") && !p.contains(".tmp-")
        })
        .collect()
}

/// init, backup, snapshots, restore, check --read-data, forget --prune, restore again.
fn every_command(f: &Fixture) {
    let (a, b) = versions();
    f.backup("postgres/db", &a);
    f.backup("postgres/db", &b);
    assert_eq!(f.snapshot_count(), 2);
    assert!(f.restore("latest") == b, "restore of the newest snapshot differs");
    let snaps = f.run(&["--json", "snapshots"], b"").ok().json();
    let first = snaps[0]["id"].as_str().unwrap().to_string();
    assert!(f.restore(&first) == a, "restore of the first snapshot differs");
    let check = f.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(check["damage"].as_array().map(|d| d.len()), Some(0), "{check}");
    assert!(check["packs_read"].as_u64().unwrap() >= 1);

    f.run(&["forget", "--keep-last", "1", "--prune"], b"").ok();
    assert_eq!(f.snapshot_count(), 1);
    assert!(f.restore("latest") == b);
    // With a brand-new cache: everything comes from the server.
    let mut c = f.cmd(&["--json", "check", "--read-data"]);
    c.env("REPO_CACHE_DIR", f.dir.path().join("fresh-cache"));
    let check = run_with_input(c, b"").ok().json();
    assert_eq!(check["damage"].as_array().map(|d| d.len()), Some(0), "{check}");
}

#[test]
fn s3_every_command() {
    let moto = Moto::start();
    let f = Fixture::at(&moto.repo_url("prod-cluster", "repo"));
    every_command(&f);
    // Credentials and URL options never show in output.
    let r = f.run(&["stats"], b"").ok();
    assert!(r.text().contains("s3://prod-cluster/repo"), "{}", r.text());
    assert!(!r.text().contains("endpoint=") && !r.text().contains("repo-test-secret"));
}

#[test]
fn sftp_every_command_and_sync() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::at(&sshd.repo_url(&dir.path().join("backup-repo")));
    every_command(&f);
    // No temporary upload names remain on the server.
    assert!(objects(&dir.path().join("backup-repo")).keys().all(|p| !p.contains(".tmp-")));
    // One that a killed upload left a day ago is removed by prune, over SFTP.
    let day = std::time::Duration::from_secs(24 * 3600);
    let left = dir.path().join("backup-repo/data/00/.tmp-0011223344556677-00aa");
    common::leave_temp_file(&left, 2000, 2 * day);
    let young = dir.path().join("backup-repo/index/.tmp-8899aabbccddeeff-00bb");
    common::leave_temp_file(&young, 1000, day / 2);
    let p = f.run(&["--json", "prune"], b"").ok().json();
    assert_eq!(
        (p["abandoned_files"].as_u64(), p["abandoned_bytes"].as_u64()),
        (Some(1), Some(2000))
    );
    assert!(!left.exists() && young.exists());

    // sync local → SFTP and SFTP → local
    let local = Fixture::new();
    let (a, b) = versions();
    local.backup("postgres/db", &a);
    local.backup("postgres/db", &b);
    let dest = sshd.repo_url(&dir.path().join("mirror"));
    let r = local.run(&["--json", "sync", &dest], b"").ok().json();
    assert!(r["copied_objects"].as_u64().unwrap() >= 5, "{r}");
    assert_eq!(objects(&local.repo()), objects(&dir.path().join("mirror")));
    let back = Fixture::empty();
    let mut c = back.cmd(&["--json", "sync", &back.repo().display().to_string()]);
    c.env("REPO_REPOSITORY", &dest);
    run_with_input(c, b"").ok();
    assert_eq!(objects(&local.repo()), objects(&back.repo()));
    assert!(back.restore("latest") == b);
}

#[test]
fn s3_sync_both_ways_delete_and_dry_run() {
    let moto = Moto::start();
    let s3 = moto.repo_url("dev-cluster-backup", "repo");
    let local = Fixture::new();
    let (a, b) = versions();
    local.backup("postgres/db", &a);
    local.backup("postgres/db", &b);
    local.backup("timescaledb/ts", &noise(1 << 20, 99));

    // A dry run reports and copies nothing.
    let r = local.run(&["--json", "sync", "--dry-run", &s3], b"").ok().json();
    assert!(r["copied_objects"].as_u64().unwrap() >= 6 && r["dry_run"] == true, "{r}");
    let r = local.run(&["--json", "sync", "--dry-run", &s3], b"").ok().json();
    assert!(r["skipped_objects"].as_u64().unwrap() == 0, "dry run wrote something: {r}");

    // No password needed: the off-site job never holds the key.
    let mut c = local.cmd(&["--json", "sync", &s3]);
    c.env_remove("REPO_PASSWORD");
    let first = run_with_input(c, b"").ok().json();
    let copied = first["copied_objects"].as_u64().unwrap();
    assert!(copied >= 6, "{first}");
    assert_eq!(
        first["copied_bytes"].as_u64().unwrap(),
        local.repo_bytes("") - local.repo_bytes("locks")
    );

    // A second sync with nothing new copies nothing.
    let second = local.run(&["--json", "sync", &s3], b"").ok().json();
    assert_eq!(second["copied_objects"], 0, "{second}");
    assert_eq!(second["skipped_objects"].as_u64().unwrap(), copied);

    // The S3 copy is a working repository: check and restore there, without a local cache.
    let remote = Fixture { url: Some(s3.clone()), ..Fixture::empty() };
    let check = remote.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(check["damage"].as_array().map(|d| d.len()), Some(0), "{check}");
    assert!(remote.run(&["restore", "latest", "--name", "postgres/db"], b"").ok().stdout == b);

    // S3 → local: an exact copy.
    let back = Fixture::empty();
    let mut c = back.cmd(&["sync", &back.repo().display().to_string()]);
    c.env("REPO_REPOSITORY", &s3);
    run_with_input(c, b"").ok();
    assert_eq!(objects(&local.repo()), objects(&back.repo()));

    // Retention at the source, then --delete mirrors it (and only after copying).
    local.run(&["forget", "--keep-last", "1", "--name", "postgres/db", "--prune"], b"").ok();
    let r = local.run(&["--json", "sync", "--delete", &s3], b"").ok().json();
    assert!(r["deleted_objects"].as_u64().unwrap() >= 1, "{r}");
    let mut c = local.cmd(&["--json", "sync", &back.repo().display().to_string(), "--delete"]);
    c.env("REPO_REPOSITORY", &s3);
    run_with_input(c, b"").ok();
    assert_eq!(
        objects(&local.repo()),
        objects(&back.repo()),
        "S3 → local after --delete differs from the source"
    );
    assert_eq!(back.snapshot_count(), 2);
    let check = back.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(check["damage"].as_array().map(|d| d.len()), Some(0), "{check}");

    // A different repository at the destination is refused, not overwritten.
    let other = Fixture::new();
    let r = local.run(&["sync", &other.repo().display().to_string()], b"");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("different repository"), "{}", r.stderr);
}

#[test]
fn copy_to_s3_with_another_key_and_chunker() {
    let moto = Moto::start();
    let local = Fixture::new();
    let (a, b) = versions();
    local.backup("postgres/fnb-admin", &a);
    local.backup("postgres/fnb-admin", &b);
    local.backup("other/x", &noise(100_000, 5));

    let staging = Fixture {
        url: Some(moto.repo_url("staging", "repo")),
        password: "staging pw".into(),
        ..Fixture::empty()
    };
    staging.run(&["init", "--kdf-memory", "1024", "--chunk-avg", "8192"], b"").ok();
    let seed = |extra: &[&str]| {
        let mut args =
            vec!["--json", "copy", "--to", staging.url.as_deref().unwrap(), "--name", "postgres/*"];
        args.extend_from_slice(extra);
        let mut c = local.cmd(&args);
        c.env("REPO_TO_PASSWORD", "staging pw");
        run_with_input(c, b"").ok().json()
    };
    let r = seed(&["--latest", "1"]);
    assert_eq!((r["copied"].as_u64(), r["skipped"].as_u64()), (Some(1), Some(0)), "{r}");
    // Copying again makes no second snapshot; the older one then deduplicates against it.
    let r = seed(&[]);
    assert_eq!((r["copied"].as_u64(), r["skipped"].as_u64()), (Some(1), Some(1)), "{r}");
    let stored_second = r["snapshots"][0]["bytes_written"].as_u64().unwrap();
    assert!(
        stored_second < 600_000,
        "the older version should deduplicate against the newer one: {stored_second} bytes stored"
    );
    assert_eq!(staging.snapshot_count(), 2);

    // Restores byte-exact without any local cache, with the destination's own password.
    let mut c = staging.cmd(&["restore", "latest", "--name", "postgres/fnb-admin"]);
    c.env("REPO_CACHE_DIR", staging.dir.path().join("fresh"));
    assert!(run_with_input(c, b"").ok().stdout == b);
    let check = staging.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(check["damage"].as_array().map(|d| d.len()), Some(0), "{check}");
    let snaps = staging.run(&["--json", "snapshots"], b"").ok().json();
    let src = local.run(&["--json", "snapshots", "--name", "postgres/*"], b"").ok().json();
    for (s, d) in src.as_array().unwrap().iter().zip(snaps.as_array().unwrap()) {
        assert_eq!(
            (&s["name"], &s["time"], &s["host"], &s["size"]),
            (&d["name"], &d["time"], &d["host"], &d["size"])
        );
    }
    // The source password does not open the destination.
    let wrong =
        Fixture { url: staging.url.clone(), password: local.password.clone(), ..Fixture::empty() };
    let r = wrong.run(&["snapshots"], b"");
    assert_eq!(r.code, 12, "{}", r.stderr);
}

#[test]
fn sync_killed_midway_then_rerun() {
    let moto = Moto::start();
    let s3 = moto.repo_url("offsite", "repo");
    let local = Fixture::with_init(&["--pack-size", "1048576"]);
    for i in 0..4 {
        local.backup(&format!("postgres/db{i}"), &noise(3 << 20, i));
    }
    // 12 MiB at 2 MiB/s: killed after 2.5 s, the sync is surely unfinished.
    let mut c = local.cmd(&["sync", "--limit-upload", "2M", "--jobs", "2", &s3]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();

    // At the kill point the destination is a consistent repository (fewer snapshots).
    let remote = Fixture { url: Some(s3.clone()), ..Fixture::empty() };
    let held = remote.snapshot_count();
    assert!(held < 4, "the throttled sync finished before the kill; no kill point was tested");
    let check = remote.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(check["damage"].as_array().map(|d| d.len()), Some(0), "{check}");

    // The rerun completes and copies only what is missing.
    let r = local.run(&["--json", "sync", &s3], b"").ok().json();
    assert!(r["skipped_objects"].as_u64().unwrap() >= 2, "the rerun started over: {r}");
    assert_eq!(remote.snapshot_count(), 4);
    assert!(
        remote.run(&["restore", "latest", "--name", "postgres/db3"], b"").ok().stdout
            == noise(3 << 20, 3)
    );
    let r = local.run(&["--json", "sync", &s3], b"").ok().json();
    assert_eq!(r["copied_objects"], 0, "{r}");
}

#[test]
fn unreachable_servers_fail_with_one_line() {
    let f = Fixture {
        url: Some("sftp://nobody@127.0.0.1:1/x?known_hosts=accept".into()),
        ..Fixture::empty()
    };
    let r = f.run(&["snapshots"], b"");
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("Connection refused") && r.stderr.contains("sftp://127.0.0.1:1/x"),
        "{}",
        r.stderr
    );

    let moto = Moto::start();
    let f = Fixture { url: Some(moto.repo_url("empty", "nothing-here")), ..Fixture::empty() };
    let r = f.run(&["snapshots"], b"");
    assert_eq!(r.code, 10, "{}", r.stderr);
    let r =
        std::process::Command::new(BIN).args(["-r", "nosuch://x/y", "snapshots"]).output().unwrap();
    assert_eq!(r.status.code(), Some(1));
}

#[test]
fn webdav_every_command() {
    let dav = servers::Webdav::start();
    let f = Fixture::at(&dav.repo_url("repo"));
    every_command(&f);
    assert!(objects(&dav.dir.path().join("repo")).keys().all(|p| !p.contains(".tmp-")));
}

/// A pack cut short on S3 (a partial upload by another tool, a damaged bucket) is damage of
/// that pack, named as such, like a short file on local disk: a restore reading past its end
/// said only S3's "range not satisfiable". (`check` already named it, from the listed size.)
#[test]
fn a_truncated_pack_on_s3_is_reported_as_damage() {
    let moto = Moto::start();
    let s3 = moto.repo_url("cut", "repo");
    let local = Fixture::new();
    let data = noise(3 << 20, 5);
    local.backup("db", &data);
    let mut packs = local.files("data");
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = packs.pop().unwrap();
    local.run(&["sync", &s3], b"").ok();
    let bytes = std::fs::read(&pack).unwrap();
    let key = pack.strip_prefix(local.repo()).unwrap().to_string_lossy().to_string();
    moto.put_object("cut", &format!("repo/{key}"), &bytes[..bytes.len() / 2]);
    let remote = Fixture { url: Some(s3.clone()), ..Fixture::empty() };
    let name = pack.file_name().unwrap().to_string_lossy().to_string();
    let r = remote.run(&["restore", "latest"], b"");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&name), "{}", r.stderr);
    assert!(r.stderr.contains("cut short"), "not told as a short object: {}", r.stderr);
    let r = remote.run(&["--json", "check", "--read-data"], b"");
    let damage = r.json()["damage"].to_string();
    assert!(damage.contains(&name), "{} {}", r.stderr, damage);
}

/// `get_into` (a fresh pod fetches hundreds of MB of index files into a few reused buffers)
/// returns exactly the object, whatever the buffer held before and however large it was, on
/// local disk and on S3; a missing object is "not found", as for `get`.
#[test]
fn get_into_a_used_buffer_returns_exactly_the_object() {
    let moto = Moto::start();
    let s3 = format!(
        "{}&access_key_id=repo-test&secret_access_key=repo-test-secret",
        moto.repo_url("into", "repo")
    );
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().to_string_lossy().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for url in [local, s3] {
        let b = repo::backend::from_url(&url).unwrap();
        rt.block_on(async {
            let data = noise(300_000, 9);
            b.put("index/ab", data.clone()).await.unwrap();
            for old in [vec![7u8; 1_000_000], vec![1u8; 10], Vec::new()] {
                let got = b.get_into("index/ab", old).await.unwrap();
                assert!(got == data, "{url}: {} bytes back", got.len());
            }
            let e = b.get_into("index/none", vec![3u8; 100]).await.unwrap_err();
            assert!(e.is_not_found(), "{url}: {e}");
        });
    }
}
