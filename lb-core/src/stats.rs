//! Live counters that the data path bumps and the admin views read. They live in
//! `Arc`s that a new snapshot takes over for the same service port or endpoint,
//! so figures survive reloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one endpoint of one service port.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Connections open to this endpoint now.
    pub active: AtomicU64,
    /// The most connections ever open to it at once (the status page's
    /// peak, beside HAProxy's `smax`), raised where `active` rises.
    pub peak_active: AtomicU64,
    /// Connections ever established to this endpoint.
    pub connections: AtomicU64,
    /// Dials that failed or timed out.
    pub connect_errors: AtomicU64,
    /// Client connections that moved on to another endpoint because the
    /// dial to this one failed (HAProxy's per-server redispatches): a
    /// failed dial that ended the connection instead is not counted.
    pub failovers: AtomicU64,
    /// Forwarded connections to this endpoint that ended, by why they ended
    /// (the status page's resets per endpoint).
    pub closed: ClosedCounters,
    /// Bytes from clients to the endpoint.
    pub bytes_rx: AtomicU64,
    /// Bytes from the endpoint to clients.
    pub bytes_tx: AtomicU64,
}

/// Upper bounds (seconds) of the connect-duration histogram's buckets: from
/// a loopback dial (well under a millisecond) to the longest default
/// `connect_timeouts_ms` entry (2 s).
pub const CONNECT_DURATION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket histogram of durations kept in atomics, so the data path
/// records a sample with three relaxed adds and no lock, and the exposition
/// reads it at scrape time without the data path knowing about labels.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Samples per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; CONNECT_DURATION_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A reading of a [`DurationHistogram`], in Prometheus' cumulative form.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramReading {
    /// `(upper bound in seconds, samples <= bound)`, ascending, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Every sample (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the samples in seconds.
    pub sum: f64,
}

impl DurationHistogram {
    /// Records one sample.
    #[inline]
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = CONNECT_DURATION_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(CONNECT_DURATION_BUCKETS.len());
        add(&self.buckets[slot], 1);
        add(&self.count, 1);
        add(
            &self.sum_nanos,
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// The cumulative buckets, count and sum (relaxed: figures for display;
    /// a sample racing the read may show in `count` but not yet a bucket).
    pub fn reading(&self) -> HistogramReading {
        let mut cumulative = 0;
        let buckets = CONNECT_DURATION_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                cumulative += read(n);
                (*bound, cumulative)
            })
            .collect();
        let count = read(&self.count).max(cumulative);
        HistogramReading {
            buckets,
            count,
            sum: read(&self.sum_nanos) as f64 / 1e9,
        }
    }
}

/// Counters of one service port.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Connections open now (what `max_connections` bounds).
    pub active: AtomicU64,
    /// The most connections ever open at once (HAProxy's `smax`), raised
    /// where `active` rises, so the status page shows how close a port came
    /// to `max_connections`.
    pub peak_active: AtomicU64,
    /// Connections accepted from clients.
    pub accepted: AtomicU64,
    /// Connections refused because no endpoint could take them.
    pub rejected_no_endpoints: AtomicU64,
    /// Connections refused by `max_connections`.
    pub rejected_limit: AtomicU64,
    /// Connections refused by `load_balancer_source_ranges`.
    pub rejected_source_range: AtomicU64,
    /// Connections refused because the proxy itself was short of a local
    /// resource (its descriptor budget, or `EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `EADDRNOTAVAIL` on a dial): the proxy's fault, never the endpoint's.
    pub rejected_local_resources: AtomicU64,
    /// Connections refused because every endpoint left to try was one of
    /// this proxy's own frontends (a dial there would loop back forever).
    pub rejected_self_loop: AtomicU64,
    /// Connections reset because a service with `accept_proxy_protocol`
    /// got no valid PROXY header in time, or one from a source outside
    /// `proxy_protocol_trusted_cidrs`.
    pub rejected_proxy_protocol: AtomicU64,
    /// Forwarded connections that ended, by why they ended
    /// (`lb_connections_closed_total{cause}`).
    pub closed: ClosedCounters,
    /// Client connections (TCP) or new flows (UDP) that reached an endpoint
    /// only after the dial to an earlier pick failed
    /// (`lb_failovers_total`).
    pub failovers: AtomicU64,
    /// UDP flows open now (`lb_udp_sessions`).
    pub udp_sessions: AtomicU64,
    /// UDP datagrams sent on to an endpoint.
    pub udp_forwarded: AtomicU64,
    /// UDP datagrams from endpoints sent back to clients.
    pub udp_replied: AtomicU64,
    /// UDP datagrams dropped because the port had no endpoint to pick.
    pub udp_dropped_no_endpoints: AtomicU64,
    /// UDP datagrams dropped because no socket could be opened for a new flow.
    pub udp_dropped_flow_limit: AtomicU64,
    /// UDP datagrams the endpoint could not be sent (send error, ICMP
    /// unreachable reported on the flow's socket).
    pub udp_dropped_send_error: AtomicU64,
    /// UDP datagrams dropped because the endpoint picked for a new flow was
    /// one of this proxy's own frontends (no flow to lb itself is made).
    pub udp_dropped_self_loop: AtomicU64,
    /// UDP flows evicted (idle longest first) to make room under `udp_max_flows`.
    pub udp_evicted: AtomicU64,
    /// Paces the warning that clients of this port are turned away because
    /// no endpoint answered or there is none: one line per interval, however
    /// many clients.
    pub turned_away: WarnThrottle,
    /// How long successful dials to the port's endpoints took
    /// (`lb_connect_duration_seconds`). One per port, as Envoy keeps its
    /// `upstream_cx_connect_ms` per cluster: per endpoint it cost 120 bytes
    /// an endpoint and 13 of every 20 lines of `/metrics`.
    pub connect_duration: DurationHistogram,
}

/// Lets one warning through per interval and counts the ones held back, so
/// an event that comes with every client (a port without endpoints) is
/// said once in a while with how often it happened, at the cost of two
/// relaxed atomics per event and no lock. Time is a parameter (milliseconds
/// on any clock that does not go back), so lb-core reads no clock.
#[derive(Debug, Default)]
pub struct WarnThrottle {
    /// When the last warning went out, in milliseconds plus one (0: never).
    last: AtomicU64,
    /// Events since the last warning that were not logged.
    suppressed: AtomicU64,
}

impl WarnThrottle {
    /// Records one event at `now_ms`. `Some(n)` when it may be logged now
    /// (`n`: events held back since the previous line); `None` when a line
    /// went out less than `interval_ms` ago (the event is counted as held
    /// back). Of events racing at the interval's end, one wins.
    #[inline]
    pub fn event(&self, now_ms: u64, interval_ms: u64) -> Option<u64> {
        let stamp = now_ms.saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || stamp.saturating_sub(last) >= interval_ms;
        if due
            && self
                .last
                .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        add(&self.suppressed, 1);
        None
    }
}

/// Why a forwarded TCP connection ended: the `cause` label of
/// `lb_connections_closed_total` and the close log line. Whether the
/// client saw a FIN or a reset follows from the cause (see each variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// Both sides sent FIN and every byte was delivered.
    Closed,
    /// A leg failed (reset, broken pipe); the reset was passed on.
    Reset,
    /// Nothing moved either way for `tcp_idle_timeout`; may end with FIN.
    IdleTimeout,
    /// After one side's FIN, the direction still open moved no byte for
    /// `half_close_timeout`; ends with a reset on both legs.
    HalfCloseTimeout,
    /// The endpoint left the table (or took weight 0) and `drain_timeout`
    /// passed; ends with a reset on both legs.
    Drained,
    /// The proxy stopped (the SIGTERM drain deadline); ends with a reset on
    /// both legs.
    Stopped,
}

impl CloseCause {
    /// Every cause, in the order of [`ClosedCounters`]' slots.
    pub const ALL: [CloseCause; 6] = [
        CloseCause::Closed,
        CloseCause::Reset,
        CloseCause::IdleTimeout,
        CloseCause::HalfCloseTimeout,
        CloseCause::Drained,
        CloseCause::Stopped,
    ];

    /// The label value (`cause="..."`) and the word in the close log.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Closed => "closed",
            CloseCause::Reset => "reset",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::HalfCloseTimeout => "half_close_timeout",
            CloseCause::Drained => "drained",
            CloseCause::Stopped => "stopped",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// One counter per [`CloseCause`]: a fixed array, so counting a close is
/// one relaxed add and no lookup.
#[derive(Debug, Default)]
pub struct ClosedCounters([AtomicU64; CloseCause::ALL.len()]);

impl ClosedCounters {
    /// Counts one connection that ended for `cause`.
    #[inline]
    pub fn count(&self, cause: CloseCause) {
        add(&self.0[cause.slot()], 1);
    }

    /// Connections that ended for `cause` so far.
    pub fn get(&self, cause: CloseCause) -> u64 {
        read(&self.0[cause.slot()])
    }
}

/// Reads a counter (relaxed: figures for display).
pub fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Adds to a counter.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Raises `peak` to what `gauge` reads now if that is higher: one load and
/// one `fetch_max`, so a peak costs the data path no lock. Called once a
/// connection is admitted, so a connection refused over the limit never
/// makes the peak.
#[inline]
pub fn peak(peak: &AtomicU64, gauge: &AtomicU64) {
    peak.fetch_max(gauge.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Subtracts from a gauge (one that `add` raised before).
#[inline]
pub fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

/// Counters of the cluster DNS responder's answers, by kind of answer: the
/// responder counts, `/metrics` reads (and tests tell a forwarded answer
/// from a local one).
#[derive(Debug, Default)]
pub struct DnsCounters {
    /// Answered from the cluster zone (or a reverse name of it).
    pub local: AtomicU64,
    /// Forwarded to an upstream (including ExternalName chases).
    pub forwarded: AtomicU64,
    /// Refused: outside the zone with no upstream, or not a query.
    pub refused: AtomicU64,
    /// SERVFAIL: no upstream answered.
    pub failed: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        let h = DurationHistogram::default();
        h.record(Duration::from_micros(500));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(10));
        let r = h.reading();
        assert_eq!(r.buckets[0], (0.0005, 1));
        assert_eq!(r.buckets[3], (0.005, 2));
        assert_eq!(r.buckets.last().map(|b| b.1), Some(2));
        assert_eq!(r.count, 3);
        assert!((r.sum - 10.0035).abs() < 1e-9);
    }

    #[test]
    fn a_peak_keeps_the_highest_value_the_gauge_reached() {
        let (gauge, high) = (AtomicU64::new(0), AtomicU64::new(0));
        for step in [1i64, 1, -1, 1, -2] {
            if step > 0 {
                add(&gauge, 1);
            } else {
                sub(&gauge, step.unsigned_abs());
            }
            peak(&high, &gauge);
        }
        assert_eq!(read(&gauge), 0);
        assert_eq!(read(&high), 2);
    }

    #[test]
    fn a_throttle_lets_one_warning_through_per_interval_and_counts_the_rest() {
        let t = WarnThrottle::default();
        assert_eq!(t.event(0, 10_000), Some(0));
        assert_eq!(t.event(1, 10_000), None);
        assert_eq!(t.event(9_999, 10_000), None);
        assert_eq!(t.event(10_000, 10_000), Some(2));
        assert_eq!(t.event(10_001, 10_000), None);
        assert_eq!(t.event(25_000, 10_000), Some(1));
        assert_eq!(t.event(25_000, 10_000), None);
    }

    #[test]
    fn each_close_cause_has_its_own_counter_and_label() {
        let c = ClosedCounters::default();
        c.count(CloseCause::Drained);
        c.count(CloseCause::Drained);
        c.count(CloseCause::Reset);
        for (i, cause) in CloseCause::ALL.iter().enumerate() {
            assert_eq!(cause.slot(), i);
        }
        assert_eq!(c.get(CloseCause::Drained), 2);
        assert_eq!(c.get(CloseCause::Reset), 1);
        assert_eq!(c.get(CloseCause::Closed), 0);
        let labels: std::collections::HashSet<_> =
            CloseCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), CloseCause::ALL.len());
    }
}
