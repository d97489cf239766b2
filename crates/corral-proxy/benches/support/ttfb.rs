//! The attributed TTFB rows of docs/benchmarks.md: a fresh CONNECT tunnel and a one-byte
//! echo, timed by a Python client, through each proxy as a user runs it — `corral run`
//! (connect broker + embedded proxy, the client inside the sandbox), the standalone
//! `corral proxy` attributing through the kernel (no fixed identity), tinyproxy and squid —
//! every server a process of its own, all in one run, interleaved.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const CLIENT: &str = include_str!("ttfb_client.py");
const UPSTREAM: &str = include_str!("echo_upstream.py");

fn python() -> PathBuf {
    std::fs::canonicalize("/usr/bin/python3").expect("python3")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn samples(out: &std::process::Output) -> serde_json::Map<String, serde_json::Value> {
    assert!(
        out.status.success(),
        "TTFB client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("TTFB client output {text:?}: {e}"))
}

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the rows and prints their table. `rounds` per row, in `blocks` interleaved blocks.
pub fn run(dir: &Path, rounds: usize, blocks: usize) {
    let corral = corral_testsupport::process::release_corral_bin();
    let py = python();
    std::fs::write(dir.join("ttfb_client.py"), CLIENT).unwrap();
    std::fs::write(dir.join("echo_upstream.py"), UPSTREAM).unwrap();
    let mut up = Command::new(&py)
        .arg(dir.join("echo_upstream.py"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("echo upstream");
    let mut port = String::new();
    BufReader::new(up.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let _up = Killed(up);
    let up_port: u16 = port.trim().parse().expect("upstream port");

    // Policy and log in directories of their own (corral run refuses them in its cwd).
    let policy_dir = dir.join("ttfb-policy");
    let log_dir = dir.join("ttfb-logs");
    let work = dir.join("ttfb-work");
    for d in [&policy_dir, &log_dir, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    let policy = policy_dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nnetwork_policies:\n  bench:\n    endpoints:\n      - {{ host: 127.0.0.1, port: {up_port}, allowed_ips: [127.0.0.0/8] }}\n    binaries:\n      - {{ path: {} }}\n",
            py.display()
        ),
    )
    .unwrap();
    let standalone_addr = super::free_addr();
    let mut standalone = Command::new(&corral)
        .args(["proxy", "--policy"])
        .arg(&policy)
        .arg("--listen")
        .arg(standalone_addr.to_string())
        .arg("--log")
        .arg(log_dir.join("standalone.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("corral proxy");
    assert!(super::wait_port(
        standalone_addr,
        &mut standalone,
        "corral proxy"
    ));
    let _standalone = Killed(standalone);
    let tiny = super::spawn_tinyproxy(dir).map(|(c, a)| (Killed(c), a));
    let squid = super::spawn_squid(dir).map(|(c, a)| (Killed(c), a));

    let tunnel = |name: &str, addr: SocketAddr| {
        format!(
            "{name},connect,{},{},127.0.0.1,{up_port}",
            addr.ip(),
            addr.port()
        )
    };
    let mut outside = vec![format!("direct,direct,127.0.0.1,{up_port}")];
    outside.push(tunnel("corral proxy", standalone_addr));
    if let Some((_, a)) = &tiny {
        outside.push(tunnel("tinyproxy", *a));
    }
    if let Some((_, a)) = &squid {
        outside.push(tunnel("squid", *a));
    }
    let per_block = (rounds / blocks.max(1)).max(1);
    let mut all: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut add = |m: serde_json::Map<String, serde_json::Value>| {
        for (k, v) in m {
            let v = v.as_array().unwrap().iter().filter_map(|x| x.as_f64());
            all.entry(k).or_default().extend(v);
        }
    };
    for _ in 0..blocks.max(1) {
        let out = Command::new(&py)
            .arg(dir.join("ttfb_client.py"))
            .arg(per_block.to_string())
            .args(&outside)
            .output()
            .expect("TTFB client");
        add(samples(&out));
        // Inside corral run: the broker takes the connect to the advertised proxy address.
        let out = Command::new(&corral)
            .current_dir(&work)
            .args(["run", "--mode", "namespaces", "--policy"])
            .arg(&policy)
            .arg("--log")
            .arg(log_dir.join("run.jsonl"))
            .arg("--")
            .arg(&py)
            .arg(dir.join("ttfb_client.py"))
            .arg(per_block.to_string())
            .arg(format!(
                "corral run,connect,127.0.0.1,3128,127.0.0.1,{up_port}"
            ))
            .stderr(Stdio::piped())
            .output()
            .expect("corral run");
        add(samples(&out));
    }
    let direct = p50(all.get_mut("direct").unwrap());
    let tiny_added = all.get_mut("tinyproxy").map(|v| p50(v) - direct);
    println!("## Attributed TTFB: fresh CONNECT tunnel + 1-byte echo, Python client ({} rounds per row, {blocks} interleaved blocks)\n", per_block * blocks.max(1));
    println!("| path | TTFB p50 | added p50 vs direct | added / tinyproxy's added |");
    println!("|---|---:|---:|---:|");
    for name in ["direct", "corral run", "corral proxy", "tinyproxy", "squid"] {
        let Some(v) = all.get_mut(name) else { continue };
        let p = p50(v);
        let ratio = match tiny_added {
            Some(t) if name != "direct" && t > 0.0 => format!("{:.2}", (p - direct) / t),
            _ => "–".into(),
        };
        println!("| {name} | {p:.0} µs | {:+.0} µs | {ratio} |", p - direct);
    }
    println!();
}
