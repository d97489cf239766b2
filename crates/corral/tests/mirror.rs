//! `corral mirror`: the release layout served over TLS, HTTP semantics real clients rely on,
//! signed redirects to storage, and the maintenance commands (add, verify, sync, presign).

mod mirror_support;

use std::process::{Command, Output};

use corral_testsupport::process::{corral_bin, output};
use mirror_support::{corral_ok, host_platform, Mirror, MirrorOptions};

/// curl against the mirror, trusting the test CA; `-sS`, never following redirects unless asked.
fn curl(mirror: &Mirror, args: &[&str]) -> Output {
    output(
        Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(mirror.ca_path())
            .args(args),
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Status code and headers (lower-cased names) from `curl -i` / `-I` output.
fn status_and_headers(raw: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = raw.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn mirror_serves_claude_code_release_layout_over_tls() {
    let mirror = Mirror::with_versions(&["1.0.0", "1.1.0"], MirrorOptions::default());
    let platform = host_platform();
    assert_eq!(
        stdout(&curl(&mirror, &["-f", &format!("{}/stable", mirror.url)])),
        "1.1.0\n"
    );
    assert_eq!(
        stdout(&curl(&mirror, &["-f", &format!("{}/latest", mirror.url)])),
        "1.1.0\n"
    );
    let manifest: serde_json::Value = serde_json::from_str(&stdout(&curl(
        &mirror,
        &["-f", &format!("{}/1.0.0/manifest.json", mirror.url)],
    )))
    .unwrap();
    assert_eq!(manifest["version"], "1.0.0");
    assert!(manifest["buildDate"].is_string());
    let entry = &manifest["platforms"][&platform];
    assert_eq!(entry["binary"], "claude");
    let body = curl(
        &mirror,
        &["-f", &format!("{}/1.0.0/{platform}/claude", mirror.url)],
    )
    .stdout;
    assert_eq!(body.len() as u64, entry["size"].as_u64().unwrap());
    let mut d = corral_mirror::release::Digester::default();
    d.update(&body);
    assert_eq!(d.finish(), entry["checksum"].as_str().unwrap());

    // Content types.
    for (path, ty) in [
        ("/stable".to_string(), "text/plain"),
        ("/1.0.0/manifest.json".to_string(), "application/json"),
        (
            format!("/1.0.0/{platform}/claude"),
            "application/octet-stream",
        ),
        ("/install.sh".to_string(), "text/x-shellscript"),
    ] {
        let raw = stdout(&curl(&mirror, &["-I", &format!("{}{path}", mirror.url)]));
        let (status, headers) = status_and_headers(&raw);
        assert_eq!(status, 200, "{path}: {raw}");
        assert!(
            header(&headers, "content-type").unwrap().starts_with(ty),
            "{path}: {raw}"
        );
    }

    // Nothing outside the layout: traversal and hidden files are 404.
    for path in ["/../etc/passwd", "/.corral-mirror.lock", "/1.0.0/", "/nope"] {
        let out = curl(
            &mirror,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--path-as-is",
                &format!("{}{path}", mirror.url),
            ],
        );
        assert_eq!(stdout(&out), "404", "{path}");
    }

    // One JSON access-log line per request.
    let log = mirror.access_log();
    assert!(log
        .iter()
        .any(|l| l["path"] == "/stable" && l["status"] == 200 && l["listener"] == "mirror"));
    assert!(log
        .iter()
        .all(|l| l["ts"].is_string() && l["remote"].is_string()));
}

#[test]
fn head_range_and_etag_behave_like_a_real_file_server() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let url = format!("{}/1.0.0/{}/claude", mirror.url, host_platform());
    let full = curl(&mirror, &["-f", &url]).stdout;
    let len = full.len();

    let (status, headers) = status_and_headers(&stdout(&curl(&mirror, &["-I", &url])));
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-length"),
        Some(len.to_string().as_str())
    );
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
    let etag = header(&headers, "etag").expect("etag").to_string();

    // A single range.
    let out = curl(&mirror, &["-i", "-r", "2-5", &url]);
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, headers) = status_and_headers(&raw);
    assert_eq!(status, 206, "{raw}");
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes 2-5/{len}").as_str())
    );
    assert!(out.stdout.ends_with(&full[2..6]));
    // Open-ended and suffix ranges.
    assert_eq!(curl(&mirror, &["-r", "4-", &url]).stdout, full[4..]);
    assert_eq!(
        curl(&mirror, &["-H", "Range: bytes=-3", &url]).stdout,
        full[len - 3..]
    );
    // Unsatisfiable.
    let raw = stdout(&curl(&mirror, &["-i", "-r", &format!("{len}-"), &url]));
    let (status, headers) = status_and_headers(&raw);
    assert_eq!(status, 416, "{raw}");
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );

    // If-None-Match.
    let raw = stdout(&curl(
        &mirror,
        &["-i", "-H", &format!("If-None-Match: {etag}"), &url],
    ));
    assert_eq!(status_and_headers(&raw).0, 304, "{raw}");
    let raw = stdout(&curl(
        &mirror,
        &["-I", "-H", "If-None-Match: \"other\"", &url],
    ));
    assert_eq!(status_and_headers(&raw).0, 200, "{raw}");

    // Only GET and HEAD.
    let out = curl(
        &mirror,
        &["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &url],
    );
    assert_eq!(stdout(&out), "405");
}

#[test]
fn redirect_mode_sends_binaries_to_signed_expiring_storage_links() {
    let mirror = Mirror::with_versions(
        &["1.0.0"],
        MirrorOptions {
            redirect: true,
            ..Default::default()
        },
    );
    let storage = mirror.storage_url.clone().unwrap();
    let path = format!("/1.0.0/{}/claude", host_platform());
    let url = format!("{}{path}", mirror.url);

    // The mirror answers 302 to the storage host; metadata is served directly.
    let raw = stdout(&curl(&mirror, &["-i", &url]));
    let (status, headers) = status_and_headers(&raw);
    assert_eq!(status, 302, "{raw}");
    let location = header(&headers, "location").unwrap().to_string();
    assert!(
        location.starts_with(&format!("{storage}{path}?expires=")),
        "{location}"
    );
    assert!(location.contains("&signature="), "{location}");
    let raw = stdout(&curl(
        &mirror,
        &["-i", &format!("{}/1.0.0/manifest.json", mirror.url)],
    ));
    assert_eq!(status_and_headers(&raw).0, 200);

    // curl follows the redirect and gets the binary.
    let direct = std::fs::read(mirror.binary_path("1.0.0")).unwrap();
    let out = curl(&mirror, &["-fL", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, direct);

    // Without a signature, with a tampered one, or for another path: 403.
    let code = |u: &str| {
        stdout(&curl(
            &mirror,
            &["-o", "/dev/null", "-w", "%{http_code}", u],
        ))
    };
    assert_eq!(code(&format!("{storage}{path}")), "403");
    let tampered = location.replace("expires=", "expires=9");
    assert_eq!(code(&tampered), "403");
    let other = location.replacen(&path, "/1.0.0/manifest.json", 1);
    assert_eq!(code(&other), "403");
    assert_eq!(code(&location), "200");

    // An expired link (validly signed, expiry in the past) is refused with a reason.
    let expired = corral_ok(&[
        "mirror",
        "presign",
        "--signing-key",
        mirror.key_path.to_str().unwrap(),
        "--storage-url",
        &storage,
        "--expires-at",
        "1000000000",
        &path,
    ]);
    let out = curl(&mirror, &["-i", expired.trim()]);
    let raw = stdout(&out);
    assert_eq!(status_and_headers(&raw).0, 403, "{raw}");
    assert!(raw.contains("expired"), "{raw}");
    // The same path freshly presigned works.
    let fresh = corral_ok(&[
        "mirror",
        "presign",
        "--signing-key",
        mirror.key_path.to_str().unwrap(),
        "--storage-url",
        &storage,
        &path,
    ]);
    assert_eq!(code(fresh.trim()), "200");

    // The access log never records the signature.
    let log = std::fs::read_to_string(&mirror.access_log).unwrap();
    assert!(!log.contains("signature="), "{log}");
    assert!(log.contains("\"listener\":\"storage\""));
}

#[test]
fn verify_catches_tampering_and_sync_copies_verified_releases() {
    let upstream = Mirror::with_versions(&["1.0.0", "2.0.0"], MirrorOptions::default());
    let root = upstream.root();
    corral_ok(&[
        "mirror",
        "set-channel",
        root.to_str().unwrap(),
        "stable",
        "1.0.0",
    ]);
    let out = corral_ok(&["mirror", "verify", root.to_str().unwrap()]);
    assert!(out.contains("ok: 3 binaries"), "{out}");

    // sync into a fresh directory over TLS: channels, manifests, binaries and corral itself.
    let local = tempfile::tempdir().unwrap();
    let dest = local.path().join("m");
    let ca = upstream.ca_path().to_str().unwrap().to_string();
    let out = corral_ok(&[
        "mirror",
        "sync",
        dest.to_str().unwrap(),
        "--from",
        &upstream.url,
        "--ca-file",
        &ca,
    ]);
    assert!(out.contains("2 downloaded and verified"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dest.join("stable")).unwrap(),
        "1.0.0\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("latest")).unwrap(),
        "2.0.0\n"
    );
    assert_eq!(
        std::fs::read(dest.join(format!("2.0.0/{}/claude", host_platform()))).unwrap(),
        std::fs::read(upstream.binary_path("2.0.0")).unwrap()
    );
    assert!(corral_ok(&["mirror", "verify", dest.to_str().unwrap()]).contains("ok: 3 binaries"));
    // A second sync downloads nothing.
    let out = corral_ok(&[
        "mirror",
        "sync",
        dest.to_str().unwrap(),
        "--from",
        &upstream.url,
        "--ca-file",
        &ca,
    ]);
    assert!(out.contains("0 downloaded"), "{out}");

    // Tamper upstream: sync refuses to place it; verify names the file.
    let bin = upstream.binary_path("2.0.0");
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&bin, &bytes).unwrap();
    let out = output(
        Command::new(corral_bin())
            .args(["mirror", "verify"])
            .arg(&root),
    );
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains(&format!("2.0.0/{}/claude: sha256", host_platform())),
        "{text}"
    );
    let fresh = local.path().join("fresh");
    let out = output(
        Command::new(corral_bin())
            .args(["mirror", "sync"])
            .arg(&fresh)
            .args(["--from", &upstream.url, "--ca-file", &ca]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!fresh
        .join(format!("2.0.0/{}/claude", host_platform()))
        .exists());
}

#[test]
fn add_refuses_bad_names_and_set_channel_needs_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = mirror_support::payload(dir.path(), "x");
    let root = dir.path().join("m");
    for (version, platform) in [
        ("../1", "linux-x64"),
        ("1.0", "linux-x65"),
        ("", "linux-x64"),
    ] {
        let out = output(
            Command::new(corral_bin())
                .args(["mirror", "add"])
                .arg(&root)
                .args(["--version", version, "--platform", platform])
                .arg(&file),
        );
        assert!(!out.status.success(), "{version} {platform}");
    }
    let out = output(
        Command::new(corral_bin())
            .args(["mirror", "set-channel"])
            .arg(&root)
            .args(["stable", "9.9.9"]),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("add it first"));
}
