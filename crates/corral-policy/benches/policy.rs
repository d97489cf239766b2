//! Policy engine benchmark: decide() and load+compile on generated policies of
//! 100, 1,000 and 10,000 endpoints (10 endpoints per group, binaries drawn from a pool
//! of endpoints/10), against a naive linear scan over the same validated model.
//!
//! Run: `cargo bench -p corral-policy` (about a minute and a half).

use std::hint::black_box;
use std::time::{Duration, Instant};

use corral_policy::glob::Glob;
use corral_policy::host::normalize_host;
use corral_policy::{CompileOptions, Identity, Policy};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// A generated policy: `endpoints` endpoints in groups of 10; `endpoints / 10` distinct
/// binaries, 3 per group (one of them a glob in every 20th group); 80% exact hosts,
/// 10% `*.` and 10% `**.` wildcards; ports 443, some also 80 or 8443.
fn generate(endpoints: usize) -> String {
    let groups = endpoints / 10;
    let binaries = endpoints / 10;
    let mut y = String::from("version: 1\nnetwork_policies:\n");
    for g in 0..groups {
        y.push_str(&format!("  group_{g}:\n    endpoints:\n"));
        for e in 0..10 {
            let n = g * 10 + e;
            let host = match n % 10 {
                0 => format!("\"*.svc{n}.corp.example\""),
                1 => format!("\"**.zone{n}.corp.example\""),
                _ => format!("api{n}.corp.example"),
            };
            let ports = match n % 7 {
                0 => "ports: [80, 443]",
                1 => "ports: [443, 8443]",
                _ => "port: 443",
            };
            y.push_str(&format!("      - {{ host: {host}, {ports} }}\n"));
        }
        y.push_str("    binaries:\n");
        for k in 0..3 {
            let b = (g * 7 + k * 331) % binaries;
            if k == 2 && g % 20 == 0 {
                y.push_str(&format!("      - {{ path: \"/opt/tools{b}/**/bin/*\" }}\n"));
            } else {
                y.push_str(&format!("      - {{ path: /usr/local/bin/tool{b} }}\n"));
            }
        }
    }
    y
}

/// The queries each decide() iteration cycles through: allowed exact host, allowed
/// one-label and any-depth wildcard, wrong port, wrong binary, unknown host.
fn queries(endpoints: usize) -> Vec<(Identity, String, u16)> {
    let groups = endpoints / 10;
    let binaries = endpoints / 10;
    let mut q = Vec::new();
    for i in 0..64 {
        let g = (i * 7919) % groups;
        let bin = Identity::new(format!("/usr/local/bin/tool{}", (g * 7) % binaries));
        let n = g * 10;
        q.push((bin.clone(), format!("api{}.corp.example", n + 5), 443));
        q.push((bin.clone(), format!("x.svc{n}.corp.example"), 443));
        q.push((bin.clone(), format!("a.b.zone{}.corp.example", n + 1), 443));
        q.push((bin.clone(), format!("api{}.corp.example", n + 5), 22));
        q.push((
            Identity::new("/usr/bin/not-listed"),
            format!("api{}.corp.example", n + 5),
            443,
        ));
        q.push((bin, format!("unknown{i}.example.org"), 443));
    }
    q
}

/// Baseline: what a matcher without indexes does — scan every endpoint of every group.
fn naive_allows(
    policy: &Policy,
    globs: &[Vec<Option<Glob>>],
    who: &Identity,
    host: &str,
    port: u16,
) -> bool {
    let Some(h) = normalize_host(host) else {
        return false;
    };
    let exe = who.exe.to_string_lossy();
    for (gi, g) in policy.network_policies.iter().enumerate() {
        for ep in &g.endpoints {
            if ep.host.matches(&h) && ep.ports.contains(&port) {
                let bin_ok = g
                    .binaries
                    .iter()
                    .zip(&globs[gi])
                    .any(|(b, glob)| match glob {
                        Some(gl) => gl.matches(&exe),
                        None => b.path == exe,
                    });
                if bin_ok {
                    return true;
                }
            }
        }
    }
    false
}

/// Percentiles of single calls, timed one by one: robust on a shared machine, where
/// preemption inflates a few samples (and criterion's batch means) but not the median.
fn percentiles(mut ns: Vec<u128>) -> (u128, u128) {
    ns.sort_unstable();
    (ns[ns.len() / 2], ns[ns.len() * 99 / 100])
}

fn summary() {
    println!("summary: size | decide p50 / p99 (single calls) | naive p50 | load+compile min / median of 11");
    for &n in &[100usize, 1_000, 10_000] {
        let src = generate(n);
        let policy = Policy::parse(&src, "bench.yaml").unwrap().policy;
        let matcher = policy.compile(&CompileOptions::default());
        let globs: Vec<Vec<Option<Glob>>> = policy
            .network_policies
            .iter()
            .map(|g| {
                g.binaries
                    .iter()
                    .map(|b| b.path.contains('*').then(|| Glob::new(&b.path)))
                    .collect()
            })
            .collect();
        let qs = queries(n);
        let rounds = if n >= 10_000 { 20 } else { 200 };
        let mut fast = Vec::new();
        for _ in 0..200 {
            for (who, host, port) in &qs {
                let t = Instant::now();
                black_box(matcher.decide(who, host, *port, None));
                fast.push(t.elapsed().as_nanos());
            }
        }
        let mut slow = Vec::new();
        for _ in 0..rounds {
            for (who, host, port) in &qs {
                let t = Instant::now();
                black_box(naive_allows(&policy, &globs, who, host, *port));
                slow.push(t.elapsed().as_nanos());
            }
        }
        let mut load = Vec::new();
        for _ in 0..11 {
            let t = Instant::now();
            let l = Policy::parse(black_box(&src), "bench.yaml").unwrap();
            black_box(l.policy.compile(&CompileOptions::default()));
            load.push(t.elapsed().as_micros());
        }
        load.sort_unstable();
        let (p50, p99) = percentiles(fast);
        let (n50, _) = percentiles(slow);
        println!(
            "summary: {n:>6} | {p50} ns / {p99} ns | {n50} ns ({:.0}x) | {:.1} ms / {:.1} ms",
            n50 as f64 / p50.max(1) as f64,
            load[0] as f64 / 1000.0,
            load[5] as f64 / 1000.0
        );
    }
}

fn bench(c: &mut Criterion) {
    // Only when benchmarking (`cargo bench` passes --bench), not in `cargo test --benches`.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
    let mut group = c.benchmark_group("decide");
    for &n in &[100usize, 1_000, 10_000] {
        let src = generate(n);
        let policy = Policy::parse(&src, "bench.yaml")
            .expect("generated policy is valid")
            .policy;
        let matcher = policy.compile(&CompileOptions::default());
        assert_eq!(matcher.endpoint_count(), n);
        let qs = queries(n);
        // Both implementations must agree on every query.
        let globs: Vec<Vec<Option<Glob>>> = policy
            .network_policies
            .iter()
            .map(|g| {
                g.binaries
                    .iter()
                    .map(|b| b.path.contains('*').then(|| Glob::new(&b.path)))
                    .collect()
            })
            .collect();
        for (who, host, port) in &qs {
            assert_eq!(
                matcher.decide(who, host, *port, None).is_allow(),
                naive_allows(&policy, &globs, who, host, *port),
                "{host}:{port}"
            );
        }
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("indexed", n), &n, |b, _| {
            b.iter(|| {
                let (who, host, port) = &qs[i % qs.len()];
                i += 1;
                black_box(matcher.decide(who, host, *port, None))
            })
        });
        let mut j = 0usize;
        group.bench_with_input(BenchmarkId::new("naive_scan", n), &n, |b, _| {
            b.iter(|| {
                let (who, host, port) = &qs[j % qs.len()];
                j += 1;
                black_box(naive_allows(&policy, &globs, who, host, *port))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("load_compile");
    group.sample_size(10);
    for &n in &[100usize, 1_000, 10_000] {
        let src = generate(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &src, |b, src| {
            b.iter(|| {
                let loaded = Policy::parse(black_box(src), "bench.yaml").unwrap();
                black_box(loaded.policy.compile(&CompileOptions::default()))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
