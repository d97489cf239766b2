//! What the sandbox may write, the trust anchors out of its reach, and foreign code inside
//! an allowed binary. Every attack runs as the current user and as an ordinary user, in
//! both isolation modes.

use std::path::Path;

use corral_testsupport::sandbox::{denials, policy, runners, stdout, upstreams, Sandbox, MODES};

/// Builds a shared object from C source with the system's compiler.
fn build_so(dir: &Path, name: &str, source: &str) -> String {
    let c = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    std::fs::write(&c, source).unwrap();
    let out = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .output()
        .expect("cc (scripts/install-test-deps.sh installs gcc)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    so.display().to_string()
}

/// Scrubs `LD_PRELOAD` from its own environment block before the program runs, so a check
/// of `/proc/PID/environ` at connect time finds nothing.
const SCRUBBER: &str = r#"
#include <stdlib.h>
#include <string.h>
extern char **environ;
__attribute__((constructor)) static void scrub(void) {
    for (char **e = environ; *e; e++)
        if (!strncmp(*e, "LD_PRELOAD=", 11)) memset(*e + 11, 0, strlen(*e + 11));
}
"#;

/// A do-nothing OpenSSL 3 provider: loading it is the attack.
const PROVIDER: &str = r#"
struct dispatch { int id; void (*fn)(void); };
static const struct dispatch none[] = { { 0, 0 } };
int OSSL_provider_init(const void *handle, const void *in, const void **out, void **ctx) {
    (void)handle; (void)in; *out = none; *ctx = 0; return 1;
}
"#;

fn openssl_conf(provider: &str) -> String {
    format!(
        "openssl_conf = init\nnodejs_conf = init\n[init]\nproviders = provs\n[provs]\nevil = evil_sect\ndefault = default_sect\n[evil_sect]\nmodule = {provider}\nactivate = 1\n[default_sect]\nactivate = 1\n"
    )
}

#[test]
fn the_default_view_writes_the_project_tmp_and_claudes_state_and_nothing_else() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, "version: 1\n", &[]);
            std::fs::write(sb.home.join(".bashrc"), "# rc\n").unwrap();
            sb.give_to_runner(&sb.home.join(".bashrc"));
            let policy = sb.policy.display().to_string();
            let script = format!(
                "try() {{ if sh -c \"$2\" 2>/dev/null; then echo \"$1 WRITTEN\"; else echo \"$1 refused\"; fi; }}\n\
                 try bashrc 'echo curl evil >> ~/.bashrc'\n\
                 try ssh 'mkdir -p ~/.ssh && echo key >> ~/.ssh/authorized_keys'\n\
                 try localbin 'mkdir -p ~/.local/bin && cp /bin/true ~/.local/bin/ls'\n\
                 try policy 'echo x >> {policy}'\n\
                 try rename-config 'mv ~/.config ~/.config.moved'\n\
                 try rename-local 'mv ~/.local ~/.local.moved'\n\
                 try homefile 'echo x > ~/new-file'\n\
                 try tmp 'echo x > \"$TMPDIR/corral-fs-test-$$\" && rm \"$TMPDIR/corral-fs-test-$$\"'\n\
                 try claude 'mkdir -p ~/.claude/projects && echo {{}} > ~/.claude/projects/s.json'\n\
                 echo \"config dir $CLAUDE_CONFIG_DIR\"\n\
                 printf 'int main(void){{return 42;}}\\n' > main.c && cc -o main main.c && ./main; echo \"built $?\"\n\
                 git init -q repo && cd repo && echo hi > f && git add f && \
                 git -c user.email=a@b.example -c user.name=a commit -qm first && echo committed\n"
            );
            let out = sb.sh(&script);
            let text = stdout(&out);
            let ctx = sb.context(&out);
            for refused in [
                "bashrc refused",
                "ssh refused",
                "localbin refused",
                "policy refused",
                "rename-config refused",
                "rename-local refused",
                "homefile refused",
            ] {
                assert!(text.contains(refused), "{refused}: {ctx}");
            }
            for ok in ["tmp WRITTEN", "claude WRITTEN", "built 42", "committed"] {
                assert!(text.contains(ok), "{ok}: {ctx}");
            }
            assert!(
                text.contains(&format!("config dir {}", sb.home.join(".claude").display())),
                "{ctx}"
            );
            assert_eq!(
                std::fs::read_to_string(sb.home.join(".bashrc")).unwrap(),
                "# rc\n"
            );
            assert!(
                sb.home.join(".config/corral/policy.yaml").is_file(),
                "{ctx}"
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("files: default view"), "{ctx}");
        }
    }
}

#[test]
fn a_policy_widens_and_narrows_the_view_and_never_reaches_the_anchors() {
    for runner in runners() {
        for mode in MODES {
            // Widened to all of HOME: its entries are writable, the protected ones and the
            // directories above the policy and the log are not.
            let wide = Sandbox::new(
                &runner,
                mode,
                "version: 1\nfilesystem_policy:\n  read_write: [\"~\", \"~/.local/bin\"]\n",
                &[],
            );
            std::fs::create_dir_all(wide.home.join(".local/bin")).unwrap();
            wide.give_to_runner(&wide.home.join(".local"));
            for (f, text) in [("notes", "n\n"), (".bashrc", "# rc\n")] {
                std::fs::write(wide.home.join(f), text).unwrap();
                wide.give_to_runner(&wide.home.join(f));
            }
            let out = wide.sh(
                "try() { if sh -c \"$2\" 2>/dev/null; then echo \"$1 WRITTEN\"; else echo \"$1 refused\"; fi; }\n\
                 try notes 'echo more >> ~/notes'\n\
                 try localbin 'mkdir -p ~/.local/bin && cp /bin/true ~/.local/bin/tool'\n\
                 try bashrc 'echo evil >> ~/.bashrc'\n\
                 try rename-config 'mv ~/.config ~/.config.moved'\n\
                 try policy-dir 'echo x > ~/.config/corral/other.yaml'\n\
                 try log 'echo forged >> ~/.local/state/corral/decisions.jsonl'\n\
                 try rename-state 'mv ~/.local/state ~/.local/state.moved'\n",
            );
            let text = stdout(&out);
            let ctx = wide.context(&out);
            for want in [
                "notes WRITTEN",
                "localbin WRITTEN",
                "bashrc refused",
                "rename-config refused",
                "policy-dir refused",
                "log refused",
                "rename-state refused",
            ] {
                assert!(text.contains(want), "{want}: {ctx}");
            }
            // Narrowed: the working directory is not writable, and reads are limited to the
            // listed paths.
            let narrow = Sandbox::new(
                &runner,
                mode,
                "version: 1\nfilesystem_policy:\n  include_workdir: false\n  read_only: [/usr, /lib, /lib64, /bin, /etc]\n",
                &[],
            );
            let out = narrow.sh(
                "echo x > here 2>/dev/null && echo WORKDIR-WRITTEN || echo workdir-refused; \
                 cat ~/.config/corral/policy.yaml >/dev/null 2>&1 && echo POLICY-READ || echo policy-hidden",
            );
            let text = stdout(&out);
            let ctx = narrow.context(&out);
            assert!(text.contains("workdir-refused"), "{ctx}");
            assert!(text.contains("policy-hidden"), "{ctx}");
        }
    }
}

#[test]
fn explain_fs_prints_the_effective_rules() {
    let runner = &runners()[0];
    let sb = Sandbox::new(
        runner,
        "namespaces",
        "version: 1\nfilesystem_policy:\n  read_write: [\"~\"]\n",
        &[],
    );
    let mut c = sb.runner.command(corral_testsupport::process::corral_bin());
    c.current_dir(&sb.work)
        .env("HOME", sb.home.path())
        .args(["run", "--explain-fs", "--policy"])
        .arg(&sb.policy);
    let out = c.output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("filesystem view: policy"), "{text}");
    assert!(text.contains("(working directory)"), "{text}");
    assert!(
        text.contains(&format!("split: {}", sb.home.path().display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "kept read-only: {}",
            sb.home.join(".config").display()
        )) || text.contains(&format!(
            "kept read-only: {}",
            sb.home.join(".config/corral").display()
        )),
        "{text}"
    );
}

#[test]
fn a_binary_planted_where_the_sandbox_writes_is_refused_at_connect() {
    let up = upstreams();
    for runner in runners() {
        for mode in MODES {
            let fake = "~/bin/curl";
            let yaml = format!(
                "{}filesystem_policy:\n  read_write: [\"~/bin\"]\n",
                policy(up.https.port(), &["/usr/bin/curl", fake])
            );
            let sb = Sandbox::new(&runner, mode, &yaml, &up.resolve());
            std::fs::create_dir_all(sb.home.join("bin")).unwrap();
            sb.give_to_runner(&sb.home.join("bin"));
            let script = format!(
                "cp {py} ~/bin/curl && ~/bin/curl -c \"import urllib.request as u; print(u.urlopen('{url}').read())\" \
                 && echo PLANTED-CONNECTED || echo planted-refused",
                py = std::fs::canonicalize("/usr/bin/python3").unwrap().display(),
                url = up.url("allowed.test").replace("https", "http"),
            );
            let out = sb.sh(&script);
            let text = stdout(&out);
            let ctx = sb.context(&out);
            assert!(text.contains("planted-refused"), "{ctx}");
            let planted = sb.home.join("bin/curl").display().to_string();
            assert!(
                denials(&sb.log())
                    .iter()
                    .any(|r| r["error"] == "untrusted_binary" && r["binary"] == planted.as_str()),
                "{ctx}"
            );
            assert!(up.https.requests().is_empty(), "{ctx}");
        }
    }
}

#[test]
fn foreign_code_in_an_allowed_binary_is_refused_naming_the_library() {
    let up = upstreams();
    let src = corral_testsupport::fs::world_readable_tempdir();
    let scrubber = build_so(src.path(), "scrub", SCRUBBER);
    let provider = build_so(src.path(), "provider", PROVIDER);
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/curl", "/usr/bin/node"]),
                &up.resolve(),
            );
            let ca = up.ca.ca_path().display().to_string();
            let url = up.url("allowed.test");
            let conf = openssl_conf("$PWD/lib/provider.so");
            // Node (20) does not use the proxy variables by itself: connecting to the proxy
            // is what the broker checks.
            let node_connect = "require('net').connect(3128, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))";
            // Each attack copies its library into the working directory first: the files
            // the sandbox writes are the ones it could have made.
            let script = format!(
                "mkdir -p lib && cp {scrubber} lib/scrub.so && cp {provider} lib/provider.so \
                 && cp /lib/x86_64-linux-gnu/libz.so.1 lib/ && printf \"{conf}\" > evil.cnf\n\
                 attempt() {{ name=$1; shift; if \"$@\" >/dev/null 2>&1; then echo \"$name CONNECTED\"; else echo \"$name refused\"; fi; }}\n\
                 attempt plain /usr/bin/curl -sS --cacert {ca} {url}\n\
                 attempt libpath env LD_LIBRARY_PATH=$PWD/lib /usr/bin/curl -sS --cacert {ca} {url}\n\
                 attempt openssl env OPENSSL_CONF=$PWD/evil.cnf /usr/bin/curl -sS --cacert {ca} {url}\n\
                 attempt scrubbed env LD_PRELOAD=$PWD/lib/scrub.so /usr/bin/curl -sS --cacert {ca} {url}\n\
                 attempt node-plain /usr/bin/node -e \"{node_connect}\"\n\
                 attempt node env NODE_OPTIONS=--openssl-config=$PWD/evil.cnf /usr/bin/node -e \"{node_connect}\"\n"
            );
            let out = sb.sh(&script);
            let text = stdout(&out);
            let ctx = sb.context(&out);
            assert!(text.contains("plain CONNECTED"), "{ctx}");
            assert!(text.contains("node-plain CONNECTED"), "{ctx}");
            for attack in ["libpath", "openssl", "scrubbed", "node"] {
                assert!(
                    text.contains(&format!("{attack} refused")),
                    "{attack}: {ctx}"
                );
            }
            let log = sb.log();
            let refused = denials(&log);
            for lib in ["libz.so.1", "provider.so", "scrub.so"] {
                let path = sb.work.join("lib").join(lib).display().to_string();
                assert!(
                    refused.iter().any(|r| r["error"] == "foreign_code"
                        && r["reason"].as_str().is_some_and(|s| s.contains(&path))),
                    "{lib}: {ctx}"
                );
            }
            assert!(
                refused
                    .iter()
                    .any(|r| r["error"] == "foreign_code" && r["binary"] == "/usr/bin/node"),
                "node: {ctx}"
            );
        }
    }
}

#[test]
fn suggest_apply_lets_through_only_the_refused_binary() {
    let up = upstreams();
    for runner in runners() {
        for mode in MODES {
            // curl and wget share a group; curl is refused denied.test.
            let yaml = policy(up.https.port(), &["/usr/bin/curl", "/usr/bin/wget"]);
            let sb = Sandbox::new(&runner, mode, &yaml, &up.resolve());
            let ca = up.ca.ca_path().display().to_string();
            let out = sb.sh(&format!(
                "/usr/bin/curl -sS --cacert {ca} {}",
                up.url("denied.test")
            ));
            let ctx = sb.context(&out);
            assert!(
                denials(&sb.log())
                    .iter()
                    .any(|r| r["host"] == "denied.test" && r["error"] == "no_endpoint"),
                "{ctx}"
            );
            let corral = corral_testsupport::process::corral_bin();
            let suggest = std::process::Command::new(&corral)
                .args(["policy", "suggest", "--apply", "--from"])
                .arg(&sb.log)
                .arg("--policy")
                .arg(&sb.policy)
                .output()
                .unwrap();
            let shown = stdout(&suggest);
            assert!(suggest.status.success(), "{shown}{ctx}");
            assert!(
                shown.contains("lets through: /usr/bin/curl only"),
                "{shown}"
            );
            let explain = |binary: &str| {
                let o = std::process::Command::new(&corral)
                    .args(["policy", "explain"])
                    .arg(&sb.policy)
                    .args(["--binary", binary, "--dest"])
                    .arg(format!("denied.test:{}", up.https.port()))
                    .output()
                    .unwrap();
                (o.status.success(), stdout(&o))
            };
            let (curl_ok, curl_says) = explain("/usr/bin/curl");
            assert!(curl_ok, "{curl_says}");
            assert!(
                curl_says.contains("lets these binaries through") && !curl_says.contains("wget"),
                "{curl_says}"
            );
            let (wget_ok, wget_says) = explain("/usr/bin/wget");
            assert!(!wget_ok, "the shared group was widened: {wget_says}");
        }
    }
}

/// A program put in `~/bin` earlier (by you, or by a sandbox that was allowed to write
/// there) is not trusted by its path in a later session, even one that cannot write
/// `~/bin`: only a `sha256` pin lets it through. `corral policy check` says so.
#[test]
fn a_binary_in_a_directory_the_user_can_write_needs_a_pin() {
    let up = upstreams();
    let sha = {
        let out = std::process::Command::new("sha256sum")
            .arg("/usr/bin/curl")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    for runner in runners() {
        for mode in MODES {
            let yaml = policy(up.https.port(), &["~/bin/curl"]);
            let sb = Sandbox::new(&runner, mode, &yaml, &up.resolve());
            std::fs::create_dir_all(sb.home.join("bin")).unwrap();
            std::fs::copy("/usr/bin/curl", sb.home.join("bin/curl")).unwrap();
            sb.give_to_runner(&sb.home.join("bin"));
            let ca = up.ca.ca_path().display().to_string();
            let fetch = format!(
                "~/bin/curl -sS --cacert {ca} {} && echo CONNECTED || echo refused",
                up.url("allowed.test")
            );
            let out = sb.sh(&fetch);
            let ctx = sb.context(&out);
            assert!(stdout(&out).contains("refused"), "{ctx}");
            assert!(
                denials(&sb.log())
                    .iter()
                    .any(|r| r["error"] == "untrusted_binary"),
                "{ctx}"
            );
            let mut check = runner.command(corral_testsupport::process::corral_bin());
            check
                .env("HOME", sb.home.path())
                .args(["policy", "check"])
                .arg(&sb.policy);
            let said = check.output().unwrap();
            assert!(
                String::from_utf8_lossy(&said.stderr).contains("`~/bin/curl`"),
                "{}",
                String::from_utf8_lossy(&said.stderr)
            );

            // Pinned, the same file is trusted.
            let pinned = yaml.replace(
                "path: ~/bin/curl\n",
                &format!("path: ~/bin/curl\n        sha256: {sha}\n"),
            );
            std::fs::write(&sb.policy, pinned).unwrap();
            let out = sb.sh(&fetch);
            assert!(stdout(&out).contains("CONNECTED"), "{}", sb.context(&out));
        }
    }
}

/// `try NAME 'COMMAND'`: prints `NAME WRITTEN` or `NAME refused`.
const TRY: &str =
    "try() { if sh -c \"$2\" 2>/dev/null; then echo \"$1 WRITTEN\"; else echo \"$1 refused\"; fi; }\n";

#[test]
fn temporary_files_are_private_to_the_session() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, "version: 1\n", &[]);
            // A file of the host's under /tmp that the sandbox's user owns.
            let shared = corral_testsupport::fs::world_readable_tempdir();
            let host_file = shared.path().join("host-file");
            corral_testsupport::fs::write_readable(&host_file, b"host\n");
            sb.give_to_runner(shared.path());
            let marker = format!("/tmp/corral-private-{}-{mode}", std::process::id());
            let shm = format!("/dev/shm/corral-private-{}-{mode}", std::process::id());
            // A System V shared memory segment of the host's.
            let ipcmk = std::process::Command::new("ipcmk")
                .args(["-M", "64", "-p", "0644"])
                .output()
                .expect("ipcmk (util-linux)");
            let segment = String::from_utf8_lossy(&ipcmk.stdout)
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            assert!(!segment.is_empty(), "{ipcmk:?}");
            let host = host_file.display();
            let out = sb.sh(&format!(
                "{TRY}\
                 try tmpdir 'echo mine > \"$TMPDIR/mine\" && test \"$(cat \"$TMPDIR/mine\")\" = mine'\n\
                 echo \"tmpdir=$TMPDIR\"\n\
                 try slash-tmp 'echo x > {marker}'\n\
                 try host-file 'echo evil >> {host}'\n\
                 echo \"read $(cat {host})\"\n\
                 d=$(mktemp -d) && echo made > \"$d/f\" && echo \"mktemp ok\"\n\
                 try shm 'echo x > {shm}'\n\
                 if ipcs -m | awk '{{print $2}}' | grep -qx {segment}; then echo 'ipc SHARED'; else echo 'ipc own'; fi\n\
                 python3 -c 'import multiprocessing as m; m.Lock(); print(\"semaphore ok\")'\n"
            ));
            let text = stdout(&out);
            let ctx = sb.context(&out);
            for want in [
                "tmpdir WRITTEN",
                "read host",
                "mktemp ok",
                "shm WRITTEN",
                "semaphore ok",
            ] {
                assert!(text.contains(want), "{want}: {ctx}");
            }
            // Namespace mode: /tmp is an overlay, written privately. Without a mount
            // namespace: read-only, TMPDIR is the private place.
            let slash_tmp = if mode == "namespaces" {
                "slash-tmp WRITTEN"
            } else {
                "slash-tmp refused"
            };
            assert!(text.contains(slash_tmp), "{ctx}");
            assert!(
                !Path::new(&marker).exists(),
                "{marker} reached the host: {ctx}"
            );
            // POSIX shared memory: the session's own in namespace mode; the host's without
            // a mount namespace (docs/sandbox.md lists it among the shared channels).
            assert_eq!(
                Path::new(&shm).exists(),
                mode != "namespaces",
                "{shm}: {ctx}"
            );
            let _ = std::fs::remove_file(&shm);
            // System V IPC: the sandbox's own in namespace mode (an IPC namespace).
            let _ = std::process::Command::new("ipcrm")
                .args(["-m", &segment])
                .status();
            let ipc = if mode == "namespaces" {
                "ipc own"
            } else {
                "ipc SHARED"
            };
            assert!(text.contains(ipc), "{ctx}");
            assert_eq!(
                std::fs::read_to_string(&host_file).unwrap(),
                "host\n",
                "{ctx}"
            );
            let tmpdir = text
                .lines()
                .find_map(|l| l.strip_prefix("tmpdir="))
                .unwrap_or_default();
            assert!(!tmpdir.is_empty(), "{ctx}");
            if mode != "namespaces" {
                assert!(
                    !Path::new(tmpdir).exists(),
                    "the private TMPDIR outlived the session: {ctx}"
                );
            }
        }
    }
}

#[test]
fn code_written_inside_for_git_or_claude_never_runs_outside() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, "version: 1\n", &[]);
            let git = |args: &[&str]| {
                let out = sb
                    .runner
                    .command("git")
                    .current_dir(&sb.work)
                    .env("HOME", sb.home.path())
                    .args(["-c", "user.email=a@b.example", "-c", "user.name=a"])
                    .args(args)
                    .output()
                    .expect("git");
                assert!(
                    out.status.success(),
                    "git {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            git(&["init", "-q"]);
            git(&["commit", "-q", "--allow-empty", "-m", "first"]);
            let config = std::fs::read(sb.work.join(".git/config")).unwrap();
            // An installed Claude Code plugin with a hook script.
            let plugin = sb.home.join(".claude/plugins/cache/tools/hooks");
            std::fs::create_dir_all(&plugin).unwrap();
            std::fs::write(plugin.join("start.sh"), "#!/bin/sh\necho hello\n").unwrap();
            sb.give_to_runner(&sb.home.join(".claude"));
            // Only a hook or a config run on the host could make it: HOME is read-only inside.
            let flag = sb.home.join("ran-outside");
            let flag_s = flag.display();
            let out = sb.sh(&format!(
                "{TRY}\
                 try config 'git config core.fsmonitor \"touch {flag_s}\"'\n\
                 try append 'echo \"[core] fsmonitor = touch {flag_s}\" >> .git/config'\n\
                 try hook 'printf \"#!/bin/sh\\ntouch {flag_s}\\n\" > .git/hooks/post-commit && chmod +x .git/hooks/post-commit'\n\
                 try forged 'mv .git .git.moved && cp -r .git.moved .git && printf \"[core]\\n\\tfsmonitor = touch {flag_s}\\n\" >> .git/config'\n\
                 try plugin 'echo \"touch {flag_s}\" >> ~/.claude/plugins/cache/tools/hooks/start.sh'\n\
                 try plugin-new 'echo \"touch {flag_s}\" > ~/.claude/plugins/cache/tools/hooks/more.sh'\n\
                 try unmount 'umount .git/config || umount -l .git/config || umount -l /tmp'\n\
                 try settings 'echo {{\\\"apiKeyHelper\\\": \\\"touch {flag_s}\\\"}} > ~/.claude/settings.json'\n\
                 git -c user.email=a@b.example -c user.name=a commit -q --allow-empty -m inside && echo committed\n"
            ));
            let text = stdout(&out);
            let ctx = sb.context(&out);
            assert!(text.contains("committed"), "{ctx}");
            if mode == "namespaces" {
                for refused in [
                    "config refused",
                    "append refused",
                    "hook refused",
                    "forged refused",
                    "settings refused",
                    "unmount refused",
                    "plugin refused",
                    "plugin-new refused",
                ] {
                    assert!(text.contains(refused), "{refused}: {ctx}");
                }
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("undone"), "{ctx}");
            }
            // Claude Code's settings (corral made an empty one) are as they were.
            assert_eq!(
                std::fs::read_to_string(sb.home.join(".claude/settings.json")).unwrap(),
                "{}\n",
                "{ctx}"
            );
            assert_eq!(
                std::fs::read_to_string(plugin.join("start.sh")).unwrap(),
                "#!/bin/sh\necho hello\n",
                "{ctx}"
            );
            assert!(!plugin.join("more.sh").exists(), "{ctx}");
            // What the user does next, outside: git in that repository.
            git(&["status", "--short"]);
            git(&["commit", "-q", "--allow-empty", "-m", "outside"]);
            assert!(
                !flag.exists(),
                "code from the sandbox ran outside it: {ctx}"
            );
            assert_eq!(
                std::fs::read(sb.work.join(".git/config")).unwrap(),
                config,
                "{ctx}"
            );
            assert!(!sb.work.join(".git/hooks/post-commit").exists(), "{ctx}");
        }
    }
}

#[test]
fn a_credentials_secret_file_is_never_readable_inside() {
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(&runner, mode, "version: 1\n", &[]);
            let dir = sb.home.join("secrets");
            std::fs::create_dir(&dir).unwrap();
            let secret = dir.join("gateway.key");
            std::fs::write(&secret, "sk-corral-test-secret\n").unwrap();
            std::fs::write(dir.join("notes"), "readable\n").unwrap();
            sb.give_to_runner(&dir);
            // A link to it in HOME, beside the directories the view splits.
            std::os::unix::fs::symlink(&secret, sb.home.join("key-link")).unwrap();
            std::fs::write(
                &sb.policy,
                format!(
                    "version: 1\nnetwork_policies:\n  gateway:\n    endpoints:\n      - {{ host: gw.test, port: 443, tls: terminate }}\n    binaries:\n      - {{ path: /usr/bin/curl }}\n    credentials:\n      - placeholder: corral-placeholder-key\n        secret_file: {}\n",
                    secret.display()
                ),
            )
            .unwrap();
            let out = sb.sh(&format!(
                "cat {s}; echo \"cat $?\"\n\
                 cp {s} copy 2>/dev/null; cat copy 2>/dev/null\n\
                 cat ~/key-link 2>/dev/null\n\
                 grep -rs sk-corral ~ 2>/dev/null\n\
                 echo \"notes $(cat {d}/notes)\"\n",
                s = secret.display(),
                d = dir.display()
            ));
            let text = stdout(&out);
            let ctx = sb.context(&out);
            assert!(!text.contains("sk-corral-test-secret"), "{ctx}");
            assert!(text.contains("notes readable"), "{ctx}");
            assert!(text.contains("cat ") && !text.contains("cat 0"), "{ctx}");
        }
    }
}

/// In namespace mode the sandbox mounts a /proc of its own, which Landlock rules made on
/// the host's /proc do not reach: it stays readable in every view — the default one, one
/// split around a hidden secret, and a `read_only` list (where /proc is implicit).
/// (Claude Code's runtime aborts without it.)
#[test]
fn the_sandbox_reads_its_own_proc_in_every_view_and_sys_where_it_reads_everything() {
    for runner in runners() {
        for mode in MODES {
            let probe = Sandbox::new(&runner, mode, "version: 1\n", &[]);
            let secret = probe.write_home_file("gateway-key", b"sk-corral-test-secret\n", 0o600);
            let views = [
                ("default", "version: 1\n".to_string()),
                (
                    "hidden secret",
                    format!(
                        "version: 1\nnetwork_policies:\n  gateway:\n    endpoints:\n      - {{ host: gw.test, port: 443, tls: terminate }}\n    binaries:\n      - {{ path: /usr/bin/curl }}\n    credentials:\n      - placeholder: corral-placeholder-key\n        secret_file: {}\n",
                        secret.display()
                    ),
                ),
                (
                    "read_only list",
                    "version: 1\nfilesystem_policy:\n  read_only: [/usr, /etc, /lib, /bin]\n".to_string(),
                ),
            ];
            for (view, yaml) in views {
                probe.write_policy(&yaml);
                let out = probe.sh(
                    "head -n 1 /proc/self/status; head -c 6 /proc/version; echo; \
                     cat /sys/class/net/lo/mtu 2>/dev/null || echo no-sys",
                );
                // /sys is readable where the view reads everything.
                let sys = if view == "read_only list" {
                    "no-sys"
                } else {
                    "65536"
                };
                assert_eq!(
                    stdout(&out),
                    format!("Name:\thead\nLinux \n{sys}\n"),
                    "{view}: {}",
                    probe.context(&out)
                );
            }
        }
    }
}
