//! Features a later release brings are refused with a clear error, never
//! silently ignored.

use lb_config::check_str;

fn assert_refused(text: &str, expected: &str) {
    let text = format!("[cluster]\nservice_cidr = \"127.96.0.0/16\"\n{text}");
    let lines = check_str(&text).expect_err("must be refused").lines();
    assert!(
        lines.iter().any(|l| l == expected),
        "expected\n  {expected}\namong\n  {}",
        lines.join("\n  ")
    );
}

fn service(extra: &str) -> String {
    format!("[[services]]\nname = \"web\"\n{extra}\nports = [{{ port = 80 }}]\n")
}

#[test]
fn load_balancer_services_are_refused() {
    assert_refused(
        &service("type = \"LoadBalancer\""),
        "services[web].type: Unsupported value: \"LoadBalancer\": not supported yet (LoadBalancer services come with a later release)",
    );
    assert_refused(
        &service("load_balancer_ip = \"127.0.122.1\""),
        "services[web].load_balancer_ip: Forbidden: not supported yet (LoadBalancer services come with a later release)",
    );
    assert_refused(
        &service("load_balancer_source_ranges = [\"127.0.0.0/8\"]"),
        "services[web].load_balancer_source_ranges: Forbidden: not supported yet (LoadBalancer services come with a later release)",
    );
    assert_refused(
        &service("ip_pool = \"pool\""),
        "services[web].ip_pool: Forbidden: not supported yet (LoadBalancer services come with a later release)",
    );
    assert_refused(
        &service("allow_shared_ip = \"key\""),
        "services[web].allow_shared_ip: Forbidden: not supported yet (LoadBalancer services come with a later release)",
    );
}

#[test]
fn external_ips_are_refused() {
    assert_refused(
        &service("external_ips = [\"127.0.5.5\"]"),
        "services[web].external_ips: Forbidden: not supported yet (external IPs come with a later release)",
    );
}

#[test]
fn ip_pools_are_refused() {
    assert_refused(
        "[[ip_pools]]\nname = \"lb-ip-pool\"\naddresses = [\"127.0.122.0/28\"]\n",
        "ip_pools[lb-ip-pool]: Forbidden: not supported yet (LoadBalancer address pools come with a later release)",
    );
}

#[test]
fn etcd_over_tls_is_refused() {
    assert_refused(
        "[source.etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\n",
        "source.etcd.endpoints[0]: Unsupported value: \"https://127.0.0.1:2379\": not supported yet (TLS to etcd comes with a later release; use http:// on a trusted network)",
    );
}

#[test]
fn etcd_sources_are_accepted() {
    check_str("[source.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n").unwrap();
}

#[test]
fn interface_vip_mode_is_refused() {
    assert_refused(
        "[node]\nvip_mode = \"interface\"\n",
        "node.vip_mode: Unsupported value: \"interface\": not supported yet (interface VIPs come with a later release)",
    );
}

#[test]
fn empty_or_default_values_of_unsupported_fields_are_accepted() {
    let text = "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n[[services]]\nname = \"web\"\n\
        external_traffic_policy = \"Cluster\"\ninternal_traffic_policy = \"Cluster\"\nexternal_ips = []\n\
        load_balancer_source_ranges = []\nallow_shared_ip = \"\"\nhealth_check_node_port = 0\n\
        allocate_load_balancer_node_ports = true\nports = [{ port = 80, protocol = \"TCP\" }]\n";
    check_str(text).unwrap();
}
