//! Validation rules, read as specifications: each error with its exact path and
//! Kubernetes wording.

mod support;

use lb_config::check_str;
use support::{assert_error, errors, with_cidr, CIDR};

#[test]
fn an_empty_file_is_valid_with_defaults() {
    let c = check_str("").unwrap();
    assert!(c.services.is_empty());
    assert_eq!(
        c.node.addresses,
        vec!["0.0.0.0".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(c.admin_listen, Some("127.0.0.1:10249".parse().unwrap()));
    assert_eq!(c.cluster.service_cidr.to_string(), "10.96.0.0/12");
    assert_eq!(c.cluster.node_port_range, 30000..=32767);
    assert_eq!(c.cluster.domain, "cluster.local");
    assert_eq!(c.proxy, lb_core::ProxySettings::default());
    assert!(!c.node.name.is_empty());
}

#[test]
fn an_empty_admin_listen_disables_the_admin_api() {
    let c = check_str("[admin]\nlisten = \"\"\n").unwrap();
    assert_eq!(c.admin_listen, None);
}

#[test]
fn admin_allowed_hosts_are_host_names_without_a_port() {
    let c = check_str("[admin]\nallowed_hosts = [\"lb.node-1.example\", \"lb\"]\n").unwrap();
    assert_eq!(c.admin_allowed_hosts, ["lb.node-1.example", "lb"]);
    assert!(check_str("").unwrap().admin_allowed_hosts.is_empty());
    let lines =
        errors("[admin]\nallowed_hosts = [\"ok.example\", \"lb.example:10249\", \"Lb.Example\"]\n");
    let dns1123 = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    assert_eq!(
        lines,
        vec![
            format!("admin.allowed_hosts[1]: Invalid value: \"lb.example:10249\": {dns1123}"),
            format!("admin.allowed_hosts[2]: Invalid value: \"Lb.Example\": {dns1123}"),
        ]
    );
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let lines = errors("[proxy]\nmax_conections = 5\n");
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("proxy.max_conections: unknown field `max_conections`"),
        "{lines:?}"
    );
    let lines = errors("nodes = 1\n");
    assert!(
        lines[0].starts_with("nodes: unknown field `nodes`"),
        "{lines:?}"
    );
}

#[test]
fn wrong_types_are_refused_with_their_path() {
    let lines = errors("[[services]]\nname = \"web\"\nports = [{ port = \"eighty\" }]\n");
    assert_eq!(
        lines,
        vec!["services[web].ports[0].port: expected an integer, found a string \"eighty\""]
    );
}

#[test]
fn toml_syntax_errors_are_one_line() {
    let lines = errors("[node\n");
    assert_eq!(lines.len(), 1);
    assert!(lines[0].starts_with("line 1, column"), "{lines:?}");
    assert!(!lines[0].contains('\n'));
}

#[test]
fn node_port_outside_the_range_uses_the_allocator_message() {
    assert_error(
        &with_cidr("[[services]]\nname = \"nginx-service\"\ntype = \"NodePort\"\nports = [{ port = 80, node_port = 80 }]\n"),
        "services[nginx-service].ports[0].node_port: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
    );
}

#[test]
fn objects_outside_the_default_namespace_are_named_with_it() {
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\nnamespace = \"shop\"\ntype = \"NodePort\"\nports = [{ port = 80, node_port = 80 }]\n"),
        "services[shop/web].ports[0].node_port: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
    );
}

#[test]
fn service_names_are_dns_1035_labels() {
    assert_error(
        &with_cidr("[[services]]\nname = \"Foo_bar\"\nports = [{ port = 80 }]\n"),
        "services[Foo_bar].name: Invalid value: \"Foo_bar\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
    );
    assert_error(
        &with_cidr("[[services]]\nports = [{ port = 80 }]\n"),
        "services[0].name: Required value: name is required",
    );
}

#[test]
fn namespaces_are_dns_1123_labels() {
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\nnamespace = \"Shop\"\nports = [{ port = 80 }]\n"),
        "services[Shop/web].namespace: Invalid value: \"Shop\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    );
}

#[test]
fn a_name_used_twice_in_one_namespace_is_an_error() {
    let svc = "[[services]]\nname = \"web\"\nports = [{ port = 80 }]\n";
    assert_error(
        &with_cidr(&format!("{svc}{svc}")),
        "services[web].name: Duplicate value: \"web\"",
    );
    // The same name in another namespace is fine.
    check_str(&with_cidr(&format!("{svc}{svc}namespace = \"other\"\n"))).unwrap();
    let pod = "[[pods]]\nname = \"p\"\nip = \"127.0.244.1\"\n";
    assert_error(
        &format!("{pod}{pod}"),
        "pods[p].name: Duplicate value: \"p\"",
    );
}

#[test]
fn several_ports_need_names_and_names_are_unique() {
    let text = with_cidr(
        "[[services]]\nname = \"web\"\nports = [{ name = \"http\", port = 80 }, { port = 443 }, { name = \"http\", port = 8080 }]\n",
    );
    assert_error(&text, "services[web].ports[1].name: Required value");
    assert_error(
        &text,
        "services[web].ports[2].name: Duplicate value: \"http\"",
    );
}

#[test]
fn a_protocol_and_port_used_twice_is_an_error() {
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\nports = [{ name = \"a\", port = 80 }, { name = \"b\", port = 80 }]\n"),
        "services[web].ports[1]: Duplicate value: \"80/TCP\"",
    );
}

#[test]
fn a_node_port_used_twice_in_one_service_is_an_error() {
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\ntype = \"NodePort\"\nports = [{ name = \"a\", port = 80, node_port = 30001 }, { name = \"b\", port = 81, node_port = 30001 }]\n"),
        "services[web].ports[1].node_port: Duplicate value: 30001",
    );
}

#[test]
fn port_numbers_must_be_in_range() {
    let text =
        with_cidr("[[services]]\nname = \"web\"\nports = [{ port = 0, target_port = 70000 }]\n");
    assert_error(
        &text,
        "services[web].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
    );
    assert_error(&text, "services[web].ports[0].target_port: Invalid value: 70000: must be between 1 and 65535, inclusive");
}

#[test]
fn target_port_names_are_iana_service_names() {
    let port = |tp: &str| {
        with_cidr(&format!(
            "[[services]]\nname = \"web\"\nselector = {{ app = \"a\" }}\nports = [{{ port = 80, target_port = \"{tp}\" }}]\n"
        ))
    };
    assert_error(&port("HTTP"), "services[web].ports[0].target_port: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    assert_error(&port("8080"), "services[web].ports[0].target_port: Invalid value: \"8080\": must contain at least one letter (a-z)");
    assert_error(&port("a-very-long-port-name"), "services[web].ports[0].target_port: Invalid value: \"a-very-long-port-name\": must be no more than 15 characters");
    check_str(&port("http-alt")).unwrap();
}

#[test]
fn node_ports_are_forbidden_on_cluster_ip_services() {
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\nports = [{ port = 80, node_port = 30001 }]\n"),
        "services[web].ports[0].node_port: Forbidden: may not be used when `type` is 'ClusterIP'",
    );
}

#[test]
fn session_affinity_timeout_must_be_in_range() {
    let t = |secs: i64| {
        with_cidr(&format!(
            "[[services]]\nname = \"web\"\nsession_affinity = \"ClientIP\"\nsession_affinity_config = {{ client_ip = {{ timeout_seconds = {secs} }} }}\nports = [{{ port = 80 }}]\n"
        ))
    };
    let msg = |secs: i64| {
        format!("services[web].session_affinity_config.client_ip.timeout_seconds: Invalid value: {secs}: must be greater than 0 and less than 86400")
    };
    assert_error(&t(0), &msg(0));
    assert_error(&t(86401), &msg(86401));
    let c = check_str(&t(60)).unwrap();
    assert_eq!(
        c.services[0].session_affinity,
        lb_core::SessionAffinity::ClientIp {
            timeout: std::time::Duration::from_secs(60)
        }
    );
    // ClientIP without a config gets Kubernetes' default of three hours.
    let c = check_str(&with_cidr(
        "[[services]]\nname = \"web\"\nsession_affinity = \"ClientIP\"\nports = [{ port = 80 }]\n",
    ))
    .unwrap();
    assert_eq!(
        c.services[0].session_affinity,
        lb_core::SessionAffinity::ClientIp {
            timeout: lb_core::SessionAffinity::DEFAULT_TIMEOUT
        }
    );
}

#[test]
fn enum_values_list_what_is_supported() {
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\ntype = \"Nodeport\"\nports = [{ port = 80 }]\n"),
        "services[web].type: Unsupported value: \"Nodeport\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
    );
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\nsession_affinity = \"Sticky\"\nports = [{ port = 80 }]\n"),
        "services[web].session_affinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
    );
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\nports = [{ port = 80, protocol = \"SCTP\" }]\n"),
        "services[web].ports[0].protocol: Unsupported value: \"SCTP\": supported values: \"TCP\", \"UDP\"",
    );
}

#[test]
fn cluster_ips_outside_the_cidr_or_taken_are_refused() {
    assert_error(
        "[[services]]\nname = \"web\"\ncluster_ip = \"127.0.0.1\"\nports = [{ port = 80 }]\n",
        "services[web].cluster_ip: Invalid value: []string{\"127.0.0.1\"}: failed to allocate IP 127.0.0.1: the provided IP (127.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
    );
    assert_error(
        &with_cidr("[[services]]\nname = \"a\"\ncluster_ip = \"127.96.0.10\"\nports = [{ port = 80 }]\n[[services]]\nname = \"b\"\ncluster_ip = \"127.96.0.10\"\nports = [{ port = 80 }]\n"),
        "services[b].cluster_ip: Invalid value: []string{\"127.96.0.10\"}: failed to allocate IP 127.96.0.10: provided IP is already allocated",
    );
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\ncluster_ip = \"127.96.0.300\"\nports = [{ port = 80 }]\n"),
        "services[web].cluster_ip: Invalid value: \"127.96.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    );
}

#[test]
fn node_ports_taken_by_another_service_are_refused() {
    let svc = |name: &str| {
        format!("[[services]]\nname = \"{name}\"\ntype = \"NodePort\"\nports = [{{ port = 80, node_port = 30080 }}]\n")
    };
    assert_error(
        &with_cidr(&format!("{}{}", svc("a"), svc("b"))),
        "services[b].ports[0].node_port: Invalid value: 30080: provided port is already allocated",
    );
}

#[test]
fn headless_and_external_name_services_get_no_cluster_ip() {
    let c = check_str(&with_cidr(
        "[[services]]\nname = \"db\"\ncluster_ip = \"None\"\nselector = { app = \"db\" }\nports = [{ port = 5432 }]\n\
         [[services]]\nname = \"ext\"\ntype = \"ExternalName\"\nexternal_name = \"db.example.com.\"\n",
    ))
    .unwrap();
    assert_eq!(c.services[0].cluster_ip, lb_core::ClusterIp::None);
    assert_eq!(c.services[1].cluster_ip, lb_core::ClusterIp::None);
    assert_eq!(c.services[1].external_name, "db.example.com.");
    assert_error(
        &with_cidr("[[services]]\nname = \"ext\"\ntype = \"ExternalName\"\nexternal_name = \"Bad_Name\"\n"),
        "services[ext].external_name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    );
    assert_error(
        &with_cidr("[[services]]\nname = \"ext\"\ntype = \"ExternalName\"\n"),
        "services[ext].external_name: Required value",
    );
    assert_error(
        &with_cidr("[[services]]\nname = \"np\"\ntype = \"NodePort\"\ncluster_ip = \"None\"\nports = [{ port = 80 }]\n"),
        "services[np].cluster_ip: Invalid value: \"None\": may not be set to 'None' for NodePort services",
    );
}

#[test]
fn a_service_needs_ports_unless_headless() {
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\n"),
        "services[web].ports: Required value",
    );
    check_str(&with_cidr(
        "[[services]]\nname = \"web\"\ncluster_ip = \"None\"\n",
    ))
    .unwrap();
}

#[test]
fn malformed_durations_and_addresses_are_errors() {
    assert_error(
        "[proxy]\ndrain_timeout = \"30 parsecs\"\n",
        "proxy.drain_timeout: Invalid value: \"30 parsecs\": must be a duration such as \"250ms\", \"30s\" or \"1h\" (unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations))",
    );
    assert_error(
        "[admin]\nlisten = \"localhost\"\n",
        "admin.listen: Invalid value: \"localhost\": must be IP:PORT (e.g. 127.0.0.1:10249), or \"\" to disable",
    );
    assert_error(
        "[cluster]\nservice_cidr = \"10.96.0.0/33\"\n",
        "cluster.service_cidr: Invalid value: \"10.96.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
    );
    assert_error(
        "[node]\naddresses = [\"127.0.0.300\"]\n",
        "node.addresses[0]: Invalid value: \"127.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    );
}

#[test]
fn proxy_settings_are_typed() {
    let c = check_str(
        "[proxy]\nconnect_timeouts_ms = [100, 200]\ntcp_idle_timeout = \"0\"\nhalf_close_timeout = \"5s\"\nmax_connections = 7\n",
    )
    .unwrap();
    assert_eq!(
        c.proxy.connect_timeouts,
        vec![
            std::time::Duration::from_millis(100),
            std::time::Duration::from_millis(200)
        ]
    );
    assert_eq!(c.proxy.tcp_idle_timeout, None);
    assert_eq!(
        c.proxy.half_close_timeout,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(c.proxy.max_connections, 7);
    assert_error(
        "[proxy]\nmax_connections = -1\n",
        "proxy.max_connections: Invalid value: -1: must be between 0 and 4294967295, inclusive",
    );
}

#[test]
fn the_access_log_is_off_unless_the_log_table_turns_it_on() {
    assert!(!check_str("").unwrap().proxy.access_log);
    assert!(
        !check_str("[log]\naccess = false\n")
            .unwrap()
            .proxy
            .access_log
    );
    assert!(
        check_str("[log]\naccess = true\n")
            .unwrap()
            .proxy
            .access_log
    );
}

#[test]
fn forwarding_engine_accept_mode_and_workers_are_proxy_settings() {
    let c =
        check_str("[proxy]\nforward_engine = \"copy\"\naccept_mode = \"percore\"\nworkers = 2\n")
            .unwrap();
    assert_eq!(c.proxy.forward_engine, lb_core::ForwardEngine::Copy);
    assert_eq!(c.proxy.accept_mode, lb_core::AcceptMode::PerCore);
    assert_eq!(c.proxy.workers, 2);
    let defaults = check_str("").unwrap();
    assert_eq!(defaults.proxy.forward_engine, lb_core::ForwardEngine::Auto);
    assert_eq!(defaults.proxy.accept_mode, lb_core::AcceptMode::Single);
    assert_eq!(defaults.proxy.workers, 0);
    let text = "[proxy]\nforward_engine = \"sendfile\"\naccept_mode = \"threads\"\nworkers = -1\n";
    assert_error(
        text,
        "proxy.forward_engine: Unsupported value: \"sendfile\": supported values: \"auto\", \"splice\", \"copy\"",
    );
    assert_error(
        text,
        "proxy.accept_mode: Unsupported value: \"threads\": supported values: \"single\", \"reuseport\", \"percore\"",
    );
    assert_error(
        text,
        "proxy.workers: Invalid value: -1: must be between 0 and 1024, inclusive",
    );
}

#[test]
fn pods_are_validated() {
    let text = "[[pods]]\nname = \"Pod_1\"\nnamespace = \"shop\"\nip = \"0.0.0.0\"\nweight = -1\nports = [{ name = \"http\", container_port = 70000 }, { name = \"http\", container_port = 81 }]\n";
    assert_error(
        text,
        "pods[shop/Pod_1].ip: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
    );
    assert_error(
        text,
        "pods[shop/Pod_1].weight: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_error(text, "pods[shop/Pod_1].ports[0].container_port: Invalid value: 70000: must be between 1 and 65535, inclusive");
    assert_error(
        text,
        "pods[shop/Pod_1].ports[1].name: Duplicate value: \"http\"",
    );
    assert!(errors(text).iter().any(|l| l.starts_with(
        "pods[shop/Pod_1].name: Invalid value: \"Pod_1\": a lowercase RFC 1123 subdomain"
    )));
    assert_error("[[pods]]\nname = \"p\"\n", "pods[p].ip: Required value");
}

#[test]
fn loopback_is_allowed_for_pods_and_endpoints_but_link_local_is_not() {
    check_str("[[pods]]\nname = \"p\"\nip = \"127.0.244.1\"\n").unwrap();
    check_str("[[pods]]\nname = \"p\"\nip = \"::1\"\n").unwrap();
    assert_error(
        "[[endpoints]]\nname = \"e\"\n[[endpoints.subsets]]\naddresses = [{ ip = \"169.254.1.1\" }]\n",
        "endpoints[e].subsets[0].addresses[0].ip: Invalid value: \"169.254.1.1\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
    );
}

#[test]
fn endpoints_ports_need_names_when_several() {
    assert_error(
        "[[endpoints]]\nname = \"e\"\nnamespace = \"x\"\n[[endpoints.subsets]]\naddresses = [{ ip = \"127.0.0.2\" }]\nports = [{ port = 80 }, { name = \"b\", port = 81 }]\n",
        "endpoints[x/e].subsets[0].ports[0].name: Required value",
    );
}

#[test]
fn selector_labels_are_validated() {
    assert_error(
        &with_cidr("[[services]]\nname = \"web\"\nselector = { app = \"bad value\" }\nports = [{ port = 80 }]\n"),
        "services[web].selector: Invalid value: \"bad value\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let lines = errors(
        "[proxy]\ndrain_timeout = \"x\"\n\
         [[services]]\nname = \"Bad\"\nports = [{ port = 80 }]\n\
         [[services]]\nname = \"web\"\nnamespace = \"shop\"\ntype = \"NodePort\"\nports = [{ port = 80, node_port = 80 }]\n\
         [[pods]]\nname = \"p\"\nip = \"nope\"\n",
    );
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines[0].starts_with("proxy.drain_timeout: Invalid value: \"x\""));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("services[Bad].name: Invalid value")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("pods[p].ip: Invalid value: \"nope\"")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("services[shop/web].ports[0].node_port: Invalid value: 80")));
}

#[test]
fn display_prints_one_error_per_line() {
    let err = check_str("[[pods]]\nname = \"a\"\n[[pods]]\nname = \"b\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "pods[a].ip: Required value\npods[b].ip: Required value"
    );
}

#[test]
fn bind_mode_warns_when_the_service_cidr_is_not_loopback() {
    let c = check_str("").unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("cluster.service_cidr: 10.96.0.0/12 is not a loopback range"));
    assert!(check_str(CIDR).unwrap().warnings.is_empty());
    let c = check_str("[node]\nvip_mode = \"freebind\"\n").unwrap();
    assert!(c.warnings.is_empty());
    assert_eq!(c.vip_mode, lb_config::VipMode::Freebind);
}

#[test]
fn a_bad_service_cidr_does_not_also_report_allocation_errors() {
    let lines = errors(
        "[cluster]\nservice_cidr = \"127.96.0.0/33\"\n[[services]]\nname = \"web\"\ncluster_ip = \"127.96.0.5\"\nports = [{ port = 80 }]\n",
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
}
