//! The last minutes of each service's traffic, for the status page's
//! sparklines: connections per second and bytes per second, sampled from
//! the live counters every [`SAMPLE_PERIOD`] into a ring of [`SAMPLES`] per
//! service. The counters only ever count up, so the page could compute one
//! rate from two polls, but not the minutes before it was opened: this
//! history is what the proxy remembers for it.
//!
//! One [`History`] is kept by the App and sampled by one task on the
//! operator runtime ([`History::run`]); the admin API reads it
//! (`/api/v1/rates`). A service that leaves the table leaves the history
//! at the next sample, so its memory is bounded by the services served:
//! [`SAMPLES`] × 2 × 4 bytes each (about 1 KB).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lb_core::stats::read;
use lb_core::{ServiceKey, Snapshot};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the counters are sampled.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// Samples kept per service: 10 minutes at [`SAMPLE_PERIOD`].
pub const SAMPLES: usize = 120;

/// `/api/v1/rates`: a [`RatesList`].
pub const RATES_PATH: &str = "/api/v1/rates";

/// What a service's counters read at one sample: every connection
/// accepted by its ports, every byte its endpoints moved either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Connections accepted, all ports.
    pub connections: u64,
    /// Bytes both ways, all endpoints of all ports.
    pub bytes: u64,
}

impl Totals {
    /// The totals of `entry` now (its ports' and endpoints' counters).
    fn of(entry: &lb_core::ServiceEntry) -> Totals {
        let mut t = Totals::default();
        for port in &entry.ports {
            t.connections = t.connections.saturating_add(read(&port.stats().accepted));
            for e in port.endpoints() {
                let moved = read(&e.stats.bytes_rx).saturating_add(read(&e.stats.bytes_tx));
                t.bytes = t.bytes.saturating_add(moved);
            }
        }
        t
    }
}

/// One service's ring: the last reading and the rates between readings,
/// oldest first.
#[derive(Debug, Default)]
struct Ring {
    last: Option<(Instant, Totals)>,
    connections: VecDeque<f32>,
    bytes: VecDeque<f32>,
}

impl Ring {
    fn push(&mut self, now: Instant, totals: Totals) {
        if let Some((then, before)) = self.last {
            let seconds = now.saturating_duration_since(then).as_secs_f64();
            if seconds > 0.0 {
                // A counter that went down (an endpoint left with its bytes)
                // reads as no traffic for that sample, never a negative rate.
                let rate = |after: u64, before: u64| {
                    (after.saturating_sub(before) as f64 / seconds) as f32
                };
                if self.connections.len() == SAMPLES {
                    self.connections.pop_front();
                    self.bytes.pop_front();
                }
                self.connections
                    .push_back(rate(totals.connections, before.connections));
                self.bytes.push_back(rate(totals.bytes, before.bytes));
            }
        }
        self.last = Some((now, totals));
    }
}

/// The rings of every service served, by service.
#[derive(Debug, Default)]
pub struct History {
    rings: Mutex<BTreeMap<ServiceKey, Ring>>,
}

impl History {
    fn rings(&self) -> MutexGuard<'_, BTreeMap<ServiceKey, Ring>> {
        // Every update leaves the rings consistent.
        self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Samples every service of `snapshot` at `now`; services no longer in
    /// it are dropped.
    pub fn sample(&self, snapshot: &Snapshot, now: Instant) {
        self.record(
            now,
            snapshot
                .services()
                .map(|entry| (&entry.spec.key, Totals::of(entry))),
        );
    }

    /// Records one reading per service at `now`: each pushes the rate since
    /// its previous reading (the first is only a baseline); every service
    /// not read is dropped with its ring.
    pub fn record<'a>(
        &self,
        now: Instant,
        readings: impl Iterator<Item = (&'a ServiceKey, Totals)>,
    ) {
        let mut rings = self.rings();
        let mut kept = BTreeMap::new();
        for (key, totals) in readings {
            let mut ring = rings.remove(key).unwrap_or_default();
            ring.push(now, totals);
            kept.insert(key.clone(), ring);
        }
        *rings = kept;
    }

    /// Services with a ring.
    pub fn len(&self) -> usize {
        self.rings().len()
    }

    /// Whether no service has a ring.
    pub fn is_empty(&self) -> bool {
        self.rings().is_empty()
    }

    /// Samples kept for `key` (connections and bytes have as many).
    pub fn samples(&self, key: &ServiceKey) -> Option<usize> {
        self.rings().get(key).map(|r| r.connections.len())
    }

    /// The body of `/api/v1/rates`.
    pub fn list(&self) -> RatesList {
        let rings = self.rings();
        RatesList {
            interval_seconds: SAMPLE_PERIOD.as_secs(),
            items: rings
                .iter()
                .map(|(key, ring)| ServiceRates {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    connections_per_second: ring.connections.iter().copied().collect(),
                    bytes_per_second: ring.bytes.iter().copied().collect(),
                })
                .collect(),
        }
    }

    /// Samples `table` every [`SAMPLE_PERIOD`] until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, table: Arc<lb_core::Table>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.sample(&table.load(), Instant::now()),
            }
        }
    }
}

/// Body of `GET /api/v1/rates`: each service's recent rates, oldest first,
/// one value per [`SAMPLE_PERIOD`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RatesList {
    /// Seconds between two values.
    pub interval_seconds: u64,
    /// One entry per service, in namespace/name order.
    pub items: Vec<ServiceRates>,
}

/// One service's recent rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRates {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Connections accepted per second, all ports, oldest first.
    pub connections_per_second: Vec<f32>,
    /// Bytes per second both ways, all endpoints, oldest first.
    pub bytes_per_second: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(connections: u64, bytes: u64) -> Totals {
        Totals { connections, bytes }
    }

    #[test]
    fn a_ring_holds_ten_minutes_and_forgets_the_oldest() {
        let history = History::default();
        let web = ServiceKey::new("default", "web");
        let t0 = Instant::now();
        for i in 0..SAMPLES as u64 + 31 {
            let at = t0 + SAMPLE_PERIOD * i as u32;
            history.record(at, std::iter::once((&web, totals(i * 10, i * 5000))));
        }
        assert_eq!(history.samples(&web), Some(SAMPLES));
        let list = history.list();
        let rates = &list.items[0];
        assert_eq!(rates.connections_per_second.len(), SAMPLES);
        assert_eq!(rates.bytes_per_second.len(), SAMPLES);
        assert!(
            rates.connections_per_second.iter().all(|r| *r == 2.0),
            "{rates:?}"
        );
        assert!(
            rates.bytes_per_second.iter().all(|r| *r == 1000.0),
            "{rates:?}"
        );
        assert_eq!(list.interval_seconds, 5);
    }

    #[test]
    fn a_service_that_leaves_the_table_leaves_the_history() {
        let history = History::default();
        let (web, api) = (
            ServiceKey::new("default", "web"),
            ServiceKey::new("default", "api"),
        );
        let t0 = Instant::now();
        history.record(t0, [(&web, totals(0, 0)), (&api, totals(0, 0))].into_iter());
        history.record(
            t0 + SAMPLE_PERIOD,
            [(&web, totals(5, 10)), (&api, totals(1, 1))].into_iter(),
        );
        assert_eq!(history.len(), 2);
        history.record(
            t0 + SAMPLE_PERIOD * 2,
            std::iter::once((&web, totals(10, 20))),
        );
        assert_eq!(history.len(), 1);
        assert_eq!(history.samples(&api), None);
        assert_eq!(history.samples(&web), Some(2));
        // Back again: a new ring, starting from a baseline.
        history.record(
            t0 + SAMPLE_PERIOD * 3,
            [(&web, totals(10, 20)), (&api, totals(9, 9))].into_iter(),
        );
        assert_eq!(history.samples(&api), Some(0));
    }

    #[test]
    fn a_counter_that_went_down_reads_as_no_traffic() {
        let history = History::default();
        let web = ServiceKey::new("default", "web");
        let t0 = Instant::now();
        history.record(t0, std::iter::once((&web, totals(10, 5000))));
        history.record(t0 + SAMPLE_PERIOD, std::iter::once((&web, totals(10, 100))));
        assert_eq!(history.list().items[0].bytes_per_second, vec![0.0]);
    }
}
