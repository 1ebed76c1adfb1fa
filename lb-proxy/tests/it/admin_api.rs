//! The admin HTTP API, served on loopback over a hand-built snapshot: the
//! JSON shapes of the contract, the health endpoints, and a server that
//! leaves nothing running once stopped. With the `cli` feature, the same
//! server read back with the CLI's own client: `lb-proxy get`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{
    ClusterIp, EndpointSpec, FrontendKey, PortSpec, Protocol, ServiceSpec, ServiceType,
    SessionAffinity, Snapshot, TargetPort,
};
#[cfg(feature = "cli")]
use lb_proxy::cli::get::{self, AdminError, OutputFormat};
use lb_proxy::lifecycle::Tasks;
use lb_proxy::ops::admin::{self, AdminServer, AdminSource};
use serde_json::{json, Value};

use crate::support::{created, http_get, ip, node, sa};

/// The contract's example service, plus a headless service, a service in
/// another namespace and an ExternalName service.
fn services() -> Vec<ServiceSpec> {
    let mut ready = EndpointSpec::new(sa("127.0.244.1:8080"));
    ready.node = Some("node-1".into());
    let mut not_ready = EndpointSpec::new(sa("127.0.244.2:8080"));
    not_ready.serving = false;
    not_ready.weight = 2;
    let mut http = PortSpec::tcp("http", 80)
        .with_endpoint(ready)
        .with_endpoint(not_ready);
    http.target_port = TargetPort::Name("http".into());
    http.node_port = Some(30001);
    let mut web = ServiceSpec::cluster_ip("default", "web", ip("127.96.0.10"))
        .with_port(http)
        .with_affinity(SessionAffinity::ClientIp {
            timeout: Duration::from_secs(10_800),
        });
    web.service_type = ServiceType::NodePort;
    web.load_balancer_ips = vec![ip("127.0.122.110")];
    web.ip_pool = "lb-ip-pool".into();

    let mut headless = ServiceSpec::cluster_ip("default", "db", ip("127.96.0.11")).with_port(
        PortSpec::tcp("", 5432).with_endpoint(EndpointSpec::new(sa("127.0.244.3:5432"))),
    );
    headless.cluster_ip = ClusterIp::None;

    let mut dns_udp = PortSpec::tcp("dns", 53);
    dns_udp.protocol = Protocol::Udp;
    let api = ServiceSpec::cluster_ip("other", "api", ip("127.96.0.12"))
        .with_port(dns_udp)
        .with_port(PortSpec::tcp("dns-tcp", 53));

    let mut ext = ServiceSpec::cluster_ip("default", "ext", ip("127.96.0.13"));
    ext.service_type = ServiceType::ExternalName;
    ext.cluster_ip = ClusterIp::None;
    ext.external_name = "db.example.internal".into();

    vec![web, headless, api, ext]
}

struct TestSource {
    snapshot: Arc<Snapshot>,
    bind_errors: BTreeMap<FrontendKey, String>,
    readiness: Mutex<Option<String>>,
}

impl AdminSource for TestSource {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }
    fn bind_errors(&self) -> BTreeMap<FrontendKey, String> {
        self.bind_errors.clone()
    }
    fn readiness(&self) -> Option<String> {
        self.readiness.lock().unwrap().clone()
    }
    fn metrics(&self) -> String {
        "# TYPE lb_connections_total counter\n".into()
    }
}

fn source() -> Arc<TestSource> {
    let mut bind_errors = BTreeMap::new();
    bind_errors.insert(
        FrontendKey {
            addr: sa("127.0.1.1:30001"),
            protocol: Protocol::Tcp,
        },
        "Address already in use (os error 98)".to_string(),
    );
    // A frontend that is no longer in the snapshot: not reported.
    bind_errors.insert(
        FrontendKey {
            addr: sa("127.0.9.9:9"),
            protocol: Protocol::Tcp,
        },
        "Cannot assign requested address (os error 99)".to_string(),
    );
    Arc::new(TestSource {
        snapshot: Arc::new(Snapshot::build(node(), services(), None, created())),
        bind_errors,
        readiness: Mutex::new(None),
    })
}

/// The admin API on 127.0.0.1:<ephemeral>, on its own runtime; stopped (and
/// `serve` checked to return Ok) on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(source: Arc<dyn AdminSource>) -> Server {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(admin::serve(listener, source, async move {
                let _ = stopped.await;
            }))
        });
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl Server {
    /// GET `path`: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
    }

    /// The admin address as the CLI takes it.
    #[cfg(feature = "cli")]
    fn admin(&self) -> String {
        self.addr.to_string()
    }
}

fn get_json(server: &Server, path: &str) -> Value {
    let (status, body) = server.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn services_api_matches_the_contract_shape() {
    let server = Server::start(source());
    let body = get_json(&server, "/api/v1/services");
    let items = body["items"].as_array().unwrap();
    let names: Vec<(&str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["namespace"].as_str().unwrap(),
                i["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("default", "db"),
            ("default", "ext"),
            ("default", "web"),
            ("other", "api")
        ]
    );

    let web = &items[2];
    // Every field of the contract's example, value for value.
    let expected = json!({"namespace": "default", "name": "web", "type": "NodePort",
        "cluster_ip": "127.96.0.10", "external_ips": [], "load_balancer_ingress": ["127.0.122.110"],
        "ip_pool": "lb-ip-pool", "session_affinity": "ClientIP", "health_check_node_port": 0,
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "target_port": "http", "node_port": 30001}]});
    // Fields may be added: each port also carries its live counters.
    let mut web = web.clone();
    for port in web["ports"].as_array_mut().unwrap() {
        let traffic = port.as_object_mut().unwrap().remove("traffic");
        assert!(traffic.is_some_and(|t| t["accepted"].is_u64()), "{port}");
    }
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&web[field], value, "field {field}");
    }
    assert_eq!(
        web["bind_errors"],
        json!([{"address": "127.0.1.1:30001", "protocol": "TCP",
                "error": "Address already in use (os error 98)"}])
    );
    assert_eq!(web["created"], "2024-05-01T12:00:00Z");

    let db = &items[0];
    assert_eq!(db["type"], "ClusterIP");
    assert_eq!(db["cluster_ip"], "None");
    assert_eq!(db["session_affinity"], "None");
    assert_eq!(db["bind_errors"], json!([]));
    assert_eq!(db["ports"][0]["name"], "");
    assert_eq!(db["ports"][0]["target_port"], 5432);
    assert_eq!(db["ports"][0]["node_port"], 0);

    let ext = &items[1];
    assert_eq!(ext["type"], "ExternalName");
    assert_eq!(ext["cluster_ip"], "");
    assert_eq!(ext["external_name"], "db.example.internal");
    assert_eq!(ext["ports"], json!([]));

    let api = &items[3];
    assert_eq!(api["ports"][0]["protocol"], "UDP");
    assert_eq!(api["ports"][1]["protocol"], "TCP");
}

#[test]
fn endpoints_api_lists_every_endpoint_with_its_conditions() {
    let server = Server::start(source());
    let body = get_json(&server, "/api/v1/endpoints");
    let items = body["items"].as_array().unwrap();
    // ExternalName services have no endpoints object, as in Kubernetes.
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db", "web", "api"]);

    let web = &items[1];
    assert_eq!(web["namespace"], "default");
    // The contract's fields, exactly; fields added later (state, reason,
    // since, probe) may sit beside them.
    let contract = |got: &serde_json::Value, expected: serde_json::Value| {
        for (field, value) in expected.as_object().unwrap() {
            assert_eq!(&got[field], value, "field {field}");
        }
    };
    contract(
        &web["endpoints"][0],
        json!({"ip": "127.0.244.1", "port": 8080, "port_name": "http", "protocol": "TCP",
               "node": "node-1", "weight": 1, "ready": true, "serving": true,
               "terminating": false, "active_connections": 0}),
    );
    contract(
        &web["endpoints"][1],
        json!({"ip": "127.0.244.2", "port": 8080, "port_name": "http", "protocol": "TCP",
               "node": "", "weight": 2, "ready": false, "serving": false,
               "terminating": false, "active_connections": 0}),
    );
    assert_eq!(web["endpoints"][0]["state"], "ready");
    assert_eq!(web["endpoints"][1]["state"], "not_ready");
    assert_eq!(web["endpoints"][1]["reason"], "not ready");
    assert_eq!(items[2]["endpoints"], json!([]));
}

#[test]
fn endpoints_api_shows_live_active_connections() {
    let src = source();
    let port = src
        .snapshot
        .service(&lb_core::ServiceKey::new("default", "web"))
        .unwrap()
        .ports[0]
        .clone();
    lb_core::stats::add(&port.endpoints()[0].stats.active, 3);
    let server = Server::start(src);
    let body = get_json(&server, "/api/v1/endpoints");
    assert_eq!(body["items"][1]["endpoints"][0]["active_connections"], 3);
}

#[test]
fn healthz_answers_ok() {
    let server = Server::start(source());
    assert_eq!(server.get("/healthz"), (200, "ok".to_string()));
}

#[test]
fn readyz_answers_503_with_the_reason_until_the_source_is_current() {
    let src = source();
    let server = Server::start(src.clone());
    assert_eq!(server.get("/readyz"), (200, "ok".to_string()));
    *src.readiness.lock().unwrap() = Some("etcd source is stale: connection refused".into());
    assert_eq!(
        server.get("/readyz"),
        (503, "etcd source is stale: connection refused".to_string())
    );
    // The CLI's client reports it as an error with the status and body.
    #[cfg(feature = "cli")]
    match get::fetch(&server.admin(), "/readyz") {
        Err(AdminError::Status { status, body, .. }) => {
            assert_eq!(status, 503);
            assert_eq!(body, "etcd source is stale: connection refused");
        }
        other => panic!("expected a 503 error, got {other:?}"),
    }
    *src.readiness.lock().unwrap() = None;
    assert_eq!(server.get("/readyz"), (200, "ok".to_string()));
}

#[test]
fn metrics_are_served_as_prometheus_text() {
    let server = Server::start(source());
    assert_eq!(
        server.get("/metrics"),
        (200, "# TYPE lb_connections_total counter\n".to_string())
    );
}

#[test]
fn unknown_paths_answer_404() {
    let server = Server::start(source());
    // "/" is the status page (issue 7); other unknown paths are 404.
    for path in ["/index.html", "/api/v1/nodes", "/healthz/extra"] {
        assert_eq!(server.get(path).0, 404, "{path}");
    }
}

/// `lb-proxy get ARGS` (with `-A` when `all`), as the binary reads it.
#[cfg(feature = "cli")]
fn request(args: &[&str], all: bool, output: OutputFormat) -> get::GetRequest {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    get::GetRequest::parse(&args, None, all, None, output, false).unwrap()
}

#[cfg(feature = "cli")]
#[test]
fn get_json_is_a_kubectl_list_of_the_api_items() {
    let server = Server::start(source());
    for (kind, path, object_kind) in [
        ("services", "/api/v1/services", "Service"),
        ("endpoints", "/api/v1/endpoints", "Endpoints"),
    ] {
        let printed = get::get_command(
            &server.admin(),
            &request(&[kind], true, OutputFormat::Json),
            std::time::SystemTime::now(),
        )
        .unwrap();
        assert!(printed.success && printed.stderr.is_empty(), "{printed:?}");
        assert!(printed.stdout.ends_with('\n'));
        let printed: Value = serde_json::from_str(&printed.stdout).unwrap();
        let api: Value = serde_json::from_str(&get::fetch(&server.admin(), path).unwrap()).unwrap();
        assert_eq!(printed["kind"], "List");
        assert_eq!(printed["apiVersion"], "v1");
        let items = printed["items"].as_array().unwrap();
        assert_eq!(items.len(), api["items"].as_array().unwrap().len());
        for (item, api_item) in items.iter().zip(api["items"].as_array().unwrap()) {
            let mut item = item.clone();
            let fields = item.as_object_mut().unwrap();
            assert_eq!(fields.remove("kind"), Some(json!(object_kind)));
            assert_eq!(fields.remove("apiVersion"), Some(json!("v1")));
            assert_eq!(&item, api_item);
        }
    }
}

#[cfg(feature = "cli")]
#[test]
fn get_services_prints_a_kubectl_table_of_the_live_proxy() {
    let server = Server::start(source());
    let now = created() + Duration::from_secs(45);
    let table = get::get_command(
        &server.admin(),
        &request(&["services"], true, OutputFormat::Table),
        now,
    )
    .unwrap();
    assert_eq!(
        table.stdout,
        "\
NAMESPACE   NAME   TYPE           CLUSTER-IP    EXTERNAL-IP           PORT(S)         AGE
default     db     ClusterIP      None          <none>                5432/TCP        45s
default     ext    ExternalName   <none>        db.example.internal   <none>          45s
default     web    NodePort       127.96.0.10   <none>                80:30001/TCP    45s
other       api    ClusterIP      127.96.0.12   <none>                53/UDP,53/TCP   45s
"
    );
}

#[cfg(feature = "cli")]
#[test]
fn get_endpoints_prints_ready_endpoints_only() {
    let server = Server::start(source());
    let now = created() + Duration::from_secs(3 * 3600 + 600);
    let table = get::get_command(
        &server.admin(),
        &request(&["endpoints"], false, OutputFormat::Table),
        now,
    )
    .unwrap();
    assert_eq!(
        table.stdout,
        "\
NAME   ENDPOINTS          AGE
db     127.0.244.3:5432   3h10m
web    127.0.244.1:8080   3h10m
"
    );
}

#[cfg(feature = "cli")]
#[test]
fn get_against_a_closed_port_is_an_http_error() {
    let mut server = Server::start(source());
    let addr = server.admin();
    server.stop().unwrap();
    let err = get::get_command(
        &addr,
        &request(&["services"], false, OutputFormat::Table),
        std::time::SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, AdminError::Http { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[test]
fn a_bad_limit_or_continue_is_answered_400_with_what_was_wrong() {
    let server = Server::start(source());
    for (query, answer) in [
        (
            "limit=x",
            "limit must be a non-negative integer, got \"x\"\n",
        ),
        (
            "limit=-1",
            "limit must be a non-negative integer, got \"-1\"\n",
        ),
        ("limit=", "limit must be a non-negative integer, got \"\"\n"),
        (
            "limit=1&continue=abc",
            "continue must be a non-negative integer, got \"abc\"\n",
        ),
    ] {
        let path = format!("/api/v1/connections?{query}");
        assert_eq!(server.get(&path), (400, answer.to_string()), "{query}");
    }
    for query in ["", "?limit=2", "?continue=", "?limit=0&continue=7&watch=1"] {
        let path = format!("/api/v1/connections{query}");
        let (status, body) = server.get(&path);
        assert_eq!(status, 200, "{query}: {body}");
        let list: lb_proxy::ops::views::ConnectionList = serde_json::from_str(&body).unwrap();
        assert_eq!(list.total, 0, "{query}");
    }
}

#[tokio::test]
async fn a_stopped_admin_server_leaves_no_task_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = Tasks::new();
    let server = AdminServer::start(listener, source(), root.child()).unwrap();
    let addr = server.local_addr();

    // A keep-alive client that asked once and stays connected, idle.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert_eq!(root.running(), 2, "the accept loop and the idle connection");

    server.stop().await;
    assert_eq!(root.running(), 0);
    assert_eq!(runtime.num_alive_tasks(), before, "no task of it is left");
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed, not left hanging")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
