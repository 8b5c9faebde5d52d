//! Delta blobs through the real binary: an hourly dump whose rows changed here and there is
//! stored as deltas against the chunks they replaced; restores, check, prune and copy keep
//! working on them.

mod common;
use common::*;

/// An "hourly dump": 2 MB with `changes` small edits spread over it (a changed row each).
fn dump(changes: u64) -> Vec<u8> {
    let mut v = noise(2_000_000, 42);
    for i in 0..changes {
        let at = ((i * 7919 + 13) * 104_729 % 1_990_000) as usize;
        v[at..at + 8].copy_from_slice(&(i + 1).to_le_bytes());
    }
    v
}

fn backup(f: &Fixture, data: &[u8]) -> serde_json::Value {
    f.run(&["--json", "backup", "--stdin", "--name", "postgres/db"], data).ok().json()
}

#[test]
fn changed_rows_are_stored_as_deltas_and_restore_byte_exact() {
    let f = Fixture::new();
    let first = backup(&f, &dump(0));
    assert_eq!(first["delta_chunks"], 0, "nothing to be a delta of yet: {first}");
    let second = backup(&f, &dump(40));
    let new = second["new_chunks"].as_u64().unwrap();
    let deltas = second["delta_chunks"].as_u64().unwrap();
    assert!(new >= 20 && deltas * 10 >= new * 9, "most new chunks are deltas: {second}");
    // 40 changed rows cost a few kB, not 40 whole 16 KiB chunks (640 kB of noise)
    let stored = second["stored_bytes"].as_u64().unwrap();
    assert!(stored < 60_000, "{second}");
    assert_eq!(f.restore("latest"), dump(40));
    let all = f.run(&["--json", "snapshots"], b"").ok().json();
    let oldest = all[0]["short_id"].as_str().unwrap().to_string();
    assert_eq!(f.restore(&oldest), dump(0));
    let c = f.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(c["ok"], true, "{c}");
    // a fresh cache (a new pod) reads the deltas the same way
    std::fs::remove_dir_all(f.cache()).unwrap();
    assert_eq!(f.restore("latest"), dump(40));
}

#[test]
fn forgetting_the_snapshot_of_the_bases_keeps_them_for_the_deltas() {
    let f = Fixture::with_init(&["--pack-size", "262144"]);
    backup(&f, &dump(0));
    let second = backup(&f, &dump(30));
    assert!(second["delta_chunks"].as_u64().unwrap() > 0, "{second}");
    f.run(&["forget", "--keep-last", "1"], b"").ok();
    let p = f.run(&["--json", "prune", "--max-unused", "0"], b"").ok().json();
    assert!(p["packs_deleted"].as_u64().unwrap() + p["packs_repacked"].as_u64().unwrap() > 0);
    assert_eq!(f.restore("latest"), dump(30));
    let c = f.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(c["ok"], true, "{c}");
    // and the next hour deltas against what is kept
    let third = backup(&f, &dump(35));
    assert!(third["delta_chunks"].as_u64().unwrap() > 0, "{third}");
    assert_eq!(f.restore("latest"), dump(35));
}

#[test]
fn a_damaged_base_is_blamed_for_the_snapshot_of_its_deltas() {
    let f = Fixture::new();
    backup(&f, &dump(0));
    let before: std::collections::BTreeSet<_> = f.files("data").into_iter().collect();
    let second = backup(&f, &dump(40));
    assert!(second["delta_chunks"].as_u64().unwrap() > 0, "{second}");
    // damage the first hour's pack: it holds the bases of the second hour's deltas
    let first_pack = before.iter().next().unwrap();
    let mut b = std::fs::read(first_pack).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(first_pack, b).unwrap();
    let r = f.run(&["--json", "check", "--read-data"], b"");
    assert_eq!(r.code, 4, "{}", r.stderr);
    let c = r.json();
    let hurt: Vec<String> = c["damage"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["snapshots"].as_array().unwrap().iter())
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let second_id = second["snapshot"]["short_id"].as_str().unwrap();
    assert!(hurt.iter().any(|h| h.starts_with(second_id)), "{c}");
    let r = f.run(&["restore", "latest"], b"");
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("data/"), "the error names the damaged pack: {}", r.stderr);
}

#[test]
fn copy_re_encodes_deltas_in_the_destination() {
    let f = Fixture::new();
    backup(&f, &dump(0));
    backup(&f, &dump(25));
    let to = f.dir.path().join("staging");
    let mut init = f.cmd(&["init", "--kdf-memory", "1024"]);
    init.env("REPO_REPOSITORY", &to);
    run_with_input(init, b"").ok();
    let to_s = to.display().to_string();
    f.run(&["copy", "--to", &to_s], b"").ok();
    let mut r = f.cmd(&["restore", "latest"]);
    r.env("REPO_REPOSITORY", &to);
    assert_eq!(run_with_input(r, b"").ok().stdout, dump(25));
    let mut c = f.cmd(&["--json", "check", "--read-data"]);
    c.env("REPO_REPOSITORY", &to);
    assert_eq!(run_with_input(c, b"").ok().json()["ok"], true);
}
