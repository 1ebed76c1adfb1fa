//! Cluster IP and node port allocators, and the store that keeps allocations
//! across reloads and restarts.
//!
//! The allocators are sets over a range, as Kubernetes' bitmaps are, and pick
//! dynamic values the way Kubernetes does: the range is split into a lower
//! band kept for explicit requests (min(max(16, size/16), 256) addresses;
//! min(max(16, size/32), 128) ports) and an upper band that is scanned first,
//! from a pseudo-random start, then the lower band. The start is derived from
//! the caller's [`spread`] of a name, not from a random generator, so the same
//! set of services gets the same values after a restart. What was
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

    /// The dynamic part of the range as `(first, count)`: the addresses
    /// Kubernetes' bitmap covers (network and IPv4 broadcast left out; IPv6
    /// capped at 65535 addresses, as Kubernetes caps its bitmap).
    fn dynamic(&self) -> (u128, u128) {
        let host_bits = u32::from(self.range.max_prefix_len() - self.range.prefix_len());
        let size = if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        let network = ip_to_u128(self.range.network());
        if host_bits < 2 {
            return (network, size);
        }
        match self.range {
            IpNet::V4(_) => (network + 1, size - 2),
            IpNet::V6(_) => (network + 1, size.min(65536) - 1),
        }
    }

    /// Takes a free address: from the upper band first, starting at a point
    /// chosen by `pick` (see [`spread`]), then from the lower band, which is
    /// kept for explicit requests while the upper band has room.
    pub fn allocate_next(&mut self, pick: u64) -> Result<IpAddr, AllocError> {
        let (first, count) = self.dynamic();
        let size = 1u128
            .checked_shl(u32::from(
                self.range.max_prefix_len() - self.range.prefix_len(),
            ))
            .unwrap_or(u128::MAX);
        let lower = range_offset(size, 16, 256, 16).min(count);
        let v6 = matches!(self.range, IpNet::V6(_));
        let found = scan(lower, count, pick, |at| {
            let ip = u128_to_ip(first + at, v6);
            !self.used.contains(&ip)
        })
        .ok_or(AllocError::Full)?;
        let ip = u128_to_ip(first + found, v6);
        self.used.insert(ip);
        Ok(ip)
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

    /// Takes a free port: from the upper band first, starting at a point
    /// chosen by `pick` (see [`spread`]), then from the lower band, which is
    /// kept for explicit requests while the upper band has room.
    pub fn allocate_next(&mut self, pick: u64) -> Result<u16, AllocError> {
        if self.first > self.last {
            return Err(AllocError::Full);
        }
        let count = u128::from(self.last - self.first) + 1;
        let lower = range_offset(count, 16, 128, 32);
        let first = self.first;
        let found = scan(lower, count, pick, |at| {
            !self.used.contains(&(first + at as u16))
        })
        .ok_or(AllocError::Full)?;
        let port = first + found as u16;
        self.used.insert(port);
        Ok(port)
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

/// Kubernetes' `calculateRangeOffset`: the size of the lower band kept for
/// explicit requests, `min(max(min, size/step), max)`, and none for a range
/// of `min` values or fewer.
fn range_offset(size: u128, min: u128, max: u128, step: u128) -> u128 {
    if size <= min {
        return 0;
    }
    (size / step).clamp(min, max)
}

/// Kubernetes' random scan with offset: the first free index of the upper
/// band `lower..count` from a start derived from `pick`, wrapping around;
/// then likewise in the lower band `0..lower`.
fn scan(lower: u128, count: u128, pick: u64, free: impl Fn(u128) -> bool) -> Option<u128> {
    let upper = count.saturating_sub(lower);
    if upper > 0 {
        let start = u128::from(pick) % upper;
        if let Some(i) = (0..upper).find(|i| free(lower + (start + i) % upper)) {
            return Some(lower + (start + i) % upper);
        }
    }
    if lower > 0 {
        let start = u128::from(mix(pick)) % lower;
        return (0..lower).map(|i| (start + i) % lower).find(|at| free(*at));
    }
    None
}

/// A well-spread 64-bit value for `name` under `seed`: where dynamic
/// allocation starts its scan. A fixed function (FNV-1a, then a SplitMix64
/// finaliser), not std's hasher, whose output may change between Rust
/// releases: the same seed and name must give the same start after an
/// upgrade, or a restart without a state file would renumber services.
pub fn spread(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn u128_to_ip(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4((n as u32).into())
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
        let got: BTreeSet<IpAddr> = [a.allocate_next(7).unwrap(), a.allocate_next(7).unwrap()]
            .into_iter()
            .collect();
        let want: BTreeSet<IpAddr> = ["127.96.0.1", "127.96.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
        assert_eq!(a.allocate_next(7), Err(AllocError::Full));
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

    #[test]
    fn the_lower_band_follows_kubernetes_sizes() {
        assert_eq!(range_offset(16, 16, 256, 16), 0, "a /28 keeps no band");
        assert_eq!(range_offset(256, 16, 256, 16), 16, "a /24");
        assert_eq!(range_offset(1 << 16, 16, 256, 16), 256, "a /16 and larger");
        assert_eq!(range_offset(2768, 16, 128, 32), 86, "30000-32767");
        assert_eq!(range_offset(100, 16, 128, 32), 16);
        assert_eq!(range_offset(1 << 16, 16, 128, 32), 128);
    }

    #[test]
    fn the_same_seed_and_name_give_the_same_start_and_others_spread() {
        assert_eq!(spread(0, "default/web"), spread(0, "default/web"));
        assert_ne!(spread(0, "default/web"), spread(1, "default/web"));
        assert_ne!(spread(0, "default/web"), spread(0, "default/api"));
    }

    #[test]
    fn ipv6_ranges_allocate_inside_the_range() {
        let range: IpNet = "fd00:96::/108".parse().unwrap();
        let mut a = IpAllocator::new(range);
        for i in 0..100 {
            let ip = a.allocate_next(spread(0, &i.to_string())).unwrap();
            assert!(a.is_valid(ip), "{ip}");
        }
    }

    proptest! {
        /// While the upper band has room, dynamic values stay out of the
        /// lower band, so every explicit request there still succeeds.
        #[test]
        fn dynamic_ips_leave_the_lower_band_to_explicit_requests(
            prefix in 20u8..28, seed in any::<u64>(), fill in 0.0f64..1.0, request in any::<u32>()
        ) {
            let range: IpNet = format!("127.96.0.0/{prefix}").parse().unwrap();
            let size = 1u128 << (32 - prefix);
            let lower = range_offset(size, 16, 256, 16);
            let upper = size - 2 - lower;
            let mut a = IpAllocator::new(range);
            let n = (upper as f64 * fill) as usize;
            for i in 0..n {
                let ip = a.allocate_next(spread(seed, &i.to_string())).unwrap();
                prop_assert!(ip_to_u128(ip) - ip_to_u128(range.network()) > lower, "{} in the lower band", ip);
            }
            let wanted = u128_to_ip(ip_to_u128(range.network()) + 1 + u128::from(request) % lower, false);
            prop_assert_eq!(a.allocate(wanted), Ok(()));
        }

        #[test]
        fn dynamic_ports_leave_the_lower_band_to_explicit_requests(
            len in 20u16..3000, seed in any::<u64>(), fill in 0.0f64..1.0, request in any::<u16>()
        ) {
            let (first, last) = (30000u16, 30000 + len - 1);
            let lower = range_offset(u128::from(len), 16, 128, 32) as u16;
            let mut a = PortAllocator::new(first, last);
            let n = (f64::from(len - lower) * fill) as usize;
            for i in 0..n {
                let p = a.allocate_next(spread(seed, &i.to_string())).unwrap();
                prop_assert!(p >= first + lower, "{} in the lower band", p);
            }
            prop_assert_eq!(a.allocate(first + request % lower), Ok(()));
        }

        /// Values already taken are never handed out again, whatever the
        /// pick, until the range is full.
        #[test]
        fn taken_values_are_never_handed_out(taken in proptest::collection::btree_set(30000u16..30100, 0..100), seed in any::<u64>()) {
            let mut a = PortAllocator::new(30000, 30099);
            for p in &taken {
                a.allocate(*p).unwrap();
            }
            for i in 0..(100 - taken.len()) {
                let p = a.allocate_next(spread(seed, &i.to_string())).unwrap();
                prop_assert!(!taken.contains(&p));
            }
            prop_assert_eq!(a.allocate_next(seed), Err(AllocError::Full));
        }

        #[test]
        fn ip_allocations_are_unique_and_never_network_or_broadcast(prefix in 24u8..31, n in 0usize..300, seed in any::<u64>()) {
            let range: IpNet = format!("127.96.0.0/{prefix}").parse().unwrap();
            let mut a = IpAllocator::new(range);
            let mut seen = BTreeSet::new();
            for i in 0..n {
                match a.allocate_next(spread(seed, &i.to_string())) {
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
        fn port_allocations_are_unique_and_in_range(first in 30000u16..30010, len in 0u16..50, n in 0usize..80, seed in any::<u64>()) {
            let last = first + len;
            let mut a = PortAllocator::new(first, last);
            let mut seen = BTreeSet::new();
            for i in 0..n {
                if let Ok(p) = a.allocate_next(spread(seed, &i.to_string())) {
                    prop_assert!(seen.insert(p));
                    prop_assert!((first..=last).contains(&p));
                }
            }
            prop_assert_eq!(seen.len(), n.min(len as usize + 1));
        }
    }
}
