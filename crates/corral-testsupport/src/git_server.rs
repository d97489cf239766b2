//! A git smart-HTTP server: `git http-backend` (CGI) behind the HTTPS [`Upstream`] front,
//! serving a bare repository the fixture creates with one commit.
//!
//! ```no_run
//! # use corral_testsupport::{tls::TestCa, git_server::GitServer};
//! let ca = TestCa::new();
//! let git = GitServer::start(&ca, &["git.corp.test"]);
//! // clone https://git.corp.test:PORT/repo.git with GIT_SSL_CAINFO=ca.ca_path()
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::upstream::{Recorded, Reply, Upstream};

/// The file committed into the served repository, and its contents.
pub const README: (&str, &str) = ("README.md", "corral test repository\n");

/// A running git HTTPS server.
pub struct GitServer {
    upstream: Upstream,
    dir: tempfile::TempDir,
}

impl GitServer {
    /// Serves `repo.git` over HTTPS with a certificate for `names` signed by `ca`.
    pub fn start(ca: &crate::tls::TestCa, names: &[&str]) -> GitServer {
        let dir = crate::fs::world_readable_tempdir();
        let root = dir.path().join("srv");
        std::fs::create_dir_all(&root).expect("create git root");
        make_repo(dir.path(), &root.join("repo.git"));
        let leaf = ca.leaf(names);
        let project_root = root.clone();
        let upstream = Upstream::https(&leaf, move |req| cgi(&project_root, req));
        GitServer { upstream, dir }
    }

    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.upstream.addr()
    }

    pub fn port(&self) -> u16 {
        self.upstream.port()
    }

    /// Path of the served bare repository.
    pub fn repo_path(&self) -> PathBuf {
        self.dir.path().join("srv/repo.git")
    }

    /// Every request the server received.
    pub fn requests(&self) -> Vec<Recorded> {
        self.upstream.requests()
    }
}

fn git(args: &[&str], cwd: &Path) {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", cwd)
        .output()
        .unwrap_or_else(|e| panic!("run git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_repo(dir: &Path, bare: &Path) {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("create work tree");
    git(&["init", "-q", "-b", "main"], &work);
    std::fs::write(work.join(README.0), README.1).expect("write README");
    git(&["add", "."], &work);
    git(
        &[
            "-c",
            "user.name=corral",
            "-c",
            "user.email=corral@example.invalid",
            "commit",
            "-q",
            "-m",
            "initial",
        ],
        &work,
    );
    git(
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf-8 path"),
            bare.to_str().expect("utf-8 path"),
        ],
        dir,
    );
}

/// Runs one request through `git http-backend` and turns its CGI output into a reply.
fn cgi(project_root: &Path, req: &Recorded) -> Reply {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.target.as_str(), ""),
    };
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ct) = req.header("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(ce) = req.header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", ce);
    }
    if let Some(proto) = req.header("git-protocol") {
        cmd.env("GIT_PROTOCOL", proto);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Reply::status(500, format!("cannot run git http-backend: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&req.body);
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return Reply::status(500, format!("git http-backend: {e}")),
    };
    parse_cgi(&out.stdout)
        .unwrap_or_else(|| Reply::status(500, String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn parse_cgi(out: &[u8]) -> Option<Reply> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))?;
    let head = std::str::from_utf8(&out[..split.0]).ok()?;
    let body = out[split.0 + split.1..].to_vec();
    let mut reply = Reply::status(200, body);
    reply.headers.clear();
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            reply.status = value.split_whitespace().next()?.parse().ok()?;
        } else {
            reply.headers.push((name.to_string(), value.to_string()));
        }
    }
    Some(reply)
}
