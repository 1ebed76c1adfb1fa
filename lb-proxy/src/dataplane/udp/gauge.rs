//! The flow table's counts: a UDP flow's share of the live gauges (the
//! port's sessions, the endpoint's active flows), given back when dropped,
//! and the table's own event totals.

use std::sync::Arc;

use lb_core::stats::{self, EndpointStats, PortStats};

/// Holds a flow's share of the live gauges (port sessions, endpoint active
/// flows) and gives it back when dropped, so no exit path can leak a count.
pub(super) struct Gauge {
    pub(super) port: Arc<PortStats>,
    pub(super) endpoint: Arc<EndpointStats>,
}

impl Gauge {
    pub(super) fn new(port: Arc<PortStats>, endpoint: Arc<EndpointStats>) -> Self {
        stats::add(&port.udp_sessions, 1);
        stats::add(&endpoint.active, 1);
        stats::add(&endpoint.connections, 1);
        Gauge { port, endpoint }
    }

    /// Follows the counters of a new snapshot: a port or endpoint that left
    /// and came back has new ones, and the gauges must be the ones shown.
    pub(super) fn follow(&mut self, port: &Arc<PortStats>, endpoint: &Arc<EndpointStats>) {
        if !Arc::ptr_eq(&self.port, port) {
            stats::sub(&self.port.udp_sessions, 1);
            stats::add(&port.udp_sessions, 1);
            self.port = port.clone();
        }
        if !Arc::ptr_eq(&self.endpoint, endpoint) {
            stats::sub(&self.endpoint.active, 1);
            stats::add(&endpoint.active, 1);
            self.endpoint = endpoint.clone();
        }
    }

    pub(super) fn repoint(&mut self, endpoint: Arc<EndpointStats>) {
        stats::sub(&self.endpoint.active, 1);
        stats::add(&endpoint.active, 1);
        stats::add(&endpoint.connections, 1);
        self.endpoint = endpoint;
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        stats::sub(&self.port.udp_sessions, 1);
        stats::sub(&self.endpoint.active, 1);
    }
}

/// Totals of the table's own events, for tests and debugging (the per-port
/// figures that metrics show live in [`PortStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Flows created.
    pub created: u64,
    /// Flows removed because they were idle past the timeout.
    pub expired: u64,
    /// Flows evicted to make room under the bound.
    pub evicted: u64,
    /// Flows re-pointed because their endpoint left or stopped being a candidate.
    pub moved: u64,
    /// Flows failed over after a send error.
    pub failed_over: u64,
    /// Flows closed because their service port (or frontend) lost every
    /// endpoint or went away.
    pub closed: u64,
    /// Datagrams dropped because their frontend is gone.
    pub dropped_no_frontend: u64,
    /// Datagrams dropped because their port has no endpoint.
    pub dropped_no_endpoints: u64,
}
