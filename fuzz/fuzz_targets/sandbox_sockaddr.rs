//! Arbitrary bytes as a sandboxed caller's `struct sockaddr` → the broker's parsers never
//! panic, and an inet address they accept has the family and length the kernel requires.
#![no_main]

use corral_sandbox::sys::net::{parse_sockaddr, parse_unix_sockaddr, RawDestination};
use libfuzzer_sys::fuzz_target;

/// `AF_INET` on Linux.
const AF_INET: u16 = 2;

fuzz_target!(|data: &[u8]| {
    if let RawDestination::Inet(addr) = parse_sockaddr(data) {
        let family = u16::from_ne_bytes([data[0], data[1]]);
        match addr {
            std::net::SocketAddr::V4(_) => {
                assert_eq!(family, AF_INET);
                assert!(data.len() >= 16);
            }
            std::net::SocketAddr::V6(_) => assert!(data.len() >= 24),
        }
    }
    let _ = parse_unix_sockaddr(data);
});
