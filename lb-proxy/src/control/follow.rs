//! Following the published table: the one loop that keeps something outside
//! the table in step with it (health-check listeners, interface addresses,
//! the endpoint-state events), instead of one hand-written loop each.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lb_core::Snapshot;
use tokio_util::sync::CancellationToken;

use crate::dataplane::DataPlane;

/// How often a follower that asked to be tried again is called without a
/// new snapshot.
pub const RETRY: Duration = Duration::from_secs(1);

/// What a [`Follower`] says after bringing its part in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// In step with the snapshot: call again on the next one.
    Done,
    /// Something failed (a bind, a netlink call): call again after
    /// [`RETRY`] even if no snapshot comes.
    Retry,
}

/// Something kept in step with the published table.
pub trait Follower: Send {
    /// Brings this follower in step with `snapshot`.
    fn reconcile(&mut self, snapshot: Arc<Snapshot>) -> impl Future<Output = Reconciled> + Send;
}

/// Calls `follower` with the current snapshot, then with every snapshot the
/// data plane publishes (and after [`RETRY`] while it asks to be retried),
/// until `stop` is cancelled or the data plane is gone. Snapshots published
/// while a reconcile runs are seen once, by the next call: followers are
/// level-triggered.
pub async fn follow(dataplane: &DataPlane, stop: &CancellationToken, follower: &mut impl Follower) {
    let mut generation = dataplane.subscribe();
    let table = dataplane.table();
    loop {
        generation.borrow_and_update();
        let retry = follower.reconcile(table.load()).await == Reconciled::Retry;
        tokio::select! {
            () = stop.cancelled() => return,
            // An error: the data plane is gone, nothing new will come.
            changed = generation.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY), if retry => {}
        }
    }
}
