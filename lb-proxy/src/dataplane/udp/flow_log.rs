//! A UDP flow's access log record: what `[log] access` writes when a flow
//! ends or leaves its endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use lb_core::stats;
use lb_core::{Protocol, ServicePortKey};

use super::flows::FlowKey;
use crate::dataplane::access::{self, Rejected};
use crate::dataplane::forward::ConnBytes;

/// A flow's access log record: since when it goes to its endpoint, why
/// there, and its bytes (counted by the shell, read when it ends).
#[derive(Debug)]
pub(super) struct FlowLog {
    started: Instant,
    reason: &'static str,
    /// Counted into by the shell, read when the flow ends.
    pub(super) bytes: Arc<ConnBytes>,
}

/// Why a flow ended (or left its endpoint), as the access log says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlowEnd {
    /// Idle past `udp_idle_timeout`.
    IdleTimeout,
    /// Evicted, idle longest, to make room under `udp_max_flows`.
    Evicted,
    /// Its endpoint (or port, or frontend) left the table.
    Drained,
    /// A send to its endpoint failed (ICMP unreachable): the UDP reset.
    Reset,
    /// Its frontend closed or the data plane stopped.
    Stopped,
    /// Never forwarded: turned away before its first datagram left.
    Rejected(Rejected),
}

impl FlowEnd {
    fn cause(self) -> &'static str {
        use lb_core::stats::CloseCause;
        match self {
            FlowEnd::IdleTimeout => CloseCause::IdleTimeout.as_str(),
            FlowEnd::Evicted => "evicted",
            FlowEnd::Drained => CloseCause::Drained.as_str(),
            FlowEnd::Reset => CloseCause::Reset.as_str(),
            FlowEnd::Stopped => CloseCause::Stopped.as_str(),
            FlowEnd::Rejected(_) => access::REJECTED,
        }
    }
}

impl FlowLog {
    /// A record for a flow beginning at `now`, sent to its endpoint for
    /// `reason`.
    pub(super) fn new(now: Instant, reason: &'static str) -> Box<FlowLog> {
        Box::new(FlowLog {
            started: now,
            reason,
            bytes: Arc::default(),
        })
    }

    /// Writes the line for a flow of `port` from `key` to `endpoint` that
    /// ended for `end`: its duration runs from its first datagram to its
    /// last (`last_seen`).
    pub(super) fn write(
        self,
        key: &FlowKey,
        port: &ServicePortKey,
        endpoint: SocketAddr,
        last_seen: Instant,
        end: FlowEnd,
    ) {
        let rejected = match end {
            FlowEnd::Rejected(why) => Some(why),
            _ => None,
        };
        access::log(&access::Entry {
            protocol: Protocol::Udp,
            client: key.client,
            frontend: key.frontend,
            service: port,
            endpoint: rejected.is_none().then_some(endpoint),
            reason: rejected.is_none().then_some(self.reason),
            bytes_rx: stats::read(&self.bytes.rx),
            bytes_tx: stats::read(&self.bytes.tx),
            duration: last_seen.saturating_duration_since(self.started),
            cause: end.cause(),
            rejected,
        });
    }
}
