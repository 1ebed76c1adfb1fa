//! `lb-proxy get` tables, golden: what an operator who knows `kubectl get svc`
//! and `kubectl get ep` expects to read, with a fixed `now`.

use std::time::{Duration, SystemTime};

use lb_core::{Protocol, TargetPort};
use lb_proxy::ops::views::{
    endpoints_table, human_duration, services_table, EndpointView, EndpointsList, EndpointsView,
    PortView, ServiceList, ServiceView, TableOptions,
};

use crate::support::created;

/// `-A`: a NAMESPACE column first.
const ALL_NAMESPACES: TableOptions = TableOptions {
    namespace_column: true,
    kind_prefix: None,
    headers: true,
};

const CREATED: &str = "2024-05-01T12:00:00Z";

fn service(namespace: &str, name: &str, service_type: &str, cluster_ip: &str) -> ServiceView {
    ServiceView {
        namespace: namespace.into(),
        name: name.into(),
        service_type: service_type.into(),
        cluster_ip: cluster_ip.into(),
        external_ips: vec![],
        load_balancer_ingress: vec![],
        ip_pool: String::new(),
        session_affinity: "None".into(),
        health_check_node_port: 0,
        ports: vec![],
        bind_errors: vec![],
        created: CREATED.into(),
        external_name: String::new(),
        external_traffic_policy: "Cluster".into(),
        internal_traffic_policy: "Cluster".into(),
        status: Default::default(),
        selector: Default::default(),
        load_balancer_source_ranges: vec![],
        labels: Default::default(),
        proxy_protocol: None,
        accept_proxy_protocol: false,
    }
}

fn port(port: u16, node_port: u16, protocol: Protocol) -> PortView {
    PortView {
        name: String::new(),
        protocol,
        port,
        target_port: TargetPort::Number(port),
        node_port,
        app_protocol: None,
        traffic: None,
    }
}

fn endpoint(ip: &str, port: u16, ready: bool) -> EndpointView {
    EndpointView {
        ip: ip.into(),
        port,
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        node: String::new(),
        zone: None,
        weight: 1,
        ready,
        serving: ready,
        terminating: false,
        active_connections: 0,
        state: String::new(),
        reason: String::new(),
        since: String::new(),
        probe: String::new(),
        connections_total: 0,
        bytes_rx: 0,
        bytes_tx: 0,
        detail: Default::default(),
    }
}

fn endpoints(namespace: &str, name: &str, eps: Vec<EndpointView>) -> EndpointsView {
    EndpointsView {
        namespace: namespace.into(),
        name: name.into(),
        endpoints: eps,
        created: CREATED.into(),
    }
}

#[test]
fn services_table_reads_like_kubectl_get_svc() {
    let mut web = service("default", "web", "NodePort", "127.96.0.10");
    web.ports = vec![
        port(80, 30001, Protocol::Tcp),
        port(443, 30443, Protocol::Tcp),
    ];
    let mut lb = service("default", "lb", "LoadBalancer", "127.96.0.20");
    lb.load_balancer_ingress = vec!["127.0.122.111".into(), "127.0.122.110".into()];
    lb.external_ips = vec!["127.0.5.1".into()];
    lb.ports = vec![port(80, 30002, Protocol::Tcp)];
    let mut pending = service("default", "pending", "LoadBalancer", "127.96.0.21");
    pending.ports = vec![port(53, 30053, Protocol::Udp)];
    let mut with_ext = service("prod", "api", "ClusterIP", "127.96.0.30");
    with_ext.external_ips = vec!["127.0.6.1".into(), "127.0.6.2".into()];
    with_ext.ports = vec![port(8080, 0, Protocol::Tcp)];
    let mut headless = service("default", "db", "ClusterIP", "None");
    headless.ports = vec![port(5432, 0, Protocol::Tcp)];
    let mut ext = service("default", "ext", "ExternalName", "");
    ext.external_name = "db.example.internal".into();
    let list = ServiceList {
        items: vec![web, lb, pending, with_ext, headless, ext],
    };
    let table =
        services_table(&list, created() + Duration::from_secs(330), false).render(&ALL_NAMESPACES);
    assert_eq!(
        table,
        "\
NAMESPACE   NAME      TYPE           CLUSTER-IP    EXTERNAL-IP                             PORT(S)                      AGE
default     web       NodePort       127.96.0.10   <none>                                  80:30001/TCP,443:30443/TCP   5m30s
default     lb        LoadBalancer   127.96.0.20   127.0.122.110,127.0.122.111,127.0.5.1   80:30002/TCP                 5m30s
default     pending   LoadBalancer   127.96.0.21   <pending>                               53:30053/UDP                 5m30s
prod        api       ClusterIP      127.96.0.30   127.0.6.1,127.0.6.2                     8080/TCP                     5m30s
default     db        ClusterIP      None          <none>                                  5432/TCP                     5m30s
default     ext       ExternalName   <none>        db.example.internal                     <none>                       5m30s
"
    );
}

#[test]
fn empty_lists_print_only_the_header() {
    let now = created();
    assert_eq!(
        services_table(&ServiceList::default(), now, false).render(&TableOptions::default()),
        "NAME   TYPE   CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE\n"
    );
    assert_eq!(
        endpoints_table(&EndpointsList::default(), now).render(&TableOptions::default()),
        "NAME   ENDPOINTS   AGE\n"
    );
}

#[test]
fn endpoints_table_lists_three_ready_endpoints_then_counts_the_rest() {
    let list = EndpointsList {
        items: vec![
            endpoints(
                "default",
                "web",
                vec![
                    endpoint("127.0.244.1", 8080, true),
                    endpoint("127.0.244.2", 8080, false),
                    endpoint("127.0.244.3", 8080, true),
                ],
            ),
            endpoints(
                "default",
                "big",
                vec![
                    endpoint("127.0.245.1", 80, true),
                    endpoint("127.0.245.2", 80, true),
                    endpoint("127.0.245.3", 80, false),
                    endpoint("127.0.245.4", 80, true),
                    endpoint("127.0.245.5", 80, true),
                    endpoint("127.0.245.6", 80, true),
                ],
            ),
            endpoints(
                "default",
                "three",
                vec![
                    endpoint("127.0.246.1", 80, true),
                    endpoint("127.0.246.2", 80, true),
                    endpoint("127.0.246.3", 80, true),
                ],
            ),
            endpoints(
                "kube-system",
                "down",
                vec![endpoint("127.0.247.1", 53, false)],
            ),
            endpoints("default", "empty", vec![]),
            endpoints("default", "v6", vec![endpoint("::1", 80, true)]),
        ],
    };
    let table = endpoints_table(
        &list,
        created() + Duration::from_secs(3 * 86_400 + 4 * 3600),
    )
    .render(&ALL_NAMESPACES);
    assert_eq!(
        table,
        "\
NAMESPACE     NAME    ENDPOINTS                                                  AGE
default       web     127.0.244.1:8080,127.0.244.3:8080                          3d4h
default       big     127.0.245.1:80,127.0.245.2:80,127.0.245.4:80 + 2 more...   3d4h
default       three   127.0.246.1:80,127.0.246.2:80,127.0.246.3:80               3d4h
kube-system   down    <none>                                                     3d4h
default       empty   <none>                                                     3d4h
default       v6      [::1]:80                                                   3d4h
"
    );
}

#[test]
fn age_follows_kubectl_human_duration() {
    let cases: &[(u64, &str)] = &[
        (0, "0s"),
        (45, "45s"),
        (90, "90s"),
        (119, "119s"),
        (120, "2m"),
        (330, "5m30s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 600, "3h10m"),
        (8 * 3600 + 600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (3 * 86_400 + 4 * 3600, "3d4h"),
        (8 * 86_400, "8d"),
        (729 * 86_400, "729d"),
        (730 * 86_400, "2y"),
        (775 * 86_400, "2y45d"),
        (8 * 365 * 86_400, "8y"),
    ];
    for &(secs, want) in cases {
        assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
    }
}

#[test]
fn age_tolerates_a_clock_slightly_behind_and_flags_one_far_behind() {
    let mut s = service("default", "web", "ClusterIP", "127.96.0.10");
    s.ports = vec![port(80, 0, Protocol::Tcp)];
    let list = ServiceList { items: vec![s] };
    let age_at = |now: SystemTime| {
        let table = services_table(&list, now, false).render(&TableOptions::default());
        table
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    assert_eq!(age_at(created() - Duration::from_millis(1500)), "0s");
    assert_eq!(age_at(created() - Duration::from_secs(5)), "<invalid>");

    let mut unknown = list.clone();
    unknown.items[0].created = String::new();
    assert!(services_table(&unknown, created(), false)
        .render(&TableOptions::default())
        .ends_with("<unknown>\n"));
}

#[test]
fn a_cli_reads_json_from_a_proxy_without_the_added_fields() {
    // The contract's example, as an older proxy would send it.
    let body = r#"{"items": [{"namespace": "default", "name": "web", "type": "NodePort",
        "cluster_ip": "127.96.0.10", "external_ips": [], "load_balancer_ingress": ["127.0.122.110"],
        "ip_pool": "lb-ip-pool", "session_affinity": "ClientIP", "health_check_node_port": 0,
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "target_port": "http", "node_port": 30001}]}]}"#;
    let list: ServiceList = serde_json::from_str(body).unwrap();
    assert_eq!(
        list.items[0].ports[0].target_port,
        TargetPort::Name("http".into())
    );
    assert!(services_table(&list, created(), false)
        .render(&TableOptions::default())
        .contains("80:30001/TCP   <unknown>\n"));
}
