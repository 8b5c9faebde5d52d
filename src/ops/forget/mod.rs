//! `repo forget`: remove snapshots by retention policy (grouped by name) or by id.

pub mod policy;

use std::collections::BTreeMap;

use super::SnapshotInfo;
use crate::repo::{
    RepoError, Repository, Result, SnapshotFilter, list_snapshots, paths, resolve_snapshot,
};
use policy::{Item, Policy, apply};

#[derive(Clone, Debug)]
pub struct ForgetOptions {
    pub policy: Policy,
    /// Explicit snapshots (id prefixes) to remove; with ids, no policy applies.
    pub ids: Vec<String>,
    pub filter: SnapshotFilter,
    pub tz: chrono_tz::Tz,
    pub dry_run: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct Entry {
    #[serde(flatten)]
    pub snapshot: SnapshotInfo,
    /// The rules that keep it (empty when removed).
    pub reasons: Vec<String>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Group {
    pub name: String,
    pub keep: Vec<Entry>,
    pub remove: Vec<Entry>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub groups: Vec<Group>,
    pub kept: u64,
    pub removed: u64,
}

pub async fn run(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    let mut report = ForgetReport { dry_run: opts.dry_run, ..Default::default() };
    let mut doomed = Vec::new();
    if !opts.ids.is_empty() {
        let mut g = Group { name: "(by id)".into(), ..Default::default() };
        for sel in &opts.ids {
            let (id, s) = resolve_snapshot(repo, sel, &SnapshotFilter::default()).await?;
            g.remove.push(Entry { snapshot: SnapshotInfo::new(&id, &s), reasons: vec![] });
            doomed.push(id);
        }
        report.groups.push(g);
    } else {
        if opts.policy.is_empty() {
            return Err(RepoError::Aborted(
                "no policy given (--keep-last, --keep-daily, …) and no snapshot ids: nothing to do"
                    .into(),
            ));
        }
        let mut by_name: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (id, s) in list_snapshots(repo, &opts.filter).await? {
            by_name.entry(s.name.clone()).or_default().push((id, s));
        }
        for (name, snaps) in by_name {
            let items: Vec<Item> = snaps
                .iter()
                .map(|(_, s)| Item { time_ns: s.time_ns, tags: s.tags.clone() })
                .collect();
            let decisions = apply(&opts.policy, &items, &opts.tz);
            let mut g = Group { name, ..Default::default() };
            // newest first in the report
            for ((id, s), d) in snaps.iter().zip(decisions).rev() {
                let e = Entry { snapshot: SnapshotInfo::new(id, s), reasons: d.reasons };
                if d.keep {
                    g.keep.push(e);
                } else {
                    doomed.push(*id);
                    g.remove.push(e);
                }
            }
            report.groups.push(g);
        }
    }
    report.kept = report.groups.iter().map(|g| g.keep.len() as u64).sum();
    report.removed = doomed.len() as u64;
    if !opts.dry_run {
        for id in doomed {
            repo.backend().delete(&paths::snapshot(&id)).await?;
        }
    }
    Ok(report)
}
