//! Egress proxy benchmarks: time to first byte through a CONNECT tunnel, tunnel
//! throughput, and RSS with many idle tunnels — corral vs a direct connection vs squid vs
//! tinyproxy, all on loopback, in one run.
//!
//! ```sh
//! cargo build --release -p corral   # the attributed rows run the real binary
//! ulimit -n 20000   # 5,000 tunnels need ~10,000 descriptors here and in each proxy
//! cargo bench -p corral-proxy --bench proxy            # BENCH_TUNNELS=5000 BENCH_MIB=512 BENCH_ROUNDS=2000
//! BENCH_ONLY_TTFB=1 cargo bench -p corral-proxy --bench proxy   # the attributed rows only
//! ```
//!
//! First, the attributed TTFB rows ([`ttfb`]): the real `corral run` and `corral proxy`
//! with kernel attribution, a Python client, every server a process of its own
//! (`BENCH_TTFB_ROUNDS`, default 1000, in `BENCH_TTFB_BLOCKS` interleaved blocks, default 5).
//! Then the relay's own costs, where corral attributes every connection to one fixed
//! identity so that only the proxy path is measured:
//! corral runs as a child process (this binary re-executed with `CORRAL_BENCH_CHILD`), so
//! its RSS is measured alone; squid and tinyproxy run from their Debian packages with
//! temporary configs on loopback (not as services), logging off, caching off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/ttfb.rs"]
mod ttfb;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(spec) = std::env::var("CORRAL_BENCH_CHILD") {
        return child(&spec);
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    ttfb::run(
        dir.path(),
        env_or("BENCH_TTFB_ROUNDS", 1000),
        env_or("BENCH_TTFB_BLOCKS", 5),
    );
    if std::env::var("BENCH_ONLY_TTFB").is_ok() {
        return;
    }
    let rounds = env_or("BENCH_ROUNDS", 2000);
    let mib = env_or("BENCH_MIB", 512);
    let tunnels = env_or("BENCH_TUNNELS", 5000);
    let upstream = start_upstream();
    println!("upstream {upstream}; rounds {rounds}; {mib} MiB per throughput run; {tunnels} idle tunnels\n");

    let mut results = Vec::new();
    results.push(("direct", measure(None, upstream, rounds, mib, 0, None)));
    let mut corral = spawn_corral(dir.path(), upstream);
    if std::env::var("BENCH_ONLY_CORRAL").is_ok() {
        let r = measure(Some(corral.1), upstream, rounds, mib, 0, None);
        let d = &results[0].1;
        println!(
            "corral p50 {:.0} µs (open {:.0} + echo {:.0}) p99 {:.0} µs {:.0} MiB/s; direct p50 {:.0} µs (open {:.0} + echo {:.0}) {:.0} MiB/s",
            r.p50_us, r.setup_p50_us, r.echo_p50_us, r.p99_us, r.mib_s,
            d.p50_us, d.setup_p50_us, d.echo_p50_us, d.mib_s
        );
        let _ = corral.0.kill();
        return;
    }
    results.push((
        "corral",
        measure(
            Some(corral.1),
            upstream,
            rounds,
            mib,
            tunnels,
            Some(corral.0.id()),
        ),
    ));
    let _ = corral.0.kill();
    let _ = corral.0.wait();
    match spawn_squid(dir.path()) {
        Some(mut s) => {
            let r = measure(Some(s.1), upstream, rounds, mib, tunnels, Some(s.0.id()));
            results.push(("squid", r));
            let _ = s.0.kill();
            let _ = s.0.wait();
        }
        None => println!("squid: not available, skipped"),
    }
    match spawn_tinyproxy(dir.path()) {
        Some(mut t) => {
            let r = measure(Some(t.1), upstream, rounds, mib, tunnels, Some(t.0.id()));
            results.push(("tinyproxy", r));
            let _ = t.0.kill();
            let _ = t.0.wait();
        }
        None => println!("tinyproxy: not available, skipped"),
    }

    let direct = &results[0].1;
    println!("| path | TTFB p50 | TTFB p99 | added p50 vs direct | open p50 | echo p50 (open connection) | throughput | vs direct | RSS idle | RSS with {tunnels} tunnels | per tunnel |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, r) in &results {
        let rss = match (r.rss_idle, r.rss_loaded) {
            (Some(i), Some(l)) => format!(
                "{:.1} MiB | {:.1} MiB | {:.1} KiB",
                i as f64 / 1024.0,
                l as f64 / 1024.0,
                (l.saturating_sub(i)) as f64 / tunnels.max(1) as f64
            ),
            _ => "– | – | –".into(),
        };
        println!(
            "| {name} | {:.0} µs | {:.0} µs | {:+.0} µs | {:.0} µs | {:.0} µs | {:.0} MiB/s | {:.2} | {rss} |",
            r.p50_us,
            r.p99_us,
            r.p50_us - direct.p50_us,
            r.setup_p50_us,
            r.echo_p50_us,
            r.mib_s,
            r.mib_s / direct.mib_s,
        );
        if let Some(e) = &r.note {
            println!("|  note: {e} |");
        }
    }
}

#[derive(Default)]
struct Result {
    p50_us: f64,
    p99_us: f64,
    /// The TTFB split: opening (connect, and CONNECT → 200 through a proxy) …
    setup_p50_us: f64,
    /// … and one byte's round trip on a connection already open.
    echo_p50_us: f64,
    mib_s: f64,
    rss_idle: Option<u64>,
    rss_loaded: Option<u64>,
    note: Option<String>,
}

/// Opens a tunnel (or a direct connection) to `upstream` and returns the stream.
fn open(proxy: Option<SocketAddr>, upstream: SocketAddr) -> std::io::Result<TcpStream> {
    match proxy {
        None => {
            let s = TcpStream::connect(upstream)?;
            s.set_nodelay(true)?;
            Ok(s)
        }
        Some(p) => {
            let mut s = TcpStream::connect(p)?;
            s.set_nodelay(true)?;
            // One write, as real clients send it (write! on the stream would send each
            // formatted piece as its own segment, and wake the proxy for each).
            let head = format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n");
            s.write_all(head.as_bytes())?;
            // The upstream speaks only after the client does, so reading past the head
            // cannot swallow tunnel bytes.
            let mut head = Vec::new();
            let mut b = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b)?;
                if n == 0 {
                    return Err(std::io::Error::other("proxy closed"));
                }
                head.extend_from_slice(&b[..n]);
            }
            if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                return Err(std::io::Error::other(format!(
                    "proxy answered {}",
                    String::from_utf8_lossy(&head)
                )));
            }
            Ok(s)
        }
    }
}

fn measure(
    proxy: Option<SocketAddr>,
    upstream: SocketAddr,
    rounds: usize,
    mib: usize,
    tunnels: usize,
    pid: Option<u32>,
) -> Result {
    let mut r = Result::default();
    // Warm up, then time connect → CONNECT → 200 → first echoed byte.
    let mut samples = Vec::with_capacity(rounds);
    let mut setups = Vec::with_capacity(rounds);
    let mut echoes = Vec::with_capacity(rounds);
    for i in 0..rounds + 100 {
        let start = Instant::now();
        let mut s = match open(proxy, upstream) {
            Ok(s) => s,
            Err(e) => {
                r.note = Some(format!("TTFB: {e}"));
                return r;
            }
        };
        let opened = start.elapsed();
        let mut b = [0u8; 1];
        s.write_all(b"p").unwrap();
        s.read_exact(&mut b).unwrap();
        let first = start.elapsed();
        // A second byte on the now-open connection: the relay's own round trip.
        let again = Instant::now();
        s.write_all(b"p").unwrap();
        s.read_exact(&mut b).unwrap();
        if i >= 100 {
            samples.push(first);
            setups.push(opened);
            echoes.push(again.elapsed());
        }
    }
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    r.setup_p50_us = p50(&mut setups);
    r.echo_p50_us = p50(&mut echoes);
    samples.sort();
    r.p50_us = samples[samples.len() / 2].as_secs_f64() * 1e6;
    r.p99_us = samples[samples.len() * 99 / 100].as_secs_f64() * 1e6;

    // Throughput: stream `mib` MiB into a sink upstream, which answers with the count.
    let mut s = open(proxy, upstream).unwrap();
    let total = (mib * 1024 * 1024) as u64;
    s.write_all(b"s").unwrap();
    s.write_all(&total.to_be_bytes()).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    for _ in 0..mib * 16 {
        s.write_all(&chunk).unwrap();
    }
    let mut count = [0u8; 8];
    if let Err(e) = s.read_exact(&mut count) {
        r.note = Some(format!("throughput: {e}"));
        return r;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(count), (mib * 1024 * 1024) as u64);
    r.mib_s = mib as f64 / secs;

    // RSS with many idle tunnels.
    if let (Some(pid), true) = (pid, tunnels > 0) {
        std::thread::sleep(Duration::from_millis(300));
        r.rss_idle = Some(rss_tree_kib(pid));
        let mut open_tunnels = Vec::with_capacity(tunnels);
        for _ in 0..tunnels {
            match open(proxy, upstream) {
                Ok(mut s) => {
                    s.write_all(b"p").unwrap();
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).unwrap();
                    open_tunnels.push(s);
                }
                Err(e) => {
                    r.note = Some(format!("opened {} tunnels, then: {e}", open_tunnels.len()));
                    break;
                }
            }
        }
        // Idle means idle: corral releases a tunnel's buffers after a second of silence.
        std::thread::sleep(Duration::from_millis(2000));
        if open_tunnels.len() == tunnels {
            r.rss_loaded = Some(rss_tree_kib(pid));
        }
        drop(open_tunnels);
    }
    r
}

/// VmRSS of `pid` and all its descendants, in KiB.
fn rss_tree_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

/// A loopback upstream: first byte `p` → echo everything; `s` + 8-byte length → read that
/// many bytes, answer the count (no half-close: squid and tinyproxy close tunnels on it).
fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = s.set_nodelay(true);
                    let mut first = [0u8; 1];
                    if s.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    if first[0] == b's' {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut total = 0u64;
                        let mut want = [0u8; 8];
                        if s.read_exact(&mut want).await.is_err() {
                            return;
                        }
                        let want = u64::from_be_bytes(want);
                        while total < want {
                            match s.read(&mut buf).await {
                                Ok(0) => break,
                                Err(e) => {
                                    eprintln!("sink read: {e}");
                                    break;
                                }
                                Ok(n) => total += n as u64,
                            }
                        }
                        if let Err(e) = s.write_all(&total.to_be_bytes()).await {
                            eprintln!("sink: {e}");
                        }
                    } else {
                        let _ = s.write_all(&first).await;
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
    });
    addr
}

fn wait_port(addr: SocketAddr, child: &mut Child, name: &str) -> bool {
    for _ in 0..500 {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        if let Ok(Some(status)) = child.try_wait() {
            println!("{name} exited: {status}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn spawn_corral(dir: &Path, upstream: SocketAddr) -> (Child, SocketAddr) {
    let addr = free_addr();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("CORRAL_BENCH_CHILD", format!("{addr} {}", upstream.port()))
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn corral child");
    assert!(
        wait_port(addr, &mut child, "corral"),
        "corral child did not start"
    );
    (child, addr)
}

/// The corral side: serve with a policy allowing the bench identity to reach the upstream.
fn child(spec: &str) {
    let mut parts = spec.split_whitespace();
    let listen: SocketAddr = parts.next().unwrap().parse().unwrap();
    let port: u16 = parts.next().unwrap().parse().unwrap();
    let yaml = format!(
        "version: 1\nnetwork_policies:\n  bench:\n    endpoints:\n      - {{ host: 127.0.0.1, port: {port}, allowed_ips: [127.0.0.0/8] }}\n    binaries:\n      - {{ path: /usr/bin/bench-client }}\n"
    );
    let loaded = corral_policy::Policy::parse(&yaml, "bench.yaml").expect("bench policy");
    let matcher = Arc::new(loaded.policy.compile(&Default::default()));
    let rt = if std::env::var("BENCH_CURRENT_THREAD").is_ok() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .unwrap();
    // The accept loop runs as a task on a worker (as in `corral run` and `corral proxy`), so
    // each connection's task starts on the same thread without a cross-thread wake-up.
    let serving = rt.spawn(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let config = Arc::new(corral_proxy::ProxyConfig::new(
            corral_proxy::DecisionLog::disabled(),
        ));
        corral_proxy::serve(
            listener,
            config,
            corral_proxy::PolicyHandle::new(matcher),
            Arc::new(corral_proxy::FixedIdentity::exe("/usr/bin/bench-client")),
            std::future::pending::<()>(),
        )
        .await
        .unwrap();
    });
    rt.block_on(serving).unwrap();
}

fn spawn_squid(dir: &Path) -> Option<(Child, SocketAddr)> {
    let squid = ["/usr/sbin/squid", "/usr/bin/squid"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let addr = free_addr();
    let d = dir.join("squid");
    std::fs::create_dir_all(&d).ok()?;
    let _ = Command::new("chmod").arg("777").arg(&d).status();
    let conf = d.join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port {addr}\nhttp_access allow all\ncache deny all\ncache_mem 8 MB\naccess_log none\ncache_store_log none\ncache_log {d}/cache.log\npid_filename {d}/squid.pid\ncoredump_dir {d}\nmax_filedescriptors 20000\nshutdown_lifetime 0 seconds\nworkers 1\ndns_v4_first on\n",
            d = d.display()
        ),
    )
    .ok()?;
    let mut child = Command::new(squid)
        .arg("-N")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if !wait_port(addr, &mut child, "squid") {
        let _ = child.kill();
        println!(
            "squid log: {}",
            std::fs::read_to_string(d.join("cache.log")).unwrap_or_default()
        );
        return None;
    }
    Some((child, addr))
}

fn spawn_tinyproxy(dir: &Path) -> Option<(Child, SocketAddr)> {
    let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let addr = free_addr();
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "User nobody\nGroup nogroup\nPort {}\nListen 127.0.0.1\nTimeout 600\nMaxClients 10000\nLogLevel Critical\nDisableViaHeader Yes\n",
            addr.port()
        ),
    )
    .ok()?;
    let mut child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if !wait_port(addr, &mut child, "tinyproxy") {
        let _ = child.kill();
        return None;
    }
    Some((child, addr))
}
