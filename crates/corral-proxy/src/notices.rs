//! Notices of refusals on the terminal of `corral run`: each distinct refusal once, at most
//! [`BURST`] a minute. What is held back is counted and said in one line when the minute
//! ends (or when the session does); the decision log has every refusal.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::record::LogRecord;

/// Notices shown per window.
pub(crate) const BURST: u32 = 10;
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Distinct refusals remembered (as already told); past that, repeats may be told again,
/// still within the rate.
const MAX_SEEN: usize = 4096;

pub(crate) struct Notices {
    /// The command that turns the log into policy lines.
    fix: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seen: HashSet<String>,
    window: Option<Instant>,
    shown: u32,
    held: u64,
}

impl Notices {
    pub(crate) fn new(fix: String) -> Notices {
        Notices {
            fix,
            state: Mutex::default(),
        }
    }

    /// The text to print for `record` (lines ending in `\n`), and whether a notice was
    /// held back by the rate bound.
    pub(crate) fn tell(&self, record: &LogRecord, now: Instant) -> (String, bool) {
        let r = &record.report;
        if r.decision != "deny" || record.repeated.is_some() {
            return (String::new(), false);
        }
        let code = r.error.as_deref().unwrap_or("refused");
        let key = format!("{}\0{}\0{}\0{code}", r.binary, r.host, r.port);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.seen.contains(&key) {
            return (String::new(), false);
        }
        let mut out = self.roll(&mut st, now);
        if st.shown >= BURST {
            st.held += 1;
            return (out, true);
        }
        st.shown += 1;
        if st.seen.len() < MAX_SEEN {
            st.seen.insert(key);
        }
        let dest = match r.port {
            0 => r.host.clone(),
            port => format!("{}:{port}", r.host),
        };
        out.push_str(&format!(
            "corral: refused {} -> {dest} [{code}]: {}\n",
            r.program(),
            r.reason
        ));
        // Only a policy refusal has policy lines that fix it.
        if r.suggestion.is_some() {
            out.push_str(&format!("corral:   to allow it: {}\n", self.fix));
        }
        if code == "dns_lookup" {
            out.push_str(lookup_hint(&r.binary));
        }
        (out, false)
    }

    /// The line for what was held back, once the window has ended (`None`: now, at the end
    /// of the session).
    pub(crate) fn tick(&self, now: Option<Instant>) -> String {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match now {
            Some(now) => self.roll(&mut st, now),
            None => self.held_line(&mut st),
        }
    }

    /// Starts a new window when the current one has ended; returns the held-back line.
    fn roll(&self, st: &mut State, now: Instant) -> String {
        match st.window {
            Some(start) if now.duration_since(start) < WINDOW => String::new(),
            _ => {
                st.window = Some(now);
                st.shown = 0;
                self.held_line(st)
            }
        }
    }

    fn held_line(&self, st: &mut State) -> String {
        match std::mem::take(&mut st.held) {
            0 => String::new(),
            n => format!(
                "corral: {n} more refusal(s) not shown (at most {BURST} a minute); the decision log has every one: {}\n",
                self.fix
            ),
        }
    }
}

/// What a refused name lookup means. The proxy resolves names for the programs that use
/// it, so a lookup says the program is not using it — true of Node before the releases
/// that honour `NODE_USE_ENV_PROXY` (which `corral run` sets), whose `fetch` then fails with
/// `EAI_AGAIN`.
fn lookup_hint(binary: &str) -> &'static str {
    let name = binary.rsplit('/').next().unwrap_or(binary);
    if name.starts_with("node") {
        "corral:   Node uses the proxy only from 22.21 (24.5 in the 24 line; fetch alone from 24.0), with NODE_USE_ENV_PROXY=1, which corral sets; an older Node fails with EAI_AGAIN unless the program routes itself through the proxy: undici's EnvHttpProxyAgent (setGlobalDispatcher) for fetch, a proxy agent for http/https (docs/sandbox.md)\n"
    } else {
        "corral:   a program that uses the proxy (HTTPS_PROXY) needs no DNS; one that looks names up itself to connect directly cannot reach the network (docs/sandbox.md)\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_policy::Report;

    fn refusal(port: u16) -> LogRecord {
        LogRecord::new(
            "direct",
            Report {
                binary: "/usr/bin/python3".into(),
                host: "127.0.0.1".into(),
                port,
                ..crate::record::refusal("direct_connect", "r")
            },
        )
    }

    #[test]
    fn notices_are_told_once_each_and_at_most_a_burst_a_minute() {
        let n = Notices::new("corral policy suggest --from L".into());
        let t0 = Instant::now();
        let mut told = 0;
        let mut held = 0;
        for port in 1..=50 {
            for _ in 0..3 {
                let (text, h) = n.tell(&refusal(port), t0);
                told += text.lines().count();
                held += u32::from(h);
            }
        }
        assert_eq!(told, BURST as usize);
        assert_eq!(held, 3 * (50 - BURST));
        assert_eq!(n.tick(Some(t0 + Duration::from_secs(59))), "");
        let line = n.tick(Some(t0 + WINDOW));
        assert!(
            line.starts_with(&format!("corral: {held} more refusal(s) not shown")),
            "{line}"
        );
        assert_eq!(n.tick(None), "", "said once");
        // A new minute shows refusals not told yet, never the ones already told.
        assert_eq!(n.tell(&refusal(1), t0 + WINDOW).0, "");
        assert!(n.tell(&refusal(49), t0 + WINDOW).0.contains("127.0.0.1:49"));
    }

    #[test]
    fn a_name_lookup_by_node_says_which_node_versions_use_the_proxy() {
        let mut lookup = refusal(53);
        lookup.report.error = Some("dns_lookup".into());
        lookup.report.binary = "/usr/bin/node".into();
        let (text, _) = Notices::new(String::new()).tell(&lookup, Instant::now());
        assert!(
            text.contains("Node uses the proxy only from 22.21"),
            "{text}"
        );
        assert!(text.contains("EnvHttpProxyAgent"), "{text}");
        lookup.report.binary = "/usr/bin/python3.11".into();
        let (text, _) = Notices::new(String::new()).tell(&lookup, Instant::now());
        assert!(
            !text.contains("Node") && text.contains("needs no DNS"),
            "{text}"
        );
    }
}
