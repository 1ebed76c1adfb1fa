//! ClientIP session affinity: which endpoint a client IP is pinned to, with a
//! sliding timeout.
//!
//! One table per service port, shared by all its frontends and carried from
//! snapshot to snapshot, keyed by the endpoint's address (a stable identity, not
//! a position), so pins survive reloads for endpoints that survive. Time is a
//! parameter; the table is bounded: expired pins are reaped, and at the bound the
//! pin idle longest is dropped for the new one.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default bound on pins per service port.
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;

/// Longest timeout kept (Kubernetes allows at most 86,400 s): clamping it means
/// `now + timeout` never overflows an `Instant`, so a pin can store its
/// deadline instead of recomputing it on every lookup.
const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 86_400);

/// An endpoint index that no port has: a pin made through [`AffinityTable::pin`]
/// (which knows only the address) is resolved by address on its next hit.
const NO_INDEX: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Pin {
    endpoint: SocketAddr,
    /// Where `endpoint` was in the endpoint list of the port that last used
    /// the pin: a hint that saves the address lookup on a hit. The caller
    /// checks it against the address, since a later snapshot may order its
    /// endpoints differently.
    index: u32,
    /// `last_seen + timeout`: the pin holds while `now <= expires`. A
    /// deadline rather than `last_seen`, so a hit compares two `Instant`s
    /// instead of subtracting them (which normalises seconds and nanoseconds).
    /// [`AffinityTable::set_timeout`] shifts every deadline, so a changed
    /// timeout still applies to existing pins. (Nanoseconds from an epoch in
    /// an `i64` were tried: 8 bytes smaller, but converting `now` cost more
    /// than it saved.)
    expires: Instant,
}

/// Pin map key: the client address as 128 bits, IPv4 in its IPv4-mapped IPv6
/// form. One hash write instead of two (discriminant, address), and a client
/// that reaches a dual-stack socket as `::ffff:a.b.c.d` keeps the pin it has as
/// `a.b.c.d`.
fn key(client: IpAddr) -> u128 {
    match client {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The pins of one service port.
#[derive(Debug)]
pub struct AffinityTable {
    max_entries: usize,
    /// One lock, taken once per pick (hit or miss): the pick decides and
    /// re-pins under it, so a miss does not pay a second lock and a second
    /// hash. Uncontended it is two atomic operations; it is per service port,
    /// so only connections to the same sticky service share it.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    timeout: Duration,
    /// Keyed by client address with foldhash (seeded per table): a pick looks
    /// a client up on every connection, and SipHash was most of its cost.
    pins: HashMap<u128, Pin, foldhash::fast::RandomState>,
}

/// What [`AffinityTable::pick`] decided for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sticky {
    /// The endpoint index (in the caller's port).
    pub index: u32,
    /// Whether it came from the client's unexpired pin (else it was chosen
    /// afresh and pinned).
    pub hit: bool,
}

impl Inner {
    /// Inserts a pin for a client that has none, dropping expired pins and
    /// then the idlest one when the table is full.
    fn insert(&mut self, client: u128, pin: Pin, max_entries: usize, now: Instant) {
        if self.pins.len() >= max_entries {
            self.pins.retain(|_, p| now <= p.expires);
            if self.pins.len() >= max_entries {
                if let Some(oldest) = self
                    .pins
                    .iter()
                    .min_by_key(|(_, p)| p.expires)
                    .map(|(ip, _)| *ip)
                {
                    self.pins.remove(&oldest);
                }
            }
        }
        self.pins.insert(client, pin);
    }
}

impl AffinityTable {
    /// A table with the given sliding timeout and the default bound.
    pub fn new(timeout: Duration) -> Self {
        Self::with_capacity_limit(timeout, DEFAULT_MAX_ENTRIES)
    }

    /// A table holding at most `max_entries` pins.
    pub fn with_capacity_limit(timeout: Duration, max_entries: usize) -> Self {
        AffinityTable {
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner {
                timeout: timeout.min(MAX_TIMEOUT),
                pins: HashMap::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every mutation is a single insert, update or remove), so poisoning
        // is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sliding timeout.
    pub fn timeout(&self) -> Duration {
        self.lock().timeout
    }

    /// Changes the timeout (a reload that edits `timeout_seconds`); pins stay,
    /// and the new timeout applies to them at once, counted from when each was
    /// last seen.
    pub fn set_timeout(&self, timeout: Duration) {
        let timeout = timeout.min(MAX_TIMEOUT);
        let mut inner = self.lock();
        if inner.timeout == timeout {
            return;
        }
        let old = std::mem::replace(&mut inner.timeout, timeout);
        for pin in inner.pins.values_mut() {
            // `expires - old` is when the pin was last seen, a real instant.
            if let Some(last_seen) = pin.expires.checked_sub(old) {
                pin.expires = last_seen.checked_add(timeout).unwrap_or(last_seen);
            }
        }
    }

    /// The sticky pick for `client` under one lock: its unexpired pin if
    /// `accept(endpoint, index hint)` still takes it (returning the
    /// endpoint's index); an unexpired pin is refreshed either way. Otherwise
    /// `choose()`'s endpoint,
    /// which becomes the client's pin. `None` when `choose` finds nothing
    /// (an expired pin is then dropped, as [`AffinityTable::lookup`] would).
    ///
    /// `accept` and `choose` run under the table's lock: they must not touch
    /// this table.
    #[inline]
    pub fn pick(
        &self,
        client: IpAddr,
        now: Instant,
        accept: impl FnOnce(SocketAddr, u32) -> Option<u32>,
        choose: impl FnOnce() -> Option<(u32, SocketAddr)>,
    ) -> Option<Sticky> {
        let client = key(client);
        let mut inner = self.lock();
        let deadline = now.checked_add(inner.timeout).unwrap_or(now);
        if let Some(pin) = inner.pins.get_mut(&client) {
            let live = now <= pin.expires;
            if live {
                // Seen now, whether or not its endpoint still takes
                // connections (as `lookup` followed by a check would).
                pin.expires = deadline;
                if let Some(index) = accept(pin.endpoint, pin.index) {
                    pin.index = index;
                    return Some(Sticky { index, hit: true });
                }
            }
            return match choose() {
                Some((index, endpoint)) => {
                    *pin = Pin {
                        endpoint,
                        index,
                        expires: deadline,
                    };
                    Some(Sticky { index, hit: false })
                }
                None => {
                    if !live {
                        inner.pins.remove(&client);
                    }
                    None
                }
            };
        }
        let (index, endpoint) = choose()?;
        let pin = Pin {
            endpoint,
            index,
            expires: deadline,
        };
        inner.insert(client, pin, self.max_entries, now);
        Some(Sticky { index, hit: false })
    }

    /// The endpoint `client` is pinned to, if the pin has not expired; a hit
    /// refreshes the pin (the timeout slides).
    pub fn lookup(&self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        let client = key(client);
        let mut inner = self.lock();
        let deadline = now.checked_add(inner.timeout).unwrap_or(now);
        match inner.pins.get_mut(&client) {
            Some(pin) if now <= pin.expires => {
                pin.expires = deadline;
                Some(pin.endpoint)
            }
            Some(_) => {
                inner.pins.remove(&client);
                None
            }
            None => None,
        }
    }

    /// Pins `client` to `endpoint` from `now` on.
    pub fn pin(&self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        self.pin_at(client, endpoint, NO_INDEX, now);
    }

    /// Pins `client` to `endpoint`, which is at `index` in the caller's port
    /// (a hint for the next hit).
    pub fn pin_at(&self, client: IpAddr, endpoint: SocketAddr, index: u32, now: Instant) {
        let client = key(client);
        let mut inner = self.lock();
        let pin = Pin {
            endpoint,
            index,
            expires: now.checked_add(inner.timeout).unwrap_or(now),
        };
        match inner.pins.get_mut(&client) {
            Some(existing) => *existing = pin,
            None => inner.insert(client, pin, self.max_entries, now),
        }
    }

    /// Drops the pin of `client`.
    pub fn forget(&self, client: IpAddr) {
        self.lock().pins.remove(&key(client));
    }

    /// Removes expired pins; returns how many went. Called periodically so that
    /// clients that never come back do not hold memory.
    pub fn reap(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let before = inner.pins.len();
        inner.pins.retain(|_, p| now <= p.expires);
        before - inner.pins.len()
    }

    /// Drops pins to endpoints not in `live` (they left the service).
    pub fn retain_endpoints(&self, live: &HashSet<SocketAddr>) {
        self.lock().pins.retain(|_, p| live.contains(&p.endpoint));
    }

    /// Number of pins held.
    pub fn len(&self) -> usize {
        self.lock().pins.len()
    }

    /// Whether no pin is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pin_holds_while_the_client_keeps_coming_within_the_timeout() {
        let t = AffinityTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
        for k in 1..10 {
            let now = t0 + Duration::from_secs(8 * k);
            assert_eq!(t.lookup(ip("127.0.0.5"), now), Some(ep("127.0.0.1:80")));
        }
    }

    #[test]
    fn pin_expires_after_the_timeout() {
        let t = AffinityTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
        assert_eq!(
            t.lookup(ip("127.0.0.5"), t0 + Duration::from_secs(11)),
            None
        );
        assert!(t.is_empty());
    }

    #[test]
    fn table_is_bounded_and_drops_the_idlest_pin() {
        let t = AffinityTable::with_capacity_limit(Duration::from_secs(100), 2);
        let t0 = Instant::now();
        t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
        t.pin(
            ip("127.0.0.2"),
            ep("127.0.0.1:80"),
            t0 + Duration::from_secs(1),
        );
        t.pin(
            ip("127.0.0.3"),
            ep("127.0.0.1:80"),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(ip("127.0.0.1"), t0 + Duration::from_secs(3)), None);
    }

    #[test]
    fn reap_removes_only_expired_pins() {
        let t = AffinityTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
        t.pin(
            ip("127.0.0.2"),
            ep("127.0.0.1:80"),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(t.reap(t0 + Duration::from_secs(12)), 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_changed_timeout_applies_to_existing_pins() {
        let t = AffinityTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
        t.set_timeout(Duration::from_secs(100));
        let later = t0 + Duration::from_secs(50);
        assert_eq!(t.lookup(ip("127.0.0.5"), later), Some(ep("127.0.0.1:80")));
        t.set_timeout(Duration::from_secs(5));
        assert_eq!(
            t.lookup(ip("127.0.0.5"), later + Duration::from_secs(6)),
            None
        );
    }

    #[test]
    fn a_v4_client_seen_as_v4_mapped_v6_keeps_its_pin() {
        let t = AffinityTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.pin(ip("127.0.0.5"), ep("127.0.0.1:80"), t0);
        assert_eq!(
            t.lookup(ip("::ffff:127.0.0.5"), t0),
            Some(ep("127.0.0.1:80"))
        );
    }

    #[test]
    fn pick_refreshes_a_hit_and_repins_in_place_on_a_miss() {
        let t = AffinityTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let client = ip("127.0.0.5");
        let first = t.pick(client, t0, |_, _| None, || Some((3, ep("127.0.0.3:80"))));
        assert_eq!(
            first,
            Some(Sticky {
                index: 3,
                hit: false
            })
        );
        // A hit hands the stored index as a hint and keeps what accept says.
        let hit = t.pick(
            client,
            t0 + Duration::from_secs(9),
            |addr, hint| (addr == ep("127.0.0.3:80") && hint == 3).then_some(7),
            || None,
        );
        assert_eq!(
            hit,
            Some(Sticky {
                index: 7,
                hit: true
            })
        );
        // Refreshed at 9 s, so still held at 18 s; the new hint is 7.
        let hit = t.pick(
            client,
            t0 + Duration::from_secs(18),
            |_, hint| Some(hint),
            || None,
        );
        assert_eq!(
            hit,
            Some(Sticky {
                index: 7,
                hit: true
            })
        );
        // Rejected (the endpoint may no longer take connections): re-pinned.
        let moved = t.pick(
            client,
            t0 + Duration::from_secs(19),
            |_, _| None,
            || Some((1, ep("127.0.0.1:80"))),
        );
        assert_eq!(
            moved,
            Some(Sticky {
                index: 1,
                hit: false
            })
        );
        assert_eq!(t.len(), 1);
        // Expired and nothing to choose: the pin goes.
        assert_eq!(
            t.pick(client, t0 + Duration::from_secs(60), |_, _| None, || None),
            None
        );
        assert!(t.is_empty());
    }

    #[test]
    fn pins_to_removed_endpoints_go() {
        let t = AffinityTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
        t.pin(ip("127.0.0.2"), ep("127.0.0.2:80"), t0);
        t.retain_endpoints(&[ep("127.0.0.2:80")].into_iter().collect());
        assert_eq!(t.lookup(ip("127.0.0.1"), t0), None);
        assert_eq!(t.lookup(ip("127.0.0.2"), t0), Some(ep("127.0.0.2:80")));
    }

    /// What the table must do, written the obvious way: pins by client with
    /// their last-seen time, checked against the current timeout.
    #[derive(Default)]
    struct Model {
        timeout: Duration,
        pins: HashMap<IpAddr, (SocketAddr, Instant)>,
    }

    impl Model {
        fn lookup(&mut self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
            let timeout = self.timeout;
            match self.pins.get_mut(&client) {
                Some((e, seen)) if now.duration_since(*seen) <= timeout => {
                    *seen = now;
                    Some(*e)
                }
                Some(_) => {
                    self.pins.remove(&client);
                    None
                }
                None => None,
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Pin(u8, u8),
        Lookup(u8),
        /// Pick with endpoints `< accept_below` still taking connections and
        /// endpoint `choose` (if any) next in line.
        Pick(u8, u8, Option<u8>),
        SetTimeout(u8),
        Reap,
        Retain(u8),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 0u8..4).prop_map(|(c, e)| Op::Pin(c, e)),
            (0u8..6).prop_map(Op::Lookup),
            (0u8..6, 0u8..5, proptest::option::of(0u8..4)).prop_map(|(c, a, e)| Op::Pick(c, a, e)),
            (1u8..20).prop_map(Op::SetTimeout),
            Just(Op::Reap),
            (0u8..5).prop_map(Op::Retain),
            (0u16..8_000).prop_map(Op::Advance),
        ]
    }

    fn client(c: u8) -> IpAddr {
        IpAddr::from([127, 0, 1, c])
    }
    fn endpoint(e: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 2, e], 80))
    }

    proptest! {
        #[test]
        fn the_table_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..120)) {
            let table = AffinityTable::new(Duration::from_secs(5));
            let mut model = Model { timeout: Duration::from_secs(5), ..Model::default() };
            let mut now = Instant::now();
            for op in ops {
                match op {
                    Op::Pin(c, e) => {
                        table.pin(client(c), endpoint(e), now);
                        model.pins.insert(client(c), (endpoint(e), now));
                    }
                    Op::Lookup(c) => {
                        prop_assert_eq!(table.lookup(client(c), now), model.lookup(client(c), now));
                    }
                    Op::Pick(c, below, choose) => {
                        let got = table.pick(
                            client(c),
                            now,
                            |addr, _| (addr.ip() < IpAddr::from([127, 0, 2, below])).then_some(0),
                            || choose.map(|e| (1, endpoint(e))),
                        );
                        let want = match model.lookup(client(c), now) {
                            Some(addr) if addr.ip() < IpAddr::from([127, 0, 2, below]) => {
                                Some(Sticky { index: 0, hit: true })
                            }
                            _ => choose.map(|e| {
                                model.pins.insert(client(c), (endpoint(e), now));
                                Sticky { index: 1, hit: false }
                            }),
                        };
                        prop_assert_eq!(got, want);
                    }
                    Op::SetTimeout(secs) => {
                        table.set_timeout(Duration::from_secs(secs.into()));
                        model.timeout = Duration::from_secs(secs.into());
                    }
                    Op::Reap => {
                        let timeout = model.timeout;
                        let before = model.pins.len();
                        model.pins.retain(|_, (_, seen)| now.duration_since(*seen) <= timeout);
                        prop_assert_eq!(table.reap(now), before - model.pins.len());
                    }
                    Op::Retain(below) => {
                        let live: HashSet<SocketAddr> = (0..below).map(endpoint).collect();
                        table.retain_endpoints(&live);
                        model.pins.retain(|_, (e, _)| live.contains(e));
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms.into()),
                }
                prop_assert_eq!(table.len(), model.pins.len());
            }
        }
    }
}
