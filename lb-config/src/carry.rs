//! Services carried from one good load to the next: a service made of the
//! very objects the last good load served it from (the same raw service and
//! the same `[[endpoints]]` object, shared between reads by the sources) and
//! allocated the same is served as the very same [`ServiceSpec`], not
//! resolved or copied again. One manifest added to 10,000 then resolves one
//! service, and the snapshot downstream sees 9,999 services it already holds.
//!
//! What a service is made of, and so what must be unchanged:
//! - its raw object, which validation turns into everything but the
//!   allocated fields and the endpoints (validation reads nothing else);
//! - its allocation (cluster IP, node ports, health-check node port,
//!   LoadBalancer address and pool), compared field by field, since another
//!   service's change can move it;
//! - its `[[endpoints]]` object, from which the endpoints controller takes its
//!   addresses and nothing else.
//!
//! Services with a selector depend on every pod and are resolved at every
//! load. The `[[endpoints]]` objects the last good load validated are kept
//! too (by address, the objects themselves held so no other object can take
//! the address): they are validated again only when a service that is not
//! carried needs their addresses.

use std::sync::Arc;

use lb_core::{ServiceKey, ServiceSpec};

use crate::hash::HashMap;
use crate::raw::{RawEndpoints, RawService};
use crate::resolve::HostEndpoint;
use crate::validation::{ManualEndpoints, ServiceDraft};

/// What the last good load served (see the module).
#[derive(Debug, Default)]
pub(crate) struct Carry {
    /// By the address of the raw service (held in the entry, so no other
    /// object can take the address).
    services: HashMap<usize, Carried>,
    /// Every `[[endpoints]]` object of the last good load, by address.
    endpoints: HashMap<usize, Arc<RawEndpoints>>,
}

/// A selector-less service a good load serves, and the objects it was
/// made of, for [`Carry::remember`].
pub(crate) struct MadeOf {
    pub(crate) source: Arc<RawService>,
    pub(crate) manual: Option<Arc<RawEndpoints>>,
    pub(crate) spec: Arc<ServiceSpec>,
}

/// One served service and what it was made of.
#[derive(Debug)]
struct Carried {
    source: Arc<RawService>,
    manual: Option<Arc<RawEndpoints>>,
    spec: Arc<ServiceSpec>,
    /// Its addresses given by DNS name, resolved as an overlay.
    hosts: Vec<HostEndpoint>,
}

impl Carry {
    /// Whether `e` is an `[[endpoints]]` object the last good load
    /// validated (without error, or it would not have been good).
    pub(crate) fn validated(&self, e: &Arc<RawEndpoints>) -> bool {
        self.endpoints
            .get(&(Arc::as_ptr(e) as usize))
            .is_some_and(|held| Arc::ptr_eq(held, e))
    }

    /// The service the last good load served for `d` (allocated, not yet
    /// resolved) and its host-name endpoints, when `d` is made of the very
    /// same objects, `manual` being its `[[endpoints]]` object.
    pub(crate) fn find(
        &self,
        d: &ServiceDraft,
        manual: Option<&Arc<RawEndpoints>>,
    ) -> Option<(&Arc<ServiceSpec>, &[HostEndpoint])> {
        if d.selector.is_some() {
            return None;
        }
        let source = d.source.as_ref()?;
        let c = self.services.get(&(Arc::as_ptr(source) as usize))?;
        let same_source = Arc::ptr_eq(source, &c.source);
        let same_manual = match (manual, &c.manual) {
            (None, None) => true,
            (Some(now), Some(was)) => Arc::ptr_eq(now, was),
            _ => false,
        };
        (same_source && same_manual && same_allocation(&d.spec, &c.spec))
            .then_some((&c.spec, c.hosts.as_slice()))
    }

    /// The carry after a good load: each selector-less service it serves
    /// with the raw service and `[[endpoints]]` object it was made of, the
    /// host-name endpoints of the load, and every `[[endpoints]]` object
    /// of the load.
    pub(crate) fn remember(
        made_of: Vec<MadeOf>,
        hosts: &[HostEndpoint],
        endpoints: &[ManualEndpoints],
    ) -> Carry {
        let mut by_service: HashMap<&ServiceKey, Vec<HostEndpoint>> = HashMap::default();
        for h in hosts {
            by_service.entry(&h.service).or_default().push(h.clone());
        }
        let services = made_of
            .into_iter()
            .map(|m| {
                let carried = Carried {
                    source: m.source,
                    manual: m.manual,
                    hosts: by_service.remove(&m.spec.key).unwrap_or_default(),
                    spec: m.spec,
                };
                (Arc::as_ptr(&carried.source) as usize, carried)
            })
            .collect();
        let endpoints = endpoints
            .iter()
            .map(|e| (Arc::as_ptr(&e.raw) as usize, e.raw.clone()))
            .collect();
        Carry {
            services,
            endpoints,
        }
    }
}

/// Whether allocation gave `now` what `was` was served with: the only
/// fields of a service that do not follow from its raw object.
fn same_allocation(now: &ServiceSpec, was: &ServiceSpec) -> bool {
    now.cluster_ip == was.cluster_ip
        && now.health_check_node_port == was.health_check_node_port
        && now.load_balancer_ips == was.load_balancer_ips
        && now.ip_pool == was.ip_pool
        && now.ports.len() == was.ports.len()
        && now
            .ports
            .iter()
            .zip(&was.ports)
            .all(|(a, b)| a.node_port == b.node_port)
}
