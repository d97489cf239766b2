//! The gateway's added latency as a user meets it, against LiteLLM, in one run.
//!
//! ```sh
//! bash scripts/install-bench-deps.sh && cargo build --release -p corral   # make bench does both
//! cargo bench -p corral-gateway --bench gateway    # GATEWAY_BENCH_N=300 requests per cell
//! ```
//!
//! Every party is a process of its own, on loopback: the upstream (`benches/upstream.py`,
//! an Anthropic Messages server answering in one write; a second one writes head and body
//! separately, as Python's `http.server` does), the real `corral gateway serve` (release
//! binary, plain HTTP, audit log on disk, one key without limits), LiteLLM's proxy
//! (`litellm[proxy]`, one worker, from `scripts/install-bench-deps.sh`) routed to the same
//! upstreams, and this client. Clients either open a fresh connection per request (as a
//! CLI invocation does) or keep one alive (as Claude Code does). Requests go round-robin to
//! direct / gateway / LiteLLM so that load changes hit them alike. Reported: p50 of the
//! whole non-streaming answer, and p50 time to the first streamed event.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const UPSTREAM: &str = include_str!("upstream.py");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn litellm_bin() -> PathBuf {
    let prefix = std::env::var_os("CORRAL_BENCHDEPS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/opt/corral-benchdeps"), PathBuf::from);
    prefix.join("litellm/bin/litellm")
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_port(addr: SocketAddr, child: &mut Child, name: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} did not listen on {addr} within {secs} s");
}

fn start_upstream(dir: &Path, split: bool) -> (Killed, u16) {
    let script = dir.join("upstream.py");
    std::fs::write(&script, UPSTREAM).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(&script).stdout(Stdio::piped());
    if split {
        cmd.arg("--split");
    }
    let mut child = cmd.spawn().expect("python3 upstream");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Killed(child), line.trim().parse().expect("upstream port"))
}

fn start_gateway(dir: &Path, one: u16, split: u16) -> (Killed, String, String) {
    let corral = corral_testsupport::process::release_corral_bin();
    let keys = dir.join("keys.toml");
    let key_file = dir.join("key.txt");
    let out = Command::new(&corral)
        .args([
            "gateway", "keys", "add", "--owner", "bench", "--id", "bench",
        ])
        .arg("--keys-file")
        .arg(&keys)
        .arg("--key-out")
        .arg(&key_file)
        .output()
        .expect("corral gateway keys add");
    assert!(out.status.success(), "{out:?}");
    let addr = free_addr();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\nkeys_file = \"{}\"\n[audit]\npath = \"{}\"\n[upstreams.one]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:{one}\"\nauth = \"none\"\n[upstreams.split]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:{split}\"\nauth = \"none\"\n[[models]]\nid = \"claude-one\"\nupstream = \"one\"\n[[models]]\nid = \"claude-split\"\nupstream = \"split\"\n",
            keys.display(),
            dir.join("audit.jsonl").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(&corral)
        .args(["gateway", "serve", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("corral gateway serve");
    wait_port(addr, &mut child, "corral gateway", 30);
    let key = std::fs::read_to_string(key_file)
        .unwrap()
        .trim()
        .to_string();
    (Killed(child), format!("http://{addr}"), key)
}

fn start_litellm(dir: &Path, one: u16, split: u16) -> Option<(Killed, String)> {
    let bin = litellm_bin();
    if !bin.exists() {
        println!(
            "LiteLLM is not installed ({}): run scripts/install-bench-deps.sh; measuring against direct only\n",
            bin.display()
        );
        return None;
    }
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: claude-one\n    litellm_params:\n      model: anthropic/claude-one\n      api_base: http://127.0.0.1:{one}\n      api_key: upstream-key\n  - model_name: claude-split\n    litellm_params:\n      model: anthropic/claude-split\n      api_base: http://127.0.0.1:{split}\n      api_key: upstream-key\ngeneral_settings:\n  master_key: sk-bench\nlitellm_settings:\n  telemetry: false\n"
        ),
    )
    .unwrap();
    let addr = free_addr();
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--num_workers", "1"])
        // Its price list is packaged; without this it tries to download a newer one.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("litellm");
    wait_port(addr, &mut child, "LiteLLM", 180);
    Some((Killed(child), format!("http://{addr}")))
}

struct Target {
    name: &'static str,
    url: String,
    auth: (&'static str, String),
}

/// Time to the whole answer, or to the first streamed event.
async fn request(client: &reqwest::Client, t: &Target, model: &str, stream: bool) -> Duration {
    let body = format!(
        r#"{{"model":"{model}","max_tokens":64,"messages":[{{"role":"user","content":"say hello"}}]{}}}"#,
        if stream { r#","stream":true"# } else { "" }
    );
    let start = Instant::now();
    let mut resp = client
        .post(format!("{}/v1/messages", t.url))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header(t.auth.0, &t.auth.1)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", t.name));
    assert!(resp.status().is_success(), "{}: {}", t.name, resp.status());
    let mut first = None;
    while let Some(chunk) = resp.chunk().await.expect("body") {
        if stream && first.is_none() && chunk.windows(6).any(|w| w == b"event:") {
            first = Some(start.elapsed());
        }
    }
    first.unwrap_or_else(|| start.elapsed())
}

fn p50(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("GATEWAY_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let (_one, one) = start_upstream(dir.path(), false);
    let (_split, split) = start_upstream(dir.path(), true);
    let (_gw, gw_url, key) = start_gateway(dir.path(), one, split);
    let litellm = start_litellm(dir.path(), one, split);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("## Gateway: p50 ms over {n} requests per cell, every party its own process\n");
    println!("| client | upstream | request | direct | corral gateway | added | LiteLLM | added | corral added / LiteLLM added |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    rt.block_on(async {
        for fresh in [true, false] {
            let client = if fresh {
                reqwest::Client::builder()
                    .no_proxy()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap()
            } else {
                reqwest::Client::builder().no_proxy().build().unwrap()
            };
            for (upstream, up_port, model) in [
                ("one write", one, "claude-one"),
                ("head, then body", split, "claude-split"),
            ] {
                let mut targets = vec![
                    Target {
                        name: "direct",
                        url: format!("http://127.0.0.1:{up_port}"),
                        auth: ("x-api-key", "upstream-key".into()),
                    },
                    Target {
                        name: "gateway",
                        url: gw_url.clone(),
                        auth: ("x-api-key", key.clone()),
                    },
                ];
                if let Some((_, url)) = &litellm {
                    targets.push(Target {
                        name: "litellm",
                        url: url.clone(),
                        auth: ("authorization", "Bearer sk-bench".into()),
                    });
                }
                for stream in [false, true] {
                    for t in &targets {
                        for _ in 0..10 {
                            request(&client, t, model, stream).await;
                        }
                    }
                    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
                    for _ in 0..n {
                        for (i, t) in targets.iter().enumerate() {
                            times[i].push(request(&client, t, model, stream).await);
                        }
                    }
                    let p: Vec<f64> = times.iter_mut().map(|v| p50(v)).collect();
                    let (direct, gateway) = (p[0], p[1]);
                    let (lite, lite_added, ratio) = match p.get(2) {
                        Some(l) => (
                            format!("{l:.2}"),
                            format!("{:+.2}", l - direct),
                            format!("{:.3}", (gateway - direct) / (l - direct)),
                        ),
                        None => ("–".into(), "–".into(), "–".into()),
                    };
                    println!(
                        "| {} | {upstream} | {} | {direct:.2} | {gateway:.2} | {:+.2} | {lite} | {lite_added} | {ratio} |",
                        if fresh { "fresh connection" } else { "keep-alive" },
                        if stream { "SSE, first event" } else { "JSON, whole answer" },
                        gateway - direct,
                    );
                }
            }
        }
    });
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
    println!(
        "\n(audit records written by the gateway during the run: {})",
        audit.lines().count()
    );
}
