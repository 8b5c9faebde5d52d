//! `repo backup --stdin` and command mode `repo backup -- CMD ARGS...`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use super::SnapshotInfo;
use crate::format::lock::LeaseKind;
use crate::repo::lease::{LEASE_EXPIRY_SECS, Lease, condemned_packs};
use crate::repo::{
    BackupStats, Progress, RepoError, Repository, Result, SnapshotMeta, backup_stream,
};

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
    Piped { input: Box<dyn Read + Send>, producer: tokio::task::JoinHandle<Result<()>> },
}

#[derive(Debug, serde::Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotInfo,
    /// Advice about the input (compressed data that deduplicates poorly).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub stats: BackupStats,
    pub seconds: f64,
}

/// Quotes a command line for messages and the snapshot record.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a backup under a lease (see `format-spec/prune.md`): the lease is written before the
/// prune records are read, kept fresh while the backup runs, and checked before the snapshot is
/// committed; it is removed at the end, also on failure.
pub async fn run(
    repo: Arc<Repository>,
    source: Source,
    meta: SnapshotMeta,
    progress: Arc<dyn Progress>,
) -> Result<BackupReport> {
    under_lease(&repo.clone(), async move |lease| {
        run_leased(repo, source, meta, progress, lease).await
    })
    .await
}

/// Runs `f` under a backup lease: written first (so before `f` reads the prune records),
/// refreshed while `f` runs, and removed at the end, also on failure.
pub(crate) async fn under_lease<T>(
    repo: &Repository,
    f: impl AsyncFnOnce(&Lease) -> Result<T>,
) -> Result<T> {
    let lease = Lease::acquire(repo.backend.clone(), LeaseKind::Backup).await?;
    let keep = lease.keep_alive();
    let r = f(&lease).await;
    keep.abort();
    lease.release().await;
    r
}

pub(crate) async fn lease_still_fresh(lease: &Lease) -> Result<()> {
    if lease.fresh() {
        return Ok(());
    }
    Err(RepoError::Aborted(format!(
        "this backup could not refresh its lease for nearly {} minutes (paused or cut off from the repository); a prune may have removed data it deduplicated against, so no snapshot was committed",
        LEASE_EXPIRY_SECS / 60
    )))
}

/// The first bytes of the input, kept by [`super::sniff::Sniff`].
type SniffHead = Arc<std::sync::Mutex<Vec<u8>>>;
/// Runs after the input ended; the snapshot is committed only if it succeeds.
type Gate<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

async fn run_leased(
    repo: Arc<Repository>,
    source: Source,
    mut meta: SnapshotMeta,
    progress: Arc<dyn Progress>,
    lease: &Lease,
) -> Result<BackupReport> {
    let start = Instant::now();
    let exclude = Arc::new(condemned_packs(&repo).await?);
    // What to read, what its first bytes were (for the compressed-input advice), and the
    // check that must pass before the snapshot is committed.
    let (input, head, gate): (Box<dyn Read + Send>, Option<SniffHead>, Gate) = match source {
        Source::Stdin => {
            let (input, head) = super::sniff::Sniff::new(std::io::stdin());
            (Box::new(input), Some(head), Box::pin(lease_still_fresh(lease)))
        }
        Source::StdinGunzip => {
            let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::io::stdin(),
            ));
            let (input, head) = super::sniff::Sniff::new(gz);
            (Box::new(input), Some(head), Box::pin(lease_still_fresh(lease)))
        }
        Source::Reader(input) => (input, None, Box::pin(lease_still_fresh(lease))),
        Source::Piped { input, producer } => {
            let gate = async move {
                producer.await.map_err(|e| RepoError::Internal(e.to_string()))??;
                lease_still_fresh(lease).await
            };
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
                None => return Err(RepoError::Internal("child has no stdout".into())),
            };
            meta.command = cmd.clone();
            let gate = async move {
                let status = tokio::task::spawn_blocking(move || child.wait())
                    .await
                    .map_err(|e| RepoError::Internal(e.to_string()))?
                    .map_err(|e| RepoError::CommandStart { command: cmd.clone(), source: e })?;
                if status.success() {
                    lease_still_fresh(lease).await
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
    let (id, snap, stats) = backup_stream(repo, input, meta, progress, exclude, gate).await?;
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
