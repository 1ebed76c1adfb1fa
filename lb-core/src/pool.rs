//! LoadBalancer address pools (MetalLB's `IPAddressPool`) and the pure
//! assignment of their addresses to LoadBalancer services.
//!
//! Assignment is a function of the pools, the requests and who held what
//! before, so it is stable across reloads and restarts (the previous holdings
//! come from [`crate::alloc::Allocations::load_balancer_ips`]) and testable
//! without sockets. Its rules follow MetalLB's allocator:
//!
//! 1. a service keeps the address it held before while that address is still
//!    acceptable (in its pool, requested if it requests one, not taken);
//! 2. a service that requests an address gets it when it is in a pool, free
//!    (or may be shared) and in its named pool, else it is *pending*
//!    (MetalLB does not steal an address, and an address outside the pools
//!    blocks only its own service);
//! 3. the others get the first free or shareable address of their pool, or of
//!    the auto-assign pools in order; an exhausted pool leaves them pending.
//!
//! Sharing (`allow_shared_ip`): services with the same non-empty key may hold
//! one address when none of their (protocol, port) pairs collide.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::model::Protocol;

/// Why a pool's address text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Neither a CIDR nor a `FIRST-LAST` range.
    #[error("must be a CIDR (e.g. 192.168.10.0/24) or a range FIRST-LAST (e.g. 192.168.10.10-192.168.10.20)")]
    Malformed,
    /// A range whose ends are of two families.
    #[error("the range mixes IPv4 and IPv6")]
    MixedFamilies,
    /// A range whose first address is after its last.
    #[error("the first address of the range is after the last")]
    Reversed,
}

/// An inclusive range of addresses of one family: a pool's `addresses` entry
/// (`a-b`, or a CIDR, which covers every address of the prefix, as in MetalLB
/// without `avoidBuggyIPs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    first: IpAddr,
    last: IpAddr,
}

impl IpRange {
    /// A range from `first` to `last`, both included.
    pub fn new(first: IpAddr, last: IpAddr) -> Result<IpRange, PoolError> {
        if first.is_ipv4() != last.is_ipv4() {
            return Err(PoolError::MixedFamilies);
        }
        if first > last {
            return Err(PoolError::Reversed);
        }
        Ok(IpRange { first, last })
    }

    /// Parses `FIRST-LAST`, a CIDR or a single address.
    pub fn parse(text: &str) -> Result<IpRange, PoolError> {
        let text = text.trim();
        if let Some((a, b)) = text.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| PoolError::Malformed)?;
            let b: IpAddr = b.trim().parse().map_err(|_| PoolError::Malformed)?;
            return IpRange::new(a, b);
        }
        if text.contains('/') {
            let net: IpNet = text.parse().map_err(|_| PoolError::Malformed)?;
            let net = net.trunc();
            return IpRange::new(net.network(), net.broadcast());
        }
        let ip: IpAddr = text.parse().map_err(|_| PoolError::Malformed)?;
        IpRange::new(ip, ip)
    }

    /// First address.
    pub fn first(&self) -> IpAddr {
        self.first
    }

    /// Last address.
    pub fn last(&self) -> IpAddr {
        self.last
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4() && self.first <= ip && ip <= self.last
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.first.is_ipv4() == other.first.is_ipv4()
            && self.first <= other.last
            && other.first <= self.last
    }

    /// The addresses in order, lazily (an IPv6 /64 is never materialised).
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.first.is_ipv4();
        let (a, b) = (to_u128(self.first), to_u128(self.last));
        (a..=b).map(move |n| from_u128(n, v4))
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// A validated `[[ip_pools]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPool {
    /// Pool name, what a service's `ip_pool` names.
    pub name: String,
    /// Its addresses, in file order.
    pub ranges: Vec<IpRange>,
    /// Whether services that name no pool may take addresses from it.
    pub auto_assign: bool,
}

impl IpPool {
    /// Whether `ip` belongs to the pool.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Every address of the pool, in order of its ranges.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ranges.iter().flat_map(|r| r.iter())
    }
}

/// What one LoadBalancer service asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbRequest {
    /// Stable identity (`namespace/name`): the key of previous holdings.
    pub key: String,
    /// `load_balancer_ip`, if given; one outside every pool leaves the
    /// service pending, as MetalLB does.
    pub requested: Option<IpAddr>,
    /// `ip_pool`, if given; an unknown pool leaves the service pending.
    pub pool: Option<String>,
    /// `allow_shared_ip`; empty = never shares.
    pub sharing_key: String,
    /// The service's (protocol, port) pairs: sharing services must not collide.
    pub ports: Vec<(Protocol, u16)>,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// The service has `ip`, from pool `pool`.
    Assigned {
        /// The address.
        ip: IpAddr,
        /// The pool it came from.
        pool: String,
    },
    /// No address: kubectl shows `<pending>`. The text says why in MetalLB's
    /// allocator's words (`"IP" is not allowed in config`, `no available IPs
    /// in pool "NAME"`, ...): the `WHY` of its `AllocationFailed` event.
    Pending(String),
}

impl Assignment {
    /// The address, if assigned.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Assignment::Assigned { ip, .. } => Some(*ip),
            Assignment::Pending(_) => None,
        }
    }
}

/// Who holds an address (indices into the requests).
#[derive(Debug, Default)]
struct Holders {
    by_ip: BTreeMap<IpAddr, Vec<usize>>,
}

impl Holders {
    /// Whether request `i` may take `ip` beside its current holders.
    fn admits(&self, requests: &[LbRequest], i: usize, ip: IpAddr) -> bool {
        self.refusal(requests, i, ip).is_none()
    }

    /// Why request `i` may not take `ip` beside its current holders, in
    /// MetalLB's allocator's words (`Allocator.Assign`): holders that do not
    /// share with it (`can't change sharing key for "NS/NAME", address also
    /// in use by NS/OTHER`), or a port one of them uses already (`port
    /// TCP/80 is already in use on "IP"`). `None` when it may.
    fn refusal(&self, requests: &[LbRequest], i: usize, ip: IpAddr) -> Option<String> {
        let holders = self.by_ip.get(&ip).filter(|h| !h.is_empty())?;
        let me = &requests[i];
        let shares = |h: &usize| {
            let other = &requests[*h];
            !me.sharing_key.is_empty() && other.sharing_key == me.sharing_key
        };
        if !holders.iter().all(shares) {
            let mut others: Vec<&str> = holders.iter().map(|&h| requests[h].key.as_str()).collect();
            others.sort_unstable();
            others.dedup();
            return Some(format!(
                "can't change sharing key for \"{}\", address also in use by {}",
                me.key,
                others.join(",")
            ));
        }
        let taken = me
            .ports
            .iter()
            .find(|p| holders.iter().any(|&h| requests[h].ports.contains(p)))?;
        Some(format!(
            "port {}/{} is already in use on \"{ip}\"",
            taken.0, taken.1
        ))
    }

    fn take(&mut self, i: usize, ip: IpAddr) {
        self.by_ip.entry(ip).or_default().push(i);
    }
}

/// The pools a request may draw from: its named pool, else every auto-assign pool.
fn eligible<'a>(pools: &'a [IpPool], r: &'a LbRequest) -> impl Iterator<Item = &'a IpPool> + 'a {
    pools.iter().filter(move |p| match &r.pool {
        Some(name) => &p.name == name,
        None => p.auto_assign,
    })
}

/// The pool an address may come from for request `r`, if any. A requested
/// address may come from any pool (MetalLB honours `loadBalancerIP` in a
/// pool with `autoAssign` off) unless `ip_pool` names one.
fn pool_of<'a>(pools: &'a [IpPool], r: &LbRequest, ip: IpAddr) -> Option<&'a IpPool> {
    pools
        .iter()
        .filter(|p| r.pool.as_ref().is_none_or(|n| &p.name == n))
        .find(|p| p.contains(ip))
}

/// Assigns addresses to `requests` (one result per request, same order),
/// preferring what each held in `previous` (keyed by [`LbRequest::key`]).
///
/// The search for a free address skips at most the addresses already held, so
/// it stays bounded by the number of services even in an IPv6 /64.
pub fn assign(
    pools: &[IpPool],
    requests: &[LbRequest],
    previous: &BTreeMap<String, IpAddr>,
) -> Vec<Assignment> {
    let mut out: Vec<Option<Assignment>> = vec![None; requests.len()];
    let mut holders = Holders::default();
    let grant = |out: &mut [Option<Assignment>],
                 i: usize,
                 ip: IpAddr,
                 pool: &IpPool,
                 holders: &mut Holders| {
        holders.take(i, ip);
        out[i] = Some(Assignment::Assigned {
            ip,
            pool: pool.name.clone(),
        });
    };

    // 1. Keep what was held, if still acceptable.
    for (i, r) in requests.iter().enumerate() {
        let Some(&ip) = previous.get(&r.key) else {
            continue;
        };
        if r.requested.is_some_and(|want| want != ip) {
            continue;
        }
        let pool = if r.requested.is_some() {
            pool_of(pools, r, ip)
        } else {
            eligible(pools, r).find(|p| p.contains(ip))
        };
        if let Some(pool) = pool {
            if holders.admits(requests, i, ip) {
                grant(&mut out, i, ip, pool, &mut holders);
            }
        }
    }
    // 2. Requested addresses, checked in the order of MetalLB's
    //    `allocateIPs`: the address must be in a pool, free (or shareable),
    //    and in the named pool when one is named.
    for (i, r) in requests.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let Some(ip) = r.requested else { continue };
        let why = if !pools.iter().any(|p| p.contains(ip)) {
            format!("\"{ip}\" is not allowed in config")
        } else if let Some(refusal) = holders.refusal(requests, i, ip) {
            refusal
        } else if let Some(pool) = pool_of(pools, r, ip) {
            grant(&mut out, i, ip, pool, &mut holders);
            continue;
        } else {
            let name = r.pool.as_deref().unwrap_or_default();
            format!(
                "requested loadBalancer IP(s) [\"{ip}\"] is not compatible with requested address pool {name}"
            )
        };
        out[i] = Some(Assignment::Pending(why));
    }
    // 3. The first free (or shareable) address of an eligible pool.
    for (i, r) in requests.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        // Bounded: every address skipped is held by some request.
        let found = eligible(pools, r).find_map(|pool| {
            pool.addresses()
                .find(|ip| holders.admits(requests, i, *ip))
                .map(|ip| (ip, pool))
        });
        match found {
            Some((ip, pool)) => grant(&mut out, i, ip, pool, &mut holders),
            None => {
                // MetalLB's `AllocateFromPool` and `Allocate`. (With no
                // pool at all MetalLB records no event; lb says the same
                // as for pools that are full, so every pending service has
                // a reason.)
                let what = match &r.pool {
                    Some(name) if !pools.iter().any(|p| &p.name == name) => {
                        format!("unknown pool \"{name}\"")
                    }
                    Some(name) => format!("no available IPs in pool \"{name}\""),
                    None => "no available IPs".to_string(),
                };
                out[i] = Some(Assignment::Pending(what));
            }
        }
    }
    out.into_iter()
        .map(|a| a.unwrap_or_else(|| Assignment::Pending("not assigned".into())))
        .collect()
}

/// Addresses that are in use by exactly the given assignments (for checks).
pub fn assigned_ips(assignments: &[Assignment]) -> BTreeSet<IpAddr> {
    assignments.iter().filter_map(Assignment::ip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ip;
    use proptest::prelude::*;

    fn pool(name: &str, ranges: &[&str], auto_assign: bool) -> IpPool {
        IpPool {
            name: name.into(),
            ranges: ranges.iter().map(|r| IpRange::parse(r).unwrap()).collect(),
            auto_assign,
        }
    }

    fn req(key: &str) -> LbRequest {
        LbRequest {
            key: key.into(),
            requested: None,
            pool: None,
            sharing_key: String::new(),
            ports: vec![(Protocol::Tcp, 80)],
        }
    }

    fn ips(a: &[Assignment]) -> Vec<Option<IpAddr>> {
        a.iter().map(Assignment::ip).collect()
    }

    #[test]
    fn ranges_parse_as_ranges_cidrs_and_single_addresses() {
        let r = IpRange::parse("192.168.122.110-192.168.122.119").unwrap();
        assert_eq!(r.iter().count(), 10);
        let c = IpRange::parse("10.0.9.0/28").unwrap();
        assert_eq!((c.first(), c.last()), (ip("10.0.9.0"), ip("10.0.9.15")));
        assert_eq!(IpRange::parse("fd00::5").unwrap().iter().count(), 1);
        assert_eq!(
            IpRange::parse("10.0.0.1-fd00::1"),
            Err(PoolError::MixedFamilies)
        );
        assert_eq!(
            IpRange::parse("10.0.0.9-10.0.0.1"),
            Err(PoolError::Reversed)
        );
        assert_eq!(IpRange::parse("nope"), Err(PoolError::Malformed));
        assert!(r.overlaps(&IpRange::parse("192.168.122.119/32").unwrap()));
        assert!(!r.overlaps(&c));
    }

    #[test]
    fn assigns_the_first_free_address_of_an_auto_assign_pool() {
        let pools = [
            pool("off", &["127.0.9.1-127.0.9.5"], false),
            pool("on", &["127.0.122.110-127.0.122.119"], true),
        ];
        let got = assign(&pools, &[req("a/x"), req("a/y")], &BTreeMap::new());
        assert_eq!(
            got[0],
            Assignment::Assigned {
                ip: ip("127.0.122.110"),
                pool: "on".into()
            }
        );
        assert_eq!(got[1].ip(), Some(ip("127.0.122.111")));
    }

    #[test]
    fn a_named_pool_is_used_even_without_auto_assign() {
        let pools = [
            pool("on", &["127.0.122.110-127.0.122.119"], true),
            pool("off", &["127.0.9.1-127.0.9.5"], false),
        ];
        let mut r = req("a/x");
        r.pool = Some("off".into());
        assert_eq!(
            ips(&assign(&pools, &[r], &BTreeMap::new())),
            [Some(ip("127.0.9.1"))]
        );
    }

    #[test]
    fn without_auto_assign_pools_an_unnamed_request_is_pending() {
        let pools = [pool("off", &["127.0.9.1-127.0.9.5"], false)];
        let got = assign(&pools, &[req("a/x")], &BTreeMap::new());
        assert_eq!(got[0], Assignment::Pending("no available IPs".into()));
        // ...but a requested address in that pool is honoured.
        let mut r = req("a/x");
        r.requested = Some(ip("127.0.9.3"));
        assert_eq!(
            ips(&assign(&pools, &[r], &BTreeMap::new())),
            [Some(ip("127.0.9.3"))]
        );
    }

    #[test]
    fn requested_address_held_by_another_service_leaves_it_pending() {
        let pools = [pool("p", &["127.0.122.110-127.0.122.119"], true)];
        let mut a = req("a/x");
        a.requested = Some(ip("127.0.122.115"));
        let mut b = req("a/y");
        b.requested = Some(ip("127.0.122.115"));
        let got = assign(&pools, &[a.clone(), b.clone()], &BTreeMap::new());
        assert_eq!(got[0].ip(), Some(ip("127.0.122.115")));
        assert_eq!(
            got[1],
            Assignment::Pending(
                "can't change sharing key for \"a/y\", address also in use by a/x".into()
            )
        );
        // The holder keeps it even when the newcomer sorts first.
        let previous = BTreeMap::from([("a/y".to_string(), ip("127.0.122.115"))]);
        let got = assign(&pools, &[a, b], &previous);
        assert_eq!(ips(&got), [None, Some(ip("127.0.122.115"))]);
    }

    #[test]
    fn what_metallb_refuses_leaves_only_that_service_pending_in_its_words() {
        let pools = [
            pool("p", &["127.0.122.110-127.0.122.110"], true),
            pool("q", &["127.0.123.1-127.0.123.2"], false),
        ];
        let mut outside = req("a/outside");
        outside.requested = Some(ip("127.0.99.1"));
        let mut other_pool = req("a/other-pool");
        other_pool.requested = Some(ip("127.0.123.1"));
        other_pool.pool = Some("p".into());
        let mut unknown = req("a/unknown");
        unknown.pool = Some("nope".into());
        let mut full = req("a/full");
        full.pool = Some("p".into());
        let mut shared = req("a/shared");
        shared.sharing_key = "k".into();
        shared.requested = Some(ip("127.0.123.2"));
        let mut clash = shared.clone();
        clash.key = "a/clash".into();
        let got = assign(
            &pools,
            &[
                req("a/first"),
                outside,
                other_pool,
                unknown,
                full,
                shared,
                clash,
                req("a/auto"),
            ],
            &BTreeMap::new(),
        );
        let why = |a: &Assignment| match a {
            Assignment::Pending(w) => w.clone(),
            Assignment::Assigned { ip, .. } => format!("assigned {ip}"),
        };
        let got: Vec<String> = got.iter().map(why).collect();
        assert_eq!(
            got,
            [
                "assigned 127.0.122.110",
                "\"127.0.99.1\" is not allowed in config",
                "requested loadBalancer IP(s) [\"127.0.123.1\"] is not compatible with requested address pool p",
                "unknown pool \"nope\"",
                "no available IPs in pool \"p\"",
                "assigned 127.0.123.2",
                "port TCP/80 is already in use on \"127.0.123.2\"",
                "no available IPs",
            ]
        );
    }

    #[test]
    fn exhaustion_leaves_pending_and_release_frees_the_address() {
        let pools = [pool("p", &["127.0.122.110-127.0.122.111"], true)];
        let all = [req("a/1"), req("a/2"), req("a/3")];
        let got = assign(&pools, &all, &BTreeMap::new());
        assert_eq!(
            ips(&got),
            [Some(ip("127.0.122.110")), Some(ip("127.0.122.111")), None]
        );
        let previous: BTreeMap<String, IpAddr> = all
            .iter()
            .zip(&got)
            .filter_map(|(r, a)| Some((r.key.clone(), a.ip()?)))
            .collect();
        // a/1 goes: a/3 takes its address, a/2 keeps its own.
        let got = assign(&pools, &[req("a/2"), req("a/3")], &previous);
        assert_eq!(
            ips(&got),
            [Some(ip("127.0.122.111")), Some(ip("127.0.122.110"))]
        );
    }

    #[test]
    fn sharing_needs_the_same_key_and_distinct_ports() {
        let pools = [pool("p", &["127.0.122.110-127.0.122.119"], true)];
        let shared = |key: &str, sk: &str, port: u16| LbRequest {
            key: key.into(),
            requested: Some(ip("127.0.122.110")),
            pool: None,
            sharing_key: sk.into(),
            ports: vec![(Protocol::Tcp, port)],
        };
        let got = assign(
            &pools,
            &[
                shared("a/dns-tcp", "k", 53),
                shared("a/web", "k", 80),
                shared("a/clash", "k", 80),
                shared("a/other-key", "z", 81),
                shared("a/no-key", "", 82),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(
            ips(&got),
            [
                Some(ip("127.0.122.110")),
                Some(ip("127.0.122.110")),
                None,
                None,
                None
            ]
        );
        // Same port number on another protocol does not collide.
        let mut udp = shared("a/dns-udp", "k", 53);
        udp.ports = vec![(Protocol::Udp, 53)];
        let got = assign(
            &pools,
            &[shared("a/dns-tcp", "k", 53), udp],
            &BTreeMap::new(),
        );
        assert_eq!(ips(&got), [Some(ip("127.0.122.110")); 2]);
    }

    #[test]
    fn auto_assignment_joins_a_compatible_sharing_address() {
        let pools = [pool("p", &["127.0.122.110-127.0.122.119"], true)];
        let mut a = req("a/a");
        a.sharing_key = "k".into();
        let mut b = req("a/b");
        b.sharing_key = "k".into();
        b.ports = vec![(Protocol::Tcp, 443)];
        let got = assign(&pools, &[a, b, req("a/c")], &BTreeMap::new());
        assert_eq!(
            ips(&got),
            [
                Some(ip("127.0.122.110")),
                Some(ip("127.0.122.110")),
                Some(ip("127.0.122.111"))
            ]
        );
    }

    #[test]
    fn ipv6_pools_assign_lazily_from_huge_ranges() {
        let pools = [pool("v6", &["fd00:1::/64"], true)];
        let got = assign(&pools, &[req("a/x"), req("a/y")], &BTreeMap::new());
        assert_eq!(ips(&got), [Some(ip("fd00:1::")), Some(ip("fd00:1::1"))]);
        let mut r = req("a/z");
        r.requested = Some(ip("fd00:1::beef"));
        assert_eq!(
            ips(&assign(&pools, &[r], &BTreeMap::new())),
            [Some(ip("fd00:1::beef"))]
        );
    }

    #[test]
    fn a_previous_address_outside_the_pool_now_is_replaced() {
        let pools = [pool("p", &["127.0.122.110-127.0.122.119"], true)];
        let previous = BTreeMap::from([("a/x".to_string(), ip("127.0.9.9"))]);
        assert_eq!(
            ips(&assign(&pools, &[req("a/x")], &previous)),
            [Some(ip("127.0.122.110"))]
        );
    }

    proptest! {
        /// Reassigning with the previous result changes nothing, whatever order
        /// the services come in, and no address is held twice without sharing.
        #[test]
        fn assignments_are_stable_and_unique(n in 0usize..30, size in 1u32..20, seed in any::<u64>()) {
            let last = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 122, 0)) + size - 1);
            let pools = [IpPool {
                name: "p".into(),
                ranges: vec![IpRange::new(ip("127.0.122.0"), IpAddr::V4(last)).unwrap()],
                auto_assign: true,
            }];
            let requests: Vec<LbRequest> = (0..n).map(|i| req(&format!("ns/s{i}"))).collect();
            let first = assign(&pools, &requests, &BTreeMap::new());
            let held = first.iter().filter_map(Assignment::ip).count();
            prop_assert_eq!(held, n.min(size as usize));
            prop_assert_eq!(assigned_ips(&first).len(), held);
            let previous: BTreeMap<String, IpAddr> = requests
                .iter()
                .zip(&first)
                .filter_map(|(r, a)| Some((r.key.clone(), a.ip()?)))
                .collect();
            let mut shuffled: Vec<usize> = (0..n).collect();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let reordered: Vec<LbRequest> = shuffled.iter().map(|&i| requests[i].clone()).collect();
            let again = assign(&pools, &reordered, &previous);
            for (k, &i) in shuffled.iter().enumerate() {
                if first[i].ip().is_some() {
                    prop_assert_eq!(again[k].ip(), first[i].ip());
                }
            }
        }
    }
}
