//! Arbitrary bytes from a client → the proxy's request-head parser never panics, and what
//! it accepts is self-consistent: a parsed head's authority re-parses, its body framing is
//! decided without panicking, and the request it would send upstream is well formed.
#![no_main]

use corral_proxy::head::{body_framing, parse_authority, parse_request, upstream_request, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Complete(head, _)) = parse_request(data, 16 * 1024) {
        let host = head.target.host().to_string();
        let port = head.target.port();
        assert!(!host.is_empty(), "an accepted target names a host");
        let _ = body_framing(&head.headers);
        let _ = upstream_request(&head, false, 80);
        let _ = upstream_request(&head, false, 443);
        let _ = parse_authority(&format!("{host}:{port}"), None);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_authority(text, Some(443));
    }
});
