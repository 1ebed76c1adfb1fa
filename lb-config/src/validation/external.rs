//! `node.allowed_external_cidrs`: where external IPs and LoadBalancer
//! addresses may be, from every source. Without it, whoever can write a
//! service (etcd, a manifest) chooses an address lb listens on, any local
//! one included (the shape of CVE-2020-8554); with it, such an address is
//! refused on its field, as the Kubernetes `externalip-webhook` refuses
//! external IPs outside its `allowed-external-ip-cidrs`. Empty (the
//! default) allows any address, as Kubernetes does.

use std::net::IpAddr;

use ipnet::IpNet;
use lb_core::pool::IpRange;

use super::fields::at_most;
use super::ServiceDraft;
use crate::error::{Errors, FieldError};
use crate::raw::MAX_ALLOWED_EXTERNAL_CIDRS;

/// The allowed CIDRs, parsed as `cluster.service_cidr` is (host bits
/// dropped).
pub(crate) fn allowed_cidrs(raw: Option<&[String]>, errs: &mut Errors) -> Vec<IpNet> {
    let list = raw.unwrap_or_default();
    let path = "node.allowed_external_cidrs";
    if !at_most(path, list.len(), MAX_ALLOWED_EXTERNAL_CIDRS, errs) {
        return Vec::new();
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| match text.trim().parse::<IpNet>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                errs.push(FieldError::invalid(
                    format!("{path}[{i}]"),
                    text.as_str(),
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
                None
            }
        })
        .collect()
}

/// The allowed CIDRs as the file writes them, for error messages:
/// `["127.0.122.0/24", "::1/128"]` (the first 8, then how many more).
pub(crate) fn describe(allowed: &[IpNet]) -> String {
    const SHOWN: usize = 8;
    let mut items: Vec<String> = allowed
        .iter()
        .take(SHOWN)
        .map(|n| format!("\"{n}\""))
        .collect();
    if allowed.len() > SHOWN {
        items.push(format!("... {} more", allowed.len() - SHOWN));
    }
    format!("[{}]", items.join(", "))
}

/// Whether `ip` may be an external or LoadBalancer address.
pub(crate) fn allows(allowed: &[IpNet], ip: IpAddr) -> bool {
    allowed.is_empty() || allowed.iter().any(|n| n.contains(&ip))
}

/// Whether every address of `range` lies in the allowed CIDRs (together:
/// a range may span two adjacent ones).
pub(crate) fn allows_range(allowed: &[IpNet], range: &IpRange) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let v6 = range.first().is_ipv6();
    let last = number(range.last());
    let mut next = number(range.first());
    loop {
        // The furthest end of an allowed CIDR holding `next`.
        let end = allowed
            .iter()
            .filter(|n| n.network().is_ipv6() == v6)
            .filter(|n| number(n.network()) <= next && next <= number(n.broadcast()))
            .map(|n| number(n.broadcast()))
            .max();
        match end {
            None => return false,
            Some(end) if end >= last => return true,
            Some(end) => next = end + 1,
        }
    }
}

fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Refuses every external IP and requested LoadBalancer address of
/// `drafts` outside `allowed`, on its own field.
pub(crate) fn check_services(drafts: &[ServiceDraft], allowed: &[IpNet], errs: &mut Errors) {
    if allowed.is_empty() {
        return;
    }
    let why = || format!("not in node.allowed_external_cidrs {}", describe(allowed));
    for d in drafts {
        for (j, ip) in d.spec.external_ips.iter().enumerate() {
            if !allows(allowed, *ip) {
                errs.push(FieldError::invalid(
                    format!("{}.external_ips[{j}]", d.path),
                    ip.to_string(),
                    why(),
                ));
            }
        }
        if let Some(ip) = d.lb.as_ref().and_then(|lb| lb.requested) {
            if !allows(allowed, ip) {
                errs.push(FieldError::invalid(
                    format!("{}.load_balancer_ip", d.path),
                    ip.to_string(),
                    why(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_range_may_span_adjacent_allowed_cidrs_but_not_a_gap() {
        let allowed = nets(&["127.0.122.0/25", "127.0.122.128/25", "::1/128"]);
        let range = |s: &str| IpRange::parse(s).unwrap();
        assert!(allows_range(
            &allowed,
            &range("127.0.122.100-127.0.122.200")
        ));
        assert!(allows_range(&allowed, &range("127.0.122.0/24")));
        assert!(!allows_range(&allowed, &range("127.0.122.0/23")));
        assert!(!allows_range(&allowed, &range("127.0.121.255-127.0.122.1")));
        assert!(allows_range(&allowed, &range("::1/128")));
        assert!(!allows_range(&allowed, &range("::1-::2")));
        assert!(allows_range(&[], &range("10.0.0.0/8")));
    }
}
