//! Arbitrary bytes → `Policy::parse` never panics; whatever loads compiles and answers
//! questions without panicking, and a refused file's diagnostics point inside the file.
#![no_main]

use corral_policy::{CompileOptions, HttpRequestInfo, Identity, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(text, "fuzz.yaml") {
        Ok(loaded) => {
            let m = loaded.policy.compile(&CompileOptions::default());
            let req = HttpRequestInfo {
                method: "GET",
                path: "/a/b?c",
            };
            for host in ["a.example", "x.y.example", "10.0.0.1", "[::1]", "*"] {
                let _ = m.decide(&Identity::new("/usr/bin/curl"), host, 443, Some(&req));
                let _ = m.needs_l7(host, 443);
            }
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
});
