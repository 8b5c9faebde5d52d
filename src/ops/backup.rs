//! `repo backup --stdin` and command mode `repo backup -- CMD ARGS...`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use super::SnapshotInfo;
use crate::repo::{
    BackupStats, Progress, RepoError, Repository, Result, SnapshotMeta, backup_stream,
};

/// Where the bytes of a stream backup come from, and what must succeed before it is committed.
pub enum Source {
    /// Read from this process's standard input.
    Stdin,
    /// Run this command and read its standard output; its standard error passes through.
    Command(Vec<String>),
    /// Read standard input as a gzip stream and store it decompressed (`--gunzip`).
    StdinGunzip,
    /// Read from `input` (`import`: a file, decompressed as needed).
    Reader(Box<dyn Read + Send>),
    /// Read `input`, written by `producer` (a restore from another repository, for `copy`);
    /// the snapshot is committed only if the producer finished successfully.
    Piped {
        /// The stream to store.
        input: Box<dyn Read + Send>,
        /// The task writing `input`; the snapshot is committed only if it succeeds.
        producer: tokio::task::JoinHandle<Result<()>>,
    },
}

/// What a stream backup stored (JSON output).
#[derive(Debug, serde::Serialize)]
pub struct BackupReport {
    /// The snapshot committed.
    pub snapshot: SnapshotInfo,
    /// Advice about the input (compressed data that deduplicates poorly).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Totals of the backup (flattened into the report).
    #[serde(flatten)]
    pub stats: BackupStats,
    /// Wall-clock duration of the backup, seconds.
    pub seconds: f64,
}

/// Quotes a command line for messages and the snapshot record, with the passwords of
/// connection strings replaced by `***` ([`super::streams::redact_password`]).
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| super::streams::redact_password(a))
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first bytes of the input, kept by [`super::sniff::Sniff`].
type SniffHead = Arc<std::sync::Mutex<Vec<u8>>>;
/// Runs after the input ended; the snapshot is committed only if it succeeds.
type Gate<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

/// Runs a backup. The repository must have been opened with [`crate::repo::Access::Backup`]:
/// its lease was written before the prune records were read, is kept fresh while the backup
/// runs, and is checked before the snapshot is committed (`format-spec/prune.md`).
pub async fn run(
    repo: Arc<Repository>,
    source: Source,
    mut meta: SnapshotMeta,
    progress: Arc<dyn Progress>,
) -> Result<BackupReport> {
    let start = Instant::now();
    // What to read, what its first bytes were (for the compressed-input advice), and the
    // check that must pass before the snapshot is committed.
    let (input, head, gate): (Box<dyn Read + Send>, Option<SniffHead>, Gate) = match source {
        Source::Stdin => {
            let (input, head) = super::sniff::Sniff::new(std::io::stdin());
            (Box::new(input), Some(head), Box::pin(async { Ok(()) }))
        }
        Source::StdinGunzip => {
            let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::io::stdin(),
            ));
            let (input, head) = super::sniff::Sniff::new(gz);
            (Box::new(input), Some(head), Box::pin(async { Ok(()) }))
        }
        Source::Reader(input) => (input, None, Box::pin(async { Ok(()) })),
        Source::Piped { input, producer } => {
            let gate = async move { producer.await.map_err(RepoError::from)? };
            (input, None, Box::pin(gate))
        }
        Source::Command(argv) => {
            let cmd = command_line(&argv);
            let prog = argv.first().ok_or_else(|| RepoError::CommandStart {
                command: String::new(),
                source: std::io::Error::other("empty command"),
            })?;
            let mut child = Command::new(prog)
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| RepoError::CommandStart { command: cmd.clone(), source: e })?;
            let (out, head) = match child.stdout.take() {
                Some(o) => super::sniff::Sniff::new(o),
                None => {
                    let source = std::io::Error::other("no standard output to read");
                    return Err(RepoError::CommandStart { command: cmd.clone(), source });
                }
            };
            meta.command = cmd.clone();
            let gate = async move {
                let status = tokio::task::spawn_blocking(move || child.wait())
                    .await
                    .map_err(RepoError::from)?
                    .map_err(|e| RepoError::CommandStart { command: cmd.clone(), source: e })?;
                if status.success() {
                    Ok(())
                } else {
                    let status = match (
                        status.code(),
                        std::os::unix::process::ExitStatusExt::signal(&status),
                    ) {
                        (Some(c), _) => format!("exit status {c}"),
                        (None, Some(s)) => format!("killed by signal {s}"),
                        _ => status.to_string(),
                    };
                    Err(RepoError::CommandFailed { command: cmd, status })
                }
            };
            (Box::new(out), Some(head), Box::pin(gate))
        }
    };
    let (id, snap, stats) = backup_stream(repo, input, meta, progress, gate).await?;
    let warnings = head
        .and_then(|h| super::sniff::advice(&h.lock().unwrap_or_else(|p| p.into_inner())))
        .into_iter()
        .collect();
    Ok(BackupReport {
        snapshot: SnapshotInfo::new(&id, &snap),
        warnings,
        stats,
        seconds: start.elapsed().as_secs_f64(),
    })
}
