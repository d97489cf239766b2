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
                // Unsupported fields are never silently ignored: each gets a warning on
                // its own line that names the field.
                let src = std::fs::read_to_string(&path).unwrap();
                for (i, line) in src.lines().enumerate() {
                    let code = line.split(" #").next().unwrap_or("");
                    if code.trim_start().starts_with('#') {
                        continue;
                    }
                    for field in [
                        "tls: terminate",
                        "run_as_user",
                        "run_as_group",
                        "enforcement: audit",
                    ] {
                        if code.contains(field) {
                            let key = field.split(':').next().unwrap();
                            let found = loaded
                                .warnings
                                .iter()
                                .any(|w| w.line == i + 1 && w.message.contains(key));
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
                // Compiles too.
                let _ = loaded.policy.compile(&Default::default());
            }
            Err(e) => failures.push(format!("{}:\n{e}", path.display())),
        }
    }
    assert!(n >= 10, "expected the corpus, found {n} files");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
