//! Classic files: `export` paths and templates, skipping, `--mirror`, conflicts, a crash during
//! export, `import` (names, times, idempotence), `backup --gunzip` and `restore --gzip`, all
//! read back by the real gzip.

use crate::common;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Fixture, noise, run_with_input};

/// Text-like data (compressible, as dumps are).
fn dumpish(len: usize, seed: u64) -> Vec<u8> {
    let n = noise(len / 4 + 8, seed);
    let mut v = Vec::with_capacity(len);
    for b in n {
        v.extend_from_slice(format!("{:02}\t", b % 100).as_bytes());
        if v.len() >= len {
            break;
        }
    }
    v.truncate(len);
    v
}

fn gunzip(path: &Path) -> Vec<u8> {
    let o = Command::new("gunzip").arg("-c").arg(path).output().unwrap();
    assert!(
        o.status.success(),
        "gunzip {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn at(f: &Fixture, name: &str, time: &str, data: &[u8]) {
    f.run(&["backup", "--stdin", "--name", name, "--time", time], data).ok();
}

#[test]
fn templates_give_the_four_classic_paths_and_files_gunzip_to_the_snapshots() {
    let f = Fixture::new();
    let pgdump = [b"PGDMP\x01\x0f\x00".as_slice(), &dumpish(200_000, 1)].concat();
    let sql =
        [b"--\n-- PostgreSQL database cluster dump\n".as_slice(), &dumpish(150_000, 2)].concat();
    at(&f, "postgres/fnb-admin", "2026-02-14T02:00:00Z", &pgdump);
    at(&f, "timescaledb/timescaledb", "2026-02-14T02:00:00Z", &pgdump);
    at(&f, "lvm/ubuntu-lv", "2026-02-09T03:00:00Z", &dumpish(100_000, 3));
    at(&f, "prod/dumpall", "2022-11-28T08:51:08Z", &sql);
    let mnt = f.dir.path().join("mnt/backup");
    let m = mnt.to_str().unwrap();
    f.run(&["export", m, "--name", "postgres/*"], b"").ok();
    f.run(&["export", m, "--name", "timescaledb/*"], b"").ok();
    f.run(
        &[
            "export",
            m,
            "--name",
            "lvm/*",
            "--template",
            "lvm-snapshots/{base}-snap-{time:%Y%m%d}.tar.gz",
        ],
        b"",
    )
    .ok();
    let other = f.dir.path().join("backup");
    f.run(
        &[
            "export",
            other.to_str().unwrap(),
            "--name",
            "prod/dumpall",
            "--template",
            "hourly/backup-{time:%Y-%m-%dT%H:%M:%SZ}-dumpall.sql.gz",
        ],
        b"",
    )
    .ok();

    let expect = [
        (mnt.join("postgres/fnb-admin-20260214-020000.dump.gz"), &pgdump),
        (mnt.join("timescaledb/timescaledb-20260214-020000.dump.gz"), &pgdump),
        (other.join("hourly/backup-2022-11-28T08:51:08Z-dumpall.sql.gz"), &sql),
    ];
    for (p, data) in expect {
        assert!(p.exists(), "{} missing", p.display());
        assert!(gunzip(&p) == *data, "{} differs", p.display());
    }
    assert!(mnt.join("lvm-snapshots/ubuntu-lv-snap-20260209.tar.gz").exists());
    // Nothing else (no temporary files) is left, apart from the manifests.
    let mut all: Vec<String> = common::files_below(&mnt)
        .iter()
        .map(|p| p.strip_prefix(&mnt).unwrap().display().to_string())
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            ".repo-export.json",
            "lvm-snapshots/ubuntu-lv-snap-20260209.tar.gz",
            "postgres/fnb-admin-20260214-020000.dump.gz",
            "timescaledb/timescaledb-20260214-020000.dump.gz"
        ]
    );

    // zstd and raw
    let z = f.dir.path().join("z");
    f.run(&["export", z.to_str().unwrap(), "--name", "postgres/*", "--format", "zst"], b"").ok();
    let zst = std::fs::read(z.join("postgres/fnb-admin-20260214-020000.dump.zst")).unwrap();
    assert!(zstd::decode_all(&zst[..]).unwrap() == pgdump);
    f.run(&["export", z.to_str().unwrap(), "--name", "postgres/*", "--format", "raw"], b"").ok();
    assert!(std::fs::read(z.join("postgres/fnb-admin-20260214-020000.dump")).unwrap() == pgdump);

    // A hostile template is refused.
    let r = f.run(&["export", m, "--template", "../{name}"], b"");
    assert_eq!(r.code, 1, "{}", r.stderr);
}

#[test]
fn mirror_removes_only_exported_files_of_gone_snapshots_and_conflicts_are_kept() {
    let f = Fixture::new();
    for (i, t) in
        ["2026-02-12T02:00:00Z", "2026-02-13T02:00:00Z", "2026-02-14T02:00:00Z"].iter().enumerate()
    {
        at(&f, "postgres/db", t, &dumpish(50_000, i as u64));
    }
    at(&f, "other/x", "2026-02-14T02:00:00Z", &dumpish(10_000, 9));
    let dir = f.dir.path().join("out");
    let d = dir.to_str().unwrap();
    let r = f.run(&["--json", "export", d], b"").ok().json();
    assert_eq!(r["written"], 4, "{r}");
    std::fs::write(dir.join("postgres/operator-notes.txt"), "mine").unwrap();

    // Keep-within 1d selects the two newest; --mirror removes the oldest file, and only it.
    let r = f
        .run(
            &["--json", "export", d, "--name", "postgres/*", "--keep-within", "1d", "--mirror"],
            b"",
        )
        .ok()
        .json();
    assert_eq!(
        (r["written"].as_u64(), r["skipped"].as_u64(), r["deleted"].as_u64()),
        (Some(0), Some(2), Some(1)),
        "{r}"
    );
    assert!(!dir.join("postgres/db-20260212-020000.gz").exists());
    assert!(dir.join("postgres/db-20260213-020000.gz").exists());
    assert!(
        dir.join("postgres/operator-notes.txt").exists(),
        "a file export did not write was deleted"
    );
    assert!(
        dir.join("other/x-20260214-020000.gz").exists(),
        "a file outside the export's names was deleted"
    );

    // A file export did not write, with other content, is not overwritten.
    let target = dir.join("postgres/db-20260212-020000.gz");
    std::fs::write(&target, b"not this").unwrap();
    let r = f.run(&["export", d, "--name", "postgres/*"], b"");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not overwritten"), "{}", r.stderr);
    assert_eq!(std::fs::read(&target).unwrap(), b"not this");
    // With identical content it is adopted; --force replaces a different one.
    f.run(&["export", d, "--name", "postgres/*", "--force"], b"").ok();
    assert!(gunzip(&target) == dumpish(50_000, 0));
    let r = f.run(&["--json", "export", d, "--name", "postgres/*"], b"").ok().json();
    assert_eq!(r["written"], 0, "{r}");
    // A damaged manifest is reported, not trusted or overwritten.
    std::fs::write(dir.join(".repo-export.json"), b"{\"version\":1,\"files\":{\"../../etc/passwd\":{\"snapshot\":\"00\",\"name\":\"a\",\"size\":1}}}").unwrap();
    let r = f.run(&["export", d, "--mirror"], b"");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(".repo-export.json") && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
}

#[test]
fn an_export_killed_midway_leaves_no_file_under_its_final_name() {
    let mut len = 48 << 20;
    for _attempt in 0..3 {
        let f = Fixture::new();
        let data = noise(len, 42);
        at(&f, "postgres/big", "2026-02-14T02:00:00Z", &data);
        let dir = f.dir.path().join("out");
        let mut c = f.cmd(&["export", dir.to_str().unwrap()]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        if finished {
            len *= 2;
            continue;
        }
        let final_name = dir.join("postgres/big-20260214-020000.gz");
        assert!(!final_name.exists(), "a partial export sits under its final name");
        // The killed export's temporary file stays; once a day old, the next export
        // removes it.
        let temps = || -> Vec<std::path::PathBuf> {
            let d = std::fs::read_dir(dir.join("postgres")).unwrap();
            let names = d.map(|e| e.unwrap().path());
            names.filter(|p| p.to_string_lossy().contains(".tmp-repo-export-")).collect()
        };
        let left = temps();
        if left.is_empty() {
            continue; // killed before it began to write: try again
        }
        assert_eq!(left.len(), 1, "{left:?}");
        let old = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
        std::fs::File::options().write(true).open(&left[0]).unwrap().set_modified(old).unwrap();
        // The rerun writes the complete file.
        let r = f.run(&["--json", "export", dir.to_str().unwrap()], b"").ok().json();
        assert_eq!(r["abandoned_removed"], 1, "{r}");
        assert!(temps().is_empty());
        assert!(gunzip(&final_name) == data);
        return;
    }
    panic!("the export always finished before the kill (or never began); no kill point was tested");
}

/// Found in an audit: `restore -o FILE` and `export` interrupted by SIGINT left their
/// temporary file (the size of the dump), and a SIGKILLed one stayed forever. An interrupt
/// now removes it, and the next restore to the same file removes one a day old.
#[test]
fn restore_to_a_file_interrupted_leaves_no_temporary_file() {
    let f = Fixture::new();
    let data = noise(48 << 20, 3);
    at(&f, "postgres/big", "2026-02-14T02:00:00Z", &data);
    let out = f.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let target = out.join("big.dump");
    let temps = || -> Vec<std::path::PathBuf> {
        let d = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path());
        d.filter(|p| p.to_string_lossy().contains(".repo-tmp-")).collect()
    };
    let mut c = f.cmd(&["restore", "latest", "-o", target.to_str().unwrap()]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let start = std::time::Instant::now();
    while temps().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the restore ended before it could be interrupted"
    );
    assert_eq!(temps().len(), 1);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(temps().is_empty(), "{:?}", temps());
    assert!(!target.exists());
    // what a SIGKILL leaves is removed by the next restore to that file once a day old
    let day = Duration::from_secs(24 * 3600);
    let old = out.join(".repo-tmp-1-0-00aabbccddee-big.dump");
    let young = out.join(".repo-tmp-2-0-00aabbccddee-big.dump");
    let other = out.join(".repo-tmp-3-0-00aabbccddee-other.dump");
    let longer = out.join(".repo-tmp-4-0-00aabbccddee-x-big.dump");
    common::leave_temp_file(&old, 100, 2 * day);
    common::leave_temp_file(&young, 100, day / 2);
    common::leave_temp_file(&other, 100, 2 * day);
    common::leave_temp_file(&longer, 100, 2 * day);
    f.run(&["restore", "latest", "-o", target.to_str().unwrap()], b"").ok();
    assert!(std::fs::read(&target).unwrap() == data);
    assert!(!old.exists() && young.exists() && other.exists() && longer.exists());
}

#[test]
fn import_names_times_idempotence_and_gunzip_backup() {
    let f = Fixture::new();
    let dir = f.dir.path().join("mnt/backup/postgres");
    std::fs::create_dir_all(&dir).unwrap();
    let a = dumpish(300_000, 5);
    let mut b = a.clone();
    b[100_000..100_100].copy_from_slice(&[b'x'; 100]);
    for (name, data) in
        [("fnb-admin-20260214-020000.dump.gz", &a), ("fnb-admin-20260214-030000.dump.gz", &b)]
    {
        let mut gz = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        gz.stdin.take().unwrap().write_all(data).unwrap();
        std::fs::write(dir.join(name), gz.wait_with_output().unwrap().stdout).unwrap();
    }
    std::fs::write(dir.join("plain-20260214.sql"), &a).unwrap();
    let files: Vec<String> = [
        "fnb-admin-20260214-020000.dump.gz",
        "fnb-admin-20260214-030000.dump.gz",
        "plain-20260214.sql",
    ]
    .iter()
    .map(|n| dir.join(n).display().to_string())
    .collect();
    let mut args = vec!["--json", "import"];
    args.extend(files.iter().map(|s| s.as_str()));
    let r = f.run(&args, b"").ok().json();
    assert_eq!(r["imported"], 3, "{r}");
    let second = r["files"][1]["bytes_written"].as_u64().unwrap();
    assert!(second < 60_000, "the second version did not deduplicate against the first: {second}");
    assert!(f.run(&["restore", "latest", "--name", "postgres/fnb-admin"], b"").ok().stdout == b);
    assert!(f.run(&["restore", "latest", "--name", "postgres/plain"], b"").ok().stdout == a);
    let snaps = f.run(&["--json", "snapshots", "--name", "postgres/fnb-admin"], b"").ok().json();
    assert_eq!(snaps[1]["time"], "2026-02-14T03:00:00Z");
    let r = f.run(&args, b"").ok().json();
    assert_eq!(r["imported"], 0, "{r}");

    // --name/--time when the file name does not tell, and a clear error when nothing tells.
    std::fs::write(dir.join("notes.bin"), b"abc").unwrap();
    let p = dir.join("notes.bin").display().to_string();
    let r = f.run(&["import", &p], b"");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("notes.bin") && r.stderr.contains("--name"), "{}", r.stderr);
    f.run(&["import", &p, "--name", "misc/notes", "--time", "2026-01-01T00:00:00Z"], b"").ok();
    // A truncated gzip file is refused, and no snapshot is made of it.
    let gz = std::fs::read(dir.join("fnb-admin-20260214-020000.dump.gz")).unwrap();
    std::fs::write(dir.join("cut-20260215-010000.dump.gz"), &gz[..gz.len() / 2]).unwrap();
    let r = f.run(&["import", &dir.join("cut-20260215-010000.dump.gz").display().to_string()], b"");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        f.run(&["--json", "snapshots", "--name", "postgres/cut"], b"")
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // backup --gunzip stores the stream decompressed; restore --gzip gives a valid .gz back.
    let r = run_with_input(
        f.cmd(&["--json", "backup", "--stdin", "--gunzip", "--name", "gz/stream"]),
        &gz,
    )
    .ok()
    .json();
    assert!(r.get("warnings").is_none(), "decompressed input still warned: {r}");
    assert!(f.run(&["restore", "latest", "--name", "gz/stream"], b"").ok().stdout == a);
    let out = f.dir.path().join("back.gz");
    f.run(
        &["restore", "latest", "--name", "gz/stream", "--gzip", "-o", out.to_str().unwrap()],
        b"",
    )
    .ok();
    assert!(gunzip(&out) == a);
}

/// Two different files that name the same snapshot (`db-20260214.dump.gz` and
/// `db-20260214.sql.gz` are both `db` at 2026-02-14): the second was reported as "skipped",
/// as if already imported, with exit 0, and its content was never stored.
#[test]
fn import_refuses_a_file_whose_name_and_time_another_file_took() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("db-20260214.dump.gz"), dir.path().join("db-20260214.sql.gz"));
    for (p, seed) in [(&a, 1), (&b, 2)] {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut w, &dumpish(50_000, seed)).unwrap();
        std::fs::write(p, w.finish().unwrap()).unwrap();
    }
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    // both in one import: refused before anything is stored
    let r = f.run(&["import", a, b], b"");
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("db-20260214.sql.gz") && r.stderr.contains("--name"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 0);
    // one after the other: the first again is skipped, the second refused
    f.run(&["import", a], b"").ok();
    let again = f.run(&["--json", "import", a], b"").ok().json();
    assert_eq!(again["skipped"], 1, "{again}");
    let r = f.run(&["import", b], b"");
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("exists already"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 1);
    // with a new file before it: still refused before anything is stored
    let c = dir.path().join("db-20260215.sql.gz");
    std::fs::copy(b, &c).unwrap();
    let r = f.run(&["import", c.to_str().unwrap(), b], b"");
    assert!(r.code != 0 && r.stderr.contains("exists already"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 1, "the new file was not imported either");
}
