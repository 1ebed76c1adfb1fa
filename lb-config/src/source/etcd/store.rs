//! [`EtcdStore`]: the allocations every node must agree on, in one etcd key
//! written with a compare-and-swap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lb_core::alloc::{AllocationStore, Allocations, StoreError};
use tokio::runtime::Handle;

use super::client::Client;
use super::EtcdSettings;

/// Allocations shared by every node through one etcd key, written with a
/// compare-and-swap on its `mod_revision`: a node that lost the race reads
/// the winner's allocations and allocates again from them, so every node
/// serves the same cluster IPs, node ports and LoadBalancer addresses.
///
/// lb-core's [`AllocationStore`] is synchronous, the etcd client async: the
/// store blocks on the client with the runtime [`Handle`] it was made with.
/// So `load` and `save` (that is, a [`Loader`](crate::Loader) holding this
/// store) must run off that runtime's worker threads, on a blocking thread
/// (`tokio::task::spawn_blocking`) or a thread of one's own, where
/// [`Handle::block_on`] is allowed; called from async code they panic.
/// Each request is bounded by the client's timeouts. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    key: String,
    client: Client,
    runtime: Handle,
    /// The mod_revision of the value last read (0: the key did not exist).
    seen: Mutex<i64>,
    /// Set when a save lost a compare-and-swap.
    conflicted: AtomicBool,
}

impl EtcdStore {
    /// A store at `<prefix>/allocations` whose requests run on `runtime`
    /// (see the type's docs for where it may then be called).
    pub fn new(settings: EtcdSettings, runtime: Handle) -> Self {
        EtcdStore {
            inner: Arc::new(StoreInner {
                key: settings.allocations_key(),
                client: Client::new(settings.client),
                runtime,
                seen: Mutex::new(0),
                conflicted: AtomicBool::new(false),
            }),
        }
    }

    /// Whether a save lost a race since the last call (the caller loads
    /// again, which reads the winner's allocations).
    pub fn take_conflict(&self) -> bool {
        self.inner.conflicted.swap(false, Ordering::Relaxed)
    }

    fn error(&self, m: impl std::fmt::Display) -> StoreError {
        StoreError {
            location: format!("etcd key {}", self.inner.key),
            message: m.to_string(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, i64> {
        self.inner.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AllocationStore for EtcdStore {
    fn load(&self) -> Result<Allocations, StoreError> {
        let inner = &self.inner;
        let kv = inner
            .runtime
            .block_on(inner.client.get(&inner.key))
            .map_err(|e| self.error(e))?;
        let (a, rev) = match kv {
            None => (Allocations::default(), 0),
            Some(kv) => (
                serde_json::from_slice(&kv.value)
                    .map_err(|e| self.error(format!("not valid allocations JSON: {e}")))?,
                kv.mod_revision,
            ),
        };
        *self.seen() = rev;
        Ok(a)
    }

    fn save(&self, allocations: &Allocations) -> Result<(), StoreError> {
        let inner = &self.inner;
        let json = serde_json::to_vec(allocations).map_err(|e| self.error(e))?;
        let seen = *self.seen();
        let written = inner
            .runtime
            .block_on(inner.client.put_if(&inner.key, &json, seen))
            .map_err(|e| self.error(e))?;
        if written {
            // Our write is the new base; the next load reads it back anyway.
            Ok(())
        } else {
            inner.conflicted.store(true, Ordering::Relaxed);
            Err(self.error("another node saved first; allocating again from its state"))
        }
    }
}
