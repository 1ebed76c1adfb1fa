//! What ships beside the binary (`deploy/`, completions, the man page) is
//! checked against the binary: the completion scripts and the man page it
//! prints, the alerting rules under promtool, and every metric the Grafana
//! dashboard and the alerts query against a live `/metrics`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::bin::{combined, lb, Run};
use crate::support::config::{base_toml, service_toml};
use crate::support::etcd::Etcd;
use crate::support::tools::required;
use crate::support::*;

#[test]
fn completions_for_bash_zsh_and_fish_offer_the_get_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = lb(["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["lb-proxy", "get", "describe", "config"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}

#[test]
fn the_man_page_renders_with_every_subcommand() {
    let out = lb(["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH lb-proxy 1"),
        "not a section 1 page:\n{page}"
    );
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for sub in ["run", "check", "get", "describe", "completions", "man"] {
        assert!(
            page.contains(&format!("lb\\-proxy\\-{sub}(1)")),
            "the man page lacks {sub}:\n{page}"
        );
    }
}

// === alerts and dashboard ===

/// `deploy/` of the repository.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Metric names the dashboard or the alerts query that this test's proxy
/// cannot export yet, each with why: none, every name is required.
const NOT_YET_EXPORTED: &[(&str, &str)] = &[];

#[test]
fn promtool_accepts_the_alerting_rules_and_their_unit_tests_pass() {
    if !required("promtool", "apt-get install prometheus") {
        return;
    }
    let dir = deploy_dir().join("prometheus");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts_test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}:\n{}",
            args.join(" "),
            combined(&out)
        );
    }
}

/// Every `expr` of deploy/prometheus/alerts.yaml.
fn alert_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yaml"))
        .expect("read alerts.yaml");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts.yaml is YAML");
    let mut exprs = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            exprs.push(
                rule["expr"]
                    .as_str()
                    .expect("every rule has an expr")
                    .to_string(),
            );
        }
    }
    exprs
}

/// Every query of deploy/grafana/lb-dashboard.json: the panels' `expr`s and
/// the template variables' queries.
fn dashboard_expressions() -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(deploy_dir().join("grafana/lb-dashboard.json"))
        .expect("read lb-dashboard.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    walk(&doc, &mut exprs);
    exprs
}

/// The metric names in a PromQL expression: identifiers that start with
/// `lb_` or `process_`, outside quoted label values (histogram series keep
/// their `_bucket`, `_sum`, `_count`: they are checked as the series
/// /metrics has).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for q in chars.by_ref() {
                if !escaped && q == c {
                    break;
                }
                escaped = !escaped && q == '\\';
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut ident = c.to_string();
            while let Some(&n) = chars.peek() {
                if !(n.is_ascii_alphanumeric() || n == '_' || n == ':') {
                    break;
                }
                ident.push(n);
                chars.next();
            }
            if ident.starts_with("lb_") || ident.starts_with("process_") {
                names.insert(ident);
            }
        }
    }
    names
}

/// The series names in a Prometheus text exposition (`lb_x_bucket`,
/// `lb_x_sum`, `lb_x_count` for a histogram), and the families it declares.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn metric_names_are_read_outside_quotes_with_histogram_suffixes() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(lb_connect_duration_seconds_bucket{job=~"lb_x"}[5m])))
           / process_max_fds or lb_a{reason!="lb_not_a_name"}"#,
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "lb_a",
            "lb_connect_duration_seconds_bucket",
            "process_max_fds"
        ]
    );
    let exported = exported_names(
        "# HELP lb_d Dials.\n# TYPE lb_d histogram\nlb_d_bucket{le=\"0.1\"} 1\nlb_d_sum 0.1\nlb_d_count 1\nprocess_open_fds 7\n",
    );
    let exported: Vec<&str> = exported.iter().map(String::as_str).collect();
    assert_eq!(
        exported,
        [
            "lb_d",
            "lb_d_bucket",
            "lb_d_count",
            "lb_d_sum",
            "process_open_fds"
        ]
    );
}

/// A TCP service over a live and a refusing endpoint (so dials fail and
/// fail over) and a UDP service, at fresh addresses, in [`base_toml`].
fn services(
    tcp_vip: IpAddr,
    live: SocketAddr,
    dead: SocketAddr,
    udp_vip: IpAddr,
    udp: SocketAddr,
) -> String {
    service_toml("web", tcp_vip, 8080, &[live, dead], "")
        + &format!(
            r#"
[[services]]
name = "dns"
cluster_ip = "{udp_vip}"
[[services.ports]]
name = "dns"
port = 5353
protocol = "UDP"
target_port = {udp_port}

[[endpoints]]
name = "dns"
[[endpoints.subsets]]
addresses = [{{ ip = "{udp_ip}" }}]
ports = [{{ name = "dns", port = {udp_port}, protocol = "UDP" }}]
"#,
            udp_ip = udp.ip(),
            udp_port = udp.port(),
        )
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_query_is_exported() -> anyhow::Result<()> {
    // lb_source_stale is exported only with a source: an etcd on loopback
    // feeds this proxy as well as its file.
    let etcd = if required("etcd", "apt-get install etcd-server") {
        Some(Etcd::start("127.0.181.1")?)
    } else {
        None
    };
    let live = echo_backend(fresh_ip());
    // Nothing listens there (service_toml gives every address the first one's port).
    let dead = SocketAddr::new(fresh_ip(), live.addr.port());
    let udp = udp_echo_backend(fresh_ip());
    let (tcp_vip, udp_vip) = (fresh_ip(), fresh_ip());
    let admin = SocketAddr::new(fresh_ip(), 10249);
    let etcd_table = etcd.as_ref().map_or(String::new(), |e| {
        format!(
            "\n[source.etcd]\nendpoints = [\"{}\"]\nprefix = \"/lbdeploy\"\n",
            e.url()
        )
    });
    let text =
        base_toml(admin) + &etcd_table + &services(tcp_vip, live.addr, dead, udp_vip, udp.addr);
    let proxy = Run::text(&text).admin(admin).start()?;

    // Connections, some dialing the refusing endpoint first and failing over.
    let front = SocketAddr::new(tcp_vip, 8080);
    assert!(
        eventually_blocking(WAIT, || {
            let mut s = std::net::TcpStream::connect_timeout(&front, WAIT).expect("connect");
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            s.write_all(b"ping").expect("write");
            let mut back = [0u8; 4];
            s.read_exact(&mut back).expect("echoed");
            proxy.metric(&format!(
                "lb_connect_errors_total{{namespace=\"default\",service=\"web\",port=\"tcp\",protocol=\"TCP\",endpoint=\"{dead}\"}}"
            )).unwrap_or(0.0) >= 1.0
        }),
        "no dial to the refusing endpoint failed"
    );
    // A UDP flow.
    let client = std::net::UdpSocket::bind((udp_vip, 0))?;
    client.set_read_timeout(Some(WAIT))?;
    client.send_to(b"ask", SocketAddr::new(udp_vip, 5353))?;
    let mut buf = [0u8; 16];
    let (n, _) = client.recv_from(&mut buf)?;
    assert_eq!(&buf[..n], b"ask");
    // A reload that fails.
    std::fs::write(proxy.config(), "[[services]]\nname = 1\n")?;
    assert!(
        eventually_blocking(WAIT, || proxy
            .metric("lb_config_reloads_total{result=\"failure\"}")
            .unwrap_or(0.0)
            >= 1.0),
        "the invalid file was not counted as a failed reload"
    );

    let (status, metrics) = http_get(admin, "/metrics")?;
    assert_eq!(status, 200);
    let exported = exported_names(&metrics);
    let mut missing = Vec::new();
    for (file, exprs) in [
        ("deploy/prometheus/alerts.yaml", alert_expressions()),
        ("deploy/grafana/lb-dashboard.json", dashboard_expressions()),
    ] {
        assert!(!exprs.is_empty(), "{file} has no expressions");
        for expr in exprs {
            for name in metric_names(&expr) {
                let excused = NOT_YET_EXPORTED.iter().any(|(n, _)| *n == name)
                    || (etcd.is_none() && name == "lb_source_stale");
                if !exported.contains(&name) && !excused {
                    missing.push(format!("{file}: {name} in {expr}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in /metrics:\n{}\n\n/metrics:\n{metrics}",
        missing.join("\n")
    );
    Ok(())
}
