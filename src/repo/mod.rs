//! Layer 3: the repository engine: keys, config, the packer, the index and its local cache,
//! the stream writer and reader, snapshots.

pub mod blobrun;
mod cache;
pub mod delta;
pub mod idset;
pub mod lease;
mod object;
pub mod packer;
pub mod paths;
mod reader;
mod snapshots;
pub mod sorted;
pub mod tree;
mod verify;
mod writer;

pub use cache::{BlobRef, CacheReader, IndexCache, Unreadable};
pub use object::{open_object, seal_object};
pub use reader::{OrderedReader, PackCiphers, RestoreStats, read_blob, restore_stream};
pub use snapshots::{
    SnapshotFilter, glob_match, list_snapshots, list_snapshots_checked, list_snapshots_complete,
    newest_per_name, resolve_snapshot, select_snapshots, store_bundle_if_worth,
};
pub use verify::{
    PackVerdict, load_index_file, load_index_files, parse_pack, read_pack_footer, verify_deltas,
    verify_pack_bytes,
};
pub use writer::{
    BackupStats, ChunkSink, Content, INDEX_FILE_BLOBS, INDEX_FILE_PACKS, IndexBatch, NoProgress,
    Progress, SORTED_SET_PACKS, SnapshotMeta, SortedIndexWriter, StreamMsg, backup_stream,
    backup_with, chunk_batches, write_index,
};

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{Backend, BackendError, ObjectInfo};
use crate::codec::CodecError;
use crate::codec::chunker::{ChunkerParams, Gear};
use crate::codec::crypto::{KdfParams, MasterKeys, unwrap_master, wrap_master};
use crate::format::config::Config;
use crate::format::envelope::{CipherKind, MAGIC_CONFIG};
use crate::format::key::{Kdf, KeyFile};
use crate::format::lock::LeaseKind;
use crate::format::{FormatError, Id};
use lease::Lease;

/// Every error of the repository engine and the commands built on it; each names the object, path
/// or command concerned, and the binary maps some of them to their own exit codes.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The location has no `config` object: not a repository, or `init` did not finish (exit code
    /// 10).
    #[error("no repository at {location} (no config file; run `repo init` first)")]
    NotARepository {
        /// The backend's location, as shown to the operator.
        location: String,
    },
    /// `init` found a `config` already: nothing was written.
    #[error("a repository already exists at {location}")]
    AlreadyExists {
        /// The backend's location.
        location: String,
    },
    /// No key file opened with the password given (exit code 12).
    #[error("wrong password for the repository at {location}")]
    WrongPassword {
        /// The backend's location.
        location: String,
    },
    /// The repository is encrypted (or `init` was asked for an encrypted one) but no password
    /// was given.
    #[error(
        "the repository at {location} is encrypted: a password is needed (REPO_PASSWORD, REPO_PASSWORD_FILE or --password-file)"
    )]
    PasswordNeeded {
        /// The backend's location.
        location: String,
    },
    /// A storage error, passed through.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An object (or a part of one) decoded to something the format forbids: damage or an
    /// incompatible writer.
    #[error("{object}: corrupt: {source}")]
    Format {
        /// The object's path, or what it is (`config`, `new key file`).
        object: String,
        /// What the decoder refused.
        source: FormatError,
    },
    /// An object failed authentication, decompression or key unwrapping: damage, tampering, or keys
    /// of another repository.
    #[error("{object}: corrupt: {source}")]
    Codec {
        /// The object's path, or what it is.
        object: String,
        /// The codec's error.
        source: CodecError,
    },
    /// An object is damaged in a way the decoders do not express (a wrong cipher, a short pack, a
    /// chunk that does not hash to its id, a file whose size disagrees with its entry).
    #[error("{object}: {reason}")]
    Corrupt {
        /// The object or file concerned.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// The local index cache or prune's temporary id set (redb files) failed; neither is the only
    /// copy of anything, so deleting them is safe.
    #[error("local cache {path}: {reason}")]
    Cache {
        /// Path of the cache database.
        path: String,
        /// The database's error.
        reason: String,
    },
    /// A snapshot selector (an id prefix, or `latest` within a filter) matched no snapshot.
    #[error("no snapshot matches {0}")]
    SnapshotNotFound(String),
    /// A snapshot object cannot be read where the choice depends on every snapshot (`latest`,
    /// what `export --mirror` deletes): the unseen one may be the newest, or the one exported.
    #[error(
        "{error}: the snapshot cannot be read, so {needs}; give a snapshot id, or run `repo check`"
    )]
    SnapshotUnreadable {
        /// The snapshot object (`error` names it too).
        object: String,
        /// Why it cannot be read.
        error: String,
        /// What cannot be decided without it.
        needs: &'static str,
    },
    /// Another process holds what this one needs (another prune is running): exit code 11, try
    /// again later.
    #[error("{0}")]
    LockConflict(String),
    /// A snapshot id prefix matches several snapshots: give more digits.
    #[error("snapshot id prefix {0} is ambiguous")]
    AmbiguousSnapshot(String),
    /// A chunk that is needed is in no index file (or none of its copies could be read): data
    /// lost, or a damaged or missing index file (`repo repair index`).
    #[error("chunk {chunk} is not in the index (needed by {needed_by})")]
    MissingChunk {
        /// The chunk id (hex).
        chunk: String,
        /// What needed it: a stream, a file, a pack, or the delta the chunk is the base of.
        needed_by: String,
    },
    /// Reading the data to back up failed (stdin, a file, a child's output).
    #[error("reading the input: {0}")]
    Input(std::io::Error),
    /// Writing restored data failed (stdout, a file); a broken pipe ends the binary with exit
    /// code 0.
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    /// `repair snapshots --forget` found broken snapshots while the index may be incomplete:
    /// removing them could remove good ones.
    #[error(
        "{broken} snapshots look broken, but the index may be incomplete ({orphan_packs} packs \
         in no index, damaged index files possible): run `repo repair index` first; nothing was \
         removed"
    )]
    IndexIncomplete {
        /// Snapshots that look broken.
        broken: usize,
        /// Packs that no index file names.
        orphan_packs: u64,
    },
    /// The sync destination holds another repository (a different config).
    #[error(
        "{location} holds a different repository; sync only updates a copy of the same one (use \
         `repo copy` between repositories)"
    )]
    NotACopy {
        /// The destination.
        location: String,
    },
    /// The sync source kept changing under the copy (a prune running?): the destination is
    /// consistent but incomplete.
    #[error(
        "{location} kept changing during {rounds} rounds of copying (a prune running?); the \
         destination is consistent but incomplete: run the sync again"
    )]
    KeptChanging {
        /// The source.
        location: String,
        /// Rounds of listing and copying tried.
        rounds: usize,
    },
    /// An external program the command needs is not installed.
    #[error("{tool} not found: {hint}")]
    ToolNotFound {
        /// The program, e.g. pg_restore.
        tool: &'static str,
        /// How to get it or point to it.
        hint: &'static str,
    },
    /// `forget` without a policy and without snapshot ids.
    #[error("no policy given (--keep-last, --keep-daily, …) and no snapshot ids: nothing to do")]
    NoPolicy,
    /// `import --template`: a file's name does not match the template.
    #[error("{file}: does not match the template")]
    TemplateMismatch {
        /// The file.
        file: String,
    },
    /// `sync`: the source's config is gone (its storage unmounted or vanished midway); nothing
    /// was deleted at the destination.
    #[error(
        "{location}: the source repository's config is gone (storage unmounted?); nothing \
         deleted at the destination"
    )]
    SourceVanished {
        /// The source.
        location: String,
    },
    /// `import`: two files (or a file and an existing snapshot) would make snapshots of the
    /// same name and time, and they are not the same import.
    #[error(
        "{file}: a snapshot named {name} at this time {other}; give --name or --time to tell \
         them apart"
    )]
    ImportClash {
        /// The file.
        file: String,
        /// The snapshot name both would have.
        name: String,
        /// What it clashes with.
        other: String,
    },
    /// `import`: a file's snapshot name or time cannot be told from its name.
    #[error("{file}: cannot tell the {what} from the file name; give --{option} or --template")]
    NotNamed {
        /// The file.
        file: String,
        /// "snapshot name" or "time".
        what: &'static str,
        /// The option that gives it: "name" or "time".
        option: &'static str,
    },
    /// `export`: the template gives a path that would leave the export directory.
    #[error(
        "the template gives {path:?} for snapshot {snapshot}: not a relative path inside the \
         directory"
    )]
    ExportPath {
        /// What the template gave.
        path: String,
        /// The snapshot's name.
        snapshot: String,
    },
    /// A worker (the uploader, a chunk feeder, a stream reader) ended before its work was
    /// done; the error that stopped it is the one reported.
    #[error("the {0} stopped early")]
    WorkerStopped(&'static str),
    /// The operating system refused a pipe between two parts of the command.
    #[error("could not create a pipe: {0}")]
    Pipe(std::io::Error),
    /// A library caller opened the repository with the wrong [`Access`] for the operation.
    #[error("this operation needs a repository opened with Access::{0}")]
    WrongAccess(&'static str),
    /// The command to back up could not be started.
    #[error("{command}: could not start: {source}")]
    CommandStart {
        /// The command line as shown to the operator.
        command: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The command to back up exited unsuccessfully; the snapshot was not committed.
    #[error("{command} failed ({status}); no snapshot was committed")]
    CommandFailed {
        /// The command line as shown to the operator.
        command: String,
        /// The exit status as the operating system reports it.
        status: String,
    },
    /// The snapshot is a file tree where a stream was asked for (the label names it).
    #[error("{0} is a file tree, not a stream: restore it with --target DIR (or name one file)")]
    NotAStream(String),
    /// The snapshot is a stream where a file tree was asked for (the label names it).
    #[error("{0} is a stream, not a file tree")]
    NotATree(String),
    /// A path to back up cannot be read or stored (a `..` component, an `lstat` failure, an entry
    /// over the catalog's limits).
    #[error("{path}: {reason}")]
    Source {
        /// The local path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A path to restore into is unsafe or cannot be written (an unsafe stored path, a symlink on
    /// the way, a hard link whose target was not restored).
    #[error("{path}: {reason}")]
    Target {
        /// The path concerned, as stored or on disk.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A key file in the clear was found while a password was given: refused, since it may have
    /// been planted to make backups unencrypted.
    #[error(
        "{path}: this key file is not password-protected, but a password was given; refusing to \
         use it (someone with write access to the storage may have replaced the keys; for a \
         repository made with --encryption none, give no password)"
    )]
    UnencryptedKey {
        /// Path of the key file.
        path: String,
    },
    /// A key file asks for more Argon2 memory than this opener allows (`REPO_KDF_MEMORY_LIMIT`);
    /// the KDF was not run.
    #[error(
        "{path}: the key file asks for {mib} MiB of Argon2 memory, more than the limit of \
         {limit_mib} MiB (a key file planted to exhaust memory? if you made it with a larger \
         --kdf-memory, set REPO_KDF_MEMORY_LIMIT to its size in MiB)"
    )]
    KdfTooCostly {
        /// Path of the key file (or `new key file` at `init`).
        path: String,
        /// Memory the key file asks for, MiB.
        mib: u32,
        /// The limit in force, MiB.
        limit_mib: u32,
    },
    /// The repository has no key file at all.
    #[error("no key file at {location}/keys")]
    NoKeyFile {
        /// The backend's location.
        location: String,
    },
    /// The lease was not refreshed in time (the process was paused or cut off), so a prune may
    /// already have acted as if this process were dead: the command stopped before committing or
    /// deleting.
    #[error(
        "this process could not keep its lease fresh for {minutes} minutes (paused, or cut off \
         from the repository); a prune may have acted on its expiry, so it stopped"
    )]
    LeaseLapsed {
        /// The continuity limit that was exceeded, in minutes (not the measured gap).
        minutes: i64,
    },
    /// The lease lapsed while a snapshot was being stored, and withdrawing the snapshot failed:
    /// it stays in the repository and may need data a prune removed.
    #[error(
        "this process could not keep its lease fresh for {minutes} minutes while it stored \
         snapshot {snapshot}, and removing that snapshot again failed ({error}); it may not be \
         whole: run `repo check`, and `repo forget {snapshot}` if check names it"
    )]
    LapsedSnapshotLeft {
        /// The continuity limit that was exceeded, in minutes.
        minutes: i64,
        /// The snapshot left behind (short id).
        snapshot: String,
        /// Why it could not be removed.
        error: String,
    },
    /// Prune found objects it cannot read; deleting anything could lose what they refer to.
    #[error("{}; prune stops without deleting anything (run `repo check`)", .unreadable.iter().map(|u| u.error.as_str()).collect::<Vec<_>>().join("; "))]
    PruneUnsure {
        /// Each index file or snapshot prune could not read, with its error.
        unreadable: Vec<Unreadable>,
    },
    /// A worker task (a reader, writer or uploader thread) failed or was cancelled.
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The operation was cancelled (SIGINT/SIGTERM): nothing was committed (exit code 130).
    #[error("interrupted")]
    Interrupted,
}

impl RepoError {
    pub(crate) fn format(object: impl Into<String>, source: FormatError) -> Self {
        RepoError::Format { object: object.into(), source }
    }
    pub(crate) fn codec(object: impl Into<String>, source: CodecError) -> Self {
        RepoError::Codec { object: object.into(), source }
    }
}

/// Results of the repository engine; the error defaults to [`RepoError`].
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Cheap Argon2id parameters for tests only (never for real repositories).
pub fn codec_kdf_for_tests() -> KdfParams {
    KdfParams { m_cost_kib: 256, t_cost: 1, p_cost: 1 }
}

/// Options for a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// False for `--encryption none`: keys in the clear, objects checksummed but not encrypted.
    pub encrypted: bool,
    /// Smallest chunk in bytes (see [`Config::chunk_min`]).
    pub chunk_min: u32,
    /// Average chunk in bytes, a power of two.
    pub chunk_avg: u32,
    /// Largest chunk in bytes.
    pub chunk_max: u32,
    /// Pack size in bytes at which a pack is closed.
    pub pack_target: u32,
    /// zstd level of blobs (-7 ..= 22).
    pub zstd_level: i32,
    /// Argon2id parameters of the first key file (its memory at most 256 MiB).
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    /// Defaults chosen by the chunk-size experiment recorded in `benches/RESULTS.md`.
    fn default() -> Self {
        InitOptions {
            encrypted: true,
            // 1 MiB average: a changed row costs a delta whatever the chunk size, and larger
            // chunks compress better on their own (the first backup of the bench dumps at
            // 100.4-100.6% of `zstd -3` of the whole stream, 111% at 128 KiB) and mean
            // fewer ids to index, list and look up. With chains four deep, resemblance bases
            // and locality that follows large chunks, twelve hourly dumps grow as at 128 KiB
            // within the spread of chunker keys (benches/RESULTS.md, "A megabyte per chunk";
            // 128 KiB until then, 64 KiB from delta blobs, 16 KiB before)
            chunk_min: 256 * 1024,
            chunk_avg: 1024 * 1024,
            chunk_max: 4 * 1024 * 1024,
            pack_target: 16 * 1024 * 1024,
            zstd_level: 3,
            kdf: KdfParams::default(),
        }
    }
}

/// An open repository. Cheap to share behind an `Arc`.
pub struct Repository {
    backend: Arc<dyn Backend>,
    /// The master keys never leave this layer and the codec: callers get chunk ids, sealed
    /// objects and pack builders, not keys.
    keys: MasterKeys,
    config: Config,
    cipher: CipherKind,
    gear: Gear,
    chunker: ChunkerParams,
    index: IndexCache,
    lease: Option<Arc<Lease>>,
    keep_alive: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    condemned: Arc<Condemned>,
    /// Snapshot objects this process's listings fetched one by one since a writer last
    /// looked (snapshots.rs): whether it should store a new bundle.
    fetched_alone: std::sync::atomic::AtomicUsize,
    /// Every snapshot, listed while the index was brought up to date (for backup and read
    /// access): the first listing of the command takes it instead of listing again.
    listed_at_open: std::sync::Mutex<Option<snapshots::Listing>>,
}

/// Creates a repository. Writes the key file first and the config last: the config is what
/// makes a location a repository, so a crash in between leaves no half repository.
pub async fn init(
    backend: &Arc<dyn Backend>,
    password: Option<&[u8]>,
    opts: &InitOptions,
) -> Result<Config> {
    let location = backend.location();
    if backend.stat(paths::CONFIG).await?.is_some() {
        return Err(RepoError::AlreadyExists { location });
    }
    if opts.encrypted && password.is_none() {
        return Err(RepoError::PasswordNeeded { location });
    }
    // a chunker key whose gear table would cut inside long runs of padding is drawn again
    // (`Gear::cuts_in_padding`; one draw in about 256 passes, each a few microseconds)
    let keys = loop {
        let keys = MasterKeys::generate().map_err(|e| RepoError::codec("keys", e))?;
        if !crate::codec::chunker::Gear::from_key(&keys.chunker).cuts_in_padding() {
            break keys;
        }
    };
    let mut repo_id = [0u8; 32];
    crate::codec::random_bytes(&mut repo_id).map_err(|e| RepoError::codec("config", e))?;
    let config = Config {
        repo_id,
        chunk_min: opts.chunk_min,
        chunk_avg: opts.chunk_avg,
        chunk_max: opts.chunk_max,
        pack_target: opts.pack_target,
        zstd_level: opts.zstd_level,
    };
    config.validate().map_err(|e| RepoError::format("config", e))?;
    if opts.encrypted && opts.kdf.m_cost_kib > DEFAULT_KDF_MEMORY_LIMIT_KIB {
        return Err(RepoError::KdfTooCostly {
            path: "new key file".into(),
            mib: opts.kdf.m_cost_kib / 1024,
            limit_mib: DEFAULT_KDF_MEMORY_LIMIT_KIB / 1024,
        });
    }
    let pw = if opts.encrypted { password } else { None };
    let kf = wrap_master(&keys, pw, opts.kdf, lease::now_secs())
        .map_err(|e| RepoError::codec("key file", e))?;
    let kbytes = kf.encode();
    // refuse what a reader would refuse (KDF parameters beyond the limits)
    KeyFile::decode(&kbytes).map_err(|e| RepoError::format("new key file", e))?;
    backend.put(&paths::key(&Id::of_bytes(&kbytes)), kbytes).await?;
    let cipher = if opts.encrypted { CipherKind::Aes256Gcm } else { CipherKind::None };
    let cbytes = seal_object(&keys, cipher, MAGIC_CONFIG, &config.encode())?;
    backend.put(paths::CONFIG, cbytes).await?;
    Ok(config)
}

/// Unlocks the master keys with a key file the password opens and whose keys open the
/// config (`cbytes`), says whether the repository is encrypted, and gives the config's
/// plaintext. A key file whose keys do
/// not open the config is passed over: an `init` that stored its key file but failed before
/// its config, run again with the same password, leaves such a stale key file behind.
///
/// The key file decides the cipher, never the config: a password-wrapped key means AES-256-GCM,
/// a key in the clear means none. With a password given, key files in the clear are refused:
/// someone who can write to the storage could otherwise plant one (with keys of their own and
/// a plaintext config) and have the owner's next backup written in the clear.
async fn unlock(
    backend: &Arc<dyn Backend>,
    password: Option<&[u8]>,
    keyfiles: Vec<ObjectInfo>,
    cbytes: &[u8],
) -> Result<(MasterKeys, CipherKind, Vec<u8>)> {
    let location = backend.location();
    let (mut last_err, mut config_err) = (None, None);
    let mut keys = Vec::new();
    for f in keyfiles {
        let bytes = backend.get(&f.path).await?;
        match KeyFile::decode(&bytes) {
            Ok(kf) => keys.push((f.path, kf)),
            Err(e) => last_err = Some(RepoError::format(f.path.clone(), e)),
        }
    }
    // one password-protected key file makes the repository encrypted: without a password, a
    // key file in the clear beside it (planted) must not be used either
    if password.is_none() && keys.iter().any(|(_, k)| k.kdf == Kdf::Argon2id) {
        return Err(RepoError::PasswordNeeded { location });
    }
    for (path, kf) in keys {
        if kf.kdf == Kdf::Argon2id && kf.m_cost > kdf_memory_limit_kib() {
            last_err = Some(RepoError::KdfTooCostly {
                path: path.clone(),
                mib: kf.m_cost / 1024,
                limit_mib: kdf_memory_limit_kib() / 1024,
            });
            continue;
        }
        let cipher = match kf.kdf {
            Kdf::Argon2id => CipherKind::Aes256Gcm,
            Kdf::None if password.is_some() => {
                last_err = Some(RepoError::UnencryptedKey { path: path.clone() });
                continue;
            }
            Kdf::None => CipherKind::None,
        };
        match unwrap_master(&kf, password) {
            Ok(k) => match open_object(&k, cipher, MAGIC_CONFIG, cbytes, paths::CONFIG) {
                Ok(body) => return Ok((k, cipher, body)),
                // the config is reported damaged only if no key file opens it; the password
                // was right, so this, not another key file's "wrong password", is the error
                Err(e) => config_err = Some(e),
            },
            Err(CodecError::WrongPassword) => {
                last_err = Some(RepoError::WrongPassword { location: location.clone() })
            }
            Err(e) => last_err = Some(RepoError::codec(path.clone(), e)),
        }
    }
    Err(config_err.or(last_err).unwrap_or(RepoError::NoKeyFile { location }))
}

/// The most Argon2 memory an opener spends on a key file (KiB): 256 MiB, or
/// `REPO_KDF_MEMORY_LIMIT` (MiB) for key files made with a larger `--kdf-memory`. A planted key
/// file cannot demand more: the owner's next run refuses it without running the KDF.
pub fn kdf_memory_limit_kib() -> u32 {
    std::env::var("REPO_KDF_MEMORY_LIMIT")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(DEFAULT_KDF_MEMORY_LIMIT_KIB, |mib| mib.saturating_mul(1024))
        .min(crate::format::key::MAX_M_COST_KIB)
}

/// Default of [`kdf_memory_limit_kib`]: 256 MiB, the memory limit of a typical backup pod.
pub const DEFAULT_KDF_MEMORY_LIMIT_KIB: u32 = 256 * 1024;

/// What a process opens a repository for: it decides the lease held while it is open
/// (`format-spec/prune.md`). The lease is written before the prune records are read and
/// before the index cache is brought up to date, so a prune either waits for this process or
/// this process knows what the prune condemned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads snapshots and data (restore, check, export, copy's source).
    Read,
    /// Writes data, index files or snapshots (backup, import, copy's destination, repair).
    Backup,
    /// Prunes. Holds the prune lease that excludes other prunes.
    Prune,
    /// Holds no lease: for commands that read snapshot files and the index (stats).
    Unleased,
    /// Holds no lease and leaves the index cache as it is (no index file is read): for
    /// commands that read or remove only snapshot files (snapshots, forget without a prune).
    /// A fresh pod lists snapshots without first building a cache of millions of entries.
    Snapshots,
}

impl Access {
    fn lease_kind(self) -> Option<LeaseKind> {
        match self {
            Access::Read => Some(LeaseKind::Read),
            Access::Backup => Some(LeaseKind::Backup),
            Access::Prune => Some(LeaseKind::Prune),
            Access::Unleased | Access::Snapshots => None,
        }
    }
}

/// What the prune records stored when the repository was opened condemn: a reader must not
/// rely on these packs and index files, since a sweep may delete them at any moment, and a
/// backup must not deduplicate against these packs.
#[derive(Clone, Debug, Default)]
pub struct Condemned {
    /// Packs that may be deleted at any moment: never read from them when another copy exists, and
    /// never deduplicate against them.
    pub packs: HashSet<Id>,
}

impl Repository {
    /// Opens the repository: unlocks the keys, reads the config (which must be sealed with the
    /// cipher the key file implies), writes the lease `access` calls for, reads the prune
    /// records, and brings the local index cache (under `cache_base/<repository id>`) up to
    /// date (except for [`Access::Snapshots`]). Call [`Repository::close`] at the end to
    /// remove the lease.
    pub async fn open(
        backend: Arc<dyn Backend>,
        password: Option<&[u8]>,
        cache_base: Option<PathBuf>,
        access: Access,
    ) -> Result<Repository> {
        Self::open_with(backend, password, cache_base, access, false).await
    }

    /// [`Repository::open`], and with `list_snapshots` (for backup and read access) every
    /// snapshot is also listed while the index cache is brought up to date: the command's
    /// first listing ([`list_snapshots`] and the functions built on it) then takes that one.
    /// For commands whose first step is a listing (a backup's predecessor, a restore's
    /// `latest`): a fresh pod on S3 waits for the index download only, not for the listing
    /// after it.
    pub async fn open_with(
        backend: Arc<dyn Backend>,
        password: Option<&[u8]>,
        cache_base: Option<PathBuf>,
        access: Access,
        list_snapshots: bool,
    ) -> Result<Repository> {
        let location = backend.location();
        // the config and the key files' names in one round trip: a fresh pod on S3 waits for
        // each request in turn before the index download can start
        let (cbytes, keyfiles) =
            tokio::join!(backend.get(paths::CONFIG), backend.list(paths::KEYS_DIR));
        let cbytes = match cbytes {
            Err(e) if e.is_not_found() => return Err(RepoError::NotARepository { location }),
            other => other?,
        };
        let (keys, cipher, body) = unlock(&backend, password, keyfiles?, &cbytes).await?;
        let config = Config::decode(&body).map_err(|e| RepoError::format(paths::CONFIG, e))?;
        let chunker =
            ChunkerParams::from_config(&config).map_err(|e| RepoError::codec(paths::CONFIG, e))?;
        let gear = Gear::from_key(&keys.chunker);
        let base = cache_base
            .or_else(|| dirs::cache_dir().map(|d| d.join("repo")))
            .unwrap_or_else(std::env::temp_dir);
        // the cache's database is opened (or created, with fsyncs) while the lease is written
        let dir = base.join(hex::encode(config.repo_id));
        let index = tokio::task::spawn_blocking(move || IndexCache::open(&dir));
        let lease = async {
            match access.lease_kind() {
                Some(kind) => Lease::acquire(backend.clone(), kind).await.map(Some),
                None => Ok(None),
            }
        };
        let (index, lease) = tokio::join!(index, lease);
        let index = match index.map_err(RepoError::from).and_then(|i| i) {
            Ok(i) => i,
            Err(e) => {
                if let Ok(Some(l)) = lease {
                    l.release().await;
                }
                return Err(e);
            }
        };
        let lease = match lease {
            Ok(l) => l,
            // a reader of read-only storage (a mount or a key without write access)
            // goes on without a lease, and is told what that risks
            Err(RepoError::Backend(BackendError::PermissionDenied { path }))
                if access == Access::Read =>
            {
                index.warn(format!(
                    "{path}: permission denied; reading without a lease, so a prune running \
                     elsewhere may remove data while this runs"
                ));
                None
            }
            Err(e) => return Err(e),
        };
        let keep_alive = std::sync::Mutex::new(lease.as_ref().map(|l| l.keep_alive()));
        let mut repo = Repository {
            backend,
            keys,
            config,
            cipher,
            gear,
            chunker,
            index,
            lease,
            keep_alive,
            condemned: Arc::new(Condemned::default()),
            fetched_alone: Default::default(),
            listed_at_open: Default::default(),
        };
        if access == Access::Snapshots {
            return Ok(repo);
        }
        let opened = repo.bring_up(access, list_snapshots).await;
        match opened {
            Ok(()) => Ok(repo),
            Err(e) => {
                repo.close().await;
                Err(e)
            }
        }
    }

    /// What opening does after the lease is written: reads the prune records, lists the
    /// index files and brings the index cache up to date, listing the snapshots meanwhile if
    /// `list_snapshots` (best effort: a listing that fails is made again when needed).
    ///
    /// The index files are listed after the records are read, except into a cache that holds
    /// no index file yet (a fresh pod), where both are read together: every listed file is
    /// then read, and only after the records are in, so a file a sweep deleted meanwhile is
    /// found gone. A cache that holds files would not read a listed one it holds, and a
    /// listing older than the records could keep a doomed file (and its condemned pack) that
    /// the sweep deleted before removing the record (`format-spec/prune.md`).
    async fn bring_up(&mut self, access: Access, list_snapshots: bool) -> Result<()> {
        let (condemned, listed) = if self.index.index_files()? == 0 {
            tokio::join!(lease::condemned(self), self.backend.list(paths::INDEX_DIR))
        } else {
            let condemned = lease::condemned(self).await;
            (condemned, self.backend.list(paths::INDEX_DIR).await)
        };
        self.condemned = Arc::new(condemned?);
        self.index.avoid(self.condemned.packs.clone());
        let listed = listed?;
        let repo = &*self;
        let sync = repo.index.sync_listed(repo, listed);
        if list_snapshots && matches!(access, Access::Backup | Access::Read) {
            // the snapshots are listed (and a fresh pod fetches them) during the index
            // download: the command needs them next
            let (synced, listing) = tokio::join!(sync, snapshots::list_all(repo));
            synced?;
            if let Ok(l) = listing {
                *repo.listed_at_open.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
            }
        } else {
            sync.await?;
        }
        Ok(())
    }

    /// The backend's location, for messages (credentials redacted).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The storage the repository lives on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The repository's settings (chunker sizes, pack target, compression level, id).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cipher every object of this repository is sealed with.
    pub fn cipher(&self) -> CipherKind {
        self.cipher
    }

    /// The secret gear table of the chunker.
    pub fn gear(&self) -> &Gear {
        &self.gear
    }

    /// The chunker sizes for streams.
    pub fn chunker(&self) -> ChunkerParams {
        self.chunker
    }

    /// The local index cache.
    pub fn index(&self) -> &IndexCache {
        &self.index
    }

    /// The keyed id of a chunk's plaintext.
    pub fn chunk_id(&self, data: &[u8]) -> Id {
        self.keys.chunk_id(data)
    }

    /// The keyed resemblance sketch of a chunk's plaintext (`codec::sketch`).
    pub fn chunk_sketch(&self, data: &[u8]) -> crate::codec::sketch::Sketch {
        self.keys.chunk_sketch(data)
    }

    /// A pack builder sealing with this repository's keys and cipher.
    pub fn pack_builder(&self, target: u32) -> Result<packer::PackBuilder> {
        packer::PackBuilder::new(&self.keys, self.cipher, target)
    }

    /// The lease this process holds, if it opened the repository with one.
    pub fn lease(&self) -> Option<&Arc<Lease>> {
        self.lease.as_ref()
    }

    /// Packs (and index files) condemned by prune records when the repository was opened.
    pub fn condemned(&self) -> Arc<Condemned> {
        self.condemned.clone()
    }

    /// Fails unless this process's lease has been continuously fresh (`Lease::fresh`): what
    /// a backup checks before it commits and a prune before it deletes. Without a lease there
    /// is nothing to check.
    pub fn ensure_lease(&self) -> Result<()> {
        self.lease.as_ref().map_or(Ok(()), |l| l.ensure_fresh())
    }

    /// Stops refreshing and removes the lease. Idempotent; a process killed before it gets
    /// here leaves a lease that expires.
    pub async fn close(&self) {
        let k = self.keep_alive.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(l) = &self.lease {
            l.stop_and_release(k).await;
        }
    }

    /// Seals `body` as an object of this repository.
    pub fn seal(&self, magic: [u8; 4], body: &[u8]) -> Result<Vec<u8>> {
        seal_object(&self.keys, self.cipher, magic, body)
    }

    /// Fetches the sealed object `path`, named by `id` (the BLAKE3 of its bytes), checks the
    /// bytes against the name and opens it under `magic`: a damaged or swapped object is
    /// `Corrupt`.
    pub async fn get_object(&self, path: &str, id: &Id, magic: [u8; 4]) -> Result<Vec<u8>> {
        let bytes = self.backend.get(path).await?;
        object::open_named(&self.keys, self.cipher, magic, &bytes, path, id)
    }

    /// Opens an object of this repository, refusing one sealed with another cipher (an
    /// unencrypted object slipped into an encrypted repository).
    pub fn open_object(&self, magic: [u8; 4], bytes: &[u8], path: &str) -> Result<Vec<u8>> {
        open_object(&self.keys, self.cipher, magic, bytes, path)
    }
}

impl Drop for Repository {
    /// Stops the refresh task and, inside a runtime, removes the lease in the background
    /// (best effort: call [`Repository::close`] to know it is gone; a lease left behind
    /// expires).
    fn drop(&mut self) {
        if let Some(k) = self.keep_alive.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            k.abort();
            if let (Some(l), Ok(rt)) = (self.lease.clone(), tokio::runtime::Handle::try_current()) {
                rt.spawn(async move { l.release().await });
            }
        }
    }
}
