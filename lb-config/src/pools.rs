//! LoadBalancer address assignment, after validation.
//!
//! Assignment itself is lb-core's pure [`lb_core::pool::assign`]; this module
//! feeds it the validated services and the previous holdings, and writes the
//! result into the specs. Every LoadBalancer address problem (a requested
//! address outside the pools, taken, or outside its named pool; an unknown
//! or exhausted pool; a class that is not this node's) leaves that service
//! pending (no ingress, `<pending>`) with MetalLB's words, which is not an
//! error: the rest of the file applies and the service still serves its
//! cluster IP and node ports. (The pools themselves are checked in
//! `validation`.)

use lb_core::alloc::Allocations;
use lb_core::pool::{assign, Assignment, IpPool, LbRequest};
use lb_core::ServiceType;

use crate::config::PendingAddress;
use crate::validation::ServiceDraft;

/// The key of a service's LoadBalancer address in
/// [`Allocations::load_balancer_ips`].
fn lb_key(d: &ServiceDraft) -> String {
    format!("{}/{}", d.spec.key.namespace, d.spec.key.name)
}

/// Assigns LoadBalancer addresses, preferring what each service held in
/// `previous`; records the holdings in `out` and each service left pending
/// in `pending` (and logs it).
pub(crate) fn allocate(
    drafts: &mut [ServiceDraft],
    pools: &[IpPool],
    node_class: Option<&str>,
    previous: &Allocations,
    out: &mut Allocations,
    pending: &mut Vec<PendingAddress>,
) {
    let mut idx = Vec::new();
    for (i, d) in drafts.iter_mut().enumerate() {
        if d.spec.service_type != ServiceType::LoadBalancer {
            continue;
        }
        let class = d.lb.as_ref().and_then(|lb| lb.class.as_deref());
        match crate::selection::foreign_class(class, node_class) {
            None => idx.push(i),
            Some(why) => leave_pending(d, &why, pending),
        }
    }
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
            Assignment::Pending(why) => leave_pending(d, &why, pending),
        }
    }
    // File order, whichever way each was left pending.
    let order: crate::hash::HashMap<&lb_core::ServiceKey, usize> = drafts
        .iter()
        .enumerate()
        .map(|(i, d)| (&d.spec.key, i))
        .collect();
    pending.sort_by_key(|p| order.get(&p.key).copied());
}

/// Leaves `d` without an address, recording why (and logging it).
fn leave_pending(d: &mut ServiceDraft, why: &str, pending: &mut Vec<PendingAddress>) {
    tracing::info!(service = %d.spec.key, "LoadBalancer address pending: {why}");
    d.spec.load_balancer_ips = Vec::new();
    d.spec.ip_pool = String::new();
    pending.push(PendingAddress::new(d.spec.key.clone(), why));
}
