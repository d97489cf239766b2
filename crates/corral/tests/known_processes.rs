//! The broker remembers the identity of a process that already connected (by pid, start
//! time and the executable it runs). A process that connects, is remembered, and then
//! executes — the same file with an injection variable, or another file — or maps code
//! the sandbox could have written must be judged anew on its next connect, never under
//! the identity remembered from before.
//!
//! Every scenario runs as the current user and — when the tests run as root — as the
//! ordinary test user, in both isolation modes.

use corral_testsupport::sandbox::{denials, policy, runners, stdout, upstreams, Sandbox, MODES};

/// Asks the proxy for a tunnel to allowed.test (stage `first`, then `second` after
/// executing `NEXT` with the environment `NEXT_ENV` adds, or after loading a copy of
/// libz when `NEXT` is `dlopen`), printing the stage and the
/// proxy's status line, or `refused:<error>` when the connect itself is refused.
const CLIENT: &str = r#"
import os, socket, sys
port = os.environ['PORT']
def ask():
    try:
        s = socket.create_connection(('127.0.0.1', 3128))
    except OSError as e:
        return 'refused:' + type(e).__name__
    s.sendall(('CONNECT allowed.test:%s HTTP/1.1\r\nHost: allowed.test:%s\r\n\r\n' % (port, port)).encode())
    line = s.recv(4096).split(b'\r\n')[0].decode()
    s.close()
    return line
stage = sys.argv[1]
print(stage, os.getpid(), ask(), flush=True)
if stage == 'first' and os.environ['NEXT'] == 'dlopen':
    # The same process maps a library the sandbox could have written.
    import ctypes, shutil
    shutil.copy('/lib/x86_64-linux-gnu/libz.so.1', 'libz-copy.so.1')
    ctypes.CDLL(os.path.abspath('libz-copy.so.1'))
    print('second', os.getpid(), ask(), flush=True)
elif stage == 'first':
    env = dict(os.environ)
    if os.environ.get('NEXT_ENV'):
        k, v = os.environ['NEXT_ENV'].split('=', 1)
        env[k] = v
    nxt = os.environ['NEXT']
    os.execve(nxt, [nxt, '-c', os.environ['CLIENT'], 'second'], env)
"#;

/// Runs [`CLIENT`] with `/usr/bin/python3` (allowed) first; returns its two lines.
fn connect_then_exec(sb: &Sandbox, port: u16, next: &str, next_env: &str) -> (String, String) {
    let mut cmd = sb.command(&["/usr/bin/python3", "-c", CLIENT, "first"]);
    cmd.env("CLIENT", CLIENT)
        .env("PORT", port.to_string())
        .env("NEXT", next)
        .env("NEXT_ENV", next_env);
    let out = cmd.output().unwrap();
    let text = stdout(&out);
    let line = |stage: &str| {
        text.lines()
            .find(|l| l.starts_with(stage))
            .unwrap_or_else(|| panic!("no {stage} line: {}", sb.context(&out)))
            .to_string()
    };
    let (first, second) = (line("first "), line("second "));
    // The same process both times: the pid survives the exec.
    assert_eq!(
        first.split(' ').nth(1),
        second.split(' ').nth(1),
        "{}",
        sb.context(&out)
    );
    assert!(
        first.ends_with("200 Connection Established"),
        "the allowed python's tunnel: {}",
        sb.context(&out)
    );
    (second, sb.context(&out))
}

#[test]
fn executing_the_same_file_with_an_injection_variable_is_refused_after_a_remembered_connect() {
    let up = upstreams();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/python3"]),
                &up.resolve(),
            );
            let (second, context) = connect_then_exec(
                &sb,
                up.https.port(),
                "/usr/bin/python3",
                "LD_PRELOAD=/tmp/not-there.so",
            );
            assert!(second.ends_with("refused:PermissionError"), "{context}");
            assert!(
                sb.log().iter().any(|r| r["error"] == "injection_vector"
                    && r["reason"]
                        .as_str()
                        .is_some_and(|s| s.contains("LD_PRELOAD=/tmp/not-there.so"))),
                "{context}"
            );
        }
    }
}

#[test]
fn executing_another_file_after_a_remembered_connect_is_judged_as_that_file() {
    let up = upstreams();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/python3"]),
                &up.resolve(),
            );
            // A copy of the allowed python, in a directory of the sandbox's user: another
            // file, not allowed.
            let dir = sb.home.join("copy");
            std::fs::create_dir_all(&dir).unwrap();
            let copy = dir.join("python3");
            std::fs::copy(std::fs::canonicalize("/usr/bin/python3").unwrap(), &copy).unwrap();
            sb.give_to_runner(&dir);
            sb.give_to_runner(&copy);
            let copy = copy.canonicalize().unwrap().display().to_string();
            let (second, context) = connect_then_exec(&sb, up.https.port(), &copy, "");
            assert!(
                !second.ends_with("200 Connection Established"),
                "the copy must not inherit the python's grant: {context}"
            );
            assert!(
                denials(&sb.log())
                    .iter()
                    .any(|r| r["binary"] == copy.as_str()),
                "{context}"
            );
        }
    }
}

#[test]
fn code_mapped_after_a_remembered_connect_is_checked_on_the_next() {
    let up = upstreams();
    for runner in runners() {
        for mode in MODES {
            let sb = Sandbox::new(
                &runner,
                mode,
                &policy(up.https.port(), &["/usr/bin/python3"]),
                &up.resolve(),
            );
            let (second, context) = connect_then_exec(&sb, up.https.port(), "dlopen", "");
            assert!(second.ends_with("refused:PermissionError"), "{context}");
            let copy = sb.work.join("libz-copy.so.1").display().to_string();
            assert!(
                denials(&sb.log())
                    .iter()
                    .any(|r| r["error"] == "foreign_code"
                        && r["reason"].as_str().is_some_and(|s| s.contains(&copy))),
                "{context}"
            );
        }
    }
}
