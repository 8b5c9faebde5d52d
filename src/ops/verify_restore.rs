//! `check --verify-restore pg`: proves that dump snapshots restore, with the real pg_restore.
//!
//! A custom-format dump (it starts with `PGDMP`) is streamed into `pg_restore --file=/dev/null`,
//! which parses the table of contents (as `--list` does) and then every data block, so a
//! truncated or damaged dump fails even where `--list` alone would pass (a dump written to a
//! pipe keeps its table of contents at the front). A plain SQL dump must end as pg_dump's and
//! pg_dumpall's output ends (`-- PostgreSQL database dump complete` or `... cluster dump
//! complete`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::format::snapshot::SnapshotKind;

use crate::repo::{
    NoProgress, RepoError, Repository, Result, SnapshotFilter, restore_stream, select_snapshots,
};

/// Which snapshots `check --verify-restore` restores, and with what.
#[derive(Clone, Debug, Default)]
pub struct VerifyRestoreOptions {
    /// Which snapshots (by name and tags) are restored; file trees are skipped.
    pub filter: SnapshotFilter,
    /// Only the newest K snapshots of each name.
    pub latest: Option<usize>,
    /// The pg_restore program (default: found on PATH or under /usr/lib/postgresql).
    pub pg_restore: Option<PathBuf>,
}

/// Whether one dump restored: one per stream snapshot, one per stream of a server snapshot.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreVerdict {
    /// Short id of the snapshot.
    pub snapshot: String,
    /// The snapshot name; for a server snapshot's stream, `name/file`.
    pub name: String,
    /// "custom", "plain" or "unknown".
    pub format: &'static str,
    /// True if pg_restore read the whole custom archive, or the plain SQL ends as pg_dump's does.
    pub ok: bool,
    /// Bytes of the dump restored.
    pub bytes: u64,
    /// What failed (pg_restore's last error line, a truncated stream), or a short success note.
    pub message: String,
}

/// Finds pg_restore: PATH first, then the newest /usr/lib/postgresql/*/bin/pg_restore.
pub fn find_pg_restore() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join("pg_restore");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin/pg_restore"))
        .filter(|p| p.is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|b| b.parent())
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found.pop()
}

enum Mode {
    Undecided(Vec<u8>),
    Custom {
        child: Child,
        stdin: Option<ChildStdin>,
        stderr: Option<std::thread::JoinHandle<String>>,
    },
    /// The first bytes and the last bytes of a plain stream.
    Plain {
        head: Vec<u8>,
        tail: Vec<u8>,
    },
}

/// Bytes looked at before deciding the format.
const HEAD: usize = 64;

struct Sink {
    mode: Mode,
    bytes: u64,
    pg_restore: PathBuf,
    spawn_error: Option<String>,
}

const TAIL: usize = 4096;

impl Sink {
    fn decide(&mut self) {
        let Mode::Undecided(head) = &mut self.mode else { return };
        let head = std::mem::take(head);
        if head.starts_with(b"PGDMP") {
            let spawned = Command::new(&self.pg_restore)
                .arg("--file=/dev/null")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            match spawned {
                Ok(mut child) => {
                    let stdin = child.stdin.take();
                    let stderr = child.stderr.take().map(|mut e| {
                        std::thread::spawn(move || {
                            let mut s = String::new();
                            let _ = e.read_to_string(&mut s);
                            s
                        })
                    });
                    self.mode = Mode::Custom { child, stdin, stderr };
                    self.feed(&head);
                }
                Err(e) => {
                    self.spawn_error = Some(format!("{}: {e}", self.pg_restore.display()));
                    self.mode = Mode::Plain { head, tail: Vec::new() };
                }
            }
        } else {
            self.mode = Mode::Plain { head: head.clone(), tail: Vec::new() };
            self.feed(&head);
        }
    }

    fn feed(&mut self, buf: &[u8]) {
        match &mut self.mode {
            Mode::Undecided(h) => {
                h.extend_from_slice(buf);
                if h.len() >= HEAD {
                    self.decide();
                }
            }
            Mode::Custom { stdin, .. } => {
                // pg_restore quitting early (EPIPE) is judged by its exit status at the end
                if stdin.as_mut().is_some_and(|s| s.write_all(buf).is_err()) {
                    *stdin = None;
                }
            }
            Mode::Plain { tail, .. } => {
                tail.extend_from_slice(buf);
                if tail.len() > 2 * TAIL {
                    tail.drain(..tail.len() - TAIL);
                }
            }
        }
    }

    fn verdict(&mut self, restored: &Result<()>) -> (&'static str, bool, String) {
        if matches!(self.mode, Mode::Undecided(_)) {
            self.decide();
        }
        let failed_restore =
            restored.as_ref().err().map(|e| format!("the repository could not restore it: {e}"));
        match &mut self.mode {
            Mode::Custom { child, stdin, stderr } => {
                drop(stdin.take());
                let status = child.wait();
                let err = stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
                if let Some(m) = failed_restore {
                    return ("custom", false, m);
                }
                match status {
                    Ok(s) if s.success() => {
                        ("custom", true, "pg_restore read the whole archive".into())
                    }
                    Ok(s) => (
                        "custom",
                        false,
                        format!(
                            "pg_restore {s}: {}",
                            err.trim().lines().last().unwrap_or("no message")
                        ),
                    ),
                    Err(e) => ("custom", false, format!("pg_restore: {e}")),
                }
            }
            Mode::Plain { head, tail } => {
                if let Some(e) = &self.spawn_error {
                    return ("custom", false, format!("cannot run pg_restore: {e}"));
                }
                // pg_dump and pg_dumpall plain output begins "--\n-- PostgreSQL database (cluster
                // )dump"
                if !String::from_utf8_lossy(head).contains("-- PostgreSQL database") {
                    return ("unknown", false, "not a pg_dump stream".into());
                }
                if let Some(m) = failed_restore {
                    return ("plain", false, m);
                }
                let t = String::from_utf8_lossy(tail);
                if t.contains("-- PostgreSQL database dump complete")
                    || t.contains("-- PostgreSQL database cluster dump complete")
                {
                    ("plain", true, "complete plain SQL dump".into())
                } else {
                    (
                        "plain",
                        false,
                        "the SQL stream does not end as pg_dump's output ends (truncated?)".into(),
                    )
                }
            }
            Mode::Undecided(_) => ("unknown", false, "not a pg_dump stream".into()),
        }
    }
}

#[derive(Clone)]
struct SharedSink(Arc<Mutex<Sink>>);

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.bytes += buf.len() as u64;
        s.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Long (about 85 lines): one loop over the dumps with the pg_restore process, the restore
// feeding it and the verdict for each.
/// Restores the selected stream and server snapshots into pg_restore (custom dumps) or a tail check
/// (plain SQL), one verdict per dump. A failure is a verdict, not an error; only a missing
/// pg_restore stops the whole run.
pub async fn verify_restore(
    repo: Arc<Repository>,
    opts: &VerifyRestoreOptions,
) -> Result<Vec<RestoreVerdict>> {
    let pg_restore = opts.pg_restore.clone().or_else(find_pg_restore).ok_or_else(|| {
        RepoError::ToolNotFound {
            tool: "pg_restore",
            hint: "install PostgreSQL client tools or pass --pg-restore",
        }
    })?;
    // file trees hold no dump to hand to pg_restore; server snapshots hold one per stream.
    // An unreadable snapshot is skipped here: the check reports it as damage (exit 4)
    let snaps: Vec<_> = select_snapshots(&repo, &opts.filter, opts.latest, false)
        .await?
        .into_iter()
        .filter(|(_, s)| matches!(s.kind, SnapshotKind::Stream | SnapshotKind::Streams))
        .collect();
    let mut out = Vec::new();
    for (id, snap) in snaps {
        let short = id.short();
        let streams: Vec<Option<String>> = if snap.kind == SnapshotKind::Streams {
            let label = crate::ops::snapshot_label(&id, &snap);
            match crate::repo::tree::read_entries(&repo, &snap, &label).await {
                Ok(entries) => entries
                    .into_iter()
                    .filter(|e| e.kind() == crate::format::tree::Kind::File)
                    .map(|e| Some(String::from_utf8_lossy(&e.path).into_owned()))
                    .collect(),
                // a damaged catalog fails this snapshot's verdict, not the whole check
                Err(e) => {
                    out.push(RestoreVerdict {
                        snapshot: short.clone(),
                        name: snap.name.clone(),
                        format: "unknown",
                        ok: false,
                        bytes: 0,
                        message: e.to_string(),
                    });
                    continue;
                }
            }
        } else {
            vec![None]
        };
        for file in streams {
            let name = match &file {
                Some(f) => format!("{}/{f}", snap.name),
                None => snap.name.clone(),
            };
            let label = format!("{short} {name}");
            let sink = SharedSink(Arc::new(Mutex::new(Sink {
                mode: Mode::Undecided(Vec::new()),
                bytes: 0,
                pg_restore: pg_restore.clone(),
                spawn_error: None,
            })));
            let restored = match &file {
                None => {
                    restore_stream(repo.clone(), &snap, &label, sink.clone(), Arc::new(NoProgress))
                        .await
                        .map(|_| ())
                }
                Some(f) => crate::ops::tree::restore::run_file(
                    repo.clone(),
                    &id,
                    &snap,
                    std::path::Path::new(f),
                    sink.clone(),
                    Arc::new(NoProgress),
                )
                .await
                .map(|_| ()),
            };
            let mut s = sink.0.lock().unwrap_or_else(|p| p.into_inner());
            let (format, ok, message) = s.verdict(&restored);
            out.push(RestoreVerdict {
                snapshot: short.clone(),
                name,
                format,
                ok,
                bytes: s.bytes,
                message,
            });
        }
    }
    Ok(out)
}
