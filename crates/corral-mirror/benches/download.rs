//! Download throughput of corral's verified download (`Fetcher::download_verified`: stream to
//! disk + SHA-256 + size check) against curl fetching the same file from the same
//! `corral mirror serve` — curl alone (`-o /dev/null`), and curl + `sha256sum`, which is what
//! install.sh does. Run: `cargo bench -p corral-mirror --bench download`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use corral_mirror::fetch::Fetcher;
use corral_mirror::release::PlatformEntry;
use corral_mirror::script::ScriptSettings;
use corral_mirror::server::{self, ServeConfig};
use corral_mirror::store::Store;

const SIZE: usize = 256 * 1024 * 1024;
const RUNS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let payload_path = dir.path().join("payload");
    // Incompressible-ish bytes (xorshift), so nothing benefits from zero pages.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut payload = Vec::with_capacity(SIZE);
    while payload.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(&payload_path, &payload).unwrap();
    drop(payload);
    let root = dir.path().join("mirror");
    let added = Store::new(&root)
        .add("1.0.0", "linux-x64", "claude", &payload_path)
        .unwrap();
    let entry: PlatformEntry = added.entry;

    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let config = ServeConfig {
        root: root.clone(),
        listen: addr,
        tls: None,
        public_url: None,
        redirect: None,
        script: ScriptSettings::default(),
        access_log: Some(dir.path().join("access.log")),
    };
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(server::serve(config))
            .unwrap();
    });
    while std::net::TcpStream::connect(addr).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("http://{addr}/1.0.0/linux-x64/claude");
    let out = dir.path().join("out");

    let curl = median(|| {
        let s = Command::new("curl")
            .args(["-sSf", "-o", "/dev/null", &url])
            .status()
            .unwrap();
        assert!(s.success());
    });
    let curl_verify = median(|| {
        let s = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -sSf -o '{0}' '{url}' && sha256sum '{0}' >/dev/null",
                out.display()
            ))
            .status()
            .unwrap();
        assert!(s.success());
    });
    let fetcher = Fetcher::new(None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let corral = median(|| {
        rt.block_on(fetcher.download_verified(&url, &out, &entry, ""))
            .unwrap();
    });

    let mbps = |d: Duration| SIZE as f64 / 1e6 / d.as_secs_f64();
    println!(
        "download of {} MiB from corral mirror serve (loopback, plain HTTP), median of {RUNS}:",
        SIZE >> 20
    );
    println!(
        "  curl -o /dev/null              {:8.0} MB/s  (baseline)",
        mbps(curl)
    );
    println!(
        "  curl -o file && sha256sum      {:8.0} MB/s  ratio {:.2}",
        mbps(curl_verify),
        mbps(curl_verify) / mbps(curl)
    );
    println!(
        "  corral download_verified       {:8.0} MB/s  ratio {:.2} (vs curl+sha256sum: {:.2})",
        mbps(corral),
        mbps(corral) / mbps(curl),
        mbps(corral) / mbps(curl_verify)
    );
}

fn median(mut f: impl FnMut()) -> Duration {
    f(); // warm the page cache and connection paths
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}
