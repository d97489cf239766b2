//! The seed scenario end to end, driven by `docs/guide.md`: every shell block of the guide
//! is run here, in order, as an ordinary user with a temporary HOME, inside a network
//! namespace that holds only loopback. The guide's commands are this test's commands; this
//! file only supplies the values of the guide's settings block, the servers that stand in
//! for AWS Bedrock, an unlisted website and a git host, and the checks after each step.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral_testsupport::git_server::{GitServer, README};
use corral_testsupport::llm_upstream::{LlmUpstream, Script};
use corral_testsupport::netns::rerun_in_private_network;
use corral_testsupport::process::{corral_bin, free_port, Background};
use corral_testsupport::tls::TestCa;
use corral_testsupport::upstream::{Reply, Upstream};
use corral_testsupport::user::{chown, Runner, TempHome};
use serde_json::Value;

const MODEL: &str = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0";
const ANSWER: &str = "Hello from the corral test upstream!";
const UNLISTED_BODY: &str = "hello from unlisted.example\n";

/// The guide's steps, in order. A block added to the guide without a check here fails.
const STEPS: &[&str] = &[
    "mirror",
    "mirror-serve",
    "gateway-config",
    "gateway-serve",
    "policy",
    "install",
    "key",
    "hello",
    "audit",
    "session",
    "placeholder",
    "unlisted",
    "suggest",
    "retry",
    "git-clone",
    "upgrade-publish",
    "upgrade",
    "hello-again",
    "git-only",
];

#[derive(Debug, PartialEq)]
enum Kind {
    /// Runs to completion.
    Command,
    /// A server or a sandboxed shell: started and left running.
    Service,
    /// Typed into the sandboxed shell started by the `session` step.
    InSession,
}

#[derive(Debug)]
struct Block {
    step: String,
    kind: Kind,
    body: String,
}

/// The guide's `sh` blocks: the settings block, then the steps.
fn read_guide() -> (String, Vec<Block>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md");
    let text = std::fs::read_to_string(&path).expect("docs/guide.md");
    let mut settings = None;
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```sh") else {
            continue;
        };
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        let words: Vec<&str> = info.split_whitespace().collect();
        if words == ["settings"] {
            assert!(settings.is_none(), "the guide has two settings blocks");
            settings = Some(body);
            continue;
        }
        let step = words
            .iter()
            .find_map(|w| w.strip_prefix("step="))
            .unwrap_or_else(|| panic!("a ```sh block of the guide has no step=NAME: {info:?}"))
            .to_string();
        let kind = if words.contains(&"service") {
            Kind::Service
        } else if words.contains(&"session") {
            Kind::InSession
        } else {
            Kind::Command
        };
        blocks.push(Block { step, kind, body });
    }
    (settings.expect("the guide's settings block"), blocks)
}

/// Variable names a settings block exports.
fn exported_names(settings: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in settings.lines() {
        let code = line.split('#').next().unwrap_or("");
        let Some(rest) = code.trim().strip_prefix("export ") else {
            continue;
        };
        for word in rest.split_whitespace() {
            if let Some((name, _)) = word.split_once('=') {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Everything the steps run with.
struct World {
    runner: Runner,
    home: TempHome,
    /// The developer's working directory: a corral checkout (for `examples/`).
    checkout: PathBuf,
    path: String,
    settings: Vec<(String, String)>,
    connect_to: String,
}

impl World {
    /// `bash -c BODY` as the user, in the checkout, with the deployment's settings.
    /// Platform steps get the gateway's AWS credentials; the developer's never do.
    fn shell(&self, body: &str, platform: bool) -> Command {
        let mut c = self.runner.command("bash");
        c.args(["-euo", "pipefail", "-c", body])
            .current_dir(&self.checkout)
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", &self.path)
            .env("SHELL", "/bin/bash")
            .env("LANG", "C.UTF-8")
            .env("TMPDIR", "/tmp")
            .envs(self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Runner::Ordinary(user) = &self.runner {
            c.env("USER", &user.name).env("LOGNAME", &user.name);
        }
        if platform {
            c.env("AWS_ACCESS_KEY_ID", "AKIDCORRALSCENARIO")
                .env("AWS_SECRET_ACCESS_KEY", "corral-scenario-secret");
        } else {
            c.env("CORRAL_CONNECT_TO", &self.connect_to);
        }
        c
    }

    fn decisions(&self) -> Vec<Value> {
        let path = self.home.join(".local/state/corral/decisions.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("decision record is JSON"))
            .collect()
    }

    fn file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.home.join(rel)).unwrap_or_else(|e| panic!("~/{rel}: {e}"))
    }
}

/// What a finished step printed (stdout and stderr interleaved) and how it ended.
struct Ran {
    ok: bool,
    output: String,
}

fn run_step(world: &World, block: &Block, platform: bool) -> Ran {
    let script = format!("exec 2>&1\n{}", block.body);
    let mut cmd = world.shell(&script, platform);
    cmd.stdin(Stdio::null());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("step {}: {e}", block.step));
    Ran {
        ok: out.status.success(),
        output: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// A sandboxed shell fed one step at a time, like a developer typing.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    transcript: String,
}

const DONE: &str = "@@corral-scenario-step-done";

impl Session {
    fn start(world: &World, block: &Block) -> Session {
        let script = format!("exec 2>&1\nexec {}", block.body.trim());
        let mut cmd = world.shell(&script, false);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("start the sandboxed shell");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Session {
            stdin: child.stdin.take(),
            child,
            lines,
            transcript: String::new(),
        }
    }

    /// Types `body` (its stdin closed, so no command eats the next ones) and waits for it.
    fn run(&mut self, body: &str) -> Ran {
        let stdin = self.stdin.as_mut().expect("session open");
        write!(stdin, "{{\n{body}}} </dev/null\necho \"{DONE} $?\"\n")
            .expect("type into the session");
        stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut output = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push_str(&line);
                    self.transcript.push('\n');
                    if let Some(code) = line.strip_prefix(DONE) {
                        return Ran {
                            ok: code.trim() == "0",
                            output,
                        };
                    }
                    output.push_str(&line);
                    output.push('\n');
                }
                Err(_) => panic!(
                    "the sandboxed shell did not finish {body:?}\n--- transcript ---\n{}",
                    self.transcript
                ),
            }
        }
    }

    fn exit(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        // Whatever the shell printed last (corral's notices come after the output).
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.transcript.push_str(&line);
            self.transcript.push('\n');
        }
        status
    }
}

/// Decision records added since `before` records were there.
fn since(world: &World, before: usize) -> Vec<Value> {
    world.decisions().into_iter().skip(before).collect()
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

#[test]
fn the_guide_deploys_claude_code_behind_corral() {
    if !rerun_in_private_network("the_guide_deploys_claude_code_behind_corral") {
        return;
    }
    let (settings_block, blocks) = read_guide();
    let names: Vec<&str> = blocks.iter().map(|b| b.step.as_str()).collect();
    assert_eq!(
        names, STEPS,
        "the guide's steps and this test's checks differ"
    );

    // --- the world the guide's settings describe, on loopback --------------------------
    let runner = Runner::ordinary();
    let home = runner.temp_home();
    let ca = TestCa::new();
    let mirror_tls = ca.leaf(&["mirror.corp.example", "storage.corp.example"]);
    let gateway_tls = ca.leaf(&["llm-gateway.corp.example"]);
    let bedrock = LlmUpstream::start(Script::default());
    let unlisted_tls = ca.leaf(&["unlisted.example"]);
    let unlisted = Upstream::https(&unlisted_tls, |_| Reply::ok(UNLISTED_BODY));
    let git = GitServer::start(&ca, &["git.corp.example"]);
    let local = |port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let mirror_at = local(free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let storage_at = local(free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let gateway_at = local(free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let connect_to = [
        ("mirror.corp.example", mirror_at),
        ("storage.corp.example", storage_at),
        ("llm-gateway.corp.example", gateway_at),
        ("unlisted.example", unlisted.addr()),
        ("git.corp.example", git.addr()),
    ]
    .iter()
    .map(|(name, at)| format!("{name}:443:{at}"))
    .collect::<Vec<_>>()
    .join(" ");

    // The platform team's files and the developer's checkout, owned by the user.
    let platform = home.join("platform");
    let checkout = home.join("corral");
    std::fs::create_dir_all(platform.join("etc")).unwrap();
    std::fs::create_dir_all(checkout.join("examples/policies")).unwrap();
    for example in ["corporate.yaml", "install.yaml"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/policies")
                .join(example),
            checkout.join("examples/policies").join(example),
        )
        .unwrap();
    }
    if let Runner::Ordinary(user) = &runner {
        chown(&platform, user.uid, user.gid);
        chown(&checkout, user.uid, user.gid);
    }
    let claude_package = corral_testsupport::deps::claude_platform_package();
    let claude_version = serde_json::from_str::<Value>(
        &std::fs::read_to_string(claude_package.join("package.json"))
            .expect("Claude Code's platform package.json"),
    )
    .unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let next_version = format!("{claude_version}-1");
    let p = |s: &Path| s.to_string_lossy().into_owned();
    let settings: Vec<(String, String)> = [
        ("CORP_CA", p(ca.ca_path())),
        ("CLAUDE_BINARY", p(&claude_package.join("claude"))),
        ("CLAUDE_VERSION", claude_version.clone()),
        // The next release: the same build under a new version number is enough to move
        // the symlink.
        ("CLAUDE_NEXT_BINARY", p(&claude_package.join("claude"))),
        ("CLAUDE_NEXT_VERSION", next_version.clone()),
        ("MODEL", MODEL.to_string()),
        ("MIRROR_DIR", p(&platform.join("mirror"))),
        (
            "MIRROR_SIGNING_KEY",
            p(&platform.join("etc/mirror-signing.key")),
        ),
        ("MIRROR_LISTEN", mirror_at.to_string()),
        ("STORAGE_LISTEN", storage_at.to_string()),
        ("MIRROR_CERT", p(&mirror_tls.cert_path)),
        ("MIRROR_KEY", p(&mirror_tls.key_path)),
        ("GATEWAY_DIR", p(&platform.join("gateway"))),
        ("GATEWAY_LISTEN", gateway_at.to_string()),
        ("GATEWAY_CERT", p(&gateway_tls.cert_path)),
        ("GATEWAY_KEY", p(&gateway_tls.key_path)),
        ("BEDROCK_URL", bedrock.url()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        exported_names(&settings_block),
        settings
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<BTreeSet<_>>(),
        "the guide's settings block and the values this test gives them differ"
    );
    let corral_dir = corral_bin().parent().unwrap().to_path_buf();
    let world = World {
        // Debian's programs, as the example policy lists them (this machine kind also has
        // a second git under /usr/local: a different program, refused by name).
        path: format!(
            "{}:{}:/usr/bin:/bin",
            home.join(".local/bin").display(),
            corral_dir.display()
        ),
        runner,
        checkout,
        settings,
        connect_to,
        home,
    };
    // --- the steps ---------------------------------------------------------------------
    let mut services: HashMap<&str, Background> = HashMap::new();
    let mut session: Option<Session> = None;
    let mut applied_at = None;
    let mut before = 0;
    for block in &blocks {
        let step = block.step.as_str();
        let platform_step = matches!(
            step,
            "mirror" | "mirror-serve" | "gateway-config" | "gateway-serve" | "upgrade-publish"
        );
        match block.kind {
            Kind::Service if step == "session" => {
                session = Some(Session::start(&world, block));
                continue;
            }
            Kind::Service => {
                let script = format!("exec {}", block.body.trim());
                let mut bg = Background::spawn(step, world.shell(&script, platform_step));
                match step {
                    "mirror-serve" => {
                        bg.wait_for_port(mirror_at, Duration::from_secs(60));
                        bg.wait_for_port(storage_at, Duration::from_secs(60));
                    }
                    "gateway-serve" => bg.wait_for_port(gateway_at, Duration::from_secs(60)),
                    other => panic!("no readiness check for service step {other}"),
                }
                services.insert(step, bg);
                continue;
            }
            _ => {}
        }
        let started = Instant::now();
        let ran = match block.kind {
            Kind::InSession => {
                let s = session.as_mut().expect("a session step before `session`");
                if step == "retry" {
                    // The policy edit reaches the running sandbox without a restart.
                    let mut ran = s.run(&block.body);
                    while !ran.output.contains(UNLISTED_BODY.trim())
                        && started.elapsed() < Duration::from_secs(20)
                    {
                        std::thread::sleep(Duration::from_millis(50));
                        ran = s.run(&block.body);
                    }
                    ran
                } else {
                    s.run(&block.body)
                }
            }
            _ => run_step(&world, block, platform_step),
        };
        let context = || {
            let mut c = format!(
                "step {step} ({:?})\n--- output ---\n{}\n",
                started.elapsed(),
                ran.output
            );
            for (name, bg) in &services {
                c.push_str(&format!(
                    "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{}\n",
                    bg.stdout(),
                    bg.stderr()
                ));
            }
            if let Some(s) = &session {
                c.push_str(&format!("--- session ---\n{}\n", s.transcript));
            }
            c.push_str(&format!("--- decisions ---\n{:#?}\n", world.decisions()));
            c
        };
        eprintln!("scenario: step {step} took {:?}", started.elapsed());
        for line in ran.output.lines() {
            eprintln!("scenario:   | {line}");
        }
        let expect_ok = !matches!(step, "unlisted" | "git-only" | "placeholder");
        assert_eq!(ran.ok, expect_ok, "{}", context());
        match step {
            "mirror" => {
                assert!(ran.output.contains(&claude_version), "{}", context());
            }
            "gateway-config" => {
                assert!(ran.output.contains("cgw_alice_"), "{}", context());
            }
            "policy" => {
                assert!(
                    ran.output.contains("ok (5 network policies"),
                    "{}",
                    context()
                );
            }
            "install" => {
                let version_file = world
                    .home
                    .join(".local/share/claude/versions")
                    .join(&claude_version);
                assert!(version_file.is_file(), "{}", context());
                assert_eq!(
                    std::fs::read_link(world.home.join(".local/bin/claude")).unwrap(),
                    version_file,
                    "{}",
                    context()
                );
                assert!(
                    world.home.join(".local/bin/corral").is_file(),
                    "{}",
                    context()
                );
                let settings: Value =
                    serde_json::from_str(&world.file(".claude/settings.json")).unwrap();
                let env = &settings["env"];
                assert_eq!(env["CLAUDE_CODE_USE_BEDROCK"], "1", "{settings:#}");
                assert_eq!(
                    env["ANTHROPIC_BEDROCK_BASE_URL"], "https://llm-gateway.corp.example",
                    "{settings:#}"
                );
                assert_eq!(env["ANTHROPIC_MODEL"], MODEL, "{settings:#}");
                // Claude Code holds the placeholder (the helper prints it), and trusts the
                // session CA corral run gives it: no CA of its own that would replace it.
                assert!(env.get("NODE_EXTRA_CA_CERTS").is_none(), "{settings:#}");
                assert_eq!(
                    settings["apiKeyHelper"],
                    world
                        .home
                        .join(".local/bin/corral-api-key-helper")
                        .to_str()
                        .unwrap(),
                    "{settings:#}"
                );
                assert_eq!(env["DISABLE_AUTOUPDATER"], "1", "{settings:#}");
                // The download went mirror → 302 → signed storage link.
                let access = services["mirror-serve"].stdout();
                assert!(
                    access.lines().any(|l| l.contains("\"status\":302")
                        && l.contains(&format!("/{claude_version}/linux-x64/claude"))),
                    "{}",
                    context()
                );
                // Only the mirror and its storage were reached, only by curl and corral.
                let records = since(&world, before);
                assert!(!records.is_empty(), "{}", context());
                let corral = world.home.join(".local/bin/corral");
                for r in &records {
                    assert_eq!(field(r, "decision"), "allow", "{r:#}\n{}", context());
                    assert!(
                        ["mirror.corp.example", "storage.corp.example"].contains(&field(r, "host")),
                        "{r:#}"
                    );
                    assert!(
                        field(r, "binary") == "/usr/bin/curl"
                            || Path::new(field(r, "binary")) == corral,
                        "{r:#}"
                    );
                }
                assert!(
                    records
                        .iter()
                        .any(|r| field(r, "host") == "storage.corp.example"
                            && Path::new(field(r, "binary")) == corral),
                    "corral install followed the redirect to storage: {records:#?}"
                );
            }
            "hello" => {
                assert!(ran.output.contains(ANSWER), "{}", context());
                let claude = std::fs::canonicalize(world.home.join(".local/bin/claude")).unwrap();
                let records = since(&world, before);
                assert!(!records.is_empty(), "{}", context());
                // Every connection claude made went to the gateway, allowed. Bun also looks
                // the gateway's name up with the system resolver before using the proxy: the
                // sandbox has no DNS and says so (dns_lookup); nothing else was attempted.
                for r in &records {
                    assert_eq!(Path::new(field(r, "binary")), claude, "{r:#}");
                    if field(r, "kind") == "direct" {
                        assert_eq!(field(r, "error"), "dns_lookup", "{r:#}\n{}", context());
                        assert_eq!(r["port"], 53, "{r:#}");
                        continue;
                    }
                    assert_eq!(field(r, "decision"), "allow", "{r:#}\n{}", context());
                    assert_eq!(field(r, "host"), "llm-gateway.corp.example", "{r:#}");
                    assert_eq!(r["port"], 443, "{r:#}");
                }
                assert!(
                    records.iter().any(|r| field(r, "kind") == "connect"),
                    "{}",
                    context()
                );
                // Claude Code sent the placeholder; neither it nor the decision log held
                // the key (the gateway got it: step `audit`).
                let key = world.file(".config/corral/gateway-key");
                let key = key.trim();
                assert!(
                    !std::fs::read_to_string(
                        world.home.join(".local/state/corral/decisions.jsonl")
                    )
                    .unwrap()
                    .contains(key),
                    "{}",
                    context()
                );
                assert!(!ran.output.contains(key), "{}", context());
                // The upstream got the gateway's own signature, never the user's key.
                let calls = bedrock.requests();
                assert!(!calls.is_empty(), "{}", context());
                for call in &calls {
                    let auth = call.header("authorization").unwrap_or("");
                    assert!(auth.starts_with("AWS4-HMAC-SHA256"), "{auth}");
                    assert!(!auth.contains("cgw_"), "{auth}");
                }
            }
            "audit" => {
                let audit: Vec<Value> = world
                    .file("platform/gateway/audit.jsonl")
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                let streamed: Vec<&Value> = audit
                    .iter()
                    .filter(|r| r["key_id"] == "alice" && r["stream"] == true)
                    .collect();
                assert!(!streamed.is_empty(), "{audit:#?}\n{}", context());
                let last = streamed.last().unwrap();
                assert_eq!(last["status"], 200, "{last:#}");
                assert_eq!(last["input_tokens"], 21, "{last:#}");
                assert_eq!(last["output_tokens"], 9, "{last:#}");
                assert!(ran.output.contains("\"key_id\":\"alice\""), "{}", context());
            }
            "unlisted" => {
                assert!(ran.output.contains("403"), "{}", context());
                assert!(
                    ran.output.contains(
                        "corral: refused /usr/bin/curl -> unlisted.example:443 [no_endpoint]"
                    ),
                    "{}",
                    context()
                );
                let records = since(&world, before);
                let refusal = records
                    .iter()
                    .find(|r| field(r, "host") == "unlisted.example")
                    .unwrap_or_else(|| panic!("{}", context()));
                assert_eq!(field(refusal, "decision"), "deny");
                assert_eq!(field(refusal, "binary"), "/usr/bin/curl");
                assert_eq!(refusal["port"], 443);
                assert_eq!(refusal["status"], 403);
                assert!(unlisted.requests().is_empty(), "a refused name was reached");
            }
            "suggest" => {
                // Exactly this endpoint, in the one group that lists curl alone
                // (github_raw), so that no other program gets it; printed, then applied.
                let yaml = "network_policies:\n  github_raw:  # existing group: append to its endpoints; lets through: /usr/bin/curl only\n    endpoints:\n      - { host: unlisted.example, port: 443 }\n";
                assert_eq!(ran.output.matches(yaml).count(), 2, "{}", context());
                assert!(!ran.output.contains("10.255.255.53"), "{}", context());
                assert!(
                    world
                        .file(".config/corral/policy.yaml")
                        .contains("{ host: unlisted.example, port: 443 }"),
                    "{}",
                    context()
                );
                applied_at = Some(Instant::now());
            }
            "retry" => {
                assert!(ran.output.contains(UNLISTED_BODY.trim()), "{}", context());
                eprintln!(
                    "scenario: the policy edit took effect in the running sandbox after {:?}",
                    applied_at.unwrap().elapsed()
                );
            }
            "git-clone" => {
                assert!(ran.output.contains(README.0), "{}", context());
                assert_eq!(
                    world.file(&format!("corral/app/{}", README.0)),
                    README.1,
                    "{}",
                    context()
                );
            }
            "git-only" => {
                // Debian's git-remote-https is a symlink to git-remote-http: the refusal
                // names the executable, and the name git started it as.
                let helper = std::fs::canonicalize("/usr/lib/git-core/git-remote-https").unwrap();
                let refused = ran
                    .output
                    .lines()
                    .find(|l| l.starts_with("corral: refused "))
                    .unwrap_or_else(|| panic!("{}", context()));
                assert!(
                    refused.starts_with(&format!("corral: refused {}", helper.display())),
                    "{}",
                    context()
                );
                assert!(
                    refused.contains("git-remote-https")
                        && refused.contains("-> git.corp.example:443 [binary_not_allowed]"),
                    "{}",
                    context()
                );
                assert!(!world.checkout.join("app2").join(README.0).exists());
            }
            "upgrade-publish" => {
                assert!(ran.output.contains(&next_version), "{}", context());
            }
            "upgrade" => {
                let next = world
                    .home
                    .join(".local/share/claude/versions")
                    .join(&next_version);
                assert_eq!(
                    std::fs::read_link(world.home.join(".local/bin/claude")).unwrap(),
                    next,
                    "{}",
                    context()
                );
                assert!(
                    world
                        .home
                        .join(".local/share/claude/versions")
                        .join(&claude_version)
                        .is_file(),
                    "the previous version stays for --rollback"
                );
            }
            "hello-again" => {
                // The session's policy was never edited for the new path: the watched
                // symlink moved, and the matcher followed it.
                assert!(ran.output.contains(ANSWER), "{}", context());
                let next = std::fs::canonicalize(world.home.join(".local/bin/claude")).unwrap();
                // A tunnel's record is written when it closes, which the still-running
                // session's proxy notices just after claude exits.
                let allowed = |records: &[Value]| {
                    records.iter().any(|r| {
                        field(r, "kind") == "connect"
                            && field(r, "decision") == "allow"
                            && Path::new(field(r, "binary")) == next
                    })
                };
                let deadline = Instant::now() + Duration::from_secs(10);
                while !allowed(&since(&world, before)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let records = since(&world, before);
                assert!(allowed(&records), "{}", context());
                assert!(
                    records
                        .iter()
                        .all(|r| field(r, "decision") == "allow"
                            || field(r, "error") == "dns_lookup"),
                    "{}",
                    context()
                );
            }
            "key" => {
                assert!(
                    world
                        .file(".config/corral/gateway-key")
                        .starts_with("cgw_alice_"),
                    "{}",
                    context()
                );
            }
            "placeholder" => {
                // The helper gives the placeholder; the key file cannot be read.
                assert!(
                    ran.output
                        .lines()
                        .any(|l| l == "corral-placeholder-gateway-key"),
                    "{}",
                    context()
                );
                assert!(!ran.output.contains("cgw_"), "{}", context());
                assert!(
                    ran.output.contains(".config/corral/gateway-key"),
                    "{}",
                    context()
                );
            }
            other => panic!("no check for step {other}"),
        }
        if step == "hello-again" {
            let status = session.take().unwrap().exit();
            assert!(status.success(), "the sandboxed shell exited with {status}");
        }
        before = world.decisions().len();
    }
    assert!(session.is_none(), "the session was left open");
}
