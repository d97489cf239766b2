//! Prometheus metrics, rendered in the text exposition format on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

const BUCKETS_MS: [f64; 14] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_MS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, ms: f64) {
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += ms / 1000.0;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    tokens: BTreeMap<(String, String, &'static str), u64>,
    rejections: BTreeMap<(String, String, String), u64>,
    auth_failures: BTreeMap<String, u64>,
    latency: BTreeMap<String, Histogram>,
    ttfb: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    in_flight: AtomicI64,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        surface: &str,
        model: &str,
        status: u16,
        key: &str,
        input: u64,
        output: u64,
        latency_ms: f64,
        ttfb_ms: Option<f64>,
    ) {
        let mut m = self.lock();
        *m.requests
            .entry((surface.into(), model.into(), status))
            .or_default() += 1;
        if input > 0 {
            *m.tokens
                .entry((key.into(), model.into(), "input"))
                .or_default() += input;
        }
        if output > 0 {
            *m.tokens
                .entry((key.into(), model.into(), "output"))
                .or_default() += output;
        }
        m.latency
            .entry(surface.into())
            .or_default()
            .observe(latency_ms);
        if let Some(t) = ttfb_ms {
            m.ttfb.entry(surface.into()).or_default().observe(t);
        }
    }

    pub fn rejection(&self, key: &str, scope: &str, what: &str) {
        *self
            .lock()
            .rejections
            .entry((key.into(), scope.into(), what.into()))
            .or_default() += 1;
    }

    pub fn auth_failure(&self, reason: &str) {
        *self.lock().auth_failures.entry(reason.into()).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP corral_gateway_requests_total Requests by surface, model and status."
        );
        let _ = writeln!(out, "# TYPE corral_gateway_requests_total counter");
        for ((s, model, st), n) in &m.requests {
            let _ = writeln!(
                out,
                "corral_gateway_requests_total{{surface=\"{}\",model=\"{}\",status=\"{st}\"}} {n}",
                esc(s),
                esc(model)
            );
        }
        let _ = writeln!(
            out,
            "# HELP corral_gateway_tokens_total Tokens by key, model and direction."
        );
        let _ = writeln!(out, "# TYPE corral_gateway_tokens_total counter");
        for ((k, model, dir), n) in &m.tokens {
            let _ = writeln!(
                out,
                "corral_gateway_tokens_total{{key=\"{}\",model=\"{}\",direction=\"{dir}\"}} {n}",
                esc(k),
                esc(model)
            );
        }
        let _ = writeln!(
            out,
            "# HELP corral_gateway_rate_limited_total Requests refused by a rate limit."
        );
        let _ = writeln!(out, "# TYPE corral_gateway_rate_limited_total counter");
        for ((k, scope, what), n) in &m.rejections {
            let _ = writeln!(
                out,
                "corral_gateway_rate_limited_total{{key=\"{}\",scope=\"{scope}\",limit=\"{what}\"}} {n}",
                esc(k)
            );
        }
        let _ = writeln!(
            out,
            "# HELP corral_gateway_auth_failures_total Requests refused for their credential."
        );
        let _ = writeln!(out, "# TYPE corral_gateway_auth_failures_total counter");
        for (reason, n) in &m.auth_failures {
            let _ = writeln!(
                out,
                "corral_gateway_auth_failures_total{{reason=\"{}\"}} {n}",
                esc(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP corral_gateway_in_flight Requests being served."
        );
        let _ = writeln!(out, "# TYPE corral_gateway_in_flight gauge");
        let _ = writeln!(
            out,
            "corral_gateway_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        for (name, help, map) in [
            (
                "corral_gateway_request_duration_seconds",
                "Time to the end of the response.",
                &m.latency,
            ),
            (
                "corral_gateway_time_to_first_byte_seconds",
                "Time to the first response byte.",
                &m.ttfb,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (surface, h) in map {
                for (i, b) in BUCKETS_MS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{surface=\"{}\",le=\"{}\"}} {}",
                        esc(surface),
                        b / 1000.0,
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{surface=\"{}\",le=\"+Inf\"}} {}",
                    esc(surface),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{{surface=\"{}\"}} {}", esc(surface), h.sum);
                let _ = writeln!(
                    out,
                    "{name}_count{{surface=\"{}\"}} {}",
                    esc(surface),
                    h.count
                );
            }
        }
        out
    }
}
