//! Memory bounds under a real memory cgroup (v1, root): commands on a repository of about
//! 340,000 chunks run inside a 128 MiB limit, tree commands on 100,000 files inside 64 MiB.
//! Before check kept its index on disk, `check` alone needed 162 MB here (and 971 MB at
//! 1.85 M chunks), so it was OOM-killed.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// A memory cgroup with a hard limit, removed on drop.
struct MemCgroup {
    dir: PathBuf,
}

impl MemCgroup {
    fn new(limit: u64) -> MemCgroup {
        let root = PathBuf::from("/sys/fs/cgroup/memory");
        assert!(
            root.join("cgroup.procs").exists(),
            "the memory cgroup controller (v1) is not mounted at {}",
            root.display()
        );
        // one group per test: the tests of this file run in parallel in one process
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("repo-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e} (needs root)", dir.display()));
        let cg = MemCgroup { dir };
        cg.write("memory.limit_in_bytes", &limit.to_string());
        if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
            cg.write("memory.memsw.limit_in_bytes", &limit.to_string()); // no escape to swap
        }
        cg
    }
    fn write(&self, file: &str, v: &str) {
        std::fs::write(self.dir.join(file), v).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }
    /// OOM kills inside the group so far.
    fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ").map(|n| n.trim().parse().unwrap()))
            .unwrap_or(0)
    }
    /// Wraps `c` so that it runs inside the group: a shell joins it, then execs the command.
    fn wrap(&self, c: Command) -> Command {
        let mut w = Command::new("sh");
        w.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.dir.join("cgroup.procs"))
            .arg(c.get_program())
            .args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        w
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

const LIMIT: u64 = 128 << 20;

#[test]
fn check_prune_and_restore_of_340k_chunks_fit_in_128_mib() {
    // 1 KiB chunks: two 200 MiB streams are about 340,000 chunks (the fixture's small KDF:
    // the limit measures the commands rather than Argon2's 64 MiB)
    let f = Fixture::with_init(&["--chunk-avg", "1024"]);
    let a = f.backup("a", &noise(200 << 20, 1));
    f.backup("b", &noise(200 << 20, 2));
    let cg = MemCgroup::new(LIMIT);
    // the limit is real: a process that needs more than it is killed
    let hog = cg.wrap({
        let mut c = Command::new("python3");
        c.args(["-c", "x = bytearray(256 << 20); x[::4096] = b'x' * len(x[::4096])"]);
        c
    });
    let out = run_with_input(hog, b"");
    assert!(out.code != 0 && cg.oom_kills() >= 1, "the cgroup did not stop a 256 MiB process");
    let kills = cg.oom_kills();
    for args in [
        &["--json", "check"][..],
        &["--json", "check", "--read-data"],
        &["forget", &a, "--prune"],
        &["--json", "check"],
    ] {
        let r = run_with_input(cg.wrap(f.cmd(args)), b"");
        assert_eq!(r.code, 0, "{args:?} under {LIMIT} bytes: {}", r.stderr);
        assert_eq!(cg.oom_kills(), kills, "{args:?} was OOM-killed");
    }
    let c = f.run(&["--json", "check"], b"").ok().json();
    assert_eq!(c["ok"], true, "{c}");
    assert!(c["blobs"].as_u64().unwrap() > 150_000, "{c}");
    let restored = run_with_input(cg.wrap(f.cmd(&["restore", "latest", "--name", "b"])), b"");
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert!(restored.stdout == noise(200 << 20, 2), "restored bytes differ");
    assert_eq!(cg.oom_kills(), kills);
}

/// Tree commands on 100,000 small files inside a 64 MiB limit. Before catalogs were read as
/// a stream (and the parent's files found by a merge), the re-backup needed 106 MB here,
/// `restore` 131 MB and `export` 135 MB (release build, outside the cgroup), and all three
/// were OOM-killed inside it.
#[test]
fn tree_commands_on_100k_files_fit_in_64_mib() {
    const TREE_LIMIT: u64 = 64 << 20;
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    small_file_tree(src.path(), 100, 1000);
    let root = src.path().to_str().unwrap();
    f.run(&["backup", "--name", "t", "--root", root, "."], b"").ok();
    std::fs::write(src.path().join("d050/f0500"), b"changed\n").unwrap();
    let cg = MemCgroup::new(TREE_LIMIT);
    let hog = cg.wrap({
        let mut c = Command::new("python3");
        c.args(["-c", "x = bytearray(128 << 20); x[::4096] = b'x' * len(x[::4096])"]);
        c
    });
    assert!(run_with_input(hog, b"").code != 0 && cg.oom_kills() >= 1, "the limit is not real");
    let kills = cg.oom_kills();
    let (out, exp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (out_dir, exp_dir) = (out.path().to_str().unwrap(), exp.path().to_str().unwrap());
    let mut results = vec![];
    for args in [
        &["--json", "backup", "--name", "t", "--root", root, "."][..],
        &["ls", "latest", "--name", "t"],
        &["restore", "latest", "--name", "t", "--target", out_dir],
        &["export", "--name", "t", "--format", "zst", exp_dir],
    ] {
        let r = run_with_input(cg.wrap(f.cmd(args)), b"");
        assert_eq!(r.code, 0, "{args:?} under {TREE_LIMIT} bytes: {}", r.stderr);
        assert_eq!(cg.oom_kills(), kills, "{args:?} was OOM-killed");
        results.push(r);
    }
    let again = results[0].json();
    assert_eq!(
        (again["files_read"].as_u64(), again["files_unchanged"].as_u64()),
        (Some(1), Some(99_999)),
        "{again}"
    );
    assert_eq!(results[1].text().lines().count(), 100_000 + 100);
    assert_eq!(std::fs::read(out.path().join("d050/f0500")).unwrap(), b"changed\n");
    assert_eq!(std::fs::read(out.path().join("d099/f0999")).unwrap(), b"file 99 999\n");
    let restored = std::fs::read_dir(out.path().join("d042")).unwrap().count();
    assert_eq!(restored, 1000);
    let exported: Vec<_> = std::fs::read_dir(exp.path()).unwrap().flatten().collect();
    assert!(exported.iter().any(|e| e.file_name().to_string_lossy().ends_with(".tar.zst")));
}
