//! `/metrics` in the Prometheus text format, written straight from the
//! atomics the snapshot carries, in chunks, while the answer is sent.
//!
//! The data path counts in the atomics the snapshot already carries
//! (`PortStats`, `EndpointStats`, handed from snapshot to snapshot by
//! identity so figures survive reloads, and read by the admin views too); it
//! never formats a label, takes a lock or knows about `/metrics`. A scrape
//! is an [`Exposition`]: it takes the snapshot's service ports (their `Arc`s,
//! from one `load()` of the table's `ArcSwap`), writes the figures that are
//! not in the table at once (reloads, the state file, the build, DNS answers,
//! host resolutions, `/proc/self`, the sources' counters: a few lines), then
//! writes the table's families one after the other, each by a walk over the
//! ports, into chunks of about [`CHUNK`] bytes. A chunk is written when the
//! previous one has been taken, so the admin API sends one while the next
//! is not written yet (`Body::from_stream` over
//! [`crate::ops::admin::AdminSource::metrics_chunks`]): the text is never
//! held whole, and the work runs on the thread that serves the admin
//! connection (the App's `lb-ops` thread, never a data-plane worker) a chunk
//! at a time, so the DNS responder beside it is not held for a whole scrape.
//! The only lock a scrape takes is an ejected endpoint's health lock, for
//! one read, as a pick of that endpoint does.
//!
//! Nothing is kept between scrapes: no registry, no label set per series.
//! A series exists while its service port or endpoint is in the table, so
//! the series of a deleted service or endpoint go with it (at the first
//! scrape of a table without it), and a service deleted and added again
//! gets new counters (the snapshot's), which count from 0. A scrape being
//! sent keeps the ports it read alive until its last chunk is written, so
//! one scrape reads one table.
//!
//! The text: each family's `# HELP` and `# TYPE` lines, then its samples
//! (`promtool check metrics` finds nothing to say about it); a family shows
//! once it has a sample (the UDP ones with a UDP port, the endpoint ones
//! with an endpoint). Labels are in the contract's order (`namespace`,
//! `service`, `port`, `protocol`, then `endpoint`, then the family's own),
//! values escaped as the format requires. Counters and gauges are integers;
//! `lb_connect_duration_seconds` is a fixed-bucket histogram in atomics
//! (`lb_core::stats::DurationHistogram`, 15 ns a sample where a sample
//! buffer would cost 57), and `process_cpu_seconds_total` a fractional
//! counter.
//!
//! Why by hand: until issue 20 the text went through the `metrics` crate's
//! handles and `metrics-exporter-prometheus`, whose registry, label keys per
//! series and one-`String` render with sorting were the cost at scale: at
//! 10,000 services × 10 endpoints (288 MB of text) a render took 10.7 s,
//! allocated 2.2 GB and kept 415 MB between scrapes; written here, 0.19 s,
//! 0.2 MB held at most, nothing kept (the `metrics_render` bench;
//! `BENCHMARKS.md`).
//!
//! Three files: this one owns [`Exposition`] (the order of a scrape and the
//! figures outside the table); `series` the table's families and what each
//! writes for one port; `text` the format itself (headers, escaping,
//! numbers, a sample line, a histogram) and the `process_*` and
//! `lb_source_*` metrics.

mod series;
mod text;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use lb_config::source::SourceStats;
use lb_core::stats::{read, DnsCounters};
use lb_core::{ServicePort, Snapshot};

use crate::control::ReloadCounters;
use series::{Labels, Scrape, FAMILIES};
use text::{bare, header, put, sample};

/// The size a chunk of a scrape grows to before it is handed out: large
/// enough that a chunk costs one write, small enough that a chunk takes
/// well under a millisecond to write and the memory of a scrape stays
/// small. A chunk ends at the end of a port's samples of one family, so a
/// port with very many endpoints makes one larger chunk.
pub const CHUNK: usize = 64 * 1024;

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
    /// Each source's counters, by source name (`etcd`), as
    /// `lb_source_stale`, `lb_source_resyncs_total` and
    /// `lb_source_updates_total`; empty for none.
    pub source_stats: &'a [(&'a str, SourceStats)],
}

/// Renders the contract's metrics for `snapshot` and the reload counters
/// (no DNS or process metrics), whole: for a look at a table in a test or a
/// tool; a server sends an [`Exposition`] as it is written.
pub fn render(snapshot: &Snapshot, reloads: &ReloadCounters) -> String {
    Exposition::new(snapshot, &Sources::table_only(reloads)).into_string()
}

impl<'a> Sources<'a> {
    /// The table's figures and the reload counts only: no DNS, host-name,
    /// process or source metrics.
    pub fn table_only(reloads: &'a ReloadCounters) -> Self {
        Sources {
            reloads,
            dns: None,
            host_lookups: None,
            process: false,
            source_stats: &[],
        }
    }
}

/// One scrape of `/metrics`: an iterator of chunks of text, each written
/// when it is asked for (see the module doc). Owns what it reads, so it can
/// outlive the request handler that made it.
pub struct Exposition {
    /// The service ports of the table, in its order.
    ports: Vec<Arc<ServicePort>>,
    scrape: Scrape,
    /// The figures outside the table, written when the scrape started; the
    /// first chunk starts with them.
    head: Vec<u8>,
    /// `process_*` and `lb_source_*`, read when the scrape started; the
    /// last chunk ends with them.
    tail: Vec<u8>,
    /// The family being written ([`FAMILIES`] index) and the next port of it.
    family: usize,
    port: usize,
    /// Whether the current family's header is written.
    started: bool,
    labels: Labels,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("ports", &self.ports.len())
            .field("family", &self.family)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Exposition {
    /// A scrape of `snapshot` and `sources` as they are now: the figures
    /// outside the table are read here, the table's as each chunk is
    /// written.
    pub fn new(snapshot: &Snapshot, sources: &Sources<'_>) -> Exposition {
        let ports = snapshot
            .services()
            .flat_map(|s| s.ports.iter().cloned())
            .collect();
        let mut head = Vec::new();
        globals(&mut head, sources);
        let mut tail = Vec::new();
        if sources.process {
            text::process_metrics(&mut tail);
        }
        text::source_stats(&mut tail, sources.source_stats);
        Exposition {
            ports,
            scrape: Scrape {
                now: tokio::time::Instant::now().into_std(),
                bounds: text::bounds(),
            },
            head,
            tail,
            family: 0,
            port: 0,
            started: false,
            labels: Labels::default(),
        }
    }

    /// The whole text at once (tests, tools, [`render`]).
    pub fn into_string(self) -> String {
        let bytes: Vec<u8> = self.flatten().collect();
        // Only `&str` and ASCII are ever written.
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

impl Iterator for Exposition {
    type Item = Vec<u8>;

    /// The next chunk: about [`CHUNK`] bytes, the last one shorter; `None`
    /// once everything is written.
    fn next(&mut self) -> Option<Vec<u8>> {
        if self.family > FAMILIES.len() {
            return None;
        }
        // Room for the port that crosses CHUNK (ten endpoints' histograms
        // are 22 kB), so a chunk is one allocation.
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 2);
        out.append(&mut self.head);
        while out.len() < CHUNK {
            let Some(family) = FAMILIES.get(self.family) else {
                break;
            };
            let Some(port) = self.ports.get(self.port) else {
                self.family += 1;
                self.port = 0;
                self.started = false;
                continue;
            };
            self.port += 1;
            if !(family.has)(port) {
                continue;
            }
            if !self.started {
                header(&mut out, family.name, family.kind, family.help);
                self.started = true;
            }
            self.labels.port(port);
            (family.write)(&mut out, port, &mut self.labels, &self.scrape);
        }
        if self.family == FAMILIES.len() {
            out.append(&mut self.tail);
            // Done: the ports are let go now, not when the body is dropped.
            self.family += 1;
            self.ports = Vec::new();
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The series that are not in the table: reloads, the state file, the
/// build, DNS answers and host resolutions.
fn globals(out: &mut Vec<u8>, src: &Sources<'_>) {
    let reloads = src.reloads;
    let counter = |out: &mut Vec<u8>, name: &str, help: &str, values: &[(&str, u64)]| {
        header(out, name, "counter", help);
        for (result, v) in values {
            sample(out, name, b"", &[("result", result)], *v);
        }
    };
    counter(
        out,
        "lb_config_reloads_total",
        "Config reloads by result.",
        &[
            ("success", reloads.success.load(Ordering::Relaxed)),
            ("failure", reloads.failure.load(Ordering::Relaxed)),
        ],
    );
    header(
        out,
        "lb_state_file_errors_total",
        "counter",
        "Saves of allocations to the state file that failed (allocations not durable).",
    );
    bare(
        out,
        "lb_state_file_errors_total",
        reloads.state_file_errors.load(Ordering::Relaxed),
    );
    header(
        out,
        "lb_config_last_reload_successful",
        "gauge",
        "Whether the last config reload attempt was successful.",
    );
    let failed = reloads.last_failed.load(Ordering::Relaxed);
    bare(out, "lb_config_last_reload_successful", u64::from(!failed));
    let at = "lb_config_last_reload_success_timestamp_seconds";
    header(
        out,
        at,
        "gauge",
        "Timestamp of the last successful config reload.",
    );
    bare(
        out,
        at,
        reloads.last_success_unix_seconds.load(Ordering::Relaxed),
    );
    header(
        out,
        "lb_build_info",
        "gauge",
        "A metric with a constant '1' value labeled by version and revision from which lb-proxy was built.",
    );
    put(out, &["lb_build_info{version=\""]);
    text::escaped(out, env!("CARGO_PKG_VERSION"));
    put(out, &["\",revision=\""]);
    text::escaped(out, crate::BUILD_REVISION);
    put(out, &["\"} 1\n"]);
    if let Some(dns) = src.dns {
        counter(
            out,
            "lb_dns_answers_total",
            "DNS questions answered, by kind of answer.",
            &[
                ("local", read(&dns.local)),
                ("forwarded", read(&dns.forwarded)),
                ("refused", read(&dns.refused)),
                ("failed", read(&dns.failed)),
            ],
        );
    }
    if let Some((lookups, failures)) = src.host_lookups {
        counter(
            out,
            "lb_host_resolutions_total",
            "Resolutions of endpoint host names, by result (a failure keeps the last answer).",
            &[
                ("success", lookups.saturating_sub(failures)),
                ("failure", failures),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::stats::{add, CloseCause};
    use lb_core::{EndpointSpec, NodeSpec, PortSpec, Protocol, ServiceSpec};
    use std::collections::HashSet;
    use std::time::{Duration, SystemTime};

    fn node() -> NodeSpec {
        NodeSpec {
            name: "n".into(),
            addresses: vec!["127.96.0.1".parse().expect("address")],
            zone: None,
        }
    }

    /// Service `name` in `default` with one TCP port `http` and `endpoints`.
    fn web(name: &str, endpoints: &[&str]) -> ServiceSpec {
        let mut port = PortSpec::tcp("http", 80);
        for e in endpoints {
            port = port.with_endpoint(EndpointSpec::new(e.parse().expect("address")));
        }
        ServiceSpec::cluster_ip("default", name, "127.96.0.1".parse().expect("address"))
            .with_port(port)
    }

    fn table(services: Vec<ServiceSpec>, previous: Option<&Snapshot>) -> Snapshot {
        Snapshot::build(node(), services, previous, SystemTime::now())
    }

    fn text(t: &Snapshot) -> String {
        render(t, &ReloadCounters::default())
    }

    fn port<'a>(t: &'a Snapshot, service: &str) -> &'a ServicePort {
        let svc = t
            .services()
            .find(|s| s.ports[0].key().service.name == service)
            .expect("service");
        &svc.ports[0]
    }

    fn sample_value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    /// Checks the text format's grouping: every family's HELP and TYPE
    /// once, then only its own samples, and every sample under a header.
    fn assert_valid(text: &str) {
        let mut seen = HashSet::new();
        let mut current: Option<(String, String)> = None;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().expect("a name").to_string();
                assert!(seen.insert(name.clone()), "{name} twice in:\n{text}");
                let kind = lines
                    .next()
                    .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                    .unwrap_or_else(|| panic!("no TYPE after HELP {name}"));
                current = Some((name, kind.to_string()));
                continue;
            }
            let (family, kind) = current.as_ref().expect("a sample before any header");
            let metric = line.split(['{', ' ']).next().expect("a name");
            let ok = metric == family
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| metric.strip_suffix(s) == Some(family)));
            assert!(ok, "{line} under {family}");
            assert!(line.rsplit_once(' ').is_some(), "{line}");
        }
    }

    #[test]
    fn the_text_of_a_small_table_reads_exactly_so() {
        let dns = ServiceSpec::cluster_ip("kube-system", "dns", "127.96.0.10".parse().expect("ip"))
            .with_port(
                PortSpec {
                    protocol: Protocol::Udp,
                    ..PortSpec::tcp("dns", 53)
                }
                .with_endpoint(EndpointSpec::new("127.0.244.3:53".parse().expect("addr"))),
            );
        // A second port, unnamed and without endpoints.
        let web = web("web", &["127.0.244.1:8080"]).with_port(PortSpec::tcp("", 8443));
        let t = table(vec![web, dns], None);
        let st = port(&t, "web").stats();
        add(&st.accepted, 7);
        add(&st.active, 1);
        add(&st.rejected_limit, 2);
        st.closed.count(CloseCause::Reset);
        add(&st.failovers, 3);
        let e = &port(&t, "web").endpoints()[0].stats;
        add(&e.bytes_rx, 10);
        add(&e.bytes_tx, 20);
        add(&e.connect_errors, 1);
        st.connect_duration.record(Duration::from_micros(700));
        let udp = port(&t, "dns").stats();
        add(&udp.udp_forwarded, 5);
        add(&udp.udp_replied, 4);
        let reloads = ReloadCounters::default();
        add(&reloads.success, 2);
        reloads
            .last_success_unix_seconds
            .store(1_754_321_234, Ordering::Relaxed);
        let answers = DnsCounters::default();
        add(&answers.local, 11);
        let text = Exposition::new(
            &t,
            &Sources {
                reloads: &reloads,
                dns: Some(&answers),
                host_lookups: Some((5, 1)),
                process: false,
                source_stats: &[],
            },
        )
        .into_string();
        assert_valid(&text);
        let expected = r#"# HELP lb_config_reloads_total Config reloads by result.
# TYPE lb_config_reloads_total counter
lb_config_reloads_total{result="success"} 2
lb_config_reloads_total{result="failure"} 0
# HELP lb_state_file_errors_total Saves of allocations to the state file that failed (allocations not durable).
# TYPE lb_state_file_errors_total counter
lb_state_file_errors_total 0
# HELP lb_config_last_reload_successful Whether the last config reload attempt was successful.
# TYPE lb_config_last_reload_successful gauge
lb_config_last_reload_successful 1
# HELP lb_config_last_reload_success_timestamp_seconds Timestamp of the last successful config reload.
# TYPE lb_config_last_reload_success_timestamp_seconds gauge
lb_config_last_reload_success_timestamp_seconds 1754321234
# HELP lb_build_info A metric with a constant '1' value labeled by version and revision from which lb-proxy was built.
# TYPE lb_build_info gauge
lb_build_info{version="0.1.0",revision="REVISION"} 1
# HELP lb_dns_answers_total DNS questions answered, by kind of answer.
# TYPE lb_dns_answers_total counter
lb_dns_answers_total{result="local"} 11
lb_dns_answers_total{result="forwarded"} 0
lb_dns_answers_total{result="refused"} 0
lb_dns_answers_total{result="failed"} 0
# HELP lb_host_resolutions_total Resolutions of endpoint host names, by result (a failure keeps the last answer).
# TYPE lb_host_resolutions_total counter
lb_host_resolutions_total{result="success"} 4
lb_host_resolutions_total{result="failure"} 1
# HELP lb_connections_total Connections accepted from clients.
# TYPE lb_connections_total counter
lb_connections_total{namespace="default",service="web",port="http",protocol="TCP"} 7
lb_connections_total{namespace="default",service="web",port="8443",protocol="TCP"} 0
# HELP lb_active_connections Client connections open now.
# TYPE lb_active_connections gauge
lb_active_connections{namespace="default",service="web",port="http",protocol="TCP"} 1
lb_active_connections{namespace="default",service="web",port="8443",protocol="TCP"} 0
# HELP lb_rejected_connections_total Client connections refused before reaching an endpoint.
# TYPE lb_rejected_connections_total counter
lb_rejected_connections_total{namespace="default",service="web",port="http",protocol="TCP",reason="no_endpoints"} 0
lb_rejected_connections_total{namespace="default",service="web",port="http",protocol="TCP",reason="source_range"} 0
lb_rejected_connections_total{namespace="default",service="web",port="http",protocol="TCP",reason="limit"} 2
lb_rejected_connections_total{namespace="default",service="web",port="http",protocol="TCP",reason="local_resources"} 0
lb_rejected_connections_total{namespace="default",service="web",port="http",protocol="TCP",reason="self_loop"} 0
lb_rejected_connections_total{namespace="default",service="web",port="http",protocol="TCP",reason="proxy_protocol"} 0
lb_rejected_connections_total{namespace="default",service="web",port="8443",protocol="TCP",reason="no_endpoints"} 0
lb_rejected_connections_total{namespace="default",service="web",port="8443",protocol="TCP",reason="source_range"} 0
lb_rejected_connections_total{namespace="default",service="web",port="8443",protocol="TCP",reason="limit"} 0
lb_rejected_connections_total{namespace="default",service="web",port="8443",protocol="TCP",reason="local_resources"} 0
lb_rejected_connections_total{namespace="default",service="web",port="8443",protocol="TCP",reason="self_loop"} 0
lb_rejected_connections_total{namespace="default",service="web",port="8443",protocol="TCP",reason="proxy_protocol"} 0
# HELP lb_connections_closed_total Forwarded client connections that ended, by cause.
# TYPE lb_connections_closed_total counter
lb_connections_closed_total{namespace="default",service="web",port="http",protocol="TCP",cause="closed"} 0
lb_connections_closed_total{namespace="default",service="web",port="http",protocol="TCP",cause="reset"} 1
lb_connections_closed_total{namespace="default",service="web",port="http",protocol="TCP",cause="idle_timeout"} 0
lb_connections_closed_total{namespace="default",service="web",port="http",protocol="TCP",cause="half_close_timeout"} 0
lb_connections_closed_total{namespace="default",service="web",port="http",protocol="TCP",cause="drained"} 0
lb_connections_closed_total{namespace="default",service="web",port="http",protocol="TCP",cause="stopped"} 0
lb_connections_closed_total{namespace="default",service="web",port="8443",protocol="TCP",cause="closed"} 0
lb_connections_closed_total{namespace="default",service="web",port="8443",protocol="TCP",cause="reset"} 0
lb_connections_closed_total{namespace="default",service="web",port="8443",protocol="TCP",cause="idle_timeout"} 0
lb_connections_closed_total{namespace="default",service="web",port="8443",protocol="TCP",cause="half_close_timeout"} 0
lb_connections_closed_total{namespace="default",service="web",port="8443",protocol="TCP",cause="drained"} 0
lb_connections_closed_total{namespace="default",service="web",port="8443",protocol="TCP",cause="stopped"} 0
# HELP lb_failovers_total Client connections (TCP) and new flows (UDP) that reached an endpoint only after the dial to an earlier pick failed.
# TYPE lb_failovers_total counter
lb_failovers_total{namespace="default",service="web",port="http",protocol="TCP"} 3
lb_failovers_total{namespace="default",service="web",port="8443",protocol="TCP"} 0
lb_failovers_total{namespace="kube-system",service="dns",port="dns",protocol="UDP"} 0
# HELP lb_bytes_total Bytes proxied (rx: from clients, tx: to clients).
# TYPE lb_bytes_total counter
lb_bytes_total{namespace="default",service="web",port="http",protocol="TCP",endpoint="127.0.244.1:8080",direction="rx"} 10
lb_bytes_total{namespace="default",service="web",port="http",protocol="TCP",endpoint="127.0.244.1:8080",direction="tx"} 20
lb_bytes_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",endpoint="127.0.244.3:53",direction="rx"} 0
lb_bytes_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",endpoint="127.0.244.3:53",direction="tx"} 0
# HELP lb_connect_errors_total Dials to endpoints that failed or timed out.
# TYPE lb_connect_errors_total counter
lb_connect_errors_total{namespace="default",service="web",port="http",protocol="TCP",endpoint="127.0.244.1:8080"} 1
lb_connect_errors_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",endpoint="127.0.244.3:53"} 0
# HELP lb_udp_sessions UDP flows open now.
# TYPE lb_udp_sessions gauge
lb_udp_sessions{namespace="kube-system",service="dns",port="dns",protocol="UDP"} 0
# HELP lb_udp_datagrams_total UDP datagrams: forwarded to endpoints, replied to clients, or dropped (by reason).
# TYPE lb_udp_datagrams_total counter
lb_udp_datagrams_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",result="forwarded"} 5
lb_udp_datagrams_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",result="replied"} 4
lb_udp_datagrams_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",result="dropped",reason="no_endpoints"} 0
lb_udp_datagrams_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",result="dropped",reason="source_range"} 0
lb_udp_datagrams_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",result="dropped",reason="flow_limit"} 0
lb_udp_datagrams_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",result="dropped",reason="send_error"} 0
lb_udp_datagrams_total{namespace="kube-system",service="dns",port="dns",protocol="UDP",result="dropped",reason="self_loop"} 0
# HELP lb_udp_flows_evicted_total UDP flows evicted (idle longest first) to stay within udp_max_flows.
# TYPE lb_udp_flows_evicted_total counter
lb_udp_flows_evicted_total{namespace="kube-system",service="dns",port="dns",protocol="UDP"} 0
# HELP lb_endpoint_ready 1 when the endpoint is ready (EndpointSlice conditions).
# TYPE lb_endpoint_ready gauge
lb_endpoint_ready{namespace="default",service="web",port="http",protocol="TCP",endpoint="127.0.244.1:8080"} 1
lb_endpoint_ready{namespace="kube-system",service="dns",port="dns",protocol="UDP",endpoint="127.0.244.3:53"} 1
# HELP lb_endpoint_ejected 1 while outlier ejection keeps the endpoint out of new connections.
# TYPE lb_endpoint_ejected gauge
lb_endpoint_ejected{namespace="default",service="web",port="http",protocol="TCP",endpoint="127.0.244.1:8080"} 0
# HELP lb_connect_duration_seconds How long successful dials to the port's endpoints took.
# TYPE lb_connect_duration_seconds histogram
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.0005"} 0
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.001"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.0025"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.005"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.01"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.025"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.05"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.1"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.25"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="0.5"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="1"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="2.5"} 1
lb_connect_duration_seconds_bucket{namespace="default",service="web",port="http",protocol="TCP",le="+Inf"} 1
lb_connect_duration_seconds_sum{namespace="default",service="web",port="http",protocol="TCP"} 0.0007
lb_connect_duration_seconds_count{namespace="default",service="web",port="http",protocol="TCP"} 1
"#
        .replace("REVISION", crate::BUILD_REVISION);
        assert_eq!(text, expected);
    }

    #[test]
    fn a_large_table_is_written_in_chunks_that_join_into_the_whole_text() {
        let services = (0..300)
            .map(|i| {
                let endpoints: Vec<String> = (0..5)
                    .map(|j| format!("127.0.244.{j}:{}", 8000 + i))
                    .collect();
                let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
                web(&format!("svc-{i}"), &refs)
            })
            .collect();
        let t = table(services, None);
        // One set of counters for both renders: each stamps its creation
        // second, and two made across a second's boundary differ.
        let reloads = ReloadCounters::default();
        let chunks: Vec<Vec<u8>> = Exposition::new(&t, &Sources::table_only(&reloads)).collect();
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        let (last, full) = chunks.split_last().expect("chunks");
        for chunk in full {
            // A chunk ends with a port's samples of one family: five
            // endpoints' series at most.
            assert!(
                (CHUNK..CHUNK + 16 * 1024).contains(&chunk.len()),
                "{}",
                chunk.len()
            );
            assert_eq!(chunk.last(), Some(&b'\n'));
        }
        assert!(!last.is_empty() && last.len() < CHUNK + 16 * 1024);
        let joined = String::from_utf8(chunks.concat()).expect("UTF-8");
        assert_eq!(joined, render(&t, &reloads));
        assert_valid(&joined);
        assert_eq!(
            joined
                .lines()
                .filter(|l| l.starts_with("lb_connect_duration_seconds_count"))
                .count(),
            300,
            "one histogram per port"
        );
    }

    #[test]
    fn a_finished_scrape_lets_go_of_the_table() {
        let t = table(vec![web("web", &["127.0.244.1:80"])], None);
        let ports = t.services().next().expect("svc").ports[0].clone();
        let before = Arc::strong_count(&ports);
        let mut scrape = Exposition::new(&t, &Sources::table_only(&ReloadCounters::default()));
        assert_eq!(
            Arc::strong_count(&ports),
            before + 1,
            "a scrape reads the ports it was made with"
        );
        while scrape.next().is_some() {}
        assert_eq!(
            Arc::strong_count(&ports),
            before,
            "written: the ports are let go"
        );
        assert_eq!(scrape.next(), None);
    }

    #[test]
    fn series_of_an_endpoint_that_left_the_table_go_and_the_others_stay() {
        let t1 = table(
            vec![web("web", &["127.0.244.1:80", "127.0.244.2:80"])],
            None,
        );
        add(&port(&t1, "web").stats().accepted, 7);
        let before = text(&t1);
        assert!(before.contains("127.0.244.2:80"), "{before}");
        let t2 = table(vec![web("web", &["127.0.244.1:80"])], Some(&t1));
        let after = text(&t2);
        assert!(!after.contains("127.0.244.2:80"), "{after}");
        let kept: Vec<&str> = before
            .lines()
            .filter(|l| !l.contains("127.0.244.2:80"))
            .collect();
        assert_eq!(kept, after.lines().collect::<Vec<_>>());
        assert!(after.contains("lb_connections_total{namespace=\"default\",service=\"web\",port=\"http\",protocol=\"TCP\"} 7\n"), "{after}");
    }

    #[test]
    fn no_series_of_a_deleted_service_survives_and_one_added_again_counts_from_zero() {
        let connections = "lb_connections_total{namespace=\"default\",service=\"again\",port=\"http\",protocol=\"TCP\"}";
        let bytes = "lb_bytes_total{namespace=\"default\",service=\"again\",port=\"http\",protocol=\"TCP\",endpoint=\"127.0.244.2:80\",direction=\"rx\"}";
        let both = || {
            vec![
                web("other", &["127.0.244.1:80"]),
                web("again", &["127.0.244.2:80"]),
            ]
        };
        let t1 = table(both(), None);
        add(&port(&t1, "again").stats().accepted, 2);
        add(&port(&t1, "again").endpoints()[0].stats.bytes_rx, 9);
        add(&port(&t1, "other").stats().accepted, 5);
        let first = text(&t1);
        assert_eq!(sample_value(&first, connections), Some(2));
        assert_eq!(sample_value(&first, bytes), Some(9));

        let t2 = table(vec![web("other", &["127.0.244.1:80"])], Some(&t1));
        let gone = text(&t2);
        assert!(!gone.contains("service=\"again\""), "{gone}");

        let t3 = table(both(), Some(&t2));
        let back = text(&t3);
        assert_eq!(sample_value(&back, connections), Some(0), "{back}");
        assert_eq!(sample_value(&back, bytes), Some(0), "{back}");
        let other = "lb_connections_total{namespace=\"default\",service=\"other\",port=\"http\",protocol=\"TCP\"}";
        assert_eq!(sample_value(&back, other), Some(5));
    }

    #[test]
    fn label_values_are_escaped_in_every_sample() {
        let odd = ServiceSpec::cluster_ip("a\\b", "we\"b\nx", "127.96.0.1".parse().expect("ip"))
            .with_port(
                PortSpec::tcp("p\"", 80)
                    .with_endpoint(EndpointSpec::new("127.0.244.1:80".parse().expect("addr"))),
            );
        let text = text(&table(vec![odd], None));
        let labels = "namespace=\"a\\\\b\",service=\"we\\\"b\\nx\",port=\"p\\\"\",protocol=\"TCP\"";
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.contains("protocol="))
            .collect();
        assert!(samples.len() > 20, "{text}");
        for l in samples {
            assert!(l.contains(labels), "{l}");
        }
        assert_valid(&text);
    }

    #[test]
    fn a_family_shows_once_it_has_a_sample() {
        // A TCP port without endpoints: its own families, no endpoint ones, no UDP ones.
        let t = table(vec![web("web", &[])], None);
        let out = text(&t);
        assert!(
            out.contains("# TYPE lb_connections_total counter\n"),
            "{out}"
        );
        for family in [
            "lb_bytes_total",
            "lb_endpoint_ready",
            "lb_connect_duration_seconds",
            "lb_udp_sessions",
        ] {
            assert!(!out.contains(family), "{family} in:\n{out}");
        }
        // An empty table: only the figures outside it.
        let empty = text(&table(Vec::new(), None));
        assert!(!empty.contains("namespace="), "{empty}");
        assert!(empty.contains("lb_build_info{"), "{empty}");
    }
}
