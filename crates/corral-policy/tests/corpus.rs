//! Every OpenShell policy in tests/compat/openshell (vendored, Apache-2.0; see its
//! NOTICE.md) loads; unsupported fields warn.

use std::path::PathBuf;

use corral_policy::Policy;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat/openshell")
}

#[test]
fn every_openshell_policy_loads() {
    let mut n = 0;
    let mut rest_endpoints = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("read corpus dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    entries.sort();
    for path in entries {
        n += 1;
        match Policy::load(&path) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                // The L7 fields are enforced now: none of them may be reported as
                // unsupported, and no endpoint that uses `protocol: rest` has its TLS
                // tunnels refused as not inspectable.
                for w in &loaded.warnings {
                    let m = &w.message;
                    let unsupported = m.contains("not enforced")
                        || m.contains("not supported")
                        || m.contains("cannot be checked");
                    let l7 = m.contains("`tls")
                        || m.contains("`enforcement")
                        || m.contains("`access`")
                        || m.contains("rules");
                    if unsupported && l7 {
                        failures.push(format!("{}:{}: {m}", path.display(), w.line));
                    }
                }
                // Unsupported fields are never silently ignored: each gets a warning on
                // its own line that names the field.
                let src = std::fs::read_to_string(&path).unwrap();
                for (i, line) in src.lines().enumerate() {
                    let code = line.split(" #").next().unwrap_or("");
                    if code.trim_start().starts_with('#') {
                        continue;
                    }
                    for field in ["run_as_user", "run_as_group"] {
                        if code.contains(field) {
                            let found = loaded
                                .warnings
                                .iter()
                                .any(|w| w.line == i + 1 && w.message.contains(field));
                            if !found {
                                failures.push(format!(
                                    "{}:{}: no warning for `{field}`",
                                    path.display(),
                                    i + 1
                                ));
                            }
                        }
                    }
                }
                let matcher = loaded.policy.compile(&Default::default());
                // Every `protocol: rest` endpoint on a TLS port is terminated (or is a
                // blind tunnel with nothing to check), never refused as not inspectable.
                for np in &loaded.policy.network_policies {
                    for ep in &np.endpoints {
                        if ep.protocol.as_deref() != Some("rest") {
                            continue;
                        }
                        let Some(bin) = np.binaries.iter().find(|b| !b.path.contains('*')) else {
                            continue;
                        };
                        let host = match &ep.host.kind {
                            corral_policy::host::HostKind::Exact(h) => h.clone(),
                            _ => continue,
                        };
                        let who = corral_policy::Identity::new(&bin.path);
                        let d = matcher.decide(&who, &host, ep.ports[0], None);
                        if let corral_policy::Decision::Deny(d) = &d {
                            if d.reason.code() == "l7_not_inspectable" {
                                failures.push(format!(
                                    "{}:{}: {host}:{} refused as l7_not_inspectable",
                                    path.display(),
                                    ep.line,
                                    ep.ports[0]
                                ));
                            }
                        }
                    }
                }
                rest_endpoints += loaded
                    .policy
                    .network_policies
                    .iter()
                    .flat_map(|np| &np.endpoints)
                    .filter(|ep| ep.protocol.as_deref() == Some("rest"))
                    .count();
            }
            Err(e) => failures.push(format!("{}:\n{e}", path.display())),
        }
    }
    assert!(n >= 10, "expected the corpus, found {n} files");
    assert!(
        rest_endpoints >= 10,
        "only {rest_endpoints} `protocol: rest` endpoints"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
