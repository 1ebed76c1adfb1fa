//! The access log (`[log] access = true`): one event per TCP connection and
//! per UDP flow when it ends, on its own target ([`TARGET`]) at INFO, so the
//! default filter shows it and `RUST_LOG=lb_proxy::access=off` silences it
//! alone. Its fields are structured, so `--log-format json` gives one object
//! per line; the binary's text format prints them as one nginx-like line.
//!
//! When the setting is off, the data path reads a `bool` it loaded anyway
//! (the settings of the connection or flow) and nothing else: no event is
//! built and nothing is formatted.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use lb_core::{Protocol, ServicePortKey};

/// The target of access log events: filter on it (`RUST_LOG`), or tell
/// them from the proxy's own events in a subscriber.
pub const TARGET: &str = "lb_proxy::access";

/// The `cause` of a connection that was turned away before it reached an
/// endpoint; its `rejected` field says why.
pub(crate) const REJECTED: &str = "rejected";

/// Why a connection was turned away (the `rejected` field): the `reason`
/// label of `lb_connections_rejected_total`, and `connect_failed` when
/// every dial failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// The port had no endpoint to pick.
    NoEndpoints,
    /// Every dial failed or timed out.
    ConnectFailed,
    /// Over `max_connections`.
    Limit,
    /// Outside `load_balancer_source_ranges`.
    SourceRange,
    /// The proxy was short of descriptors, buffers or local ports.
    LocalResources,
    /// Every endpoint left was one of the proxy's own frontends.
    SelfLoop,
    /// `accept_proxy_protocol`: no valid PROXY header in time, or one from
    /// an untrusted source.
    ProxyProtocol,
}

impl Rejected {
    /// The word in the log.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejected::NoEndpoints => "no_endpoints",
            Rejected::ConnectFailed => "connect_failed",
            Rejected::Limit => "limit",
            Rejected::SourceRange => "source_range",
            Rejected::LocalResources => "local_resources",
            Rejected::SelfLoop => "self_loop",
            Rejected::ProxyProtocol => "proxy_protocol",
        }
    }
}

/// One ended connection or flow, as the access log tells it. Borrowed from
/// the connection task, so building it costs nothing but the copies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// `TCP` or `UDP`.
    pub(crate) protocol: Protocol,
    /// The client's address and port.
    pub(crate) client: SocketAddr,
    /// The frontend it connected (or sent) to.
    pub(crate) frontend: SocketAddr,
    /// The service port (`namespace/name:port/PROTOCOL`).
    pub(crate) service: &'a ServicePortKey,
    /// The endpoint, `None` when the connection was turned away.
    pub(crate) endpoint: Option<SocketAddr>,
    /// How the endpoint was chosen: `round_robin`, `affinity`, `failover`
    /// (`None` when turned away).
    pub(crate) reason: Option<&'static str>,
    /// Bytes from the client to the endpoint.
    pub(crate) bytes_rx: u64,
    /// Bytes from the endpoint to the client.
    pub(crate) bytes_tx: u64,
    /// From accept (or the flow's first datagram) to the end.
    pub(crate) duration: Duration,
    /// Why it ended: a `CloseCause` word (UDP adds `evicted`), or
    /// [`REJECTED`].
    pub(crate) cause: &'static str,
    /// Why it was turned away, when it was.
    pub(crate) rejected: Option<Rejected>,
}

/// An optional value as the log shows it: `-` when absent, as nginx does.
struct Or<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Or<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Emits `entry` on [`TARGET`] at INFO. The caller has checked that the
/// access log is on.
pub(crate) fn log(entry: &Entry<'_>) {
    tracing::info!(
        target: TARGET,
        protocol = %entry.protocol,
        client = %entry.client,
        frontend = %entry.frontend,
        service = %entry.service,
        endpoint = %Or(entry.endpoint),
        reason = entry.reason.unwrap_or("-"),
        bytes_rx = entry.bytes_rx,
        bytes_tx = entry.bytes_tx,
        duration_ms = u64::try_from(entry.duration.as_millis()).unwrap_or(u64::MAX),
        cause = entry.cause,
        rejected = %Or(entry.rejected.map(Rejected::as_str)),
        "access"
    );
}
