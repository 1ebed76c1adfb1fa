//! Whether a destination is one of this proxy's own frontends: a TCP dial or
//! a UDP flow there would be accepted by lb itself, which would pick and dial
//! again, until every descriptor is used. Validation refuses such endpoints
//! when it can see them; this catches the rest at run time (host-name
//! endpoints, node addresses `0.0.0.0`/`::` that listen on every local
//! address, embedders' own snapshots).
//!
//! The check is on every dial, so it is a hash lookup in the snapshot's
//! frontend table, plus, only when a wildcard node address serves that port,
//! a second lookup and a look at this host's addresses: loopback always, the
//! others from `getifaddrs(3)` cached for [`REFRESH`] (read again on the first
//! such check after that, never more often).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use lb_core::{Protocol, Snapshot};
use tracing::debug;

use crate::sys;

/// How long the cached list of this host's addresses is trusted. An address
/// added since is seen by the data plane's check at most this late.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);

/// Whether a connection to `addr` over `protocol` would reach one of
/// `snapshot`'s frontends, i.e. this proxy itself.
pub(crate) fn is_own_frontend(
    snapshot: &Snapshot,
    local: &LocalAddrs,
    addr: SocketAddr,
    protocol: Protocol,
) -> bool {
    // An IPv4-mapped IPv6 address is dialed as the IPv4 one.
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
        v4 => v4,
    };
    let addr = SocketAddr::new(ip, addr.port());
    if snapshot.frontend(addr, protocol).is_some() {
        return true;
    }
    let any = match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    snapshot.node().addresses.contains(&any)
        && snapshot
            .frontend(SocketAddr::new(any, addr.port()), protocol)
            .is_some()
        && local.contains(ip)
}

/// This host's addresses, read with `getifaddrs(3)` at most once per
/// [`REFRESH`] and only when asked about an address that is not loopback.
#[derive(Debug)]
pub(crate) struct LocalAddrs {
    cached: ArcSwap<Cached>,
    /// One refresh at a time; the others use the list they have.
    refreshing: AtomicBool,
}

#[derive(Debug, Default)]
struct Cached {
    /// `None` until first read.
    read: Option<Instant>,
    addrs: Vec<IpAddr>,
}

impl Default for LocalAddrs {
    fn default() -> Self {
        LocalAddrs {
            cached: ArcSwap::from_pointee(Cached::default()),
            refreshing: AtomicBool::new(false),
        }
    }
}

impl LocalAddrs {
    /// Whether `ip` is one of this host's addresses: loopback and the
    /// unspecified address (a connect to `0.0.0.0` reaches this host) always,
    /// others as of the last read.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() || ip.is_unspecified() {
            return true;
        }
        let cached = self.cached.load();
        let stale = match cached.read {
            Some(at) => at.elapsed() >= REFRESH,
            None => true,
        };
        if stale && !self.refreshing.swap(true, Ordering::Acquire) {
            let fresh = match sys::local_addresses() {
                Ok(addrs) => addrs,
                Err(e) => {
                    // Keep the last list; try again after REFRESH.
                    debug!(error = %e, "cannot list this host's addresses");
                    cached.addrs.clone()
                }
            };
            let found = fresh.binary_search(&ip).is_ok();
            self.cached.store(std::sync::Arc::new(Cached {
                read: Some(Instant::now()),
                addrs: fresh,
            }));
            self.refreshing.store(false, Ordering::Release);
            return found;
        }
        cached.addrs.binary_search(&ip).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{EndpointSpec, NodeSpec, PortSpec, ServiceSpec, ServiceType};
    use std::time::SystemTime;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// `web` on cluster IP 127.0.91.1:80 and node port 30080 on `node`.
    fn snapshot(node: &str) -> Snapshot {
        let mut port =
            PortSpec::tcp("http", 80).with_endpoint(EndpointSpec::new(sa("127.0.91.9:8080")));
        port.node_port = Some(30080);
        let mut web = ServiceSpec::cluster_ip("default", "web", "127.0.91.1".parse().unwrap())
            .with_port(port);
        web.service_type = ServiceType::NodePort;
        let node = NodeSpec {
            name: "node-1".into(),
            addresses: vec![node.parse().unwrap()],
            zone: None,
        };
        Snapshot::build(node, vec![web], None, SystemTime::now())
    }

    #[test]
    fn a_frontend_address_is_own_over_its_protocol_only() {
        let s = snapshot("127.0.91.2");
        let local = LocalAddrs::default();
        let own = |a: &str, p| is_own_frontend(&s, &local, sa(a), p);
        assert!(own("127.0.91.1:80", Protocol::Tcp));
        assert!(own("[::ffff:127.0.91.1]:80", Protocol::Tcp));
        assert!(own("127.0.91.2:30080", Protocol::Tcp));
        assert!(!own("127.0.91.1:80", Protocol::Udp));
        assert!(!own("127.0.91.9:8080", Protocol::Tcp));
        // The node port listens on 127.0.91.2 only.
        assert!(!own("127.0.0.1:30080", Protocol::Tcp));
    }

    #[test]
    fn on_a_wildcard_node_address_any_local_address_at_the_node_port_is_own() {
        let s = snapshot("0.0.0.0");
        let local = LocalAddrs::default();
        let own = |a: &str| is_own_frontend(&s, &local, sa(a), Protocol::Tcp);
        assert!(own("127.0.91.77:30080"));
        assert!(own("0.0.0.0:30080"));
        assert!(!own("127.0.91.77:30081"));
        // TEST-NET-3: no host has it (classified, never dialed).
        assert!(!own("203.0.113.7:30080"));
        // `0.0.0.0` is IPv4 only (lb binds IPv6 sockets V6ONLY).
        assert!(!own("[::1]:30080"));
    }
}
