//! forget and prune: retention over forty days, space freed, safety with running backups
//! (leases, condemned packs, resurrection), and prune stopped at every write point.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn day(d: u32) -> String {
    // day 1 = 2026-01-01
    if d <= 31 {
        format!("2026-01-{d:02}T02:00:00Z")
    } else {
        format!("2026-02-{:02}T02:00:00Z", d - 31)
    }
}

/// Day d's dump: a shared base plus 100 kB of its own.
fn dump(d: u32) -> Vec<u8> {
    let mut v = noise(400_000, 1);
    v.extend(noise(100_000, 1000 + d as u64));
    v
}

fn snapshots(f: &Fixture) -> Vec<Value> {
    f.run(&["--json", "snapshots"], b"").ok().json().as_array().unwrap().clone()
}

#[test]
fn forty_days_keep_daily_7_weekly_4_then_prune_frees_the_space() {
    let f = Fixture::with_init(&["--pack-size", "262144"]);
    for d in 1..=40 {
        f.run(
            &[
                "backup",
                "--stdin",
                "--name",
                "postgres/db",
                "--time",
                &day(d),
                "--tag",
                &format!("d{d}"),
            ],
            &dump(d),
        )
        .ok();
    }
    let before = f.repo_bytes("data");
    let dry = f
        .run(&["--json", "forget", "--keep-daily", "7", "--keep-weekly", "4", "--dry-run"], b"")
        .ok()
        .json();
    assert_eq!(dry["removed"], 31);
    assert_eq!(snapshots(&f).len(), 40, "a dry run removes nothing");
    let r = f
        .run(&["--json", "forget", "--keep-daily", "7", "--keep-weekly", "4", "--prune"], b"")
        .ok();
    // two JSON documents: the forget report, then the prune report
    let text = r.text();
    let mut docs = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let forget = docs.next().unwrap().unwrap();
    let prune = docs.next().unwrap().unwrap();
    let reasons: BTreeMap<String, Vec<String>> = forget["groups"][0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["time"].as_str().unwrap().to_string(),
                e["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    // 2026-02-09 is a Monday: daily keeps Feb 3..9; weekly keeps Feb 9, Feb 8 (Sunday of the
    // previous ISO week), Feb 1 and Jan 25
    let want: Vec<String> = [25, 32, 34, 35, 36, 37, 38, 39, 40].iter().map(|d| day(*d)).collect();
    assert_eq!(reasons.keys().cloned().collect::<Vec<_>>(), want);
    assert_eq!(reasons[&day(40)], vec!["daily", "weekly"]);
    assert_eq!(reasons[&day(25)], vec!["weekly"]);
    let left: Vec<String> =
        snapshots(&f).iter().map(|s| s["time"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, want);
    let after = f.repo_bytes("data");
    assert!(prune["bytes_freed"].as_u64().unwrap() > 0);
    // each removed day had 100 kB of its own; chunks that kept days store deltas against stay
    // (the report says how many bytes), everything else is freed. Only days 25 and 32 follow
    // a removed day, and chains are at most four deep: at most four removed dumps each.
    let held = prune["delta_base_bytes"].as_u64().unwrap();
    assert!(held <= 8 * dump(1).len() as u64, "{held} bytes held as delta bases");
    assert!(before - after + held > 31 * 90_000, "freed {} of {before}", before - after);
    for s in snapshots(&f) {
        let d: u32 = s["tags"][0].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(f.restore(s["short_id"].as_str().unwrap()), dump(d), "day {d}");
    }
    let c = f.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(c["ok"], true, "{c}");
    assert!(f.files("prune").is_empty() && f.files("locks").is_empty());
}

fn write_lease(f: &Fixture, kind: &str, age_secs: i64) -> std::path::PathBuf {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64;
    let p = f.repo().join("locks").join(format!("{kind}-00000000deadbeef-{}", now - age_secs));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"RLCK\x01\x00\x00\x00\x00\x00\x00").unwrap();
    p
}

#[test]
fn a_running_backup_delays_deletion_and_is_never_broken() {
    let f = Fixture::with_init(&["--pack-size", "131072"]);
    let old = noise(500_000, 5);
    f.backup("db", &old);
    f.backup("db", &noise(300_000, 6));
    let lease = write_lease(&f, "backup", 0); // a backup that started before the prune
    f.run(&["forget", "--keep-last", "1"], b"").ok();
    let p = f.run(&["--json", "prune"], b"").ok().json();
    assert_eq!(p["records_waiting"], 1, "{p}");
    assert_eq!(p["packs_deleted"], 0, "{p}");
    assert!(p["packs_condemned"].as_u64().unwrap() > 0);
    // a backup now must not deduplicate against the condemned packs: it stores them again
    let r = f.run(&["--json", "backup", "--stdin", "--name", "db2"], &old).ok().json();
    assert!(r["new_chunks"].as_u64().unwrap() > 0, "{r}");
    // the running backup ends; the next prune deletes, and everything restores
    std::fs::remove_file(lease).unwrap();
    let p = f.run(&["--json", "prune"], b"").ok().json();
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(f.run(&["restore", "latest", "--name", "db2"], b"").ok().stdout, old);
    assert_eq!(f.run(&["--json", "check", "--read-data"], b"").ok().json()["ok"], true);
}

#[test]
fn expired_leases_do_not_block_and_a_second_prune_is_refused() {
    let f = Fixture::with_init(&["--pack-size", "131072"]);
    f.backup("db", &noise(300_000, 8));
    f.backup("db", &noise(300_000, 9));
    write_lease(&f, "backup", 3 * 3600); // a backup killed hours ago
    f.run(&["forget", "--keep-last", "1"], b"").ok();
    let p = f.run(&["--json", "prune"], b"").ok().json();
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    assert!(f.files("locks").is_empty(), "expired leases are cleaned up");
    let l = write_lease(&f, "prune", 0);
    let r = f.run(&["prune"], b"");
    assert_eq!(r.code, 11, "{}", r.stderr);
    assert!(r.stderr.contains("another prune is running"), "{}", r.stderr);
    std::fs::remove_file(l).unwrap();
}

/// A process killed while writing leaves its temporary file behind, which nothing lists: prune
/// removes those untouched for a day (a dry run only counts them) and leaves younger ones,
/// whose writer may still be running.
#[test]
fn prune_removes_temporary_files_abandoned_a_day_ago() {
    let f = Fixture::with_init(&[]);
    let d = noise(100_000, 3);
    f.backup("db", &d);
    let day = std::time::Duration::from_secs(24 * 3600);
    let pack_dir = f.repo().join("data").join("00");
    let old = [pack_dir.join(".tmp-00112233aabbccdd"), f.repo().join(".tmp-8899aabbccddeeff")];
    leave_temp_file(&old[0], 5000, 2 * day);
    leave_temp_file(&old[1], 300, day + std::time::Duration::from_secs(60));
    let young = pack_dir.join(".tmp-0123456789abcdef");
    leave_temp_file(&young, 4000, day - std::time::Duration::from_secs(600));
    let dry = f.run(&["--json", "prune", "--dry-run"], b"").ok().json();
    assert_eq!(
        (dry["abandoned_files"].as_u64(), dry["abandoned_bytes"].as_u64()),
        (Some(2), Some(5300))
    );
    assert!(old.iter().all(|p| p.exists()), "a dry run removes nothing");
    let p = f.run(&["--json", "prune"], b"").ok().json();
    assert_eq!(
        (p["abandoned_files"].as_u64(), p["abandoned_bytes"].as_u64()),
        (Some(2), Some(5300))
    );
    assert!(old.iter().all(|p| !p.exists()), "abandoned files are removed");
    assert!(young.exists(), "a write younger than a day may still be running");
    assert_eq!(f.restore("latest"), d);
    let text = f.run(&["prune"], b"").ok().text();
    assert!(!text.contains("temporary files"), "{text}");
}

/// Lease names are written by whoever can write `locks/`: a time at either end of the range
/// (a forged name, a broken clock) is judged, not an arithmetic overflow.
#[test]
fn lease_names_with_extreme_times_are_judged_without_overflow() {
    let f = Fixture::with_init(&[]);
    f.backup("db", &noise(100_000, 3));
    let locks = f.repo().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let ancient = locks.join(format!("prune-00000000deadbeef-{}", i64::MIN));
    std::fs::write(&ancient, b"RLCK\x01\x00\x00\x00\x00\x00\x00").unwrap();
    let r = f.run(&["prune"], b"");
    assert_eq!(r.code, 0, "a lease refreshed at the start of time is long dead: {}", r.stderr);
    assert!(!ancient.exists(), "and it is cleaned up");
    let future = locks.join(format!("prune-00000000deadbeef-{}", i64::MAX));
    std::fs::write(&future, b"RLCK\x01\x00\x00\x00\x00\x00\x00").unwrap();
    let r = f.run(&["prune"], b"");
    assert_eq!(r.code, 11, "a lease dated in the future is live: {}", r.stderr);
    assert!(r.stderr.contains("another prune is running"), "{}", r.stderr);
}

#[test]
fn backups_and_prunes_in_loops_every_committed_snapshot_restores() {
    let f = Fixture::with_init(&["--pack-size", "131072"]);
    let repo = f.repo();
    let cache2 = f.dir.path().join("cache2");
    let pw = f.password.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..8u64 {
            let mut c = std::process::Command::new(BIN);
            c.args(["-q", "backup", "--stdin", "--name", "db", "--tag", &format!("s{i}")])
                .env("REPO_REPOSITORY", &repo)
                .env("REPO_PASSWORD", &pw)
                .env("REPO_CACHE_DIR", &cache2);
            let mut d = noise(300_000, 50); // shared with every other backup
            d.extend(noise(200_000, 60 + i));
            let r = run_with_input(c, &d);
            assert_eq!(r.code, 0, "backup {i} failed while prunes ran: {}", r.stderr);
        }
    });
    for _ in 0..6 {
        let _ = f.run(&["-q", "forget", "--keep-last", "3"], b""); // may find nothing yet
        let r = f.run(&["prune"], b"");
        assert!(r.code == 0 || r.code == 11, "{}", r.stderr);
    }
    writer.join().unwrap();
    f.run(&["prune"], b"").ok();
    for s in snapshots(&f) {
        let i: u64 = s["tags"][0].as_str().unwrap()[1..].parse().unwrap();
        let mut d = noise(300_000, 50);
        d.extend(noise(200_000, 60 + i));
        assert_eq!(f.restore(s["short_id"].as_str().unwrap()), d, "snapshot s{i}");
    }
    assert_eq!(f.run(&["--json", "check", "--read-data"], b"").ok().json()["ok"], true);
}

/// The reported failure: `repo restore latest | slow consumer` while another shell runs
/// `repo forget --keep-last 1 && repo prune --max-unused 0`. The restore is held on a full
/// pipe while the prune repacks the snapshot it reads; it must still deliver every byte.
#[test]
fn restore_into_a_slow_consumer_survives_forget_and_a_repacking_prune() {
    use std::io::Read;
    let f = Fixture::with_init(&["--pack-size", "131072", "--chunk-avg", "4096"]);
    // the older dump shares every other block with the kept one, so packs are partly used;
    // 4.8 MB kept: far more than the restore fetches ahead (8 groups of at most one 128 KiB
    // pack) and the pipe holds
    let mut old = Vec::new();
    let mut kept = Vec::new();
    for i in 0..600u64 {
        let block = noise(8000, i);
        old.extend(&block);
        old.extend(noise(8000, 10_000 + i));
        kept.extend(&block);
    }
    f.backup("db", &old);
    f.backup("db", &kept);
    let mut restore = f.cmd(&["restore", "latest", "--name", "db"]);
    restore.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = restore.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    // the consumer reads a little, then stalls while the prune runs
    let mut got = vec![0u8; 4096];
    out.read_exact(&mut got).unwrap();
    f.run(&["forget", "--keep-last", "1", "--name", "db"], b"").ok();
    let p = f.run(&["--json", "prune", "--max-unused", "0"], b"").ok().json();
    assert!(p["packs_repacked"].as_u64().unwrap() > 0, "{p}");
    out.read_to_end(&mut got).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(got == kept, "the restore delivered {} of {} bytes", got.len(), kept.len());
    assert_eq!(p["records_waiting"], 1, "the restore's lease held the sweep: {p}");
    // the restore has ended: the next prune frees the space, and everything still restores
    let p = f.run(&["--json", "prune", "--max-unused", "0"], b"").ok().json();
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(f.restore("latest"), kept);
    assert_eq!(f.run(&["--json", "check", "--read-data"], b"").ok().json()["ok"], true);
    assert!(f.files("locks").is_empty(), "every lease was removed: {:?}", f.files("locks"));
}

/// Forty small backups leave forty index files; a prune with nothing to delete still rewrites
/// them into one, every snapshot still restores, and a second prune leaves them alone.
#[test]
fn prune_consolidates_many_small_index_files() {
    let f = Fixture::new();
    let mut ids = vec![];
    for d in 1..=40 {
        ids.push((f.backup("db", &dump(d)), dump(d)));
    }
    assert_eq!(f.files("index").len(), 40);
    let r = f.run(&["--json", "prune"], b"").ok().json();
    assert_eq!(
        (r["index_consolidated"].as_bool(), r["packs_condemned"].as_u64()),
        (Some(true), Some(0)),
        "{r}"
    );
    assert_eq!(
        (r["index_files"].as_u64(), r["index_files_written"].as_u64()),
        (Some(40), Some(1)),
        "{r}"
    );
    assert_eq!(f.files("index").len(), 1, "{r}");
    for (id, data) in &ids {
        assert!(f.restore(id) == *data, "snapshot {id} after consolidation");
    }
    f.run(&["check", "--read-data"], b"").ok();
    let again = f.run(&["--json", "prune"], b"").ok().json();
    assert_eq!(again["index_consolidated"].as_bool(), Some(false), "{again}");
    assert_eq!(again["index_files_written"].as_u64(), Some(0), "{again}");
}

/// `forget latest --name a` removed the newest snapshot of any name (the id path ignored the
/// filter), here b's, and with --prune its data.
#[test]
fn forget_latest_with_a_name_removes_that_names_newest_only() {
    let f = Fixture::with_init(&[]);
    let a = f.backup("a", &noise(20_000, 1));
    let b = f.backup("b", &noise(20_000, 2));
    f.run(&["forget", "latest", "--name", "a"], b"").ok();
    let left: Vec<String> =
        snapshots(&f).iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, vec![b], "a's snapshot {a} should be the one removed");
    // an id that names a snapshot outside the filter is not removed either
    let r = f.run(&["forget", &left[0][..8], "--name", "a"], b"");
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 1);
    // found in an audit: two selectors of one snapshot were counted as two removals
    let r = f.run(&["--json", "forget", "latest", &left[0][..8]], b"").ok().json();
    assert_eq!(r["removed"], 1, "{r}");
    assert_eq!(f.snapshot_count(), 0);
}
