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

#[cfg(feature = "etcd")]
#[test]
fn etcd_tls_files_that_cannot_be_read_are_refused() {
    // TLS to etcd is served (lb-proxy/tests/it/source_etcd_security.rs); a file it
    // names must be there at validation, not at the first connection.
    assert_refused(
        "[source.etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\nca_file = \"/nonexistent/ca.pem\"\n",
        "source.etcd.ca_file: Invalid value: \"/nonexistent/ca.pem\": cannot read: No such file or directory (os error 2)",
    );
    assert_refused(
        "[source.etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\ncert_file = \"/nonexistent/c.pem\"\n",
        "source.etcd.key_file: Required value: cert_file and key_file go together",
    );
}

#[cfg(feature = "etcd")]
#[test]
fn etcd_sources_are_accepted() {
    check_str("[source.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n").unwrap();
    check_str("[source.etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\n").unwrap();
}

#[cfg(not(feature = "etcd"))]
#[test]
fn a_build_without_the_etcd_source_refuses_source_etcd() {
    assert_refused(
        "[source.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        "source.etcd: Forbidden: this build of lb has no etcd source (lb-config built without its `etcd` feature)",
    );
}

#[test]
fn empty_or_default_values_of_unsupported_fields_are_accepted() {
    let text = "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n[[services]]\nname = \"web\"\n\
        external_traffic_policy = \"Cluster\"\ninternal_traffic_policy = \"Cluster\"\nexternal_ips = []\n\
        load_balancer_source_ranges = []\nallow_shared_ip = \"\"\nhealth_check_node_port = 0\n\
        ports = [{ port = 80, protocol = \"TCP\" }]\n";
    check_str(text).unwrap();
}
