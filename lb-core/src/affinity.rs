//! ClientIP session affinity: which endpoint a client IP is pinned to, with a
//! sliding timeout.
//!
//! One table per service port, shared by all its frontends and carried from
//! snapshot to snapshot. A pin names its endpoint by an id that stands for the
//! endpoint's address (a stable identity, not a position) for as long as the
//! address stays in the port, so pins survive reloads for endpoints that
//! survive. Time is a parameter; the table is bounded: expired pins are reaped,
//! and at the bound the pin idle longest is dropped for the new one.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

/// Default bound on pins per service port.
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;

/// Longest timeout kept (Kubernetes allows at most 86,400 s): clamping it
/// means `now + timeout` never overflows an `Instant`, so a pin can store its
/// deadline instead of recomputing it on every lookup.
const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 365 * 86_400);

/// An endpoint index that no port has: a pin made through [`AffinityTable::pin`]
/// (which knows only the address) is resolved by its endpoint id on its next hit.
const NO_INDEX: u32 = u32::MAX;

type FoldHash = foldhash::fast::RandomState;

/// One pin, in one 64-byte cache line (aligned to it): a pick reads and
/// writes one line of the table. The previous layout (a `SocketAddr` and an
/// `Instant` beside the key, 80 bytes, aligned to 16) always spanned two
/// lines, so 4,096 clients kept 512 KB of lines busy, a whole core's L2 on the
/// machines we measure on; now 256 KB. (32 bytes, with the deadline as `i64`
/// nanoseconds from an epoch, was tried:
/// converting `now` to nanoseconds costs ~45 instructions per pick, since
/// `Instant` arithmetic goes through std's out-of-line `sub_timespec`.)
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Pin {
    /// The client, as [`key`] spells it.
    client: u128,
    /// `last_seen + timeout`: the pin holds while `now <= expires`. A
    /// deadline rather than `last_seen`, so a hit compares two `Instant`s
    /// instead of subtracting them; [`AffinityTable::set_timeout`] shifts
    /// every deadline, so a changed timeout still applies to existing pins.
    expires: Instant,
    /// The endpoint, by its id in this table (see [`Endpoints`]): a stable
    /// identity for its address, 4 bytes instead of a 32-byte `SocketAddr`
    /// and one integer compare on a hit.
    endpoint: u32,
    /// Where the endpoint was in the endpoint list of the port that last used
    /// the pin: a hint that saves a lookup on a hit. The caller checks it
    /// against the endpoint id, since a later snapshot may order its
    /// endpoints differently.
    index: u32,
}

/// Pin key: the client address as 128 bits, IPv4 in its IPv4-mapped IPv6
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
    /// The sliding timeout (at most [`MAX_TIMEOUT`]).
    timeout: Duration,
    /// Keyed by client address with foldhash (seeded per table, so a client
    /// cannot choose addresses that collide): a pick looks a client up on
    /// every connection, and SipHash was most of its cost.
    pins: HashTable<Pin>,
    hasher: FoldHash,
    endpoints: Endpoints,
}

/// Endpoint ids: pins name their endpoint by a `u32` that stands for its
/// address for as long as the address stays in the service port. Ids are
/// never reused while the counter lasts, so a pin made by a port of an older
/// snapshot (in flight during a reload) can name an endpoint that has left,
/// never a different one; such a pin is not found in the new port and the
/// client is re-pinned, as a pin to a departed address would be.
#[derive(Debug, Default)]
struct Endpoints {
    id: HashMap<SocketAddr, u32, FoldHash>,
    addr: HashMap<u32, SocketAddr, FoldHash>,
    next: u32,
}

impl Endpoints {
    /// The id of `addr`, assigning the next one to a new address. The caller
    /// made room first ([`Inner::make_room`]).
    fn id(&mut self, addr: SocketAddr) -> u32 {
        if let Some(&id) = self.id.get(&addr) {
            return id;
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.id.insert(addr, id);
        self.addr.insert(id, addr);
        id
    }
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
    fn hash(&self, client: u128) -> u64 {
        self.hasher.hash_one(client)
    }

    /// Inserts a pin for a client that has none, dropping expired pins and
    /// then the idlest one when the table is full.
    fn insert(&mut self, pin: Pin, max_entries: usize, now: Instant) {
        if self.pins.len() >= max_entries {
            self.pins.retain(|p| now <= p.expires);
            if self.pins.len() >= max_entries {
                if let Some(oldest) = self.pins.iter().min_by_key(|p| p.expires).map(|p| p.client) {
                    let hash = self.hash(oldest);
                    if let Ok(slot) = self.pins.find_entry(hash, |p| p.client == oldest) {
                        slot.remove();
                    }
                }
            }
        }
        let hash = self.hash(pin.client);
        let hasher = &self.hasher;
        self.pins
            .insert_unique(hash, pin, |p| hasher.hash_one(p.client));
    }

    /// Pins `client` to endpoint `id` (at `index`), replacing its pin.
    fn pin(&mut self, client: u128, id: u32, index: u32, now: Instant, max_entries: usize) {
        let pin = Pin {
            client,
            expires: now.checked_add(self.timeout).unwrap_or(now),
            endpoint: id,
            index,
        };
        let hash = self.hash(client);
        match self.pins.find_mut(hash, |p| p.client == client) {
            Some(existing) => *existing = pin,
            None => self.insert(pin, max_entries, now),
        }
    }

    /// Keeps the ids of `live` and the pins to them; forgets the rest.
    fn retain_endpoints(&mut self, live: impl Fn(&SocketAddr) -> bool) {
        self.endpoints.id.retain(|addr, _| live(addr));
        let ids = &self.endpoints.id;
        self.endpoints.addr.retain(|_, addr| ids.contains_key(addr));
        let addrs = &self.endpoints.addr;
        self.pins.retain(|p| addrs.contains_key(&p.endpoint));
    }

    /// Makes sure `fresh` new endpoint ids can be handed out. After 2^32 ids
    /// in one table (addresses that came and went) the table starts again
    /// from 0 with no pins and no ids, so no pin names a reused id; clients
    /// lose their pins once, and a port built before that (still picking
    /// during the reload that ran out) holds ids that no longer mean
    /// anything here: its picks miss and re-pin.
    fn make_room(&mut self, fresh: usize) {
        let room = u32::MAX - self.endpoints.next;
        if u32::try_from(fresh).map_or(true, |n| n > room) {
            self.pins.clear();
            self.endpoints = Endpoints::default();
        }
    }

    /// The id of `addr`, assigning one if it has none.
    fn endpoint_id(&mut self, addr: SocketAddr) -> u32 {
        if !self.endpoints.id.contains_key(&addr) {
            self.make_room(1);
        }
        self.endpoints.id(addr)
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
                pins: HashTable::new(),
                hasher: FoldHash::default(),
                endpoints: Endpoints::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the table inconsistent
        // (every mutation is a single insert, update or remove, or a retain),
        // so poisoning is ignored.
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
        for pin in inner.pins.iter_mut() {
            // `expires - old` is when the pin was last seen, a real instant.
            if let Some(last_seen) = pin.expires.checked_sub(old) {
                pin.expires = last_seen.checked_add(timeout).unwrap_or(last_seen);
            }
        }
    }

    /// The ids of `endpoints` (a port's endpoint list, in its order), for
    /// [`AffinityTable::pick`]: an address keeps its id for as long as it
    /// stays in the list. Pins to endpoints not in the list are dropped (they
    /// left the service), as [`AffinityTable::retain_endpoints`] does.
    pub fn endpoint_ids(&self, endpoints: &[SocketAddr]) -> Vec<u32> {
        let live: HashSet<SocketAddr> = endpoints.iter().copied().collect();
        let mut inner = self.lock();
        inner.retain_endpoints(|addr| live.contains(addr));
        let fresh = live
            .iter()
            .filter(|a| !inner.endpoints.id.contains_key(a))
            .count();
        inner.make_room(fresh);
        endpoints.iter().map(|&a| inner.endpoints.id(a)).collect()
    }

    /// The sticky pick for `client` under one lock: its unexpired pin if
    /// `accept(endpoint id, index hint)` still takes it (returning the
    /// endpoint's index); an unexpired pin is refreshed either way. Otherwise
    /// `choose()`'s endpoint (index, id), which becomes the client's pin.
    /// `None` when `choose` finds nothing (an expired pin is then dropped, as
    /// [`AffinityTable::lookup`] would). Endpoint ids are those
    /// [`AffinityTable::endpoint_ids`] gave the caller.
    ///
    /// `accept` and `choose` run under the table's lock: they must not touch
    /// this table.
    #[inline]
    pub fn pick(
        &self,
        client: IpAddr,
        now: Instant,
        accept: impl FnOnce(u32, u32) -> Option<u32>,
        choose: impl FnOnce() -> Option<(u32, u32)>,
    ) -> Option<Sticky> {
        let client = key(client);
        let mut inner = self.lock();
        let deadline = now.checked_add(inner.timeout).unwrap_or(now);
        let hash = inner.hash(client);
        match inner.pins.find_entry(hash, |p| p.client == client) {
            Ok(mut slot) => {
                let pin = slot.get_mut();
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
                match choose() {
                    Some((index, endpoint)) => {
                        *pin = Pin {
                            client,
                            expires: deadline,
                            endpoint,
                            index,
                        };
                        Some(Sticky { index, hit: false })
                    }
                    None => {
                        if !live {
                            slot.remove();
                        }
                        None
                    }
                }
            }
            Err(_) => {
                let (index, endpoint) = choose()?;
                let pin = Pin {
                    client,
                    expires: deadline,
                    endpoint,
                    index,
                };
                inner.insert(pin, self.max_entries, now);
                Some(Sticky { index, hit: false })
            }
        }
    }

    /// The endpoint `client` is pinned to, if the pin has not expired; a hit
    /// refreshes the pin (the timeout slides).
    pub fn lookup(&self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        let client = key(client);
        let mut inner = self.lock();
        let deadline = now.checked_add(inner.timeout).unwrap_or(now);
        let hash = inner.hash(client);
        let Ok(mut slot) = inner.pins.find_entry(hash, |p| p.client == client) else {
            return None;
        };
        let pin = slot.get_mut();
        if now <= pin.expires {
            pin.expires = deadline;
            let id = pin.endpoint;
            return inner.endpoints.addr.get(&id).copied();
        }
        slot.remove();
        None
    }

    /// Pins `client` to `endpoint` from `now` on.
    pub fn pin(&self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        let client = key(client);
        let mut inner = self.lock();
        let id = inner.endpoint_id(endpoint);
        inner.pin(client, id, NO_INDEX, now, self.max_entries);
    }

    /// Pins `client` to the endpoint with id `endpoint` (from
    /// [`AffinityTable::endpoint_ids`]), which is at `index` in the caller's
    /// port (a hint for the next hit).
    pub fn pin_at(&self, client: IpAddr, endpoint: u32, index: u32, now: Instant) {
        let client = key(client);
        self.lock()
            .pin(client, endpoint, index, now, self.max_entries);
    }

    /// Drops the pin of `client`.
    pub fn forget(&self, client: IpAddr) {
        let client = key(client);
        let mut inner = self.lock();
        let hash = inner.hash(client);
        if let Ok(slot) = inner.pins.find_entry(hash, |p| p.client == client) {
            slot.remove();
        }
    }

    /// Removes expired pins; returns how many went. Called periodically so that
    /// clients that never come back do not hold memory.
    pub fn reap(&self, now: Instant) -> usize {
        let mut inner = self.lock();
        let before = inner.pins.len();
        inner.pins.retain(|p| now <= p.expires);
        before - inner.pins.len()
    }

    /// Drops pins to endpoints not in `live` (they left the service).
    pub fn retain_endpoints(&self, live: &HashSet<SocketAddr>) {
        self.lock().retain_endpoints(|addr| live.contains(addr));
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
mod tests;
