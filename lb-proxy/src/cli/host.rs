//! `lb-proxy check`'s look at this host: a config can be valid and still
//! fail to start here, because a listener needs a privilege the process
//! lacks or an address the host does not have. `check` says so beforehand
//! (warnings, not errors: `run` may run as another user, and an address may
//! be added to an interface before it starts).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use lb_config::{Config, VipMode};

/// `CAP_NET_BIND_SERVICE`'s bit in the capability sets (linux/capability.h).
const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_NET_ADMIN`'s bit: `IP_TRANSPARENT` needs it.
const CAP_NET_ADMIN: u32 = 12;

/// Most addresses or ports one warning lists before "and N more".
const LISTED: usize = 8;

/// What this host would make of `config`'s listeners, one line per problem.
pub fn host_warnings(config: &Config) -> Vec<String> {
    let listeners = listeners(config);
    let mut out = Vec::new();
    let floor = unprivileged_port_start();
    let transparent: Vec<String> = config
        .services
        .iter()
        .filter(|s| {
            s.source_address.unwrap_or(config.proxy.source_address)
                == lb_core::SourceAddress::Client
        })
        .map(|s| format!("services[{}]", s.key))
        .collect();
    if !transparent.is_empty() && !has_capability(CAP_NET_ADMIN) {
        out.push(format!(
            "{} dial{} endpoints from the client's address (source_address = \"client\") and this process lacks CAP_NET_ADMIN: `lb-proxy run` as this user would reset every client of {} (run it as root or grant CAP_NET_ADMIN, as AmbientCapabilities= does in a systemd unit)",
            listed(transparent.iter()),
            if transparent.len() == 1 { "s" } else { "" },
            if transparent.len() == 1 { "it" } else { "them" },
        ));
    }
    if !has_capability(CAP_NET_BIND_SERVICE) {
        let low: BTreeSet<u16> = listeners
            .iter()
            .map(|(addr, _)| addr.port())
            .filter(|p| *p != 0 && *p < floor)
            .collect();
        if !low.is_empty() {
            out.push(format!(
                "port{} {} below {floor} (net.ipv4.ip_unprivileged_port_start) and this process lacks CAP_NET_BIND_SERVICE: `lb-proxy run` as this user cannot listen there (run it as root, grant the capability, as the systemd unit's AmbientCapabilities=CAP_NET_BIND_SERVICE does, or use ports from {floor} up)",
                if low.len() == 1 { "" } else { "s" },
                listed(low.iter()),
            ));
        }
    }
    if config.vip_mode == VipMode::Bind {
        if let Ok(local) = crate::sys::local_addresses() {
            let foreign: BTreeSet<IpAddr> = listeners
                .iter()
                .map(|(addr, _)| addr.ip())
                .filter(|ip| !ip.is_unspecified() && !ip.is_loopback() && !local.contains(ip))
                .collect();
            for ip in foreign.iter().take(LISTED) {
                let owners: Vec<&str> = listeners
                    .iter()
                    .filter(|(addr, _)| addr.ip() == *ip)
                    .map(|(_, owner)| owner.as_str())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                out.push(format!(
                    "{}: {ip} is not an address of this host; with node.vip_mode \"bind\" its listener cannot bind it (add it to an interface, or use vip_mode = \"freebind\" or \"interface\")",
                    owners.join(", ")
                ));
            }
            if foreign.len() > LISTED {
                out.push(format!(
                    "and {} more addresses that are not this host's",
                    foreign.len() - LISTED
                ));
            }
        }
    }
    out
}

/// Every address lb would listen on, with who asks for it (`services[web]`,
/// `admin.listen`, `dns.listen`).
fn listeners(config: &Config) -> Vec<(SocketAddr, String)> {
    let mut out = Vec::new();
    for s in &config.services {
        let owner = if s.key.namespace == "default" {
            format!("services[{}]", s.key.name)
        } else {
            format!("services[{}/{}]", s.key.namespace, s.key.name)
        };
        s.for_each_frontend(&config.node.addresses, |_, key, _| {
            out.push((key.addr, owner.clone()));
        });
        if s.health_check_node_port != 0 {
            let port = s.health_check_node_port;
            for ip in &config.node.addresses {
                out.push((SocketAddr::new(*ip, port), owner.clone()));
            }
        }
    }
    if let Some(addr) = config.admin_listen {
        out.push((addr, "admin.listen".into()));
    }
    if let Some(dns) = &config.dns {
        out.push((dns.listen, "dns.listen".into()));
    }
    out
}

fn listed<T: std::fmt::Display>(items: impl ExactSizeIterator<Item = T>) -> String {
    let n = items.len();
    let mut text = items
        .take(LISTED)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if n > LISTED {
        text.push_str(&format!(" and {} more", n - LISTED));
    }
    text
}

/// The lowest port an unprivileged process may bind
/// (`net.ipv4.ip_unprivileged_port_start`, 1024 unless changed; containers
/// often set 0).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1024)
}

/// Whether this process has `capability` in its effective set (`CapEff` in
/// /proc/self/status), which root has too: `CAP_NET_BIND_SERVICE` to bind
/// ports below the floor, `CAP_NET_ADMIN` for transparent dials.
fn has_capability(capability: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true; // unknown: say nothing rather than something wrong
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << capability) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut_with_a_count() {
        assert_eq!(listed([1, 2].iter()), "1, 2");
        assert_eq!(
            listed((1..=10).collect::<Vec<_>>().iter()),
            "1, 2, 3, 4, 5, 6, 7, 8 and 2 more"
        );
    }

    #[test]
    fn loopback_and_wildcard_addresses_are_never_foreign() {
        let config = lb_config::check_str(
                "[node]\naddresses = [\"0.0.0.0\"]\n[cluster]\nservice_cidr = \"127.0.0.0/24\"\n[[services]]\nname = \"web\"\ncluster_ip = \"127.0.0.10\"\ntype = \"NodePort\"\nports = [{ port = 8080 }]\n",
        )
        .expect("valid");
        let w = host_warnings(&config);
        assert!(
            w.iter().all(|l| !l.contains("not an address of this host")),
            "{w:?}"
        );
    }
}
