//! `[[ip_pools]]` validation, like MetalLB's `IPAddressPool` webhook (names are
//! DNS-1123 subdomains, each address a CIDR or a `FIRST-LAST` range of one
//! family, no two pools overlapping). What LoadBalancer services ask of the
//! pools is not checked here: an address outside them, or an unknown pool,
//! leaves only that service pending, as MetalLB does (assignment, after
//! validation, in lb-config's `pools.rs`).

use crate::hash::{HashSet, HashSetExt};

use ipnet::IpNet;
use lb_core::pool::{IpPool, IpRange};

use super::fields::at_most;
use super::{external, names};
use crate::config::VipMode;
use crate::error::{object_path, Errors, FieldError};
use crate::raw::{RawConfig, MAX_POOL_ADDRESSES};

/// Validates every `[[ip_pools]]` entry; pools with errors are left out. A
/// range not wholly inside `allowed` (`node.allowed_external_cidrs`, when
/// not empty) is an error on the pool, so a pool never hands out an address
/// outside them.
pub(crate) fn pools(raw: &RawConfig, allowed: &[IpNet], errs: &mut Errors) -> Vec<IpPool> {
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
            for m in names::dns1123_subdomain(&p.name) {
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
        let mut listed = p.addresses.as_slice();
        if !at_most(
            &format!("{path}.addresses"),
            listed.len(),
            MAX_POOL_ADDRESSES,
            errs,
        ) {
            listed = &[];
        }
        for (j, text) in listed.iter().enumerate() {
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
                    let outside = (!external::allows_range(allowed, &r)).then(|| {
                        format!(
                            "not inside node.allowed_external_cidrs {}: a pool may hold only allowed addresses",
                            external::describe(allowed)
                        )
                    });
                    match clash.or(outside) {
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

/// With `vip_mode = "bind"` a pool's addresses must be local to this host: a
/// pool that is not all loopback gets a warning (not an error: the addresses
/// may be on an interface already).
pub(crate) fn bind_warnings(pools: &[IpPool], vip_mode: VipMode, warnings: &mut Vec<String>) {
    if vip_mode != VipMode::Bind {
        return;
    }
    for p in pools {
        let local = p
            .ranges
            .iter()
            .all(|r| r.first().is_loopback() && r.last().is_loopback());
        if !local {
            warnings.push(format!(
                "ip_pools[{}]: not a loopback range; with node.vip_mode \"bind\" its addresses must be local to this host (add them to an interface, or use vip_mode = \"freebind\" or \"interface\")",
                p.name
            ));
        }
    }
}
