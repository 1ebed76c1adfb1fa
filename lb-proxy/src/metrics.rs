//! `/metrics` in the Prometheus text format (0.0.4), rendered at scrape time
//! from the counters the data path keeps in the snapshot.
//!
//! Why not the `metrics` crate with `metrics-exporter-prometheus`: the
//! exporter cannot delete a series. Its only removal is an idle timeout driven
//! by update generations, and a histogram's generation moves only when a
//! sample is recorded, so it would either keep the series of a deleted
//! endpoint forever or drop the series of a live endpoint that had no dial for
//! a while (and reset its counts). The contract wants series of deleted
//! services and endpoints gone and live ones stable. Rendering from the
//! snapshot gives exactly that: a series exists while its service port or
//! endpoint is in the published snapshot, and its counters live in `Arc`s the
//! snapshot carries across reloads by identity. Handles are "resolved when a
//! snapshot is built" in the strongest sense: the data path bumps the atomics
//! the snapshot already holds (`PortStats`, `EndpointStats`, including the
//! connect-duration histogram), never formats a label and never takes a lock;
//! labels are formatted once per service port per scrape. The
//! `metrics_overhead` bench measures what the histogram and scraping cost.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use lb_core::stats::{read, HistogramReading};
use lb_core::{Protocol, ServicePort, Snapshot};

use crate::app::ReloadCounters;
use crate::dns::DnsCounters;

/// Everything `/metrics` shows beyond the snapshot's counters. All optional
/// parts are `None` where the component does not run.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// Config reload counts.
    pub reloads: &'a ReloadCounters,
    /// The DNS responder's answer counts, when `[dns]` is configured.
    pub dns: Option<&'a DnsCounters>,
    /// Endpoint host-name resolutions: (lookups, failures).
    pub host_lookups: Option<(u64, u64)>,
    /// Whether to add `process_*` metrics read from `/proc/self`.
    pub process: bool,
}

/// Renders the contract's metrics for `snapshot` and the reload counters
/// (no DNS or process metrics: see [`render_with`]).
pub fn render(snapshot: &Snapshot, reloads: &ReloadCounters) -> String {
    render_with(
        snapshot,
        &Sources {
            reloads,
            dns: None,
            host_lookups: None,
            process: false,
        },
    )
}

/// Escapes a label value (backslash, double quote, newline), as the text
/// format requires.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `namespace="..",service="..",port="..",protocol=".."` of a service port;
/// the port label is the port's name, or its number when unnamed.
fn port_labels(port: &ServicePort) -> String {
    let key = port.key();
    format!(
        "namespace=\"{}\",service=\"{}\",port=\"{}\",protocol=\"{}\"",
        escape(&key.service.namespace),
        escape(&key.service.name),
        escape(&crate::connections::port_label(key)),
        key.protocol
    )
}

/// One family: `# HELP`, `# TYPE`, then its samples.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramReading) {
    for (bound, n) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Renders every metric: the contract's families for `snapshot`, then DNS,
/// host resolution and process metrics as `sources` allows.
pub fn render_with(snapshot: &Snapshot, sources: &Sources<'_>) -> String {
    let mut out = String::new();
    // Labels are formatted once per service port and endpoint per scrape:
    // (port, its labels, each endpoint's labels).
    let ports: Vec<(&ServicePort, String, Vec<String>)> = snapshot
        .services()
        .flat_map(|s| s.ports.iter())
        .map(|p| {
            let l = port_labels(p);
            let eps = p
                .endpoints()
                .iter()
                .map(|e| format!("{l},endpoint=\"{}\"", e.addr))
                .collect();
            (p.as_ref(), l, eps)
        })
        .collect();
    type Row<'a> = (&'a ServicePort, String, Vec<String>);
    let tcp = |p: &&Row<'_>| p.0.key().protocol == Protocol::Tcp;
    let udp = |p: &&Row<'_>| p.0.key().protocol == Protocol::Udp;

    header(
        &mut out,
        "lb_connections_total",
        "counter",
        "Connections accepted from clients.",
    );
    for (p, l, _) in &ports {
        let _ = writeln!(
            out,
            "lb_connections_total{{{l}}} {}",
            read(&p.stats().accepted)
        );
    }
    header(
        &mut out,
        "lb_active_connections",
        "gauge",
        "Client connections open now.",
    );
    for (p, l, _) in &ports {
        let _ = writeln!(
            out,
            "lb_active_connections{{{l}}} {}",
            read(&p.stats().active)
        );
    }
    header(
        &mut out,
        "lb_rejected_connections_total",
        "counter",
        "Client connections refused before reaching an endpoint.",
    );
    for (p, l, _) in &ports {
        let s = p.stats();
        for (reason, v) in [
            ("no_endpoints", &s.rejected_no_endpoints),
            ("source_range", &s.rejected_source_range),
            ("limit", &s.rejected_limit),
        ] {
            let _ = writeln!(
                out,
                "lb_rejected_connections_total{{{l},reason=\"{reason}\"}} {}",
                read(v)
            );
        }
    }
    header(
        &mut out,
        "lb_bytes_total",
        "counter",
        "Bytes proxied (rx: from clients, tx: to clients).",
    );
    for (p, _, eps) in &ports {
        for (i, e) in p.endpoints().iter().enumerate() {
            let el = &eps[i];
            for (dir, v) in [("rx", &e.stats.bytes_rx), ("tx", &e.stats.bytes_tx)] {
                let _ = writeln!(
                    out,
                    "lb_bytes_total{{{el},direction=\"{dir}\"}} {}",
                    read(v)
                );
            }
        }
    }
    header(
        &mut out,
        "lb_connect_errors_total",
        "counter",
        "Dials to endpoints that failed or timed out.",
    );
    for (p, _, eps) in &ports {
        for (i, e) in p.endpoints().iter().enumerate() {
            let _ = writeln!(
                out,
                "lb_connect_errors_total{{{}}} {}",
                eps[i],
                read(&e.stats.connect_errors)
            );
        }
    }
    header(
        &mut out,
        "lb_connect_duration_seconds",
        "histogram",
        "How long successful dials to endpoints took.",
    );
    for (p, _, eps) in ports.iter().filter(tcp) {
        for (i, e) in p.endpoints().iter().enumerate() {
            histogram(
                &mut out,
                "lb_connect_duration_seconds",
                &eps[i],
                &e.stats.connect_duration.reading(),
            );
        }
    }
    header(&mut out, "lb_udp_sessions", "gauge", "UDP flows open now.");
    for (p, l, _) in ports.iter().filter(udp) {
        let _ = writeln!(
            out,
            "lb_udp_sessions{{{l}}} {}",
            read(&p.stats().udp_sessions)
        );
    }
    header(
        &mut out,
        "lb_udp_datagrams_total",
        "counter",
        "UDP datagrams: forwarded to endpoints, replied to clients, or dropped (by reason).",
    );
    for (p, l, _) in ports.iter().filter(udp) {
        let s = p.stats();
        for (result, v) in [("forwarded", &s.udp_forwarded), ("replied", &s.udp_replied)] {
            let _ = writeln!(
                out,
                "lb_udp_datagrams_total{{{l},result=\"{result}\"}} {}",
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
                out,
                "lb_udp_datagrams_total{{{l},result=\"dropped\",reason=\"{reason}\"}} {}",
                read(v)
            );
        }
    }
    header(
        &mut out,
        "lb_udp_flows_evicted_total",
        "counter",
        "UDP flows evicted (idle longest first) to stay within udp_max_flows.",
    );
    for (p, l, _) in ports.iter().filter(udp) {
        let _ = writeln!(
            out,
            "lb_udp_flows_evicted_total{{{l}}} {}",
            read(&p.stats().udp_evicted)
        );
    }
    header(
        &mut out,
        "lb_endpoint_ready",
        "gauge",
        "1 when the endpoint is ready (EndpointSlice conditions).",
    );
    for (p, _, eps) in &ports {
        for (i, e) in p.endpoints().iter().enumerate() {
            let _ = writeln!(out, "lb_endpoint_ready{{{}}} {}", eps[i], u8::from(e.ready));
        }
    }
    header(
        &mut out,
        "lb_endpoint_ejected",
        "gauge",
        "1 while outlier ejection keeps the endpoint out of new connections.",
    );
    let now = tokio::time::Instant::now().into_std();
    for (p, _, eps) in ports.iter().filter(tcp) {
        for (i, e) in p.endpoints().iter().enumerate() {
            let ejected = e.health.ejection(now).is_some() && p.is_ejected(false, i, now);
            let _ = writeln!(
                out,
                "lb_endpoint_ejected{{{}}} {}",
                eps[i],
                u8::from(ejected)
            );
        }
    }
    header(
        &mut out,
        "lb_config_reloads_total",
        "counter",
        "Config reloads by result.",
    );
    let _ = writeln!(
        out,
        "lb_config_reloads_total{{result=\"success\"}} {}\nlb_config_reloads_total{{result=\"failure\"}} {}",
        sources.reloads.success.load(Ordering::Relaxed),
        sources.reloads.failure.load(Ordering::Relaxed)
    );
    if let Some(dns) = sources.dns {
        header(
            &mut out,
            "lb_dns_answers_total",
            "counter",
            "DNS questions answered, by kind of answer.",
        );
        for (result, v) in [
            ("local", &dns.local),
            ("forwarded", &dns.forwarded),
            ("refused", &dns.refused),
            ("failed", &dns.failed),
        ] {
            let _ = writeln!(
                out,
                "lb_dns_answers_total{{result=\"{result}\"}} {}",
                read(v)
            );
        }
    }
    if let Some((lookups, failures)) = sources.host_lookups {
        header(
            &mut out,
            "lb_host_resolutions_total",
            "counter",
            "Resolutions of endpoint host names, by result (a failure keeps the last answer).",
        );
        let _ = writeln!(
            out,
            "lb_host_resolutions_total{{result=\"success\"}} {}\nlb_host_resolutions_total{{result=\"failure\"}} {}",
            lookups.saturating_sub(failures),
            failures
        );
    }
    if sources.process {
        process_metrics(&mut out);
    }
    out
}

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, fixed at
/// 100 by the Linux ABI on every architecture lb-proxy builds for.
const USER_HZ: f64 = 100.0;

/// The standard `process_*` metrics (as the Prometheus client libraries name
/// them) from `/proc/self`; each is skipped where it cannot be read.
fn process_metrics(out: &mut String) {
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at
        // field 3; utime and stime are fields 14 and 15.
        if let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            if let (Some(u), Some(s)) = (tick(11), tick(12)) {
                header(
                    out,
                    "process_cpu_seconds_total",
                    "counter",
                    "User and system CPU time spent, in seconds.",
                );
                let _ = writeln!(out, "process_cpu_seconds_total {}", (u + s) / USER_HZ);
            }
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(kb) = rss_kb {
            header(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
            );
            let _ = writeln!(out, "process_resident_memory_bytes {}", kb * 1024);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        header(out, "process_open_fds", "gauge", "Open file descriptors.");
        // The directory handle itself is one of them.
        let _ = writeln!(out, "process_open_fds {}", dir.count().saturating_sub(1));
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        let soft = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(max) = soft {
            header(
                out,
                "process_max_fds",
                "gauge",
                "The soft limit of open file descriptors.",
            );
            let _ = writeln!(out, "process_max_fds {max}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn process_metrics_come_from_proc_self() {
        let mut out = String::new();
        process_metrics(&mut out);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(out.contains(name), "{name} missing from:\n{out}");
        }
    }
}
