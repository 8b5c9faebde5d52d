//! `repo check --max-age 'postgres/*=26h'`: the alarm for the classic failure of a cron
//! backup, one that stopped and nobody noticed. Every name matching the glob must have a
//! snapshot younger than the limit; a glob that matches no snapshot at all is late too.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::ops::forget::policy::parse_duration;
use crate::repo::{Repository, Result, SnapshotFilter, glob_match, list_snapshots};

/// One `NAME_GLOB=DURATION` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct MaxAge {
    /// Glob over snapshot names (`*` also crosses `/`).
    pub pattern: String,
    /// The original duration text, for messages.
    pub limit: String,
    /// The longest allowed age of a name's newest snapshot, nanoseconds.
    pub max_ns: i64,
}

/// Why a `--max-age` rule does not parse.
#[derive(Debug, thiserror::Error)]
pub enum MaxAgeError {
    /// Not of the form `NAME_GLOB=DURATION`, or one side is empty.
    #[error("{0:?}: expected NAME_GLOB=DURATION, such as 'postgres/*=26h'")]
    Form(String),
    /// The duration does not parse.
    #[error(transparent)]
    Duration(#[from] crate::ops::forget::policy::DurationError),
}

impl FromStr for MaxAge {
    type Err = MaxAgeError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let (pattern, limit) = s.rsplit_once('=').ok_or_else(|| MaxAgeError::Form(s.into()))?;
        if pattern.is_empty() || limit.is_empty() {
            return Err(MaxAgeError::Form(s.into()));
        }
        let max_ns = parse_duration(limit).map_err(MaxAgeError::Duration)?;
        Ok(MaxAge { pattern: pattern.into(), limit: limit.into(), max_ns })
    }
}

/// A name whose newest snapshot is older than its rule allows (or a rule with no snapshot).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Late {
    /// The rule, as given.
    pub rule: String,
    /// The snapshot name; absent when no snapshot matches the rule at all.
    pub name: Option<String>,
    /// Time of the newest snapshot of the name (RFC 3339).
    pub newest: Option<String>,
    /// Age of the newest snapshot when checked, hours; absent when no snapshot matches.
    pub age_hours: Option<f64>,
}

/// How far ahead of this host's clock a snapshot may be dated and still count as a backup
/// that ran (clocks of the hosts that back up differ a little).
const FUTURE_SKEW_NS: i64 = 3_600_000_000_000;

/// The names that are late at `now_ns`, rule by rule.
pub async fn late(repo: &Repository, rules: &[MaxAge], now_ns: i64) -> Result<Vec<Late>> {
    if rules.is_empty() {
        return Ok(vec![]);
    }
    let mut newest: BTreeMap<String, i64> = BTreeMap::new();
    for (_, s) in list_snapshots(repo, &SnapshotFilter::default()).await? {
        // a snapshot dated ahead of this clock by more than a skew between hosts (a wrong
        // `--time`, a clock years off) says nothing about whether backups still run
        if s.time_ns > now_ns.saturating_add(FUTURE_SKEW_NS) {
            continue;
        }
        let t = newest.entry(s.name.clone()).or_insert(s.time_ns);
        *t = (*t).max(s.time_ns);
    }
    let mut out = Vec::new();
    for r in rules {
        let rule = format!("{}={}", r.pattern, r.limit);
        let matching: Vec<(&String, &i64)> =
            newest.iter().filter(|(n, _)| glob_match(&r.pattern, n)).collect();
        if matching.is_empty() {
            out.push(Late { rule, name: None, newest: None, age_hours: None });
            continue;
        }
        for (name, t) in matching {
            if now_ns.saturating_sub(*t) > r.max_ns {
                out.push(Late {
                    rule: rule.clone(),
                    name: Some(name.clone()),
                    newest: Some(super::rfc3339(*t)),
                    age_hours: Some(now_ns.saturating_sub(*t) as f64 / 3.6e12),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_say_why() {
        let r: MaxAge = "postgres/*=26h".parse().unwrap();
        assert_eq!((r.pattern.as_str(), r.max_ns), ("postgres/*", 26 * 3_600_000_000_000));
        assert_eq!("lvm/*=8d".parse::<MaxAge>().unwrap().max_ns, 8 * 24 * 3_600_000_000_000);
        assert!(matches!("postgres/*".parse::<MaxAge>(), Err(MaxAgeError::Form(_))));
        assert!(matches!("=26h".parse::<MaxAge>(), Err(MaxAgeError::Form(_))));
        assert!(matches!("p=26x".parse::<MaxAge>(), Err(MaxAgeError::Duration(_))));
    }
}
