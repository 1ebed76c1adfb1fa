//! The proxy as the `lb-proxy` binary runs it: one config file and its reloads,
//! the data plane and the admin API, wired together. The quickstart runs this
//! same code, so what it shows is what the binary does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lb_config::{ConfigErrors, Loader};
use lb_core::alloc::MemoryStore;
use lb_core::{FrontendKey, Snapshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::control::probe::Health;
use crate::control::ReloadCounters;
use crate::dataplane::DataPlane;
use crate::ops::admin::AdminSource;
use crate::ops::healthcheck::HealthChecks;

/// How to start an [`App`].
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The TOML file.
    pub config: PathBuf,
    /// Where allocations persist across restarts; `None` keeps them in memory
    /// (stable across reloads only).
    pub state_file: Option<PathBuf>,
}

/// Sources besides the config file (see [`crate::control::sources`]).
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// `--manifests PATH`: Kubernetes manifests (a file or a directory),
    /// merged with the file's objects and watched like it.
    pub manifests: Option<PathBuf>,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config file is invalid; one error per line, as `check` prints them.
    #[error("{0}")]
    Config(ConfigErrors),
    /// The DNS responder could not start (its port is taken, or the zone is
    /// not a valid name).
    #[error("{0}")]
    Dns(crate::ops::dns::DnsError),
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
    Vip(crate::control::vip::VipError),
}

/// A running proxy fed from a file. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct App {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config_path: PathBuf,
    loader: Mutex<Loader>,
    /// The file text of the last attempt, so a watcher event that changed
    /// nothing does not reload (or log the same error again).
    last_seen: Mutex<Option<String>>,
    dataplane: DataPlane,
    reloads: Arc<ReloadCounters>,
    admin_addr: Option<SocketAddr>,
    admin_stop: CancellationToken,
    /// The DNS responder, when the file has `[dns]`.
    dns: Option<crate::ops::dns::Dns>,
    /// Endpoint host names, resolved in front of `health`; every config goes
    /// through it.
    hosts: crate::control::hosts::Hosts,
    /// Readiness probes and the overlay.
    health: Health,
    /// Health-check node ports (LoadBalancer + Local).
    health_checks: HealthChecks,
    /// `vip_mode = "interface"`: the addresses lb-proxy adds and announces.
    vips: Option<crate::control::vip::Vips>,
    /// `[node] vip_mode`, `vip_interface`, `announce_interface` at start: a
    /// reload that changes them is told it takes effect at the next restart.
    vip_settings: String,
    /// Manifests and etcd, merged with the file on every load.
    sources: Arc<crate::control::sources::Sources>,
    /// Recent reloads, errors and endpoint state changes (the status page).
    events: Arc<crate::ops::status::Events>,
}

/// What the admin API reads: the data plane's table and bind errors.
#[derive(Debug)]
struct AdminView {
    dataplane: DataPlane,
    reloads: Arc<ReloadCounters>,
    health: Health,
    events: Arc<crate::ops::status::Events>,
    dns: Option<crate::ops::dns::Dns>,
    hosts: crate::control::hosts::Hosts,
    sources: Arc<crate::control::sources::Sources>,
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
        self.sources.readiness()
    }
    fn metrics(&self) -> String {
        let hosts = (self.hosts.lookups(), self.hosts.failures());
        self.metrics.render(
            &self.dataplane.table().load(),
            &crate::ops::metrics::Sources {
                reloads: &self.reloads,
                dns: self.dns.as_ref().map(|d| d.counters()),
                host_lookups: (hosts.0 > 0).then_some(hosts),
                process: true,
            },
        ) + &self.sources.metrics()
    }
    fn probes(&self) -> BTreeMap<lb_core::health::PodKey, crate::control::probe::ProbeStatus> {
        self.health.statuses()
    }
    fn connections(&self) -> Vec<crate::dataplane::connections::OpenConnection> {
        self.dataplane.connections().list()
    }
    fn events(&self) -> crate::ops::status::EventList {
        self.events.list()
    }
    fn settings(&self) -> Option<lb_core::ProxySettings> {
        Some((*self.dataplane.settings()).clone())
    }
}

impl App {
    /// Loads the file, starts the data plane and the admin API. An invalid file
    /// is an error and nothing starts.
    pub async fn start(options: AppOptions) -> Result<App, AppError> {
        App::start_with(options, SourceOptions::default()).await
    }

    /// [`App::start`] with other sources: manifests, and etcd when the file
    /// has `[source.etcd]` (then allocations are shared through etcd, and the
    /// first load waits up to 5 s for etcd's first read).
    pub async fn start_with(
        options: AppOptions,
        source_options: SourceOptions,
    ) -> Result<App, AppError> {
        let text = std::fs::read_to_string(&options.config).ok();
        let etcd = match lb_config::parse_str(text.as_deref().unwrap_or_default()) {
            Ok(raw) => lb_config::source::etcd::settings_of(&raw).map_err(AppError::Config)?,
            Err(_) => None, // the load below reports the file's errors
        };
        let (sources, etcd_changes) =
            crate::control::sources::Sources::start(source_options.manifests, etcd);
        let sources = Arc::new(sources);
        let mut loader = match (sources.store(), &options.state_file) {
            (Some(store), _) => Loader::new(Box::new(store)).with_shared_store(),
            (None, Some(path)) => Loader::new(Box::new(lb_config::FileStore::new(path.clone()))),
            (None, None) => Loader::new(Box::<MemoryStore>::default()),
        };
        let (loaded, loader) = {
            let sources = sources.clone();
            let path = options.config.clone();
            tokio::task::spawn_blocking(move || {
                if !sources.wait_first_read(std::time::Duration::from_secs(5)) {
                    warn!("etcd did not answer within 5 s; starting from the file alone");
                }
                (sources.load(&mut loader, &path), loader)
            })
            .await
            .map_err(|e| {
                AppError::Config(ConfigErrors::single(lb_config::FieldError::internal(
                    "load",
                    e.to_string(),
                )))
            })?
        };
        let text = Some(sources.fingerprint(text.as_deref()));
        let config = match loaded {
            Ok(c) => c,
            Err(e) => {
                sources.stop();
                return Err(AppError::Config(e));
            }
        };
        for w in &config.warnings {
            warn!("{w}");
        }
        let admin_listen = config.admin_listen;
        let dns_options = crate::ops::dns::DnsOptions::from_config(&config);
        let dns_listen = config.dns.as_ref().map(|d| d.listen);
        let upstreams = dns_upstreams(&config);
        check_open_file_limit(&config);
        let snapshot = Snapshot::build(
            config.node.clone(),
            config.services.clone(),
            None,
            SystemTime::now(),
        );
        let bind = crate::dataplane::BindOptions {
            freebind: matches!(
                config.vip_mode,
                lb_config::VipMode::Freebind | lb_config::VipMode::Interface
            ),
        };
        let vip_options = (config.vip_mode == lb_config::VipMode::Interface).then(|| {
            crate::control::vip::VipOptions {
                interface: config.vip_interface.clone(),
                announce_interface: config.announce_interface.clone(),
            }
        });
        let vip_settings = vip_settings(&config);
        let dataplane = DataPlane::start_with(config.proxy, snapshot, bind).await;
        let health = Health::start(
            dataplane.clone(),
            config.node.clone(),
            config.services.clone(),
            config.probes.clone(),
        )
        .await;
        // Endpoints known by DNS name: resolved addresses join the desired
        // state in front of the probe overlay.
        let hosts = crate::control::hosts::Hosts::start(health.clone(), upstreams);
        if !config.host_endpoints.is_empty() {
            hosts
                .set_desired(
                    config.node,
                    config.services,
                    config.probes,
                    config.host_endpoints,
                )
                .await;
        }
        let health_checks = HealthChecks::spawn(&dataplane);
        let vips = match vip_options {
            Some(options) => match crate::control::vip::Vips::start(&dataplane, options).await {
                Ok(v) => Some(v),
                Err(e) => {
                    dataplane.shutdown().await;
                    return Err(AppError::Vip(e));
                }
            },
            None => None,
        };
        let dns = match (dns_listen, dns_options) {
            (Some(listen), Some(options)) => {
                match crate::ops::dns::Dns::start(listen, dataplane.table(), options).await {
                    Ok(dns) => Some(dns),
                    Err(e) => {
                        dataplane.shutdown().await;
                        return Err(AppError::Dns(e));
                    }
                }
            }
            _ => None,
        };
        let reloads = Arc::new(ReloadCounters::default());
        let events = Arc::new(crate::ops::status::Events::default());
        events.record(
            "info",
            "start",
            format!(
                "lb-proxy started with {} ({} services)",
                options.config.display(),
                dataplane.table().load().services().count()
            ),
        );
        let admin_stop = CancellationToken::new();
        tokio::spawn(watch_endpoint_states(
            dataplane.clone(),
            events.clone(),
            admin_stop.clone(),
        ));
        let mut admin_addr = None;
        if let Some(addr) = admin_listen {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(source) => {
                    dataplane.shutdown().await;
                    if let Some(dns) = &dns {
                        dns.shutdown();
                    }
                    return Err(AppError::AdminBind { addr, source });
                }
            };
            admin_addr = listener.local_addr().ok();
            let source: Arc<dyn AdminSource> = Arc::new(AdminView {
                dataplane: dataplane.clone(),
                reloads: reloads.clone(),
                health: health.clone(),
                events: events.clone(),
                dns: dns.clone(),
                hosts: hosts.clone(),
                sources: sources.clone(),
                metrics: crate::ops::metrics::Metrics::new(),
            });
            let stop = admin_stop.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    crate::ops::admin::serve(listener, source, stop.cancelled_owned()).await
                {
                    error!("admin listener stopped: {e}");
                }
            });
        }
        info!(
            config = %options.config.display(),
            services = dataplane.table().load().services().count(),
            admin = ?admin_addr,
            "lb-proxy running"
        );
        let app = App {
            inner: Arc::new(Inner {
                config_path: options.config,
                loader: Mutex::new(loader),
                last_seen: Mutex::new(text),
                dataplane,
                reloads,
                admin_addr,
                admin_stop,
                dns,
                hosts,
                health,
                health_checks,
                vips,
                vip_settings,
                events,
                sources,
            }),
        };
        if let Some(mut changes) = etcd_changes {
            // etcd changed: load everything again (level-triggered).
            let app2 = app.clone();
            let stop = app.inner.admin_stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        r = changes.changed() => if r.is_err() { return },
                    }
                    app2.reload(false).await;
                }
            });
        }
        Ok(app)
    }

    /// The sources besides the file (manifests, etcd).
    pub fn sources(&self) -> &crate::control::sources::Sources {
        &self.inner.sources
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
        &self.inner.hosts
    }

    /// The file being served.
    pub fn config_path(&self) -> &std::path::Path {
        &self.inner.config_path
    }

    /// Reload counters.
    pub fn reloads(&self) -> &ReloadCounters {
        &self.inner.reloads
    }

    /// Recent reloads, errors and endpoint state changes (what the status
    /// page lists).
    pub fn events(&self) -> &crate::ops::status::Events {
        &self.inner.events
    }

    /// Reads the file again and applies it. With `force` false (a watcher
    /// event), an unchanged file is left alone. A file that fails validation
    /// changes nothing: the error is logged and counted, the old config keeps
    /// serving. Returns whether a new config was applied.
    pub async fn reload(&self, force: bool) -> bool {
        let inner = &self.inner;
        let text = std::fs::read_to_string(&inner.config_path).ok();
        let text = Some(inner.sources.fingerprint(text.as_deref()));
        {
            let mut last = inner.last_seen.lock().unwrap_or_else(|e| e.into_inner());
            if !force && text.is_some() && *last == text {
                return false;
            }
            *last = text;
        }
        // Off the runtime: etcd's allocation store answers over the network.
        let app = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let inner = &app.inner;
            let mut loader = inner.loader.lock().unwrap_or_else(|e| e.into_inner());
            inner.sources.load(&mut loader, &inner.config_path)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors::single(lb_config::FieldError::internal(
                "reload",
                e.to_string(),
            )))
        });
        match loaded {
            Ok(config) => {
                for w in &config.warnings {
                    warn!("{w}");
                }
                if config.admin_listen != inner.admin_addr && config.admin_listen.is_some() {
                    // Port 0 resolves to a real port at bind time, so only warn on a
                    // different explicit address.
                    if config.admin_listen.map(|a| a.port()) != Some(0) {
                        warn!("admin.listen changed; it takes effect at the next restart");
                    }
                }
                if vip_settings(&config) != inner.vip_settings {
                    warn!("node.vip_mode, vip_interface or announce_interface changed; it takes effect at the next restart");
                }
                match (
                    &inner.dns,
                    crate::ops::dns::DnsOptions::from_config(&config),
                ) {
                    (Some(dns), Some(options)) => dns.set_options(options),
                    (None, Some(_)) | (Some(_), None) => {
                        warn!("[dns] added or removed; it takes effect at the next restart")
                    }
                    (None, None) => {}
                }
                let count = config.services.len();
                inner.hosts.set_upstreams(dns_upstreams(&config));
                inner.dataplane.set_settings(config.proxy);
                inner
                    .hosts
                    .set_desired(
                        config.node,
                        config.services,
                        config.probes,
                        config.host_endpoints,
                    )
                    .await;
                inner.reloads.success.fetch_add(1, Ordering::Relaxed);
                info!(services = count, "config reloaded");
                inner.events.record(
                    "info",
                    "reload",
                    format!("config reloaded: {count} services"),
                );
                true
            }
            Err(errors) => {
                inner.reloads.failure.fetch_add(1, Ordering::Relaxed);
                error!(
                    config = %inner.config_path.display(),
                    "reload failed validation; the previous config keeps serving"
                );
                for line in errors.to_string().lines() {
                    error!("{line}");
                }
                inner.events.record(
                    "error",
                    "reload",
                    format!(
                        "reload failed validation; the previous config keeps serving\n{errors}"
                    ),
                );
                false
            }
        }
    }

    /// Drains the data plane (listeners close at once, open connections
    /// finish, bounded by `drain_timeout`), then stops the admin API.
    pub async fn shutdown(&self) {
        self.inner.sources.stop();
        self.inner.hosts.stop();
        self.inner.health.stop();
        self.inner.health_checks.stop();
        self.inner.dataplane.shutdown().await;
        if let Some(vips) = &self.inner.vips {
            vips.stop().await;
        }
        if let Some(dns) = &self.inner.dns {
            dns.shutdown();
        }
        self.inner.admin_stop.cancel();
    }
}

/// Logs (at info) and records every endpoint whose state word changes
/// between published snapshots (ready, not ready, terminating, draining) and
/// endpoints that join or leave, until `stop`. Runs off the data path: it
/// wakes on the generation counter and compares two snapshots.
async fn watch_endpoint_states(
    dataplane: DataPlane,
    events: Arc<crate::ops::status::Events>,
    stop: CancellationToken,
) {
    let mut generation = dataplane.subscribe();
    let mut before = endpoint_states(&dataplane.table().load());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            changed = generation.changed() => if changed.is_err() { return },
        }
        let after = endpoint_states(&dataplane.table().load());
        for (key, state) in &after {
            let was = before.get(key).map(String::as_str);
            if was == Some(state.as_str()) {
                continue;
            }
            let message = match was {
                Some(was) => format!("{key}: {was} -> {state}"),
                None => format!("{key}: added ({state})"),
            };
            info!(endpoint = %key, state = %state, previous = was.unwrap_or("none"), "endpoint state changed");
            let level = if state == "ready" { "info" } else { "warning" };
            events.record(level, "endpoint", message);
        }
        for key in before.keys().filter(|k| !after.contains_key(*k)) {
            info!(endpoint = %key, "endpoint removed");
            events.record("info", "endpoint", format!("{key}: removed"));
        }
        before = after;
    }
}

/// `namespace/service:port/PROTO IP:PORT` → state word, for
/// [`watch_endpoint_states`].
fn endpoint_states(snapshot: &Snapshot) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for service in snapshot.services() {
        for port in &service.ports {
            let key = port.key();
            for e in port.endpoints() {
                let state = if e.weight == 0 {
                    "draining"
                } else if e.terminating && !e.ready {
                    "terminating"
                } else if e.ready {
                    "ready"
                } else {
                    "not_ready"
                };
                out.insert(
                    format!(
                        "{}/{}:{}/{} {}",
                        key.service.namespace,
                        key.service.name,
                        crate::dataplane::connections::port_label(key),
                        key.protocol,
                        e.addr
                    ),
                    state.to_string(),
                );
            }
        }
    }
    out
}

/// The `[node]` VIP settings as one comparable string.
fn vip_settings(config: &lb_config::Config) -> String {
    format!(
        "{}/{}/{}",
        config.vip_mode.as_str(),
        config.vip_interface,
        config.announce_interface
    )
}

/// Where endpoint host names are resolved: `[dns] upstreams`, else (empty)
/// the system's resolver.
fn dns_upstreams(config: &lb_config::Config) -> Vec<SocketAddr> {
    config
        .dns
        .as_ref()
        .map(|d| d.upstreams.clone())
        .unwrap_or_default()
}

/// Raises the open-file limit and warns when the configured bounds cannot fit
/// in it: two descriptors per proxied TCP connection (`max_connections` per
/// service port, when bounded) plus one per UDP flow.
fn check_open_file_limit(config: &lb_config::Config) {
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
