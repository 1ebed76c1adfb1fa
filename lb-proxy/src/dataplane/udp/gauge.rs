//! A UDP flow's share of the live gauges (the port's sessions, the
//! endpoint's active flows), given back when dropped.

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
