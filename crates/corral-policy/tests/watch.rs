//! PolicyWatcher notices in-place writes, editor-style rename-over, and Kubernetes
//! ConfigMap `..data` symlink swaps; invalid edits are reported and not published.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use corral_policy::{CompileOptions, Identity, PolicyError, PolicyWatcher};

fn policy(host: &str) -> String {
    format!(
        "version: 1\nnetwork_policies:\n  g:\n    endpoints:\n      - {{ host: {host}, port: 443 }}\n    binaries:\n      - {{ path: /usr/bin/curl }}\n"
    )
}

enum Ev {
    Changed(std::sync::Arc<corral_policy::Matcher>),
    Error(String),
}

fn start(path: &Path) -> (PolicyWatcher, mpsc::Receiver<Ev>) {
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let (_first, w) = PolicyWatcher::spawn(
        path.to_path_buf(),
        CompileOptions::default(),
        move |m, _warnings| {
            let _ = tx.send(Ev::Changed(m));
        },
        move |e: &PolicyError| {
            let _ = tx2.send(Ev::Error(e.to_string()));
        },
    )
    .expect("initial policy is valid");
    (w, rx)
}

fn curl() -> Identity {
    Identity::new("/usr/bin/curl")
}

/// Wait (bounded) for a published matcher that allows `host`. Errors from a
/// half-written file seen mid-write are tolerated; the final content must win.
fn expect_allows(rx: &mpsc::Receiver<Ev>, host: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ev::Changed(m)) if m.decide(&curl(), host, 443, None).is_allow() => return,
            Ok(Ev::Changed(_)) => seen.push("a matcher without the new host".to_string()),
            Ok(Ev::Error(e)) => seen.push(e),
            Err(_) => panic!("no reload allowing {host} seen; got: {seen:?}"),
        }
    }
}

#[test]
fn in_place_write_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, policy("a.example")).unwrap();
    let (_w, rx) = start(&p);
    std::fs::write(&p, policy("b.example")).unwrap();
    expect_allows(&rx, "b.example");
}

#[test]
fn editor_rename_over_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, policy("a.example")).unwrap();
    let (_w, rx) = start(&p);
    let tmp = dir.path().join(".policy.yaml.swp");
    std::fs::write(&tmp, policy("c.example")).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    expect_allows(&rx, "c.example");
}

#[test]
fn configmap_symlink_swap_is_reloaded() {
    // Layout of a mounted ConfigMap:
    //   policy.yaml -> ..data/policy.yaml ; ..data -> ..2024_01 ; ..2024_01/policy.yaml
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2024_01")).unwrap();
    std::fs::write(d.join("..2024_01/policy.yaml"), policy("a.example")).unwrap();
    std::os::unix::fs::symlink("..2024_01", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/policy.yaml", d.join("policy.yaml")).unwrap();
    let (_w, rx) = start(&d.join("policy.yaml"));

    std::fs::create_dir(d.join("..2024_02")).unwrap();
    std::fs::write(d.join("..2024_02/policy.yaml"), policy("d.example")).unwrap();
    std::os::unix::fs::symlink("..2024_02", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    expect_allows(&rx, "d.example");
}

#[test]
fn invalid_edit_is_reported_with_line_and_column_and_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, policy("a.example")).unwrap();
    let (_w, rx) = start(&p);
    std::fs::write(&p, policy("a.example").replace("port: 443", "port: 99999")).unwrap();
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ev::Error(e)) => assert!(
            e.contains("policy.yaml:5:34: error: `port` 99999 is out of range"),
            "{e}"
        ),
        Ok(Ev::Changed(_)) => panic!("an invalid policy must not be published"),
        Err(_) => panic!("no error reported"),
    }
    // A later valid edit is published again.
    std::fs::write(&p, policy("e.example")).unwrap();
    expect_allows(&rx, "e.example");
}

#[test]
fn spawn_fails_on_an_invalid_policy() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, "version: 2\n").unwrap();
    let err = PolicyWatcher::spawn(p, CompileOptions::default(), |_, _| {}, |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("unsupported policy version `2`"),
        "{err}"
    );
}

#[test]
fn a_busy_neighbour_file_does_not_hold_back_a_reload() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, policy("a.example")).unwrap();
    let (_w, rx) = start(&p);
    // A decision log in the same directory, appended to every 10 ms for up to 20 s.
    let writing = Arc::new(AtomicBool::new(true));
    let log = dir.path().join("decisions.log");
    let flag = writing.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&log).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while flag.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            writeln!(f, "{{\"decision\":\"allow\"}}").unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        flag.store(false, Ordering::Relaxed);
    });
    std::fs::write(&p, policy("d.example")).unwrap();
    expect_allows(&rx, "d.example");
    let still_writing = writing.swap(false, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        still_writing,
        "the reload waited until the neighbouring log went quiet"
    );
}

#[test]
fn an_upgrade_that_repoints_a_listed_binary_link_is_followed_without_editing_the_policy() {
    let home = tempfile::tempdir().unwrap();
    let versions = home.path().join(".local/share/claude/versions");
    let bin = home.path().join(".local/bin");
    std::fs::create_dir_all(&versions).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(versions.join("1.0.0"), "v1").unwrap();
    std::fs::write(versions.join("1.1.0"), "v2").unwrap();
    std::os::unix::fs::symlink(versions.join("1.0.0"), bin.join("claude")).unwrap();
    let policy_dir = tempfile::tempdir().unwrap();
    let p = policy_dir.path().join("policy.yaml");
    std::fs::write(
        &p,
        "version: 1\nnetwork_policies:\n  llm:\n    endpoints:\n      - { host: gw.example, port: 443 }\n    binaries:\n      - { path: ~/.local/bin/claude }\n",
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let opts = CompileOptions {
        home: Some(home.path().to_path_buf()),
    };
    let (first, _w) = PolicyWatcher::spawn(
        p.clone(),
        opts,
        move |m, _| {
            let _ = tx.send(m);
        },
        |_| {},
    )
    .unwrap();
    let v1 = Identity::new(versions.join("1.0.0"));
    let v2 = Identity::new(versions.join("1.1.0"));
    assert!(first.decide(&v1, "gw.example", 443, None).is_allow());
    assert!(!first.decide(&v2, "gw.example", 443, None).is_allow());

    // The installer's atomic switch: a new link under a temporary name, renamed over.
    let tmp = bin.join(".claude.tmp");
    std::os::unix::fs::symlink(versions.join("1.1.0"), &tmp).unwrap();
    std::fs::rename(&tmp, bin.join("claude")).unwrap();
    let m = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the matcher follows the re-pointed link");
    assert!(m.decide(&v2, "gw.example", 443, None).is_allow());
    assert!(!m.decide(&v1, "gw.example", 443, None).is_allow());
}

#[test]
fn an_edit_between_the_first_reading_and_the_watch_is_not_lost() {
    // The caller read and parsed version A; the file already says B when the watch starts.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    let read_earlier = policy("a.example");
    std::fs::write(&p, policy("b.example")).unwrap();
    let parsed = corral_policy::Policy::parse(&read_earlier, "policy.yaml").unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let (first, _w) = PolicyWatcher::spawn_loaded(
        p.clone(),
        read_earlier,
        &parsed.policy,
        CompileOptions::default(),
        move |m, _| {
            let _ = tx.send(Ev::Changed(m));
        },
        move |e: &PolicyError| {
            let _ = tx2.send(Ev::Error(e.to_string()));
        },
    )
    .unwrap();
    assert!(first.decide(&curl(), "a.example", 443, None).is_allow());
    expect_allows(&rx, "b.example");
}

/// Moving the policy's directory away and putting another policy at the old path does not
/// redirect reloads: the watcher keeps reading the directory it opened at start.
#[test]
fn a_directory_moved_away_and_replaced_does_not_redirect_reloads() {
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    let p = conf.join("policy.yaml");
    std::fs::write(&p, policy("a.example")).unwrap();
    let (_w, rx) = start(&p);
    let moved = root.path().join("conf.moved");
    std::fs::rename(&conf, &moved).unwrap();
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(&p, policy("evil.example")).unwrap();
    // An edit of the real file (now under conf.moved) is what gets published.
    std::fs::write(moved.join("policy.yaml"), policy("b.example")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ev::Changed(m)) => {
                assert!(
                    !m.decide(&curl(), "evil.example", 443, None).is_allow(),
                    "a reload read the file put at the old path"
                );
                if m.decide(&curl(), "b.example", 443, None).is_allow() {
                    return;
                }
            }
            Ok(Ev::Error(_)) => {}
            Err(_) => panic!("the edit of the real file was not reloaded"),
        }
    }
}

/// Reading the policy is not a change: an idle watcher does not re-read the file (its own
/// read used to count as an event, so it re-read the file every debounce period, forever),
/// and neither does another program reading it.
#[test]
fn an_idle_watcher_does_not_reread_the_file() {
    use notify::Watcher;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, policy("a.example")).unwrap();
    let (_w, rx) = start(&p);
    std::thread::sleep(Duration::from_millis(400));
    let opens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = opens.clone();
    let name = p.clone();
    let mut spy = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(e) = res {
            if matches!(
                e.kind,
                notify::EventKind::Access(notify::event::AccessKind::Open(_))
            ) && e.paths.contains(&name)
            {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .unwrap();
    spy.watch(dir.path(), notify::RecursiveMode::NonRecursive)
        .unwrap();
    // Someone else reads it once: the watcher must not answer with reads of its own.
    std::fs::read_to_string(&p).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        opens.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the policy was opened again without any change"
    );
    assert!(rx.try_recv().is_err(), "nothing was published");
}
