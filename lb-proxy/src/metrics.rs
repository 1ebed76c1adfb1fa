//! `/metrics` in the Prometheus text format, rendered from the counters the
//! data path keeps in the snapshot (no label formatting per connection: labels
//! are formatted only when someone scrapes).
//!
//! This covers the contract's counters and gauges; the connect-duration
//! histogram and process metrics come with the observability work.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use lb_core::stats::read;
use lb_core::{ServicePort, Snapshot};

use crate::app::ReloadCounters;

fn port_labels(port: &ServicePort) -> String {
    let key = port.key();
    let name = if key.port_name.is_empty() {
        key.port.to_string()
    } else {
        key.port_name.clone()
    };
    format!(
        "namespace=\"{}\",service=\"{}\",port=\"{}\",protocol=\"{}\"",
        key.service.namespace, key.service.name, name, key.protocol
    )
}

/// Renders every metric for `snapshot` and the reload counters.
pub fn render(snapshot: &Snapshot, reloads: &ReloadCounters) -> String {
    let mut out = String::new();
    let ports: Vec<_> = snapshot.services().flat_map(|s| s.ports.iter()).collect();
    let mut family = |name: &str, kind: &str, help: &str, body: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        body(&mut out);
    };
    family(
        "lb_connections_total",
        "counter",
        "Connections accepted from clients.",
        &mut |o| {
            for p in &ports {
                let _ = writeln!(
                    o,
                    "lb_connections_total{{{}}} {}",
                    port_labels(p),
                    read(&p.stats().accepted)
                );
            }
        },
    );
    family(
        "lb_active_connections",
        "gauge",
        "Client connections open now.",
        &mut |o| {
            for p in &ports {
                let _ = writeln!(
                    o,
                    "lb_active_connections{{{}}} {}",
                    port_labels(p),
                    read(&p.stats().active)
                );
            }
        },
    );
    family(
        "lb_rejected_connections_total",
        "counter",
        "Client connections refused before reaching an endpoint.",
        &mut |o| {
            for p in &ports {
                let s = p.stats();
                for (reason, v) in [
                    ("no_endpoints", &s.rejected_no_endpoints),
                    ("source_range", &s.rejected_source_range),
                    ("limit", &s.rejected_limit),
                ] {
                    let _ = writeln!(
                        o,
                        "lb_rejected_connections_total{{{},reason=\"{reason}\"}} {}",
                        port_labels(p),
                        read(v)
                    );
                }
            }
        },
    );
    family(
        "lb_bytes_total",
        "counter",
        "Bytes proxied (rx: from clients, tx: to clients).",
        &mut |o| {
            for p in &ports {
                for e in p.endpoints() {
                    for (dir, v) in [("rx", &e.stats.bytes_rx), ("tx", &e.stats.bytes_tx)] {
                        let _ = writeln!(
                            o,
                            "lb_bytes_total{{{},endpoint=\"{}\",direction=\"{dir}\"}} {}",
                            port_labels(p),
                            e.addr,
                            read(v)
                        );
                    }
                }
            }
        },
    );
    family(
        "lb_connect_errors_total",
        "counter",
        "Dials to endpoints that failed or timed out.",
        &mut |o| {
            for p in &ports {
                for e in p.endpoints() {
                    let _ = writeln!(
                        o,
                        "lb_connect_errors_total{{{},endpoint=\"{}\"}} {}",
                        port_labels(p),
                        e.addr,
                        read(&e.stats.connect_errors)
                    );
                }
            }
        },
    );
    let udp_ports: Vec<_> = ports
        .iter()
        .filter(|p| p.key().protocol == lb_core::Protocol::Udp)
        .collect();
    family(
        "lb_udp_sessions",
        "gauge",
        "UDP flows open now.",
        &mut |o| {
            for p in &udp_ports {
                let _ = writeln!(
                    o,
                    "lb_udp_sessions{{{}}} {}",
                    port_labels(p),
                    read(&p.stats().udp_sessions)
                );
            }
        },
    );
    family(
        "lb_udp_datagrams_total",
        "counter",
        "UDP datagrams: forwarded to endpoints, replied to clients, or dropped (by reason).",
        &mut |o| {
            for p in &udp_ports {
                let s = p.stats();
                let labels = port_labels(p);
                for (result, v) in [("forwarded", &s.udp_forwarded), ("replied", &s.udp_replied)] {
                    let _ = writeln!(
                        o,
                        "lb_udp_datagrams_total{{{labels},result=\"{result}\"}} {}",
                        read(v)
                    );
                }
                for (reason, v) in [
                    ("no_endpoints", &s.udp_dropped_no_endpoints),
                    ("source_range", &s.rejected_source_range),
                    ("flow_limit", &s.udp_dropped_flow_limit),
                    ("send_error", &s.udp_dropped_send_error),
                ] {
                    let _ = writeln!(
                        o,
                        "lb_udp_datagrams_total{{{labels},result=\"dropped\",reason=\"{reason}\"}} {}",
                        read(v)
                    );
                }
            }
        },
    );
    family(
        "lb_udp_flows_evicted_total",
        "counter",
        "UDP flows evicted (idle longest first) to stay within udp_max_flows.",
        &mut |o| {
            for p in &udp_ports {
                let _ = writeln!(
                    o,
                    "lb_udp_flows_evicted_total{{{}}} {}",
                    port_labels(p),
                    read(&p.stats().udp_evicted)
                );
            }
        },
    );
    family(
        "lb_endpoint_ready",
        "gauge",
        "1 when the endpoint is ready.",
        &mut |o| {
            for p in &ports {
                for e in p.endpoints() {
                    let _ = writeln!(
                        o,
                        "lb_endpoint_ready{{{},endpoint=\"{}\"}} {}",
                        port_labels(p),
                        e.addr,
                        u8::from(e.ready)
                    );
                }
            }
        },
    );
    family(
        "lb_config_reloads_total",
        "counter",
        "Config reloads by result.",
        &mut |o| {
            let _ = writeln!(
            o,
            "lb_config_reloads_total{{result=\"success\"}} {}\nlb_config_reloads_total{{result=\"failure\"}} {}",
            reloads.success.load(Ordering::Relaxed),
            reloads.failure.load(Ordering::Relaxed)
        );
        },
    );
    out
}
