//! `status.conditions` of each service in `/api/v1/services`, in Kubernetes'
//! `metav1.Condition` shape: `LoadBalancerAssigned` (LoadBalancer services
//! only), `FrontendsBound` and `EndpointsAvailable`, each `True` or `False`
//! with a reason, a message and a `lastTransitionTime` that moves only when
//! the status does ([`Transitions`] remembers it).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use lb_core::health::PodKey;
use lb_core::{ServiceEntry, ServiceKey, ServiceType};
use serde::{Deserialize, Serialize};

use super::services::BindErrorView;
use super::time::format_rfc3339;

/// `LoadBalancerAssigned`: a LoadBalancer service holds its pool address.
pub const LOAD_BALANCER_ASSIGNED: &str = "LoadBalancerAssigned";
/// `FrontendsBound`: the data plane listens on every frontend of the service.
pub const FRONTENDS_BOUND: &str = "FrontendsBound";
/// `EndpointsAvailable`: the service has a ready endpoint.
pub const ENDPOINTS_AVAILABLE: &str = "EndpointsAvailable";

/// One condition, as Kubernetes' `metav1.Condition` (its JSON field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// `LoadBalancerAssigned`, `FrontendsBound` or `EndpointsAvailable`.
    #[serde(rename = "type")]
    pub condition_type: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in one CamelCase word.
    pub(super) reason: String,
    /// Why, for people.
    pub(super) message: String,
    /// When the status last changed, RFC 3339 in UTC.
    #[serde(rename = "lastTransitionTime")]
    pub last_transition_time: String,
}

/// `status` of a service view: its conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceStatus {
    /// The conditions, in the order above.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// What a condition is made of before it is stamped with a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Observed {
    /// The condition type.
    pub(super) condition_type: &'static str,
    /// `True`, `False` or `Unknown`.
    pub(super) status: &'static str,
    /// Reason.
    pub(super) reason: String,
    /// Message.
    pub(super) message: String,
}

/// What is known about a service's frontends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Frontends<'a> {
    /// The data plane's bind errors for this service (empty: all listen).
    Bound(&'a [BindErrorView]),
    /// No data plane is looking (`describe --config`).
    Unknown,
}

/// The conditions of `entry`: `pending` is MetalLB's AllocationFailed
/// message when its LoadBalancer address is pending.
pub(super) fn observe(
    entry: &ServiceEntry,
    pending: Option<&str>,
    frontends: Frontends,
) -> Vec<Observed> {
    let spec = &entry.spec;
    let mut out = Vec::new();
    if spec.service_type == ServiceType::LoadBalancer {
        out.push(match pending {
            Some(message) => Observed {
                condition_type: LOAD_BALANCER_ASSIGNED,
                status: "False",
                reason: lb_config::PendingAddress::ALLOCATION_FAILED.to_string(),
                message: message.to_string(),
            },
            None if spec.load_balancer_ips.is_empty() => Observed {
                condition_type: LOAD_BALANCER_ASSIGNED,
                status: "False",
                reason: "Pending".to_string(),
                message: "no address assigned".to_string(),
            },
            None => {
                let ips: Vec<String> = spec
                    .load_balancer_ips
                    .iter()
                    .map(|ip| format!("{:?}", ip.to_string()))
                    .collect();
                Observed {
                    condition_type: LOAD_BALANCER_ASSIGNED,
                    status: "True",
                    // MetalLB's event when it assigns one.
                    reason: "IPAllocated".to_string(),
                    message: format!("Assigned IP [{}]", ips.join(" ")),
                }
            }
        });
    }
    out.push(match frontends {
        Frontends::Unknown => Observed {
            condition_type: FRONTENDS_BOUND,
            status: "Unknown",
            reason: "NoDataPlane".to_string(),
            message: "only a running proxy knows whether its listeners are bound".to_string(),
        },
        Frontends::Bound([]) => Observed {
            condition_type: FRONTENDS_BOUND,
            status: "True",
            reason: "Bound".to_string(),
            message: "every frontend of the service listens".to_string(),
        },
        Frontends::Bound(errors) => Observed {
            condition_type: FRONTENDS_BOUND,
            status: "False",
            reason: "BindFailed".to_string(),
            message: errors
                .iter()
                .map(|e| format!("listen {}/{}: {}", e.address, e.protocol, e.error))
                .collect::<Vec<_>>()
                .join("; "),
        },
    });
    if spec.service_type != ServiceType::ExternalName {
        let (mut ready, mut total) = (0usize, 0usize);
        for port in &entry.ports {
            for e in port.endpoints() {
                total += 1;
                ready += usize::from(e.ready);
            }
        }
        out.push(if ready > 0 {
            Observed {
                condition_type: ENDPOINTS_AVAILABLE,
                status: "True",
                reason: "EndpointsReady".to_string(),
                message: format!("{ready} of {total} endpoints ready"),
            }
        } else if total == 0 {
            Observed {
                condition_type: ENDPOINTS_AVAILABLE,
                status: "False",
                reason: "NoEndpoints".to_string(),
                message: "the service has no endpoints".to_string(),
            }
        } else {
            Observed {
                condition_type: ENDPOINTS_AVAILABLE,
                status: "False",
                reason: "NoReadyEndpoints".to_string(),
                message: format!("none of {total} endpoints is ready"),
            }
        });
    }
    out
}

/// When each service's conditions last changed status: a condition seen
/// with the status it had keeps its time, one seen with another status (or
/// for the first time) takes the time it is seen. Services that are gone
/// are forgotten.
/// It also remembers when each pod was first seen, the AGE of `get pods`
/// (lb learns pods from its sources and has no creation time for them).
#[derive(Debug, Default)]
pub struct Transitions {
    seen: Mutex<HashMap<ServiceKey, Vec<Slot>>>,
    pods: Mutex<HashMap<PodKey, SystemTime>>,
}

/// One condition of a service as last seen: its type, its status, since
/// when.
type Slot = (&'static str, &'static str, SystemTime);

impl Transitions {
    /// When each pod of `pods` was first seen (`now` for a new one); pods
    /// not in `pods` are forgotten.
    pub(super) fn pods_seen(&self, pods: &[PodKey], now: SystemTime) -> Vec<SystemTime> {
        let present: HashSet<&PodKey> = pods.iter().collect();
        let mut seen = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|key, _| present.contains(key));
        pods.iter()
            .map(|key| *seen.entry(key.clone()).or_insert(now))
            .collect()
    }

    /// Stamps the conditions of every service in `observed` (seen at `now`),
    /// in its order, and forgets services not in it. A service's key is
    /// looked up, not copied, unless it is new: `/api/v1/services` stamps
    /// every service at each request.
    pub(super) fn stamp(
        &self,
        observed: Vec<(&ServiceKey, Vec<Observed>)>,
        now: SystemTime,
    ) -> Vec<ServiceStatus> {
        let keys: Vec<&ServiceKey> = observed.iter().map(|(key, _)| *key).collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let statuses = observed
            .into_iter()
            .map(|(key, conditions)| match seen.get_mut(key) {
                Some(slots) => stamp_service(slots, conditions, now),
                None => {
                    let mut slots = Vec::new();
                    let status = stamp_service(&mut slots, conditions, now);
                    seen.insert(key.clone(), slots);
                    status
                }
            })
            .collect();
        // Every key observed is in `seen` now: more means some are gone.
        if seen.len() > keys.len() {
            let present: HashSet<&ServiceKey> = keys.into_iter().collect();
            seen.retain(|key, _| present.contains(key));
        }
        statuses
    }
}

/// Stamps one service's `conditions` against its `slots` (updated: a
/// condition with another status than before, or new, takes `now`).
fn stamp_service(
    slots: &mut Vec<Slot>,
    conditions: Vec<Observed>,
    now: SystemTime,
) -> ServiceStatus {
    let conditions = conditions
        .into_iter()
        .map(|o| {
            let since = match slots.iter_mut().find(|s| s.0 == o.condition_type) {
                Some(slot) => {
                    if slot.1 != o.status {
                        *slot = (o.condition_type, o.status, now);
                    }
                    slot.2
                }
                None => {
                    slots.push((o.condition_type, o.status, now));
                    now
                }
            };
            stamped(o, since)
        })
        .collect();
    ServiceStatus { conditions }
}

/// `o` with its time.
pub(super) fn stamped(o: Observed, at: SystemTime) -> Condition {
    Condition {
        condition_type: o.condition_type.to_string(),
        status: o.status.to_string(),
        reason: o.reason,
        message: o.message,
        last_transition_time: format_rfc3339(at),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn endpoints(status: &'static str) -> Observed {
        Observed {
            condition_type: ENDPOINTS_AVAILABLE,
            status,
            reason: String::new(),
            message: String::new(),
        }
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let t = Transitions::default();
        let key = ServiceKey::new("default", "web");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |status, when| {
            let out = t.stamp(vec![(&key, vec![endpoints(status)])], when);
            out[0].conditions[0].last_transition_time.clone()
        };
        let first = at("False", t0);
        assert_eq!(at("False", t0 + Duration::from_secs(10)), first);
        let turned = at("True", t0 + Duration::from_secs(20));
        assert_ne!(turned, first);
        assert_eq!(at("True", t0 + Duration::from_secs(30)), turned);
    }

    #[test]
    fn a_service_gone_and_back_starts_its_conditions_afresh() {
        let t = Transitions::default();
        let (web, db) = (
            ServiceKey::new("default", "web"),
            ServiceKey::new("default", "db"),
        );
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t1 = t0 + Duration::from_secs(10);
        let t2 = t0 + Duration::from_secs(20);
        let both = |when| {
            let out = t.stamp(
                vec![
                    (&web, vec![endpoints("True")]),
                    (&db, vec![endpoints("True")]),
                ],
                when,
            );
            out.into_iter()
                .map(|s| s.conditions[0].last_transition_time.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(both(t0), [format_rfc3339(t0), format_rfc3339(t0)]);
        // db is gone for one stamp: forgotten, then new again.
        t.stamp(vec![(&web, vec![endpoints("True")])], t1);
        assert_eq!(both(t2), [format_rfc3339(t0), format_rfc3339(t2)]);
    }
}
