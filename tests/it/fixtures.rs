//! Frozen repositories: old repositories keep opening. `tests/fixtures/v1-encrypted` was made
//! by repo 0.1.0 (format version 1) with `fixture_content()` as one stream snapshot and is
//! never rewritten; `make_v1_fixture` (ignored) documents how it was made.

use crate::common::*;
use std::path::PathBuf;

fn fixture_content() -> Vec<u8> {
    let mut v = b"-- PostgreSQL database dump (fixture)\n".repeat(200);
    v.extend(noise(60_000, 42));
    v.extend(b"COPY public.t (id) FROM stdin;\n1\n2\n\\.\n".repeat(100));
    v
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-encrypted")
}

#[test]
fn frozen_v1_repository_opens_and_restores() {
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("REPO_REPOSITORY", fixture_dir())
            .env("REPO_PASSWORD", "fixture")
            .env("REPO_CACHE_DIR", cache.path())
            .output()
            .unwrap()
    };
    let out = run(&["--json", "snapshots"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "postgres/fixture");
    assert_eq!(list[0]["time"], "2026-02-14T02:00:00Z");
    let out = run(&["restore", "latest", "--name", "postgres/fixture"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, fixture_content());
}

#[test]
#[ignore = "writes tests/fixtures/v1-encrypted; run once by hand when a new format version is frozen"]
fn make_v1_fixture() {
    let dir = fixture_dir();
    assert!(!dir.exists(), "the fixture is frozen; remove it only for a new format version");
    let cache = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.args(args)
            .env("REPO_REPOSITORY", &dir)
            .env("REPO_PASSWORD", "fixture")
            .env("REPO_CACHE_DIR", cache.path());
        c
    };
    run_with_input(
        cmd(&["init", "--kdf-memory", "1024", "--chunk-avg", "8192", "--pack-size", "65536"]),
        b"",
    )
    .ok();
    run_with_input(
        cmd(&[
            "backup",
            "--stdin",
            "--name",
            "postgres/fixture",
            "--host",
            "fixture",
            "--time",
            "2026-02-14T02:00:00Z",
        ]),
        &fixture_content(),
    )
    .ok();
}
