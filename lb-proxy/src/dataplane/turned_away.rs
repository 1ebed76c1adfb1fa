//! The warning that a service port turns its clients away: every dial
//! failed, or it has no endpoint (a TCP client reset, a UDP datagram
//! dropped). Without it, a proxy whose backends are down resets clients
//! silently at the default log level.
//!
//! It comes with every client once it starts, so it is paced per service
//! port: one line per [`INTERVAL`], saying how many were held back since the
//! previous one. Pacing costs two relaxed atomics of the port's counters
//! (`PortStats::turned_away`, carried over reloads) and a clock read, no
//! lock and no allocation; the reason is formatted only for a line that is
//! logged.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use lb_core::ServicePort;
use tracing::warn;

/// At most one warning per service port this often.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Warns (paced) that a client of `port` at `frontend` was turned away
/// because of `why`.
pub(crate) fn warn(port: &ServicePort, frontend: SocketAddr, why: &dyn Display) {
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let interval_ms = INTERVAL.as_millis() as u64;
    if let Some(suppressed) = port.stats().turned_away.event(now_ms, interval_ms) {
        let turned = match port.key().protocol {
            lb_core::Protocol::Tcp => "client reset",
            lb_core::Protocol::Udp => "datagram dropped",
        };
        warn!(service = %port.key(), %frontend, suppressed,
            "{turned}: {why} ({suppressed} more since the last warning; one per {}s per service port)",
            INTERVAL.as_secs());
    }
}
