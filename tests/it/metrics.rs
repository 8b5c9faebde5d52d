//! `--metrics-file` read back by the Prometheus text parser of the official Python client,
//! and `--metrics-push` received by an HTTP server on 127.0.0.1 that the test runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;

use crate::common::*;

/// Every sample of a metrics file: (name, labels as JSON, value), by prometheus_client's parser.
fn parse(path: &std::path::Path) -> Vec<(String, serde_json::Value, f64)> {
    let python = std::env::var("REPO_TEST_PYTHON")
        .expect("REPO_TEST_PYTHON (scripts/test.sh installs prometheus_client in its venv)");
    let script = "import json,sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\nprint(json.dumps([[s.name, s.labels, s.value] for f in p(open(sys.argv[1]).read()) for s in f.samples]))";
    let o = Command::new(python).args(["-c", script]).arg(path).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<(String, serde_json::Value, f64)> = serde_json::from_slice(&o.stdout).unwrap();
    v
}

fn value(samples: &[(String, serde_json::Value, f64)], name: &str, label: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.as_object().unwrap().values().any(|v| v == label))
        .map(|s| s.2)
}

#[test]
fn metrics_file_keeps_every_name_and_parses_as_prometheus_text() {
    let f = Fixture::new();
    let file = f.dir.path().join("repo.prom");
    let m = file.to_str().unwrap();
    f.run(&["--metrics-file", m, "backup", "--stdin", "--name", "postgres/a"], &noise(50_000, 1))
        .ok();
    f.run(&["--metrics-file", m, "backup", "--stdin", "--name", "postgres/b"], b"bbb").ok();
    let failed =
        f.run(&["--metrics-file", m, "backup", "--name", "postgres/c", "--", "false"], b"");
    assert_eq!(failed.code, 1);
    let late = f.run(&["--metrics-file", m, "check", "--max-age", "lvm/*=8d"], b"");
    assert_eq!(late.code, 5);
    let s = parse(&file);
    assert_eq!(value(&s, "repo_backup_exit_status", "postgres/a"), Some(0.0));
    assert_eq!(value(&s, "repo_backup_exit_status", "postgres/b"), Some(0.0));
    assert_eq!(value(&s, "repo_backup_exit_status", "postgres/c"), Some(1.0));
    assert_eq!(value(&s, "repo_backup_read_bytes", "postgres/a"), Some(50_000.0));
    assert!(value(&s, "repo_backup_last_success_timestamp_seconds", "postgres/c").is_none());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let t = value(&s, "repo_backup_last_success_timestamp_seconds", "postgres/a").unwrap();
    assert!((now.as_secs_f64() - t).abs() < 600.0, "{t}");
    let loc = f.location();
    assert_eq!(value(&s, "repo_check_exit_status", &loc), Some(5.0));
    assert_eq!(value(&s, "repo_repository_snapshots", &loc), Some(2.0));
    assert!(value(&s, "repo_repository_size_bytes", &loc).unwrap() > 50_000.0);
    // nothing else in the directory: the file was replaced atomically, no temporary left
    let names: Vec<_> =
        std::fs::read_dir(f.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| !n.to_string_lossy().contains("tmp")), "{names:?}");
}

#[test]
fn metrics_are_pushed_to_a_pushgateway() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        (request_line, String::from_utf8(body).unwrap())
    });
    let f = Fixture::new();
    let url = format!("http://127.0.0.1:{port}/metrics/job/repo");
    f.run(&["--metrics-push", &url, "backup", "--stdin", "--name", "postgres/a"], b"rows").ok();
    let (line, body) = server.join().unwrap();
    assert!(line.starts_with("PUT /metrics/job/repo "), "{line}");
    assert!(body.contains("repo_backup_exit_status{name=\"postgres/a\"} 0"), "{body}");
    assert!(body.contains("repo_backup_read_bytes{name=\"postgres/a\"} 4"), "{body}");
}

#[test]
fn a_pushgateway_that_is_down_is_a_one_line_error() {
    let f = Fixture::new();
    let r = f.run(
        &[
            "--metrics-push",
            "http://127.0.0.1:1/metrics/job/repo",
            "backup",
            "--stdin",
            "--name",
            "x",
        ],
        b"a",
    );
    assert!(r.stderr.contains("pushing metrics to http://127.0.0.1:1"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}
