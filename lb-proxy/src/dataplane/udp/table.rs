//! The data plane's UDP flows: the sans-IO [`FlowTable`] with the shell's
//! resources of each flow, behind one `Mutex` for all UDP services (the bound
//! is global). The lock is held only for a decision, never across an await
//! or a send.
//!
//! Time is tokio's clock ([`now`]), as everywhere in the data plane, so tests
//! that pause time move flow expiry along with every other timer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lb_core::{ProxySettings, Snapshot};
use tokio::net::UdpSocket;
use tokio_util::sync::DropGuard;

use super::flows::FlowTable;

/// The data plane's clock as the sans-IO table takes it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The shell's resources of one flow. Dropping them (the flow expired, was
/// evicted or moved) cancels `_stop`, which ends the frontend task's watch on
/// the socket and so closes it.
pub(crate) struct FlowIo {
    pub(super) socket: Arc<UdpSocket>,
    pub(super) _stop: DropGuard,
    /// The flow's span (client, endpoint), entered for its events.
    pub(super) span: tracing::Span,
}

/// Every UDP flow of the data plane.
pub(crate) struct Flows {
    table: Mutex<FlowTable<FlowIo>>,
}

impl std::fmt::Debug for FlowIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowIo").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows")
            .field("len", &self.lock().len())
            .finish()
    }
}

impl Flows {
    /// An empty table with the limits of `settings`.
    pub(crate) fn new(settings: &ProxySettings) -> Self {
        Flows {
            table: Mutex::new(FlowTable::new(
                settings.udp_idle_timeout,
                settings.udp_max_flows as usize,
            )),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, FlowTable<FlowIo>> {
        // Table operations do not panic on any input; if one ever did, the
        // table is still usable (at worst a flow lingers until it expires).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-points or closes the flows a new snapshot affects, at once.
    pub(crate) fn apply(&self, snapshot: &Snapshot) {
        self.lock().apply(snapshot, now());
    }

    /// New `udp_idle_timeout` / `udp_max_flows` from a reload.
    pub(crate) fn set_limits(&self, settings: &ProxySettings) {
        self.lock().set_limits(
            settings.udp_idle_timeout,
            settings.udp_max_flows as usize,
            now(),
        );
    }

    /// Frees the resources of flows idle past the timeout.
    pub(crate) fn expire(&self) -> usize {
        self.lock().expire(now())
    }

    /// Forgets the flows of a frontend whose socket closes.
    pub(crate) fn close_frontend(&self, frontend: SocketAddr) {
        self.lock().retain_frontends(|f| f != frontend);
    }

    /// Forgets every flow (the data plane stops).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Flows open now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
