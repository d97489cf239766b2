//! Added latency and throughput of the gateway against the test upstream, in one run.
//!
//! `cargo bench -p corral-gateway --bench gateway` — prints a Markdown table for
//! docs/benchmarks.md. Everything runs on loopback: the test upstream (its own thread), the
//! gateway (in-process, plain HTTP, audit log on disk, one key without limits) and the client.
//! Each figure is compared with the same request sent straight to the upstream.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_gateway::config::Config;
use corral_gateway::server::Server;
use corral_testsupport::llm_upstream::{LlmUpstream, Script};

const BODY: &str =
    r#"{"model":"MODEL","max_tokens":64,"messages":[{"role":"user","content":"say hello"}]STREAM}"#;

fn body(model: &str, stream: bool) -> String {
    BODY.replace("MODEL", model)
        .replace("STREAM", if stream { r#","stream":true"# } else { "" })
}

fn bedrock_body() -> String {
    r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":64,"messages":[{"role":"user","content":"say hello"}]}"#.into()
}

struct Case {
    name: &'static str,
    path_direct: String,
    path_gateway: String,
    body_direct: String,
    body_gateway: String,
}

/// (time to first body byte, time to the end) of one request.
async fn one(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    key: Option<&str>,
) -> (Duration, Duration) {
    let start = Instant::now();
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let mut resp = req.send().await.expect("send");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let mut first = None;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        if !chunk.is_empty() && first.is_none() {
            first = Some(start.elapsed());
        }
    }
    let end = start.elapsed();
    (first.unwrap_or(end), end)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

async fn latency(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    key: Option<&str>,
    n: usize,
) -> (f64, f64, f64, f64) {
    for _ in 0..50 {
        one(client, url, body, key).await;
    }
    let mut ttfb = Vec::with_capacity(n);
    let mut full = Vec::with_capacity(n);
    for _ in 0..n {
        let (a, b) = one(client, url, body, key).await;
        ttfb.push(a);
        full.push(b);
    }
    (
        pct(&mut ttfb, 0.5),
        pct(&mut full, 0.5),
        pct(&mut ttfb, 0.99),
        pct(&mut full, 0.99),
    )
}

async fn throughput(url: &str, body: &str, key: Option<&str>, workers: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let url = url.to_string();
        let body = body.to_string();
        let key = key.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut n = 0u64;
            while Instant::now() < deadline {
                one(&client, &url, &body, key.as_deref()).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs
}

fn config(dir: &Path, upstream: &str) -> Config {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
keys_file = "keys.toml"
[audit]
path = "audit.jsonl"
[upstreams.bedrock]
kind = "bedrock"
region = "us-east-1"
base_url = "{upstream}"
auth = "none"
[upstreams.anthropic]
kind = "anthropic"
base_url = "{upstream}"
auth = "none"
[[models]]
id = "claude-a"
upstream = "anthropic"
[[models]]
id = "claude-b"
aliases = ["us.anthropic.claude-b-v1:0"]
upstream = "bedrock"
upstream_model = "us.anthropic.claude-b-v1:0"
"#
    );
    Config::parse(&text, &dir.join("gateway.toml")).expect("config")
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("GATEWAY_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let secs: f64 = std::env::var("GATEWAY_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let upstream = LlmUpstream::start(Script::default());
    let dir = tempfile::tempdir().unwrap();
    let (key, hash) = corral_gateway::keys::generate("bench").unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!("[[keys]]\nid = \"bench\"\nhash = \"{hash}\"\nowner = \"bench\"\n"),
    )
    .unwrap();
    let config = config(dir.path(), &upstream.url());
    let (tx, rx) = std::sync::mpsc::channel();
    let gateway_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(config).await.expect("bind");
            tx.send(server.url()).unwrap();
            let (_stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let _keep = Arc::new(_stop_tx);
            server
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
    });
    let gw = rx.recv().unwrap();
    let up = upstream.url();
    let cases = vec![
        Case {
            name: "Anthropic JSON → Anthropic upstream",
            path_direct: "/v1/messages".into(),
            path_gateway: "/v1/messages".into(),
            body_direct: body("claude-a", false),
            body_gateway: body("claude-a", false),
        },
        Case {
            name: "Anthropic SSE → Anthropic upstream (relay)",
            path_direct: "/v1/messages".into(),
            path_gateway: "/v1/messages".into(),
            body_direct: body("claude-a", true),
            body_gateway: body("claude-a", true),
        },
        Case {
            name: "Bedrock event-stream → Bedrock upstream (relay)",
            path_direct: "/model/us.anthropic.claude-b-v1:0/invoke-with-response-stream".into(),
            path_gateway: "/model/us.anthropic.claude-b-v1%3A0/invoke-with-response-stream".into(),
            body_direct: bedrock_body(),
            body_gateway: bedrock_body(),
        },
        Case {
            name: "Anthropic SSE → Bedrock upstream (translated)",
            path_direct: "/model/us.anthropic.claude-b-v1:0/invoke-with-response-stream".into(),
            path_gateway: "/v1/messages".into(),
            body_direct: bedrock_body(),
            body_gateway: body("claude-b", true),
        },
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        println!("## Latency, sequential requests (n = {n}, ms; direct = client → test upstream)\n");
        println!("| case | direct p50 first byte | gateway p50 first byte | added p50 first byte | direct p50 full | gateway p50 full | added p50 full | gateway p99 full |");
        println!("|---|---|---|---|---|---|---|---|");
        for c in &cases {
            let d = latency(&client, &format!("{up}{}", c.path_direct), &c.body_direct, None, n).await;
            let g = latency(&client, &format!("{gw}{}", c.path_gateway), &c.body_gateway, Some(&key), n).await;
            println!(
                "| {} | {:.3} | {:.3} | {:+.3} | {:.3} | {:.3} | {:+.3} | {:.3} |",
                c.name, d.0, g.0, g.0 - d.0, d.1, g.1, g.1 - d.1, g.3
            );
        }
        println!("\n## Throughput, 16 concurrent clients for {secs} s (requests/s)\n");
        println!("| case | direct | gateway | gateway / direct |");
        println!("|---|---|---|---|");
        for c in [&cases[0], &cases[1], &cases[3]] {
            let d = throughput(&format!("{up}{}", c.path_direct), &c.body_direct, None, 16, secs).await;
            let g = throughput(&format!("{gw}{}", c.path_gateway), &c.body_gateway, Some(&key), 16, secs).await;
            println!("| {} | {:.0} | {:.0} | {:.2} |", c.name, d, g, g / d);
        }
    });
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
    println!(
        "\n(audit records written during the run: {})",
        audit.lines().count()
    );
    drop(gateway_thread);
    std::process::exit(0);
}
