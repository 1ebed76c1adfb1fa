//! The admin HTTP API: `/healthz`, `/readyz`, `/metrics`, the JSON views of
//! `/api/v1/...` and the status page.
//!
//! The server reads everything through [`AdminSource`], so it does not depend
//! on how the data plane is built: the binary implements the trait over its
//! data plane, tests implement it over a hand-built [`Snapshot`]. An embedder
//! can mount [`router`] in its own axum app; [`AdminServer`] runs it on a
//! listener as a part of lb's lifecycle, and [`serve`] runs it until a
//! future of the caller's completes. The client behind `lb-proxy get` is in
//! [`crate::cli::get`].
//!
//! Both servers bound what a client can hold ([`HEADER_READ_TIMEOUT`],
//! [`IDLE_TIMEOUT`], [`MAX_CONNECTIONS`]; [`AdminServerBuilder`] changes
//! them) and answer only requests whose `Host` is an IP literal, `localhost`
//! or an allowed name ([`AllowedHosts`], against DNS rebinding). A router an
//! embedder mounts in its own app gets neither: its server's limits and
//! host policy are the embedder's.

mod host;
mod view;

pub use host::AllowedHosts;
pub use view::ProxyView;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lb_core::{FrontendKey, Snapshot};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::info;

use crate::lifecycle::Tasks;
use crate::ops::http::{self, ConnectionOptions, ConnectionSlots};
use crate::ops::views;

pub use crate::ops::views::{
    CONFIG_PATH, CONNECTIONS_PATH, ENDPOINTS_PATH, EVENTS_PATH, PODS_PATH, SERVICES_PATH,
};

/// What the admin API reads; the binary implements it over the data plane.
/// A trait rather than a concrete type so the API can be served and tested
/// without sockets for services.
pub trait AdminSource: Send + Sync + 'static {
    /// The snapshot being served now.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Frontends that failed to bind, with the error, so `/api/v1/services` can
    /// show them.
    fn bind_errors(&self) -> BTreeMap<FrontendKey, String>;
    /// `None` = ready; `Some(reason)` = not ready (`/readyz` answers 503 with the
    /// reason).
    fn readiness(&self) -> Option<String>;
    /// Prometheus text exposition for `/metrics`, whole (may be empty):
    /// what a test or a small source implements; the server sends
    /// [`AdminSource::metrics_chunks`].
    fn metrics(&self) -> String;
    /// The same text as chunks, each written when the answer asks for it:
    /// what `/metrics` sends, so a large table's text (hundreds of
    /// megabytes at 10,000 services) is never held whole. By default
    /// [`AdminSource::metrics`] in one chunk; the proxy's
    /// ([`ProxyView`]) is a [`crate::ops::metrics::Exposition`].
    fn metrics_chunks(&self) -> Box<dyn Iterator<Item = Vec<u8>> + Send> {
        Box::new(std::iter::once(self.metrics().into_bytes()))
    }
    /// Readiness probe verdicts by pod, so `/api/v1/endpoints` can say why an
    /// endpoint is out of rotation; none by default (no probes).
    fn probes(&self) -> BTreeMap<lb_core::health::PodKey, crate::control::probe::ProbeStatus> {
        BTreeMap::new()
    }
    /// Open TCP connections, by registry id; none by default (a source
    /// without a data plane has none).
    fn connections(&self) -> Vec<crate::dataplane::connections::OpenConnection> {
        Vec::new()
    }
    /// The config being served: its LoadBalancer services left without an
    /// address (MetalLB's AllocationFailed) make their `LoadBalancerAssigned`
    /// condition, its selectors show in `/api/v1/services`; none by default.
    fn config(&self) -> Option<Arc<lb_config::Config>> {
        None
    }
    /// Where the services' conditions remember their last transition; `None`
    /// (the default) stamps every condition with the time of the request.
    fn transitions(&self) -> Option<&views::Transitions> {
        None
    }
    /// Recent events (reloads, errors, allocation failures, endpoint state
    /// changes) for the status page and `lb-proxy get events`; none by
    /// default.
    fn events(&self) -> crate::ops::status::EventList {
        crate::ops::status::EventList::default()
    }
    /// The `[proxy]` settings in force, for `/api/v1/config`; unknown by
    /// default.
    fn settings(&self) -> Option<lb_core::ProxySettings> {
        None
    }
    /// The data plane's descriptor budget, for `/api/v1/config`; unknown by
    /// default.
    fn descriptors(&self) -> Option<crate::dataplane::DescriptorBudget> {
        None
    }
    /// Each service's recent rates (the status page's sparklines,
    /// `/api/v1/rates`); none by default (nothing samples the counters).
    fn rates(&self) -> crate::ops::status::RatesList {
        crate::ops::status::RatesList {
            interval_seconds: crate::ops::status::history::SAMPLE_PERIOD.as_secs(),
            items: Vec::new(),
        }
    }
}

/// Content type of Prometheus' text format, which scrapers check.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How long a client has to send a complete request head, from the accept
/// (or, on a kept-alive connection, from the first byte of the next
/// request), before its connection is closed: long enough for any client
/// that means to ask, short enough that a client sending a head a byte at a
/// time (slowloris) holds a connection for seconds, not minutes.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a kept-alive connection may go without a request before it is
/// closed: the status page polls every second (and `lb-proxy get -w` asks
/// every second on a new connection), so only a client that stopped asking
/// is cut.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most connections the admin API holds at once; more are closed as
/// they are accepted, before anything is read. Every connection costs a
/// descriptor and a task: the bound keeps a flood of connections from
/// taking the descriptors the data plane needs, and is far above what
/// operators, scrapers and status pages open.
pub const MAX_CONNECTIONS: usize = 256;

/// The admin API's connection limits, by default the constants above.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

impl Limits {
    /// How the admin API treats its connections: kept alive (the status
    /// page polls every second), with both clocks.
    fn options(&self) -> ConnectionOptions {
        ConnectionOptions {
            keep_alive: true,
            header_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// The routes of the admin API over `source`. Unknown paths answer 404.
pub fn router(source: Arc<dyn AdminSource>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(SERVICES_PATH, get(services))
        .route(ENDPOINTS_PATH, get(endpoints))
        .route(PODS_PATH, get(pods))
        .route(CONNECTIONS_PATH, get(connections))
        .route(CONFIG_PATH, get(config))
        .route(views::PROCESS_PATH, get(process))
        .route(EVENTS_PATH, get(events))
        .route(crate::ops::status::RATES_PATH, get(rates))
        .route("/", get(status_page))
        .fallback(not_found)
        .with_state(source)
}

/// The admin API running on a listener as a part of lb's lifecycle: the
/// accept loop and every connection are tasks of the [`Tasks`] it was
/// started with.
#[derive(Debug)]
pub struct AdminServer {
    tasks: Tasks,
    local_addr: SocketAddr,
}

impl AdminServer {
    /// Serves the admin API over `source` on `listener` until `tasks` stops
    /// (or [`AdminServer::stop`]), with the default limits and no allowed
    /// host names ([`AdminServer::builder`] for others). The listener is
    /// taken ready-made: the binary binds it without SO_REUSEPORT so that a
    /// clash is an error at start.
    pub fn start(
        listener: TcpListener,
        source: Arc<dyn AdminSource>,
        tasks: Tasks,
    ) -> std::io::Result<AdminServer> {
        AdminServer::builder(listener, source).start(tasks)
    }

    /// An admin server over `source` on `listener`, to be given other
    /// limits or allowed host names before it starts.
    pub fn builder(listener: TcpListener, source: Arc<dyn AdminSource>) -> AdminServerBuilder {
        AdminServerBuilder {
            listener,
            source,
            limits: Limits::default(),
            hosts: AllowedHosts::default(),
        }
    }

    /// Where the admin API answers.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish, and returns once
    /// every task of the server has ended.
    pub async fn stop(&self) {
        self.tasks.stop().await;
    }
}

/// An admin server before it starts: the defaults are the constants of
/// this module and no host names beyond IP literals and `localhost`; an
/// embedder (or a test) may change them.
pub struct AdminServerBuilder {
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    limits: Limits,
    hosts: AllowedHosts,
}

impl std::fmt::Debug for AdminServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServerBuilder")
            .field("listener", &self.listener)
            .field("limits", &self.limits)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl AdminServerBuilder {
    /// How long a client has to send a complete request head (default
    /// [`HEADER_READ_TIMEOUT`]).
    pub fn header_read_timeout(mut self, timeout: Duration) -> AdminServerBuilder {
        self.limits.header_read_timeout = timeout;
        self
    }

    /// How long a kept-alive connection may go without a request (default
    /// [`IDLE_TIMEOUT`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> AdminServerBuilder {
        self.limits.idle_timeout = timeout;
        self
    }

    /// The most connections held at once (default [`MAX_CONNECTIONS`]; 0
    /// refuses every connection).
    pub fn max_connections(mut self, max: usize) -> AdminServerBuilder {
        self.limits.max_connections = max;
        self
    }

    /// Host names answered besides IP literals and `localhost`
    /// (`admin.allowed_hosts`).
    pub fn allowed_hosts(mut self, hosts: AllowedHosts) -> AdminServerBuilder {
        self.hosts = hosts;
        self
    }

    /// The router with the `Host` check in front of every route.
    fn router(&self) -> Router {
        router(self.source.clone()).layer(axum::middleware::from_fn_with_state(
            Arc::new(self.hosts.clone()),
            host::check,
        ))
    }

    /// Serves the admin API until `tasks` stops (or [`AdminServer::stop`]).
    pub fn start(self, tasks: Tasks) -> std::io::Result<AdminServer> {
        let local_addr = self.listener.local_addr()?;
        let router = self.router();
        let options = self.limits.options();
        let slots = ConnectionSlots::new(self.limits.max_connections);
        let serving = tasks.clone();
        let listener = self.listener;
        tasks.spawn(async move { http::serve(listener, router, options, slots, &serving).await });
        info!(%local_addr, "admin API listening");
        Ok(AdminServer { tasks, local_addr })
    }

    /// Serves the admin API until `shutdown` completes, then lets in-flight
    /// requests finish and returns once every connection has ended
    /// (mini-redis style: the caller owns the lifetime; [`Self::start`] is
    /// the same under a [`Tasks`]).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let tasks = Tasks::new();
        let router = self.router();
        let options = self.limits.options();
        let slots = ConnectionSlots::new(self.limits.max_connections);
        tokio::join!(
            http::serve(self.listener, router, options, slots, &tasks),
            async {
                shutdown.await;
                tasks.cancel();
            }
        );
        tasks.wait().await;
        Ok(())
    }
}

/// Serves the admin API on `listener` until `shutdown` completes, with the
/// default limits and no allowed host names, then lets in-flight requests
/// finish and returns once every connection has ended
/// ([`AdminServerBuilder::serve`] with the defaults).
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    AdminServer::builder(listener, source).serve(shutdown).await
}

type Source = State<Arc<dyn AdminSource>>;

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(source): Source) -> Response {
    match source.readiness() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// `/metrics`, streamed: each chunk is written when hyper asks for the next
/// part of the body, on the thread serving this connection (the App's
/// `lb-ops` thread), so the text is never held whole and other tasks there
/// (DNS) run between chunks.
async fn metrics(State(source): Source) -> Response {
    let chunks = source
        .metrics_chunks()
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

async fn services(State(source): Source) -> Response {
    let snapshot = source.snapshot();
    let mut list = views::services_view_with(
        &snapshot,
        Some(&source.bind_errors()),
        source.config().as_deref(),
        source.transitions(),
        std::time::SystemTime::now(),
    );
    let limit = source.settings().map_or(0, |s| s.max_connections);
    views::with_traffic(&mut list, &snapshot, limit);
    json_response(&list)
}

async fn endpoints(State(source): Source) -> Response {
    let snapshot = source.snapshot();
    json_response(&views::endpoints_view_with(&snapshot, &source.probes()))
}

async fn pods(State(source): Source) -> Response {
    json_response(&views::pods_view(
        source.config().as_deref(),
        &source.probes(),
        source.transitions(),
        std::time::SystemTime::now(),
    ))
}

/// The query of `/api/v1/connections`: Kubernetes' list pagination. Read as
/// text so a bad number is answered with what was wrong with it.
#[derive(Debug, Deserialize)]
struct PageQuery {
    /// Largest page wanted; 0 or absent = [`views::MAX_PAGE`].
    limit: Option<String>,
    /// The `continue` token of the previous page: the last id it held.
    #[serde(rename = "continue")]
    after: Option<String>,
}

async fn connections(
    State(source): Source,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => {
            return (StatusCode::BAD_REQUEST, format!("{rejection}\n")).into_response();
        }
    };
    let bad = |what: &str, v: &str| {
        (
            StatusCode::BAD_REQUEST,
            format!("{what} must be a non-negative integer, got {v:?}\n"),
        )
            .into_response()
    };
    let limit = match query.limit.as_deref() {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return bad("limit", v),
        },
    };
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => n,
            Err(_) => return bad("continue", v),
        },
    };
    let all = source.connections();
    let now = std::time::Instant::now();
    json_response(&views::page(&all, limit, after, now))
}

/// Events carry an `ETag`, and a poller that sends it back in
/// `If-None-Match` gets `304 Not Modified` with no body while nothing
/// happened: the status page polls every second, and the list can hold
/// long error reports.
async fn events(State(source): Source, headers: axum::http::HeaderMap) -> Response {
    let body = match json_body(&source.events()) {
        Ok(body) => body,
        Err(e) => return *e,
    };
    let tag = etag(&body);
    let cache = (header::CACHE_CONTROL, "no-cache".to_string());
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag), cache]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::ETAG, tag),
            cache,
        ],
        body,
    )
        .into_response()
}

/// A strong validator for `body`: a hash of its bytes, quoted.
fn etag(body: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

async fn config(State(source): Source) -> Response {
    let snapshot = source.snapshot();
    json_response(&views::config_view(
        &snapshot,
        source.settings().as_ref(),
        &source.bind_errors(),
        source.descriptors(),
    ))
}

/// Who serves: the status page's header, and an operator telling two
/// processes apart (a restart, a second one by mistake).
async fn process(State(source): Source) -> Response {
    let snapshot = source.snapshot();
    json_response(&views::ProcessView::this(&snapshot.node().name))
}

/// Compact JSON: the rates are long arrays of numbers that nobody reads
/// line by line, polled every five seconds.
async fn rates(State(source): Source) -> Response {
    match serde_json::to_string(&source.rates()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode JSON: {e}\n"),
        )
            .into_response(),
    }
}

async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::ops::status::INDEX_HTML,
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Pretty JSON with a final newline: the same bytes are what `lb-proxy get -o
/// json` prints, and people read them.
fn json_response<T: Serialize>(value: &T) -> Response {
    match json_body(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => *e,
    }
}

/// The body of [`json_response`], or the 500 to answer instead.
fn json_body<T: Serialize>(value: &T) -> Result<String, Box<Response>> {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            Ok(body)
        }
        Err(e) => Err(Box::new(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode JSON: {e}\n"),
            )
                .into_response(),
        )),
    }
}
