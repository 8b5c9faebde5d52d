//! `repo forget`: remove snapshots by retention policy (grouped by name) or by id.

pub mod policy;

use std::collections::BTreeMap;

use super::SnapshotInfo;
use crate::repo::{
    RepoError, Repository, Result, SnapshotFilter, list_snapshots, paths, resolve_snapshot,
};
use policy::{Item, Policy, apply};

/// What `repo forget` removes: snapshots chosen by a retention policy or by id.
#[derive(Clone, Debug)]
pub struct ForgetOptions {
    /// The retention rules, applied per snapshot name.
    pub policy: Policy,
    /// Explicit snapshots (id prefixes) to remove; with ids, no policy applies.
    pub ids: Vec<String>,
    /// Which snapshots the policy considers; others are neither kept nor removed.
    pub filter: SnapshotFilter,
    /// Time zone the hourly, daily, weekly, monthly and yearly periods are computed in.
    pub tz: chrono_tz::Tz,
    /// Report what would be removed without deleting anything.
    pub dry_run: bool,
}

/// One snapshot and the rules that keep it.
#[derive(Debug, serde::Serialize)]
pub struct Entry {
    /// The snapshot (flattened into the entry).
    #[serde(flatten)]
    pub snapshot: SnapshotInfo,
    /// The rules that keep it (empty when removed).
    pub reasons: Vec<String>,
}

/// The decisions for the snapshots of one name, newest first.
#[derive(Debug, Default, serde::Serialize)]
pub struct Group {
    /// The snapshot name, or `(by id)` for snapshots named explicitly.
    pub name: String,
    /// Snapshots kept, with their reasons.
    pub keep: Vec<Entry>,
    /// Snapshots removed (or that would be, in a dry run).
    pub remove: Vec<Entry>,
}

/// What `repo forget` decided (JSON output).
#[derive(Debug, Default, serde::Serialize)]
pub struct ForgetReport {
    /// True when nothing was deleted.
    pub dry_run: bool,
    /// One group per snapshot name (or one for snapshots given by id).
    pub groups: Vec<Group>,
    /// Snapshots kept, over all groups.
    pub kept: u64,
    /// Snapshot files removed (or that would be, in a dry run).
    pub removed: u64,
}

/// Applies the policy (or removes the given ids) and deletes the snapshot files of the removed
/// snapshots. Only snapshot files go: their data stays until `repo prune`. Without ids and with an
/// empty policy it refuses to do anything.
pub async fn run(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    let mut report = ForgetReport { dry_run: opts.dry_run, ..Default::default() };
    let mut doomed = Vec::new();
    if !opts.ids.is_empty() {
        let mut g = Group { name: "(by id)".into(), ..Default::default() };
        // `latest` and id prefixes resolve among the snapshots the filter selects: `forget
        // latest --name a` removes a's newest, never another name's
        for sel in &opts.ids {
            let (id, s) = resolve_snapshot(repo, sel, &opts.filter).await?;
            // two selectors of one snapshot (`latest` and its id) remove it once
            if doomed.contains(&id) {
                continue;
            }
            g.remove.push(Entry { snapshot: SnapshotInfo::new(&id, &s), reasons: vec![] });
            doomed.push(id);
        }
        report.groups.push(g);
    } else {
        if opts.policy.is_empty() {
            return Err(RepoError::NoPolicy);
        }
        let mut by_name: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (id, s) in list_snapshots(repo, &opts.filter).await? {
            by_name.entry(s.name.clone()).or_default().push((id, s));
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        for (name, snaps) in by_name {
            let items: Vec<Item> = snaps
                .iter()
                .map(|(_, s)| Item { time_ns: s.time_ns, tags: s.tags.clone() })
                .collect();
            let decisions = apply(&opts.policy, &items, &opts.tz, now);
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
        let forgot = !doomed.is_empty();
        for id in doomed {
            repo.backend().delete(&paths::snapshot(&id)).await?;
        }
        // bundles would keep copies of the snapshots just deleted
        crate::repo::store_bundle_if_worth(repo, forgot).await;
    }
    Ok(report)
}
