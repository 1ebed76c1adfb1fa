//! The mirror of the snapshot's atomics into the exporter's handles: which
//! handles a snapshot's series have (resolved once per snapshot, carried
//! over by the identity of their counters), and the copy of every figure
//! into them before a render.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use lb_core::stats::{read, CloseCause, EndpointStats, PortStats};
use lb_core::{Protocol, ServicePort, ServicePortKey};
use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::escape;
use super::Sources;
use crate::ops::views::port_label;

/// Where the metadata of every handle points: this module.
static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The handles of the series of one rendered snapshot, in its port order.
#[derive(Default)]
pub(super) struct State {
    pub(super) ports: Vec<PortSeries>,
    globals: Option<Globals>,
}

/// Series that do not belong to a service port.
struct Globals {
    /// `lb_config_reloads_total{result="success|failure"}`.
    reloads: [Counter; 2],
    /// `lb_state_file_errors_total`.
    state_file_errors: Counter,
    /// `lb_config_last_reload_successful`, and
    /// `lb_config_last_reload_success_timestamp_seconds`.
    last_reload: [Gauge; 2],
    /// `lb_build_info{version,revision}`, always 1.
    build_info: Gauge,
    /// `lb_dns_answers_total{result=...}`, while the DNS responder runs.
    dns: Option<[Counter; 4]>,
    /// `lb_host_resolutions_total{result="success|failure"}`, once any.
    hosts: Option<[Counter; 2]>,
}

/// The series of one service port and its endpoints.
pub(super) struct PortSeries {
    /// The counters these handles mirror; held so a new object for the same
    /// key (counts restarted) is told apart from the old one.
    stats: Arc<PortStats>,
    pub(super) key: ServicePortKey,
    /// `namespace`, `service`, `port`, `protocol`.
    labels: Vec<Label>,
    /// The same labels in text form, for the hand-rendered histogram.
    text: String,
    /// TCP ports only: a UDP port has no connections to count, and its drops
    /// (a source range's too) are `lb_udp_datagrams_total`, so it shows no
    /// connection series that would always read 0 or count datagrams twice.
    tcp: Option<TcpSeries>,
    udp: Option<UdpSeries>,
    /// `lb_failovers_total`: TCP connections and UDP flows alike.
    failovers: Counter,
    pub(super) endpoints: Vec<EndpointSeries>,
}

/// The connection series of a TCP service port.
struct TcpSeries {
    accepted: Counter,
    active: Gauge,
    /// `reason="no_endpoints|source_range|limit|local_resources|self_loop"`.
    rejected: [Counter; 5],
    /// `lb_connections_closed_total{cause}`, in `CloseCause::ALL` order.
    closed: [Counter; 6],
}

/// The UDP-only series of a service port.
struct UdpSeries {
    sessions: Gauge,
    /// forwarded, replied, then dropped by no_endpoints, source_range,
    /// flow_limit, send_error, self_loop.
    datagrams: [Counter; 7],
    evicted: Counter,
}

/// The series of one endpoint of one service port.
pub(super) struct EndpointSeries {
    stats: Arc<EndpointStats>,
    addr: SocketAddr,
    /// Port labels plus `endpoint="IP:PORT"` in text form (histogram).
    pub(super) text: String,
    /// `direction="rx|tx"`.
    bytes: [Counter; 2],
    connect_errors: Counter,
    ready: Gauge,
    /// TCP ports only.
    ejected: Option<Gauge>,
}

// === impl State ===

impl State {
    /// Whether the handles are those of `ports`: the same counter objects in
    /// the same order (the usual case: the snapshot did not change).
    pub(super) fn matches(&self, ports: &[&ServicePort]) -> bool {
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
    pub(super) fn resolve(
        &mut self,
        recorder: &PrometheusRecorder,
        ports: &[&ServicePort],
    ) -> bool {
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
    pub(super) fn write(
        &mut self,
        recorder: &PrometheusRecorder,
        ports: &[&ServicePort],
        src: &Sources<'_>,
    ) {
        let now = tokio::time::Instant::now().into_std();
        for (s, p) in self.ports.iter().zip(ports) {
            let st = p.stats();
            s.failovers.absolute(read(&st.failovers));
            if let Some(t) = &s.tcp {
                t.accepted.absolute(read(&st.accepted));
                t.active.set(read(&st.active) as f64);
                let rejected = [
                    &st.rejected_no_endpoints,
                    &st.rejected_source_range,
                    &st.rejected_limit,
                    &st.rejected_local_resources,
                    &st.rejected_self_loop,
                ];
                for (c, v) in t.rejected.iter().zip(rejected) {
                    c.absolute(read(v));
                }
                for (c, cause) in t.closed.iter().zip(CloseCause::ALL) {
                    c.absolute(st.closed.get(cause));
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
                    &st.udp_dropped_self_loop,
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
                    let ejected =
                        e.health.ejection(now).is_some() && p.ejection_in_force(false, i, now);
                    g.set(f64::from(u8::from(ejected)));
                }
            }
        }

        let globals = self.globals.get_or_insert_with(|| Globals {
            reloads: ["success", "failure"]
                .map(|r| counter(recorder, "lb_config_reloads_total", &[], ("result", r))),
            state_file_errors: recorder
                .register_counter(&Key::from_name("lb_state_file_errors_total"), &META),
            last_reload: [
                "lb_config_last_reload_successful",
                "lb_config_last_reload_success_timestamp_seconds",
            ]
            .map(|name| recorder.register_gauge(&Key::from_name(name), &META)),
            build_info: recorder.register_gauge(
                &Key::from_parts(
                    "lb_build_info",
                    vec![
                        Label::new("version", env!("CARGO_PKG_VERSION")),
                        Label::new("revision", crate::BUILD_REVISION),
                    ],
                ),
                &META,
            ),
            dns: None,
            hosts: None,
        });
        globals.reloads[0].absolute(src.reloads.success.load(Ordering::Relaxed));
        globals.reloads[1].absolute(src.reloads.failure.load(Ordering::Relaxed));
        globals
            .state_file_errors
            .absolute(src.reloads.state_file_errors.load(Ordering::Relaxed));
        let failed = src.reloads.last_failed.load(Ordering::Relaxed);
        globals.last_reload[0].set(if failed { 0.0 } else { 1.0 });
        // Seconds since the epoch fit a float's 53 bits exactly.
        #[allow(clippy::cast_precision_loss)]
        let at = src
            .reloads
            .last_success_unix_seconds
            .load(Ordering::Relaxed) as f64;
        globals.last_reload[1].set(at);
        globals.build_info.set(1.0);
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
            Label::new("port", port_label(key)),
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
                ("dropped", Some("self_loop")),
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
                rejected: [
                    "no_endpoints",
                    "source_range",
                    "limit",
                    "local_resources",
                    "self_loop",
                ]
                .map(|r| {
                    counter(
                        recorder,
                        "lb_rejected_connections_total",
                        &labels,
                        ("reason", r),
                    )
                }),
                closed: CloseCause::ALL.map(|c| {
                    counter(
                        recorder,
                        "lb_connections_closed_total",
                        &labels,
                        ("cause", c.as_str()),
                    )
                }),
            }),
            udp,
            failovers: plain("lb_failovers_total"),
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
