//! Loader edge cases: hostile YAML, multi-line flow mappings, duplicates, empty files.

use corral_policy::{Policy, PolicyError};

fn errors(src: &str) -> String {
    match Policy::parse(src, "p.yaml") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn alias_expansion_bomb_is_refused_not_expanded() {
    let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = i - 1;
        src.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    let e = errors(&src);
    assert!(e.contains("more than 200000 values"), "{e}");
}

#[test]
fn deep_nesting_is_refused() {
    let src = format!("version: 1\nx: {}{}\n", "[".repeat(100), "]".repeat(100));
    let e = errors(&src);
    assert!(e.contains("nested more than 64 levels"), "{e}");
}

#[test]
fn flow_mapping_over_several_lines_with_trailing_comma_loads() {
    let src = "version: 1\nnetwork_policies:\n  g:\n    endpoints:\n      - {\n          host: a.example,\n          port: 443,\n        }\n    binaries:\n      - {\n          path: /usr/bin/x,\n        }\n";
    let l = Policy::parse(src, "p.yaml").unwrap();
    assert_eq!(l.policy.network_policies[0].endpoints[0].ports, vec![443]);
    assert_eq!(l.policy.network_policies[0].endpoints[0].line, 5);
}

#[test]
fn duplicate_keys_and_second_documents_are_errors() {
    let e = errors("version: 1\nversion: 1\n");
    assert!(e.contains("p.yaml:2:1: error: duplicate key `version` in the policy file (first at line 1, column 1)"), "{e}");
    let e = errors("version: 1\n---\nversion: 1\n");
    assert!(e.contains("found a second one"), "{e}");
}

#[test]
fn empty_and_non_mapping_files_are_errors() {
    assert!(errors("").contains("p.yaml:1:1: error: the policy file is empty"));
    assert!(errors("# only a comment\n").contains("the policy file is empty"));
    assert!(errors("- a\n- b\n").contains("the policy file must be a mapping, found a list"));
}

#[test]
fn unreadable_file_is_an_io_error() {
    let e = Policy::load(std::path::Path::new("/nonexistent/p.yaml")).unwrap_err();
    assert!(matches!(e, PolicyError::Io { .. }));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/p.yaml: cannot read policy:"));
}

#[test]
fn filesystem_landlock_and_process_reach_the_model() {
    let src = "version: 1\nfilesystem_policy:\n  include_workdir: false\n  read_only: [/usr]\n  read_write: [/tmp]\nlandlock:\n  compatibility: hard_requirement\nprocess:\n  run_as_user: sandbox\n";
    let l = Policy::parse(src, "p.yaml").unwrap();
    assert!(!l.policy.filesystem.include_workdir);
    assert_eq!(
        l.policy.filesystem.read_only,
        vec![std::path::PathBuf::from("/usr")]
    );
    assert_eq!(
        l.policy.landlock_compatibility,
        corral_policy::model::LandlockCompatibility::HardRequirement
    );
    assert_eq!(l.policy.process.run_as_user.as_deref(), Some("sandbox"));
    assert!(l
        .warnings
        .iter()
        .any(|w| w.line == 9 && w.message.contains("run_as_user")));
}

#[test]
fn metadata_and_loopback_in_allowed_ips_warn() {
    let src = "version: 1\nnetwork_policies:\n  g:\n    endpoints:\n      - host: a.example\n        port: 80\n        allowed_ips: [169.254.0.0/16, 127.0.0.1, 10.0.0.0/8]\n    binaries:\n      - { path: /usr/bin/x }\n";
    let l = Policy::parse(src, "p.yaml").unwrap();
    let w: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
    assert!(w.iter().any(|w| w.contains("p.yaml:7:23: warning: `allowed_ips: 169.254.0.0/16` includes the cloud metadata address 169.254.169.254")), "{w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("`allowed_ips: 127.0.0.1/32` includes loopback addresses")),
        "{w:?}"
    );
    assert_eq!(w.len(), 2, "{w:?}");
}
