//! lb-proxy: the lb data plane, the control plane that feeds it, and the
//! operator surface around them.
//!
//! Map of the crate, one folder per part:
//! - [`dataplane`]: [`DataPlane`], the running data plane: service listeners
//!   and their accept loops, one TCP connection from accept to close, the
//!   forwarding engines (copy loop; `splice(2)` on Linux), UDP flows, per-core
//!   workers, and the registry of open connections.
//! - [`control`]: [`control::ControlPlane`], what decides the table the data
//!   plane serves: the sources, the one rebuild task, readiness probes,
//!   endpoint host names, and (feature `vip`) interface VIPs.
//! - [`ops`]: the operator surface: the JSON views and tables, and with the
//!   `admin` feature the admin API, `/metrics`, the status page and
//!   health-check node ports; with `dns` the cluster DNS responder.
//! - `app` (feature `admin`): `App`, a config file wired to all of the above:
//!   what the binary and the quickstart run.
//! - [`error`]: [`Error`], what the library reports.
//! - [`lifecycle`]: [`lifecycle::Tasks`], the one way lb spawns and stops
//!   tasks.
//! - [`handover`]: hot upgrade: the inventory of listening sockets
//!   ([`handover::Sockets`]) and handing them to a successor process.
//! - `sys` (private): system calls and socket options, the only place
//!   `unsafe` may live.
//!
//! With `default-features = false` the crate is the data plane and the control
//! plane only; see the README for the features.
//!
//! # Embed a data plane
//!
//! Services built in code, served until you shut the data plane down; a new
//! set from your own service discovery replaces the old one, with round-robin
//! positions, affinity pins and counters carried over, and connections to
//! endpoints that left draining.
//!
//! ```
//! use std::time::SystemTime;
//! use lb_core::{EndpointSpec, NodeSpec, PortSpec, ProxySettings, ServiceSpec, Snapshot};
//! use lb_proxy::DataPlane;
//! use tokio::io::AsyncReadExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A backend that says hello and closes.
//! let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let backend_addr = backend.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut conn, _)) = backend.accept().await {
//!         let _ = tokio::io::AsyncWriteExt::write_all(&mut conn, b"hello").await;
//!     }
//! });
//!
//! let service = |backends: &[std::net::SocketAddr]| {
//!     let mut port = PortSpec::tcp("app", 7000);
//!     for b in backends {
//!         port = port.with_endpoint(EndpointSpec::new(*b));
//!     }
//!     ServiceSpec::cluster_ip("default", "app", "127.97.0.71".parse().unwrap()).with_port(port)
//! };
//! let node = NodeSpec::default();
//! let first = Snapshot::build(node.clone(), vec![service(&[backend_addr])], None, SystemTime::now());
//! let dataplane = DataPlane::start(ProxySettings::default(), first).await;
//!
//! let mut conn = tokio::net::TcpStream::connect("127.97.0.71:7000").await?;
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).await?;
//! assert_eq!(answer, "hello");
//!
//! // Your discovery says the backend is gone: the listener closes.
//! dataplane.update(node, vec![service(&[])]).await;
//! assert!(tokio::net::TcpStream::connect("127.97.0.71:7000").await.is_err());
//! dataplane.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Feed it from your own discovery, with lb's control plane
//!
//! A [`lb_config::source::MemorySource`] holds the objects of the config
//! file's tables (here from TOML; from your discovery's own format in
//! practice); every `set` is validated like the file (Kubernetes' errors,
//! cluster IPs allocated and kept, selectors resolved against pods, readiness
//! probes run) and reaches the data plane through the control plane's one
//! rebuild task.
//!
//! ```
//! use std::sync::Arc;
//! use lb_config::source::{DesiredState, MemorySource, Origin};
//! use lb_core::alloc::MemoryStore;
//! use lb_proxy::control::{ControlOptions, ControlPlane};
//! use lb_proxy::lifecycle::Tasks;
//! use lb_proxy::DataPlane;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let discovery = MemorySource::new("discovery");
//! let objects = |text: &str| {
//!     let raw = lb_config::parse_str(text).expect("objects");
//!     DesiredState::from_objects(raw, &Origin::Program { source: "discovery".into() })
//! };
//! discovery.set(objects(r#"
//!     [[services]]
//!     name = "web"
//!     cluster_ip = "127.96.0.80"
//!     ports = [{ port = 8080 }]
//!     [[endpoints]]
//!     name = "web"
//!     subsets = [{ addresses = [{ ip = "127.0.244.80" }], ports = [{ port = 8080 }] }]
//! "#));
//!
//! // The settings ([cluster], [proxy], ...) come from the config file's
//! // source when there is one (lb_config::source::FileSource); here, a source
//! // the program sets too.
//! let settings = MemorySource::new("settings");
//! settings.set(DesiredState {
//!     file: Some(lb_config::parse_str("[cluster]\nservice_cidr = \"127.96.0.0/16\"")?),
//!     ..DesiredState::default()
//! });
//! let options = ControlOptions::new(Box::<MemoryStore>::default())
//!     .source(Arc::new(settings))
//!     .source(Arc::new(discovery.clone()))
//!     .node_name("node-1");
//! let tasks = Tasks::new();
//! let (control, loaded) = ControlPlane::load(options, tasks.child()).await?;
//! let dataplane = DataPlane::start_in(&tasks, loaded.config.proxy.clone(), loaded.snapshot,
//!     Default::default()).await;
//! control.serve(&dataplane);
//! assert_eq!(dataplane.table().load().services().count(), 1);
//!
//! // Discovery removes the service: the control plane rebuilds the table.
//! discovery.set(DesiredState::default());
//! let mut emptied = false;
//! for _ in 0..100 {
//!     if dataplane.table().load().services().count() == 0 {
//!         emptied = true;
//!         break;
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! }
//! assert!(emptied);
//!
//! dataplane.shutdown().await;
//! control.stop().await;
//! tasks.stop().await;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(
    feature = "admin",
    doc = r#"
# Mount lb's admin API and metrics in your own axum application

[`ops::admin::router`] is an axum `Router` over anything that implements
[`ops::admin::AdminSource`]; [`ops::admin::ProxyView`] is one over a data
plane (and, with `with_control`, its control plane). Merge it into your own
router: `/metrics`, `/healthz`, `/readyz`, `/api/v1/...` and the status page
answer beside your routes.

```
use std::sync::Arc;
use lb_core::{NodeSpec, ProxySettings, Snapshot};
use lb_proxy::ops::admin::{router, ProxyView};
use lb_proxy::DataPlane;

# #[tokio::main(flavor = "current_thread")]
# async fn main() -> Result<(), Box<dyn std::error::Error>> {
let snapshot = Snapshot::empty(NodeSpec::default());
let dataplane = DataPlane::start(ProxySettings::default(), snapshot).await;

let app = axum::Router::new()
    .route("/hello", axum::routing::get(|| async { "hello" }))
    .merge(router(Arc::new(ProxyView::new(dataplane.clone()))));

let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
let addr = listener.local_addr()?;
let server = tokio::spawn(async move { axum::serve(listener, app).await });

// Your route and lb's metrics, on one listener.
let mut conn = tokio::net::TcpStream::connect(addr).await?;
tokio::io::AsyncWriteExt::write_all(&mut conn,
    b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
let mut answer = String::new();
tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut answer).await?;
assert!(answer.starts_with("HTTP/1.1 200"));
assert!(answer.contains("process_resident_memory_bytes"), "{answer}");

server.abort();
dataplane.shutdown().await;
# Ok(())
# }
```
"#
)]

#[cfg(feature = "admin")]
pub mod app;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
pub mod control;
pub mod dataplane;
pub mod error;
pub mod handover;
pub mod lifecycle;
pub mod ops;
#[allow(unsafe_code)]
mod sys;

pub use dataplane::{run, AcceptMode, BindOptions, DataPlane};

/// The git revision this crate was built from (`unknown` outside a git
/// checkout): `lb_build_info{revision}` and `lb-proxy --version` name it, so
/// an operator can tell which build answers.
pub const BUILD_REVISION: &str = env!("LB_BUILD_REVISION");
pub use error::Error;
