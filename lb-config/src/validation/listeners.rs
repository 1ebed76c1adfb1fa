//! Listeners that would take each other's address: the admin API, the DNS
//! responder (UDP and TCP), health-check node ports and service frontends.
//!
//! `run` binds all of them; two on one address, port and protocol fail at
//! bind time (the admin API, DNS and health-check ports bind without
//! `SO_REUSEPORT`), so `check` refuses the clash first and names both sides.
//! A service frontend must also never take the admin, DNS or health-check
//! address: whoever writes a service (etcd, a manifest) could otherwise put
//! a listener of their choosing in front of lb's own. The error is on the
//! later listener's field (services come after `[admin]` and `[dns]`), so
//! from etcd only that object is refused.
//!
//! Clashes between two services' frontends are the allocators' business
//! (a cluster IP or node port is held once) and are not repeated here. A
//! `0.0.0.0` address takes every IPv4 address at its port; `::` every IPv6
//! address, and every IPv4 one too for the admin, DNS and health-check
//! listeners, which bind dual-stack (service listeners bind `IPV6_V6ONLY`).
//! Port 0 (an ephemeral port, chosen at bind) never clashes. Binds that fail
//! for reasons only the host knows (an address that is not local) stay
//! run-time errors.

use crate::hash::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use lb_core::{FrontendKind, Protocol, ServiceType, TrafficPolicy};

use super::{ServiceDraft, Settings};
use crate::error::{BadValue, Errors, FieldError};

/// Refuses `dns.listen` on `admin.listen`'s address (TCP). Runs with the
/// settings, before allocation, so it is reported even when allocation
/// fails.
pub(crate) fn check_own(settings: &Settings, errs: &mut Errors) {
    let mut own = Listeners::default();
    for l in own_listeners(settings) {
        own.add(l, errs);
    }
}

/// Refuses every service frontend and health-check node port (already
/// allocated) that would take the admin, DNS or a health-check address, and
/// every health-check node port that would take another listener's.
pub(crate) fn check_services(settings: &Settings, services: &[ServiceDraft], errs: &mut Errors) {
    let mut all = Listeners::default();
    // Already checked against each other by `check_own`.
    for l in own_listeners(settings) {
        all.seed(l);
    }
    let nodes = &settings.node.addresses;
    for d in services {
        d.spec.for_each_frontend(nodes, |port, key, kind| {
            all.add(
                Listener {
                    addr: key.addr,
                    protocol: key.protocol,
                    dual_stack: false,
                    special: false,
                    named: Named::Frontend { d, port, kind },
                    field_names_it: false,
                },
                errs,
            );
        });
        let hc = d.spec.health_check_node_port;
        let has_hc = d.spec.service_type == ServiceType::LoadBalancer
            && d.spec.external_traffic_policy == TrafficPolicy::Local
            && hc != 0;
        for ip in nodes.iter().filter(|_| has_hc) {
            let addr = SocketAddr::new(*ip, hc);
            all.add(
                Listener {
                    addr,
                    protocol: Protocol::Tcp,
                    dual_stack: true,
                    special: true,
                    named: Named::Given {
                        what: format!("the health-check node port {addr} of {}", d.path),
                        field: Some((
                            format!("{}.health_check_node_port", d.path),
                            BadValue::Int(i64::from(hc)),
                        )),
                    },
                    field_names_it: false,
                },
                errs,
            );
        }
    }
}

/// Node ports that node-port allocation must not hand out: the ports of the
/// admin and DNS listeners that a node port on one of `settings`' node
/// addresses would take. (An explicitly requested one is still refused by
/// [`check_services`], naming the listener.)
pub(crate) fn reserved_node_ports(settings: &Settings) -> Vec<u16> {
    let own = own_listeners(settings);
    let mut out: Vec<u16> = own
        .iter()
        .filter(|l| {
            settings.node.addresses.iter().any(|ip| {
                let node_port = Listener {
                    addr: SocketAddr::new(*ip, l.addr.port()),
                    protocol: l.protocol,
                    dual_stack: false,
                    special: false,
                    named: Named::Given {
                        what: String::new(),
                        field: None,
                    },
                    field_names_it: false,
                };
                overlap(&node_port, l).is_some()
            })
        })
        .map(|l| l.addr.port())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The admin API (TCP) and the DNS responder (UDP and TCP), in that order;
/// none on port 0.
fn own_listeners(settings: &Settings) -> Vec<Listener<'static>> {
    let mut out = Vec::new();
    if let Some(addr) = settings.admin_listen {
        out.push(Listener {
            addr,
            protocol: Protocol::Tcp,
            dual_stack: true,
            special: true,
            named: Named::Given {
                what: format!("admin.listen {addr}"),
                field: None,
            },
            field_names_it: true,
        });
    }
    if let Some(dns) = &settings.dns {
        let addr = dns.listen;
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            out.push(Listener {
                addr,
                protocol,
                dual_stack: true,
                special: true,
                named: Named::Given {
                    what: format!("dns.listen {addr}"),
                    field: Some(("dns.listen".into(), BadValue::Str(addr.to_string()))),
                },
                field_names_it: true,
            });
        }
    }
    out.retain(|l| l.addr.port() != 0);
    out
}

/// The field a frontend comes from, and its value, for the error: the
/// port for a cluster IP or a pool's LoadBalancer address, the address for
/// an external IP or a requested LoadBalancer address, the node port.
fn frontend_field(
    d: &ServiceDraft,
    port: usize,
    addr: SocketAddr,
    kind: FrontendKind,
) -> (String, BadValue) {
    let p = &d.spec.ports[port];
    let port_field = || {
        (
            format!("{}.ports[{port}].port", d.path),
            BadValue::Int(i64::from(p.port)),
        )
    };
    match kind {
        FrontendKind::ClusterIp => port_field(),
        FrontendKind::NodePort => (
            format!("{}.ports[{port}].node_port", d.path),
            BadValue::Int(i64::from(addr.port())),
        ),
        FrontendKind::ExternalIp => {
            match d.spec.external_ips.iter().position(|ip| *ip == addr.ip()) {
                Some(j) => (
                    format!("{}.external_ips[{j}]", d.path),
                    BadValue::Str(addr.ip().to_string()),
                ),
                None => port_field(),
            }
        }
        FrontendKind::LoadBalancer => {
            let requested = d.lb.as_ref().and_then(|lb| lb.requested);
            if requested == Some(addr.ip()) {
                (
                    format!("{}.load_balancer_ip", d.path),
                    BadValue::Str(addr.ip().to_string()),
                )
            } else {
                port_field()
            }
        }
    }
}

/// One listener lb would open.
struct Listener<'a> {
    addr: SocketAddr,
    protocol: Protocol,
    /// Bound without `IPV6_V6ONLY`: on `::` it takes IPv4 addresses too.
    dual_stack: bool,
    /// The admin API, DNS or a health-check port (not a service frontend).
    special: bool,
    /// How an error names it and which field it goes to.
    named: Named<'a>,
    /// The field's path says what the listener is (`dns.listen`), so the
    /// error need not.
    field_names_it: bool,
}

/// How an error names a listener, and the field it goes to. A service
/// frontend is named only when it clashes: 10,000 services have tens of
/// thousands of frontends, and writing each one's name took milliseconds
/// of every load.
enum Named<'a> {
    Given {
        /// `admin.listen 127.0.0.1:10249`, `the health-check node port ...`.
        what: String,
        /// The field and the value shown; `None` for `admin.listen`, which
        /// comes first and so is never the later side.
        field: Option<(String, BadValue)>,
    },
    /// Port `port` of `d`, as the frontend of `kind`.
    Frontend {
        d: &'a ServiceDraft,
        port: usize,
        kind: FrontendKind,
    },
}

impl Listener<'_> {
    /// `the cluster IP 127.96.0.5:53 of services[dns]`.
    fn what(&self) -> String {
        match &self.named {
            Named::Given { what, .. } => what.clone(),
            Named::Frontend { d, kind, .. } => {
                format!("the {} {} of {}", kind.as_str(), self.addr, d.path)
            }
        }
    }

    fn field(&self) -> Option<(String, BadValue)> {
        match &self.named {
            Named::Given { field, .. } => field.clone(),
            Named::Frontend { d, port, kind } => Some(frontend_field(d, *port, self.addr, *kind)),
        }
    }
}

/// The listeners seen so far, by port and protocol.
#[derive(Default)]
struct Listeners<'a> {
    special: HashMap<(u16, Protocol), Vec<Listener<'a>>>,
    frontends: HashMap<(u16, Protocol), Vec<Listener<'a>>>,
    /// Fields already given an error (one per field).
    reported: HashSet<String>,
}

impl<'a> Listeners<'a> {
    /// Records `l` without checking it.
    fn seed(&mut self, l: Listener<'a>) {
        let map = if l.special {
            &mut self.special
        } else {
            &mut self.frontends
        };
        map.entry((l.addr.port(), l.protocol)).or_default().push(l);
    }

    /// Checks `l` against the listeners before it (a frontend against the
    /// special ones only) and records it.
    fn add(&mut self, l: Listener<'a>, errs: &mut Errors) {
        let at = (l.addr.port(), l.protocol);
        let mut earlier = self.special.get(&at).into_iter().flatten().chain(
            self.frontends
                .get(&at)
                .into_iter()
                .flatten()
                .filter(|_| l.special),
        );
        let clash = earlier.find_map(|e| overlap(&l, e).map(|why| (e, why)));
        if let Some(((e, why), (path, value))) = clash.and_then(|c| Some((c, l.field()?))) {
            if self.reported.insert(path.clone()) {
                // `dns.listen` is named by its path already.
                let mine = if l.field_names_it {
                    String::new()
                } else {
                    format!("{} ", l.what())
                };
                let why = match why {
                    Some(ip) => format!(": {ip} listens on every local address"),
                    None => String::new(),
                };
                errs.push(FieldError::invalid(
                    path.clone(),
                    value.clone(),
                    format!(
                        "{mine}would take {} ({}), a listener of this proxy{why}",
                        e.what(),
                        l.protocol
                    ),
                ));
            }
        }
        self.seed(l);
    }
}

/// Whether `a` and `b` would take the same address: `None` when they do
/// not, `Some(None)` for the very same address, `Some(Some(wildcard))` when
/// one is a wildcard that covers the other's address.
fn overlap(a: &Listener, b: &Listener) -> Option<Option<IpAddr>> {
    if a.protocol != b.protocol || a.addr.port() != b.addr.port() {
        return None;
    }
    let (x, y) = (canonical(a.addr.ip()), canonical(b.addr.ip()));
    if x == y {
        return Some(None);
    }
    if covers(a, y) {
        return Some(Some(x));
    }
    if covers(b, x) {
        return Some(Some(y));
    }
    None
}

/// Whether listener `l` (on a wildcard address) takes `ip` too.
fn covers(l: &Listener, ip: IpAddr) -> bool {
    match canonical(l.addr.ip()) {
        IpAddr::V4(w) => w.is_unspecified() && ip.is_ipv4(),
        IpAddr::V6(w) => w.is_unspecified() && (ip.is_ipv6() || l.dual_stack),
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is bound as.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
