//! The proxy as the `lb-proxy` binary runs it: wiring only. A config file
//! (and the manifests and etcd it names) feeds the control plane, which
//! feeds the data plane; the admin API, the DNS responder, the health-check
//! node ports and the interface VIPs sit beside them. The quickstart runs
//! this same code, so what it shows is what the binary does.
//!
//! Two runtimes: the data plane, the control plane (rebuilds, probes, host
//! names, sources), the health-check node ports and the VIPs run on the
//! runtime [`App::start`] is called on (the binary's multi-thread runtime;
//! with `accept_mode = "percore"` the connections run on the data plane's
//! own worker threads); the admin API (`/metrics`, the JSON views, the
//! status page), the DNS responder and the followers run on the App's ops
//! runtime, one thread named `lb-ops` (`app/ops_runtime.rs`), so rendering for an
//! operator never holds a thread the data plane accepts or forwards on.

mod ops_runtime;
mod parts;
mod sources;

pub use ops_runtime::THREAD_NAME as OPS_THREAD_NAME;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lb_config::Config;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::control::events::{EjectionEvents, EndpointStates, EventType, Events, ObjectRef};
use crate::control::follow::{follow, Follower, Reconciled};
use crate::control::{ControlPlane, ProxyOverrides, ReloadCounters};
use crate::dataplane::DataPlane;
use crate::error::Error;
use crate::handover::{Registration, Role, SocketKey, Sockets};
use crate::lifecycle::Tasks;
use crate::ops::admin::{
    AdminServer, AdminSource, AllowedHosts, ProxyView, MAX_CONNECTIONS as MAX_ADMIN_CONNECTIONS,
};
use crate::ops::healthcheck::HealthChecks;
use crate::ops::status::History;
use crate::ops::views::Transitions;
use ops_runtime::OpsRuntime;
use parts::{vip_settings, DnsPart, VipPart};
use sources::{start_control, Control};

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
    /// The process's listening sockets: what a previous owner handed over
    /// (`lb-proxy run --takeover`), claimed by each part before it binds,
    /// and where every part registers what it serves, for the next
    /// takeover. Empty by default: everything is bound.
    pub sockets: Sockets,
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
    dns: DnsPart,
    /// Health-check node ports (LoadBalancer + Local).
    health_checks: HealthChecks,
    /// `vip_mode = "interface"`: the addresses lb-proxy adds and announces.
    vips: VipPart,
    /// Followers wired here: endpoint-state events, new settings.
    followers: Tasks,
    /// The admin API, stopped last so a drain can be watched.
    admin: Option<AdminServer>,
    /// The admin listener's place in `sockets`, dropped before it closes.
    admin_registration: std::sync::Mutex<Option<Registration>>,
    /// The listening sockets every part registered.
    sockets: Sockets,
    /// Everything above.
    tasks: Tasks,
    /// The runtime the admin API, DNS and the followers run on; its thread
    /// is joined once every task has ended.
    ops: Arc<OpsRuntime>,
}

impl App {
    /// Loads the file (with the manifests, and etcd when the file has
    /// `[source.etcd]`: then allocations are shared through etcd, and the
    /// first load waits up to 5 s for etcd's first read), starts the data
    /// plane, the control plane and the admin API. An invalid file is an
    /// error and nothing starts. The data and control planes run on the
    /// caller's runtime; the admin API, DNS and the followers on the App's
    /// ops runtime (a thread of its own, see the module docs).
    pub async fn start(options: AppOptions) -> Result<App, Error> {
        let tasks = Tasks::new();
        let ops = Arc::new(OpsRuntime::start()?);
        let Control {
            control,
            config,
            snapshot,
        } = match start_control(&options, &tasks).await {
            Ok(started) => started,
            Err(e) => {
                tasks.stop().await;
                ops.stop().await;
                return Err(e);
            }
        };
        check_open_file_limit(&config);
        let sockets = options.sockets.clone();
        let bind = crate::dataplane::BindOptions {
            freebind: matches!(
                config.vip_mode,
                lb_config::VipMode::Freebind | lb_config::VipMode::Interface
            ),
            sockets: sockets.clone(),
        };
        let dataplane = DataPlane::start_in(&tasks, config.proxy.clone(), snapshot, bind).await;
        control.serve(&dataplane);
        let started = Started {
            control: control.clone(),
            dataplane: dataplane.clone(),
            tasks: tasks.clone(),
            ops: ops.clone(),
        };
        let health_checks = HealthChecks::start_in(&dataplane, tasks.child(), &sockets).await;
        let vips = match VipPart::start(&config, &dataplane, &tasks, sockets.took_over()).await {
            Ok(v) => v,
            Err(e) => {
                started.abort().await;
                return Err(e);
            }
        };
        let dns = {
            let (config, dataplane, tasks) = (config.clone(), dataplane.clone(), tasks.clone());
            let sockets = sockets.clone();
            ops.run(async move { DnsPart::start(&config, &dataplane, &tasks, &sockets).await })
                .await
                .and_then(|started| started)
        };
        let dns = match dns {
            Ok(d) => d,
            Err(e) => {
                vips.stop().await;
                started.abort().await;
                return Err(e);
            }
        };
        let events = control.events().clone();
        events.record(
            EventType::Normal,
            "Starting",
            ObjectRef::node(&control.config().node.name),
            format!(
                "Starting lb-proxy with {} ({} services)",
                options.config.display(),
                dataplane.table().load().services().count()
            ),
        );
        let followers = tasks.child();
        follow_endpoint_states(&followers, ops.handle(), &dataplane, events.clone());
        record_ejections(&followers, ops.handle(), &dataplane, events);
        follow_configs(
            &followers,
            ops.handle(),
            control.configs(),
            &config,
            dns.clone(),
        );
        let mut admin = None;
        let mut admin_addr = None;
        let mut admin_registration = None;
        if let Some(addr) = config.admin_listen {
            let transitions = Arc::new(Transitions::default());
            follow_conditions(
                &followers,
                ops.handle(),
                &dataplane,
                &control,
                transitions.clone(),
            );
            let history = Arc::new(History::default());
            followers.spawn_on(
                history
                    .clone()
                    .run(dataplane.table(), followers.token().clone()),
                ops.handle(),
            );
            let view = ProxyView::new(dataplane.clone())
                .with_control(control.clone())
                .with_transitions(transitions)
                .with_history(history);
            #[cfg(feature = "dns")]
            let view = view.with_dns(dns.get().cloned());
            let source: Arc<dyn AdminSource> = Arc::new(view);
            let hosts = AllowedHosts::new(config.admin_allowed_hosts.iter().cloned());
            let max_connections = admin_connections(&dataplane.descriptors());
            let admin_tasks = tasks.child();
            // Bound (or claimed from a previous owner) inside the ops
            // runtime, so its reactor serves the listener and every
            // connection.
            let claimed = sockets.take_tcp(Role::Admin, addr).into_iter().next();
            let registry = sockets.clone();
            let server = ops
                .run(async move {
                    let listener = match claimed {
                        Some(listener) => tokio::net::TcpListener::from_std(listener)?,
                        None => tokio::net::TcpListener::bind(addr).await?,
                    };
                    let registration = registry.register(
                        SocketKey::tcp(Role::Admin, listener.local_addr()?),
                        std::os::fd::AsFd::as_fd(&listener),
                    );
                    AdminServer::builder(listener, source)
                        .allowed_hosts(hosts)
                        .max_connections(max_connections)
                        .start(admin_tasks)
                        .map(|server| (server, registration))
                })
                .await;
            let failed = match server {
                Ok(Ok((server, registration))) => {
                    admin_registration = Some(registration);
                    admin_addr = Some(server.local_addr());
                    admin = Some(server);
                    None
                }
                Ok(Err(source)) => Some(Error::AdminBind { addr, source }),
                Err(e) => Some(e),
            };
            if let Some(e) = failed {
                dns.stop().await;
                vips.stop().await;
                started.abort().await;
                return Err(e);
            }
        }
        // What the App serves and this config does not; the binary's own
        // (the control socket, the node lock) are its to claim.
        let own = [Role::Service, Role::Admin, Role::Dns, Role::HealthCheck];
        for key in sockets.close_unclaimed(&own) {
            info!(socket = %key, "closed a handed-over socket this config does not serve");
        }
        // The first load's document tree is freed by now: give it back.
        let _ = tasks.spawn_blocking(crate::sys::release_free_memory).await;
        info!(
            config = %options.config.display(),
            services = dataplane.table().load().services().count(),
            admin = ?admin_addr,
            took_over = sockets.took_over(),
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
                admin_registration: std::sync::Mutex::new(admin_registration),
                sockets,
                tasks,
                ops,
            }),
        })
    }

    /// The listening sockets every part registered: what a takeover hands
    /// over ([`crate::handover::give`]).
    pub fn sockets(&self) -> &Sockets {
        &self.inner.sockets
    }

    /// The control plane (sources, reloads, probes, host names, events).
    pub fn control(&self) -> &ControlPlane {
        &self.inner.control
    }

    /// Interface mode's VIP manager, when `vip_mode = "interface"`.
    #[cfg(feature = "vip")]
    pub fn vips(&self) -> Option<&crate::control::vip::Vips> {
        self.inner.vips.get()
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
    #[cfg(feature = "dns")]
    pub fn dns(&self) -> Option<&crate::ops::dns::Dns> {
        self.inner.dns.get()
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

    /// Recent events, Kubernetes-shaped and aggregated (what the status
    /// page, `/api/v1/events` and `lb-proxy get events` list).
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
    /// ports, VIPs, DNS and followers, and the admin API last; then the ops
    /// runtime's thread ends and is joined. When it returns, no task or
    /// thread of the App is left.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.dataplane.shutdown().await;
        inner.control.stop().await;
        inner.health_checks.stop().await;
        inner.vips.stop().await;
        inner.dns.stop().await;
        inner.followers.stop().await;
        self.stop_admin().await;
        inner.tasks.stop().await;
        inner.ops.stop().await;
    }

    /// Stops after a successor took every listening socket over
    /// ([`crate::handover`]): the admin API, DNS and health-check ports stop
    /// at once (the successor answers on the same sockets), the data plane
    /// drains as [`DataPlane::hand_over`] says (TCP listeners closed here
    /// and open in the successor, UDP flows answered until they idle out,
    /// connections finished within `drain_timeout`), interface VIPs stay on
    /// the device for the successor, and the rest stops as in
    /// [`App::shutdown`]. `closed` runs once nothing here accepts any more
    /// (before the drain's wait).
    pub async fn hand_over(&self, closed: impl FnOnce() + Send + 'static) {
        let inner = &self.inner;
        self.stop_admin().await;
        inner.dns.stop().await;
        inner.health_checks.stop().await;
        inner.dataplane.hand_over(closed).await;
        inner.control.stop().await;
        inner.vips.hand_over().await;
        inner.followers.stop().await;
        inner.tasks.stop().await;
        inner.ops.stop().await;
    }

    async fn stop_admin(&self) {
        // Unregistered before it closes: a takeover never copies a closed
        // descriptor.
        drop(
            self.inner
                .admin_registration
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(admin) = &self.inner.admin {
            admin.stop().await;
        }
    }
}

/// What must be undone when a later part of the start fails.
struct Started {
    control: ControlPlane,
    dataplane: DataPlane,
    tasks: Tasks,
    ops: Arc<OpsRuntime>,
}

impl Started {
    async fn abort(self) {
        self.dataplane.shutdown().await;
        self.control.stop().await;
        self.tasks.stop().await;
        self.ops.stop().await;
    }
}

/// Records the data plane's endpoint ejections, and their ends, as events,
/// on the ops runtime, until `tasks` stop.
fn record_ejections(tasks: &Tasks, ops: &Handle, dataplane: &DataPlane, events: Arc<Events>) {
    let Some(ejections) = dataplane.take_ejections() else {
        return;
    };
    let stop = tasks.token().clone();
    let watch = EjectionEvents::new(events, dataplane.table());
    tasks.spawn_on(watch.run(ejections, stop), ops);
}

/// Records endpoint state changes as events, following the table, on the
/// ops runtime (`ops`): comparing the state of every endpoint between two
/// snapshots is work for the operator, not for the data path.
fn follow_endpoint_states(tasks: &Tasks, ops: &Handle, dataplane: &DataPlane, events: Arc<Events>) {
    let dataplane = dataplane.clone();
    let stop = tasks.token().clone();
    tasks.spawn_on(
        async move {
            let mut follower = EndpointStates::new(events);
            follow(&dataplane, &stop, &mut follower).await;
        },
        ops,
    );
}

/// Stamps each service's conditions at every published table, on the ops
/// runtime, so `lastTransitionTime` is when a condition changed rather than
/// when `/api/v1/services` was next asked. While a listener cannot bind, it
/// looks again every second (the data plane retries binds between tables).
fn follow_conditions(
    tasks: &Tasks,
    ops: &Handle,
    dataplane: &DataPlane,
    control: &ControlPlane,
    transitions: Arc<Transitions>,
) {
    let mut follower = ConditionStamps {
        dataplane: dataplane.clone(),
        control: control.clone(),
        transitions,
    };
    let dataplane = dataplane.clone();
    let stop = tasks.token().clone();
    tasks.spawn_on(
        async move { follow(&dataplane, &stop, &mut follower).await },
        ops,
    );
}

/// The follower of [`follow_conditions`].
struct ConditionStamps {
    dataplane: DataPlane,
    control: ControlPlane,
    transitions: Arc<Transitions>,
}

impl Follower for ConditionStamps {
    async fn reconcile(&mut self, snapshot: Arc<lb_core::Snapshot>) -> Reconciled {
        let bind_errors: std::collections::BTreeMap<_, _> = self
            .dataplane
            .bind_errors()
            .into_iter()
            .map(|(k, e)| (k, e.to_string()))
            .collect();
        let config = self.control.config();
        // The views are built for their stamps alone (a pod's AGE counts
        // from the table that brought it, not from the first `get pods`).
        let now = std::time::SystemTime::now();
        let _ = crate::ops::views::services_view_with(
            &snapshot,
            Some(&bind_errors),
            Some(&config),
            Some(&self.transitions),
            now,
        );
        let _ = crate::ops::views::pods_view(
            Some(&config),
            &self.control.probes(),
            Some(&self.transitions),
            now,
        );
        if bind_errors.is_empty() {
            Reconciled::Done
        } else {
            Reconciled::Retry
        }
    }
}

/// Hands new `[dns]` options to the responder, and tells the operator which
/// changed settings wait for a restart (the admin listener and its allowed
/// hosts, the VIP mode,
/// adding or removing `[dns]`); on the ops runtime (`ops`), beside the
/// responder.
fn follow_configs(
    tasks: &Tasks,
    ops: &Handle,
    mut configs: watch::Receiver<Arc<Config>>,
    first: &Config,
    dns: DnsPart,
) {
    // Only the settings read at start, not the first Config: holding it
    // kept the first load's every service alive beside the current ones
    // (40 MB at 10,000 services x 10 endpoints) for the process's life.
    let first = StartSettings {
        admin_listen: first.admin_listen,
        admin_allowed_hosts: first.admin_allowed_hosts.clone(),
        vip: vip_settings(first),
    };
    let stop = tasks.token().clone();
    tasks.spawn_on(async move {
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
            if config.admin_allowed_hosts != first.admin_allowed_hosts {
                warn!("admin.allowed_hosts changed; it takes effect at the next restart");
            }
            if vip_settings(&config) != first.vip {
                warn!("node.vip_mode, vip_interface or announce_interface changed; it takes effect at the next restart");
            }
            dns.reconfigure(&config);
        }
    }, ops);
}

/// The settings that take effect only at start, as the process started
/// with them.
struct StartSettings {
    admin_listen: Option<std::net::SocketAddr>,
    admin_allowed_hosts: Vec<String>,
    vip: (lb_config::VipMode, String, String),
}

/// Raises the open-file limit (before the data plane starts, so its
/// descriptor budget is cut from the raised limit) and warns when the
/// configured bounds cannot fit in that budget (the limit less its reserve):
/// two descriptors per proxied TCP connection (`max_connections` per service
/// port, when bounded) plus one per UDP flow.
fn check_open_file_limit(config: &Config) {
    let limit = match crate::dataplane::raise_nofile_limit() {
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
    let budget = limit - crate::dataplane::descriptors::reserve_for(limit);
    if tcp + udp > budget {
        warn!(
            limit,
            budget,
            needed = tcp + udp,
            "the open-file limit cannot hold max_connections and udp_max_flows; raise it (ulimit -n, LimitNOFILE=)"
        );
    } else {
        info!(limit, "open-file limit");
    }
}

/// How many connections the admin API may hold: [`MAX_ADMIN_CONNECTIONS`],
/// but never more than half the descriptor reserve, since the admin API
/// lives inside it beside DNS, health-check ports, probes and the state
/// file: a crowd of admin clients must not take what those need.
fn admin_connections(budget: &crate::dataplane::descriptors::DescriptorBudget) -> usize {
    match budget.limit {
        Some(_) => usize::try_from(budget.reserve / 2)
            .unwrap_or(MAX_ADMIN_CONNECTIONS)
            .clamp(1, MAX_ADMIN_CONNECTIONS),
        None => MAX_ADMIN_CONNECTIONS,
    }
}
