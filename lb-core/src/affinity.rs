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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default bound on pins per service port.
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Pin {
    endpoint: SocketAddr,
    last_seen: Instant,
}

/// The pins of one service port.
#[derive(Debug)]
pub struct AffinityTable {
    timeout_ms: AtomicU64,
    max_entries: usize,
    /// Keyed by client address with foldhash (seeded per table): a pick looks
    /// a client up on every connection, and SipHash was most of its cost.
    pins: Mutex<PinMap>,
}

type PinMap = HashMap<IpAddr, Pin, foldhash::fast::RandomState>;

impl AffinityTable {
    /// A table with the given sliding timeout and the default bound.
    pub fn new(timeout: Duration) -> Self {
        Self::with_capacity_limit(timeout, DEFAULT_MAX_ENTRIES)
    }

    /// A table holding at most `max_entries` pins.
    pub fn with_capacity_limit(timeout: Duration, max_entries: usize) -> Self {
        AffinityTable {
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
            max_entries: max_entries.max(1),
            pins: Mutex::new(PinMap::default()),
        }
    }

    /// The sliding timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Changes the timeout (a reload that edits `timeout_seconds`); pins stay.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PinMap> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every mutation is a single insert or remove), so poisoning is ignored.
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint `client` is pinned to, if the pin has not expired; a hit
    /// refreshes the pin (the timeout slides).
    pub fn lookup(&self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        let timeout = self.timeout();
        let mut pins = self.lock();
        match pins.get_mut(&client) {
            Some(pin) if now.saturating_duration_since(pin.last_seen) <= timeout => {
                pin.last_seen = now;
                Some(pin.endpoint)
            }
            Some(_) => {
                pins.remove(&client);
                None
            }
            None => None,
        }
    }

    /// Pins `client` to `endpoint` from `now` on.
    pub fn pin(&self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        let timeout = self.timeout();
        let mut pins = self.lock();
        if pins.len() >= self.max_entries && !pins.contains_key(&client) {
            pins.retain(|_, p| now.saturating_duration_since(p.last_seen) <= timeout);
            if pins.len() >= self.max_entries {
                if let Some(oldest) = pins
                    .iter()
                    .min_by_key(|(_, p)| p.last_seen)
                    .map(|(ip, _)| *ip)
                {
                    pins.remove(&oldest);
                }
            }
        }
        pins.insert(
            client,
            Pin {
                endpoint,
                last_seen: now,
            },
        );
    }

    /// Drops the pin of `client`.
    pub fn forget(&self, client: IpAddr) {
        self.lock().remove(&client);
    }

    /// Removes expired pins; returns how many went. Called periodically so that
    /// clients that never come back do not hold memory.
    pub fn reap(&self, now: Instant) -> usize {
        let timeout = self.timeout();
        let mut pins = self.lock();
        let before = pins.len();
        pins.retain(|_, p| now.saturating_duration_since(p.last_seen) <= timeout);
        before - pins.len()
    }

    /// Drops pins to endpoints not in `live` (they left the service).
    pub fn retain_endpoints(&self, live: &HashSet<SocketAddr>) {
        self.lock().retain(|_, p| live.contains(&p.endpoint));
    }

    /// Number of pins held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no pin is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn pins_to_removed_endpoints_go() {
        let t = AffinityTable::new(Duration::from_secs(10));
        let t0 = Instant::now();
        t.pin(ip("127.0.0.1"), ep("127.0.0.1:80"), t0);
        t.pin(ip("127.0.0.2"), ep("127.0.0.2:80"), t0);
        t.retain_endpoints(&[ep("127.0.0.2:80")].into_iter().collect());
        assert_eq!(t.lookup(ip("127.0.0.1"), t0), None);
        assert_eq!(t.lookup(ip("127.0.0.2"), t0), Some(ep("127.0.0.2:80")));
    }
}
