//! `[[ip_pools]]` validation and LoadBalancer address assignment.
//!
//! Pools are validated like MetalLB's `IPAddressPool` webhook (names are
//! DNS-1123 subdomains, each address a CIDR or a `FIRST-LAST` range of one
//! family, no two pools overlapping). Assignment itself is lb-core's pure
//! [`lb_core::pool::assign`]; this module feeds it the services and the
//! previous holdings, and writes the result into the specs. A requested
//! address outside every pool is a validation error; one that is taken, or an
//! exhausted pool, leaves the service pending (no ingress, `<pending>`), which
//! is not an error: the service still serves its cluster IP and node ports.

use std::collections::HashSet;
use std::net::IpAddr;

use lb_core::alloc::Allocations;
use lb_core::pool::{assign, Assignment, IpPool, IpRange, LbRequest};
use lb_core::ServiceType;

use crate::error::{object_path, Errors, FieldError};
use crate::raw::RawConfig;
use crate::validation::ServiceDraft;

/// Validates every `[[ip_pools]]` entry; pools with errors are left out.
pub(crate) fn pools(raw: &RawConfig, errs: &mut Errors) -> Vec<IpPool> {
    let mut out: Vec<IpPool> = Vec::new();
    let mut seen = HashSet::new();
    // Every well-formed range of the pools before, even of pools with errors,
    // so an overlap is reported once, on the later pool.
    let mut earlier: Vec<(&str, IpRange)> = Vec::new();
    for (i, p) in raw.ip_pools.iter().enumerate() {
        let path = object_path("ip_pools", "", &p.name, i);
        let start = errs.len();
        if p.name.is_empty() {
            errs.push(FieldError::required(
                format!("{path}.name"),
                "name is required",
            ));
        } else if !seen.insert(p.name.as_str()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), &p.name));
        } else {
            for m in crate::validation::dns1123_subdomain(&p.name) {
                errs.push(FieldError::invalid(format!("{path}.name"), &p.name, m));
            }
        }
        if p.addresses.is_empty() {
            errs.push(FieldError::required(
                format!("{path}.addresses"),
                "at least one CIDR or range",
            ));
        }
        let mut ranges = Vec::new();
        for (j, text) in p.addresses.iter().enumerate() {
            let ap = format!("{path}.addresses[{j}]");
            match IpRange::parse(text) {
                Ok(r) => {
                    let clash = earlier
                        .iter()
                        .find(|(_, qr)| qr.overlaps(&r))
                        .map(|(name, _)| format!("overlaps with ip_pools[{name}]"))
                        .or_else(|| {
                            ranges
                                .iter()
                                .any(|o: &IpRange| o.overlaps(&r))
                                .then(|| "overlaps with another range of this pool".to_string())
                        });
                    match clash {
                        Some(m) => errs.push(FieldError::invalid(&ap, text, m)),
                        None => ranges.push(r),
                    }
                }
                Err(e) => errs.push(FieldError::invalid(&ap, text, e.to_string())),
            }
        }
        earlier.extend(ranges.iter().map(|r| (p.name.as_str(), *r)));
        if errs.len() == start {
            out.push(IpPool {
                name: p.name.clone(),
                ranges,
                auto_assign: p.auto_assign.unwrap_or(true),
            });
        }
    }
    out
}

/// Checks what LoadBalancer services ask of the pools: a named pool must
/// exist, and a requested address must lie in a pool (the named one, when
/// set). Kubernetes' wording: `Invalid value: "IP": not in any ip_pool`.
pub(crate) fn check_requests(drafts: &[ServiceDraft], pools: &[IpPool], errs: &mut Errors) {
    for d in drafts {
        let Some(lb) = &d.lb else { continue };
        if let Some(name) = &lb.pool {
            if !pools.iter().any(|p| &p.name == name) {
                errs.push(FieldError::invalid(
                    format!("{}.ip_pool", d.path),
                    name.as_str(),
                    "no ip_pool of this name",
                ));
                continue;
            }
        }
        let Some(ip) = lb.requested else { continue };
        let ok = pools
            .iter()
            .filter(|p| lb.pool.as_ref().is_none_or(|n| &p.name == n))
            .any(|p| p.contains(ip));
        if !ok {
            let why = match &lb.pool {
                Some(name) => format!("not in ip_pool {}", crate::error::go_quote(name)),
                None => "not in any ip_pool".to_string(),
            };
            errs.push(FieldError::invalid(
                format!("{}.load_balancer_ip", d.path),
                ip.to_string(),
                why,
            ));
        }
    }
}

/// The key of a service's LoadBalancer address in
/// [`Allocations::load_balancer_ips`].
fn lb_key(d: &ServiceDraft) -> String {
    format!("{}/{}", d.spec.key.namespace, d.spec.key.name)
}

/// Assigns LoadBalancer addresses, preferring what each service held in
/// `previous`; records the holdings in `out`. Pending services are logged.
pub(crate) fn allocate(
    drafts: &mut [ServiceDraft],
    pools: &[IpPool],
    previous: &Allocations,
    out: &mut Allocations,
) {
    let idx: Vec<usize> = (0..drafts.len())
        .filter(|&i| drafts[i].spec.service_type == ServiceType::LoadBalancer)
        .collect();
    let requests: Vec<LbRequest> = idx
        .iter()
        .map(|&i| {
            let d = &drafts[i];
            let lb = d.lb.clone().unwrap_or_default();
            LbRequest {
                key: lb_key(d),
                requested: lb.requested,
                pool: lb.pool,
                sharing_key: lb.sharing_key,
                ports: d.spec.ports.iter().map(|p| (p.protocol, p.port)).collect(),
            }
        })
        .collect();
    let result = assign(pools, &requests, &previous.load_balancer_ips);
    for (&i, a) in idx.iter().zip(result) {
        let d = &mut drafts[i];
        match a {
            Assignment::Assigned { ip, pool } => {
                out.load_balancer_ips.insert(lb_key(d), ip);
                d.spec.load_balancer_ips = vec![ip];
                d.spec.ip_pool = pool;
            }
            Assignment::Pending(why) => {
                tracing::info!(service = %d.spec.key, "LoadBalancer address pending: {why}");
                d.spec.load_balancer_ips = Vec::new();
                d.spec.ip_pool = String::new();
            }
        }
    }
}

/// What a LoadBalancer service asks of the pools (from its raw fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LbDraft {
    /// `load_balancer_ip`.
    pub(crate) requested: Option<IpAddr>,
    /// `ip_pool`.
    pub(crate) pool: Option<String>,
    /// `allow_shared_ip`.
    pub(crate) sharing_key: String,
}
