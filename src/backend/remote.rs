//! Every backend the storage library (opendal) offers: S3 and S3-compatible servers, SFTP,
//! WebDAV, Azure Blob, GCS. One adapter keeps the trait's guarantees on all of them:
//!
//! * `put` is atomic: object stores (S3, Azure, GCS) make a PUT visible whole or not at all;
//!   on file-like services (SFTP, WebDAV) the object is written under a temporary name and
//!   renamed, so a reader never sees a half-written object at its final name.
//! * Uploads are verified: the size the service reports back, and on S3 the ETag of a
//!   single-part upload, which is the MD5 of the bytes, must match what was sent.
//! * Transient errors (timeouts, 5xx, throttling) are retried with exponential backoff and
//!   jitter by the library's retry layer; permanent ones surface at once.
//! * Credentials never appear in [`Backend::location`] or in errors: the location keeps only
//!   scheme, host, bucket and path, never the query string or user information.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use md5::Digest;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use super::{Backend, BackendError, ObjectInfo, RangeBytes};

/// Temporary names of unfinished uploads on file-like services. `list` never returns them.
const TMP_MARKER: &str = ".tmp-";

/// A repository on a storage service through opendal (S3, SFTP, WebDAV, Azure Blob, GCS), with the
/// guarantees of the module docs: atomic verified `put`, retries, redacted locations.
pub struct RemoteBackend {
    op: Operator,
    location: String,
    /// Write to a temporary name and rename (services without atomic PUT).
    rename_into_place: bool,
    /// The service's ETag of a single-part upload is the MD5 of the content (S3).
    etag_is_md5: bool,
}

/// A repository URL split into its parts. `user`, `password` and `options` may carry
/// secrets: only [`RemoteUrl::redacted`] is ever shown.
pub struct RemoteUrl {
    /// Lowercased scheme: `s3`, `sftp`, `webdav`, `webdavs`, or another opendal service.
    pub scheme: String,
    /// Host name, or the bucket for `s3://`.
    pub host: String,
    /// Port, when the URL gives one.
    pub port: Option<u16>,
    /// User information before `@`, %-decoded (may hold `user:password`): the SFTP or WebDAV user.
    pub user: String,
    /// Path below the host or bucket, %-decoded, without a trailing `/`; empty for the root.
    pub path: String,
    /// Query options (`region`, `endpoint`, `key`, …): keys lowercased, values %-decoded; the last
    /// of a repeated key wins.
    pub options: Vec<(String, String)>,
}

/// Why a repository URL does not parse. The messages never repeat the URL (it may hold a
/// password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://`.
    #[error("a URL needs a scheme (scheme://…)")]
    NoScheme,
    /// A port above 65535.
    #[error("port out of range")]
    Port,
    /// Nothing between `scheme://` and the path.
    #[error("{0}:// URL names no host or bucket")]
    NoHost(String),
    /// A `%` not followed by two hex digits.
    #[error("bad %-escape in URL")]
    Escape,
    /// %-decoding gave bytes that are not UTF-8.
    #[error("URL is not UTF-8 after %-decoding")]
    Utf8,
}

impl RemoteUrl {
    /// Splits `scheme://[user@]host[:port][/path][?k=v&…]`; errors never repeat the URL.
    pub fn parse(url: &str) -> Result<RemoteUrl, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::NoScheme)?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (u, h),
            None => ("", authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p))
                if !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() =>
            {
                (h, Some(p.parse::<u16>().map_err(|_| UrlError::Port)?))
            }
            _ => (hostport, None),
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(scheme.into()));
        }
        let mut options = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            options.push((percent_decode(k)?.to_ascii_lowercase(), percent_decode(v)?));
        }
        Ok(RemoteUrl {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_string(),
            port,
            user: percent_decode(user)?,
            path: percent_decode(path.trim_end_matches('/'))?,
            options,
        })
    }

    /// `host[:port]`.
    fn host_port(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// `scheme://host[:port]/path`: no user, no password, no query options.
    pub fn redacted(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host_port(), self.path)
    }

    fn option(&self, key: &str) -> Option<&str> {
        self.options.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> Result<String, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .ok_or(UrlError::Escape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::Escape)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::Utf8)
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

impl RemoteBackend {
    /// Opens the service a URL names, with a 120 s operation timeout, a 60 s I/O timeout and up to
    /// 6 retries of transient errors. S3 credentials come from URL options or the usual AWS
    /// variables; SFTP's key from `key=` or `REPO_SFTP_KEY`; WebDAV's password from
    /// `REPO_WEBDAV_PASSWORD`.
    // Long (about 85 lines): one arm per service, each a list of builder options.
    pub fn open(url: &str) -> Result<RemoteBackend, BackendError> {
        let bad =
            |msg: String| BackendError::Config { location: redact_unparsed(url), message: msg };
        let u = RemoteUrl::parse(url).map_err(|e| bad(e.to_string()))?;
        opendal::install_default();
        let location = u.redacted();
        let (op, rename_into_place, etag_is_md5) = match u.scheme.as_str() {
            "s3" => {
                let mut b =
                    opendal::services::S3::default().bucket(&u.host).root(&format!("{}/", u.path));
                // Endpoint and region: URL options first, then the usual AWS variables.
                let endpoint = u
                    .option("endpoint")
                    .map(String::from)
                    .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                    .or_else(|| env("AWS_ENDPOINT_URL"));
                if let Some(e) = endpoint {
                    b = b.endpoint(&e);
                }
                let region = u
                    .option("region")
                    .map(String::from)
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"));
                b = b.region(region.as_deref().unwrap_or("us-east-1"));
                if let Some(v) = u.option("access_key_id") {
                    b = b.access_key_id(v);
                }
                if let Some(v) = u.option("secret_access_key") {
                    b = b.secret_access_key(v);
                }
                if matches!(u.option("virtual_host_style"), Some("true") | Some("1")) {
                    b = b.enable_virtual_host_style();
                }
                (Operator::new(b).map_err(|e| bad(short(&e)))?, false, true)
            }
            "sftp" => {
                let user = if u.user.is_empty() { String::new() } else { format!("{}@", u.user) };
                let endpoint = format!("ssh://{user}{}", u.host_port());
                let mut b = opendal::services::Sftp::default()
                    .endpoint(&endpoint)
                    .root(if u.path.is_empty() { "/" } else { &u.path });
                if let Some(k) = u.option("key").map(String::from).or_else(|| env("REPO_SFTP_KEY"))
                {
                    b = b.key(&k);
                }
                if let Some(s) = u.option("known_hosts").or(u.option("known_hosts_strategy")) {
                    b = b.known_hosts_strategy(s);
                }
                (Operator::new(b).map_err(|e| bad(short(&e)))?, true, false)
            }
            "webdav" | "webdavs" => {
                let http = if u.scheme == "webdavs" { "https" } else { "http" };
                let mut b = opendal::services::Webdav::default()
                    .endpoint(&format!("{http}://{}", u.host_port()))
                    .root(&format!("{}/", u.path));
                if !u.user.is_empty() {
                    b = b.username(&u.user);
                }
                if let Some(p) = env("REPO_WEBDAV_PASSWORD") {
                    b = b.password(&p);
                }
                (Operator::new(b).map_err(|e| bad(short(&e)))?, true, false)
            }
            _ => {
                // Everything else the library knows (azblob://, gcs://, …) by its own URI rules.
                let op = Operator::from_uri(url).map_err(|e| {
                    bad(format!("unsupported or invalid storage URL ({})", e.kind()))
                })?;
                (op, false, false)
            }
        };
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(120))
                    .with_io_timeout(Duration::from_secs(60)),
            )
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_max_times(6)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(20)),
            );
        Ok(RemoteBackend { op, location, rename_into_place, etag_is_md5 })
    }

    fn err(&self, path: &str, e: opendal::Error) -> BackendError {
        match e.kind() {
            ErrorKind::NotFound => BackendError::NotFound { path: path.into() },
            ErrorKind::PermissionDenied => {
                BackendError::PermissionDenied { path: format!("{}/{path}", self.location) }
            }
            _ => BackendError::Remote {
                path: format!("{}/{path}", self.location),
                message: short(&e),
                temporary: e.is_temporary(),
            },
        }
    }

    /// A range read that failed: past the end of an object cut short (S3 answers "range not
    /// satisfiable", or sends fewer bytes and the reader gives up) is a short read, damage of
    /// that object, as on local disk; anything else stays a storage error.
    async fn range_err(
        &self,
        path: &str,
        offset: u64,
        len: u64,
        e: opendal::Error,
    ) -> BackendError {
        // only the errors a cut-short object gives (S3's "range not satisfiable", or a body
        // shorter than the range): a stat whose length is unknown must not turn others into
        // damage
        if !matches!(e.kind(), ErrorKind::RangeNotSatisfied | ErrorKind::Unexpected) {
            return self.err(path, e);
        }
        match self.op.stat(path).await {
            Ok(m) if m.content_length() < offset + len => BackendError::ShortRead {
                path: path.into(),
                expected: len,
                got: m.content_length().saturating_sub(offset),
            },
            _ => self.err(path, e),
        }
    }
}

/// The error's message (or kind) and its innermost cause (connection refused, ssh's own
/// message, the service's error code), without the long context list, which may name endpoints.
fn short(e: &opendal::Error) -> String {
    let msg = e.message();
    let mut out = if msg.is_empty() { e.kind().to_string() } else { msg.to_string() };
    let root = std::iter::successors(std::error::Error::source(e), |c| c.source()).last();
    if let Some(c) = root {
        let c = c.to_string();
        // Causes that quote a request URL could carry presigned query strings: cut them.
        let c = match c.find('?') {
            Some(i) => format!("{}…", &c[..i]),
            None => c,
        };
        out = format!("{out}: {}", c.trim());
    }
    out
}

/// A URL that did not even parse is shown by its scheme only: the rest may hold secrets.
fn redact_unparsed(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => "(repository URL)".into(),
    }
}

#[async_trait]
impl Backend for RemoteBackend {
    async fn put(&self, path: &str, data: Vec<u8>) -> Result<(), BackendError> {
        let len = data.len() as u64;
        let md5 = if self.etag_is_md5 { Some(hex::encode(md5::Md5::digest(&data))) } else { None };
        let meta = if self.rename_into_place {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| BackendError::Io {
                path: path.into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let tmp = if dir.is_empty() {
                format!("{TMP_MARKER}{}-{name}", hex::encode(r))
            } else {
                format!("{dir}/{TMP_MARKER}{}-{name}", hex::encode(r))
            };
            let meta = self.op.write(&tmp, data).await.map_err(|e| self.err(path, e))?;
            if let Err(e) = self.op.rename(&tmp, path).await {
                // Objects are immutable: a rename onto an existing name (SFTP v3 refuses it)
                // means another writer already stored the same bytes.
                let _ = self.op.delete(&tmp).await;
                match self.op.stat(path).await {
                    Ok(m) if m.content_length() == len => {}
                    _ => return Err(self.err(path, e)),
                }
            }
            meta
        } else {
            self.op.write(path, data).await.map_err(|e| self.err(path, e))?
        };
        if let (Some(md5), Some(etag)) = (md5, meta.etag()) {
            let etag = etag.trim_matches('"');
            if etag.len() == 32 && !etag.contains('-') && !etag.eq_ignore_ascii_case(&md5) {
                return Err(BackendError::Remote {
                    path: format!("{}/{path}", self.location),
                    message: format!(
                        "upload verification failed: the server stored content with MD5 {etag}, sent {md5}"
                    ),
                    temporary: false,
                });
            }
        }
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, BackendError> {
        Ok(self.op.read(path).await.map_err(|e| self.err(path, e))?.to_vec())
    }

    async fn get_into(&self, path: &str, mut buf: Vec<u8>) -> Result<Vec<u8>, BackendError> {
        let got = self.op.read(path).await.map_err(|e| self.err(path, e))?;
        buf.clear();
        buf.reserve(got.len());
        for piece in got {
            buf.extend_from_slice(&piece);
        }
        Ok(buf)
    }

    async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        let got = self.get_range_pieces(path, offset, len).await?;
        Ok(got.copy_range(0, got.len()))
    }

    async fn get_range_pieces(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeBytes, BackendError> {
        if len == 0 {
            return Ok(RangeBytes::default());
        }
        let got: RangeBytes = match self.op.read_with(path).range(offset..offset + len).await {
            Ok(b) => b.collect(),
            Err(e) => return Err(self.range_err(path, offset, len, e).await),
        };
        // a server (or proxy) that ignored the range: every slice would be shifted, and it
        // says nothing about the object, so it is not damage
        if got.len() as u64 > len {
            return Err(BackendError::Remote {
                path: format!("{}/{path}", self.location),
                message: format!("{} bytes sent for a range of {len}", got.len()),
                temporary: false,
            });
        }
        if (got.len() as u64) < len {
            return Err(BackendError::ShortRead {
                path: path.into(),
                expected: len,
                got: got.len() as u64,
            });
        }
        Ok(got)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err(prefix, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if !e.metadata().is_file() {
                continue;
            }
            let path = e.path().trim_start_matches('/').to_string();
            let base = path.rsplit('/').next().unwrap_or(&path);
            if base.starts_with(TMP_MARKER) {
                continue;
            }
            let mut size = e.metadata().content_length();
            if size == 0 {
                // Some services list names only; ask for the size.
                size =
                    self.op.stat(&path).await.map_err(|er| self.err(&path, er))?.content_length();
            }
            out.push(ObjectInfo { path, size });
        }
        Ok(out)
    }

    async fn list_abandoned(&self, before: SystemTime) -> Result<Vec<ObjectInfo>, BackendError> {
        if !self.rename_into_place {
            return Ok(Vec::new()); // writes go straight to their names
        }
        let entries = match self.op.list_with("").recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("", e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let path = e.path().trim_start_matches('/').to_string();
            let base = path.rsplit('/').next().unwrap_or(&path);
            if !e.metadata().is_file() || !base.starts_with(TMP_MARKER) {
                continue;
            }
            let meta = match e.metadata().last_modified() {
                Some(_) => e.metadata().clone(),
                None => match self.op.stat(&path).await {
                    Ok(m) => m,
                    Err(er) if er.kind() == ErrorKind::NotFound => continue, // renamed
                    Err(er) => return Err(self.err(&path, er)),
                },
            };
            // a time the server does not tell is never old enough
            if meta.last_modified().is_some_and(|t| SystemTime::from(t) < before) {
                out.push(ObjectInfo { path, size: meta.content_length() });
            }
        }
        Ok(out)
    }

    async fn stat(&self, path: &str) -> Result<Option<u64>, BackendError> {
        match self.op.stat(path).await {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    async fn delete(&self, path: &str) -> Result<(), BackendError> {
        match self.op.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(path, e)),
        }
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_and_redaction() {
        let u = RemoteUrl::parse("s3://dev-cluster-backup/repo/x?endpoint=https://minio.local:9000&region=us-east-1&secret_access_key=SECRET").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.path.as_str()),
            ("s3", "dev-cluster-backup", "/repo/x")
        );
        assert_eq!(u.option("endpoint"), Some("https://minio.local:9000"));
        assert_eq!(u.redacted(), "s3://dev-cluster-backup/repo/x");
        assert!(!u.redacted().contains("SECRET"));

        let u = RemoteUrl::parse("sftp://backup:pw@nas.example:2222/backup-repo/").unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("backup:pw", "nas.example", Some(2222), "/backup-repo")
        );
        assert_eq!(u.redacted(), "sftp://nas.example:2222/backup-repo");

        assert!(RemoteUrl::parse("s3:///nobucket").is_err());
        assert!(RemoteUrl::parse("sftp://h:99999/x").is_err());
        assert!(RemoteUrl::parse("s3://b/%zz").is_err());
        assert_eq!(redact_unparsed("sftp://user:pw@host:99999/x"), "sftp://…");
    }
}
