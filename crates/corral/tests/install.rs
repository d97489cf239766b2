//! `corral install claude` and `install.sh`, run as an ordinary user with HOME in a temp dir,
//! against a real `corral mirror serve` over TLS with a test CA.

mod mirror_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use corral_testsupport::process::{corral_bin, output, Background};
use corral_testsupport::user::{Runner, TempHome};
use mirror_support::{host_platform, snapshot, Mirror, MirrorOptions};

/// A command run as the test's ordinary user, with HOME set and a clean environment.
fn as_user(runner: &Runner, home: &TempHome, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = runner.command(program);
    cmd.env("HOME", home.path())
        .env("SHELL", "/bin/bash")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SSL_CERT_FILE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("CORRAL_GATEWAY_KEY")
        .env_remove("SUDO_USER")
        .current_dir(home.path());
    cmd
}

fn install(runner: &Runner, home: &TempHome, mirror: &Mirror, extra: &[&str]) -> Output {
    let mut cmd = as_user(runner, home, corral_bin());
    cmd.args([
        "install",
        "claude",
        "--mirror",
        &mirror.url,
        "--gateway",
        &mirror.gateway,
    ])
    .args(["--region", "eu-central-1", "--model", "test-model-1"])
    .arg("--ca-file")
    .arg(mirror.ca_path())
    .args(extra);
    output(&mut cmd)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{}", text(out));
}

/// Runs `~/.local/bin/claude` as the user and returns what it printed.
fn run_claude(runner: &Runner, home: &TempHome) -> String {
    let out = output(&mut as_user(runner, home, home.join(".local/bin/claude")));
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const USER_SETTINGS: &str = r#"{
  "theme": "dark",
  "env": {
    "MY_VAR": "keep me",
    "AWS_REGION": "us-west-2"
  },
  "permissions": {
    "allow": ["Bash(ls:*)"]
  }
}
"#;

#[test]
fn install_verifies_links_configures_and_uninstall_removes_only_its_own_work() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(home.join(".claude/settings.json"), USER_SETTINGS).unwrap();
    std::fs::write(home.join(".bashrc"), "alias ll='ls -l'\n").unwrap();
    std::fs::write(home.join(".claude/CLAUDE.md"), "my notes\n").unwrap();
    if let Runner::Ordinary(user) = &runner {
        corral_testsupport::user::chown(home.path(), user.uid, user.gid);
    }

    let out = install(&runner, &home, &mirror, &[]);
    assert_ok(&out);

    // Layout: the binary itself under versions/, the symlink pointing at it.
    let data = home.join(".local/share/claude/versions");
    let v1 = data.join("1.0.0");
    assert_eq!(
        std::fs::read_link(home.join(".local/bin/claude")).unwrap(),
        v1
    );
    assert_eq!(mode(&v1), 0o755);
    assert_eq!(
        std::fs::read(&v1).unwrap(),
        std::fs::read(mirror.binary_path("1.0.0")).unwrap()
    );
    assert_eq!(run_claude(&runner, &home), "claude stand-in 1.0.0");

    // Settings: every user key kept in its place, gateway keys added, 0700/0600, backup.
    assert_eq!(mode(&home.join(".claude")), 0o700);
    let settings_path = home.join(".claude/settings.json");
    assert_eq!(mode(&settings_path), 0o600);
    let settings = read_json(&settings_path);
    let top: Vec<&str> = settings
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        top,
        ["theme", "env", "permissions", "model", "apiKeyHelper"]
    );
    assert_eq!(settings["theme"], "dark");
    assert_eq!(settings["permissions"]["allow"][0], "Bash(ls:*)");
    let env = settings["env"].as_object().unwrap();
    assert_eq!(env.keys().next().unwrap(), "MY_VAR");
    assert_eq!(env["MY_VAR"], "keep me");
    for (k, v) in [
        ("CLAUDE_CODE_USE_BEDROCK", "1"),
        ("AWS_REGION", "eu-central-1"),
        ("ANTHROPIC_BEDROCK_BASE_URL", mirror.gateway.as_str()),
        ("CLAUDE_CODE_SKIP_BEDROCK_AUTH", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL", "1"),
        ("ANTHROPIC_MODEL", "test-model-1"),
        ("ANTHROPIC_DEFAULT_OPUS_MODEL", "test-model-1"),
        ("ANTHROPIC_DEFAULT_SONNET_MODEL", "test-model-1"),
        ("ANTHROPIC_DEFAULT_HAIKU_MODEL", "test-model-1"),
    ] {
        assert_eq!(env[k], v, "env.{k}");
    }
    assert_eq!(settings["model"], "test-model-1");
    let helper = home.join(".local/bin/corral-api-key-helper");
    assert_eq!(settings["apiKeyHelper"], helper.to_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(home.join(".claude/settings.json.corral-backup")).unwrap(),
        USER_SETTINGS
    );

    // By default Claude Code holds a placeholder: the helper prints it inside a corral
    // sandbox and says what to do outside one. No CA in the settings: corral run gives
    // Claude Code its session CA, and the settings' value would replace it.
    assert!(!env.contains_key("NODE_EXTRA_CA_CERTS"), "{settings:#}");
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("placeholder corral-placeholder-gateway-key")
            && note.contains("~/.config/corral/gateway-key")
            && note.contains("--real-key"),
        "{}",
        text(&out)
    );
    let helper_out = |sandboxed: bool| {
        let mut cmd = as_user(&runner, &home, "/bin/sh");
        cmd.arg(&helper).env_remove("CORRAL_SANDBOX");
        if sandboxed {
            cmd.env("CORRAL_SANDBOX", "namespaces");
        }
        output(&mut cmd)
    };
    let out = helper_out(true);
    assert_ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "corral-placeholder-gateway-key\n"
    );
    let out = helper_out(false);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty(), "nothing on stdout when refusing");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corral run") && err.contains("--real-key"),
        "{}",
        text(&out)
    );

    // --real-key: the helper prints the key from a 0600 file, and refuses a file others
    // can read; the CA goes into the settings for Claude Code's own TLS.
    let out = install(&runner, &home, &mirror, &["--real-key"]);
    assert_ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("placeholder"));
    let settings = read_json(&settings_path);
    assert_eq!(
        settings["env"]["NODE_EXTRA_CA_CERTS"],
        mirror.ca_path().to_str().unwrap()
    );
    let key_dir = home.join(".config/corral");
    std::fs::create_dir_all(&key_dir).unwrap();
    let key_file = key_dir.join("gateway-key");
    std::fs::write(&key_file, "sk-test-123\n").unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Runner::Ordinary(user) = &runner {
        corral_testsupport::user::chown(&home.join(".config"), user.uid, user.gid);
    }
    let out = output(as_user(&runner, &home, "/bin/sh").arg(&helper));
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sk-test-123\n");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = output(as_user(&runner, &home, "/bin/sh").arg(&helper));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout when refusing");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out)
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // PATH: added once to the rc file of the user's shell.
    let bashrc = std::fs::read_to_string(home.join(".bashrc")).unwrap();
    assert!(bashrc.starts_with("alias ll='ls -l'\n"), "{bashrc}");
    assert_eq!(bashrc.matches(".local/bin").count(), 1, "{bashrc}");

    // Second run: nothing changes.
    let before = snapshot(home.path());
    let out = install(&runner, &home, &mirror, &["--real-key"]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing changed"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(home.path()), before, "a second run changed files");

    // A new version: the link switches, the previous version stays; rollback switches back.
    mirror.publish("2.0.0");
    assert_ok(&install(&runner, &home, &mirror, &[]));
    assert_eq!(run_claude(&runner, &home), "claude stand-in 2.0.0");
    assert!(v1.is_file(), "previous version kept");
    let out =
        output(as_user(&runner, &home, corral_bin()).args(["install", "claude", "--rollback"]));
    assert_ok(&out);
    assert_eq!(run_claude(&runner, &home), "claude stand-in 1.0.0");
    assert_eq!(
        std::fs::read_link(home.join(".local/bin/claude")).unwrap(),
        v1
    );
    // An exact version can be pinned too.
    assert_ok(&install(&runner, &home, &mirror, &["--channel", "2.0.0"]));
    assert_eq!(run_claude(&runner, &home), "claude stand-in 2.0.0");

    // Uninstall: corral's files go; the user's settings come back as they were.
    let out = output(as_user(&runner, &home, corral_bin()).args(["uninstall", "claude"]));
    assert_ok(&out);
    assert!(!home.join(".local/bin/claude").exists());
    assert!(!helper.exists());
    assert!(!data.exists(), "versions directory removed");
    assert_eq!(
        read_json(&settings_path),
        serde_json::from_str::<serde_json::Value>(USER_SETTINGS).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(home.join(".bashrc")).unwrap(),
        "alias ll='ls -l'\n"
    );
    assert_eq!(
        std::fs::read_to_string(home.join(".claude/CLAUDE.md")).unwrap(),
        "my notes\n"
    );
    assert!(key_file.exists(), "a key the user stored is theirs");
    let out = output(as_user(&runner, &home, corral_bin()).args(["uninstall", "claude"]));
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to remove"));
}

#[test]
fn tampered_binary_or_manifest_is_refused_and_nothing_changes() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    assert_ok(&install(&runner, &home, &mirror, &[]));
    let before = snapshot(home.path());

    // Same size, different bytes: the checksum catches it.
    mirror.publish("2.0.0");
    let bin = mirror.binary_path("2.0.0");
    let mut bytes = std::fs::read(&bin).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&bin, &bytes).unwrap();
    let out = install(&runner, &home, &mirror, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let manifest = read_json(&mirror.root().join("2.0.0/manifest.json"));
    let expected = manifest["platforms"][host_platform()]["checksum"]
        .as_str()
        .unwrap()
        .to_string();
    let actual = corral_mirror::release::digest_file(&bin).unwrap().0;
    assert!(
        err.contains(&expected),
        "names the expected checksum\n{err}"
    );
    assert!(err.contains(&actual), "names the actual checksum\n{err}");
    assert!(
        err.contains(&format!("/2.0.0/{}/claude", host_platform())),
        "names the file\n{err}"
    );
    assert_eq!(
        snapshot(home.path()),
        before,
        "a refused install changed files"
    );
    assert_eq!(run_claude(&runner, &home), "claude stand-in 1.0.0");

    // A manifest whose size does not match what is served.
    mirror.publish("3.0.0");
    let manifest_path = mirror.root().join("3.0.0/manifest.json");
    let mut manifest = read_json(&manifest_path);
    let size = manifest["platforms"][host_platform()]["size"]
        .as_u64()
        .unwrap();
    manifest["platforms"][host_platform()]["size"] = (size - 1).into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = install(&runner, &home, &mirror, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("size mismatch"),
        "{}",
        text(&out)
    );
    assert_eq!(
        snapshot(home.path()),
        before,
        "a refused install changed files"
    );

    // A manifest that is not a manifest.
    std::fs::write(
        &manifest_path,
        b"{\"version\": \"3.0.0\", \"platforms\": 5}",
    )
    .unwrap();
    let out = install(&runner, &home, &mirror, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("manifest.json"),
        "{}",
        text(&out)
    );
    assert_eq!(
        snapshot(home.path()),
        before,
        "a refused install changed files"
    );
}

#[test]
fn invalid_settings_file_is_left_untouched_and_nothing_is_installed() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(
        home.join(".claude/settings.json"),
        "{\"theme\": \"dark\",}\n",
    )
    .unwrap();
    if let Runner::Ordinary(user) = &runner {
        corral_testsupport::user::chown(home.path(), user.uid, user.gid);
    }
    let before = snapshot(home.path());
    let out = install(&runner, &home, &mirror, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("settings.json is not valid JSON (line 1"),
        "{err}"
    );
    assert!(err.contains("left untouched"), "{err}");
    assert_eq!(snapshot(home.path()), before);
}

/// A raw HTTP server publishing version 2.0.0 whose binary downloads are cut off halfway:
/// every time, or (with `honour_range`) only until the client resumes with a Range request.
/// Returns the thread, the URL and the Range headers it received.
fn cut_off_server(
    payload: Vec<u8>,
    honour_range: bool,
) -> (std::thread::JoinHandle<()>, String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let platform = host_platform();
    let mut d = corral_mirror::release::Digester::default();
    d.update(&payload);
    let manifest = serde_json::json!({
        "version": "2.0.0", "commit": "", "buildDate": "",
        "platforms": {platform: {"binary": "claude", "checksum": d.finish(), "size": payload.len()}}
    })
    .to_string();
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = ranges.clone();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let range = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("range: bytes=")
                    .map(|r| r.trim().to_string())
            });
            let mut status = "200 OK".to_string();
            let mut extra = String::new();
            let (body, declared): (Vec<u8>, usize) = match path.as_str() {
                "/stable" => (b"2.0.0\n".to_vec(), 6),
                "/2.0.0/manifest.json" => (manifest.clone().into_bytes(), manifest.len()),
                "/quit" => return,
                _ => match range {
                    Some(r) if honour_range => {
                        seen.lock().unwrap().push(r.clone());
                        let start: usize = r.trim_end_matches('-').parse().unwrap();
                        status = "206 Partial Content".into();
                        extra = format!(
                            "content-range: bytes {start}-{}/{}\r\n",
                            payload.len() - 1,
                            payload.len()
                        );
                        (payload[start..].to_vec(), payload.len() - start)
                    }
                    _ => (payload[..payload.len() / 2].to_vec(), payload.len()),
                },
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: {declared}\r\n{extra}connection: close\r\n\r\n"
            );
            let _ = stream.write_all(&body);
        }
    });
    (handle, url, ranges)
}

fn stop(server: std::thread::JoinHandle<()>, url: &str) {
    let _ = std::net::TcpStream::connect(url.trim_start_matches("http://"))
        .and_then(|mut s| s.write_all(b"GET /quit HTTP/1.1\r\n\r\n"));
    let _ = server.join();
}

#[test]
fn download_cut_off_halfway_leaves_the_previous_version_working() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    assert_ok(&install(&runner, &home, &mirror, &[]));
    let before = snapshot(home.path());

    let payload = vec![b'x'; 256 * 1024];
    let (server, url, _) = cut_off_server(payload, false);
    let mut cmd = as_user(&runner, &home, corral_bin());
    cmd.args([
        "install",
        "claude",
        "--mirror",
        &url,
        "--gateway",
        &mirror.gateway,
    ]);
    let out = output(&mut cmd);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{url}/2.0.0/")),
        "names the URL\n{err}"
    );
    assert!(err.contains("was not installed"), "{err}");
    assert_eq!(
        snapshot(home.path()),
        before,
        "a failed download left changes behind"
    );
    assert_eq!(run_claude(&runner, &home), "claude stand-in 1.0.0");
    stop(server, &url);
}

#[test]
fn download_cut_off_once_resumes_with_a_range_request() {
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    let mut payload = b"#!/bin/sh\necho resumed\n#".to_vec();
    payload.resize(300 * 1024, b'#');
    payload.push(b'\n');
    let (server, url, ranges) = cut_off_server(payload.clone(), true);
    let mut cmd = as_user(&runner, &home, corral_bin());
    cmd.args([
        "install",
        "claude",
        "--mirror",
        &url,
        "--gateway",
        "https://gateway.test",
    ]);
    let out = output(&mut cmd);
    assert_ok(&out);
    assert_eq!(
        *ranges.lock().unwrap(),
        vec![format!("{}-", payload.len() / 2)]
    );
    assert_eq!(
        std::fs::read(home.join(".local/share/claude/versions/2.0.0")).unwrap(),
        payload
    );
    assert_eq!(run_claude(&runner, &home), "resumed");
    stop(server, &url);
}

#[test]
fn installer_goes_through_https_proxy() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    let dir = corral_testsupport::fs::world_readable_tempdir();
    let port = corral_testsupport::process::free_port("127.0.0.1".parse().unwrap());
    let conf = dir.path().join("tinyproxy.conf");
    corral_testsupport::fs::write_readable(
        &conf,
        format!("Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Connect\nMaxClients 20\nAllow 127.0.0.1\n").as_bytes(),
    );
    let mut proxy_cmd = runner.command("tinyproxy");
    proxy_cmd.arg("-d").arg("-c").arg(&conf);
    let mut proxy = Background::spawn("tinyproxy", proxy_cmd);
    proxy.wait_for_port(
        ([127, 0, 0, 1], port).into(),
        std::time::Duration::from_secs(10),
    );

    let mut cmd = as_user(&runner, &home, corral_bin());
    cmd.env("HTTPS_PROXY", format!("http://127.0.0.1:{port}"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args([
            "install",
            "claude",
            "--mirror",
            &mirror.url,
            "--gateway",
            &mirror.gateway,
        ])
        .arg("--ca-file")
        .arg(mirror.ca_path());
    assert_ok(&output(&mut cmd));
    assert_eq!(run_claude(&runner, &home), "claude stand-in 1.0.0");
    let log = proxy.stdout();
    assert!(log.contains(&format!("CONNECT {} ", mirror.addr)), "{log}");

    // NO_PROXY bypasses it; SSL_CERT_FILE is honoured.
    let home2 = runner.temp_home();
    let connects = log.matches("CONNECT 127").count();
    let mut cmd = as_user(&runner, &home2, corral_bin());
    cmd.env("HTTPS_PROXY", format!("http://127.0.0.1:{port}"))
        .env("NO_PROXY", "127.0.0.1")
        .args([
            "install",
            "claude",
            "--mirror",
            &mirror.url,
            "--gateway",
            &mirror.gateway,
        ])
        // The corporate CA from SSL_CERT_FILE this time, instead of --ca-file.
        .env("SSL_CERT_FILE", mirror.ca_path());
    assert_ok(&output(&mut cmd));
    assert_eq!(proxy.stdout().matches("CONNECT 127").count(), connects);
}

#[test]
fn redirect_mode_rust_installer_follows_the_signed_link_to_storage() {
    let mirror = Mirror::with_versions(
        &["1.0.0"],
        MirrorOptions {
            redirect: true,
            ..Default::default()
        },
    );
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    assert_ok(&install(&runner, &home, &mirror, &[]));
    assert_eq!(run_claude(&runner, &home), "claude stand-in 1.0.0");
    let log = mirror.access_log();
    let binary = format!("/1.0.0/{}/claude", host_platform());
    assert!(
        log.iter().any(|l| l["listener"] == "mirror"
            && l["path"] == binary.as_str()
            && l["status"] == 302),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l["listener"] == "storage"
            && l["path"] == binary.as_str()
            && l["status"] == 200),
        "{log:#?}"
    );
}

/// `curl … | sh` (dash) or `wget … | sh`: corral is fetched and verified, then installs Claude.
fn install_sh(downloader: &str, options: MirrorOptions) {
    let mirror = Mirror::with_versions(&["1.0.0"], options);
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    let ca = mirror.ca_path().display().to_string();
    let script_url = format!("{}/install.sh", mirror.url);
    let pipeline = match downloader {
        "curl" => format!("curl -fsSL --cacert '{ca}' '{script_url}' | dash -s -- --ca-file '{ca}'"),
        _ => format!(
            "wget -qO- --ca-certificate='{ca}' '{script_url}' | CORRAL_DOWNLOADER=wget dash -s -- --ca-file '{ca}'"
        ),
    };
    let out = output(as_user(&runner, &home, "/usr/bin/dash").args(["-c", &pipeline]));
    assert_ok(&out);
    // corral itself was placed, identical to the published one.
    assert_eq!(
        std::fs::read(home.join(".local/bin/corral")).unwrap(),
        std::fs::read(corral_bin()).unwrap()
    );
    assert_eq!(run_claude(&runner, &home), "claude stand-in 1.0.0");
    // The deployment's settings, baked into install.sh by the mirror, reached settings.json.
    let settings = read_json(&home.join(".claude/settings.json"));
    assert_eq!(
        settings["env"]["ANTHROPIC_BEDROCK_BASE_URL"],
        mirror.gateway.as_str()
    );
    assert_eq!(settings["env"]["AWS_REGION"], "eu-central-1");
    assert_eq!(settings["model"], "test-model-1");
    let agent = if downloader == "curl" {
        "curl/"
    } else {
        "Wget/"
    };
    let log = mirror.access_log();
    let corral_path = format!(
        "/corral/{}/{}/corral",
        env!("CARGO_PKG_VERSION"),
        corral_mirror::release::build_platform().unwrap()
    );
    assert!(
        log.iter().any(|l| l["path"] == corral_path.as_str()
            && l["user_agent"]
                .as_str()
                .is_some_and(|a| a.starts_with(agent))),
        "{agent} fetched {corral_path}: {log:#?}"
    );
}

#[test]
fn install_sh_under_dash_with_curl() {
    install_sh("curl", MirrorOptions::default());
}

#[test]
fn install_sh_under_dash_with_wget() {
    install_sh("wget", MirrorOptions::default());
}

#[test]
fn install_sh_in_redirect_mode() {
    install_sh(
        "curl",
        MirrorOptions {
            redirect: true,
            ..Default::default()
        },
    );
}

#[test]
fn install_sh_refuses_a_tampered_corral() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let platform = corral_mirror::release::build_platform().unwrap();
    let sum = mirror.root().join(format!(
        "corral/{}/{platform}/corral.sha256",
        env!("CARGO_PKG_VERSION")
    ));
    std::fs::write(&sum, format!("{}  corral\n", "0".repeat(64))).unwrap();
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    let ca = mirror.ca_path().display().to_string();
    let pipeline = format!(
        "curl -fsSL --cacert '{ca}' '{}/install.sh' | dash -s -- --ca-file '{ca}'",
        mirror.url
    );
    let out = output(as_user(&runner, &home, "/usr/bin/dash").args(["-c", &pipeline]));
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&"0".repeat(64)), "{err}");
    assert!(!home.join(".local/bin/corral").exists());
    assert!(!home.join(".local/bin/claude").exists());
}

/// The real Claude Code binary (~240 MB) through the whole path: mirror, verified download,
/// symlink; it then runs from `~/.local/bin/claude` with the installed settings.
#[test]
fn real_claude_code_binary_installs_and_runs() {
    assert_eq!(
        host_platform(),
        "linux-x64",
        "the test clients are installed for linux-x64 only"
    );
    let real = &corral_testsupport::deps::claude_platform_package().join("claude");
    let package: serde_json::Value =
        serde_json::from_slice(&std::fs::read(real.with_file_name("package.json")).unwrap())
            .unwrap();
    let version = package["version"].as_str().unwrap().to_string();
    let mirror = Mirror::with_versions(&[], MirrorOptions::default());
    mirror.publish_file(&version, real);
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    assert_ok(&install(&runner, &home, &mirror, &[]));
    let out = output(as_user(&runner, &home, home.join(".local/bin/claude")).arg("--version"));
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&version),
        "{}",
        text(&out)
    );
}

#[test]
fn switching_to_first_party_restores_bedrock_keys_and_xdg_data_home_is_respected() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(home.join(".claude/settings.json"), USER_SETTINGS).unwrap();
    if let Runner::Ordinary(user) = &runner {
        corral_testsupport::user::chown(home.path(), user.uid, user.gid);
    }
    let data = home.join("xdg-data");
    let run = |extra: &[&str]| {
        let mut cmd = as_user(&runner, &home, corral_bin());
        cmd.env("XDG_DATA_HOME", &data)
            .args([
                "install",
                "claude",
                "--mirror",
                &mirror.url,
                "--gateway",
                &mirror.gateway,
            ])
            .arg("--ca-file")
            .arg(mirror.ca_path())
            .args(extra);
        output(&mut cmd)
    };
    assert_ok(&run(&["--region", "eu-central-1"]));
    assert_eq!(
        std::fs::read_link(home.join(".local/bin/claude")).unwrap(),
        data.join("claude/versions/1.0.0")
    );
    assert!(data.join("corral/claude-install.json").is_file());

    assert_ok(&run(&["--first-party"]));
    let settings = read_json(&home.join(".claude/settings.json"));
    let env = settings["env"].as_object().unwrap();
    assert_eq!(env["ANTHROPIC_BASE_URL"], mirror.gateway.as_str());
    assert_eq!(
        env["AWS_REGION"], "us-west-2",
        "the user's own value is back"
    );
    for gone in [
        "CLAUDE_CODE_USE_BEDROCK",
        "ANTHROPIC_BEDROCK_BASE_URL",
        "CLAUDE_CODE_SKIP_BEDROCK_AUTH",
    ] {
        assert!(!env.contains_key(gone), "{gone} still set: {settings:#}");
    }
    assert_eq!(env["DISABLE_AUTOUPDATER"], "1");

    let mut cmd = as_user(&runner, &home, corral_bin());
    cmd.env("XDG_DATA_HOME", &data)
        .args(["uninstall", "claude"]);
    assert_ok(&output(&mut cmd));
    assert_eq!(
        read_json(&home.join(".claude/settings.json")),
        serde_json::from_str::<serde_json::Value>(USER_SETTINGS).unwrap()
    );
    assert!(!data.join("claude").exists());
}

#[test]
fn an_existing_claude_that_is_not_ours_is_never_replaced() {
    let mirror = Mirror::with_versions(&["1.0.0"], MirrorOptions::default());
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    std::fs::create_dir_all(home.join(".local/bin")).unwrap();
    std::fs::write(
        home.join(".local/bin/claude"),
        "#!/bin/sh\necho npm-installed\n",
    )
    .unwrap();
    std::fs::set_permissions(
        home.join(".local/bin/claude"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    if let Runner::Ordinary(user) = &runner {
        corral_testsupport::user::chown(home.path(), user.uid, user.gid);
    }
    let before = snapshot(home.path());
    let out = install(&runner, &home, &mirror, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a symlink"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(home.path()), before);
    assert_eq!(run_claude(&runner, &home), "npm-installed");
}
