//! `[node]`, `[cluster]`, `[proxy]` and `[admin]` into typed settings.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use lb_core::{AcceptMode, ForwardEngine, NodeSpec, ProxySettings};

use super::fields::at_most;
use super::names;
use crate::config::{ClusterSettings, VipMode, DEFAULT_ADMIN_LISTEN};
use crate::error::{Errors, FieldError};
use crate::raw::{RawConfig, MAX_ALLOWED_HOSTS, MAX_CONNECT_TIMEOUTS, MAX_NODE_ADDRESSES};

/// The typed top-level settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) node: NodeSpec,
    pub(crate) vip_mode: VipMode,
    pub(crate) vip_interface: String,
    pub(crate) announce_interface: String,
    pub(crate) cluster: ClusterSettings,
    pub(crate) proxy: ProxySettings,
    pub(crate) admin_listen: Option<SocketAddr>,
    pub(crate) admin_allowed_hosts: Vec<String>,
    pub(crate) dns: Option<crate::config::DnsSettings>,
    /// `node.allowed_external_cidrs`; empty = any address.
    pub(crate) allowed_external: Vec<IpNet>,
    /// `node.load_balancer_class`: the class this node gives addresses to;
    /// `None` = services without a class.
    pub(crate) load_balancer_class: Option<String>,
    /// `node.service_proxy_name`: the proxy-name label value of the
    /// services this proxy serves; empty = services without the label.
    pub(crate) service_proxy_name: String,
    /// Whether `service_cidr` and `node_port_range` were valid (when not,
    /// the defaults stand in and allocation must not run on them).
    pub(crate) ranges_ok: bool,
}

/// Validates the settings sections; `hostname` is the default node name.
pub(crate) fn settings(raw: &RawConfig, hostname: &str, errs: &mut Errors) -> Settings {
    let mut node = NodeSpec {
        name: hostname.to_ascii_lowercase(),
        ..NodeSpec::default()
    };
    if let Some(name) = &raw.node.name {
        for m in names::dns1123_subdomain(name) {
            errs.push(FieldError::invalid("node.name", name, m));
        }
        node.name = name.clone();
    }
    if let Some(addrs) = &raw.node.addresses {
        if at_most("node.addresses", addrs.len(), MAX_NODE_ADDRESSES, errs) {
            node.addresses = addrs
                .iter()
                .enumerate()
                .filter_map(|(i, a)| ip(&format!("node.addresses[{i}]"), a, errs))
                .collect();
        }
    }
    node.zone = super::topology::zone("node.zone", raw.node.zone.as_deref(), errs);
    let allowed_external =
        super::external::allowed_cidrs(raw.node.allowed_external_cidrs.as_deref(), errs);
    let vip_mode = match raw.node.vip_mode.as_deref() {
        None | Some("bind") => VipMode::Bind,
        Some("freebind") => VipMode::Freebind,
        Some("interface") => VipMode::Interface,
        Some(other) => {
            errs.push(FieldError::not_supported(
                "node.vip_mode",
                other,
                &["bind", "freebind", "interface"],
            ));
            VipMode::Bind
        }
    };
    let vip_interface = interface_name(
        "node.vip_interface",
        raw.node.vip_interface.as_deref(),
        errs,
    )
    .unwrap_or_else(|| crate::Config::DEFAULT_VIP_INTERFACE.to_string());
    let announce_interface = interface_name(
        "node.announce_interface",
        raw.node.announce_interface.as_deref(),
        errs,
    )
    .unwrap_or_default();
    if vip_mode != VipMode::Interface {
        for (field, set) in [
            ("vip_interface", &raw.node.vip_interface),
            ("announce_interface", &raw.node.announce_interface),
        ] {
            if set.as_deref().is_some_and(|s| !s.is_empty()) {
                errs.push(FieldError::forbidden(
                    format!("node.{field}"),
                    "may only be used when `vip_mode` is 'interface'",
                ));
            }
        }
    }

    let load_balancer_class = raw.node.load_balancer_class.clone();
    if let Some(class) = &load_balancer_class {
        for m in names::qualified_name(class) {
            errs.push(FieldError::invalid("node.load_balancer_class", class, m));
        }
    }
    let service_proxy_name = raw.node.service_proxy_name.clone().unwrap_or_default();
    for m in names::label_value(&service_proxy_name) {
        errs.push(FieldError::invalid(
            "node.service_proxy_name",
            &service_proxy_name,
            m,
        ));
    }

    let mut cluster = ClusterSettings::default();
    let before = errs.len();
    if let Some(cidr) = &raw.cluster.service_cidr {
        match cidr.parse::<IpNet>() {
            Ok(net) => cluster.service_cidr = net.trunc(),
            Err(_) => errs.push(FieldError::invalid(
                "cluster.service_cidr",
                cidr,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
    if let Some(range) = &raw.cluster.node_port_range {
        match parse_port_range(range) {
            Some(r) => cluster.node_port_range = r.0..=r.1,
            None => errs.push(FieldError::invalid(
                "cluster.node_port_range",
                range,
                "must be FIRST-LAST with 1 <= FIRST <= LAST <= 65535 (e.g. 30000-32767)",
            )),
        }
    }
    let ranges_ok = errs.len() == before;
    cluster.allocation_seed = raw.cluster.allocation_seed.unwrap_or(0);
    if let Some(domain) = &raw.cluster.domain {
        for m in names::dns1123_subdomain(domain) {
            errs.push(FieldError::invalid("cluster.domain", domain, m));
        }
        cluster.domain = domain.clone();
    }

    let proxy = proxy(raw, errs);

    let admin_listen = match raw.admin.listen.as_deref() {
        None => DEFAULT_ADMIN_LISTEN.parse().ok(),
        Some("") => None,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(FieldError::invalid(
                    "admin.listen",
                    text,
                    "must be IP:PORT (e.g. 127.0.0.1:10249), or \"\" to disable",
                ));
                None
            }
        },
    };

    let admin_allowed_hosts = allowed_hosts(raw.admin.allowed_hosts.as_deref(), errs);

    let dns = raw.dns.as_ref().map(|d| super::dns::dns(d, errs));
    sources(raw, errs);

    Settings {
        node,
        vip_mode,
        vip_interface,
        announce_interface,
        cluster,
        proxy,
        admin_listen,
        admin_allowed_hosts,
        dns,
        allowed_external,
        load_balancer_class,
        service_proxy_name,
        ranges_ok,
    }
}

/// `admin.allowed_hosts`: host names as a `Host` header carries them
/// without its port, so each must be a DNS-1123 subdomain (lowercase: the
/// check compares names case-insensitively, and one spelling per name keeps
/// the list readable).
fn allowed_hosts(raw: Option<&[String]>, errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::new();
    let list = raw.unwrap_or_default();
    if !at_most("admin.allowed_hosts", list.len(), MAX_ALLOWED_HOSTS, errs) {
        return out;
    }
    for (i, host) in list.iter().enumerate() {
        let path = format!("admin.allowed_hosts[{i}]");
        let problems = names::dns1123_subdomain(host);
        if problems.is_empty() {
            out.push(host.clone());
        }
        for m in problems {
            errs.push(FieldError::invalid(path.clone(), host.as_str(), m));
        }
    }
    out
}

/// `[source]`: `[source.etcd]` is checked by the etcd source's own
/// settings (so `check` and a reload report what the source would refuse);
/// a build without the etcd source refuses the table.
fn sources(raw: &RawConfig, errs: &mut Errors) {
    let Some(etcd) = raw.source.as_ref().and_then(|s| s.etcd.as_ref()) else {
        return;
    };
    #[cfg(feature = "etcd")]
    crate::source::etcd::EtcdSettings::from_raw(etcd, errs);
    #[cfg(not(feature = "etcd"))]
    {
        let _ = etcd;
        errs.push(FieldError::forbidden(
            "source.etcd",
            "this build of lb has no etcd source (lb-config built without its `etcd` feature)",
        ));
    }
}

fn proxy(raw: &RawConfig, errs: &mut Errors) -> ProxySettings {
    let p = &raw.proxy;
    let mut s = ProxySettings::default();
    if let Some(list) = p.connect_timeouts_ms.as_ref().filter(|l| {
        at_most(
            "proxy.connect_timeouts_ms",
            l.len(),
            MAX_CONNECT_TIMEOUTS,
            errs,
        )
    }) {
        if list.is_empty() {
            errs.push(FieldError::required(
                "proxy.connect_timeouts_ms",
                "at least one dial timeout",
            ));
        }
        s.connect_timeouts = list
            .iter()
            .enumerate()
            .filter_map(|(i, ms)| {
                if *ms <= 0 {
                    errs.push(FieldError::invalid(
                        format!("proxy.connect_timeouts_ms[{i}]"),
                        *ms,
                        "must be greater than 0",
                    ));
                    None
                } else {
                    Some(Duration::from_millis(*ms as u64))
                }
            })
            .collect();
    }
    if let Some(d) = duration("proxy.tcp_idle_timeout", &p.tcp_idle_timeout, errs) {
        s.tcp_idle_timeout = (!d.is_zero()).then_some(d);
    }
    if let Some(d) = duration("proxy.half_close_timeout", &p.half_close_timeout, errs) {
        s.half_close_timeout = d;
    }
    if let Some(d) = duration("proxy.udp_idle_timeout", &p.udp_idle_timeout, errs) {
        if d.is_zero() {
            errs.push(FieldError::invalid(
                "proxy.udp_idle_timeout",
                p.udp_idle_timeout.clone().unwrap_or_default(),
                "must be greater than 0",
            ));
        }
        s.udp_idle_timeout = d;
    }
    if let Some(d) = duration("proxy.drain_timeout", &p.drain_timeout, errs) {
        s.drain_timeout = d;
    }
    if let Some(d) = duration(
        "proxy.outlier_base_ejection",
        &p.outlier_base_ejection,
        errs,
    ) {
        s.outlier_base_ejection = d;
    }
    if let Some(n) = count("proxy.max_connections", p.max_connections, 0, errs) {
        s.max_connections = n;
    }
    if let Some(n) = count(
        "proxy.outlier_consecutive_failures",
        p.outlier_consecutive_failures,
        0,
        errs,
    ) {
        s.outlier_consecutive_failures = n;
    }
    if let Some(n) = count("proxy.udp_max_flows", p.udp_max_flows, 1, errs) {
        s.udp_max_flows = n;
    }
    if let Some(engine) = named::<ForwardEngine>("proxy.forward_engine", &p.forward_engine, errs) {
        s.forward_engine = engine;
    }
    if let Some(mode) = named::<AcceptMode>("proxy.accept_mode", &p.accept_mode, errs) {
        s.accept_mode = mode;
    }
    if let Some(n) = p.workers {
        if (0..=MAX_WORKERS).contains(&n) {
            s.workers = n as u32;
        } else {
            errs.push(FieldError::invalid(
                "proxy.workers",
                n,
                format!("must be between 0 and {MAX_WORKERS}, inclusive"),
            ));
        }
    }
    s.access_log = raw.log.access.unwrap_or(false);
    match p.source_address.as_deref() {
        None | Some("proxy") => {}
        Some("client") => s.source_address = lb_core::SourceAddress::Client,
        Some(other) => errs.push(FieldError::not_supported(
            "proxy.source_address",
            other,
            &["proxy", "client"],
        )),
    }
    for (i, text) in p.proxy_protocol_trusted_cidrs.iter().flatten().enumerate() {
        match text.trim().parse::<ipnet::IpNet>() {
            Ok(net) => s.proxy_protocol_trusted_cidrs.push(net.trunc()),
            Err(_) => errs.push(FieldError::invalid(
                format!("proxy.proxy_protocol_trusted_cidrs[{i}]"),
                text.as_str(),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
    s
}

/// Most `proxy.workers` threads: far above any CPU count lb runs on, low
/// enough that a typo does not start a million threads.
const MAX_WORKERS: i64 = 1024;

/// One of a settings enum's names (`auto`, `percore`, ...); Kubernetes'
/// "Unsupported value" listing the valid ones otherwise.
fn named<T>(path: &str, value: &Option<String>, errs: &mut Errors) -> Option<T>
where
    T: std::str::FromStr<Err = lb_core::settings::UnknownValue>,
{
    let text = value.as_deref()?;
    match text.parse::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(FieldError::not_supported(path, text, e.valid));
            None
        }
    }
}

/// A Linux interface name (`IFNAMSIZ`: at most 15 bytes, no `/`, `:` or
/// white space); `None` when not set or empty.
fn interface_name(path: &str, value: Option<&str>, errs: &mut Errors) -> Option<String> {
    let name = value.filter(|s| !s.is_empty())?;
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        errs.push(FieldError::invalid(
            path,
            name,
            "must be an interface name: 1-15 characters, no '/', ':' or white space",
        ));
        return None;
    }
    Some(name.to_string())
}

/// A humantime duration (`"250ms"`, `"30s"`, `"1h"`, `"0"`).
fn duration(path: &str, value: &Option<String>, errs: &mut Errors) -> Option<Duration> {
    let text = value.as_deref()?;
    match humantime::parse_duration(text.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(FieldError::invalid(
                path,
                text,
                format!("must be a duration such as \"250ms\", \"30s\" or \"1h\" ({e})"),
            ));
            None
        }
    }
}

/// A count in `min..=u32::MAX`.
fn count(path: &str, value: Option<i64>, min: i64, errs: &mut Errors) -> Option<u32> {
    let n = value?;
    if n < min || n > i64::from(u32::MAX) {
        errs.push(FieldError::invalid(
            path,
            n,
            format!("must be between {min} and {}, inclusive", u32::MAX),
        ));
        return None;
    }
    u32::try_from(n).ok()
}

/// Parses `FIRST-LAST`.
pub(crate) fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.trim().split_once('-')?;
    let a: u16 = a.trim().parse().ok()?;
    let b: u16 = b.trim().parse().ok()?;
    (a >= 1 && a <= b).then_some((a, b))
}

/// Parses an IP address, reporting Kubernetes' message when it is not one.
pub(crate) fn ip(
    path: &(impl std::fmt::Display + ?Sized),
    text: &str,
    errs: &mut Errors,
) -> Option<IpAddr> {
    match text.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            errs.push(FieldError::invalid(
                path.to_string(),
                text,
                names::INVALID_IP,
            ));
            None
        }
    }
}

/// Warnings about settings that are valid but probably not what is meant.
pub(crate) fn warnings(s: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    let loopback = match s.cluster.service_cidr {
        IpNet::V4(n) => n.network().is_loopback() && n.prefix_len() >= 8,
        IpNet::V6(n) => n.network().is_loopback() && n.prefix_len() == 128,
    };
    if s.vip_mode == VipMode::Bind && !loopback {
        out.push(format!(
            "cluster.service_cidr: {} is not a loopback range; with node.vip_mode \"bind\" its addresses must be local to this host (add them to an interface, use a 127.0.0.0/8 range, or vip_mode = \"freebind\")",
            s.cluster.service_cidr
        ));
    }
    out
}
