//! `server.trusted_proxies`: the peers whose `X-Forwarded-*` headers are believed. Config
//! loading parses the list; the request path asks it who the client is.

use std::net::IpAddr;

use ipnet::IpNet;

/// Peers whose `X-Forwarded-*` headers are believed (`server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8` or a bare address.
    pub fn parse_entry(entry: &str) -> Result<IpNet, String> {
        let entry = entry.trim();
        entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                format!("invalid trusted proxy `{entry}`: expected an address or CIDR such as 10.0.0.0/8")
            })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}
