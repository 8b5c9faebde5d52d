//! Layer 5: arguments → options, reports → text or JSON, errors → one line and an exit code.
//!
//! Exit codes (documented in the README):
//! 0 success · 1 failure · 2 bad usage · 3 partial · 4 `check` found damage · 5 a backup is
//! late · 10 no repository at the location ·
//! 11 another prune is running · 12 wrong password · 130 interrupted (SIGINT/SIGTERM).
//! A closed standard output (`repo restore … | head`) counts as success.

/// A command line that parses but cannot be carried out as given (a value out of range, two
/// options that exclude each other): exit code 2, as for clap's own errors.
macro_rules! usage {
    ($($t:tt)*) => { anyhow::Error::new($crate::cli::Usage(format!($($t)*))) };
}

mod args;
mod metrics;
mod progress;
mod render;
mod tree;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Parser;

use args::{Cli, Cmd, Encryption};
use progress::Bar;
use repo::ops;
use repo::repo::{Access, InitOptions, RepoError, Repository, SnapshotMeta};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_DAMAGE: i32 = 4;
/// `check --max-age`: a name's newest snapshot is older than allowed (and no damage).
pub const EXIT_LATE: i32 = 5;
pub const EXIT_NO_REPOSITORY: i32 = 10;
pub const EXIT_LOCKED: i32 = 11;
pub const EXIT_WRONG_PASSWORD: i32 = 12;
pub const EXIT_INTERRUPTED: i32 = 130;
/// A tree backup finished, but some files vanished or could not be read.
pub const EXIT_PARTIAL: i32 = 3;
/// The command line parses but cannot be carried out as given.
pub const EXIT_USAGE: i32 = 2;

/// See [`usage!`].
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("repo: cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("repo: cannot install signal handlers: {e}");
                    return EXIT_FAILURE;
                }
            };
        let code = tokio::select! {
            r = run(&cli) => match r {
                Ok(code) => code,
                Err(e) => report_error(&e),
            },
            _ = tokio::signal::ctrl_c() => interrupted(),
            _ = term.recv() => interrupted(),
        };
        if (cli.metrics_file.is_some() || cli.metrics_push.is_some())
            && let Err(e) = write_metrics(&cli, code).await
        {
            eprintln!("repo: {e:#}");
        }
        close_all().await;
        code
    })
}

/// `--metrics-file` / `--metrics-push` after a backup or a check (other commands have none).
async fn write_metrics(cli: &Cli, code: i32) -> anyhow::Result<()> {
    let repo = OPENED.lock().unwrap_or_else(|p| p.into_inner()).first().cloned();
    // the repository's display location: never a URL's query string or credentials
    let location = repo.as_ref().map(|r| r.location()).unwrap_or_default();
    let command = match &cli.command {
        Cmd::Backup(a) => ("backup", a.name.as_str()),
        Cmd::Check(_) => ("check", location.as_str()),
        _ => return Ok(()),
    };
    let run = metrics::finish(Some(command), code, repo.as_deref()).await;
    if let Some(path) = &cli.metrics_file {
        metrics::write_file(path, run.clone())?;
    }
    if let Some(url) = &cli.metrics_push {
        metrics::push(url, &run).await?;
    }
    Ok(())
}

/// Repositories this process opened: their leases are removed when the command ends, also
/// after an error or an interrupt (a SIGKILLed process leaves leases that expire).
static OPENED: std::sync::Mutex<Vec<Arc<Repository>>> = std::sync::Mutex::new(Vec::new());

async fn close_all() {
    let opened = std::mem::take(&mut *OPENED.lock().unwrap_or_else(|p| p.into_inner()));
    for r in opened {
        r.close().await;
    }
}

fn interrupted() -> i32 {
    eprintln!("repo: interrupted; nothing was committed by the unfinished operation");
    EXIT_INTERRUPTED
}

/// One line naming the cause, and the exit code for it.
fn report_error(e: &anyhow::Error) -> i32 {
    let code = match e.downcast_ref::<RepoError>() {
        _ if e.downcast_ref::<Usage>().is_some() => EXIT_USAGE,
        Some(RepoError::NotARepository { .. }) => EXIT_NO_REPOSITORY,
        Some(RepoError::WrongPassword { .. }) => EXIT_WRONG_PASSWORD,
        Some(RepoError::LockConflict(_)) => EXIT_LOCKED,
        Some(RepoError::Interrupted) => EXIT_INTERRUPTED,
        Some(RepoError::Output(io)) if io.kind() == std::io::ErrorKind::BrokenPipe => {
            return EXIT_OK;
        }
        _ => EXIT_FAILURE,
    };
    // each cause once: many messages already include their source's text
    let mut chain: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !chain.last().is_some_and(|prev| prev.contains(&s)) {
            chain.push(s);
        }
    }
    eprintln!("repo: {}", chain.join(": "));
    code
}

fn password(cli: &Cli) -> anyhow::Result<Option<Vec<u8>>> {
    password_from("REPO_PASSWORD", cli.password_file.as_deref())
}

/// The password from `var`, else from the first line of `file`.
fn password_from(var: &str, file: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    if let Ok(p) = std::env::var(var) {
        return Ok(Some(p.into_bytes()));
    }
    match file {
        Some(f) => {
            let text = std::fs::read(f)
                .with_context(|| format!("reading password file {}", f.display()))?;
            let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some(line.to_vec()))
        }
        None => Ok(None),
    }
}

/// `init` refuses an empty password, naming where it came from: an empty Secret or a file
/// that starts with a blank line would otherwise encrypt the new repository under a password
/// anyone can guess. (Opening is not refused: a repository made so before keeps opening.)
fn refuse_empty_password(cli: &Cli, pw: Option<&[u8]>) -> anyhow::Result<()> {
    if pw.is_none_or(|p| !p.is_empty()) {
        return Ok(());
    }
    Err(match (std::env::var_os("REPO_PASSWORD"), &cli.password_file) {
        (Some(_), _) => anyhow!("REPO_PASSWORD is set but empty"),
        (None, Some(f)) => anyhow!("password file {}: its first line is empty", f.display()),
        (None, None) => anyhow!("the password is empty"),
    })
}

/// Asks for a password on the controlling terminal (not standard input, which may carry the
/// data to back up); `None` when there is no terminal (cron, a CronJob). With `confirm`, asks
/// twice and refuses two different entries or an empty one.
fn prompt_password(prompt: &str, confirm: bool) -> anyhow::Result<Option<Vec<u8>>> {
    let Ok(first) = rpassword::prompt_password(prompt) else { return Ok(None) };
    if confirm {
        if first.is_empty() {
            return Err(anyhow!("the password is empty"));
        }
        let again = rpassword::prompt_password("repeat the password: ")
            .map_err(|e| anyhow!("reading the password: {e}"))?;
        if again != first {
            return Err(anyhow!("the two passwords differ; nothing was created"));
        }
    }
    Ok(Some(first.into_bytes()))
}

fn repo_url(cli: &Cli) -> anyhow::Result<&str> {
    cli.repo
        .as_deref()
        .ok_or_else(|| anyhow!("no repository given: use -r/--repo or set REPO_REPOSITORY"))
}

/// Opens for a command whose first step lists the snapshots (backup and read access): the
/// listing overlaps the index download ([`Repository::open_with`]).
async fn open(cli: &Cli, access: Access) -> anyhow::Result<Arc<Repository>> {
    open_listing(cli, access, matches!(access, Access::Backup | Access::Read)).await
}

/// Opens, listing the snapshots meanwhile only if `list` is set.
async fn open_listing(cli: &Cli, access: Access, list: bool) -> anyhow::Result<Arc<Repository>> {
    let repo = open_keep_warnings(cli, access, list).await?;
    warnings(cli, &repo);
    Ok(repo)
}

/// Opens without printing the warnings gathered while opening (`check` reports them itself).
async fn open_keep_warnings(
    cli: &Cli,
    access: Access,
    list: bool,
) -> anyhow::Result<Arc<Repository>> {
    let backend = backend(cli, repo_url(cli)?)?;
    let pw = password(cli)?;
    open_at(cli, backend, pw.as_deref(), access, list).await
}

/// Opens the repository on `backend` (listing the snapshots meanwhile if `list` is set) and
/// registers it to be closed when the command ends.
async fn open_at(
    cli: &Cli,
    backend: Arc<dyn repo::backend::Backend>,
    password: Option<&[u8]>,
    access: Access,
    list: bool,
) -> anyhow::Result<Arc<Repository>> {
    let cache = || cli.cache_dir.clone();
    let opened = match Repository::open_with(backend.clone(), password, cache(), access, list).await
    {
        // no password given, but a person at a terminal can type one
        Err(RepoError::PasswordNeeded { location }) if password.is_none() => {
            match prompt_password(&format!("password for {location}: "), false)? {
                Some(pw) => {
                    Repository::open_with(backend, Some(&pw), cache(), access, list).await?
                }
                None => return Err(RepoError::PasswordNeeded { location }.into()),
            }
        }
        other => other?,
    };
    let repo = Arc::new(opened);
    OPENED.lock().unwrap_or_else(|p| p.into_inner()).push(repo.clone());
    Ok(repo)
}

/// The backend a URL names, with the upload limit applied when one is set.
fn backend(cli: &Cli, url: &str) -> anyhow::Result<Arc<dyn repo::backend::Backend>> {
    let b = repo::backend::from_url(url)?;
    Ok(match &cli.limit_upload {
        None => b,
        Some(rate) => {
            let rate = repo::backend::parse_rate(rate).map_err(|e| usage!("--limit-upload {e}"))?;
            let throttle = Arc::new(repo::backend::Throttle::new(rate));
            Arc::new(repo::backend::ThrottledBackend::new(b, throttle))
        }
    })
}

fn warnings(cli: &Cli, repo: &Repository) {
    for w in repo.index().take_warnings() {
        if !cli.quiet {
            eprintln!("repo: warning: {w}");
        }
    }
}

fn emit<T: serde::Serialize>(
    cli: &Cli,
    report: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    let text = if cli.json { serde_json::to_string(report)? } else { human(report) };
    if cli.json || !cli.quiet {
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{text}")
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
    }
    Ok(())
}

/// `--time`, or now. A time more than a day ahead is refused: such a snapshot would count as
/// the newest of its name for years (`latest`, `--keep-last`, `--max-age`).
fn parse_time(t: Option<&str>) -> anyhow::Result<i64> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let Some(s) = t else { return Ok(now) };
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .ok_or_else(|| usage!("--time {s:?}: not an RFC 3339 time such as 2026-02-14T02:00:00Z"))?;
    if t > now.saturating_add(86_400_000_000_000) {
        return Err(usage!("--time {s:?}: more than a day in the future"));
    }
    Ok(t)
}

fn backup_meta(a: &args::BackupArgs) -> anyhow::Result<SnapshotMeta> {
    Ok(SnapshotMeta {
        name: a.name.clone(),
        host: a
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        tags: a.tags.clone(),
        command: String::new(),
        time_ns: parse_time(a.time.as_deref())?,
    })
}

/// Hands each command to its function; each returns the exit code (the `EXIT_*` constants).
async fn run(cli: &Cli) -> anyhow::Result<i32> {
    let ok = |()| EXIT_OK;
    match &cli.command {
        Cmd::Init(a) => init(cli, a).await.map(ok),
        Cmd::Backup(a) if !a.streams.is_empty() || a.pg_databases.is_some() => {
            backup_streams(cli, a).await
        }
        Cmd::Backup(a) if !a.stdin && a.command.is_empty() => {
            let meta = backup_meta(a)?;
            tree::backup(cli, a, meta).await
        }
        Cmd::Backup(a) => backup_stream(cli, a).await.map(ok),
        Cmd::Snapshots(a) => snapshots(cli, a).await.map(ok),
        Cmd::Ls(a) => tree::ls(cli, a).await,
        Cmd::Restore(a) if a.target.is_some() || a.path.is_some() => tree::restore(cli, a).await,
        Cmd::Restore(a) => restore_stream(cli, a).await.map(ok),
        Cmd::Stats => stats(cli).await.map(ok),
        Cmd::Check(a) => check(cli, a).await,
        Cmd::Forget(a) => forget(cli, a).await.map(ok),
        Cmd::Prune(a) => prune(cli, a).await.map(ok),
        Cmd::Export(a) => export(cli, a).await.map(ok),
        Cmd::Import(a) => import(cli, a).await.map(ok),
        Cmd::Sync(a) => sync(cli, a).await.map(ok),
        Cmd::Copy(a) => copy(cli, a).await.map(ok),
        Cmd::Repair { what } => repair(cli, what).await.map(ok),
    }
}

/// `repo backup --stream FILE=CMD …` / `--pg-databases URL`: one snapshot of several streams.
async fn backup_streams(cli: &Cli, a: &args::BackupArgs) -> anyhow::Result<i32> {
    if !a.paths.is_empty() || !a.command.is_empty() {
        return Err(usage!("give either --stream / --pg-databases or PATHs / a command, not both"));
    }
    let mut specs = Vec::new();
    if let Some(url) = &a.pg_databases {
        specs.extend(ops::streams::pg_streams(url)?);
    }
    for s in &a.streams {
        specs.push(s.parse().map_err(|e| usage!("--stream {e}"))?);
    }
    let meta = backup_meta(a)?;
    let repo = open(cli, Access::Backup).await?;
    let bar = Bar::start("read", cli.progress_bars());
    let r = ops::streams::run(repo.clone(), specs, meta, a.jobs, bar.clone()).await;
    bar.finish();
    warnings(cli, &repo);
    let r = r?;
    metrics::record_backup(&a.name, &r.stats, r.seconds, Some(r.streams.len() as u64));
    emit(cli, &r, render::streams_backup)?;
    Ok(EXIT_OK)
}

fn parse_share(s: &str) -> anyhow::Result<f64> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| usage!("--max-unused {s:?}: expected a percentage such as 5%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(usage!("--max-unused {s:?}: must be between 0% and 100%"));
    }
    Ok(v / 100.0)
}

async fn forget(cli: &Cli, a: &args::ForgetArgs) -> anyhow::Result<()> {
    use ops::forget::policy::{Policy, parse_duration};
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within_ns: a
            .keep_within
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| usage!("--keep-within {e}"))?,
        tags: a.keep_tags.clone(),
    };
    let max_unused = parse_share(&a.max_unused)?;
    let access = if a.prune && !a.dry_run { Access::Prune } else { Access::Snapshots };
    let repo = open(cli, access).await?;
    let opts = ops::forget::ForgetOptions {
        policy,
        ids: a.snapshots.clone(),
        filter: a.filter.snapshots(),
        tz: a.tz,
        dry_run: a.dry_run,
    };
    let r = ops::forget::run(&repo, &opts).await?;
    emit(cli, &r, render::forget)?;
    if a.prune && !a.dry_run {
        let p = ops::prune::run(
            repo,
            &ops::prune::PruneOptions { dry_run: false, max_unused, ..Default::default() },
        )
        .await?;
        emit(cli, &p, render::prune)?;
    }
    Ok(())
}

async fn check(cli: &Cli, a: &args::CheckArgs) -> anyhow::Result<i32> {
    use ops::check::{CheckOptions, Subset};
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => Some(s.parse::<Subset>().map_err(|e| usage!("--read-data-subset {e}"))?),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let verify_restore = a.verify_restore.map(|_| ops::verify_restore::VerifyRestoreOptions {
        filter: a.filter.snapshots(),
        latest: a.latest,
        pg_restore: a.pg_restore.clone(),
    });
    let max_age = a
        .max_age
        .iter()
        .map(|m| m.parse().map_err(|e| usage!("--max-age {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // check lists the snapshot files itself
    let repo = open_keep_warnings(cli, Access::Read, false).await?;
    let r = ops::check::run(repo, &CheckOptions { read_data, verify_restore, max_age }).await?;
    emit(cli, &r, render::check)?;
    Ok(match (r.ok, r.late.is_empty()) {
        (false, _) => EXIT_DAMAGE,
        (true, false) => EXIT_LATE,
        (true, true) => EXIT_OK,
    })
}

/// `repo init`: a new repository (prompts for the password on a terminal).
async fn init(cli: &Cli, a: &args::InitArgs) -> anyhow::Result<()> {
    let backend = backend(cli, repo_url(cli)?)?;
    let encrypted = matches!(a.encryption, Encryption::Aes256Gcm);
    let pw = match password(cli)? {
        None if encrypted => prompt_password("password for the new repository: ", true)?,
        pw => pw,
    };
    if encrypted {
        refuse_empty_password(cli, pw.as_deref())?;
    }
    let mut o = InitOptions { encrypted, ..InitOptions::default() };
    if let Some(avg) = a.chunk_avg {
        o.chunk_avg = avg;
        o.chunk_min = avg / 4;
        o.chunk_max = avg.saturating_mul(4);
    }
    o.chunk_min = a.chunk_min.unwrap_or(o.chunk_min);
    o.chunk_max = a.chunk_max.unwrap_or(o.chunk_max);
    o.pack_target = a.pack_size.unwrap_or(o.pack_target);
    o.zstd_level = a.compression_level.unwrap_or(o.zstd_level);
    if let Some(m) = a.kdf_memory {
        o.kdf.m_cost_kib = m;
    }
    let r = ops::init::run(&backend, pw.as_deref(), &o).await?;
    emit(cli, &r, render::init)
}

/// `repo backup --stdin` or `repo backup -- COMMAND`: one stream snapshot.
async fn backup_stream(cli: &Cli, a: &args::BackupArgs) -> anyhow::Result<()> {
    let show_progress = cli.progress_bars();
    let source = match (a.stdin, a.command.is_empty()) {
        (true, true) if a.gunzip => ops::backup::Source::StdinGunzip,
        (true, true) => ops::backup::Source::Stdin,
        (false, false) => ops::backup::Source::Command(a.command.clone()),
        (true, false) => {
            return Err(usage!("give either --stdin or a command after --, not both"));
        }
        (false, true) => {
            return Err(usage!("nothing to back up: give --stdin or a command after --"));
        }
    };
    if !a.paths.is_empty() || a.root.is_some() || a.btrfs.is_some() {
        return Err(usage!("give either PATHs or --stdin / a command after --, not both"));
    }
    let meta = backup_meta(a)?;
    let repo = open(cli, Access::Backup).await?;
    let bar = Bar::start("read", show_progress);
    let r = ops::backup::run(repo.clone(), source, meta, bar.clone()).await;
    bar.finish();
    warnings(cli, &repo);
    let r = r?;
    metrics::record_backup(&a.name, &r.stats, r.seconds, None);
    if !cli.quiet {
        for w in &r.warnings {
            eprintln!("repo: warning: {w}");
        }
    }
    emit(cli, &r, render::backup)
}

/// `repo snapshots`.
async fn snapshots(cli: &Cli, a: &args::SnapshotsArgs) -> anyhow::Result<()> {
    let repo = open(cli, Access::Snapshots).await?;
    let r = ops::snapshots::run(&repo, &a.filter.snapshots(), a.latest).await?;
    warnings(cli, &repo);
    emit(cli, &r, |l| render::snapshots(l))
}

/// `repo restore` of a stream, to standard output or `-o FILE` (atomically).
async fn restore_stream(cli: &Cli, a: &args::RestoreArgs) -> anyhow::Result<()> {
    let show_progress = cli.progress_bars();
    let repo = open(cli, Access::Read).await?;
    let filter = a.filter.snapshots();
    let bar = Bar::start("restored", show_progress && a.output.is_some());
    let r = match &a.output {
        None => ops::restore::run(
            repo.clone(),
            &a.snapshot,
            &filter,
            gzip_if(a.gzip, stdout_file()?),
            bar.clone(),
        )
        .await
        .map_err(anyhow::Error::from),
        Some(path) => {
            write_atomically(path, |w| {
                ops::restore::run(
                    repo.clone(),
                    &a.snapshot,
                    &filter,
                    gzip_if(a.gzip, w),
                    bar.clone(),
                )
            })
            .await
        }
    };
    bar.finish();
    warnings(cli, &repo);
    let r = r?;
    // the data may be on stdout: the report goes there only with -o
    if a.output.is_some() {
        emit(cli, &r, render::restore)
    } else {
        if cli.verbose {
            eprintln!("{}", render::restore(&r));
        }
        Ok(())
    }
}

/// `repo export DIR`: classic `.dump.gz`/`.tar.gz` files and their manifest.
async fn export(cli: &Cli, a: &args::ExportArgs) -> anyhow::Result<()> {
    let show_progress = cli.progress_bars();
    let repo = open(cli, Access::Read).await?;
    // what --mirror deletes and what --latest picks depend on every snapshot being read
    let complete = a.mirror || a.latest.is_some();
    let mut selected =
        repo::repo::select_snapshots(&repo, &a.filter.snapshots(), a.latest, complete).await?;
    warnings(cli, &repo); // snapshots skipped as unreadable
    if let Some(w) = &a.keep_within {
        let span_ns =
            ops::forget::policy::parse_duration(w).map_err(|e| usage!("--keep-within {e}"))?;
        selected = ops::export::keep_within(selected, span_ns);
    }
    let compression = match a.format {
        args::ExportFormat::Gz => {
            ops::export::Compression::Gzip { level: a.level.unwrap_or(6).clamp(1, 9) as u32 }
        }
        args::ExportFormat::Zst => ops::export::Compression::Zstd { level: a.level.unwrap_or(3) },
        args::ExportFormat::Raw => ops::export::Compression::None,
    };
    let opts = ops::export::ExportOptions {
        template: a.template.clone(),
        compression,
        mirror: a.mirror,
        force: a.force,
        tz: a.tz,
        name_scope: a.filter.name.clone(),
    };
    let bar = Bar::start("exported", show_progress);
    let r = ops::export::run(repo.clone(), &a.directory, selected, &opts, bar.clone()).await;
    bar.finish();
    let r = r?;
    emit(cli, &r, render::export)?;
    if r.conflicts > 0 {
        return Err(anyhow!(
            "{} files exist with other content and were not overwritten (--force replaces them)",
            r.conflicts
        ));
    }
    Ok(())
}

/// `repo import FILE…`: classic files as snapshots.
async fn import(cli: &Cli, a: &args::ImportArgs) -> anyhow::Result<()> {
    let show_progress = cli.progress_bars();
    let repo = open(cli, Access::Backup).await?;
    let opts = ops::import::ImportOptions {
        name: a.name.clone(),
        time_ns: match &a.time {
            Some(t) => Some(parse_time(Some(t))?),
            None => None,
        },
        template: a.template.clone(),
        host: a
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        tags: a.tags.clone(),
    };
    let bar = Bar::start("imported", show_progress);
    let r = ops::import::run(repo.clone(), &a.files, &opts, bar.clone()).await;
    bar.finish();
    emit(cli, &r?, render::import)
}

/// `repo sync DEST`: the ciphertext objects, copied as they are.
async fn sync(cli: &Cli, a: &args::SyncArgs) -> anyhow::Result<()> {
    let show_progress = cli.progress_bars();
    let src = backend(cli, repo_url(cli)?)?;
    let dst = backend(cli, &a.destination)?;
    let opts = ops::sync::SyncOptions { delete: a.delete, dry_run: a.dry_run, jobs: a.jobs };
    let bar = Bar::start("copied", show_progress);
    let r = ops::sync::run(src, dst, &opts, &*bar).await;
    bar.finish();
    emit(cli, &r?, render::sync)
}

/// `repo copy --to DEST`: snapshots re-encoded into another repository.
async fn copy(cli: &Cli, a: &args::CopyArgs) -> anyhow::Result<()> {
    let show_progress = cli.progress_bars();
    let src = open(cli, Access::Read).await?;
    let pw = match password_from("REPO_TO_PASSWORD", a.to_password_file.as_deref())? {
        Some(p) => Some(p),
        None => password(cli)?,
    };
    let dst = open_at(cli, backend(cli, &a.to)?, pw.as_deref(), Access::Backup, true).await?;
    warnings(cli, &dst);
    let selected = if a.snapshots.is_empty() {
        repo::repo::select_snapshots(&src, &a.filter.snapshots(), a.latest, a.latest.is_some())
            .await?
    } else {
        let mut picked = Vec::new();
        for sel in &a.snapshots {
            picked.push(repo::repo::resolve_snapshot(&src, sel, &a.filter.snapshots()).await?);
        }
        picked.sort_by_key(|(id, s)| (s.time_ns, *id));
        match a.latest {
            Some(k) => repo::repo::newest_per_name(picked, k),
            None => picked,
        }
    };
    warnings(cli, &src); // snapshots skipped as unreadable
    let bar = Bar::start("copied", show_progress);
    let r = ops::copy::run(src, dst.clone(), selected, bar.clone()).await;
    bar.finish();
    emit(cli, &r?, render::copy)
}

/// `repo stats`.
async fn stats(cli: &Cli) -> anyhow::Result<()> {
    let repo = open(cli, Access::Unleased).await?;
    let r = ops::stats::run(&repo).await?;
    emit(cli, &r, render::stats)
}

/// `repo prune`: frees the space of forgotten snapshots (format-spec/prune.md).
async fn prune(cli: &Cli, a: &args::PruneArgs) -> anyhow::Result<()> {
    let repo = open(cli, if a.dry_run { Access::Read } else { Access::Prune }).await?;
    let opts = ops::prune::PruneOptions {
        dry_run: a.dry_run,
        max_unused: parse_share(&a.max_unused)?,
        ..Default::default()
    };
    emit(cli, &ops::prune::run(repo, &opts).await?, render::prune)?;
    Ok(())
}

/// `repo repair index` and `repo repair snapshots`.
async fn repair(cli: &Cli, what: &args::RepairCmd) -> anyhow::Result<()> {
    let access = match what {
        args::RepairCmd::Index => Access::Backup,
        args::RepairCmd::Snapshots { .. } => Access::Read,
    };
    // repair lists what it reads itself
    let repo = open_listing(cli, access, false).await?;
    match what {
        args::RepairCmd::Index => {
            emit(cli, &ops::repair::repair_index(repo).await?, render::repair_index)?
        }
        args::RepairCmd::Snapshots { forget_broken } => emit(
            cli,
            &ops::repair::repair_snapshots(repo, *forget_broken).await?,
            render::repair_snapshots,
        )?,
    }
    Ok(())
}

/// The writer itself, or a parallel gzip compressor in front of it (`--gzip`).
fn gzip_if<W: Write + Send + 'static>(gzip: bool, w: W) -> Box<dyn Write + Send> {
    if gzip { Box::new(repo::codec::gzip::ParallelGzWriter::new(w, 6)) } else { Box::new(w) }
}

/// Standard output as a plain file (a duplicate of fd 1): no line buffering on binary data.
fn stdout_file() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?))
}

/// Runs `produce` into a temporary file beside `path`, then fsyncs it, renames it and fsyncs
/// the directory ([`repo::fsutil::write_atomic`]'s contract, for streamed output): never a half
/// file under the final name, and the rename survives a power loss.
async fn write_atomically<T, F, Fut>(path: &Path, produce: F) -> anyhow::Result<T>
where
    F: FnOnce(std::io::BufWriter<std::fs::File>) -> Fut,
    Fut: std::future::Future<Output = Result<T, RepoError>>,
{
    if path.file_name().is_none() {
        return Err(anyhow!("{}: not a file name", path.display()));
    }
    // what a killed run left for this file (an interrupted one removes its own)
    repo::fsutil::remove_stale_temps(path);
    let tmp = repo::fsutil::temp_beside(path)?;
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    // removed on an error, and when an interrupt drops this future mid-write
    let tmp = repo::fsutil::TempFile::new(tmp);
    let writer = std::io::BufWriter::with_capacity(1 << 20, file.try_clone()?);
    let r = produce(writer).await?;
    let shown = tmp.path().display().to_string();
    file.sync_all().with_context(|| format!("writing {shown}"))?;
    std::fs::rename(tmp.path(), path).with_context(|| format!("renaming to {}", path.display()))?;
    tmp.keep();
    repo::fsutil::sync_dir(path).with_context(|| format!("syncing {}", path.display()))?;
    Ok(r)
}
