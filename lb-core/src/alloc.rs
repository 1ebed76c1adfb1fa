//! Cluster IP and node port allocators, and the store that keeps allocations
//! across reloads and restarts.
//!
//! The allocators are plain bitmaps over a range, as Kubernetes' are; what was
//! given to whom lives in [`Allocations`], which a pluggable
//! [`AllocationStore`] loads and saves (in memory here; a state file in
//! lb-config; etcd with compare-and-swap later). The error texts are the
//! Kubernetes allocator's, because users grep for them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why an address or port could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// A requested IP lies outside the range.
    #[error("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}")]
    IpNotInRange {
        /// The requested address.
        ip: IpAddr,
        /// The range, as configured.
        range: IpNet,
    },
    /// A requested IP is taken.
    #[error("provided IP is already allocated")]
    IpAllocated,
    /// A requested port lies outside the range.
    #[error("provided port is not in the valid range. The range of valid ports is {first}-{last}")]
    PortNotInRange {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// A requested port is taken.
    #[error("provided port is already allocated")]
    PortAllocated,
    /// Nothing left to give.
    #[error("range is full")]
    Full,
}

/// Hands out addresses from a CIDR, never its network or broadcast address.
#[derive(Debug, Clone)]
pub struct IpAllocator {
    range: IpNet,
    used: BTreeSet<IpAddr>,
}

impl IpAllocator {
    /// An empty allocator over `range`.
    pub fn new(range: IpNet) -> Self {
        IpAllocator {
            range,
            used: BTreeSet::new(),
        }
    }

    /// The range.
    pub fn range(&self) -> IpNet {
        self.range
    }

    /// Whether `ip` may ever be handed out: inside the range, and not its network
    /// or (IPv4) broadcast address when the prefix leaves room for hosts.
    pub fn is_valid(&self, ip: IpAddr) -> bool {
        if !self.range.contains(&ip) {
            return false;
        }
        let host_bits = self.range.max_prefix_len() - self.range.prefix_len();
        if host_bits < 2 {
            return true;
        }
        if ip == self.range.network() {
            return false;
        }
        !(matches!(self.range, IpNet::V4(_)) && ip == self.range.broadcast())
    }

    /// Takes `ip`.
    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), AllocError> {
        if !self.is_valid(ip) {
            return Err(AllocError::IpNotInRange {
                ip,
                range: self.range,
            });
        }
        if !self.used.insert(ip) {
            return Err(AllocError::IpAllocated);
        }
        Ok(())
    }

    /// Takes the lowest free address.
    pub fn allocate_next(&mut self) -> Result<IpAddr, AllocError> {
        // Walk hosts in order, skipping used ones. `hosts()` already leaves out
        // the network and broadcast addresses of IPv4 ranges.
        let found = self
            .range
            .hosts()
            .find(|ip| self.is_valid(*ip) && !self.used.contains(ip))
            .ok_or(AllocError::Full)?;
        self.used.insert(found);
        Ok(found)
    }

    /// Gives `ip` back.
    pub fn release(&mut self, ip: IpAddr) {
        self.used.remove(&ip);
    }

    /// Whether `ip` is taken.
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.used.contains(&ip)
    }
}

/// Hands out ports from an inclusive range.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    used: BTreeSet<u16>,
}

impl PortAllocator {
    /// An empty allocator over `first..=last`.
    pub fn new(first: u16, last: u16) -> Self {
        PortAllocator {
            first,
            last,
            used: BTreeSet::new(),
        }
    }

    /// The range as `(first, last)`.
    pub fn range(&self) -> (u16, u16) {
        (self.first, self.last)
    }

    /// Takes `port`.
    pub fn allocate(&mut self, port: u16) -> Result<(), AllocError> {
        if port < self.first || port > self.last {
            return Err(AllocError::PortNotInRange {
                first: self.first,
                last: self.last,
            });
        }
        if !self.used.insert(port) {
            return Err(AllocError::PortAllocated);
        }
        Ok(())
    }

    /// Takes the lowest free port.
    pub fn allocate_next(&mut self) -> Result<u16, AllocError> {
        let found = (self.first..=self.last)
            .find(|p| !self.used.contains(p))
            .ok_or(AllocError::Full)?;
        self.used.insert(found);
        Ok(found)
    }

    /// Gives `port` back.
    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    /// Whether `port` is taken.
    pub fn is_allocated(&self, port: u16) -> bool {
        self.used.contains(&port)
    }
}

/// Who holds what: the state that makes allocations stable across reloads
/// (and, saved by a store, across restarts). Keys are strings so the state
/// file is readable: `namespace/name` for cluster IPs, and
/// `namespace/name/PROTOCOL/port` for node ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    /// Cluster IP per service.
    #[serde(default)]
    pub cluster_ips: BTreeMap<String, IpAddr>,
    /// Node port per service port.
    #[serde(default)]
    pub node_ports: BTreeMap<String, u16>,
    /// Health-check node port per service.
    #[serde(default)]
    pub health_check_node_ports: BTreeMap<String, u16>,
    /// LoadBalancer address per service.
    #[serde(default)]
    pub load_balancer_ips: BTreeMap<String, IpAddr>,
}

/// Where [`Allocations`] live between builds.
pub trait AllocationStore: Send + Sync + std::fmt::Debug {
    /// The last saved allocations (empty when none were saved).
    fn load(&self) -> Result<Allocations, StoreError>;
    /// Saves allocations for the next load.
    fn save(&self, allocations: &Allocations) -> Result<(), StoreError>;
}

/// A store failed.
#[derive(Debug, thiserror::Error)]
#[error("allocation store {location}: {message}")]
pub struct StoreError {
    /// Where (a path, a key).
    pub location: String,
    /// What went wrong.
    pub message: String,
}

/// A store in memory: stable across reloads, not across restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Allocations>,
}

impl AllocationStore for MemoryStore {
    fn load(&self) -> Result<Allocations, StoreError> {
        Ok(self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
    fn save(&self, allocations: &Allocations) -> Result<(), StoreError> {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = allocations.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allocated_ips_skip_network_and_broadcast() {
        let mut a = IpAllocator::new("127.96.0.0/30".parse().unwrap());
        assert_eq!(
            a.allocate_next().unwrap(),
            "127.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            a.allocate_next().unwrap(),
            "127.96.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(a.allocate_next(), Err(AllocError::Full));
        assert!(matches!(
            a.allocate("127.96.0.3".parse().unwrap()),
            Err(AllocError::IpNotInRange { .. })
        ));
    }

    #[test]
    fn error_texts_match_kubernetes() {
        let mut a = IpAllocator::new("10.96.0.0/12".parse().unwrap());
        let e = a.allocate("127.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the provided IP (127.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        );
        a.allocate("10.96.0.10".parse().unwrap()).unwrap();
        assert_eq!(
            a.allocate("10.96.0.10".parse().unwrap())
                .unwrap_err()
                .to_string(),
            "provided IP is already allocated"
        );
        let mut p = PortAllocator::new(30000, 32767);
        assert_eq!(
            p.allocate(80).unwrap_err().to_string(),
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
        p.allocate(30001).unwrap();
        assert_eq!(
            p.allocate(30001).unwrap_err().to_string(),
            "provided port is already allocated"
        );
    }

    proptest! {
        #[test]
        fn ip_allocations_are_unique_and_never_network_or_broadcast(prefix in 24u8..31, n in 0usize..300) {
            let range: IpNet = format!("127.96.0.0/{prefix}").parse().unwrap();
            let mut a = IpAllocator::new(range);
            let mut seen = BTreeSet::new();
            for _ in 0..n {
                match a.allocate_next() {
                    Ok(ip) => {
                        prop_assert!(seen.insert(ip));
                        prop_assert!(ip != range.network() && ip != range.broadcast());
                        prop_assert!(range.contains(&ip));
                    }
                    Err(e) => {
                        prop_assert_eq!(e, AllocError::Full);
                        prop_assert_eq!(seen.len() as u32, (1u32 << (32 - prefix)) - 2);
                    }
                }
            }
        }

        #[test]
        fn port_allocations_are_unique_and_in_range(first in 30000u16..30010, len in 0u16..50, n in 0usize..80) {
            let last = first + len;
            let mut a = PortAllocator::new(first, last);
            let mut seen = BTreeSet::new();
            for _ in 0..n {
                if let Ok(p) = a.allocate_next() {
                    prop_assert!(seen.insert(p));
                    prop_assert!((first..=last).contains(&p));
                }
            }
            prop_assert_eq!(seen.len(), n.min(len as usize + 1));
        }
    }
}
