//! File-name templates for `export` (snapshot → path) and `import` (path → name and time).
//!
//! Fields: `{name}` (the snapshot name, may contain `/`), `{base}` (its last component),
//! `{time:FORMAT}` (strftime, in the given time zone; `{time}` is `%Y%m%d-%H%M%S`), `{host}`,
//! `{tags}` (joined with `,`), `{id}` (8 hex digits). `{{` and `}}` are literal braces.

use crate::repo::RepoError;
use chrono::TimeZone;
use chrono::format::{Item, StrftimeItems};

/// The strftime format of `{time}` without a format: `20260214-020000`.
pub const DEFAULT_TIME: &str = "%Y%m%d-%H%M%S";

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Name,
    Base,
    Time(String),
    Host,
    Tags,
    Id,
}

/// A parsed file-name template (see the module docs).
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// The values a template is rendered from.
pub struct Fields<'a> {
    /// The snapshot name (or a server snapshot stream's export name).
    pub name: &'a str,
    /// Host that made the snapshot.
    pub host: &'a str,
    /// The snapshot's tags.
    pub tags: &'a [String],
    /// Snapshot id in hex; `{id}` takes its first 8 digits.
    pub id_hex: &'a str,
    /// Snapshot time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
}

/// Why a template does not parse, or what it gives for a snapshot is not a usable path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error("template {0:?}: unclosed {{")]
    Unclosed(String),
    /// A `}` without its `{` (a literal brace is written `}}`).
    #[error("template {0:?}: unmatched }}")]
    Unmatched(String),
    /// `{time:FORMAT}` with an empty or invalid strftime format.
    #[error("template {template:?}: {format:?} is not a strftime format")]
    TimeFormat {
        /// The whole template.
        template: String,
        /// The format given.
        format: String,
    },
    /// A field other than name, base, time, host, tags and id.
    #[error("template {template:?}: unknown field {{{field}}} (name, base, time, host, tags, id)")]
    UnknownField {
        /// The whole template.
        template: String,
        /// The field as written between the braces.
        field: String,
    },
}

impl std::str::FromStr for Template {
    type Err = TemplateError;
    fn from_str(t: &str) -> Result<Template, TemplateError> {
        Template::parse(t)
    }
}

impl Template {
    /// `{name}-{time}`: the stem of exported files when no template is given.
    pub fn default_stem() -> Template {
        Template {
            pieces: vec![Piece::Name, Piece::Lit("-".into()), Piece::Time(DEFAULT_TIME.into())],
        }
    }

    /// Parses a template; an unknown field, an invalid strftime format or an unmatched brace is an
    /// error naming the template.
    pub fn parse(t: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = t.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => field.push(c),
                            None => return Err(TemplateError::Unclosed(t.into())),
                        }
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    let (key, arg) = match field.split_once(':') {
                        Some((k, a)) => (k, Some(a)),
                        None => (field.as_str(), None),
                    };
                    pieces.push(match (key, arg) {
                        ("name", None) => Piece::Name,
                        ("base", None) => Piece::Base,
                        ("host", None) => Piece::Host,
                        ("tags", None) => Piece::Tags,
                        ("id", None) => Piece::Id,
                        ("time", f) => {
                            let f = f.unwrap_or(DEFAULT_TIME).to_string();
                            if f.is_empty()
                                || StrftimeItems::new(&f).any(|i| matches!(i, Item::Error))
                            {
                                return Err(TemplateError::TimeFormat {
                                    template: t.into(),
                                    format: f,
                                });
                            }
                            Piece::Time(f)
                        }
                        _ => {
                            return Err(TemplateError::UnknownField { template: t.into(), field });
                        }
                    });
                }
                '}' => return Err(TemplateError::Unmatched(t.into())),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template { pieces })
    }

    /// The relative path for a snapshot. Refuses results that would leave the export
    /// directory (absolute, `..`, empty components).
    pub fn render<Tz: TimeZone>(&self, f: &Fields, tz: &Tz) -> Result<String, RepoError>
    where
        Tz::Offset: std::fmt::Display,
    {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Name => out.push_str(f.name),
                Piece::Base => out.push_str(f.name.rsplit('/').next().unwrap_or(f.name)),
                Piece::Host => out.push_str(f.host),
                Piece::Tags => out.push_str(&f.tags.join(",")),
                Piece::Id => out.push_str(&f.id_hex[..8.min(f.id_hex.len())]),
                Piece::Time(fmt) => {
                    let t = tz.timestamp_nanos(f.time_ns);
                    out.push_str(&t.format(fmt).to_string());
                }
            }
        }
        if out.is_empty()
            || out.starts_with('/')
            || out.split('/').any(|c| c.is_empty() || c == "." || c == "..")
            || out.contains('\0')
        {
            return Err(RepoError::ExportPath { path: out, snapshot: f.name.into() });
        }
        Ok(out)
    }

    /// Matches the end of `path` against the template; gives the name (from `{name}`, or
    /// `{base}` with the directories the template does not spell out) and the time (UTC).
    pub fn match_path(&self, path: &str) -> Option<(Option<String>, Option<i64>)> {
        let mut re = String::from("(?:^|/)");
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => re.push_str(&regex::escape(s)),
                Piece::Name => re.push_str("(?P<name>.+?)"),
                Piece::Base => re.push_str("(?P<base>[^/]+?)"),
                Piece::Host => re.push_str("[^/]*?"),
                Piece::Tags => re.push_str("[^/]*?"),
                Piece::Id => re.push_str("[0-9a-f]{8}"),
                Piece::Time(fmt) => {
                    re.push_str("(?P<time>");
                    re.push_str(&time_regex(fmt)?);
                    re.push(')');
                }
            }
        }
        re.push('$');
        let re = regex::Regex::new(&re).ok()?;
        let caps = re.captures(path)?;
        let time_fmt = self
            .pieces
            .iter()
            .find_map(|p| if let Piece::Time(f) = p { Some(f.as_str()) } else { None });
        let time = match (caps.name("time"), time_fmt) {
            (Some(m), Some(fmt)) => Some(parse_time(m.as_str(), fmt)?),
            _ => None,
        };
        let name = if let Some(n) = caps.name("name") {
            Some(n.as_str().to_string())
        } else if let Some(b) = caps.name("base") {
            // `{base}` alone: the name is the parent directory plus the base, as export's
            // default `{name}` layout writes it (postgres/fnb-admin-….dump.gz →
            // postgres/fnb-admin).
            let start = caps.get(0).map(|m| m.start()).unwrap_or(0);
            let parent = path[..start].rsplit('/').next().filter(|p| !p.is_empty());
            Some(match parent {
                Some(p) => format!("{p}/{}", b.as_str()),
                None => b.as_str().to_string(),
            })
        } else {
            None
        };
        Some((name, time))
    }
}

fn time_regex(fmt: &str) -> Option<String> {
    let mut re = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            re.push_str(&regex::escape(&c.to_string()));
            continue;
        }
        re.push_str(match chars.next()? {
            'Y' => r"\d{4}",
            'm' | 'd' | 'H' | 'M' | 'S' | 'y' => r"\d{2}",
            'j' => r"\d{3}",
            's' => r"\d+",
            'z' => r"[+-]\d{4}",
            'F' => r"\d{4}-\d{2}-\d{2}",
            'T' => r"\d{2}:\d{2}:\d{2}",
            '%' => "%",
            _ => return None,
        });
    }
    Some(re)
}

/// A time written by `fmt`, as UTC nanoseconds. Missing parts: midnight.
fn parse_time(s: &str, fmt: &str) -> Option<i64> {
    use chrono::{NaiveDate, NaiveDateTime};
    if let Ok(t) = chrono::DateTime::parse_from_str(s, fmt) {
        return t.timestamp_nanos_opt();
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
        return t.and_utc().timestamp_nanos_opt();
    }
    NaiveDate::parse_from_str(s, fmt).ok()?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt()
}

/// What a stream holds, from its first bytes: the file extension export gives it.
pub fn stream_extension(head: &[u8]) -> &'static str {
    if head.starts_with(b"PGDMP") {
        ".dump"
    } else if head.starts_with(b"--\n-- PostgreSQL database")
        || head.starts_with(b"--\n-- PostgreSQL database cluster dump")
    {
        ".sql"
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        ".tar"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_nanos_opt().unwrap()
    }
    fn f<'a>(name: &'a str, time: &str, tags: &'a [String]) -> Fields<'a> {
        Fields { name, host: "db-host", tags, id_hex: "3fa1c2d4e5f6", time_ns: ns(time) }
    }

    #[test]
    fn the_four_classic_paths() {
        let utc = chrono::Utc;
        let def = Template::parse("{name}-{time}.dump.gz").unwrap();
        assert_eq!(
            def.render(&f("postgres/fnb-admin", "2026-02-14T02:00:00Z", &[]), &utc).unwrap(),
            "postgres/fnb-admin-20260214-020000.dump.gz"
        );
        assert_eq!(
            def.render(&f("timescaledb/timescaledb", "2026-02-14T02:00:00Z", &[]), &utc).unwrap(),
            "timescaledb/timescaledb-20260214-020000.dump.gz"
        );
        let lvm = Template::parse("lvm-snapshots/{base}-snap-{time:%Y%m%d}.tar.gz").unwrap();
        assert_eq!(
            lvm.render(&f("lvm/ubuntu-lv", "2026-02-09T03:00:00Z", &[]), &utc).unwrap(),
            "lvm-snapshots/ubuntu-lv-snap-20260209.tar.gz"
        );
        let hourly =
            Template::parse("hourly/backup-{time:%Y-%m-%dT%H:%M:%SZ}-dumpall.sql.gz").unwrap();
        assert_eq!(
            hourly.render(&f("prod/dumpall", "2022-11-28T08:51:08Z", &[]), &utc).unwrap(),
            "hourly/backup-2022-11-28T08:51:08Z-dumpall.sql.gz"
        );
    }

    #[test]
    fn other_fields_zones_and_refusals() {
        let tags = vec!["daily".to_string(), "prod".to_string()];
        let t = Template::parse("{host}/{tags}/{id}-{{x}}-{time:%H%M}").unwrap();
        assert_eq!(
            t.render(&f("a", "2026-02-14T02:00:00Z", &tags), &chrono::Utc).unwrap(),
            "db-host/daily,prod/3fa1c2d4-{x}-0200"
        );
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            t.render(&f("a", "2026-02-14T02:00:00Z", &tags), &berlin).unwrap(),
            "db-host/daily,prod/3fa1c2d4-{x}-0300"
        );
        for bad in ["{nme}", "{time:%Q}", "{name", "x}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        let t = Template::parse("{name}").unwrap();
        for name in ["../etc/passwd", "/abs", "a//b", "a/./b", ""] {
            assert!(
                t.render(&f(name, "2026-02-14T02:00:00Z", &[]), &chrono::Utc).is_err(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn import_reads_name_and_time_back() {
        let def = Template::parse("{base}-{time}.dump.gz").unwrap();
        let (name, time) =
            def.match_path("/mnt/backup/postgres/fnb-admin-20260214-020000.dump.gz").unwrap();
        assert_eq!(name.as_deref(), Some("postgres/fnb-admin"));
        assert_eq!(time, Some(ns("2026-02-14T02:00:00Z")));
        let hourly = Template::parse("backup-{time:%Y-%m-%dT%H:%M:%SZ}-dumpall.sql.gz").unwrap();
        let (name, time) =
            hourly.match_path("/backup/hourly/backup-2022-11-28T08:51:08Z-dumpall.sql.gz").unwrap();
        assert_eq!((name, time), (None, Some(ns("2022-11-28T08:51:08Z"))));
        let lvm = Template::parse("{base}-snap-{time:%Y%m%d}.tar.gz").unwrap();
        let (name, time) = lvm.match_path("ubuntu-lv-snap-20260209.tar.gz").unwrap();
        assert_eq!((name.as_deref(), time), (Some("ubuntu-lv"), Some(ns("2026-02-09T00:00:00Z"))));
        assert!(def.match_path("/mnt/backup/postgres/notes.txt").is_none());
        assert!(def.match_path("/x/db-20261399-020000.dump.gz").is_none(), "month 13 accepted");
    }

    #[test]
    fn extensions_from_content() {
        assert_eq!(stream_extension(b"PGDMP\x01\x0f\x00"), ".dump");
        assert_eq!(stream_extension(b"--\n-- PostgreSQL database dump\n"), ".sql");
        assert_eq!(stream_extension(b"\x00\x01"), "");
    }
}
