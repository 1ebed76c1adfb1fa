//! The proxy as the `lb-proxy` binary runs it: wiring only. A config file
//! (and the manifests and etcd it names) feeds the control plane, which
//! feeds the data plane; the admin API, the DNS responder, the health-check
//! node ports and the interface VIPs sit beside them. The quickstart runs
//! this same code, so what it shows is what the binary does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lb_config::source::etcd::EtcdSource;
use lb_config::source::{FileSource, Source, SourceStats};
use lb_config::{Config, ConfigErrors};
use lb_core::alloc::{AllocationStore, MemoryStore};
use lb_core::{FrontendKey, Snapshot};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::control::events::{EndpointStates, Events};
use crate::control::follow::follow;
use crate::control::{ControlOptions, ControlPlane, ProxyOverrides, ReloadCounters};
use crate::dataplane::DataPlane;
use crate::lifecycle::Tasks;
use crate::ops::admin::{AdminServer, AdminSource};
use crate::ops::healthcheck::HealthChecks;

/// How to start an [`App`]: the binary's command line, as a value.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// The TOML file.
    pub config: PathBuf,
    /// Where allocations persist across restarts; `None` keeps them in memory
    /// (stable across reloads only).
    pub state_file: Option<PathBuf>,
    /// `--manifests PATH`: Kubernetes manifests (a file or a directory),
    /// merged with the file's objects and watched like it.
    pub manifests: Option<PathBuf>,
    /// `[proxy]` settings that win over the file's (the binary's
    /// `LB_FORWARD_ENGINE`, `LB_ACCEPT`, `LB_WORKERS`).
    pub overrides: ProxyOverrides,
}

impl AppOptions {
    /// The file alone: allocations in memory, no manifests, no override.
    pub fn new(config: impl Into<PathBuf>) -> Self {
        AppOptions {
            config: config.into(),
            ..AppOptions::default()
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config file is invalid; one error per line, as `check` prints them.
    #[error("{0}")]
    Config(#[source] ConfigErrors),
    /// The DNS responder could not start (its port is taken, or the zone is
    /// not a valid name).
    #[error("{0}")]
    Dns(#[source] crate::ops::dns::DnsError),
    /// The admin listener could not be bound (it never shares its port, so a
    /// clash is an error rather than a silent second listener).
    #[error("admin listener {addr}: {source}")]
    AdminBind {
        /// The configured address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
    /// `vip_mode = "interface"` could not take hold of its interface.
    #[error("{0}")]
    Vip(#[source] crate::control::vip::VipError),
}

/// A running proxy fed from a file. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct App {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config_path: PathBuf,
    control: ControlPlane,
    dataplane: DataPlane,
    admin_addr: Option<SocketAddr>,
    /// The DNS responder, when the file has `[dns]`.
    dns: Option<crate::ops::dns::Dns>,
    /// Health-check node ports (LoadBalancer + Local).
    health_checks: HealthChecks,
    /// `vip_mode = "interface"`: the addresses lb-proxy adds and announces.
    vips: Option<crate::control::vip::Vips>,
    /// Followers wired here: endpoint-state events, new settings.
    followers: Tasks,
    /// The admin API, stopped last so a drain can be watched.
    admin: Option<AdminServer>,
    /// Everything above.
    tasks: Tasks,
}

/// What the admin API reads: the table, the control plane's state.
#[derive(Debug)]
struct AdminView {
    dataplane: DataPlane,
    control: ControlPlane,
    dns: Option<crate::ops::dns::Dns>,
    /// The recorder and handles behind `/metrics`.
    metrics: crate::ops::metrics::Metrics,
}

impl AdminSource for AdminView {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.dataplane.table().load()
    }
    fn bind_errors(&self) -> BTreeMap<FrontendKey, String> {
        let errors = self.dataplane.bind_errors();
        errors
            .into_iter()
            .map(|(k, e)| (k, e.to_string()))
            .collect()
    }
    fn readiness(&self) -> Option<String> {
        // The last good config is always current for the file and the
        // manifests (a reload that failed validation does not make us
        // unready); etcd is stale while it cannot be reached.
        self.control.readiness()
    }
    fn metrics(&self) -> String {
        let hosts = self.control.hosts();
        let lookups = (hosts.lookups(), hosts.failures());
        let stats = self.control.source_stats();
        let source_stats: Vec<(&str, SourceStats)> =
            stats.iter().map(|(name, s)| (name.as_str(), *s)).collect();
        self.metrics.render(
            &self.dataplane.table().load(),
            &crate::ops::metrics::Sources {
                reloads: self.control.reloads(),
                dns: self.dns.as_ref().map(|d| d.counters()),
                host_lookups: (lookups.0 > 0).then_some(lookups),
                process: true,
                source_stats: &source_stats,
            },
        )
    }
    fn probes(&self) -> BTreeMap<lb_core::health::PodKey, crate::control::probe::ProbeStatus> {
        self.control.probes()
    }
    fn connections(&self) -> Vec<crate::dataplane::connections::OpenConnection> {
        self.dataplane.connections().list()
    }
    fn events(&self) -> crate::ops::status::EventList {
        self.control.events().list()
    }
    fn settings(&self) -> Option<lb_core::ProxySettings> {
        Some((*self.dataplane.settings()).clone())
    }
}

impl App {
    /// Loads the file (with the manifests, and etcd when the file has
    /// `[source.etcd]`: then allocations are shared through etcd, and the
    /// first load waits up to 5 s for etcd's first read), starts the data
    /// plane, the control plane and the admin API. An invalid file is an
    /// error and nothing starts.
    pub async fn start(options: AppOptions) -> Result<App, AppError> {
        let tasks = Tasks::new();
        let Control {
            control,
            config,
            snapshot,
        } = match start_control(&options, &tasks).await {
            Ok(started) => started,
            Err(e) => {
                tasks.stop().await;
                return Err(e);
            }
        };
        check_open_file_limit(&config);
        let bind = crate::dataplane::BindOptions {
            freebind: matches!(
                config.vip_mode,
                lb_config::VipMode::Freebind | lb_config::VipMode::Interface
            ),
        };
        let dataplane = DataPlane::start_in(&tasks, config.proxy.clone(), snapshot, bind).await;
        control.serve(&dataplane);
        let started = Started {
            control: control.clone(),
            dataplane: dataplane.clone(),
            tasks: tasks.clone(),
        };
        let health_checks = HealthChecks::start(&dataplane, tasks.child());
        let vips = match vip_options(&config) {
            Some(o) => match crate::control::vip::Vips::start(&dataplane, o, tasks.child()).await {
                Ok(v) => Some(v),
                Err(e) => {
                    started.abort().await;
                    return Err(AppError::Vip(e));
                }
            },
            None => None,
        };
        let dns = match (
            config.dns.as_ref().map(|d| d.listen),
            crate::ops::dns::DnsOptions::from_config(&config),
        ) {
            (Some(listen), Some(o)) => {
                match crate::ops::dns::Dns::start(listen, dataplane.table(), o, tasks.child()).await
                {
                    Ok(dns) => Some(dns),
                    Err(e) => {
                        started.abort().await;
                        return Err(AppError::Dns(e));
                    }
                }
            }
            _ => None,
        };
        let events = control.events().clone();
        events.record(
            "info",
            "start",
            format!(
                "lb-proxy started with {} ({} services)",
                options.config.display(),
                dataplane.table().load().services().count()
            ),
        );
        let followers = tasks.child();
        follow_endpoint_states(&followers, &dataplane, events);
        follow_configs(&followers, control.configs(), config.clone(), dns.clone());
        let mut admin = None;
        let mut admin_addr = None;
        if let Some(addr) = config.admin_listen {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(source) => {
                    if let Some(dns) = &dns {
                        dns.shutdown().await;
                    }
                    started.abort().await;
                    return Err(AppError::AdminBind { addr, source });
                }
            };
            let source: Arc<dyn AdminSource> = Arc::new(AdminView {
                dataplane: dataplane.clone(),
                control: control.clone(),
                dns: dns.clone(),
                metrics: crate::ops::metrics::Metrics::new(),
            });
            match AdminServer::start(listener, source, tasks.child()) {
                Ok(server) => {
                    admin_addr = Some(server.local_addr());
                    admin = Some(server);
                }
                Err(source) => {
                    if let Some(dns) = &dns {
                        dns.shutdown().await;
                    }
                    started.abort().await;
                    return Err(AppError::AdminBind { addr, source });
                }
            }
        }
        info!(
            config = %options.config.display(),
            services = dataplane.table().load().services().count(),
            admin = ?admin_addr,
            "lb-proxy running"
        );
        Ok(App {
            inner: Arc::new(Inner {
                config_path: options.config,
                control,
                dataplane,
                admin_addr,
                dns,
                health_checks,
                vips,
                followers,
                admin,
                tasks,
            }),
        })
    }

    /// The control plane (sources, reloads, probes, host names, events).
    pub fn control(&self) -> &ControlPlane {
        &self.inner.control
    }

    /// Interface mode's VIP manager, when `vip_mode = "interface"`.
    pub fn vips(&self) -> Option<&crate::control::vip::Vips> {
        self.inner.vips.as_ref()
    }

    /// The data plane (its table, bind errors, drain).
    pub fn dataplane(&self) -> &DataPlane {
        &self.inner.dataplane
    }

    /// Where the admin API listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// The DNS responder, when the file has `[dns]` (its address, counters).
    pub fn dns(&self) -> Option<&crate::ops::dns::Dns> {
        self.inner.dns.as_ref()
    }

    /// Endpoint host names and their resolutions (answers, failures).
    pub fn hosts(&self) -> &crate::control::hosts::Hosts {
        self.inner.control.hosts()
    }

    /// The file being served.
    pub fn config_path(&self) -> &std::path::Path {
        &self.inner.config_path
    }

    /// Reload counters.
    pub fn reloads(&self) -> &ReloadCounters {
        self.inner.control.reloads()
    }

    /// Recent reloads, errors and endpoint state changes (what the status
    /// page lists).
    pub fn events(&self) -> &Events {
        self.inner.control.events()
    }

    /// Reads the sources again and applies them (see
    /// [`ControlPlane::reload`]). Returns whether a new config was applied.
    pub async fn reload(&self, force: bool) -> bool {
        self.inner.control.reload(force).await
    }

    /// Stops everything, in order: the data plane drains (listeners close at
    /// once, open connections finish, bounded by `drain_timeout`), then the
    /// control plane (rebuild, probes, host names, sources), the health-check
    /// ports, VIPs, DNS and followers, and the admin API last. When it
    /// returns, no task of the App is left.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.dataplane.shutdown().await;
        inner.control.stop().await;
        inner.health_checks.stop().await;
        if let Some(vips) = &inner.vips {
            vips.stop().await;
        }
        if let Some(dns) = &inner.dns {
            dns.shutdown().await;
        }
        inner.followers.stop().await;
        if let Some(admin) = &inner.admin {
            admin.stop().await;
        }
        inner.tasks.stop().await;
    }
}

/// What must be undone when a later part of the start fails.
struct Started {
    control: ControlPlane,
    dataplane: DataPlane,
    tasks: Tasks,
}

impl Started {
    async fn abort(self) {
        self.dataplane.shutdown().await;
        self.control.stop().await;
        self.tasks.stop().await;
    }
}

/// A control plane that loaded its first desired state.
struct Control {
    control: ControlPlane,
    config: Arc<Config>,
    snapshot: Snapshot,
}

/// The sources of `options`, the control plane over them, and its first
/// desired state. The file is read once: its `[source.etcd]` names the etcd
/// source, and the same read is the file source's first state.
async fn start_control(options: &AppOptions, tasks: &Tasks) -> Result<Control, AppError> {
    let file = Arc::new(FileSource::new(options.config.clone()));
    let first = {
        let file = file.clone();
        tasks
            .spawn_blocking(move || file.desired())
            .await
            .unwrap_or_else(|e| {
                Err(ConfigErrors::single(lb_config::FieldError::internal(
                    "load",
                    e.to_string(),
                )))
            })
    };
    let etcd_settings = match first.as_ref().ok().and_then(|s| s.file.as_ref()) {
        Some(raw) => lb_config::source::etcd::settings_of(raw).map_err(AppError::Config)?,
        None => None, // the load below reports the file's errors
    };
    let mut store: Box<dyn AllocationStore> = match &options.state_file {
        Some(path) => Box::new(lb_config::FileStore::new(path.clone())),
        None => Box::<MemoryStore>::default(),
    };
    let etcd = etcd_settings.map(|settings| Arc::new(EtcdSource::new(settings)));
    // With etcd, allocations are shared through it. The store blocks on this
    // runtime; the control plane only loads on blocking threads.
    let shared_store = etcd
        .as_ref()
        .map(|source| source.store(tokio::runtime::Handle::current()));
    if let Some(shared) = &shared_store {
        store = Box::new(shared.clone());
    }
    let mut control_options = ControlOptions::new(store)
        .source_read(file, first)
        .overrides(options.overrides.clone());
    if let Some(path) = &options.manifests {
        control_options = control_options.source(Arc::new(
            lb_config::manifests::ManifestSource::new(path.clone()),
        ));
    }
    if let (Some(source), Some(shared)) = (etcd, shared_store) {
        control_options = control_options
            .source(source)
            .shared(Arc::new(move || shared.take_conflict()));
    }
    let (control, loaded) = ControlPlane::load(control_options, tasks.child())
        .await
        .map_err(AppError::Config)?;
    Ok(Control {
        control,
        config: loaded.config,
        snapshot: loaded.snapshot,
    })
}

/// Records endpoint state changes as events, following the table.
fn follow_endpoint_states(tasks: &Tasks, dataplane: &DataPlane, events: Arc<Events>) {
    let dataplane = dataplane.clone();
    let stop = tasks.token().clone();
    tasks.spawn(async move {
        let mut follower = EndpointStates::new(events);
        follow(&dataplane, &stop, &mut follower).await;
    });
}

/// Hands new `[dns]` options to the responder, and tells the operator which
/// changed settings wait for a restart (the admin listener, the VIP mode,
/// adding or removing `[dns]`).
fn follow_configs(
    tasks: &Tasks,
    mut configs: watch::Receiver<Arc<Config>>,
    first: Arc<Config>,
    dns: Option<crate::ops::dns::Dns>,
) {
    let stop = tasks.token().clone();
    tasks.spawn(async move {
        configs.borrow_and_update();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = configs.changed() => if changed.is_err() { return },
            }
            let config = configs.borrow_and_update().clone();
            if config.admin_listen != first.admin_listen
                && config.admin_listen.is_some_and(|a| a.port() != 0)
            {
                // Port 0 resolves to a real port at bind time, so only warn
                // on a different explicit address.
                warn!("admin.listen changed; it takes effect at the next restart");
            }
            if vip_options(&config) != vip_options(&first) || config.vip_mode != first.vip_mode {
                warn!("node.vip_mode, vip_interface or announce_interface changed; it takes effect at the next restart");
            }
            match (&dns, crate::ops::dns::DnsOptions::from_config(&config)) {
                (Some(dns), Some(options)) => dns.set_options(options),
                (None, Some(_)) | (Some(_), None) => {
                    warn!("[dns] added or removed; it takes effect at the next restart")
                }
                (None, None) => {}
            }
        }
    });
}

/// Interface mode's options, when `vip_mode = "interface"`.
fn vip_options(config: &Config) -> Option<crate::control::vip::VipOptions> {
    (config.vip_mode == lb_config::VipMode::Interface).then(|| crate::control::vip::VipOptions {
        interface: config.vip_interface.clone(),
        announce_interface: config.announce_interface.clone(),
    })
}

/// Raises the open-file limit and warns when the configured bounds cannot fit
/// in it: two descriptors per proxied TCP connection (`max_connections` per
/// service port, when bounded) plus one per UDP flow.
fn check_open_file_limit(config: &Config) {
    let limit = match crate::sys::raise_nofile_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!("cannot raise the open-file limit: {e}");
            return;
        }
    };
    let ports = |p: lb_core::Protocol| {
        config
            .services
            .iter()
            .flat_map(|s| s.ports.iter())
            .filter(|port| port.protocol == p)
            .count() as u64
    };
    let tcp = 2 * u64::from(config.proxy.max_connections) * ports(lb_core::Protocol::Tcp);
    let udp = if ports(lb_core::Protocol::Udp) > 0 {
        u64::from(config.proxy.udp_max_flows)
    } else {
        0
    };
    if tcp + udp > limit {
        warn!(
            limit,
            needed = tcp + udp,
            "the open-file limit cannot hold max_connections and udp_max_flows; raise it (ulimit -n, LimitNOFILE=)"
        );
    } else {
        info!(limit, "open-file limit");
    }
}
