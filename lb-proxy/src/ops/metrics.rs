//! `/metrics` in the Prometheus text format, through the `metrics` crate's
//! handles and `metrics-exporter-prometheus`.
//!
//! The data path keeps counting in the atomics the snapshot already carries
//! (`PortStats`, `EndpointStats`, handed from snapshot to snapshot by identity
//! so figures survive reloads, and read by the admin views too); it never
//! formats a label, takes a lock or touches the exporter. [`Metrics`] owns a
//! local [`PrometheusRecorder`] (never installed as the global recorder: an
//! application embedding lb-proxy keeps its own) and, per series, a resolved
//! `metrics::Counter` or `Gauge`. The handles are resolved when a scrape first
//! sees a new snapshot: a series whose counters are the same objects as before
//! keeps its handle, new ones are registered (their labels built once), and
//! the handles of series that left the snapshot are dropped. Each scrape then
//! copies the atomics into the handles (`absolute` / `set`) and renders.
//!
//! Removal: the recorder is built with an idle timeout of zero for every kind,
//! so a series whose generation did not move since the previous render is
//! deleted from the exporter's registry at this render (`Recency` in
//! `metrics-util`). Every live series is written before each render (which
//! moves its generation even when the value is unchanged), so exactly the
//! series of deleted services and endpoints go, at the next scrape; scrapes
//! are serialized by a mutex so one scrape can never expire another's series.
//! A counter's `absolute` only raises it (`fetch_max`), so a series whose
//! counters were replaced (a service deleted and added again between two
//! scrapes: its counts restart at 0) cannot be lowered in place: then every
//! series is dropped by a render of nothing and registered again, which is
//! harmless because the exporter only mirrors the atomics.
//!
//! Two parts are rendered here rather than by the exporter, appended to its
//! text: `lb_connect_duration_seconds`, and the `process_*` metrics.
//! The histogram stays in fixed-bucket atomics
//! (`lb_core::stats::DurationHistogram`): the exporter's histogram takes a
//! clock reading and a push into a growing sample buffer per sample (drained
//! only by a render or upkeep; 57 ns against 15 ns), and its generation moves only on a sample, so with the idle
//! timeout a live endpoint that had no dial between two scrapes would lose its
//! histogram (and its counts) while without it a deleted endpoint's histogram
//! would stay forever. `process_cpu_seconds_total` is a fractional counter,
//! which the exporter's integer counters cannot hold. The `metrics_overhead`
//! bench measures what scraping and recording cost.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lb_core::stats::{read, EndpointStats, HistogramReading, PortStats};
use lb_core::{Protocol, ServicePort, ServicePortKey, Snapshot};
use metrics::{Counter, Gauge, Key, KeyName, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

use crate::control::ReloadCounters;
use crate::ops::dns::DnsCounters;

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
/// (no DNS or process metrics) with a recorder of its own: for a one-off
/// look at a table; a server keeps one [`Metrics`] so handles are reused.
pub fn render(snapshot: &Snapshot, reloads: &ReloadCounters) -> String {
    Metrics::new().render(
        snapshot,
        &Sources {
            reloads,
            dns: None,
            host_lookups: None,
            process: false,
        },
    )
}

/// Where the metadata of every handle points: this module.
static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The families the exporter renders: (name, kind, help).
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "lb_connections_total",
        Kind::Counter,
        "Connections accepted from clients.",
    ),
    (
        "lb_active_connections",
        Kind::Gauge,
        "Client connections open now.",
    ),
    (
        "lb_rejected_connections_total",
        Kind::Counter,
        "Client connections refused before reaching an endpoint.",
    ),
    (
        "lb_bytes_total",
        Kind::Counter,
        "Bytes proxied (rx: from clients, tx: to clients).",
    ),
    (
        "lb_connect_errors_total",
        Kind::Counter,
        "Dials to endpoints that failed or timed out.",
    ),
    ("lb_udp_sessions", Kind::Gauge, "UDP flows open now."),
    (
        "lb_udp_datagrams_total",
        Kind::Counter,
        "UDP datagrams: forwarded to endpoints, replied to clients, or dropped (by reason).",
    ),
    (
        "lb_udp_flows_evicted_total",
        Kind::Counter,
        "UDP flows evicted (idle longest first) to stay within udp_max_flows.",
    ),
    (
        "lb_endpoint_ready",
        Kind::Gauge,
        "1 when the endpoint is ready (EndpointSlice conditions).",
    ),
    (
        "lb_endpoint_ejected",
        Kind::Gauge,
        "1 while outlier ejection keeps the endpoint out of new connections.",
    ),
    (
        "lb_config_reloads_total",
        Kind::Counter,
        "Config reloads by result.",
    ),
    (
        "lb_dns_answers_total",
        Kind::Counter,
        "DNS questions answered, by kind of answer.",
    ),
    (
        "lb_host_resolutions_total",
        Kind::Counter,
        "Resolutions of endpoint host names, by result (a failure keeps the last answer).",
    ),
];

/// The kind of an exporter family, for its description.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// `/metrics` for one proxy: a local Prometheus recorder and the handles of
/// the series of the last snapshot it rendered. Keep one per served table
/// (the [`crate::app::App`] keeps one for its admin listener) so unchanged
/// series keep their handles from scrape to scrape.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The handles, behind the lock that serializes scrapes (see the module
    /// doc: a scrape must not expire the series another one just wrote).
    state: Mutex<State>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The handles of the series of one rendered snapshot, in its port order.
#[derive(Default)]
struct State {
    ports: Vec<PortSeries>,
    globals: Option<Globals>,
}

/// Series that do not belong to a service port.
struct Globals {
    /// `lb_config_reloads_total{result="success|failure"}`.
    reloads: [Counter; 2],
    /// `lb_dns_answers_total{result=...}`, while the DNS responder runs.
    dns: Option<[Counter; 4]>,
    /// `lb_host_resolutions_total{result="success|failure"}`, once any.
    hosts: Option<[Counter; 2]>,
}

/// The series of one service port and its endpoints.
struct PortSeries {
    /// The counters these handles mirror; held so a new object for the same
    /// key (counts restarted) is told apart from the old one.
    stats: Arc<PortStats>,
    key: ServicePortKey,
    /// `namespace`, `service`, `port`, `protocol`.
    labels: Vec<Label>,
    /// The same labels in text form, for the hand-rendered histogram.
    text: String,
    /// TCP ports only: a UDP port has no connections to count, and its drops
    /// (a source range's too) are `lb_udp_datagrams_total`, so it shows no
    /// connection series that would always read 0 or count datagrams twice.
    tcp: Option<TcpSeries>,
    udp: Option<UdpSeries>,
    endpoints: Vec<EndpointSeries>,
}

/// The connection series of a TCP service port.
struct TcpSeries {
    accepted: Counter,
    active: Gauge,
    /// `reason="no_endpoints|source_range|limit"`.
    rejected: [Counter; 3],
}

/// The UDP-only series of a service port.
struct UdpSeries {
    sessions: Gauge,
    /// forwarded, replied, then dropped by no_endpoints, source_range,
    /// flow_limit, send_error.
    datagrams: [Counter; 6],
    evicted: Counter,
}

/// The series of one endpoint of one service port.
struct EndpointSeries {
    stats: Arc<EndpointStats>,
    addr: SocketAddr,
    /// Port labels plus `endpoint="IP:PORT"` in text form (histogram).
    text: String,
    /// `direction="rx|tx"`.
    bytes: [Counter; 2],
    connect_errors: Counter,
    ready: Gauge,
    /// TCP ports only.
    ejected: Option<Gauge>,
}

// === impl Metrics ===

impl Metrics {
    /// A recorder with no series yet; the contract's families are described
    /// (their `# HELP` lines) up front.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(Duration::ZERO))
            .build_recorder();
        for (name, kind, help) in FAMILIES {
            let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            match kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
            }
        }
        Metrics {
            handle: recorder.handle(),
            recorder,
            state: Mutex::new(State::default()),
        }
    }

    /// Renders every metric: the contract's families for `snapshot`, then
    /// DNS, host resolution and process metrics as `sources` allows.
    pub fn render(&self, snapshot: &Snapshot, sources: &Sources<'_>) -> String {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ports: Vec<&ServicePort> = snapshot
            .services()
            .flat_map(|s| s.ports.iter().map(AsRef::as_ref))
            .collect();
        if !state.matches(&ports) && state.resolve(&self.recorder, &ports) {
            // Some series' counters were replaced: nothing was written since
            // the last render, so a render now drops every series from the
            // exporter; then all are registered afresh from the atomics.
            let _ = self.handle.render_to_write(&mut std::io::sink());
            *state = State::default();
            state.resolve(&self.recorder, &ports);
        }
        state.write(&self.recorder, &ports, sources);
        let mut out = self.handle.render();
        connect_durations(&mut out, &state.ports, &ports);
        if sources.process {
            process_metrics(&mut out);
        }
        out
    }
}

// === impl State ===

impl State {
    /// Whether the handles are those of `ports`: the same counter objects in
    /// the same order (the usual case: the snapshot did not change).
    fn matches(&self, ports: &[&ServicePort]) -> bool {
        self.ports.len() == ports.len()
            && self.ports.iter().zip(ports).all(|(s, p)| {
                Arc::ptr_eq(&s.stats, p.stats())
                    && s.endpoints.len() == p.endpoints().len()
                    && s.endpoints
                        .iter()
                        .zip(p.endpoints())
                        .all(|(se, e)| Arc::ptr_eq(&se.stats, &e.stats))
            })
    }

    /// Takes the handles of the series still in `ports` and registers the
    /// new ones; the handles of series that left are dropped (the exporter
    /// forgets them at the next render). Returns `true`, changing nothing,
    /// when a series is in `ports` with counters other than the ones its
    /// handle mirrors (its counts restarted): the caller must start over.
    fn resolve(&mut self, recorder: &PrometheusRecorder, ports: &[&ServicePort]) -> bool {
        let id = |p: &Arc<PortStats>| Arc::as_ptr(p) as usize;
        let eid = |e: &Arc<EndpointStats>| Arc::as_ptr(e) as usize;
        let old_ports: HashMap<usize, &PortSeries> =
            self.ports.iter().map(|s| (id(&s.stats), s)).collect();
        let old_endpoints: HashMap<usize, &EndpointSeries> = self
            .ports
            .iter()
            .flat_map(|s| &s.endpoints)
            .map(|e| (eid(&e.stats), e))
            .collect();
        let old_keys: HashSet<&ServicePortKey> = self.ports.iter().map(|s| &s.key).collect();
        let old_endpoint_keys: HashSet<(&ServicePortKey, SocketAddr)> = self
            .ports
            .iter()
            .flat_map(|s| s.endpoints.iter().map(move |e| (&s.key, e.addr)))
            .collect();
        let restarted = ports.iter().any(|p| {
            (!old_ports.contains_key(&id(p.stats())) && old_keys.contains(p.key()))
                || p.endpoints().iter().any(|e| {
                    !old_endpoints.contains_key(&eid(&e.stats))
                        && old_endpoint_keys.contains(&(p.key(), e.addr))
                })
        });
        if restarted {
            return true;
        }
        drop((old_ports, old_endpoints, old_keys, old_endpoint_keys));

        let mut old: HashMap<usize, PortSeries> = HashMap::new();
        let mut old_eps: HashMap<usize, EndpointSeries> = HashMap::new();
        for mut s in std::mem::take(&mut self.ports) {
            old_eps.extend(s.endpoints.drain(..).map(|e| (eid(&e.stats), e)));
            old.insert(id(&s.stats), s);
        }
        self.ports = ports
            .iter()
            .map(|p| {
                let mut s = old
                    .remove(&id(p.stats()))
                    .unwrap_or_else(|| PortSeries::register(recorder, p));
                s.endpoints = p
                    .endpoints()
                    .iter()
                    .map(|e| {
                        old_eps
                            .remove(&eid(&e.stats))
                            .unwrap_or_else(|| EndpointSeries::register(recorder, &s, e))
                    })
                    .collect();
                s
            })
            .collect();
        false
    }

    /// Copies every live figure into its handle. Each write moves the
    /// series' generation, which is what keeps it through the render.
    fn write(&mut self, recorder: &PrometheusRecorder, ports: &[&ServicePort], src: &Sources<'_>) {
        let now = tokio::time::Instant::now().into_std();
        for (s, p) in self.ports.iter().zip(ports) {
            let st = p.stats();
            if let Some(t) = &s.tcp {
                t.accepted.absolute(read(&st.accepted));
                t.active.set(read(&st.active) as f64);
                let rejected = [
                    &st.rejected_no_endpoints,
                    &st.rejected_source_range,
                    &st.rejected_limit,
                ];
                for (c, v) in t.rejected.iter().zip(rejected) {
                    c.absolute(read(v));
                }
            }
            if let Some(u) = &s.udp {
                u.sessions.set(read(&st.udp_sessions) as f64);
                let datagrams = [
                    &st.udp_forwarded,
                    &st.udp_replied,
                    &st.udp_dropped_no_endpoints,
                    &st.rejected_source_range,
                    &st.udp_dropped_flow_limit,
                    &st.udp_dropped_send_error,
                ];
                for (c, v) in u.datagrams.iter().zip(datagrams) {
                    c.absolute(read(v));
                }
                u.evicted.absolute(read(&st.udp_evicted));
            }
            for (i, (es, e)) in s.endpoints.iter().zip(p.endpoints()).enumerate() {
                es.bytes[0].absolute(read(&e.stats.bytes_rx));
                es.bytes[1].absolute(read(&e.stats.bytes_tx));
                es.connect_errors.absolute(read(&e.stats.connect_errors));
                es.ready.set(f64::from(u8::from(e.ready)));
                if let Some(g) = &es.ejected {
                    let ejected = e.health.ejection(now).is_some() && p.is_ejected(false, i, now);
                    g.set(f64::from(u8::from(ejected)));
                }
            }
        }

        let globals = self.globals.get_or_insert_with(|| Globals {
            reloads: ["success", "failure"]
                .map(|r| counter(recorder, "lb_config_reloads_total", &[], ("result", r))),
            dns: None,
            hosts: None,
        });
        globals.reloads[0].absolute(src.reloads.success.load(Ordering::Relaxed));
        globals.reloads[1].absolute(src.reloads.failure.load(Ordering::Relaxed));
        match src.dns {
            Some(dns) => {
                let handles = globals.dns.get_or_insert_with(|| {
                    ["local", "forwarded", "refused", "failed"]
                        .map(|r| counter(recorder, "lb_dns_answers_total", &[], ("result", r)))
                });
                let values = [&dns.local, &dns.forwarded, &dns.refused, &dns.failed];
                for (c, v) in handles.iter().zip(values) {
                    c.absolute(read(v));
                }
            }
            None => globals.dns = None,
        }
        match src.host_lookups {
            Some((lookups, failures)) => {
                let handles = globals.hosts.get_or_insert_with(|| {
                    ["success", "failure"]
                        .map(|r| counter(recorder, "lb_host_resolutions_total", &[], ("result", r)))
                });
                handles[0].absolute(lookups.saturating_sub(failures));
                handles[1].absolute(failures);
            }
            None => globals.hosts = None,
        }
    }
}

/// Registers the counter `name` with `labels` plus `extra`.
fn counter(
    recorder: &PrometheusRecorder,
    name: &'static str,
    labels: &[Label],
    extra: (&'static str, &'static str),
) -> Counter {
    let mut l = labels.to_vec();
    l.push(Label::new(extra.0, extra.1));
    recorder.register_counter(&Key::from_parts(name, l), &META)
}

// === impl PortSeries ===

impl PortSeries {
    /// Resolves the handles of `port`'s own series (not its endpoints').
    fn register(recorder: &PrometheusRecorder, port: &ServicePort) -> PortSeries {
        let key = port.key();
        let labels = vec![
            Label::new("namespace", key.service.namespace.clone()),
            Label::new("service", key.service.name.clone()),
            Label::new("port", crate::dataplane::connections::port_label(key)),
            Label::new("protocol", key.protocol.to_string()),
        ];
        let text = labels
            .iter()
            .map(|l| format!("{}=\"{}\"", l.key(), escape(l.value())))
            .collect::<Vec<_>>()
            .join(",");
        let plain = |name| recorder.register_counter(&Key::from_parts(name, labels.clone()), &META);
        let gauge = |name| recorder.register_gauge(&Key::from_parts(name, labels.clone()), &META);
        let udp = (key.protocol == Protocol::Udp).then(|| UdpSeries {
            sessions: gauge("lb_udp_sessions"),
            datagrams: [
                ("forwarded", None),
                ("replied", None),
                ("dropped", Some("no_endpoints")),
                ("dropped", Some("source_range")),
                ("dropped", Some("flow_limit")),
                ("dropped", Some("send_error")),
            ]
            .map(|(result, reason)| {
                let mut l = labels.clone();
                l.push(Label::new("result", result));
                if let Some(reason) = reason {
                    l.push(Label::new("reason", reason));
                }
                recorder.register_counter(&Key::from_parts("lb_udp_datagrams_total", l), &META)
            }),
            evicted: plain("lb_udp_flows_evicted_total"),
        });
        PortSeries {
            stats: port.stats().clone(),
            key: key.clone(),
            tcp: (key.protocol == Protocol::Tcp).then(|| TcpSeries {
                accepted: plain("lb_connections_total"),
                active: gauge("lb_active_connections"),
                rejected: ["no_endpoints", "source_range", "limit"].map(|r| {
                    counter(
                        recorder,
                        "lb_rejected_connections_total",
                        &labels,
                        ("reason", r),
                    )
                }),
            }),
            udp,
            endpoints: Vec::new(),
            text,
            labels,
        }
    }
}

// === impl EndpointSeries ===

impl EndpointSeries {
    /// Resolves the handles of endpoint `e` of the port whose series are `port`.
    fn register(
        recorder: &PrometheusRecorder,
        port: &PortSeries,
        e: &lb_core::Endpoint,
    ) -> EndpointSeries {
        let mut labels = port.labels.clone();
        labels.push(Label::new("endpoint", e.addr.to_string()));
        let key = |name| Key::from_parts(name, labels.clone());
        EndpointSeries {
            stats: e.stats.clone(),
            addr: e.addr,
            text: format!("{},endpoint=\"{}\"", port.text, e.addr),
            bytes: ["rx", "tx"]
                .map(|d| counter(recorder, "lb_bytes_total", &labels, ("direction", d))),
            connect_errors: recorder.register_counter(&key("lb_connect_errors_total"), &META),
            ready: recorder.register_gauge(&key("lb_endpoint_ready"), &META),
            ejected: (port.key.protocol == Protocol::Tcp)
                .then(|| recorder.register_gauge(&key("lb_endpoint_ejected"), &META)),
        }
    }
}

// === hand-rendered parts ===

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

/// One family's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `lb_connect_duration_seconds` of every TCP endpoint, from the atomics,
/// with the label text built when the endpoint's series were resolved.
fn connect_durations(out: &mut String, series: &[PortSeries], ports: &[&ServicePort]) {
    const NAME: &str = "lb_connect_duration_seconds";
    let mut first = true;
    for (s, p) in series.iter().zip(ports) {
        if s.key.protocol != Protocol::Tcp {
            continue;
        }
        for (es, e) in s.endpoints.iter().zip(p.endpoints()) {
            if first {
                header(
                    out,
                    NAME,
                    "histogram",
                    "How long successful dials to endpoints took.",
                );
                first = false;
            }
            histogram(out, NAME, &es.text, &e.stats.connect_duration.reading());
        }
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramReading) {
    for (bound, n) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
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
    use lb_core::stats::add;
    use lb_core::{EndpointSpec, NodeSpec, PortSpec, ServiceSpec};
    use std::time::SystemTime;

    fn table(endpoints: &[&str], previous: Option<&Snapshot>) -> Snapshot {
        let mut port = PortSpec::tcp("http", 80);
        for e in endpoints {
            port = port.with_endpoint(EndpointSpec::new(e.parse().expect("address")));
        }
        let ip = "127.96.0.1".parse().expect("address");
        let node = NodeSpec {
            name: "n".into(),
            addresses: vec![ip],
        };
        let svc = ServiceSpec::cluster_ip("default", "web", ip).with_port(port);
        Snapshot::build(node, vec![svc], previous, SystemTime::now())
    }

    /// Sample lines of `text`, sorted (the exporter's order is a hash map's).
    fn lines(text: &str) -> Vec<&str> {
        let mut v: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        v.sort_unstable();
        v
    }

    fn sources(reloads: &ReloadCounters) -> Sources<'_> {
        Sources {
            reloads,
            dns: None,
            host_lookups: None,
            process: false,
        }
    }

    #[test]
    fn a_scrape_of_an_unchanged_table_shows_every_series_again() {
        let metrics = Metrics::new();
        let reloads = ReloadCounters::default();
        let t = table(&["127.0.244.1:80", "127.0.244.2:80"], None);
        let first = metrics.render(&t, &sources(&reloads));
        let second = metrics.render(&t, &sources(&reloads));
        assert_eq!(lines(&first), lines(&second));
        assert!(first.contains("endpoint=\"127.0.244.2:80\""), "{first}");
    }

    #[test]
    fn series_of_an_endpoint_that_left_the_table_go_and_the_others_stay() {
        let metrics = Metrics::new();
        let reloads = ReloadCounters::default();
        let t1 = table(&["127.0.244.1:80", "127.0.244.2:80"], None);
        add(
            &t1.services().next().expect("svc").ports[0].stats().accepted,
            7,
        );
        let before = metrics.render(&t1, &sources(&reloads));
        let t2 = table(&["127.0.244.1:80"], Some(&t1));
        let after = metrics.render(&t2, &sources(&reloads));
        assert!(!after.contains("127.0.244.2:80"), "{after}");
        let kept: Vec<&str> = lines(&before)
            .into_iter()
            .filter(|l| !l.contains("127.0.244.2:80"))
            .collect();
        assert_eq!(kept, lines(&after));
        assert!(after.contains("lb_connections_total{namespace=\"default\",service=\"web\",port=\"http\",protocol=\"TCP\"} 7"), "{after}");
    }

    #[test]
    fn two_recorders_do_not_share_series() {
        let reloads = ReloadCounters::default();
        let a = Metrics::new().render(&table(&["127.0.244.1:80"], None), &sources(&reloads));
        let b = Metrics::new().render(&table(&["127.0.244.9:80"], None), &sources(&reloads));
        assert!(!a.contains("127.0.244.9:80") && !b.contains("127.0.244.1:80"));
    }

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
