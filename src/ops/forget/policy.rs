//! The retention policy: which snapshots of one name to keep, and which rule keeps each.
//!
//! Pure and deterministic: snapshot times and the policy in, decisions out. Semantics (as
//! restic's, grouped by snapshot name):
//! * `last n`: the newest n snapshots.
//! * `hourly/daily/weekly/monthly/yearly n`: walking from the newest snapshot to the oldest,
//!   keep the newest snapshot of each hour (day, ISO week, month, year) until n such periods
//!   are kept. Periods are computed in the stated time zone; periods without a snapshot do not
//!   count.
//! * `within d`: every snapshot at or after the newest snapshot's time minus d (relative to
//!   the newest snapshot, not to now, so a stopped backup job never makes everything expire).
//! * `tag t`: every snapshot carrying tag t.
//!
//! A snapshot is removed only if no rule keeps it; an empty policy keeps everything.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};

/// A retention policy (see the module docs); the default keeps everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Keep the newest this many snapshots.
    pub last: usize,
    /// Keep the newest snapshot of each of this many hours.
    pub hourly: usize,
    /// Keep the newest snapshot of each of this many days.
    pub daily: usize,
    /// Keep the newest snapshot of each of this many ISO weeks.
    pub weekly: usize,
    /// Keep the newest snapshot of each of this many months.
    pub monthly: usize,
    /// Keep the newest snapshot of each of this many years.
    pub yearly: usize,
    /// Nanoseconds.
    pub within_ns: Option<i64>,
    /// Keep every snapshot carrying any of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// True when no rule is set: such a policy keeps everything, and `forget` refuses it.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// One snapshot as the policy sees it.
#[derive(Clone, Debug)]
pub struct Item {
    /// Snapshot time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The snapshot's tags, for `tag` rules.
    pub tags: Vec<String>,
}

/// What the policy decided for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// True if at least one rule keeps it.
    pub keep: bool,
    /// The rules that keep it ("last", "hourly", "daily", "weekly", "monthly", "yearly",
    /// "within", "tag t"); empty when it is removed.
    pub reasons: Vec<String>,
}

/// Why a duration does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// A unit letter without a number before it, or a number without a unit after it.
    #[error("{0:?}: expected a duration such as 7d, 24h, 2w or 1y6m")]
    Form(String),
    /// A unit other than y, m, w, d, h.
    #[error("{given:?}: unknown unit {unit:?} (use y, m, w, d, h; m is months)")]
    UnknownUnit {
        /// The whole argument.
        given: String,
        /// The unit letter.
        unit: char,
    },
    /// More than about 292 years (nanoseconds in an i64).
    #[error("{0:?}: too long")]
    TooLong(String),
}

/// Parses a duration such as `7d`, `24h`, `2w` or `1y6m`, in nanoseconds. Units: y (365
/// days), m (months of 30 days: `90m` is 90 months, not minutes), w, d, h.
pub fn parse_duration(s: &str) -> Result<i64, DurationError> {
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = match num.parse() {
            Ok(n) => n,
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                return Err(DurationError::TooLong(s.into()));
            }
            Err(_) => return Err(DurationError::Form(s.into())),
        };
        num.clear();
        let hours = match c {
            'y' => 365 * 24,
            'm' => 30 * 24,
            'w' => 7 * 24,
            'd' => 24,
            'h' => 1,
            _ => return Err(DurationError::UnknownUnit { given: s.into(), unit: c }),
        };
        total = n
            .checked_mul(hours * 3_600_000_000_000)
            .and_then(|ns| total.checked_add(ns))
            .ok_or_else(|| DurationError::TooLong(s.into()))?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(DurationError::Form(s.into()));
    }
    Ok(total)
}

fn bucket<Tz: TimeZone>(tz: &Tz, time_ns: i64, kind: usize) -> (i32, u32, u32) {
    let t: DateTime<Tz> = Utc.timestamp_nanos(time_ns).with_timezone(tz);
    match kind {
        0 => (t.year(), t.ordinal(), t.hour()),
        1 => (t.year(), t.ordinal(), 0),
        2 => {
            let w = t.iso_week();
            (w.year(), w.week(), 0)
        }
        3 => (t.year(), t.month(), 0),
        _ => (t.year(), 0, 0),
    }
}

/// Decides for the snapshots of one group at `now_ns`. `items` in any order; the result is in
/// the same order as `items`. `within` counts back from the newest snapshot, or from `now_ns`
/// if that is in the future: one snapshot dated years ahead (a wrong `--time`, a host clock)
/// must not make every real one fall outside the window.
pub fn apply<Tz: TimeZone>(policy: &Policy, items: &[Item], tz: &Tz, now_ns: i64) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // newest first; ties keep input order, so the result is deterministic
    order.sort_by(|a, b| items[*b].time_ns.cmp(&items[*a].time_ns).then(a.cmp(b)));
    let mut out = vec![Decision { keep: policy.is_empty(), reasons: vec![] }; items.len()];
    if policy.is_empty() {
        return out;
    }
    let newest = order.first().map(|i| items[*i].time_ns).unwrap_or(0).min(now_ns);
    let counts = [policy.hourly, policy.daily, policy.weekly, policy.monthly, policy.yearly];
    let names = ["hourly", "daily", "weekly", "monthly", "yearly"];
    let mut kept = [0usize; 5];
    let mut last: [Option<(i32, u32, u32)>; 5] = [None; 5];
    for (rank, &i) in order.iter().enumerate() {
        let it = &items[i];
        let mut reasons = Vec::new();
        if rank < policy.last {
            reasons.push("last".to_string());
        }
        for k in 0..5 {
            if kept[k] < counts[k] {
                let b = bucket(tz, it.time_ns, k);
                if last[k] != Some(b) {
                    last[k] = Some(b);
                    kept[k] += 1;
                    reasons.push(names[k].to_string());
                }
            }
        }
        if let Some(w) = policy.within_ns
            && it.time_ns >= newest.saturating_sub(w)
        {
            reasons.push("within".to_string());
        }
        for t in &policy.tags {
            if it.tags.contains(t) {
                reasons.push(format!("tag {t}"));
            }
        }
        out[i] = Decision { keep: !reasons.is_empty(), reasons };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn t(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_nanos_opt().unwrap()
    }
    fn items(times: &[&str]) -> Vec<Item> {
        times.iter().map(|s| Item { time_ns: t(s), tags: vec![] }).collect()
    }
    fn kept(p: &Policy, times: &[&str], tz: &impl TimeZone) -> Vec<String> {
        let it = items(times);
        apply(p, &it, tz, i64::MAX)
            .iter()
            .zip(times)
            .filter(|(d, _)| d.keep)
            .map(|(_, s)| s.to_string())
            .collect()
    }

    #[test]
    fn table_of_cases() {
        let utc = Utc;
        let cases: Vec<(&str, Policy, Vec<&str>, Vec<&str>)> = vec![
            (
                "hourly keeps the newest of each hour",
                Policy { hourly: 3, ..Default::default() },
                vec![
                    "2026-02-14T10:00:00Z",
                    "2026-02-14T10:30:00Z",
                    "2026-02-14T11:00:00Z",
                    "2026-02-14T12:15:00Z",
                    "2026-02-14T13:00:00Z",
                ],
                vec!["2026-02-14T11:00:00Z", "2026-02-14T12:15:00Z", "2026-02-14T13:00:00Z"],
            ),
            (
                "hours without a snapshot do not count",
                Policy { hourly: 2, ..Default::default() },
                vec!["2026-02-14T01:00:00Z", "2026-02-14T05:00:00Z", "2026-02-14T09:00:00Z"],
                vec!["2026-02-14T05:00:00Z", "2026-02-14T09:00:00Z"],
            ),
            (
                "daily",
                Policy { daily: 2, ..Default::default() },
                vec![
                    "2026-02-12T02:00:00Z",
                    "2026-02-13T02:00:00Z",
                    "2026-02-13T14:00:00Z",
                    "2026-02-14T02:00:00Z",
                ],
                vec!["2026-02-13T14:00:00Z", "2026-02-14T02:00:00Z"],
            ),
            (
                "weekly uses ISO weeks (Monday starts a week)",
                Policy { weekly: 2, ..Default::default() },
                vec!["2026-02-08T02:00:00Z", "2026-02-09T02:00:00Z", "2026-02-15T02:00:00Z"],
                vec!["2026-02-08T02:00:00Z", "2026-02-15T02:00:00Z"],
            ),
            (
                "monthly and yearly",
                Policy { monthly: 2, yearly: 2, ..Default::default() },
                vec![
                    "2025-06-01T00:00:00Z",
                    "2025-12-31T00:00:00Z",
                    "2026-01-05T00:00:00Z",
                    "2026-02-01T00:00:00Z",
                    "2026-02-20T00:00:00Z",
                ],
                vec!["2025-12-31T00:00:00Z", "2026-01-05T00:00:00Z", "2026-02-20T00:00:00Z"],
            ),
            (
                "last",
                Policy { last: 2, ..Default::default() },
                vec!["2026-02-12T02:00:00Z", "2026-02-13T02:00:00Z", "2026-02-14T02:00:00Z"],
                vec!["2026-02-13T02:00:00Z", "2026-02-14T02:00:00Z"],
            ),
            (
                "within is relative to the newest snapshot",
                Policy { within_ns: Some(parse_duration("2d").unwrap()), ..Default::default() },
                vec![
                    "2020-01-01T00:00:00Z",
                    "2020-01-08T00:00:00Z",
                    "2020-01-09T12:00:00Z",
                    "2020-01-10T00:00:00Z",
                ],
                vec!["2020-01-08T00:00:00Z", "2020-01-09T12:00:00Z", "2020-01-10T00:00:00Z"],
            ),
            (
                "an empty policy keeps everything",
                Policy::default(),
                vec!["2026-02-12T02:00:00Z", "2026-02-13T02:00:00Z"],
                vec!["2026-02-12T02:00:00Z", "2026-02-13T02:00:00Z"],
            ),
        ];
        for (what, p, times, want) in cases {
            assert_eq!(kept(&p, &times, &utc), want, "{what}");
        }
    }

    /// Found in an audit: one snapshot dated decades ahead made `--keep-within 30d` remove
    /// every real snapshot of its name.
    #[test]
    fn within_counts_from_now_when_the_newest_snapshot_is_in_the_future() {
        let p = Policy { within_ns: Some(30 * 86_400_000_000_000), ..Default::default() };
        let it = items(&["2062-01-01T00:00:00Z", "2026-02-13T00:00:00Z", "2025-01-01T00:00:00Z"]);
        let d = apply(&p, &it, &Utc, t("2026-02-14T00:00:00Z"));
        assert_eq!(d.iter().map(|d| d.keep).collect::<Vec<_>>(), [true, true, false]);
    }

    #[test]
    fn ties_keep_one_deterministically() {
        let p = Policy { daily: 1, ..Default::default() };
        let it = items(&["2026-02-14T02:00:00Z", "2026-02-14T02:00:00Z"]);
        let d = apply(&p, &it, &Utc, i64::MAX);
        assert_eq!(d.iter().filter(|d| d.keep).count(), 1);
        assert!(d[0].keep, "the first of equal times");
    }

    #[test]
    fn time_zone_moves_day_boundaries() {
        // 23:30 UTC and 00:30 UTC the next day: two days in UTC, one day at UTC+2
        let times = ["2026-02-13T23:30:00Z", "2026-02-14T00:30:00Z"];
        let p = Policy { daily: 2, ..Default::default() };
        assert_eq!(kept(&p, &times, &Utc).len(), 2);
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(kept(&p, &times, &plus2), vec!["2026-02-14T00:30:00Z"]);
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(kept(&p, &times, &berlin), vec!["2026-02-14T00:30:00Z"]);
    }

    #[test]
    fn reasons_name_every_rule_that_keeps() {
        let p = Policy { last: 1, daily: 1, tags: vec!["keep".into()], ..Default::default() };
        let mut it = items(&["2026-02-13T02:00:00Z", "2026-02-14T02:00:00Z"]);
        it[0].tags.push("keep".into());
        let d = apply(&p, &it, &Utc, i64::MAX);
        assert_eq!(d[1].reasons, vec!["last", "daily"]);
        assert_eq!(d[0].reasons, vec!["tag keep"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400 * 1_000_000_000);
        assert_eq!(parse_duration("1y2m").unwrap(), (365 + 60) * 86_400 * 1_000_000_000);
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("7x").is_err());
        assert!(parse_duration("").is_err());
        assert!(matches!(parse_duration("99999999999y"), Err(DurationError::TooLong(_))));
        assert!(matches!(parse_duration("90s"), Err(DurationError::UnknownUnit { unit: 's', .. })));
    }
}
