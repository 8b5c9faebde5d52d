//! `repo check` and `repo repair` on deliberately damaged repositories: each kind of damage
//! is diagnosed exactly (the object and the snapshots that need it), a clean repository
//! checks clean, and repairs restore what they promise.

use crate::common::*;
use serde_json::Value;

const DAMAGE: i32 = 4;

/// Two snapshot names with shared and own data, small packs so there are several.
fn fixture() -> (Fixture, String, String) {
    let f = Fixture::with_init(&["--pack-size", "131072", "--chunk-avg", "16384"]);
    let shared = noise(600_000, 1);
    let mut a = shared.clone();
    a.extend(noise(300_000, 2));
    let mut b = shared;
    b.extend(noise(300_000, 3));
    let ia = f.backup("postgres/a", &a);
    let ib = f.backup("postgres/b", &b);
    (f, ia, ib)
}

fn check(f: &Fixture, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json", "check"];
    a.extend_from_slice(args);
    let r = f.run(&a, b"");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    (r.code, r.json())
}

fn damage_objects(v: &Value) -> Vec<String> {
    v["damage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["object"].as_str().unwrap().to_string())
        .collect()
}

fn hurt(v: &Value, object: &str) -> Vec<String> {
    let d = v["damage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["object"] == object)
        .unwrap_or_else(|| panic!("no damage on {object}: {v}"));
    d["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap()[..8].to_string())
        .collect()
}

/// The pack holding the first data chunk that only snapshot `b` has.
fn pack_only_b_needs(f: &Fixture) -> std::path::PathBuf {
    let mut packs = f.files("data");
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    packs.pop().unwrap()
}

#[test]
fn a_clean_repository_checks_clean() {
    let (f, _, _) = fixture();
    let (code, v) = check(&f, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["snapshots"], 2);
    assert!(v["packs_read"].as_u64().unwrap() >= 3);
    assert_eq!(v["packs_read"], v["packs"]);
}

#[test]
fn flipped_byte_in_a_data_pack_is_found_by_reading_and_names_the_snapshots() {
    let (f, ia, ib) = fixture();
    let pack = pack_only_b_needs(&f);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&pack, bytes).unwrap();
    let obj = format!("data/{}", pack.strip_prefix(f.repo().join("data")).unwrap().display());
    // the structure check reads content lists only: it passes, unless the byte hit a list blob
    let (code, v) = check(&f, &[]);
    assert!(code == 0 || (code == DAMAGE && damage_objects(&v) == vec![obj.clone()]), "{v}");
    let (code, v) = check(&f, &["--read-data"]);
    assert_eq!(code, DAMAGE);
    assert_eq!(damage_objects(&v), vec![obj.clone()]);
    let snaps = hurt(&v, &obj);
    assert!(snaps.contains(&ib[..8].to_string()), "{snaps:?}");
    assert!(!snaps.contains(&ia[..8].to_string()) || snaps.len() == 2, "{snaps:?}");
}

#[test]
fn missing_pack_names_the_pack_and_its_snapshots() {
    let (f, _, ib) = fixture();
    let pack = pack_only_b_needs(&f);
    std::fs::remove_file(&pack).unwrap();
    let (code, v) = check(&f, &[]);
    assert_eq!(code, DAMAGE);
    let obj = format!("data/{}", pack.strip_prefix(f.repo().join("data")).unwrap().display());
    assert_eq!(damage_objects(&v), vec![obj.clone()]);
    assert!(v["damage"][0]["problem"].as_str().unwrap().contains("missing"));
    assert!(hurt(&v, &obj).contains(&ib[..8].to_string()));
}

#[test]
fn truncated_index_file_is_named_with_the_snapshots_it_hurts() {
    let (f, ia, ib) = fixture();
    for idx in f.files("index") {
        let b = std::fs::read(&idx).unwrap();
        std::fs::write(&idx, &b[..b.len() - 10]).unwrap();
    }
    std::fs::remove_dir_all(f.cache()).unwrap();
    let (code, v) = check(&f, &[]);
    assert_eq!(code, DAMAGE);
    let objs = damage_objects(&v);
    assert!(objs.iter().filter(|o| o.starts_with("index/")).count() == 2, "{objs:?}");
    assert!(objs.contains(&"index".to_string()), "{objs:?}");
    let snaps = hurt(&v, "index");
    assert!(
        snaps.contains(&ia[..8].to_string()) && snaps.contains(&ib[..8].to_string()),
        "{snaps:?}"
    );
    assert_eq!(v["index_incomplete"], true);
}

#[test]
fn missing_index_file_then_repair_index_restores_everything() {
    let (f, ia, ib) = fixture();
    let a = f.restore(&ia[..8]);
    let b = f.restore(&ib[..8]);
    for idx in f.files("index") {
        std::fs::remove_file(idx).unwrap();
    }
    let (code, v) = check(&f, &[]);
    assert_eq!(code, DAMAGE);
    assert!(
        v["damage"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["object"] == "index"
                && d["problem"].as_str().unwrap().contains("repair index")),
        "{v}"
    );
    assert!(f.run(&["restore", &ia[..8]], b"").code != 0);
    // repair snapshots refuses to remove anything while the index is incomplete
    let r = f.run(&["repair", "snapshots", "--forget-broken"], b"");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("repair index"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 2);
    f.run(&["repair", "index"], b"").ok();
    let (code, v) = check(&f, &["--read-data"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(f.restore(&ia[..8]), a);
    assert_eq!(f.restore(&ib[..8]), b);
}

#[test]
fn damaged_snapshot_file_is_named() {
    let (f, _, _) = fixture();
    let snap = f.files("snapshots").pop().unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&snap, b).unwrap();
    let (code, v) = check(&f, &[]);
    assert_eq!(code, DAMAGE);
    let obj = format!("snapshots/{}", snap.file_name().unwrap().to_string_lossy());
    assert_eq!(damage_objects(&v), vec![obj]);
}

#[test]
fn corrupt_local_cache_is_reported_and_rebuilt_never_trusted() {
    let (f, ia, _) = fixture();
    for p in files_below(&f.cache()) {
        if p.extension().is_some_and(|e| e == "redb") {
            std::fs::write(&p, vec![0xAB; 4096]).unwrap();
        }
    }
    let (code, v) = check(&f, &[]);
    assert_eq!(code, 0, "{v}");
    let notes = v["notes"].to_string();
    assert!(notes.contains("cache") && notes.contains("rebuilt"), "{notes}");
    assert!(!f.restore(&ia[..8]).is_empty());
}

#[test]
fn stale_cache_entries_are_detected_and_rebuilt() {
    // a cache that has taken in the right index files but answers with wrong locations
    let (f, ia, _) = fixture();
    let expected = f.restore(&ia[..8]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend = repo::backend::from_url(f.repo().to_str().unwrap()).unwrap();
        let r = repo::repo::Repository::open(
            backend,
            Some(f.password.as_bytes()),
            Some(f.cache()),
            repo::repo::Access::Read,
        )
        .await
        .unwrap();
        for p in f.files("index") {
            let id = repo::format::Id::from_hex(&p.file_name().unwrap().to_string_lossy()).unwrap();
            let mut file = repo::repo::load_index_file(&r, &id).await.unwrap();
            for pack in &mut file.packs {
                for (_, loc) in &mut pack.blobs {
                    loc.offset += 1; // wrong, but the same file name
                }
            }
            r.index().ingest(&[(id.to_hex(), file)]).unwrap();
        }
    });
    assert_ne!(f.run(&["restore", &ia[..8]], b"").code, 0, "the poisoned cache is used by restore");
    let (code, v) = check(&f, &[]);
    assert_eq!(code, 0, "{v}");
    assert!(v["notes"].to_string().contains("disagreed"), "{v}");
    assert_eq!(f.restore(&ia[..8]), expected, "rebuilt from the repository");
}

#[test]
fn read_data_subsets_together_read_every_pack_exactly_once() {
    let (f, _, _) = fixture();
    let mut all = vec![];
    for part in ["1/3", "2/3", "3/3"] {
        let (code, v) = check(&f, &["--read-data-subset", part]);
        assert_eq!(code, 0);
        all.extend(
            v["read_packs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()),
        );
    }
    let mut packs: Vec<String> = f
        .files("data")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    packs.sort();
    all.sort();
    assert_eq!(all, packs);
    let (_, v) = check(&f, &["--read-data-subset", "100%"]);
    assert_eq!(v["packs_read"].as_u64().unwrap() as usize, packs.len());
    let (_, v) = check(&f, &["--read-data-subset", "0%"]);
    assert_eq!(v["packs_read"], 0);
    let (_, v) = check(&f, &["--read-data-subset", "1K"]);
    assert_eq!(v["packs_read"], 1, "a byte budget reads packs until it is spent");
    let bad = f.run(&["check", "--read-data-subset", "4/3"], b"");
    assert_eq!(bad.code, 2, "bad usage");
}

#[test]
fn repair_snapshots_removes_only_when_asked() {
    let (f, ia, ib) = fixture();
    let pack = pack_only_b_needs(&f);
    std::fs::remove_file(&pack).unwrap();
    let r = f.run(&["--json", "repair", "snapshots"], b"").ok();
    let broken: Vec<String> = r.json()["broken"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap()[..8].to_string())
        .collect();
    assert!(broken.contains(&ib[..8].to_string()));
    assert_eq!(f.snapshot_count(), 2, "nothing removed without --forget-broken");
    f.run(&["repair", "snapshots", "--forget-broken"], b"").ok();
    let left = f.run(&["--json", "snapshots"], b"").ok().json();
    let left: Vec<String> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["short_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!left.contains(&ib[..8].to_string()));
    if !broken.contains(&ia[..8].to_string()) {
        assert!(left.contains(&ia[..8].to_string()));
    }
}

/// The classic failure of a cron backup: it stopped and nobody noticed. `--max-age` turns it
/// into an exit code of its own.
#[test]
fn max_age_reports_names_whose_newest_snapshot_is_too_old() {
    let f = Fixture::new();
    let now = chrono::Utc::now();
    let old = (now - chrono::Duration::hours(30)).to_rfc3339();
    let fresh = (now - chrono::Duration::hours(2)).to_rfc3339();
    f.run(&["backup", "--stdin", "--name", "postgres/a", "--time", &old], b"a").ok();
    f.run(&["backup", "--stdin", "--name", "postgres/b", "--time", &old], b"b1").ok();
    f.run(&["backup", "--stdin", "--name", "postgres/b", "--time", &fresh], b"b2").ok();
    let ok = f.run(&["check", "--max-age", "postgres/b=26h"], b"");
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let r =
        f.run(&["--json", "check", "--max-age", "postgres/*=26h", "--max-age", "lvm/*=8d"], b"");
    assert_eq!(r.code, 5, "{}", r.stderr);
    let j = r.json();
    let late = j["late"].as_array().unwrap();
    assert_eq!(late.len(), 2, "{j}");
    assert_eq!(late[0]["name"], "postgres/a");
    assert!(late[0]["age_hours"].as_f64().unwrap() > 29.0);
    assert_eq!(late[1]["rule"], "lvm/*=8d");
    assert!(late[1]["name"].is_null(), "no lvm snapshot at all is late too");
    let text = f.run(&["check", "--max-age", "postgres/*=26h"], b"");
    assert!(text.text().contains("LATE postgres/a"), "{}", text.text());
    let bad = f.run(&["check", "--max-age", "postgres/*"], b"");
    assert_eq!(bad.code, 2, "bad usage");
    assert!(bad.stderr.contains("NAME_GLOB=DURATION"), "{}", bad.stderr);
}
