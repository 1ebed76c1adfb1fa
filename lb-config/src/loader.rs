//! [`Loader`]: the stateful entry point that turns file text into a
//! [`Config`], keeping allocations stable across reloads and (with a
//! [`FileStore`](crate::FileStore)) restarts.

use std::path::Path;
use std::sync::Arc;

use lb_core::alloc::{AllocationStore, Allocations, MemoryStore, StoreError};

use crate::config::Config;
use crate::error::{ConfigErrors, Errors, FieldError};
use crate::raw::RawConfig;
use crate::source::read_settled;
use crate::{allocate, endpoints, parse, selection, validation};

/// Loads configs one after another. Each successful load saves its
/// allocations, and the next load starts from them, so a service that keeps
/// its name keeps its cluster IP and node ports. A load that fails changes
/// nothing.
#[derive(Debug)]
pub struct Loader {
    store: Box<dyn AllocationStore>,
    /// The last good allocations; `None` until the store has been read.
    current: Option<Allocations>,
    hostname: String,
    /// The store is shared with other nodes (etcd): read it before every
    /// load, since another node may have allocated since.
    shared: bool,
    health: StoreHealth,
    /// The `load_balancer_class` of each LoadBalancer service at the last
    /// good load: Kubernetes refuses a change of class while a service stays
    /// a LoadBalancer (the controller that gave it its address would keep
    /// it). Held in memory only: a restart forgets it.
    lb_classes: std::collections::BTreeMap<lb_core::ServiceKey, Option<String>>,
    /// The objects the last load validated, not validated again while a
    /// source hands over the same ones.
    memo: validation::Memo,
    /// The services the last good load served, carried over while they are
    /// made of the same objects.
    carry: crate::carry::Carry,
}

/// Whether allocations are durable: the last save's error, if it failed, and
/// how many saves failed so far. A failed save does not fail the load (the
/// allocations still serve, from memory), so this is how an operator learns
/// that a restart would lose them (`/readyz`, `lb_state_file_errors_total`).
#[derive(Debug, Default)]
pub struct StoreHealth {
    /// The last save's error; `None` once a save succeeds.
    pub error: Option<StoreError>,
    /// Saves that failed since the loader was made.
    pub failures: u64,
}

impl Loader {
    /// A loader over `store`; the node name defaults to this host's name.
    pub fn new(store: Box<dyn AllocationStore>) -> Self {
        Loader {
            store,
            current: None,
            hostname: default_node_name(),
            shared: false,
            health: StoreHealth::default(),
            lb_classes: Default::default(),
            memo: validation::Memo::default(),
            carry: crate::carry::Carry::default(),
        }
    }

    /// Marks the store as shared by several nodes: every load starts from
    /// what the store holds now (falling back to the last good allocations
    /// when it cannot be read), so nodes agree.
    pub fn with_shared_store(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Uses `name` instead of the hostname as the default node name (for
    /// embedders and tests that must not depend on the machine).
    pub fn with_default_node_name(mut self, name: impl Into<String>) -> Self {
        self.hostname = name.into();
        self
    }

    /// Parses, validates, allocates and resolves `text`. On error nothing
    /// changes: allocations are neither used up nor saved.
    pub fn load_str(&mut self, text: &str) -> Result<Config, ConfigErrors> {
        let raw = parse_str(text)?;
        self.load_raw(&raw)
    }

    /// [`Loader::load_str`] on the contents of `path`.
    /// Errors are located in the file (`FILE:LINE:COLUMN: path: ...`)
    /// where their path can be found in it.
    pub fn load_file(&mut self, path: &Path) -> Result<Config, ConfigErrors> {
        let text = read_file(path)?;
        self.load_str(&text).map_err(|e| located(e, &text, path))
    }

    /// Validates an already parsed file (e.g. objects from another source
    /// merged into one [`RawConfig`]).
    pub fn load_raw(&mut self, raw: &RawConfig) -> Result<Config, ConfigErrors> {
        let mut warnings = Vec::new();
        // Borrowed, not copied: at 10,000 services a copy of the
        // allocations (and its drop) cost milliseconds of every load.
        let previous: std::borrow::Cow<'_, Allocations> = match &self.current {
            Some(a) if !self.shared => std::borrow::Cow::Borrowed(a),
            current => std::borrow::Cow::Owned(self.store.load().unwrap_or_else(|e| {
                warnings.push(format!("allocations: starting afresh: {e}"));
                current.clone().unwrap_or_default()
            })),
        };
        let mut errs = Errors::default();
        let mut phases = Phases::start();
        let mut v =
            validation::validate(raw, &self.hostname, &mut self.memo, &self.carry, &mut errs);
        phases.mark("validate");
        if !v.settings.ranges_ok {
            // Allocation would run on default ranges standing in for the bad
            // ones and report misleading errors.
            return Err(ConfigErrors { errors: errs.list });
        }
        self.check_classes_unchanged(&v.services, &mut errs);
        let (allocations, pending_addresses) = allocate::allocate(
            &mut v.services,
            &v.settings.cluster,
            &v.pools,
            v.settings.load_balancer_class.as_deref(),
            &validation::reserved_node_ports(&v.settings),
            &previous,
            &mut errs,
        );
        phases.mark("allocate");
        if !errs.is_empty() {
            return Err(ConfigErrors { errors: errs.list });
        }
        let mut host_endpoints = endpoints::resolve(
            &mut v.services,
            &v.pods,
            &v.endpoints,
            &self.carry,
            &mut v.warnings,
        );
        phases.mark("resolve");
        // Services another proxy serves (by label) keep their allocations
        // and endpoints, but from here on are not ours: no listener, no
        // listener clash, no status.
        let (services, not_proxied): (Vec<_>, Vec<_>) = std::mem::take(&mut v.services)
            .into_iter()
            .partition(|d| selection::is_ours(&d.labels, &v.settings.service_proxy_name));
        v.services = services;
        let ours: crate::hash::HashSet<&lb_core::ServiceKey> =
            v.services.iter().map(|d| &d.spec.key).collect();
        let ours = |key: &lb_core::ServiceKey| ours.contains(key);
        host_endpoints.retain(|h| ours(&h.service));
        let mut pending_addresses = pending_addresses;
        pending_addresses.retain(|p| ours(&p.key));
        // Frontends exist only once allocated: none may take the admin, DNS
        // or a health-check address (`run` would fail to bind it).
        validation::check_listeners(&v.settings, &v.services, &mut errs);
        // Endpoints exist once resolved: an endpoint that is a frontend
        // would loop back into the proxy.
        validation::check_self_loops(
            &v.services,
            &v.endpoints,
            &v.settings.node.addresses,
            &mut errs,
        );
        phases.mark("cross-checks");
        if !errs.is_empty() {
            return Err(ConfigErrors { errors: errs.list });
        }
        // A save that failed is tried again on every load until one succeeds.
        if *previous != allocations || self.current.is_none() || self.health.error.is_some() {
            match self.store.save(&allocations) {
                Ok(()) => self.health.error = None,
                Err(e) => {
                    tracing::warn!(error = %e, "could not save allocations");
                    warnings.push(format!("allocations: not saved: {e}"));
                    self.health.failures += 1;
                    self.health.error = Some(e);
                }
            }
        }
        phases.mark("save");
        self.current = Some(allocations);
        self.lb_classes = lb_classes(&v.services);
        warnings.extend(v.warnings);
        let s = v.settings;
        let probes = v.pods.iter().filter_map(|p| p.probe.clone()).collect();
        let pods = v
            .pods
            .iter()
            .map(|p| crate::config::PodObject {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                ip: p.ip,
                node: p.node.clone(),
                labels: p.labels.clone(),
                ready: p.ready,
                terminating: p.terminating,
                probed: p.probe.is_some(),
            })
            .collect();
        let selectors = v
            .services
            .iter()
            .filter_map(|d| Some((d.spec.key.clone(), d.selector.clone()?)))
            .collect();
        let labels = v
            .services
            .iter()
            .filter(|d| !d.labels.is_empty())
            .map(|d| (d.spec.key.clone(), d.labels.clone()))
            .collect();
        let mut made_of = Vec::with_capacity(v.services.len());
        // Pushed into a vector of its own: `collect()` would reuse the
        // drafts' buffer (8 MB at 10,000 services) for the config's life.
        let mut served: Vec<Arc<lb_core::ServiceSpec>> = Vec::with_capacity(v.services.len());
        for d in v.services {
            let spec = d.carried.unwrap_or_else(|| Arc::new(d.spec));
            if let (None, Some(source)) = (&d.selector, d.source) {
                made_of.push(crate::carry::MadeOf {
                    source,
                    manual: d.manual,
                    spec: spec.clone(),
                });
            }
            served.push(spec);
        }
        self.carry = crate::carry::Carry::remember(made_of, &host_endpoints, &v.endpoints);
        let config = Config {
            node: s.node,
            vip_mode: s.vip_mode,
            vip_interface: s.vip_interface,
            announce_interface: s.announce_interface,
            cluster: s.cluster,
            proxy: s.proxy,
            admin_listen: s.admin_listen,
            admin_allowed_hosts: s.admin_allowed_hosts,
            dns: s.dns,
            services: served,
            not_proxied: not_proxied
                .into_iter()
                .map(|d| match d.carried {
                    Some(spec) => Arc::unwrap_or_clone(spec),
                    None => d.spec,
                })
                .collect(),
            probes,
            host_endpoints,
            warnings,
            pending_addresses,
            selectors,
            labels,
            pods,
        };
        phases.mark("config");
        phases.log();
        Ok(config)
    }

    /// Refuses a LoadBalancer service that was one at the last good load
    /// with another class: `services[web].load_balancer_class: Invalid value:
    /// "NEW": may not change once set` (Kubernetes' `ValidateServiceUpdate`;
    /// no class reads `"null"`). A change of type to or from LoadBalancer
    /// may change it.
    fn check_classes_unchanged(&self, drafts: &[validation::ServiceDraft], errs: &mut Errors) {
        for d in drafts {
            let (Some(lb), Some(old)) = (&d.lb, self.lb_classes.get(&d.spec.key)) else {
                continue;
            };
            if lb.class != *old {
                errs.push(FieldError::invalid(
                    format!("{}.load_balancer_class", d.path),
                    lb.class.clone().unwrap_or_else(|| "null".into()),
                    "may not change once set",
                ));
            }
        }
    }

    /// Whether the last save of allocations succeeded.
    pub fn store_health(&self) -> &StoreHealth {
        &self.health
    }

    /// The allocations of the last successful load (empty before one).
    pub fn allocations(&self) -> Allocations {
        self.current.clone().unwrap_or_default()
    }
}

/// Validates `text` on its own, with allocations in memory (`lb-proxy check`).
pub fn check_str(text: &str) -> Result<Config, ConfigErrors> {
    Loader::new(Box::<MemoryStore>::default()).load_str(text)
}

/// [`check_str`] on the contents of `path`, errors located in it.
pub fn check_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read_file(path)?;
    check_str(&text).map_err(|e| located(e, &text, path))
}

/// `errors` located in `text`, the contents of `path`
/// ([`crate::locate::locate_toml`]).
fn located(mut errors: ConfigErrors, text: &str, path: &Path) -> ConfigErrors {
    crate::locate::locate_toml(&mut errors.errors, text, &path.display().to_string());
    errors
}

/// Parses `text` into the raw file structs without validating values (for
/// tools that read or rewrite the file).
pub fn parse_str(text: &str) -> Result<RawConfig, ConfigErrors> {
    parse::parse(text).map_err(|errors| ConfigErrors { errors })
}

/// The config file's text, read whole (see [`read_settled`]): `check`,
/// the first load and every reload refuse the same files.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    read_settled(path).map_err(|e| {
        ConfigErrors::single(FieldError::parse(
            path.display().to_string(),
            format!("cannot read the config file: {e}"),
        ))
    })
}

/// The default node name: the kernel's hostname (`/proc/sys/kernel/hostname`),
/// else `$HOSTNAME`, else `localhost`; lower-cased, as Kubernetes node names are.
pub fn default_node_name() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_proc
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string());
    name.to_ascii_lowercase()
}

/// Each LoadBalancer service's class, as [`Loader`] remembers them.
fn lb_classes(
    drafts: &[validation::ServiceDraft],
) -> std::collections::BTreeMap<lb_core::ServiceKey, Option<String>> {
    drafts
        .iter()
        .filter_map(|d| {
            let class = d.lb.as_ref()?.class.clone();
            Some((d.spec.key.clone(), class))
        })
        .collect()
}

/// Where a load spends its time, logged at debug level
/// (`RUST_LOG=lb_config=debug`): at 10,000 services an operator can see which
/// step a slow reload waits on. Costs a clock read per step.
struct Phases {
    last: std::time::Instant,
    spent: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn start() -> Self {
        Phases {
            last: std::time::Instant::now(),
            spent: Vec::with_capacity(8),
        }
    }

    /// The step named `name` ended now.
    fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.spent.push((name, now - self.last));
        self.last = now;
    }

    fn log(&self) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let steps: Vec<String> = self
                .spent
                .iter()
                .map(|(name, d)| format!("{name} {d:.1?}"))
                .collect();
            tracing::debug!(steps = %steps.join(", "), "load: where the time went");
        }
    }
}
