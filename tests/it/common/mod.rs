//! Helpers for tests that run the real `repo` binary ([`engine`]: for tests that drive the
//! library; [`servers`]: the S3, SFTP and WebDAV servers of the system tier).

pub mod engine;
#[cfg(feature = "system-tests")]
pub mod servers;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_repo");

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub password: String,
    /// The repository URL when it is not the local directory `repo()`.
    pub url: Option<String>,
}

pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Fixture {
    /// An initialised encrypted repository (cheap KDF settings for speed).
    pub fn new() -> Fixture {
        let f = Fixture::empty();
        f.run(&["init", "--kdf-memory", "1024"], b"").ok();
        f
    }
    pub fn with_init(args: &[&str]) -> Fixture {
        let f = Fixture::empty();
        let mut a = vec!["init", "--kdf-memory", "1024"];
        a.extend_from_slice(args);
        f.run(&a, b"").ok();
        f
    }
    pub fn empty() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            password: "correct horse".into(),
            url: None,
        }
    }
    /// An initialised repository at `url` (any backend).
    #[cfg(feature = "system-tests")]
    pub fn at(url: &str) -> Fixture {
        let f = Fixture { url: Some(url.into()), ..Fixture::empty() };
        f.run(&["init", "--kdf-memory", "1024"], b"").ok();
        f
    }
    /// The repository's URL: `url`, or the local directory.
    pub fn location(&self) -> String {
        self.url.clone().unwrap_or_else(|| self.repo().display().to_string())
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("REPO_REPOSITORY", self.location())
            .env("AWS_ACCESS_KEY_ID", "repo-test")
            .env("AWS_SECRET_ACCESS_KEY", "repo-test-secret")
            .env("REPO_PASSWORD", &self.password)
            .env("REPO_CACHE_DIR", self.cache())
            .env_remove("REPO_PASSWORD_FILE");
        c
    }
    /// Runs with `input` on standard input.
    pub fn run(&self, args: &[&str], input: &[u8]) -> Run {
        run_with_input(self.cmd(args), input)
    }
    pub fn backup(&self, name: &str, data: &[u8]) -> String {
        let r = self.run(&["--json", "backup", "--stdin", "--name", name], data).ok();
        r.json()["snapshot"]["id"].as_str().expect("id").to_string()
    }
    pub fn restore(&self, sel: &str) -> Vec<u8> {
        self.run(&["restore", sel], b"").ok().stdout
    }
    pub fn snapshot_count(&self) -> usize {
        self.run(&["--json", "snapshots"], b"").ok().json().as_array().expect("array").len()
    }
    pub fn files(&self, dir: &str) -> Vec<PathBuf> {
        let mut v = vec![];
        walk(&self.repo().join(dir), &mut v);
        v.sort();
        v
    }
    pub fn repo_bytes(&self, dir: &str) -> u64 {
        self.files(dir).iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
    }
}

pub fn run_with_input(mut c: Command, input: &[u8]) -> Run {
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn repo");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = feeder.join();
    Run::from(out)
}

/// Every file below `dir`.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![];
    walk(dir, &mut v);
    v
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// Deterministic incompressible test data (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `dirs` directories `d000`… under `root`, each with `per_dir` one-line files `f0000`…
/// holding "file D I\n".
pub fn small_file_tree(root: &std::path::Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        for i in 0..per_dir {
            std::fs::write(dir.join(format!("f{i:04}")), format!("file {d} {i}\n")).unwrap();
        }
    }
}

/// Writes an abandoned temporary file (as a killed process leaves one) last touched `age` ago.
pub fn leave_temp_file(path: &std::path::Path, len: usize, age: std::time::Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![7u8; len]).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - age).unwrap();
}
