//! CLI for file trees: `backup PATH...` (optionally from an LVM or btrfs snapshot),
//! `restore --target` / one file to stdout, and `ls`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::anyhow;

use super::args::{BackupArgs, LsArgs, RestoreArgs};
use super::progress::Bar;
use super::{
    Cli, EXIT_OK, EXIT_PARTIAL, emit, open, render, stdout_file, warnings, write_atomically,
};
use repo::ops;
use repo::ops::fs_snapshot::{Btrfs, Held, Lvm, Provider, System};
use repo::ops::tree::backup::TreeOptions;
use repo::repo::{Access, SnapshotMeta, resolve_snapshot};

fn provider(a: &BackupArgs) -> anyhow::Result<Option<Box<dyn Provider>>> {
    if let Some(spec) = &a.lvm {
        let (vg, lv) = spec
            .split_once('/')
            .filter(|(v, l)| !v.is_empty() && !l.is_empty() && !l.contains('/'))
            .ok_or_else(|| usage!("--lvm {spec:?}: expected VG/LV, e.g. ubuntu-vg/ubuntu-lv"))?;
        let size = a.snapshot_size.clone().ok_or_else(|| {
            usage!("--lvm needs --snapshot-size (the snapshot's copy-on-write space, e.g. 5G)")
        })?;
        ops::fs_snapshot::parse_lvm_size(&size).map_err(|e| usage!("--snapshot-size: {e}"))?;
        let mount_base = std::env::var_os("REPO_LVM_MOUNT_BASE")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/run/repo/lvm".into());
        return Ok(Some(Box::new(Lvm {
            vg: vg.into(),
            lv: lv.into(),
            size,
            mount_base,
            runner: Arc::new(System),
        })));
    }
    if let Some(sub) = &a.btrfs {
        let sub = std::path::absolute(sub)?;
        return Ok(Some(Box::new(Btrfs { subvolume: sub, runner: Arc::new(System) })));
    }
    Ok(None)
}

pub async fn backup(cli: &Cli, a: &BackupArgs, meta: SnapshotMeta) -> anyhow::Result<i32> {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut paths = a.paths.clone();
    let provider = provider(a)?;
    if paths.is_empty() {
        if provider.is_none() {
            return Err(usage!("nothing to back up: give PATHs, --stdin or a command after --"));
        }
        paths.push(".".into());
    }
    let repo = open(cli, Access::Backup).await?;
    // the snapshot is held from here; dropping it (error, SIGINT/SIGTERM) removes it
    let held = match provider {
        Some(p) => {
            let h = tokio::task::spawn_blocking({
                let cancel = cancel.clone();
                move || Held::create(p, cancel)
            })
            .await??;
            if let (Some(l), false) = (&h.leftover, cli.quiet) {
                eprintln!("repo: removed {l}, left behind by an earlier run that was killed");
            }
            Some(h)
        }
        None => None,
    };
    let root = match (&held, &a.root) {
        (Some(h), _) => h.root.clone(),
        (None, Some(r)) => r.clone(),
        (None, None) => {
            // relative PATHs are relative to the working directory, stored from /
            let cwd = std::env::current_dir()?;
            paths = paths.iter().map(|p| cwd.join(p)).collect();
            PathBuf::from("/")
        }
    };
    let bar = Bar::start("read", cli.progress_bars());
    let opts = TreeOptions { root, paths, cancel };
    let r = ops::tree::backup::run(repo.clone(), opts, meta, bar.clone()).await;
    bar.finish();
    if let Some(h) = held {
        let released = tokio::task::spawn_blocking(move || h.release()).await?;
        if let Err(e) = released {
            // the backup's own error matters more; a snapshot left behind is reported too
            eprintln!("repo: {e}");
            if r.is_ok() {
                return Err(e.into());
            }
        }
    }
    warnings(cli, &repo);
    let r = r?;
    if !cli.quiet {
        for e in &r.tree.errors {
            eprintln!("repo: warning: {e}");
        }
        for c in &r.tree.changed {
            eprintln!("repo: warning: {c} changed while it was read");
        }
    }
    super::metrics::record_backup(&a.name, &r.stats, r.seconds, Some(r.tree.files));
    emit(cli, &r, render::tree_backup)?;
    Ok(if r.tree.errors.is_empty() { EXIT_OK } else { EXIT_PARTIAL })
}

pub async fn restore(cli: &Cli, a: &RestoreArgs) -> anyhow::Result<i32> {
    let repo = open(cli, Access::Read).await?;
    let (id, snap) = resolve_snapshot(&repo, &a.snapshot, &a.filter.snapshots()).await?;
    let show = cli.progress_bars();
    match (&a.target, &a.path) {
        (Some(target), path) => {
            let mut include = a.include.clone();
            include.extend(path.clone());
            let bar = Bar::start("restored", show);
            let opts = ops::tree::restore::TreeRestoreOptions {
                target: target.clone(),
                include,
                overwrite: a.overwrite,
            };
            let r = ops::tree::restore::run(repo.clone(), &id, &snap, opts, bar.clone()).await;
            bar.finish();
            let r = r?;
            if !cli.quiet {
                for w in &r.warnings {
                    eprintln!("repo: warning: {w}");
                }
            }
            for w in &r.not_restored {
                eprintln!("repo: not restored: {w}");
            }
            emit(cli, &r, render::tree_restore)?;
            if !r.not_restored.is_empty() {
                return Ok(EXIT_PARTIAL);
            }
        }
        (None, Some(path)) => {
            let r = match &a.output {
                None => {
                    ops::tree::restore::run_file(
                        repo.clone(),
                        &id,
                        &snap,
                        path,
                        super::gzip_if(a.gzip, stdout_file()?),
                        Arc::new(repo::repo::NoProgress),
                    )
                    .await?
                }
                Some(o) => {
                    let r = write_atomically(o, |w| {
                        ops::tree::restore::run_file(
                            repo.clone(),
                            &id,
                            &snap,
                            path,
                            super::gzip_if(a.gzip, w),
                            Arc::new(repo::repo::NoProgress),
                        )
                    })
                    .await?;
                    emit(cli, &r, render::tree_restore)?;
                    r
                }
            };
            if cli.verbose {
                eprintln!("{}", render::tree_restore(&r));
            }
        }
        (None, None) => return Err(anyhow!("internal: not a tree restore")),
    }
    Ok(EXIT_OK)
}

pub async fn ls(cli: &Cli, a: &LsArgs) -> anyhow::Result<i32> {
    let repo = open(cli, Access::Read).await?;
    let (id, snap) = resolve_snapshot(&repo, &a.snapshot, &a.filter.snapshots()).await?;
    // rows are written as the catalog is read: a tree of millions of files is not held
    use std::io::Write;
    let mut so = std::io::BufWriter::new(std::io::stdout().lock());
    let mut rows = 0u64;
    let path = a.path.as_deref().unwrap_or(std::path::Path::new(""));
    let listed = ops::tree::restore::list(&repo, &id, &snap, path, |e| {
        let text = if cli.json {
            // the rows of a pretty-printed array, written one at a time
            let row = serde_json::to_string_pretty(&render::ls_json(e))
                .map_err(|err| repo::repo::RepoError::Output(std::io::Error::other(err)))?;
            let sep = if rows == 0 { "[\n" } else { ",\n" };
            format!("{sep}  {}", row.replace('\n', "\n  "))
        } else {
            render::ls_line(e) + "\n"
        };
        rows += 1;
        so.write_all(text.as_bytes()).map_err(repo::repo::RepoError::Output)
    })
    .await;
    let end = if !cli.json {
        ""
    } else if rows == 0 {
        "[]\n"
    } else {
        "\n]\n"
    };
    let done = listed.map_err(anyhow::Error::from).and_then(|_| {
        so.write_all(end.as_bytes())?;
        so.flush()?;
        Ok(())
    });
    if let Err(e) = done {
        let pipe = |e: &anyhow::Error| {
            let broken = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
            e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(broken)
                    || matches!(c.downcast_ref(), Some(repo::repo::RepoError::Output(io)) if broken(io))
            })
        };
        if !pipe(&e) {
            return Err(e);
        }
    }
    Ok(EXIT_OK)
}
