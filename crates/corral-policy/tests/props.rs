//! Property tests: host and path-glob matching against simple reference models, and
//! the loader on arbitrary input (it must never panic).

use corral_policy::glob::Glob;
use corral_policy::host::{normalize_host, HostPattern, NormalHost};
use corral_policy::{CompileOptions, HttpRequestInfo, Identity, Policy};
use proptest::prelude::*;

/// Reference glob matcher: plain backtracking (exponential, fine for tests).
/// `*` = any run without `/`; `**` = any run; a `**/` that starts a segment (or the
/// pattern) may also match nothing at all, as in `.gitignore`.
fn reference(p: &[u8], s: &[u8], seg_start: bool) -> bool {
    if p.is_empty() {
        return s.is_empty();
    }
    if seg_start && p.starts_with(b"**/") && !p.starts_with(b"***") && reference(&p[3..], s, true) {
        return true;
    }
    if p.starts_with(b"**") {
        let rest = p
            .iter()
            .position(|&c| c != b'*')
            .map_or(&p[p.len()..], |i| &p[i..]);
        return (0..=s.len()).any(|i| reference(rest, &s[i..], false));
    }
    if p[0] == b'*' {
        let rest = &p[1..];
        let mut i = 0;
        loop {
            if reference(rest, &s[i..], false) {
                return true;
            }
            if i == s.len() || s[i] == b'/' {
                return false;
            }
            i += 1;
        }
    }
    !s.is_empty() && s[0] == p[0] && reference(&p[1..], &s[1..], p[0] == b'/')
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}"
}

proptest! {
    #[test]
    fn glob_agrees_with_reference(p in "(/|a|b|\\*|\\*\\*){0,8}", s in "(/|a|b){0,10}") {
        prop_assert_eq!(Glob::new(&p).matches(&s), reference(p.as_bytes(), s.as_bytes(), true), "pattern {} subject {}", p, s);
    }

    #[test]
    fn single_star_never_crosses_a_slash(dir in "/[a-z]{1,5}", a in "[a-z]{1,5}", b in "[a-z]{1,5}") {
        let g = Glob::new(&format!("{dir}/*"));
        let one = format!("{dir}/{a}");
        let two = format!("{dir}/{a}/{b}");
        prop_assert!(g.matches(&one));
        prop_assert!(!g.matches(&two));
        let gg = Glob::new(&format!("{dir}/**"));
        prop_assert!(gg.matches(&two));
    }

    #[test]
    fn one_label_wildcard_matches_exactly_one_label(
        suffix in prop::collection::vec(label(), 2..4),
        prefix in prop::collection::vec(label(), 0..4),
        upper in any::<bool>(),
        dot in any::<bool>(),
    ) {
        let suffix = suffix.join(".");
        let one = HostPattern::parse(&format!("*.{suffix}")).unwrap();
        let any = HostPattern::parse(&format!("**.{suffix}")).unwrap();
        let mut host = if prefix.is_empty() { suffix.clone() } else { format!("{}.{suffix}", prefix.join(".")) };
        if upper { host = host.to_uppercase(); }
        if dot { host.push('.'); }
        let h = normalize_host(&host).unwrap();
        // All-digit labels can spell an address ("0.0.0.0"): a name pattern never matches
        // an address.
        let name = !matches!(h, NormalHost::Ip(_));
        prop_assert_eq!(one.matches(&h), name && prefix.len() == 1);
        prop_assert_eq!(any.matches(&h), name && !prefix.is_empty());
    }

    #[test]
    fn matcher_agrees_with_pattern_matching(
        suffix in prop::collection::vec(label(), 2..3),
        prefix in prop::collection::vec(label(), 0..3),
        star in 0..3usize,
        port in 1..65535u16,
    ) {
        let suffix = suffix.join(".");
        let pattern = match star { 0 => suffix.clone(), 1 => format!("*.{suffix}"), _ => format!("**.{suffix}") };
        let src = format!("version: 1\nnetwork_policies:\n  g:\n    endpoints:\n      - {{ host: \"{pattern}\", port: {port} }}\n    binaries:\n      - {{ path: /usr/bin/curl }}\n");
        let m = Policy::parse(&src, "p.yaml").unwrap().policy.compile(&CompileOptions::default());
        let host = if prefix.is_empty() { suffix.clone() } else { format!("{}.{suffix}", prefix.join(".")) };
        let expected = HostPattern::parse(&pattern).unwrap().matches(&normalize_host(&host).unwrap());
        let who = Identity::new("/usr/bin/curl");
        prop_assert_eq!(m.decide(&who, &host, port, None).is_allow(), expected);
        prop_assert!(!m.decide(&who, &host, port.wrapping_add(1).max(1), None).is_allow() || port == u16::MAX);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = Policy::parse(&s, "fuzz.yaml");
    }

    #[test]
    fn parse_never_panics_on_yamlish_text(s in "([-:{}\\[\\],'\"&*!|>#%@` \\n\\t]|version|network_policies|host|port|ports|binaries|endpoints|path|rules|allow|1|443|a){0,80}") {
        let _ = Policy::parse(&s, "fuzz.yaml");
    }

    #[test]
    fn mutated_policies_never_panic_and_valid_ones_compile(
        cut in 0usize..400, insert in "[-:{}\\[\\], a*\\n]{0,4}",
        host in "\\PC{0,12}", method in "\\PC{0,6}", path in "\\PC{0,20}",
    ) {
        let base = "version: 1\nnetwork_policies:\n  g:\n    endpoints:\n      - { host: api.example, port: 80, protocol: rest, rules: [ { allow: { method: GET, path: \"/**\" } } ] }\n      - { host: \"*.example\", ports: [443] }\n    binaries:\n      - { path: /usr/bin/curl, children: inherit }\n";
        let at = base.char_indices().map(|(i, _)| i).nth(cut % base.chars().count()).unwrap_or(0);
        let s = format!("{}{}{}", &base[..at], insert, &base[at..]);
        if let Ok(l) = Policy::parse(&s, "m.yaml") {
            let m = l.policy.compile(&CompileOptions::default());
            let req = HttpRequestInfo { method: &method, path: &path };
            let _ = m.decide(&Identity::new("/usr/bin/curl"), &host, 80, Some(&req));
            let _ = m.needs_l7(&host, 80);
        }
    }
}
