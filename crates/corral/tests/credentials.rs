//! Credentials the sandbox never holds, end to end: inside `corral run` (as the current
//! user and an ordinary one, in both isolation modes), Node and the real Claude Code CLI
//! reach a `corral gateway` served over TLS on loopback through the proxy's TLS
//! termination, holding only a placeholder. The proxy puts the real gateway key in place
//! of the placeholder for the binaries of the group that binds it; the key itself is
//! nowhere the sandbox can read. A program outside that group sending the same
//! placeholder to the same host gets it through unchanged, and the gateway refuses it.
//!
//! The wider rules (only the named headers, only the bound destination, the secret file
//! outside a `filesystem_policy`) are in intercept.rs
//! (`credentials_are_substituted_for_the_bound_binary_and_destination_only`).

mod intercept_support;

use corral_testsupport::gateway::{claude_quiet_env, records_for, Gateway, ANSWER};
use corral_testsupport::llm_upstream::Script;
use corral_testsupport::netns::rerun_in_private_network;
use corral_testsupport::sandbox::{runners, stdout, Sandbox, MODES};

const PLACEHOLDER: &str = "corral-placeholder-gateway-key";
/// Where the guide keeps the gateway key: `~/.config/corral`, which the sandbox sees
/// read-only; as a policy's `secret_file`, corral hides it from the sandbox entirely.
const KEY_FILE: &str = ".config/corral/gateway-key";

/// `https.request` from a Node with no flag and no `ca` option: it trusts the session CA
/// through NODE_EXTRA_CA_CERTS alone. Node 20 ignores HTTPS_PROXY, so the script opens
/// the CONNECT tunnel itself (see docs/sandbox.md on Node and the proxy).
const NODE_JS: &str = r#"
const http = require('http'), https = require('https'), tls = require('tls');
const [host, port, key] = process.argv.slice(1);
const proxy = new URL(process.env.HTTPS_PROXY);
const connect = http.request({ host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: `${host}:${port}` });
connect.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.log('node connect', res.statusCode); return; }
  const req = https.request({ host, port, path: '/v1/models', headers: { 'x-api-key': key },
      createConnection: () => tls.connect({ socket, servername: host }) }, (resp) => {
    let body = '';
    resp.on('data', (d) => body += d);
    resp.on('end', () => console.log('node status', resp.statusCode, body.includes('claude-sonnet-4-5') ? 'models' : body));
  });
  req.on('error', (e) => console.log('node error', e.code || e.message));
  req.end();
});
connect.on('error', (e) => console.log('node proxy error', e.message));
connect.end();
"#;

fn policy(port: u16, secret_file: &std::path::Path) -> String {
    let claude = corral_testsupport::deps::claude();
    format!(
        r#"version: 1
network_policies:
  llm_gateway:
    endpoints:
      - {{ host: gateway.test, port: {port}, tls: terminate, allowed_ips: [127.0.0.0/8] }}
    binaries:
      - {{ path: /usr/bin/node }}
      - {{ path: {claude} }}
    credentials:
      - placeholder: {PLACEHOLDER}
        secret_file: {secret}
  # curl may reach the gateway too, but the key is not bound to it.
  tools:
    endpoints:
      - {{ host: gateway.test, port: {port}, tls: terminate, allowed_ips: [127.0.0.0/8] }}
    binaries:
      - {{ path: /usr/bin/curl }}
"#,
        claude = claude.display(),
        secret = secret_file.display(),
    )
}

#[test]
fn node_and_claude_code_reach_the_gateway_with_a_placeholder_and_never_hold_the_key() {
    if !rerun_in_private_network(
        "node_and_claude_code_reach_the_gateway_with_a_placeholder_and_never_hold_the_key",
    ) {
        return;
    }
    let gw = Gateway::start(Script::default());
    let id = format!("sandboxed-{}", std::process::id());
    let key = gw.add_key("dev@corp.example", &["--id", &id]);
    assert!(key.starts_with(&format!("cgw_{id}_")), "{key}");
    let port = gw.port();
    let resolve = vec![format!("gateway.test:{port}:127.0.0.1")];
    let url = format!("https://gateway.test:{port}");
    let claude = corral_testsupport::deps::claude();
    // Everything the sandboxed shell shows of itself, then each client's request.
    let script = format!(
        r#"echo "@env"; /usr/bin/env
echo "@environ"; /usr/bin/tr '\0' '\n' </proc/self/environ
echo "@node"; /usr/bin/node -e "$NODE_JS" gateway.test {port} "$AWS_BEARER_TOKEN_BEDROCK"
echo "@claude"; /usr/bin/timeout 120 {claude} -p "say hello"
echo "@curl"; /usr/bin/curl -sS -w '\nstatus %{{http_code}}\n' -H "x-api-key: $AWS_BEARER_TOKEN_BEDROCK" {url}/v1/models
echo "@files"; /usr/bin/grep -rlsI -F "cgw_{id}_" "$HOME" /tmp /var/tmp /dev/shm /run 2>/dev/null
echo "@cat"; /usr/bin/cat "$HOME/{KEY_FILE}" >/dev/null 2>&1 && echo readable || echo refused
"#,
        claude = claude.display(),
    );
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, "version: 1\n", &resolve);
            let secret = sb.write_home_file(KEY_FILE, format!("{key}\n").as_bytes(), 0o600);
            sb.write_policy(&policy(port, &secret));
            let before = records_for(&gw.audit(), &id).len();
            let mut cmd = sb.command(&["/bin/sh", "-c", &script]);
            cmd.env("CORRAL_UPSTREAM_CA", gw.ca.ca_path())
                .env("NODE_JS", NODE_JS)
                // Bedrock mode, as `corral install` sets it up; the bearer token is the
                // placeholder.
                .env("CLAUDE_CODE_USE_BEDROCK", "1")
                .env("AWS_REGION", "us-east-1")
                .env("ANTHROPIC_BEDROCK_BASE_URL", &url)
                .env("AWS_BEARER_TOKEN_BEDROCK", PLACEHOLDER)
                .envs(claude_quiet_env(false))
                // Nothing of the test's own trust settings: corral sets them.
                .env_remove("NODE_EXTRA_CA_CERTS");
            let out = cmd.output().expect("run corral");
            let ctx = || {
                format!(
                    "{}\n--- gateway ---\n{}\n--- audit ---\n{:#?}",
                    sb.context(&out),
                    gw.process.stderr(),
                    gw.audit()
                )
            };
            let text = stdout(&out);
            // The lines after `@name`, up to the next `@` line.
            let section = |name: &str| -> String {
                let marker = format!("@{name}");
                text.lines()
                    .skip_while(|l| *l != marker)
                    .skip(1)
                    .take_while(|l| !l.starts_with('@'))
                    .map(|l| format!("{l}\n"))
                    .collect()
            };
            // The sandbox holds the placeholder, in its environment, and never the key.
            for part in ["env", "environ"] {
                let env = section(part);
                assert!(
                    env.contains(&format!("AWS_BEARER_TOKEN_BEDROCK={PLACEHOLDER}")),
                    "{part}: {}",
                    ctx()
                );
                assert!(env.contains("NODE_EXTRA_CA_CERTS="), "{part}: {}", ctx());
            }
            assert!(
                !text.contains(&key),
                "the key reached the sandbox: {}",
                ctx()
            );
            // Node (no flag, no `ca`) through the terminated tunnel: the gateway got the
            // key and answered.
            assert_eq!(
                section("node").trim(),
                "node status 200 models",
                "{}",
                ctx()
            );
            // Claude Code printed the upstream's answer.
            assert!(section("claude").contains(ANSWER), "{}", ctx());
            // curl is allowed to the gateway but not bound to the key: the placeholder
            // went through as it was, and the gateway refused it, saying why.
            let curl = section("curl");
            assert!(curl.trim_end().ends_with("status 401"), "{}", ctx());
            assert!(
                curl.contains("the credential is a corral placeholder"),
                "{}",
                ctx()
            );
            // The gateway accepted the real key: Node's listing and Claude Code's
            // streamed message are on record under its id.
            let audit = gw.audit();
            let mine: Vec<_> = records_for(&audit, &id).into_iter().skip(before).collect();
            assert!(
                mine.iter()
                    .any(|r| r["status"] == 200 && r["operation"] == "list-models"),
                "{}",
                ctx()
            );
            assert!(
                mine.iter()
                    .any(|r| r["status"] == 200 && r["stream"] == true),
                "{}",
                ctx()
            );
            // Neither the decision log nor the terminal shows it.
            let log = std::fs::read_to_string(&sb.log).unwrap_or_default();
            assert!(!log.contains(&key), "{}", ctx());
            assert!(!String::from_utf8_lossy(&out.stderr).contains(&key));
            // No file the sandbox can read holds the key: not the secret file itself.
            assert_eq!(section("files").trim(), "", "{}", ctx());
            assert_eq!(section("cat").trim(), "refused", "{}", ctx());
        }
    }
}
