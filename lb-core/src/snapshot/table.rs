//! The one handle that publishes snapshots, and the retired list through
//! which the publisher, never a reader, frees the snapshots it replaced.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::Snapshot;
use crate::spec::{NodeSpec, ServiceSpec};

/// The one handle through which snapshots are published: writers `store` a
/// whole new table, readers `load` without ever waiting on them.
///
/// A replaced snapshot is freed by the publisher, never by a reader: freeing a
/// 10,000-service table takes tens of milliseconds, and a reader that happened
/// to hold the last reference when a swap landed used to pay for it inside a
/// connection's pick (the snapshot bench's p99). So `store` keeps each replaced
/// snapshot in `retired` and frees, on its own thread, those no reader holds
/// any more; a reader that lets go of a retired snapshot only decrements a
/// count. What readers still hold is freed by a later `store` or by
/// [`Table::collect`].
#[derive(Debug)]
pub struct Table {
    current: ArcSwap<Snapshot>,
    retired: Mutex<Vec<Arc<Snapshot>>>,
}

impl Table {
    /// A handle publishing `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Table {
            current: ArcSwap::from_pointee(snapshot),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The current snapshot (cheap; hold it for the length of one decision).
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot. The one it replaces is freed here once no
    /// reader holds it, or kept for a later `store` or [`Table::collect`].
    pub fn store(&self, snapshot: Snapshot) {
        let old = self.current.swap(Arc::new(snapshot));
        self.retire(Some(old));
    }

    /// Frees the replaced snapshots that no reader holds any more; returns how
    /// many are still held. Call it now and then (lb-proxy does every second)
    /// so a snapshot a reader held across the last `store` does not stay in
    /// memory until the next one.
    pub fn collect(&self) -> usize {
        self.retire(None)
    }

    fn retire(&self, old: Option<Arc<Snapshot>>) -> usize {
        let (dead, held) = {
            // Every update of the list is a push or a partition, so a panic
            // elsewhere while holding the lock leaves it consistent.
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            retired.extend(old);
            // A retired snapshot is no longer in `current`, so no reader can
            // take a new reference to it: a count of one (ours) stays one.
            let (dead, held): (Vec<_>, Vec<_>) =
                retired.drain(..).partition(|s| Arc::strong_count(s) == 1);
            *retired = held;
            (dead, retired.len())
        };
        // Freed outside the lock, on the publisher's thread.
        drop(dead);
        held
    }

    /// Builds the next snapshot from `services` with state carried over from the
    /// current one, and publishes it. Returns the new generation.
    pub fn rebuild<S: Into<Arc<ServiceSpec>>>(
        &self,
        node: NodeSpec,
        services: impl IntoIterator<Item = S>,
        now: SystemTime,
    ) -> u64 {
        let next = {
            let prev = self.load();
            Snapshot::build(node, services, Some(&prev), now)
            // `prev` goes here, before the store, so the retired snapshot
            // is ours alone unless a reader holds it.
        };
        let generation = next.generation();
        self.store(next);
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{node, web};
    use crate::model::SessionAffinity;

    #[test]
    fn a_replaced_snapshot_is_freed_by_the_publisher_not_the_reader() {
        let table = Table::new(Snapshot::empty(node()));
        let held = table.load();
        table.rebuild(
            node(),
            vec![web(&["127.0.0.1:1"], SessionAffinity::None)],
            SystemTime::now(),
        );
        // The reader's copy is not the last one: the table keeps it retired.
        assert_eq!(Arc::strong_count(&held), 2);
        assert_eq!(table.collect(), 1);
        drop(held);
        assert_eq!(table.collect(), 0);
        // Nobody held the previous one this time: the store freed it.
        table.rebuild(node(), Vec::<ServiceSpec>::new(), SystemTime::now());
        assert_eq!(table.collect(), 0);
    }
}
