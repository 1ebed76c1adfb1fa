//! A source whose state a program sets: an embedder's own discovery feeds
//! lb through it, and tests use it to change objects without files.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ConfigErrors;
use crate::source::{Changed, DesiredState, Source, WatchFuture};

/// Holds a whole [`DesiredState`] set with [`MemorySource::set`]; each set
/// wakes the control plane, which reads it with the other sources. Cloning is
/// shallow: keep a clone to set new states while the control plane holds the
/// source.
#[derive(Debug, Clone)]
pub struct MemorySource {
    name: String,
    state: Arc<Mutex<DesiredState>>,
    version: Arc<watch::Sender<u64>>,
}

impl MemorySource {
    /// An empty source called `name` (for logs and metrics).
    pub fn new(name: impl Into<String>) -> Self {
        MemorySource {
            name: name.into(),
            state: Arc::new(Mutex::new(DesiredState::default())),
            version: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Replaces the whole state (level-triggered: what is not in `state` is
    /// gone).
    pub fn set(&self, state: DesiredState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        self.version.send_modify(|v| *v += 1);
    }
}

impl Source for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn desired(&self) -> Result<DesiredState, ConfigErrors> {
        Ok(self.state.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn watch(self: Arc<Self>, changed: Changed, stop: CancellationToken) -> WatchFuture {
        Box::pin(async move {
            let mut version = self.version.subscribe();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = version.changed() => match r {
                        Ok(()) => changed.notify(),
                        Err(_) => return,
                    },
                }
            }
        })
    }
}
