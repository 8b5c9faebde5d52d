//! Real storage servers on 127.0.0.1 for the remote-backend tests: `moto_server` (an
//! independent S3 implementation, in its own process) and a private OpenSSH `sshd` with
//! throwaway keys. Both are stopped when dropped. `scripts/test.sh` installs them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Waits for a line containing `needle` on `stream` (a child's stderr); returns that line.
fn wait_for_line(
    stream: impl std::io::Read + Send + 'static,
    needle: &'static str,
    what: &str,
) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if !found && line.contains(needle) {
                found = true;
                let _ = tx.send(line);
            }
            // keep draining so the server never blocks on a full pipe
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not start within 60 s"))
}

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

fn moto_binary() -> PathBuf {
    if let Ok(p) = std::env::var("REPO_TEST_MOTO_SERVER") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    "moto_server".into()
}

impl Moto {
    pub fn start() -> Moto {
        let bin = moto_binary();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); scripts/test.sh installs it (pip install 'moto[server]')", bin.display()));
        let line = wait_for_line(
            child.stderr.take().expect("stderr"),
            "Running on http://",
            "moto_server",
        );
        let endpoint = line[line.find("http://").expect("url")..].trim().to_string();
        Moto { child, endpoint }
    }

    /// Creates a bucket (moto accepts an unsigned PUT) and returns a repository URL in it.
    pub fn repo_url(&self, bucket: &str, prefix: &str) -> String {
        let hostport = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(hostport).expect("connect moto");
        use std::io::{Read, Write};
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("PUT bucket");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.contains("BucketAlreadyOwnedByYou"),
            "creating bucket {bucket}: {answer}"
        );
        format!("s3://{bucket}/{prefix}?endpoint={}&region=us-east-1", self.endpoint)
    }
}

impl Moto {
    /// Stores `bytes` as `bucket/key` behind the repository's back, with boto3 from moto's
    /// own environment: damage that `repo sync`, which checks what it copies, would not let
    /// through.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let python = moto_binary().with_file_name("python");
        let script = "import sys, boto3\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                aws_access_key_id='repo-test', aws_secret_access_key='repo-test-secret')\n\
            s3.put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=sys.stdin.buffer.read())\n";
        let mut child = Command::new(&python)
            .args(["-c", script, &self.endpoint, bucket, key])
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e})", python.display()));
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(bytes).expect("write body");
        assert!(child.wait().expect("python").success(), "putting {bucket}/{key}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Sshd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub user: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(ok.success());
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).expect("config");
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sshd not installed; scripts/test.sh installs openssh-server");
        let mut child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        wait_for_line(child.stderr.take().expect("stderr"), "Server listening", "sshd");
        let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
            .expect("utf8")
            .trim()
            .to_string();
        Sshd { child, dir, port, user }
    }

    /// A repository URL for an absolute `path` on this server.
    pub fn repo_url(&self, path: &Path) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}?key={}&known_hosts=accept",
            self.user,
            self.port,
            path.display(),
            self.dir.path().join("client_key").display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDAV server: `rclone serve webdav` over a temporary directory.
pub struct Webdav {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Webdav {
    pub fn start() -> Webdav {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut child = Command::new("rclone")
            .args(["serve", "webdav", "--addr", &format!("127.0.0.1:{port}")])
            .arg(dir.path())
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rclone not installed; scripts/test.sh installs it");
        wait_for_line(
            child.stderr.take().expect("stderr"),
            "WebDav Server started",
            "rclone serve webdav",
        );
        Webdav { child, dir, port }
    }
    pub fn repo_url(&self, path: &str) -> String {
        format!("webdav://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Webdav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
