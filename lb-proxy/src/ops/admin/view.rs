//! [`ProxyView`]: the admin API over a running proxy's parts, for the App and
//! for programs that mount lb's router in their own axum application.

use std::collections::BTreeMap;
use std::sync::Arc;

use lb_config::source::SourceStats;
use lb_core::health::PodKey;
use lb_core::{FrontendKey, ProxySettings, Snapshot};

use crate::control::probe::ProbeStatus;
use crate::control::ControlPlane;
use crate::dataplane::connections::OpenConnection;
use crate::dataplane::DataPlane;
use crate::ops::admin::AdminSource;
use crate::ops::metrics::{Exposition, Sources};
use crate::ops::status::{EventList, History, RatesList};
use crate::ops::views::Transitions;

/// What the admin API reads of a running proxy: its data plane and, when
/// there is one, its control plane (readiness of the sources, probe
/// verdicts, reloads, events) and DNS responder (its answer counts).
#[derive(Debug)]
pub struct ProxyView {
    dataplane: DataPlane,
    control: Option<ControlPlane>,
    #[cfg(feature = "dns")]
    dns: Option<crate::ops::dns::Dns>,
    transitions: Arc<Transitions>,
    history: Option<Arc<History>>,
}

impl ProxyView {
    /// A view of `dataplane` alone: always ready, no probes, no reloads.
    pub fn new(dataplane: DataPlane) -> Self {
        ProxyView {
            dataplane,
            control: None,
            #[cfg(feature = "dns")]
            dns: None,
            transitions: Arc::default(),
            history: None,
        }
    }

    /// Reads the services' recent rates from `history` (which its owner
    /// samples; the App runs [`History::run`]).
    pub fn with_history(mut self, history: Arc<History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Shares `transitions` with whoever else stamps the conditions (the
    /// App's follower stamps them at each published table, so a condition's
    /// `lastTransitionTime` is when it changed, not when it was first asked).
    pub fn with_transitions(mut self, transitions: Arc<Transitions>) -> Self {
        self.transitions = transitions;
        self
    }

    /// Adds the control plane that feeds the data plane.
    pub fn with_control(mut self, control: ControlPlane) -> Self {
        self.control = Some(control);
        self
    }

    /// Adds the DNS responder, whose answers `/metrics` counts.
    #[cfg(feature = "dns")]
    pub fn with_dns(mut self, dns: Option<crate::ops::dns::Dns>) -> Self {
        self.dns = dns;
        self
    }
}

impl ProxyView {
    /// A scrape of `/metrics` as things are now: the table's ports, reload
    /// and source counters, DNS answers, host resolutions, `/proc/self`.
    fn exposition(&self) -> Exposition {
        let default_reloads = crate::control::ReloadCounters::default();
        let (reloads, lookups, stats) = match &self.control {
            Some(control) => {
                let hosts = control.hosts();
                (
                    control.reloads(),
                    (hosts.lookups(), hosts.failures()),
                    control.source_stats(),
                )
            }
            None => (&default_reloads, (0, 0), Vec::new()),
        };
        let source_stats: Vec<(&str, SourceStats)> =
            stats.iter().map(|(name, s)| (name.as_str(), *s)).collect();
        #[cfg(feature = "dns")]
        let dns = self.dns.as_ref().map(|d| d.counters());
        #[cfg(not(feature = "dns"))]
        let dns = None;
        Exposition::new(
            &self.dataplane.table().load(),
            &Sources {
                reloads,
                dns,
                host_lookups: (lookups.0 > 0).then_some(lookups),
                process: true,
                source_stats: &source_stats,
            },
        )
    }
}

/// `/readyz`'s words for frontends the data plane could not bind, one line
/// each with the service port that owns it; `None` when every one is bound.
fn unbound_frontends(dataplane: &DataPlane) -> Option<String> {
    let errors = dataplane.bind_errors();
    if errors.is_empty() {
        return None;
    }
    let snapshot = dataplane.table().load();
    let lines: Vec<String> = errors
        .iter()
        .map(
            |(key, error)| match snapshot.frontend(key.addr, key.protocol) {
                Some(entry) => format!("service port {}: {error}", entry.port.key()),
                None => error.to_string(),
            },
        )
        .collect();
    Some(lines.join("\n"))
}

impl AdminSource for ProxyView {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.dataplane.table().load()
    }

    fn bind_errors(&self) -> BTreeMap<FrontendKey, String> {
        self.dataplane
            .bind_errors()
            .into_iter()
            .map(|(k, e)| (k, e.to_string()))
            .collect()
    }

    fn readiness(&self) -> Option<String> {
        // The last good config is always current for the file and the
        // manifests (a reload that failed validation does not make us
        // unready); etcd is stale while it cannot be reached. A frontend
        // that cannot be bound serves no one: not ready until it binds
        // (the data plane retries), naming each one.
        let control = self.control.as_ref().and_then(ControlPlane::readiness);
        let unbound = unbound_frontends(&self.dataplane);
        match (control, unbound) {
            (None, None) => None,
            (Some(r), None) | (None, Some(r)) => Some(r),
            (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
        }
    }

    fn metrics(&self) -> String {
        self.exposition().into_string()
    }

    fn metrics_chunks(&self) -> Box<dyn Iterator<Item = Vec<u8>> + Send> {
        Box::new(self.exposition())
    }

    fn probes(&self) -> BTreeMap<PodKey, ProbeStatus> {
        self.control
            .as_ref()
            .map(ControlPlane::probes)
            .unwrap_or_default()
    }

    fn connections(&self) -> Vec<OpenConnection> {
        self.dataplane.connections().list()
    }

    fn config(&self) -> Option<Arc<lb_config::Config>> {
        self.control.as_ref().map(ControlPlane::config)
    }

    fn transitions(&self) -> Option<&Transitions> {
        Some(&self.transitions)
    }

    fn events(&self) -> EventList {
        self.control
            .as_ref()
            .map(|c| c.events().list())
            .unwrap_or_default()
    }

    fn settings(&self) -> Option<ProxySettings> {
        Some((*self.dataplane.settings()).clone())
    }

    fn descriptors(&self) -> Option<crate::dataplane::DescriptorBudget> {
        Some(self.dataplane.descriptors())
    }

    fn rates(&self) -> RatesList {
        match &self.history {
            Some(history) => history.list(),
            None => RatesList {
                interval_seconds: crate::ops::status::history::SAMPLE_PERIOD.as_secs(),
                items: Vec::new(),
            },
        }
    }
}
