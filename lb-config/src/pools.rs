//! LoadBalancer address assignment, after validation.
//!
//! Assignment itself is lb-core's pure [`lb_core::pool::assign`]; this module
//! feeds it the validated services and the previous holdings, and writes the
//! result into the specs. A requested address that is taken, or an exhausted
//! pool, leaves the service pending (no ingress, `<pending>`), which is not an
//! error: the service still serves its cluster IP and node ports. (The pools
//! themselves, and a requested address outside every pool, are checked in
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
    previous: &Allocations,
    out: &mut Allocations,
    pending: &mut Vec<PendingAddress>,
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
                pending.push(PendingAddress::new(d.spec.key.clone(), &why));
            }
        }
    }
}
