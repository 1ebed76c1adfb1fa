//! `/api/v1/connections`: the open TCP connections of the data plane's
//! registry as the API shows them, a page at a time (Kubernetes' list
//! pagination: `limit` and `continue`).

use std::time::Instant;

use lb_core::ServicePortKey;
use serde::{Deserialize, Serialize};

use super::time::format_rfc3339;
use crate::dataplane::connections::OpenConnection;

/// Largest page `/api/v1/connections` returns, whatever `limit` asks.
pub const MAX_PAGE: usize = 5000;

/// Body of `GET /api/v1/connections`: one page of open connections, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConnectionList {
    /// The connections of this page.
    pub items: Vec<ConnectionView>,
    /// Pass as `?continue=` for the next page; empty on the last page
    /// (Kubernetes' list pagination).
    #[serde(default, rename = "continue")]
    pub continue_token: String,
    /// Open connections in all, across pages.
    #[serde(default)]
    pub total: usize,
}

/// One open connection as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    /// Registry id.
    pub id: u64,
    /// `IP:PORT` of the client.
    pub client: String,
    /// `IP:PORT` the client connected to.
    pub frontend: String,
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Service port name, or its number when unnamed.
    pub port: String,
    /// `TCP`.
    pub protocol: String,
    /// `IP:PORT` of the endpoint.
    pub endpoint: String,
    /// `round_robin`, `affinity` or `failover`.
    pub pick_reason: String,
    /// When it was accepted, RFC 3339 in UTC.
    pub started: String,
    /// Seconds since it was accepted.
    pub age_seconds: u64,
    /// Bytes from the client so far.
    pub bytes_rx: u64,
    /// Bytes to the client so far.
    pub bytes_tx: u64,
}

/// The service port's label: its name, or its number when unnamed. One
/// spelling for the `port` label of `/metrics`, the connections view and
/// the endpoint-state events, so they can be matched with each other.
pub fn port_label(key: &ServicePortKey) -> String {
    if key.port_name.is_empty() {
        key.port.to_string()
    } else {
        key.port_name.clone()
    }
}

impl ConnectionView {
    /// The API view of `c` at `now`.
    pub fn new(c: &OpenConnection, now: Instant) -> ConnectionView {
        ConnectionView {
            id: c.id,
            client: c.client.to_string(),
            frontend: c.frontend.to_string(),
            namespace: c.port.key().service.namespace.clone(),
            service: c.port.key().service.name.clone(),
            port: port_label(c.port.key()),
            protocol: c.port.key().protocol.to_string(),
            endpoint: c.endpoint.to_string(),
            pick_reason: c.reason.to_string(),
            started: format_rfc3339(c.started),
            age_seconds: now.saturating_duration_since(c.opened).as_secs(),
            bytes_rx: lb_core::stats::read(&c.bytes.rx),
            bytes_tx: lb_core::stats::read(&c.bytes.tx),
        }
    }
}

/// One page of `all` (sorted by id): at most `limit` connections (capped at
/// [`MAX_PAGE`]; 0 = the cap) with an id above `after`.
pub fn page(all: &[OpenConnection], limit: usize, after: u64, now: Instant) -> ConnectionList {
    let limit = if limit == 0 {
        MAX_PAGE
    } else {
        limit.min(MAX_PAGE)
    };
    let start = all.partition_point(|c| c.id <= after);
    let rest = &all[start..];
    let items: Vec<ConnectionView> = rest
        .iter()
        .take(limit)
        .map(|c| ConnectionView::new(c, now))
        .collect();
    let continue_token = if rest.len() > limit {
        items.last().map(|c| c.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    ConnectionList {
        items,
        continue_token,
        total: all.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::connections::fixtures::{conn, web_port};
    use crate::dataplane::connections::Connections;

    #[test]
    fn pages_continue_after_the_last_id() {
        let registry = Connections::default();
        let port = web_port();
        let _guards: Vec<_> = (1..=5).map(|n| registry.insert(conn(n, &port))).collect();
        let all = registry.list();
        let first = page(&all, 2, 0, Instant::now());
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.total, 5);
        let after: u64 = first.continue_token.parse().unwrap();
        let second = page(&all, 10, after, Instant::now());
        assert_eq!(second.items.len(), 3);
        assert!(second.continue_token.is_empty());
        assert_eq!(second.items[0].port, "80");
    }
}
