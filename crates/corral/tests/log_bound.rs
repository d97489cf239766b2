//! The decision log is bounded: a sandbox that floods refused connects cannot fill the
//! user's disk, and what the log folds or rotates away is said in the log itself. Plus
//! `corral run`'s own argument parsing (an unknown option is a usage error).

use std::path::Path;
use std::process::Command;

use corral_testsupport::process::corral_bin;
use corral_testsupport::proxy::Proxy;
use corral_testsupport::sandbox::{policy, runners, stdout, Sandbox, MODES};
use serde_json::Value;

/// The size bound the flood runs under (`--log-max-bytes`, given through its variable).
const BOUND: u64 = 16 * 1024;
/// Slack for the one record a rotation may let through past the bound.
const ONE_LINE: u64 = 4 * 1024;

const FLOOD_PY: &str = r#"
import errno, socket
def hit(port):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        return "connected"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
distinct = {hit(p) for p in range(4000, 6000)}
same = {hit(9) for _ in range(5000)}
print("distinct", sorted(distinct), "same", sorted(same))
"#;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a log line is JSON"))
        .collect()
}

#[test]
fn a_flood_of_refused_connects_stays_under_the_bound_and_says_what_it_folded() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(443, &["/usr/bin/true"]), &[]);
            let out = sb
                .command(&["/usr/bin/python3", "-c", FLOOD_PY])
                .env("CORRAL_LOG_MAX_BYTES", BOUND.to_string())
                .output()
                .expect("run corral");
            let ctx = || {
                let err = String::from_utf8_lossy(&out.stderr);
                format!("[{mode}] {:?}\n{}", out.status, &err[..err.len().min(4000)])
            };
            assert!(out.status.success(), "{}", ctx());
            assert!(
                stdout(&out).contains("distinct ['ECONNREFUSED'] same ['ECONNREFUSED']"),
                "{}\n{}",
                stdout(&out),
                ctx()
            );
            // The file and the one it rotated to, each within the bound; nothing else.
            let previous = sb.log.with_extension("jsonl.1");
            for f in [&sb.log, &previous] {
                let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                assert!(
                    size <= BOUND + ONE_LINE,
                    "{} is {size} bytes; {}",
                    f.display(),
                    ctx()
                );
            }
            let dir: Vec<_> = std::fs::read_dir(sb.log.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(dir.len(), 2, "{dir:?}");
            let records: Vec<Value> = lines(&previous).into_iter().chain(lines(&sb.log)).collect();
            // 2,000 distinct refusals (about 600 KB of lines) went through rotations, each
            // saying how many records the file it replaced held.
            let discarded: u64 = records
                .iter()
                .filter(|r| r["kind"] == "log_rotated")
                .map(|r| r["discarded_records"].as_u64().unwrap())
                .sum();
            assert!(discarded > 0, "no rotation reported: {}", ctx());
            // The newest distinct refusal is still there.
            assert!(records
                .iter()
                .any(|r| r["port"] == 5999 && r["error"] == "direct_connect"));
            // 5,000 identical refusals: a line or two, whose counts add up to every one.
            let same: Vec<&Value> = records
                .iter()
                .filter(|r| r["port"] == 9 && r["error"] == "direct_connect")
                .collect();
            let total: u64 = same
                .iter()
                .map(|r| r["repeated"]["count"].as_u64().unwrap_or(1))
                .sum();
            assert_eq!(total, 5000, "{same:#?}");
            assert!(same.len() < 100, "{} lines for one refusal", same.len());
            let folded = same.iter().find(|r| r["repeated"].is_object()).unwrap();
            assert!(
                folded["repeated"]["first"].is_string() && folded["repeated"]["last"].is_string()
            );
            // The terminal got a bounded number of notices and a line for the rest.
            let err = String::from_utf8_lossy(&out.stderr);
            let notices = err
                .lines()
                .filter(|l| l.starts_with("corral: refused"))
                .count();
            assert!((1..=20).contains(&notices), "{notices} notices; {}", ctx());
            assert!(err.contains("more refusal(s) not shown"), "{}", ctx());
        }
    }
}

#[test]
fn an_unknown_option_before_the_command_is_a_usage_error() {
    let out = Command::new(corral_bin())
        .args(["run", "--some-unknown-flag", "--", "/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--some-unknown-flag"), "{err}");
    assert!(!err.contains("command not found"), "{err}");
    // Options after the command, or after `--`, are the command's.
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(443, &["/usr/bin/true"]), &[]);
            let out = sb.run(&["/bin/sh", "-c", "echo \"$@\"", "sh", "-q", "--log", "x"]);
            assert_eq!(stdout(&out), "-q --log x\n", "{}", sb.context(&out));
            // Without `--`: the first word that is not an option starts the command.
            let out = sb
                .runner
                .command(corral_bin())
                .current_dir(sb.home.path())
                .env("HOME", sb.home.path())
                .args(["run", "--mode", mode, "--log"])
                .arg(&sb.log)
                .args(["echo", "--mode", "-q"])
                .output()
                .unwrap();
            assert_eq!(stdout(&out), "--mode -q\n", "{}", sb.context(&out));
        }
    }
}

/// Node before 22.21 (24.5 in the 24 line) ignores `NODE_USE_ENV_PROXY`, looks the name up
/// itself and fails with `EAI_AGAIN`: the notice says which versions use the proxy and what
/// to do. A Node that uses the proxy reaches it and is refused by the policy instead.
#[test]
fn a_node_that_ignores_the_proxy_is_told_which_versions_use_it() {
    const FETCH_JS: &str = "fetch('https://denied.test/').then(r => console.log('status', r.status)).catch(e => console.log('ERR', e.cause && e.cause.code))";
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, &policy(443, &["/usr/bin/true"]), &[]);
            let out = sb.run(&["/usr/bin/node", "-e", FETCH_JS]);
            let err = String::from_utf8_lossy(&out.stderr);
            let log = sb.log();
            if stdout(&out).contains("ERR EAI_AGAIN") {
                assert!(
                    log.iter().any(|r| r["error"] == "dns_lookup"),
                    "{}",
                    sb.context(&out)
                );
                assert!(err.contains("Node uses the proxy only from 22.21"), "{err}");
                assert!(err.contains("EnvHttpProxyAgent"), "{err}");
            } else {
                assert!(
                    log.iter()
                        .any(|r| r["host"] == "denied.test" && r["error"] == "no_endpoint"),
                    "{}",
                    sb.context(&out)
                );
            }
        }
    }
}

/// `corral proxy` folds identical refusals too: one line at once, the summary when it
/// stops, and `/metrics` counts what was folded.
#[test]
fn corral_proxy_folds_identical_refusals_and_counts_them_on_metrics() {
    let mut proxy = Proxy::start(&policy(443, &["/usr/bin/true"]), "/usr/bin/curl", &[], &[]);
    let url = "http://denied.test:9/x";
    for _ in 0..30 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-x"])
            .arg(format!("http://{}", proxy.listen))
            .arg(url)
            .env_remove("http_proxy")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    }
    let denied = |log: &[Value]| -> Vec<Value> {
        log.iter()
            .filter(|r| r["host"] == "denied.test")
            .cloned()
            .collect()
    };
    // Each refusal is either a line of its own or counted as folded (into a summary
    // written when its window ends).
    let folded = proxy.metric("corral_proxy_log_folded_total");
    let written = denied(&lines(&proxy.log))
        .iter()
        .filter(|r| r["repeated"].is_null())
        .count() as u64;
    assert!(folded > 0, "nothing folded");
    assert_eq!(written + folded, 30);
    // Stopping writes the summaries still pending.
    proxy.process.signal(15);
    proxy.process.wait();
    let records = denied(&lines(&proxy.log));
    let total: u64 = records
        .iter()
        .map(|r| r["repeated"]["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(total, 30, "{records:#?}");
}
