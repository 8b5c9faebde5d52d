//! One snapshot per database server: `repo backup --name postgres/prod --stream
//! globals.sql='pg_dumpall --globals-only' --stream fnb-admin.dump='pg_dump -Fc -Z0 fnb-admin'`
//! (or `--pg-databases URL`, which lists the databases itself).
//!
//! Each command's output is stored as one regular file of a snapshot of kind `Streams` (a
//! catalog like a tree's, `format-spec/snapshot.md`), chunked with the dump chunker and
//! delta-encoded against the same stream of the previous snapshot of the name. The snapshot is
//! committed only if every command exits 0; the first failure is named and ends the backup.
//! Up to `jobs` commands run at once, each read and chunked by a thread of its own; their
//! batches go through the one pipeline of the snapshot as they arrive.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::SnapshotInfo;
use crate::format::snapshot::SnapshotKind;
use crate::format::tree::{Content, Entry, FLAG_LISTS, Kind, catalog_header};
use crate::repo::delta::Predecessor;
use crate::repo::{
    BackupStats, ChunkSink, NoProgress, Progress, RepoError, Repository, Result, SnapshotFilter,
    SnapshotMeta, StreamMsg, chunk_batches, list_snapshots,
};

/// How a stream's command is given.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamCommand {
    /// A shell command line, run with `sh -c`.
    Shell(String),
    /// A program and its arguments, run directly.
    Argv(Vec<String>),
}

impl StreamCommand {
    /// The command as reports, errors and the snapshot record show it: passwords in
    /// connection strings are replaced by `***`.
    fn display(&self) -> String {
        match self {
            StreamCommand::Shell(s) => redact_password(s),
            StreamCommand::Argv(a) => super::backup::command_line(a),
        }
    }
    fn command(&self) -> Command {
        match self {
            StreamCommand::Shell(s) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(s);
                c
            }
            StreamCommand::Argv(a) => {
                let (prog, args) = a.split_first().map_or(("", &[][..]), |(p, r)| (p, r));
                let mut c = Command::new(prog);
                c.args(args);
                c
            }
        }
    }
}

/// One stream of a server snapshot: the file name it is stored (and restored) under, and the
/// command whose standard output it is.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSpec {
    /// The stream's file name in the snapshot: one path component, e.g. `globals.sql`.
    pub file: String,
    /// The command whose standard output the stream is.
    pub command: StreamCommand,
}

/// Why a `--stream` argument does not parse.
#[derive(Debug, thiserror::Error)]
pub enum StreamSpecError {
    /// Not of the form `FILE=COMMAND`, or the command is empty.
    #[error("{0:?}: expected FILE=COMMAND, such as globals.sql='pg_dumpall --globals-only'")]
    Form(String),
    /// The file name is not one plain path component.
    #[error("{0:?}: a stream's file name is one plain name (no '/', not '.' or '..')")]
    FileName(String),
}

/// Checks a stream file name: one path component.
pub fn check_file_name(f: &str) -> std::result::Result<(), StreamSpecError> {
    if f.is_empty() || f == "." || f == ".." || f.contains('/') || f.contains('\0') {
        return Err(StreamSpecError::FileName(redact_password(f)));
    }
    Ok(())
}

impl FromStr for StreamSpec {
    type Err = StreamSpecError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let form = || StreamSpecError::Form(redact_password(s));
        let (file, cmd) = s.split_once('=').ok_or_else(form)?;
        if cmd.trim().is_empty() {
            return Err(form());
        }
        check_file_name(file)?;
        Ok(StreamSpec { file: file.into(), command: StreamCommand::Shell(cmd.into()) })
    }
}

/// `--pg-databases URL`: the connection string for database `db` (a `postgres://` URI gets
/// its path replaced, a `key=value` string gets `dbname=`).
pub fn with_dbname(url: &str, db: &str) -> String {
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (main, query) = match rest.split_once('?') {
                Some((m, q)) => (m, format!("?{q}")),
                None => (rest, String::new()),
            };
            let authority = main.split('/').next().unwrap_or("");
            let enc: String = db
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            return format!("{scheme}{authority}/{enc}{query}");
        }
    }
    format!("{url} dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `text` with the password of every libpq connection string in it replaced by `***`: the
/// `user:password@` of a `postgres://` URI and the value of `password=` (a key=value
/// string's keyword or a URI's query parameter).
pub fn redact_password(text: &str) -> String {
    let mut out = text.to_string();
    for scheme in ["postgresql://", "postgres://"] {
        let mut from = 0;
        while let Some(at) = out[from..].find(scheme) {
            let start = from + at + scheme.len();
            // the user information ends at the last @ before the path (a password may hold
            // a ? or &, and a shell word ends at a space or quote)
            let end = out[start..].find(['/', ' ', '\'', '"']).map_or(out.len(), |e| start + e);
            if let Some(amp) = out[start..end].rfind('@')
                && let Some(colon) = out[start..start + amp].find(':')
            {
                out.replace_range(start + colon + 1..start + amp, "***");
            }
            from = start;
        }
    }
    // password=…, password = …, PGPASSWORD=… (any case; ASCII lowercasing keeps offsets)
    let mut from = 0;
    loop {
        let lower = out.to_ascii_lowercase();
        let Some(at) = lower[from..].find("password") else { break };
        let mut v = from + at + "password".len();
        let skip_spaces = |mut i: usize| {
            while out.as_bytes().get(i) == Some(&b' ') {
                i += 1;
            }
            i
        };
        v = skip_spaces(v);
        if out.as_bytes().get(v) != Some(&b'=') {
            from = v;
            continue;
        }
        let start = skip_spaces(v + 1);
        let rest = &out[start..];
        let len = if let Some(quoted) = rest.strip_prefix('\'') {
            // a quoted key=value: up to the closing quote that is not escaped
            let mut escaped = false;
            let close = quoted.char_indices().find(|(_, c)| {
                let end = *c == '\'' && !escaped;
                escaped = *c == '\\' && !escaped;
                end
            });
            close.map_or(rest.len(), |(i, _)| i + 2)
        } else {
            rest.find([' ', '&', '\'', '"']).unwrap_or(rest.len())
        };
        out.replace_range(start..start + len, "***");
        from = start + 3;
    }
    out
}

/// The streams `--pg-databases URL` stands for: the globals, then every database `pg_dumpall`
/// dumps (those that accept connections, templates with content such as `template1`
/// included; not one left invalid by an interrupted `DROP DATABASE`, which cannot be
/// dumped), each as a `pg_dump -Fc -Z0` custom archive.
pub fn pg_streams(url: &str) -> Result<Vec<StreamSpec>> {
    let sql =
        "SELECT datname FROM pg_database WHERE datallowconn AND datconnlimit <> -2 ORDER BY 1";
    let psql = format!("psql -Atc {sql:?} {}", redact_password(url));
    let out = Command::new("psql")
        .args(["-X", "-At", "-c", sql, "-d", url])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| RepoError::CommandStart { command: "psql".into(), source: e })?;
    if !out.status.success() {
        return Err(RepoError::CommandFailed { command: psql, status: out.status.to_string() });
    }
    let mut specs = vec![StreamSpec {
        file: "globals.sql".into(),
        command: StreamCommand::Argv(vec![
            "pg_dumpall".into(),
            "--globals-only".into(),
            "-d".into(),
            url.into(),
        ]),
    }];
    for db in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
        let file = format!("{db}.dump");
        if check_file_name(&file).is_err() {
            return Err(RepoError::Source {
                path: db.into(),
                reason: "a database name with '/' cannot be a stream file name".into(),
            });
        }
        specs.push(StreamSpec {
            file,
            command: StreamCommand::Argv(vec![
                "pg_dump".into(),
                "-Fc".into(),
                "-Z0".into(),
                "-d".into(),
                with_dbname(url, db),
            ]),
        });
    }
    Ok(specs)
}

/// One stored stream, for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StreamInfo {
    /// The stream's file name in the snapshot.
    pub file: String,
    /// The command as shown to the operator (with `--pg-databases`, it includes the connection
    /// string).
    pub command: String,
    /// Bytes of the command's output.
    pub bytes: u64,
}

/// What a server snapshot stored (JSON output).
#[derive(Debug, serde::Serialize)]
pub struct StreamsReport {
    /// The snapshot committed.
    pub snapshot: SnapshotInfo,
    /// Every stream, in the order given.
    pub streams: Vec<StreamInfo>,
    /// Totals of the backup (flattened into the report).
    #[serde(flatten)]
    pub stats: BackupStats,
    /// Wall-clock duration of the backup, seconds.
    pub seconds: f64,
}

/// The content lists of the previous snapshot's streams of the name, by file name (for delta
/// bases; each stream's chunk sequence is loaded only when that stream is stored).
async fn previous_streams(
    repo: &Arc<Repository>,
    name: &str,
) -> (String, HashMap<String, Vec<crate::format::Id>>) {
    let mut out = HashMap::new();
    let Ok(all) = list_snapshots(repo, &SnapshotFilter::default()).await else {
        return (String::new(), out);
    };
    let Some((id, snap)) =
        all.into_iter().rfind(|(_, s)| s.name == name && s.kind == SnapshotKind::Streams)
    else {
        return (String::new(), out);
    };
    let label = super::snapshot_label(&id, &snap);
    let Ok(entries) = crate::repo::tree::read_entries(repo, &snap, &label).await else {
        return (label, out);
    };
    for e in entries {
        if let Content::Lists(lists) = e.content {
            out.insert(String::from_utf8_lossy(&e.path).into_owned(), lists);
        }
    }
    (label, out)
}

/// Runs one stream's command and sends its output to the pipeline in batches; the byte
/// count, or why it failed (a command that does not exit 0, or the pipeline gone).
fn read_stream(
    i: usize,
    spec: &StreamSpec,
    repo: &Repository,
    tx: &crossbeam_channel::Sender<StreamMsg>,
) -> Result<u64> {
    let shown = format!("{}: {}", spec.file, spec.command.display());
    let mut child = spec
        .command
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| RepoError::CommandStart { command: shown.clone(), source: e })?;
    let out = child.stdout.take().ok_or_else(|| RepoError::CommandStart {
        command: shown.clone(),
        source: std::io::Error::other("no standard output to read"),
    })?;
    let mut bytes = 0u64;
    for batch in chunk_batches(out, repo, repo.chunker()) {
        let sent = match batch {
            Ok(b) => {
                bytes += b.iter().map(|c| c.len() as u64).sum::<u64>();
                tx.send(StreamMsg::Batch(i, b)).map_err(|_| RepoError::Interrupted)
            }
            Err(e) => Err(RepoError::Input(e)),
        };
        if let Err(e) = sent {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    }
    let status =
        child.wait().map_err(|e| RepoError::CommandStart { command: shown.clone(), source: e })?;
    if !status.success() {
        return Err(RepoError::CommandFailed { command: shown, status: status.to_string() });
    }
    Ok(bytes)
}

// Long (about 105 lines): the reader threads, their stop flag and the one pipeline they feed
// are set up and torn down together; apart, their lifetimes would be harder to follow.
/// Runs every stream's command, at most `jobs` at a time, and commits one snapshot of kind
/// `Streams` if all succeed. The streams' batches go through one pipeline as they arrive.
pub async fn run(
    repo: Arc<Repository>,
    specs: Vec<StreamSpec>,
    meta: SnapshotMeta,
    jobs: usize,
    progress: Arc<dyn Progress>,
) -> Result<StreamsReport> {
    let start = Instant::now();
    let mut seen = std::collections::HashSet::new();
    for s in &specs {
        if !seen.insert(s.file.clone()) {
            return Err(RepoError::Source {
                path: s.file.clone(),
                reason: "two streams with the same file name".into(),
            });
        }
    }
    let (prev_label, mut prev) = previous_streams(&repo, &meta.name).await;
    let rt = tokio::runtime::Handle::current();
    let infos: Arc<Mutex<Vec<StreamInfo>>> = Arc::default();
    let infos2 = infos.clone();
    let mtime_ns = meta.time_ns;
    let jobs = jobs.max(1);
    let readers_repo = repo.clone();
    let body = move |sink: &mut ChunkSink| {
        let preds: Vec<Option<Predecessor>> = specs
            .iter()
            .map(|spec| {
                prev.remove(&spec.file).and_then(|lists| {
                    rt.block_on(Predecessor::from_lists(sink.repo(), &lists, &prev_label)).ok()
                })
            })
            .collect();
        // a batch waiting per reader, as for a single stream (`repo::writer`): with 1 MiB
        // chunks a batch holds up to 8 MiB
        let (tx, rx) = crossbeam_channel::bounded::<StreamMsg>(jobs);
        // `jobs` slots: a reader runs its command only while it holds one
        let (slot_tx, slot_rx) = crossbeam_channel::bounded::<()>(jobs);
        for _ in 0..jobs {
            let _ = slot_tx.send(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = specs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, spec)| {
                let (tx, slot_tx, slot_rx) = (tx.clone(), slot_tx.clone(), slot_rx.clone());
                let (repo, stop) = (readers_repo.clone(), stop.clone());
                std::thread::spawn(move || {
                    if slot_rx.recv().is_err() {
                        return;
                    }
                    // after a failure: pass the slot on, or the readers still waiting for one
                    // (each holding a sender, so the channel never closes) wait for good
                    if stop.load(Ordering::SeqCst) {
                        let _ = slot_tx.send(());
                        return;
                    }
                    let r = read_stream(i, &spec, &repo, &tx);
                    let _ = tx.send(StreamMsg::End(i, r));
                    let _ = slot_tx.send(());
                })
            })
            .collect();
        drop(tx);
        let stored = sink.store_interleaved(preds, rx, &*progress);
        // after a failure no further command starts; the running ones are stopped by their
        // next send to the pipeline, which is gone
        stop.store(true, Ordering::SeqCst);
        drop(slot_tx);
        for r in readers {
            let _ = r.join();
        }
        let stored = stored?;
        let mut catalog = catalog_header();
        let mut size = 0u64;
        // SAFETY: getuid and getgid cannot fail and touch no memory
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        for (spec, (lists, bytes)) in specs.iter().zip(stored) {
            size += bytes;
            let e = Entry {
                kind: Some(Kind::File),
                flags: FLAG_LISTS,
                mode: 0o644,
                uid,
                gid,
                mtime_ns,
                size: bytes,
                path: spec.file.as_bytes().to_vec(),
                content: Content::Lists(lists),
                ..Default::default()
            };
            e.encode_into(&mut catalog)
                .map_err(|err| RepoError::format(format!("stream {}", spec.file), err))?;
            infos2.lock().unwrap_or_else(|p| p.into_inner()).push(StreamInfo {
                file: spec.file.clone(),
                command: spec.command.display(),
                bytes,
            });
        }
        let lists =
            sink.store_stream(&catalog[..], sink.repo().chunker().for_catalogs(), &NoProgress)?;
        Ok(crate::repo::Content { lists, size, chunks: specs.len() as u64 })
    };
    let (id, snap, stats) =
        super::tree::commit_tree(repo, SnapshotKind::Streams, meta, body, async { Ok(()) }).await?;
    let streams = std::mem::take(&mut *infos.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(StreamsReport {
        snapshot: SnapshotInfo::new(&id, &snap),
        streams,
        stats,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_arguments_and_database_urls() {
        let s: StreamSpec = "globals.sql=pg_dumpall --globals-only".parse().unwrap();
        assert_eq!(s.file, "globals.sql");
        assert_eq!(s.command, StreamCommand::Shell("pg_dumpall --globals-only".into()));
        assert!(matches!("nocommand".parse::<StreamSpec>(), Err(StreamSpecError::Form(_))));
        assert!(matches!("a/b=true".parse::<StreamSpec>(), Err(StreamSpecError::FileName(_))));
        assert!(matches!("..=true".parse::<StreamSpec>(), Err(StreamSpecError::FileName(_))));
        assert_eq!(
            with_dbname("postgres://u@db:5432/postgres?sslmode=require", "fnb-admin"),
            "postgres://u@db:5432/fnb-admin?sslmode=require"
        );
        assert_eq!(with_dbname("postgresql://db", "a b"), "postgresql://db/a%20b");
        assert_eq!(with_dbname("host=/tmp port=5", "o'x"), "host=/tmp port=5 dbname='o\\'x'");
    }

    /// Found in review: `--pg-databases` put the connection string, password included, into
    /// the JSON report, the snapshot record and error messages.
    #[test]
    fn passwords_in_connection_strings_are_not_shown() {
        let cases = [
            (
                "postgres://app:s3cr3t@db:5432/x?sslmode=require",
                "postgres://app:***@db:5432/x?sslmode=require",
            ),
            ("postgresql://app@db/x", "postgresql://app@db/x"),
            (
                "postgresql://db/x?user=u&password=s3cr3t&sslmode=require",
                "postgresql://db/x?user=u&password=***&sslmode=require",
            ),
            ("host=db password=s3cr3t user=x", "host=db password=*** user=x"),
            ("host=db password='s3 \\'cr3t' user=x", "host=db password=*** user=x"),
            (
                "pg_dumpall -d 'postgres://a:s3cr3t@h/db' | gzip",
                "pg_dumpall -d 'postgres://a:***@h/db' | gzip",
            ),
        ];
        for (given, shown) in cases {
            assert_eq!(redact_password(given), shown, "{given}");
        }
        let c = StreamCommand::Argv(vec![
            "pg_dump".into(),
            "-d".into(),
            with_dbname("postgres://app:s3cr3t@db/postgres", "shop"),
        ]);
        assert!(!c.display().contains("s3cr3t"), "{}", c.display());
        // a --stream argument that does not parse is echoed without its password
        let e = "pg_dump postgres://u:s3cr3t@h/db?sslmode=require".parse::<StreamSpec>();
        assert!(!e.unwrap_err().to_string().contains("s3cr3t"));
    }
}
