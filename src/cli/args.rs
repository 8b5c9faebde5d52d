//! Command-line arguments (the contract in the design brief).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "repo",
    version,
    about = "Deduplicating, encrypted backups of database dumps",
    max_term_width = 100
)]
pub struct Cli {
    /// Repository location: a local path (default backend).
    #[arg(short = 'r', long = "repo", env = "REPO_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File holding the password (first line). REPO_PASSWORD gives it directly.
    #[arg(long, env = "REPO_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Where the local index cache lives (default: the user's cache directory).
    #[arg(long, env = "REPO_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Print reports as JSON on standard output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more detail.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Limit uploads to this rate (500K, 10M, 1.5MiB; a bare number is KiB/s).
    #[arg(long, env = "REPO_LIMIT_UPLOAD", global = true, value_name = "RATE")]
    pub limit_upload: Option<String>,
    /// After backup and check: write Prometheus metrics into this file (node exporter's
    /// textfile collector), merged with the series other runs wrote there.
    #[arg(long, env = "REPO_METRICS_FILE", global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// After backup and check: PUT the same metrics to a Pushgateway URL
    /// (http://pushgateway:9091/metrics/job/repo).
    #[arg(long, env = "REPO_METRICS_PUSH", global = true, value_name = "URL")]
    pub metrics_push: Option<String>,
    #[command(subcommand)]
    pub command: Cmd,
}

impl Cli {
    /// Whether commands draw progress bars: not with --quiet or --json.
    pub fn progress_bars(&self) -> bool {
        !self.quiet && !self.json
    }
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a repository (encrypted unless --encryption none).
    Init(InitArgs),
    /// Store standard input, a command's output, or directory trees, as one snapshot.
    Backup(BackupArgs),
    /// List the files of a tree snapshot.
    Ls(LsArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Write a snapshot's stream to standard output or a file, or a tree into a directory.
    Restore(RestoreArgs),
    /// Repository size, deduplication and counts.
    Stats,
    /// Verify the repository: structure, and on request every byte and that dumps restore.
    Check(CheckArgs),
    /// Remove snapshots by retention policy (grouped by name) or by id.
    Forget(ForgetArgs),
    /// Reclaim the space of data no snapshot needs (safe while backups run).
    Prune(PruneArgs),
    /// Write snapshots as classic files (.dump.gz, .sql.gz, …) into a directory.
    Export(ExportArgs),
    /// Store existing dump files as snapshots (name and time from the file names).
    Import(ImportArgs),
    /// Make DEST an exact copy of this repository, copying only what it lacks (no password needed).
    Sync(SyncArgs),
    /// Copy snapshots into another repository (its own password), deduplicating there.
    Copy(CopyArgs),
    /// Rebuild the index from the packs, or remove snapshots that cannot be restored.
    Repair {
        #[command(subcommand)]
        what: RepairCmd,
    },
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read, decrypt and verify every stored byte.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read part of the data: n/m (1/12: all data in twelve runs), a percentage (5%) or a size
    /// (500M).
    #[arg(long, value_name = "SUBSET")]
    pub read_data_subset: Option<String>,
    /// Restore the selected dump snapshots through the real pg_restore.
    #[arg(long, value_enum, value_name = "KIND")]
    pub verify_restore: Option<VerifyKind>,
    /// With --verify-restore: which snapshots.
    #[command(flatten)]
    pub filter: Filter,
    /// With --verify-restore: only the newest K of each name.
    #[arg(long)]
    pub latest: Option<usize>,
    /// The pg_restore program to use.
    #[arg(long)]
    pub pg_restore: Option<PathBuf>,
    /// NAME_GLOB=DURATION (e.g. 'postgres/*=26h', 'lvm/*=8d'): exit with code 5 when the
    /// newest snapshot of a matching name is older, or no snapshot matches. Repeatable.
    #[arg(long, value_name = "GLOB=AGE")]
    pub max_age: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum VerifyKind {
    /// PostgreSQL dumps: custom format through pg_restore, plain SQL checked for completeness.
    Pg,
}

#[derive(Subcommand, Debug)]
pub enum RepairCmd {
    /// Rebuild the index from the pack files (after index files were lost or damaged).
    Index,
    /// List snapshots that cannot be restored; remove them with --forget-broken.
    Snapshots {
        /// Remove the broken snapshots (refused while the index may be incomplete).
        #[arg(long)]
        forget_broken: bool,
    },
}

/// Which snapshots a command considers.
#[derive(Args, Debug, Clone)]
pub struct Filter {
    /// Only snapshots of this name (glob: 'postgres/*').
    #[arg(long)]
    pub name: Option<String>,
    /// Only snapshots with this tag (repeatable: all must match).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

impl Filter {
    pub fn snapshots(&self) -> repo::repo::SnapshotFilter {
        repo::repo::SnapshotFilter { name: self.name.clone(), tags: self.tags.clone() }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Encryption {
    #[value(name = "aes256gcm")]
    Aes256Gcm,
    None,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[arg(long, value_enum, default_value = "aes256gcm")]
    pub encryption: Encryption,
    /// Average chunk size in bytes (a power of two); min and max default to 1/4 and 4x.
    #[arg(long)]
    pub chunk_avg: Option<u32>,
    #[arg(long)]
    pub chunk_min: Option<u32>,
    #[arg(long)]
    pub chunk_max: Option<u32>,
    /// Target pack size in bytes.
    #[arg(long)]
    pub pack_size: Option<u32>,
    /// zstd level for chunks.
    #[arg(long)]
    pub compression_level: Option<i32>,
    /// Argon2id memory in KiB (default 65536).
    #[arg(long, hide = true)]
    pub kdf_memory: Option<u32>,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Read the data to store from standard input.
    #[arg(long)]
    pub stdin: bool,
    /// Snapshot name, e.g. postgres/fnb-admin: snapshots are grouped and found by it.
    #[arg(long)]
    pub name: String,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host to record (default: this host's name).
    #[arg(long)]
    pub host: Option<String>,
    /// Snapshot time, RFC 3339 (default: now).
    #[arg(long)]
    pub time: Option<String>,
    /// With --stdin: the input is gzip; store it decompressed (it then deduplicates;
    /// `restore --gzip` gives a .gz back).
    #[arg(long, requires = "stdin")]
    pub gunzip: bool,
    /// Directory trees to store, relative to --root (`.` = all of it).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Store PATHs relative to this directory, so that `restore --target /` puts them back
    /// where they were (default: /).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Back up from an LVM snapshot of VG/LV: created, mounted read-only at
    /// /run/repo/lvm/VG-LV, and always removed afterwards. PATHs are inside the volume.
    #[arg(long, value_name = "VG/LV", conflicts_with_all = ["btrfs", "root", "stdin"])]
    pub lvm: Option<String>,
    /// With --lvm: the snapshot's copy-on-write space (lvcreate --size), e.g. 5G.
    #[arg(long, value_name = "SIZE", requires = "lvm")]
    pub snapshot_size: Option<String>,
    /// Back up from a read-only snapshot of this btrfs subvolume (always removed afterwards).
    /// PATHs are inside the subvolume.
    #[arg(long, value_name = "SUBVOLUME", conflicts_with_all = ["root", "stdin"])]
    pub btrfs: Option<PathBuf>,
    /// Command whose standard output is stored; no snapshot unless it exits 0.
    /// FILE=COMMAND: one stream of a server snapshot, the standard output of COMMAND (run by
    /// sh -c) stored as FILE; repeatable. The snapshot is committed only if every command
    /// exits 0. Restore one with `repo restore latest --name N FILE`.
    #[arg(long = "stream", value_name = "FILE=COMMAND", conflicts_with_all = ["stdin", "lvm", "btrfs", "root"])]
    pub streams: Vec<String>,
    /// A server snapshot of every database: globals.sql (pg_dumpall --globals-only) and
    /// DB.dump (pg_dump -Fc -Z0) for each database psql lists at URL.
    #[arg(long, value_name = "URL", conflicts_with_all = ["stdin", "lvm", "btrfs", "root"])]
    pub pg_databases: Option<String>,
    /// With --stream / --pg-databases: how many commands run at the same time.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id prefix, or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub filter: Filter,
    /// Only this path and what is below it.
    pub path: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Destination URL: a path, s3://bucket/prefix, sftp://user@host/path, …
    pub destination: String,
    /// Also delete what the destination holds and this repository no longer does (after
    /// everything else is copied).
    #[arg(long)]
    pub delete: bool,
    /// Report what would be copied and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Objects transferred at the same time.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Destination repository URL (created with `repo init` beforehand).
    #[arg(long)]
    pub to: String,
    /// Password file of the destination (REPO_TO_PASSWORD gives it directly); default: the
    /// source's password.
    #[arg(long, env = "REPO_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub filter: Filter,
    /// Only the newest K snapshots of each name.
    #[arg(long)]
    pub latest: Option<usize>,
    /// Snapshot ids (prefixes) to copy; default: all matching the filter.
    pub snapshots: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub filter: Filter,
    /// Only the newest K snapshots of each name.
    #[arg(long)]
    pub latest: Option<usize>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id prefix, or `latest`.
    pub snapshot: String,
    /// With `latest`: the newest snapshot matching these.
    #[command(flatten)]
    pub filter: Filter,
    /// Write to this file (atomically: a temporary name, then renamed) instead of stdout.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Write gzip (compressed on every core; gunzip reads it as one stream).
    #[arg(long)]
    pub gzip: bool,
    /// Of a tree snapshot: without --target, this one file to stdout (or -o); with --target,
    /// only this path.
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Restore a tree snapshot into this directory (`/` puts files back where they were).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "gzip"])]
    pub target: Option<PathBuf>,
    /// With --target: only these stored paths (repeatable).
    #[arg(long, value_name = "PATH", requires = "target")]
    pub include: Vec<PathBuf>,
    /// With --target: replace files that already exist (default: refuse before writing anything).
    #[arg(long, requires = "target")]
    pub overwrite: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    Gz,
    Zst,
    Raw,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Directory to write into (created if missing).
    pub directory: PathBuf,
    #[command(flatten)]
    pub filter: Filter,
    /// Only the newest K snapshots of each name.
    #[arg(long)]
    pub latest: Option<usize>,
    /// Only snapshots within this span of the newest of their name (7d, 24h, 2w).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// File name template: {name} {base} {time:%Y%m%d-%H%M%S} {host} {tags} {id}.
    /// Default: {name}-{time} plus .dump/.sql/.tar by content and .gz/.zst.
    #[arg(long)]
    pub template: Option<repo::ops::template::Template>,
    #[arg(long, value_enum, default_value = "gz")]
    pub format: ExportFormat,
    /// Compression level (gzip 1–9, default 6; zstd 1–19, default 3).
    #[arg(long)]
    pub level: Option<i32>,
    /// Delete files this tool exported whose snapshots are no longer selected (nothing else).
    #[arg(long)]
    pub mirror: bool,
    /// Replace an existing file export did not write when it differs.
    #[arg(long)]
    pub force: bool,
    /// Time zone of {time} (IANA name).
    #[arg(long, default_value = "UTC", value_parser = parse_tz)]
    pub tz: chrono_tz::Tz,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Files to import (.dump.gz, .sql.gz, .dump, .sql, .tar.gz, .tar, …).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Snapshot name (default: from the file name, e.g. postgres/fnb-admin).
    #[arg(long)]
    pub name: Option<String>,
    /// Snapshot time, RFC 3339 (default: from the file name).
    #[arg(long)]
    pub time: Option<String>,
    /// How file names spell name and time, as for export ({base}-{time:%Y%m%d}.tar.gz).
    #[arg(long)]
    pub template: Option<repo::ops::template::Template>,
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove by id prefix (instead of a policy).
    pub snapshots: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub keep_last: usize,
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: usize,
    #[arg(long, default_value_t = 0)]
    pub keep_daily: usize,
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: usize,
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: usize,
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: usize,
    /// Keep every snapshot within this duration of the newest one (7d, 24h, 2w, 1y6m).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag")]
    pub keep_tags: Vec<String>,
    #[command(flatten)]
    pub filter: Filter,
    /// Time zone of the hour/day/week/month/year buckets (IANA name, e.g. Europe/Berlin).
    #[arg(long, default_value = "UTC", value_parser = parse_tz)]
    pub tz: chrono_tz::Tz,
    /// Show what would be kept and removed, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run `prune` afterwards.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: see `repo prune --max-unused`.
    #[arg(long, default_value = "5%")]
    pub max_unused: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Report what would be removed and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack partly used packs while more than this share of stored bytes is unused.
    #[arg(long, default_value = "5%")]
    pub max_unused: String,
}

/// `--tz`: an IANA time zone name.
fn parse_tz(s: &str) -> Result<chrono_tz::Tz, String> {
    s.parse().map_err(|_| format!("{s:?}: not a time zone name such as UTC or Europe/Berlin"))
}
