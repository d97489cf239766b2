//! Golden tests for error messages: each `golden/NAME.yaml` must fail to load with
//! exactly the text in `golden/NAME.expected` (all diagnostics, errors and warnings,
//! in file order). Regenerate after an intended wording change with
//! `UPDATE_GOLDEN=1 cargo test -p corral-policy --test golden`, then review the diff.

use std::path::PathBuf;

use corral_policy::{Policy, PolicyError};

fn render(name: &str, source: &str) -> String {
    match Policy::parse(source, name) {
        Ok(l) => format!("unexpectedly valid ({} warnings)\n", l.warnings.len()),
        Err(PolicyError::Invalid { errors, warnings }) => {
            let mut all: Vec<_> = errors.iter().chain(&warnings).collect();
            all.sort_by_key(|d| (d.line, d.column));
            all.iter().map(|d| format!("{d}\n")).collect()
        }
        Err(e) => format!("{e}\n"),
    }
}

#[test]
fn error_messages_match_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 6);
    let mut mismatches = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let got = render(&name, &std::fs::read_to_string(&case).unwrap());
        let expected_path = case.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            mismatches.push(format!("--- {name}: expected\n{expected}--- got\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
