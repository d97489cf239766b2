//! Prometheus text exposition, hand-rolled (a few counters and two histograms do not
//! justify a metrics framework).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::log::LogStats;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    5.0,
];

/// A fixed-bucket histogram.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if s <= *bound {
                self.counts[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.counts[i].load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything `/metrics` shows.
#[derive(Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicI64,
    /// Accepts that failed (descriptor exhaustion and the like).
    pub accept_errors_total: AtomicU64,
    /// Connections answered 503 because the process ran out of descriptors.
    pub overload_rejections_total: AtomicU64,
    pub tunnels_active: AtomicI64,
    pub bytes_up_total: AtomicU64,
    pub bytes_down_total: AtomicU64,
    pub reloads_total: AtomicU64,
    pub reload_errors_total: AtomicU64,
    pub policy_generation: AtomicU64,
    /// (decision, reason code) → count.
    decisions: Mutex<BTreeMap<(String, String), u64>>,
    /// From a complete request head to the decision and the upstream connection (or refusal).
    pub setup_seconds: Histogram,
    /// The decision log's own counters (folded, rotated away, lost).
    pub log: Arc<LogStats>,
}

impl Metrics {
    /// Metrics that include `log`'s counters.
    pub fn of_log(log: &crate::DecisionLog) -> Metrics {
        Metrics {
            log: log.stats(),
            ..Metrics::default()
        }
    }

    pub fn decision(&self, decision: &str, reason: &str) {
        let mut map = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((decision.to_string(), reason.to_string()))
            .or_insert(0) += 1;
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        counter(
            "corral_proxy_connections_total",
            "Client connections accepted.",
            "counter",
            self.connections_total.load(Relaxed).to_string(),
        );
        counter(
            "corral_proxy_connections_active",
            "Client connections open now.",
            "gauge",
            self.connections_active.load(Relaxed).to_string(),
        );
        counter(
            "corral_proxy_tunnels_active",
            "CONNECT tunnels open now.",
            "gauge",
            self.tunnels_active.load(Relaxed).to_string(),
        );
        counter(
            "corral_proxy_accept_errors_total",
            "Failed accepts (e.g. out of file descriptors).",
            "counter",
            self.accept_errors_total.load(Relaxed).to_string(),
        );
        counter(
            "corral_proxy_overload_rejections_total",
            "Connections answered 503 because descriptors ran out.",
            "counter",
            self.overload_rejections_total.load(Relaxed).to_string(),
        );
        counter(
            "corral_proxy_policy_reloads_total",
            "Successful policy reloads.",
            "counter",
            self.reloads_total.load(Relaxed).to_string(),
        );
        counter(
            "corral_proxy_policy_reload_errors_total",
            "Policy reloads refused because the file was invalid.",
            "counter",
            self.reload_errors_total.load(Relaxed).to_string(),
        );
        counter(
            "corral_proxy_policy_generation",
            "Generation of the policy in force (1 = loaded at start).",
            "gauge",
            self.policy_generation.load(Relaxed).to_string(),
        );
        let log = &self.log;
        for (name, help, v) in [
            ("corral_proxy_log_folded_total", "Refusals folded into a summary line of the decision log instead of written one by one.", &log.folded),
            ("corral_proxy_log_rotations_total", "Size rotations of the decision log.", &log.rotations),
            ("corral_proxy_log_discarded_total", "Decision records removed from disk by a size rotation.", &log.discarded),
            ("corral_proxy_log_lost_total", "Decision records that could not be written (I/O error).", &log.lost),
            ("corral_proxy_notices_held_total", "Terminal notices of refusals held back by their rate bound.", &log.notices_held),
        ] {
            counter(name, help, "counter", v.load(Relaxed).to_string());
        }
        let _ = writeln!(
            out,
            "# HELP corral_proxy_bytes_total Payload bytes relayed.\n# TYPE corral_proxy_bytes_total counter"
        );
        let _ = writeln!(
            out,
            "corral_proxy_bytes_total{{direction=\"up\"}} {}",
            self.bytes_up_total.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "corral_proxy_bytes_total{{direction=\"down\"}} {}",
            self.bytes_down_total.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP corral_proxy_decisions_total Decisions by outcome and reason code.\n# TYPE corral_proxy_decisions_total counter"
        );
        let map = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        for ((decision, reason), n) in map.iter() {
            let _ = writeln!(
                out,
                "corral_proxy_decisions_total{{decision=\"{decision}\",reason=\"{reason}\"}} {n}"
            );
        }
        drop(map);
        self.setup_seconds.render(
            &mut out,
            "corral_proxy_setup_seconds",
            "Request head to decision and upstream connection (or refusal).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.decision("deny", "no_endpoint");
        m.decision("deny", "no_endpoint");
        m.decision("allow", "");
        m.setup_seconds.observe(Duration::from_micros(70));
        m.log.folded.fetch_add(4999, Relaxed);
        m.log.discarded.fetch_add(29, Relaxed);
        let text = m.render();
        assert!(
            text.contains("\ncorral_proxy_log_folded_total 4999\n"),
            "{text}"
        );
        assert!(text.contains("\ncorral_proxy_log_discarded_total 29\n"));
        assert!(text.contains("\ncorral_proxy_log_lost_total 0\n"));
        assert!(text
            .contains("corral_proxy_decisions_total{decision=\"deny\",reason=\"no_endpoint\"} 2"));
        assert!(text.contains("corral_proxy_setup_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("corral_proxy_setup_seconds_bucket{le=\"0.00005\"} 0"));
        assert!(text.contains("corral_proxy_setup_seconds_count 1"));
    }
}
