//! Features the contract names but this release does not serve yet. They are
//! refused here, all in one place, rather than silently ignored: a user who
//! writes `type = "LoadBalancer"` must not believe an address is being
//! announced. The release that implements a feature deletes its lines here.

use crate::error::{object_path, Errors, FieldError};
use crate::raw::{RawConfig, RawService};

const LATER: &str = "not supported yet";

fn later(what: &str) -> String {
    format!("{LATER} ({what} come with a later release)")
}

/// Pushes one error per unsupported feature in use.
pub(crate) fn check(raw: &RawConfig, errs: &mut Errors) {
    if matches!(raw.node.vip_mode.as_deref(), Some("interface")) {
        errs.push(FieldError::not_supported_because(
            "node.vip_mode",
            "interface",
            later("interface VIPs"),
        ));
    }
    if raw
        .node
        .vip_interface
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        errs.push(FieldError::forbidden(
            "node.vip_interface",
            later("interface VIPs"),
        ));
    }
    if raw
        .node
        .announce_interface
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        errs.push(FieldError::forbidden(
            "node.announce_interface",
            later("LoadBalancer announcements"),
        ));
    }
    if let Some(etcd) = raw.source.as_ref().and_then(|s| s.etcd.as_ref()) {
        // Served by `source::etcd`; its own checks refuse what is not yet.
        crate::source::etcd::EtcdSettings::from_raw(etcd, errs);
    }
    for (i, p) in raw.ip_pools.iter().enumerate() {
        errs.push(FieldError::forbidden(
            object_path("ip_pools", "", &p.name, i),
            later("LoadBalancer address pools"),
        ));
    }
    for (i, s) in raw.services.iter().enumerate() {
        service(s, i, errs);
    }
}

fn service(s: &RawService, index: usize, errs: &mut Errors) {
    let path = object_path(
        "services",
        s.namespace.as_deref().unwrap_or(""),
        &s.name,
        index,
    );
    if s.service_type.as_deref() == Some("LoadBalancer") {
        errs.push(FieldError::not_supported_because(
            format!("{path}.type"),
            "LoadBalancer",
            later("LoadBalancer services"),
        ));
    }
    let set = |o: &Option<Vec<String>>| o.as_ref().is_some_and(|v| !v.is_empty());
    let set_str = |o: &Option<String>| o.as_ref().is_some_and(|v| !v.is_empty());
    if set(&s.external_ips) {
        errs.push(FieldError::forbidden(
            format!("{path}.external_ips"),
            later("external IPs"),
        ));
    }
    if set_str(&s.load_balancer_ip) {
        errs.push(FieldError::forbidden(
            format!("{path}.load_balancer_ip"),
            later("LoadBalancer services"),
        ));
    }
    if set(&s.load_balancer_source_ranges) {
        errs.push(FieldError::forbidden(
            format!("{path}.load_balancer_source_ranges"),
            later("LoadBalancer services"),
        ));
    }
    if set_str(&s.ip_pool) {
        errs.push(FieldError::forbidden(
            format!("{path}.ip_pool"),
            later("LoadBalancer services"),
        ));
    }
    if set_str(&s.allow_shared_ip) {
        errs.push(FieldError::forbidden(
            format!("{path}.allow_shared_ip"),
            later("LoadBalancer services"),
        ));
    }
}
