//! Live counters that the data path bumps and the admin views read. They live in
//! `Arc`s that a new snapshot takes over for the same service port or endpoint,
//! so figures survive reloads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one endpoint of one service port.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Connections open to this endpoint now.
    pub active: AtomicU64,
    /// Connections ever established to this endpoint.
    pub connections: AtomicU64,
    /// Dials that failed or timed out.
    pub connect_errors: AtomicU64,
    /// Bytes from clients to the endpoint.
    pub bytes_rx: AtomicU64,
    /// Bytes from the endpoint to clients.
    pub bytes_tx: AtomicU64,
}

/// Counters of one service port.
#[derive(Debug, Default)]
pub struct PortStats {
    /// Connections open now (what `max_connections` bounds).
    pub active: AtomicU64,
    /// Connections accepted from clients.
    pub accepted: AtomicU64,
    /// Connections refused because no endpoint could take them.
    pub rejected_no_endpoints: AtomicU64,
    /// Connections refused by `max_connections`.
    pub rejected_limit: AtomicU64,
    /// Connections refused by `load_balancer_source_ranges`.
    pub rejected_source_range: AtomicU64,
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
    /// UDP flows evicted (idle longest first) to make room under `udp_max_flows`.
    pub udp_evicted: AtomicU64,
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

/// Subtracts from a gauge (one that `add` raised before).
#[inline]
pub fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}
