//! What a control plane is made of ([`ControlOptions`]: its sources, the
//! allocation store, the node name) and the `[proxy]` settings that win over
//! the sources' ([`ProxyOverrides`]).

use std::sync::Arc;

use lb_config::source::{DesiredState, Source};
use lb_config::ConfigErrors;
use lb_core::alloc::AllocationStore;
use lb_core::{AcceptMode, ForwardEngine, ProxySettings};

use crate::control::rebuild::{ConflictCheck, Input};

/// `[proxy]` settings that win over what the sources say, applied to every
/// desired state: the binary maps `LB_FORWARD_ENGINE`, `LB_ACCEPT` and
/// `LB_WORKERS` onto these (the library itself reads no environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyOverrides {
    /// `forward_engine`.
    pub forward_engine: Option<ForwardEngine>,
    /// `accept_mode`.
    pub accept_mode: Option<AcceptMode>,
    /// `workers`.
    pub workers: Option<u32>,
}

impl ProxyOverrides {
    /// `settings` with the overridden values in place.
    pub fn apply(&self, settings: &mut ProxySettings) {
        if let Some(engine) = self.forward_engine {
            settings.forward_engine = engine;
        }
        if let Some(mode) = self.accept_mode {
            settings.accept_mode = mode;
        }
        if let Some(workers) = self.workers {
            settings.workers = workers;
        }
    }
}

/// What the control plane is made of: its sources and where allocations are
/// kept.
pub struct ControlOptions {
    pub(super) inputs: Vec<Input>,
    pub(super) overrides: ProxyOverrides,
    pub(super) store: Box<dyn AllocationStore>,
    pub(super) shared_store: bool,
    pub(super) conflicts: Option<ConflictCheck>,
    pub(super) node_name: Option<String>,
}

impl std::fmt::Debug for ControlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inputs.iter().map(|i| i.source.name()).collect();
        f.debug_struct("ControlOptions")
            .field("sources", &names)
            .field("shared_store", &self.shared_store)
            .finish_non_exhaustive()
    }
}

impl ControlOptions {
    /// No source yet; allocations are kept in `store` (memory, a state file,
    /// or a store shared by several nodes: see [`ControlOptions::shared`]).
    pub fn new(store: Box<dyn AllocationStore>) -> Self {
        ControlOptions {
            inputs: Vec::new(),
            overrides: ProxyOverrides::default(),
            store,
            shared_store: false,
            conflicts: None,
            node_name: None,
        }
    }

    /// Adds a source. At most one of them may carry the config file's
    /// settings ([`DesiredState::file`]).
    pub fn source(mut self, source: Arc<dyn Source>) -> Self {
        self.inputs.push(Input { source, last: None });
        self
    }

    /// Adds a source whose current state the caller already read (the file,
    /// read once at start to find `[source.etcd]`), so it is not read twice.
    pub fn source_read(
        mut self,
        source: Arc<dyn Source>,
        state: Result<DesiredState, ConfigErrors>,
    ) -> Self {
        self.inputs.push(Input {
            source,
            last: Some(state),
        });
        self
    }

    /// The store is shared by several nodes (etcd): every load starts from
    /// what it holds now, and a load whose save lost a race (`conflicts`
    /// says so) is done again from the winner's allocations.
    pub fn shared(mut self, conflicts: ConflictCheck) -> Self {
        self.shared_store = true;
        self.conflicts = Some(conflicts);
        self
    }

    /// Keeps allocations in `store` instead of the one given to
    /// [`ControlOptions::new`].
    pub fn store(mut self, store: Box<dyn AllocationStore>) -> Self {
        self.store = store;
        self
    }

    /// `[proxy]` settings that win over the sources'.
    pub fn overrides(mut self, overrides: ProxyOverrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Uses `name` instead of the hostname as the default node name (for
    /// embedders and tests that must not depend on the machine).
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.node_name = Some(name.into());
        self
    }
}
