//! Warnings for grants that are valid but risky.

use crate::model::NetworkPolicy;
use crate::yaml::Pos;

use super::ctx::Ctx;

/// Interpreters: a grant to one of these is a grant to any script it runs.
const INTERPRETERS: &[&str] = &[
    "python",
    "node",
    "nodejs",
    "bash",
    "sh",
    "dash",
    "zsh",
    "ksh",
    "fish",
    "perl",
    "ruby",
    "php",
    "lua",
    "deno",
    "bun",
    "pwsh",
    "tclsh",
    "busybox",
    "env",
    "osascript",
];

fn is_interpreter(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '*');
    INTERPRETERS.contains(&stem)
}

impl Ctx<'_> {
    /// Warnings for grants that are valid but risky.
    pub(super) fn lint_group(&mut self, np: &NetworkPolicy, binary_pos: &[Pos]) {
        let wild: Vec<&str> = np
            .endpoints
            .iter()
            .filter(|e| e.host.is_wildcard())
            .map(|e| e.host.written.as_str())
            .collect();
        for (b, pos) in np.binaries.iter().zip(binary_pos) {
            let any_binary = b.path == "/**" || b.path == "/*" || b.path == "/**/*";
            if any_binary {
                self.warn(
                    *pos,
                    format!(
                        "`{}` lets every program in the sandbox use the endpoints of `{}`",
                        b.path, np.key
                    ),
                    "list the programs that need these endpoints instead, e.g. `- { path: /usr/bin/redis-cli }`",
                );
            } else if is_interpreter(&b.path) && !wild.is_empty() {
                self.warn(
                    *pos,
                    format!(
                        "interpreter `{}` may reach the wildcard host `{}`: any script it runs can send data anywhere under that domain",
                        b.path, wild[0]
                    ),
                    "list the exact hosts the scripts need, or allow the specific program instead of the interpreter",
                );
            }
        }
    }

    /// Warn when `allowed_ips` opens cloud metadata or loopback addresses.
    pub(super) fn lint_allowed_ip(&mut self, net: &ipnet::IpNet, pos: Pos) {
        use std::net::IpAddr;
        let metadata: [IpAddr; 2] = [
            IpAddr::from([169, 254, 169, 254]),
            "fd00:ec2::254".parse().unwrap_or(IpAddr::from([0u8; 16])),
        ];
        if let Some(m) = metadata.iter().find(|m| net.contains(*m)) {
            self.warn(
                pos,
                format!("`allowed_ips: {net}` includes the cloud metadata address {m}"),
                "metadata services hand out cloud credentials; narrow the range so it excludes 169.254.169.254 and fd00:ec2::254",
            );
        }
        let loopback: [ipnet::IpNet; 2] = [
            ipnet::IpNet::from(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::LOCALHOST, 8)),
            ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ];
        if loopback
            .iter()
            .any(|l| l.contains(&net.network()) || net.contains(&l.network()))
        {
            self.warn(
                pos,
                format!("`allowed_ips: {net}` includes loopback addresses"),
                "loopback reaches services on the host itself (including corral's own proxy and gateway); allow only the addresses you need",
            );
        }
    }
}
