//! Address classification: the SSRF guard.
//!
//! Every address the proxy is about to dial — whether it came from DNS, from the override
//! table or from an IP-literal host — is classified here. Anything that is not a plain public
//! unicast address is refused unless the matching endpoint's `allowed_ips` covers it.
//!
//! IPv4 addresses embedded in IPv6 are handled in two ways:
//! - `::ffff:a.b.c.d` (IPv4-mapped) *is* the IPv4 address to the kernel, so it is
//!   canonicalised to `a.b.c.d` first and classified (and dialled) as IPv4.
//! - NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), 6to4 (`2002::/16`), Teredo (`2001::/32`) and the
//!   deprecated IPv4-compatible form (`::/96`) reach an IPv4 host through a translator whose
//!   behaviour we cannot see, so they are a class of their own and refused by default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// What kind of address this is, as far as egress policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrClass {
    /// Ordinary globally routed unicast: allowed whenever the endpoint is.
    Public,
    Loopback,
    Unspecified,
    /// Cloud instance-metadata services (169.254.169.254, fd00:ec2::254): the classic SSRF prize.
    Metadata,
    LinkLocal,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16).
    Private,
    /// Carrier-grade NAT, 100.64.0.0/10.
    Cgnat,
    /// IPv6 unique local addresses, fc00::/7.
    UniqueLocal,
    Multicast,
    Broadcast,
    /// Documentation and benchmarking ranges (192.0.2/24, 198.51.100/24, 203.0.113/24,
    /// 198.18/15, 2001:db8::/32).
    Documentation,
    /// IETF protocol assignments, "this network", class E and other reserved space.
    Reserved,
    /// IPv4 reached through an IPv6 translation prefix (NAT64, 6to4, Teredo, IPv4-compatible).
    Ipv4Embedded,
}

impl AddrClass {
    /// Stable lower-case name used in log lines and refusal messages.
    pub fn name(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Metadata => "metadata",
            AddrClass::LinkLocal => "link_local",
            AddrClass::Private => "private",
            AddrClass::Cgnat => "cgnat",
            AddrClass::UniqueLocal => "unique_local",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Documentation => "documentation",
            AddrClass::Reserved => "reserved",
            AddrClass::Ipv4Embedded => "ipv4_embedded",
        }
    }
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; every other address unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        IpAddr::V4(v4) => IpAddr::V4(v4),
    }
}

/// Classifies `ip` (after canonicalisation).
pub fn classify(ip: IpAddr) -> AddrClass {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(169, 254, 170, 2) {
        // AWS/GCP/Azure IMDS, and the ECS task metadata endpoint.
        return AddrClass::Metadata;
    }
    if ip.is_broadcast() {
        return AddrClass::Broadcast;
    }
    let table: &[([u8; 4], u8, AddrClass)] = &[
        ([0, 0, 0, 0], 8, AddrClass::Reserved), // "this network"
        ([127, 0, 0, 0], 8, AddrClass::Loopback),
        ([10, 0, 0, 0], 8, AddrClass::Private),
        ([172, 16, 0, 0], 12, AddrClass::Private),
        ([192, 168, 0, 0], 16, AddrClass::Private),
        ([100, 64, 0, 0], 10, AddrClass::Cgnat),
        ([169, 254, 0, 0], 16, AddrClass::LinkLocal),
        ([192, 0, 0, 0], 24, AddrClass::Reserved), // IETF protocol assignments
        ([192, 0, 2, 0], 24, AddrClass::Documentation),
        ([198, 51, 100, 0], 24, AddrClass::Documentation),
        ([203, 0, 113, 0], 24, AddrClass::Documentation),
        ([198, 18, 0, 0], 15, AddrClass::Documentation), // benchmarking
        ([192, 88, 99, 0], 24, AddrClass::Reserved),     // deprecated 6to4 relay anycast
        ([224, 0, 0, 0], 4, AddrClass::Multicast),
        ([240, 0, 0, 0], 4, AddrClass::Reserved), // class E
    ];
    for (net, prefix, class) in table {
        if in_v4(ip, *net, *prefix) {
            return *class;
        }
    }
    AddrClass::Public
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return AddrClass::Metadata;
    }
    let table: &[([u16; 8], u8, AddrClass)] = &[
        (
            [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
            96,
            AddrClass::Ipv4Embedded,
        ), // NAT64
        (
            [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
            48,
            AddrClass::Ipv4Embedded,
        ), // local-use NAT64
        ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, AddrClass::Ipv4Embedded), // 6to4
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, AddrClass::Ipv4Embedded), // Teredo
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, AddrClass::Ipv4Embedded),      // IPv4-compatible
        ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, AddrClass::Ipv4Embedded), // (mapped, not canonicalised)
        ([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, AddrClass::Ipv4Embedded), // IPv4-translated (SIIT)
        ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64, AddrClass::Reserved),     // discard-only
        (
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
            32,
            AddrClass::Documentation,
        ),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, AddrClass::Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, AddrClass::Reserved), // IETF protocol assignments
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddrClass::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddrClass::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddrClass::LinkLocal), // deprecated site-local
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddrClass::Multicast),
    ];
    for (net, prefix, class) in table {
        if in_v6(ip, *net, *prefix) {
            return *class;
        }
    }
    // Only 2000::/3 is allocated global unicast; the rest is reserved by IANA.
    if in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        AddrClass::Public
    } else {
        AddrClass::Reserved
    }
}

/// Why one resolved address may not be dialled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedAddr {
    pub addr: IpAddr,
    pub class: AddrClass,
}

/// May `ip` be dialled for an endpoint whose `allowed_ips` is `allowed`?
///
/// Public addresses always may. Any other class only when some `allowed_ips` network
/// contains the (canonical) address. Explicitly listing a public network does not restrict
/// the endpoint to it; `allowed_ips` widens, it never narrows.
pub fn permitted(ip: IpAddr, allowed: &[IpNet]) -> Result<IpAddr, RefusedAddr> {
    let ip = canonical(ip);
    let class = classify(ip);
    if class == AddrClass::Public || allowed.iter().any(|net| net.contains(&ip)) {
        Ok(ip)
    } else {
        Err(RefusedAddr { addr: ip, class })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(&str, AddrClass)] = &[
            ("8.8.8.8", AddrClass::Public),
            ("1.1.1.1", AddrClass::Public),
            ("93.184.215.14", AddrClass::Public),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.9", AddrClass::Loopback),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::Reserved),
            ("10.0.0.1", AddrClass::Private),
            ("10.255.255.255", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.1", AddrClass::Private),
            ("172.32.0.1", AddrClass::Public),
            ("192.168.1.1", AddrClass::Private),
            ("100.64.0.1", AddrClass::Cgnat),
            ("100.127.255.254", AddrClass::Cgnat),
            ("100.128.0.1", AddrClass::Public),
            ("169.254.169.254", AddrClass::Metadata),
            ("169.254.170.2", AddrClass::Metadata),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("224.0.0.1", AddrClass::Multicast),
            ("239.255.255.250", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Broadcast),
            ("240.0.0.1", AddrClass::Reserved),
            ("192.0.2.10", AddrClass::Documentation),
            ("198.51.100.1", AddrClass::Documentation),
            ("203.0.113.1", AddrClass::Documentation),
            ("198.18.0.1", AddrClass::Documentation),
            ("192.0.0.8", AddrClass::Reserved),
            ("::", AddrClass::Unspecified),
            ("::1", AddrClass::Loopback),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:10.1.2.3", AddrClass::Private),
            ("::ffff:169.254.169.254", AddrClass::Metadata),
            ("::ffff:8.8.8.8", AddrClass::Public),
            ("::127.0.0.1", AddrClass::Ipv4Embedded),
            ("64:ff9b::7f00:1", AddrClass::Ipv4Embedded),
            ("64:ff9b:1::a00:1", AddrClass::Ipv4Embedded),
            ("2002:7f00:1::1", AddrClass::Ipv4Embedded),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                AddrClass::Ipv4Embedded,
            ),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("fd12:3456::1", AddrClass::UniqueLocal),
            ("fc00::1", AddrClass::UniqueLocal),
            ("fe80::1", AddrClass::LinkLocal),
            ("ff02::1", AddrClass::Multicast),
            ("2001:db8::1", AddrClass::Documentation),
            ("2606:4700:4700::1111", AddrClass::Public),
            ("2a00:1450:4001:80b::200e", AddrClass::Public),
            ("4000::1", AddrClass::Reserved),
            ("100::1", AddrClass::Reserved),
        ];
        for (text, want) in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), *want, "{text}");
        }
    }

    #[test]
    fn allowed_ips_widen_only_the_listed_networks() {
        let loopback: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(permitted("127.0.0.5".parse().unwrap(), &loopback).is_ok());
        // The mapped form is the same address to the kernel, and is dialled as IPv4.
        assert_eq!(
            permitted("::ffff:127.0.0.1".parse().unwrap(), &loopback),
            Ok("127.0.0.1".parse().unwrap())
        );
        let refused = permitted("169.254.169.254".parse().unwrap(), &loopback).unwrap_err();
        assert_eq!(refused.class, AddrClass::Metadata);
        assert!(permitted("10.0.0.1".parse().unwrap(), &loopback).is_err());
        assert!(permitted("::1".parse().unwrap(), &loopback).is_err());
        assert!(permitted("64:ff9b::7f00:1".parse().unwrap(), &loopback).is_err());
        assert!(permitted("8.8.8.8".parse().unwrap(), &[]).is_ok());
        assert!(permitted("127.0.0.1".parse().unwrap(), &[]).is_err());
    }
}
