//! The command-line contract, exercised through the real binary.

use crate::common::*;

#[test]
fn stdin_backup_restores_byte_exact_to_stdout_and_file() {
    let f = Fixture::new();
    let data = noise(3_000_000, 1);
    let id = f.backup("postgres/db", &data);
    assert_eq!(f.restore("latest"), data);
    assert_eq!(f.restore(&id[..8]), data);
    let out = f.dir.path().join("out.dump");
    let r = f.run(&["--json", "restore", &id[..6], "-o", out.to_str().unwrap()], b"").ok();
    assert_eq!(r.json()["bytes"], 3_000_000);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // no temporary file left beside it
    assert_eq!(
        std::fs::read_dir(f.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("repo-tmp"))
            .count(),
        0
    );
}

/// A fresh pod (empty cache) listing or forgetting snapshots reads no index file: at
/// millions of chunks, building the cache first took 18 s for nothing. Shown by making every
/// index file unreadable: `stats`, which needs the index, warns about each one.
#[test]
fn snapshots_and_forget_with_an_empty_cache_read_no_index_file() {
    let f = Fixture::new();
    f.backup("a", &noise(100_000, 1));
    f.backup("a", &noise(100_000, 2));
    for p in f.files("index") {
        std::fs::write(&p, b"not an index file").unwrap();
    }
    std::fs::remove_dir_all(f.cache()).unwrap();
    let r = f.run(&["--json", "snapshots"], b"").ok();
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert!(!r.stderr.contains("index"), "{}", r.stderr);
    let r = f.run(&["forget", "--keep-last", "1"], b"").ok();
    assert!(!r.stderr.contains("index"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 1);
    let r = f.run(&["stats"], b"").ok();
    assert!(r.stderr.contains("index/"), "stats reads the index: {}", r.stderr);
}

#[test]
fn empty_stream_is_a_snapshot_of_zero_bytes() {
    let f = Fixture::new();
    f.backup("empty", b"");
    assert_eq!(f.restore("latest"), b"");
}

#[test]
fn snapshots_are_found_by_name_not_host_and_time_is_settable() {
    let f = Fixture::new();
    f.run(
        &[
            "backup",
            "--stdin",
            "--name",
            "postgres/a",
            "--host",
            "pod-1",
            "--time",
            "2026-02-14T02:00:00Z",
            "--tag",
            "daily",
        ],
        b"old",
    )
    .ok();
    f.run(
        &[
            "backup",
            "--stdin",
            "--name",
            "postgres/a",
            "--host",
            "pod-2",
            "--time",
            "2026-02-15T02:00:00+00:00",
        ],
        b"new",
    )
    .ok();
    f.run(
        &["backup", "--stdin", "--name", "timescaledb/b", "--time", "2026-02-16T02:00:00Z"],
        b"other",
    )
    .ok();
    assert_eq!(f.run(&["restore", "latest", "--name", "postgres/a"], b"").ok().stdout, b"new");
    assert_eq!(
        f.run(&["restore", "latest", "--name", "postgres/*", "--tag", "daily"], b"").ok().stdout,
        b"old"
    );
    let list = f.run(&["--json", "snapshots", "--name", "postgres/*"], b"").ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["time"], "2026-02-14T02:00:00Z");
    assert_eq!(list[0]["tags"][0], "daily");
    let latest = f.run(&["--json", "snapshots", "--latest", "1"], b"").ok().json();
    assert_eq!(latest.as_array().unwrap().len(), 2, "one per name");
    let bad = f.run(&["backup", "--stdin", "--name", "x", "--time", "yesterday"], b"x");
    assert_eq!(bad.code, 2, "bad usage, as the README lists");
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
    // found in an audit: a snapshot dated years ahead stays the newest of its name
    let bad = f.run(&["backup", "--stdin", "--name", "x", "--time", "2062-01-01T00:00:00Z"], b"x");
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("in the future"), "{}", bad.stderr);
}

/// Found in an audit: usage errors found after parsing exited 1, not the documented 2.
#[test]
fn usage_errors_found_after_parsing_exit_2() {
    let f = Fixture::new();
    for (args, why) in [
        (&["check", "--read-data-subset", "0/12"][..], "--read-data-subset"),
        (&["check", "--max-age", "postgres/*=soon"], "--max-age"),
        (&["--limit-upload", "fast", "snapshots"], "--limit-upload"),
        (&["backup", "--stdin", "--name", "x", "--", "pg_dump"], "not both"),
        (&["prune", "--max-unused", "150%"], "--max-unused"),
    ] {
        let r = f.run(args, b"");
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(why) && r.stderr.lines().count() == 1, "{}", r.stderr);
    }
}

#[test]
fn wrong_password_missing_repository_and_double_init_are_one_line_errors() {
    let f = Fixture::new();
    let r = f.cmd(&["snapshots"]).env("REPO_PASSWORD", "nope").output().unwrap();
    assert_eq!(r.status.code(), Some(12));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("wrong password") && err.lines().count() == 1, "{err}");

    let r = f
        .cmd(&["snapshots"])
        .env("REPO_REPOSITORY", f.dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no repository"));

    let r = f.run(&["init"], b"");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);

    let r = f.cmd(&["snapshots"]).env_remove("REPO_PASSWORD").output().unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("password is needed"));
}

#[test]
fn password_file_is_read() {
    let f = Fixture::new();
    let pf = f.dir.path().join("pw");
    std::fs::write(&pf, format!("{}\n", f.password)).unwrap();
    let r = f
        .cmd(&["snapshots", "--password-file", pf.to_str().unwrap()])
        .env_remove("REPO_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
}

/// Found in an audit: an empty REPO_PASSWORD (an empty Secret) or a password file starting
/// with a blank line made `init` encrypt under the empty password.
#[test]
fn an_empty_password_is_refused() {
    let f = Fixture::empty();
    let pf = f.dir.path().join("pw");
    std::fs::write(&pf, "\nsecret\n").unwrap();
    let cases: [(&str, Option<&str>, &str); 2] = [
        ("", None, "REPO_PASSWORD is set but empty"),
        ("-", Some(pf.to_str().unwrap()), "its first line is empty"),
    ];
    for (pw, file, why) in cases {
        let mut c = f.cmd(&["init", "--kdf-memory", "1024"]);
        match file {
            Some(p) => c.env_remove("REPO_PASSWORD").env("REPO_PASSWORD_FILE", p),
            None => c.env("REPO_PASSWORD", pw),
        };
        let r = run_with_input(c, b"");
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains(why), "{}", r.stderr);
        assert!(!f.repo().join("config").exists(), "no repository was made");
    }
}

#[test]
fn unencrypted_repository_round_trips_and_stores_plaintext() {
    let f = Fixture::with_init(&["--encryption", "none"]);
    let text = b"CREATE TABLE visible_marker_text (id int);\n".repeat(3);
    let r = run_with_input(
        {
            let mut c = f.cmd(&["backup", "--stdin", "--name", "plain"]);
            c.env_remove("REPO_PASSWORD");
            c
        },
        &text,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let packs: Vec<u8> = f.files("data").iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    assert!(
        packs.windows(19).any(|w| w == b"visible_marker_text"),
        "unencrypted, incompressible-enough text is visible"
    );
    let mut c = f.cmd(&["restore", "latest"]);
    c.env_remove("REPO_PASSWORD");
    assert_eq!(run_with_input(c, b"").ok().stdout, text);
    // a password means "encrypted": the clear key file is refused, naming it
    let r = f.run(&["restore", "latest"], b"");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not password-protected"), "{}", r.stderr);
}

#[test]
fn encrypted_packs_do_not_contain_the_plaintext() {
    let f = Fixture::with_init(&["--compression-level=-7"]);
    let text = b"secret_marker_text_".repeat(10);
    f.backup("s", &text);
    let all: Vec<u8> = f.files("").iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!all.windows(13).any(|w| w == b"secret_marker"));
}

#[test]
fn command_mode_stores_the_output_and_passes_stderr_through() {
    let f = Fixture::new();
    let r = f
        .run(
            &[
                "--json",
                "backup",
                "--name",
                "cmd",
                "--",
                "sh",
                "-c",
                "printf hello; echo from-child >&2",
            ],
            b"",
        )
        .ok();
    assert!(r.stderr.contains("from-child"));
    assert_eq!(r.json()["snapshot"]["command"], "sh -c 'printf hello; echo from-child >&2'");
    assert_eq!(f.restore("latest"), b"hello");
}

#[test]
fn command_mode_failure_commits_no_snapshot() {
    let f = Fixture::new();
    let r = f.run(
        &["backup", "--name", "cmd", "--", "sh", "-c", "head -c 300000 /dev/urandom; exit 3"],
        b"",
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("exit status 3") && r.stderr.contains("no snapshot"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 0);
    let r = f.run(&["backup", "--name", "cmd", "--", "/nonexistent/pg_dump"], b"");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("could not start"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 0);
}

#[test]
fn deduplication_grows_by_roughly_the_changed_bytes() {
    let f = Fixture::new();
    let v1 = noise(24 << 20, 7);
    let mut v2 = v1.clone();
    v2.splice(8_000_000..8_000_000, noise(200_000, 8)); // insertion
    v2.drain(16_000_000..16_100_000); // deletion
    let mut v3 = v2.clone();
    v3.splice(4_000_000..4_050_000, noise(50_000, 9)); // overwrite
    f.backup("big", &v1);
    let s1 = f.repo_bytes("data");
    f.backup("big", &v2);
    let s2 = f.repo_bytes("data");
    f.backup("big", &v3);
    let s3 = f.repo_bytes("data");
    assert!(s1 > 24 << 20 && s1 < (25 << 20), "first: {s1}");
    // changed bytes ~300 kB: the repository grows by that plus a few chunks at the edges
    assert!(s2 - s1 < 1_500_000, "second grew by {}", s2 - s1);
    assert!(s3 - s2 < 800_000, "third grew by {}", s3 - s2);
    assert_eq!(f.restore("latest"), v3);
}

#[test]
fn concurrent_backups_all_succeed_and_restore() {
    let f = Fixture::with_init(&["--pack-size", "262144"]);
    let inputs: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let mut v = noise(3 << 20, 100); // shared content, deduplicated concurrently
            v.extend(noise(1 << 20, 200 + i));
            v
        })
        .collect();
    let handles: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (c, d) =
                (f.cmd(&["--json", "backup", "--stdin", "--name", &format!("db{i}")]), d.clone());
            std::thread::spawn(move || run_with_input(c, &d))
        })
        .collect();
    for h in handles {
        h.join().unwrap().ok();
    }
    for (i, d) in inputs.iter().enumerate() {
        assert_eq!(&f.run(&["restore", "latest", "--name", &format!("db{i}")], b"").ok().stdout, d);
    }
}

#[test]
fn closed_stdout_is_success() {
    let f = Fixture::new();
    f.backup("big", &noise(8 << 20, 3));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("'{BIN}' restore latest | head -c 10 | wc -c"))
        .env("REPO_REPOSITORY", f.repo())
        .env("REPO_PASSWORD", &f.password)
        .env("REPO_CACHE_DIR", f.cache())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; '{BIN}' restore latest | head -c 10 > /dev/null"))
        .env("REPO_REPOSITORY", f.repo())
        .env("REPO_PASSWORD", &f.password)
        .env("REPO_CACHE_DIR", f.cache())
        .status()
        .unwrap();
    assert_eq!(out.code(), Some(0));
}

#[test]
fn stats_reports_deduplication() {
    let f = Fixture::new();
    let d = noise(2 << 20, 5);
    f.backup("a", &d);
    f.backup("a", &d);
    let s = f.run(&["--json", "stats"], b"").ok().json();
    assert_eq!(s["snapshots"], 2);
    assert_eq!(s["total_size"], 4 << 20);
    assert_eq!(s["unique_bytes"], 2 << 20);
    assert!(s["ratio"].as_f64().unwrap() > 1.9);
}

#[test]
fn the_cache_is_rebuilt_when_deleted_or_garbage() {
    let f = Fixture::new();
    let d = noise(1 << 20, 11);
    f.backup("a", &d);
    std::fs::remove_dir_all(f.cache()).unwrap();
    assert_eq!(f.restore("latest"), d);
    for e in files_below(&f.cache()) {
        if e.extension().is_some_and(|x| x == "redb") {
            std::fs::write(&e, b"garbage garbage garbage").unwrap();
        }
    }
    assert_eq!(f.restore("latest"), d);
    f.backup("a", &d);
    assert!(f.repo_bytes("data") < (3 << 20) / 2, "the second backup deduplicated");
}

/// Restoring from storage this process may not write to (a read-only mount, a read-only S3
/// key) still works: the read lease cannot be written, and the warning says what that risks.
#[cfg(feature = "system-tests")] // needs root
#[test]
fn restore_from_read_only_storage_works_without_a_lease_and_says_so() {
    let f = Fixture::new();
    f.backup("db", b"rows");
    // root writes everything: run the restore as `nobody`, who may read the repository only
    let cache = tempfile::tempdir().unwrap();
    let sh = |cmd: String| {
        let o = std::process::Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
    };
    sh(format!(
        "chmod -R a+rX {} && chown -R nobody {}",
        f.dir.path().display(),
        cache.path().display()
    ));
    let c = f.cmd(&["restore", "latest"]);
    let envs: Vec<String> = c
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .map(|e| {
            if e.starts_with("REPO_CACHE_DIR=") {
                format!("REPO_CACHE_DIR={}", cache.path().display())
            } else {
                e
            }
        })
        .collect();
    let o = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .args(&envs)
        .arg(c.get_program())
        .args(c.get_args())
        .current_dir("/")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(o.stdout, b"rows");
    assert!(err.contains("permission denied; reading without a lease"), "{err}");
    assert!(f.files("locks").is_empty());
}

/// Runs `repo ARGS` on a pseudo-terminal (util-linux `script`), typing `keys` into it.
fn on_terminal(f: &Fixture, args: &str, keys: &str) -> Run {
    let mut c = f.cmd(&[]);
    c.env_remove("REPO_PASSWORD");
    let mut sh = std::process::Command::new("script");
    sh.args(["-qec", &format!("{BIN} {args}"), "/dev/null"]);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    run_with_input(sh, keys.as_bytes())
}

#[test]
fn init_asks_for_the_password_twice_on_a_terminal() {
    let f = Fixture::empty();
    let r = on_terminal(&f, "init --kdf-memory 1024", "correct horse\ncorrect horse\n");
    assert_eq!(r.code, 0, "{} {}", r.text(), r.stderr);
    assert!(r.text().contains("password for the new repository"), "{}", r.text());
    // the typed password is the repository's
    f.backup("db", b"rows");
    let r = on_terminal(&f, "snapshots", "correct horse\n");
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.text().contains("password for"), "{}", r.text());
    // a typo in the repetition creates nothing
    let g = Fixture::empty();
    let r = on_terminal(&g, "init --kdf-memory 1024", "one\ntwo\n");
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.text().contains("differ"), "{}", r.text());
    assert!(!g.repo().join("config").exists());
    // no terminal (cron): a one-line error, no prompt
    let mut c = f.cmd(&["snapshots"]);
    c.env_remove("REPO_PASSWORD");
    let mut s = std::process::Command::new("setsid");
    s.arg(c.get_program()).args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    let r = run_with_input(s, b"");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("a password is needed"), "{}", r.stderr);
}
