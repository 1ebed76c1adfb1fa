//! The data plane's UDP flows: the sans-IO [`FlowTable`] with the shell's
//! resources of each flow, behind one `Mutex` for all UDP services (the bound
//! is global). The lock is held only for a decision, never across an await
//! or a send.
//!
//! Time is tokio's clock ([`now`]), as everywhere in the data plane, so tests
//! that pause time move flow expiry along with every other timer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use lb_core::{ProxySettings, Snapshot};
use tokio::io::{Interest, Ready};
use tokio::net::UdpSocket;
use tokio_util::sync::DropGuard;

use super::flows::FlowTable;
use crate::dataplane::descriptors::Held;
use crate::dataplane::proxy_header::Encoded;

/// The data plane's clock as the sans-IO table takes it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A flow's connected socket with its descriptor in the data plane's budget,
/// given back when the socket closes (the last `Arc` drops).
pub(crate) struct FlowSocket {
    socket: UdpSocket,
    _fd: Held,
}

impl FlowSocket {
    pub(super) fn new(socket: UdpSocket, fd: Held) -> Self {
        FlowSocket { socket, _fd: fd }
    }
}

impl std::ops::Deref for FlowSocket {
    type Target = UdpSocket;

    fn deref(&self) -> &UdpSocket {
        &self.socket
    }
}

/// The shell's resources of one flow. Dropping them (the flow expired, was
/// evicted or moved) closes the flow's socket at once: the frontend task's
/// wait on it is ended here ([`Watch::close`]), not when that task next
/// runs, so open flow sockets never outnumber `udp_max_flows` (bar the few
/// a batch being sent still holds). `_stop` then wakes that task's watch so
/// it forgets the flow.
pub(crate) struct FlowIo {
    pub(super) socket: Arc<FlowSocket>,
    pub(super) watch: Arc<Watch>,
    pub(super) _stop: DropGuard,
    /// The flow's span (client, endpoint), entered for its events.
    pub(super) span: tracing::Span,
    /// The PROXY protocol v2 header its datagrams to the endpoint start
    /// with, fixed when the flow opens (its client and frontend are).
    pub(super) header: Option<Arc<Encoded>>,
}

impl Drop for FlowIo {
    fn drop(&mut self) {
        self.watch.close();
    }
}

/// A wait for readability or an error on a flow's socket (ICMP port
/// unreachable arrives as `EPOLLERR` alone; tokio has no poll form of a
/// wait with the error interest, so it is a boxed future holding the
/// socket).
type ReadyFuture = Pin<Box<dyn Future<Output = std::io::Result<Ready>> + Send>>;

/// The frontend task's wait on one flow's socket, shared with the flow: the
/// task polls it, and the flow ends it when it drops, which drops the wait's
/// hold on the socket there and then, on whichever task evicted the flow.
pub(crate) struct Watch(Mutex<WatchState>);

enum WatchState {
    /// Waiting for the socket.
    Waiting(ReadyFuture),
    /// The socket was ready; the task is reading it and will arm again.
    Idle,
    /// The flow is gone: never armed again.
    Closed,
}

impl Watch {
    /// A watch waiting on `socket`.
    pub(super) fn new(socket: &Arc<FlowSocket>) -> Self {
        Watch(Mutex::new(WatchState::Waiting(ready(socket))))
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        // Every change replaces the whole state, so a poisoned lock still
        // holds a consistent one.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on `socket` again after its replies were read; false when the
    /// flow is gone meanwhile.
    pub(super) fn arm(&self, socket: &Arc<FlowSocket>) -> bool {
        let mut state = self.lock();
        if matches!(*state, WatchState::Closed) {
            return false;
        }
        *state = WatchState::Waiting(ready(socket));
        true
    }

    /// `Ready(true)` once the socket has a reply or an error, `Ready(false)`
    /// when there is nothing to wait for (the flow is gone, the runtime
    /// stops).
    pub(super) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        let WatchState::Waiting(ready) = &mut *state else {
            return Poll::Ready(false);
        };
        let ok = std::task::ready!(ready.as_mut().poll(cx)).is_ok();
        *state = WatchState::Idle;
        Poll::Ready(ok)
    }

    fn close(&self) {
        *self.lock() = WatchState::Closed;
    }
}

fn ready(socket: &Arc<FlowSocket>) -> ReadyFuture {
    let socket = socket.clone();
    Box::pin(async move { socket.ready(Interest::READABLE | Interest::ERROR).await })
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
        let mut table = FlowTable::new(settings.udp_idle_timeout, settings.udp_max_flows as usize);
        table.set_access_log(settings.access_log);
        Flows {
            table: Mutex::new(table),
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

    /// New `udp_idle_timeout` / `udp_max_flows` / `[log] access` from a
    /// reload.
    pub(crate) fn set_limits(&self, settings: &ProxySettings) {
        let mut table = self.lock();
        table.set_limits(
            settings.udp_idle_timeout,
            settings.udp_max_flows as usize,
            now(),
        );
        table.set_access_log(settings.access_log);
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
