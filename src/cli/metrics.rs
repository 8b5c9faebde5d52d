//! `--metrics-file PATH` and `--metrics-push URL`: what monitoring needs to notice a backup
//! that failed or stopped, in the Prometheus text format (encoded by `prometheus-client`).
//!
//! The file is shared by every run that names it (several CronJobs, several databases in one
//! job): each run reads the series already there, replaces its own (keyed by metric and
//! labels) and writes the whole file again atomically, as node exporter's textfile collector
//! requires. The push sends the same text to a Pushgateway with an HTTP PUT.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, anyhow};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The metrics this program writes, with their help text; series of other names in the file
/// are dropped (the file is ours).
const METRICS: &[(&str, &str)] = &[
    ("repo_backup_last_run_timestamp_seconds", "When the last backup of the name ended."),
    (
        "repo_backup_last_success_timestamp_seconds",
        "When the last successful backup of the name ended.",
    ),
    ("repo_backup_exit_status", "Exit status of the last backup of the name (0 = success)."),
    ("repo_backup_duration_seconds", "Duration of the last successful backup of the name."),
    ("repo_backup_read_bytes", "Bytes read by the last successful backup of the name."),
    ("repo_backup_added_bytes", "New data (before compression) in the last successful backup."),
    ("repo_backup_stored_bytes", "Bytes written to the repository by the last successful backup."),
    ("repo_backup_files", "Files in the last successful tree backup of the name."),
    ("repo_repository_size_bytes", "Size of the repository's packs."),
    ("repo_repository_snapshots", "Snapshots in the repository."),
    ("repo_check_last_run_timestamp_seconds", "When the last check ended."),
    ("repo_check_exit_status", "Exit status of the last check (0 ok, 4 damage, 5 late)."),
];

/// Series of one run: (metric, labels) → value.
#[derive(Clone, Default)]
pub struct Series(BTreeMap<(String, Labels), f64>);

impl Series {
    pub fn set(&mut self, metric: &str, labels: &[(&str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.0.insert((metric.to_string(), labels), value);
    }

    /// Encodes every series in the Prometheus text format.
    pub fn encode(&self) -> anyhow::Result<String> {
        let mut registry = Registry::default();
        for (name, help) in METRICS {
            let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            let mut any = false;
            for ((m, labels), v) in &self.0 {
                if m == name {
                    family.get_or_create(labels).set(*v);
                    any = true;
                }
            }
            if any {
                registry.register(*name, *help, family);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .map_err(|e| anyhow!("encoding metrics: {e}"))?;
        Ok(out)
    }

    /// Takes in the series of a file this program wrote (lines `name{labels} value`); lines it
    /// does not understand are left out.
    fn merge_text(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((key, v)) = parse_line(line)
                && METRICS.iter().any(|(n, _)| *n == key.0)
            {
                self.0.entry(key).or_insert(v);
            }
        }
    }
}

fn parse_line(line: &str) -> Option<((String, Labels), f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head.to_string(), vec![]),
        Some((n, rest)) => (n.to_string(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(((name, labels), value))
}

fn parse_labels(mut s: &str) -> Option<Labels> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (k, rest) = s.split_once("=\"")?;
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                (_, c) => v.push(c),
            }
        };
        out.push((k.trim_start_matches(',').to_string(), v));
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// What the command of this run recorded (a backup's statistics, a check's verdict); the
/// main function adds exit status and times and writes it out.
pub static RUN: std::sync::Mutex<Option<Series>> = std::sync::Mutex::new(None);

/// Records a successful backup of `name`.
pub fn record_backup(name: &str, s: &repo::repo::BackupStats, seconds: f64, files: Option<u64>) {
    let mut guard = RUN.lock().unwrap_or_else(|p| p.into_inner());
    let run = guard.get_or_insert_with(Series::default);
    let l = [("name", name)];
    run.set("repo_backup_last_success_timestamp_seconds", &l, now());
    run.set("repo_backup_duration_seconds", &l, seconds);
    run.set("repo_backup_read_bytes", &l, s.bytes_read as f64);
    run.set("repo_backup_added_bytes", &l, s.new_bytes as f64);
    run.set("repo_backup_stored_bytes", &l, s.bytes_written as f64);
    if let Some(f) = files {
        run.set("repo_backup_files", &l, f as f64);
    }
}

fn now() -> f64 {
    repo::repo::lease::now_secs() as f64
}

/// The series of this run: what the command recorded plus its exit status, the backup name
/// or check it concerns, and the repository's size and snapshot count when it is open.
pub async fn finish(
    command: Option<(&str, &str)>,
    code: i32,
    repo: Option<&repo::repo::Repository>,
) -> Series {
    let mut run = RUN.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
    match command {
        Some(("backup", name)) => {
            run.set("repo_backup_last_run_timestamp_seconds", &[("name", name)], now());
            run.set("repo_backup_exit_status", &[("name", name)], code as f64);
        }
        Some((_, location)) => {
            run.set("repo_check_last_run_timestamp_seconds", &[("repository", location)], now());
            run.set("repo_check_exit_status", &[("repository", location)], code as f64);
        }
        None => {}
    }
    if let Some(r) = repo {
        let l = r.location();
        let data = r.backend().list(repo::repo::paths::DATA_DIR).await;
        let snaps = r.backend().list(repo::repo::paths::SNAPSHOTS_DIR).await;
        if let (Ok(data), Ok(snaps)) = (data, snaps) {
            let size: u64 = data.iter().map(|o| o.size).sum();
            run.set("repo_repository_size_bytes", &[("repository", &l)], size as f64);
            run.set("repo_repository_snapshots", &[("repository", &l)], snaps.len() as f64);
        }
    }
    run
}

/// Writes `run` into the file at `path`, keeping the other series already there.
pub fn write_file(path: &Path, run: Series) -> anyhow::Result<()> {
    // runs that finish together (several CronJobs on one node) take turns: without the lock
    // one could overwrite the other's failure with an older success
    let lock_path = path.with_file_name(format!(
        ".{}.lock",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor this function owns; released when `lock` closes
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", lock_path.display()));
    }
    let mut all = run;
    match std::fs::read_to_string(path) {
        Ok(old) => all.merge_text(&old),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let text = all.encode()?;
    repo::fsutil::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing metrics to {}", path.display()))
}

/// Sends `run` to a Pushgateway (`URL` such as http://pushgateway:9091/metrics/job/repo).
pub async fn push(url: &str, run: &Series) -> anyhow::Result<()> {
    let body = run.encode()?;
    let resp = reqwest::Client::new()
        .put(url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(body)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("pushing metrics to {url}"))?;
    if !resp.status().is_success() {
        return Err(anyhow!("pushing metrics to {url}: HTTP {}", resp.status()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_output_parses_back_and_merges() {
        let mut a = Series::default();
        a.set("repo_backup_exit_status", &[("name", "postgres/a \"x\"")], 0.0);
        a.set("repo_repository_snapshots", &[("repository", "/r")], 12.0);
        let text = a.encode().unwrap();
        let mut b = Series::default();
        b.set("repo_backup_exit_status", &[("name", "postgres/b")], 1.0);
        b.merge_text(&text);
        assert_eq!(b.0.len(), 3, "{text}");
        let again = b.encode().unwrap();
        assert!(again.contains("repo_backup_exit_status{name=\"postgres/b\"} 1"), "{again}");
        assert!(again.contains("repo_repository_snapshots{repository=\"/r\"} 12"), "{again}");
        assert!(again.contains(r#"name="postgres/a \"x\"""#), "{again}");
    }
}
