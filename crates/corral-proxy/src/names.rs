//! Where names lead before DNS: the `--resolve` and `--connect-to` flags, shared by
//! `corral proxy` and `corral run` (which embeds the proxy).

use crate::Overrides;

/// Where names lead before DNS; shared by `corral proxy` and `corral run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NameOverrides {
    /// Use these addresses for HOST:PORT instead of DNS, like curl's --resolve
    /// (`HOST:PORT:ADDR[,ADDR…]`, PORT may be `*`). Repeatable. The addresses are classified
    /// like a DNS answer: a private or loopback one needs `allowed_ips` in the policy.
    #[arg(
        long = "resolve",
        value_name = "HOST:PORT:ADDR",
        env = "CORRAL_RESOLVE",
        value_delimiter = ' '
    )]
    pub resolve: Vec<String>,
    /// Send connections for HOST:PORT to ADDR:PORT instead, like curl's --connect-to
    /// (`HOST:PORT:ADDR:PORT`, the first PORT may be `*`). Repeatable. You vouch for the
    /// target, so it is not refused by address class; the policy still decides who may
    /// reach HOST.
    #[arg(
        long = "connect-to",
        value_name = "HOST:PORT:ADDR:PORT",
        env = "CORRAL_CONNECT_TO",
        value_delimiter = ' '
    )]
    pub connect_to: Vec<String>,
}

impl NameOverrides {
    /// The override table these flags describe.
    pub fn table(&self) -> anyhow::Result<Overrides> {
        let mut table = Overrides::default();
        for entry in self.resolve.iter().filter(|e| !e.is_empty()) {
            table.parse_entry(entry).map_err(anyhow::Error::msg)?;
        }
        for entry in self.connect_to.iter().filter(|e| !e.is_empty()) {
            table.parse_route(entry).map_err(anyhow::Error::msg)?;
        }
        Ok(table)
    }
}
