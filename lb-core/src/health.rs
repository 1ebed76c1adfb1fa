//! Endpoint health: what readiness probes are asked to do ([`ProbeSpec`]),
//! when each probe first runs ([`start_offset`]), and the passive health of
//! an endpoint ([`EndpointHealth`], outlier ejection).
//!
//! Probe *results* do not live here: they are an overlay that lb-proxy keeps
//! beside the desired state and folds into the next snapshot. Passive health
//! does live in the snapshot's endpoints, carried over by identity like the
//! counters, because the data path reads it on every pick: one relaxed atomic
//! load while nothing is ejected.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// A pod's identity, `namespace/name`: what probe results are keyed by, so a
/// result follows the pod across reloads and across every service that
/// selects it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub name: String,
}

impl PodKey {
    /// Builds a key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a readiness probe does, as Kubernetes' probe handlers (ports already
/// resolved from container port names).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProbeAction {
    /// Success when a TCP connection to the port opens.
    TcpSocket {
        /// Port on the pod address.
        port: u16,
    },
    /// Success when `GET path` answers 200-399.
    HttpGet {
        /// Request path (starts with `/`).
        path: String,
        /// Port on the pod address.
        port: u16,
    },
    /// Success when the command exits 0 within the timeout.
    Exec {
        /// Program and arguments (no shell).
        command: Vec<String>,
    },
}

/// One pod's readiness probe, validated, with Kubernetes' defaults applied.
/// Durations rather than whole seconds, so embedders and tests may probe
/// faster than the file allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeSpec {
    /// The pod whose readiness this decides.
    pub pod: PodKey,
    /// The pod's address (what `tcp_socket` and `http_get` connect to).
    pub ip: IpAddr,
    /// What to do.
    pub action: ProbeAction,
    /// Wait before the first probe.
    pub initial_delay: Duration,
    /// Time between probes.
    pub period: Duration,
    /// A probe that takes longer fails (an exec probe is killed).
    pub timeout: Duration,
    /// Successes in a row that make a not-ready pod ready.
    pub success_threshold: u32,
    /// Failures in a row that make a ready pod not ready.
    pub failure_threshold: u32,
    /// A `tcp_socket` or `http_get` probe of an endpoint that expects a
    /// PROXY header (its service's `proxy_protocol`) starts with a `LOCAL`
    /// one ("a check from the proxy itself, not a client"; v1: `PROXY
    /// UNKNOWN`). `None`, the default: no header, since a probe is not a
    /// client.
    pub proxy_protocol: Option<crate::model::ProxyProtocol>,
}

impl ProbeSpec {
    /// Kubernetes' default period (`periodSeconds: 10`).
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
    /// Kubernetes' default timeout (`timeoutSeconds: 1`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Kubernetes' default `failureThreshold`.
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

    /// A probe with Kubernetes' defaults (no initial delay, every 10 s, 1 s
    /// timeout, thresholds 1 and 3).
    pub fn new(pod: PodKey, ip: IpAddr, action: ProbeAction) -> Self {
        ProbeSpec {
            pod,
            ip,
            action,
            initial_delay: Duration::ZERO,
            period: Self::DEFAULT_PERIOD,
            timeout: Self::DEFAULT_TIMEOUT,
            success_threshold: 1,
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
            proxy_protocol: None,
        }
    }

    /// Sets period and timeout (builder style).
    pub fn with_timing(mut self, period: Duration, timeout: Duration) -> Self {
        self.period = period;
        self.timeout = timeout;
        self
    }

    /// Sets the thresholds (builder style); zero is taken as one.
    pub fn with_thresholds(mut self, success: u32, failure: u32) -> Self {
        self.success_threshold = success.max(1);
        self.failure_threshold = failure.max(1);
        self
    }

    /// Sets the initial delay (builder style).
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }
}

/// When, within its first period, the probe of `pod` first runs (after the
/// initial delay). A stable hash of the pod key spreads a thousand pods
/// evenly over the period, so they never probe in lock-step, and a pod keeps
/// its slot across restarts.
pub fn start_offset(pod: &PodKey, period: Duration) -> Duration {
    // FNV-1a over "namespace/name", then a murmur3 finalizer so that keys that
    // differ in one digit land far apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod
        .namespace
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(pod.name.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let fraction = (h >> 11) as f64 / (1u64 << 53) as f64;
    period.mul_f64(fraction)
}

/// Longest ejection, however often an endpoint keeps failing (unless the base
/// itself is longer).
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Passive health of one endpoint of one service port: consecutive dial
/// failures and the ejection they caused. Shared (`Arc`) by every snapshot in
/// which the endpoint survives, like its counters.
///
/// The pick path calls [`EndpointHealth::is_ejected`], which is one relaxed
/// load while the endpoint is not ejected; the lock is taken only by dial
/// results that change something and by picks of an ejected endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// Fast path: true while `state.until` may be in the future.
    ejected: AtomicBool,
    /// Fast path: true while `state` differs from the default.
    dirty: AtomicBool,
    state: Mutex<Passive>,
}

#[derive(Debug, Default, Clone)]
struct Passive {
    failures: u32,
    ejections: u32,
    until: Option<Instant>,
    since: Option<SystemTime>,
}

/// An endpoint's current ejection, for views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// When it was ejected (wall clock).
    pub since: SystemTime,
    /// When it may take connections again.
    pub until: Instant,
    /// Ejections in a row without a successful dial between them.
    pub count: u32,
}

impl EndpointHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, Passive> {
        // Every update leaves the state consistent, so a poisoned lock is fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the endpoint is ejected at `now` (before the panic rule, which
    /// [`crate::ServicePort`] applies per port).
    #[inline]
    pub fn is_ejected(&self, now: Instant) -> bool {
        if !self.ejected.load(Ordering::Relaxed) {
            return false;
        }
        self.state().until.is_some_and(|until| now < until)
    }

    /// The ejection in force at `now`, if any.
    pub fn ejection(&self, now: Instant) -> Option<Ejection> {
        if !self.ejected.load(Ordering::Relaxed) {
            return None;
        }
        let s = self.state();
        match (s.until, s.since) {
            (Some(until), Some(since)) if now < until => Some(Ejection {
                since,
                until,
                count: s.ejections,
            }),
            _ => None,
        }
    }

    /// Dial failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        if !self.dirty.load(Ordering::Relaxed) {
            return 0;
        }
        self.state().failures
    }

    /// A dial succeeded: the failure count and the back-off start over.
    #[inline]
    pub fn record_success(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            return;
        }
        *self.state() = Passive::default();
        self.ejected.store(false, Ordering::Relaxed);
        self.dirty.store(false, Ordering::Relaxed);
    }

    /// A dial failed at `now` (`wall` is the same moment on the wall clock).
    /// After `threshold` failures in a row (0 = ejection off) the endpoint is
    /// ejected for `base`, doubled for each ejection in a row up to
    /// [`MAX_EJECTION`]; once an ejection has run out, one more failure ejects
    /// it again. Returns the new ejection's length, if this failure ejected it.
    pub fn record_failure(
        &self,
        now: Instant,
        wall: SystemTime,
        threshold: u32,
        base: Duration,
    ) -> Option<Duration> {
        if threshold == 0 {
            return None;
        }
        let mut s = self.state();
        self.dirty.store(true, Ordering::Relaxed);
        s.failures = s.failures.saturating_add(1);
        if s.until.is_some_and(|until| now < until) {
            return None;
        }
        if s.failures < threshold && s.ejections == 0 {
            return None;
        }
        s.ejections = s.ejections.saturating_add(1);
        let doublings = (s.ejections - 1).min(16);
        let length = base
            .checked_mul(1 << doublings)
            .unwrap_or(MAX_EJECTION)
            .min(MAX_EJECTION.max(base));
        s.until = Some(now + length);
        s.since = Some(wall);
        s.failures = 0;
        self.ejected.store(true, Ordering::Relaxed);
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_pods_spread_over_the_period() {
        let period = Duration::from_secs(10);
        let mut tenths = [0usize; 10];
        for i in 0..1000 {
            let key = PodKey::new("default", format!("web-{i}"));
            let offset = start_offset(&key, period);
            assert!(offset < period);
            tenths[(offset.as_millis() / 1000) as usize] += 1;
        }
        for (i, n) in tenths.iter().enumerate() {
            assert!(*n <= 150, "tenth {i} holds {n} of 1000 probes: {tenths:?}");
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets() {
        let h = EndpointHealth::default();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let base = Duration::from_secs(10);
        assert_eq!(h.record_failure(t0, wall, 3, base), None);
        assert_eq!(h.record_failure(t0, wall, 3, base), None);
        h.record_success();
        assert_eq!(h.record_failure(t0, wall, 3, base), None);
        assert_eq!(h.record_failure(t0, wall, 3, base), None);
        assert_eq!(h.record_failure(t0, wall, 3, base), Some(base));
        assert!(h.is_ejected(t0));
        assert!(h.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!h.is_ejected(t0 + base));
        // Still failing after the ejection ran out: ejected again, for longer.
        let t1 = t0 + base;
        assert_eq!(h.record_failure(t1, wall, 3, base), Some(base * 2));
        let t2 = t1 + base * 2;
        assert_eq!(h.record_failure(t2, wall, 3, base), Some(base * 4));
        h.record_success();
        assert!(!h.is_ejected(t2));
        assert_eq!(h.consecutive_failures(), 0);
    }

    #[test]
    fn ejection_grows_to_a_cap_and_can_be_off() {
        let h = EndpointHealth::default();
        let mut t = Instant::now();
        let wall = SystemTime::now();
        let base = Duration::from_secs(10);
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            if let Some(d) = h.record_failure(t, wall, 1, base) {
                last = d;
                t += d;
            }
        }
        assert_eq!(last, MAX_EJECTION);
        let off = EndpointHealth::default();
        for _ in 0..10 {
            assert_eq!(off.record_failure(t, wall, 0, base), None);
        }
        assert!(!off.is_ejected(t));
    }
}
