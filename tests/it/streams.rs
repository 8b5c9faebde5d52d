//! Server snapshots with generated streams (no database needed): several commands at once
//! through one pipeline, each stream restored byte-exact, and a failing command that stops
//! the others and commits nothing.

use crate::common::*;

fn expected(cmd: &str) -> Vec<u8> {
    std::process::Command::new("sh").args(["-c", cmd]).output().unwrap().stdout
}

#[test]
fn streams_run_together_and_each_restores_byte_exact() {
    let f = Fixture::new();
    let cmds = [
        ("numbers.txt", "seq 1 400000"),
        ("noise.bin", "head -c 3000000 /dev/urandom"),
        ("empty.sql", "true"),
    ];
    let mut args: Vec<String> =
        ["--json", "backup", "--name", "gen/server", "--jobs", "3"].map(String::from).to_vec();
    for (file, cmd) in cmds {
        args.push("--stream".into());
        args.push(format!("{file}={cmd} | tee {}/{file}", f.dir.path().display()));
    }
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let r = f.run(&argv, b"").ok().json();
    assert_eq!(r["streams"].as_array().unwrap().len(), 3, "{r}");
    for (file, _) in cmds {
        let want = std::fs::read(f.dir.path().join(file)).unwrap();
        let got = f.run(&["restore", "latest", "--name", "gen/server", file], b"").ok().stdout;
        assert!(got == want, "{file}: {} vs {} bytes", got.len(), want.len());
    }
    assert_eq!(expected("seq 1 400000"), std::fs::read(f.dir.path().join("numbers.txt")).unwrap());
    let c = f.run(&["--json", "check", "--read-data"], b"").ok().json();
    assert_eq!(c["ok"], true, "{c}");
}

#[test]
fn a_failing_stream_stops_the_others_and_commits_nothing() {
    let f = Fixture::new();
    let t0 = std::time::Instant::now();
    let r = f.run(
        &[
            "backup",
            "--name",
            "gen/server",
            "--jobs",
            "2",
            "--stream",
            "slow.bin=yes slow | head -c 2000000000",
            "--stream",
            "bad.sql=echo partial; exit 3",
        ],
        b"",
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("bad.sql") && r.stderr.contains("no snapshot"), "{}", r.stderr);
    assert_eq!(f.snapshot_count(), 0);
    assert!(t0.elapsed().as_secs() < 60, "the slow stream was stopped: {:?}", t0.elapsed());
    assert!(f.files("locks").is_empty());
}

/// With more streams waiting than `--jobs`, a failure left the waiting readers blocked for
/// good: a reader that took a slot after the stop kept it, and the backup never exited.
#[test]
fn a_failing_stream_with_others_waiting_for_a_slot_ends_the_backup() {
    let f = Fixture::new();
    let mut args: Vec<String> =
        ["backup", "--name", "gen/server", "--jobs", "1"].map(String::from).to_vec();
    args.push("--stream".into());
    args.push("bad.sql=echo partial; exit 3".into());
    for i in 0..6 {
        args.push("--stream".into());
        args.push(format!("s{i}.txt=seq 1 1000"));
    }
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut child = f
        .cmd(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed().as_secs() > 60 {
            child.kill().unwrap();
            panic!("the backup did not end within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    assert_eq!(f.snapshot_count(), 0);
    assert!(f.files("locks").is_empty());
}
