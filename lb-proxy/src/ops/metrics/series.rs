//! The series read from the table: every family whose samples come from the
//! service ports' and endpoints' atomics, in the order they are written,
//! and what each writes for one service port.
//!
//! A family is written whole before the next starts (the text format wants
//! a family's samples together), so a scrape walks the table once per
//! family; a walk only follows the ports' `Arc`s and reads relaxed atomics.

use std::time::Instant;

use lb_core::stats::{read, CloseCause};
use lb_core::{Protocol, ServicePort};

use super::text::{address, escaped, histogram, put, sample};

/// One family of the table: its name, type and help, which ports have
/// samples in it, and the samples of one port.
pub(super) struct Family {
    pub(super) name: &'static str,
    pub(super) kind: &'static str,
    pub(super) help: &'static str,
    /// Whether `port` has at least one sample in the family (the family's
    /// header is written before its first sample, so a family with no
    /// sample does not show).
    pub(super) has: fn(&ServicePort) -> bool,
    /// Writes the samples of `port`.
    pub(super) write: fn(&mut Vec<u8>, &ServicePort, &mut Labels, &Scrape),
}

/// What every port's samples of one scrape share.
pub(super) struct Scrape {
    /// The moment ejections are judged at.
    pub(super) now: Instant,
    /// `le` values of the histogram's buckets.
    pub(super) bounds: Vec<String>,
}

/// The label text of the port being written (`namespace`, `service`,
/// `port`, `protocol`) and, after it, of one of its endpoints: written
/// once per port and endpoint per family, then copied into every sample.
#[derive(Default)]
pub(super) struct Labels {
    text: Vec<u8>,
    port_len: usize,
}

impl Labels {
    /// Starts over with `port`'s labels.
    pub(super) fn port(&mut self, port: &ServicePort) -> &[u8] {
        let key = port.key();
        self.text.clear();
        put(&mut self.text, &["namespace=\""]);
        escaped(&mut self.text, &key.service.namespace);
        put(&mut self.text, &["\",service=\""]);
        escaped(&mut self.text, &key.service.name);
        put(&mut self.text, &["\",port=\""]);
        if key.port_name.is_empty() {
            super::text::uint(&mut self.text, u64::from(key.port));
        } else {
            escaped(&mut self.text, &key.port_name);
        }
        put(
            &mut self.text,
            &["\",protocol=\"", key.protocol.as_str(), "\""],
        );
        self.port_len = self.text.len();
        &self.text
    }

    /// The port's labels followed by `endpoint="ADDR"`.
    fn endpoint(&mut self, addr: std::net::SocketAddr) -> &[u8] {
        self.text.truncate(self.port_len);
        put(&mut self.text, &[",endpoint=\""]);
        address(&mut self.text, addr);
        self.text.push(b'"');
        &self.text
    }

    /// The port's labels alone.
    fn of_port(&self) -> &[u8] {
        &self.text[..self.port_len]
    }
}

fn tcp(p: &ServicePort) -> bool {
    p.key().protocol == Protocol::Tcp
}

fn udp(p: &ServicePort) -> bool {
    p.key().protocol == Protocol::Udp
}

fn any(_: &ServicePort) -> bool {
    true
}

fn endpoints(p: &ServicePort) -> bool {
    !p.endpoints().is_empty()
}

fn tcp_endpoints(p: &ServicePort) -> bool {
    tcp(p) && endpoints(p)
}

/// Writes one sample per endpoint of `p`: `value` of it, with `extra`.
fn per_endpoint(
    out: &mut Vec<u8>,
    p: &ServicePort,
    labels: &mut Labels,
    name: &str,
    extra: &[(&str, &str)],
    value: impl Fn(usize, &lb_core::Endpoint) -> u64,
) {
    for (i, e) in p.endpoints().iter().enumerate() {
        sample(out, name, labels.endpoint(e.addr), extra, value(i, e));
    }
}

/// The table's families, in the order a scrape writes them. A UDP port
/// has no connections to count, and its drops (a source range's too) are
/// `lb_udp_datagrams_total`, so it shows no connection series that would
/// always read 0 or count datagrams twice.
pub(super) const FAMILIES: &[Family] = &[
    Family {
        name: "lb_connections_total",
        kind: "counter",
        help: "Connections accepted from clients.",
        has: tcp,
        write: |out, p, l, _| {
            sample(out, "lb_connections_total", l.of_port(), &[], read(&p.stats().accepted));
        },
    },
    Family {
        name: "lb_active_connections",
        kind: "gauge",
        help: "Client connections open now.",
        has: tcp,
        write: |out, p, l, _| {
            sample(out, "lb_active_connections", l.of_port(), &[], read(&p.stats().active));
        },
    },
    Family {
        name: "lb_rejected_connections_total",
        kind: "counter",
        help: "Client connections refused before reaching an endpoint.",
        has: tcp,
        write: |out, p, l, _| {
            let st = p.stats();
            for (reason, v) in [
                ("no_endpoints", &st.rejected_no_endpoints),
                ("source_range", &st.rejected_source_range),
                ("limit", &st.rejected_limit),
                ("local_resources", &st.rejected_local_resources),
                ("self_loop", &st.rejected_self_loop),
                ("proxy_protocol", &st.rejected_proxy_protocol),
            ] {
                sample(
                    out,
                    "lb_rejected_connections_total",
                    l.of_port(),
                    &[("reason", reason)],
                    read(v),
                );
            }
        },
    },
    Family {
        name: "lb_connections_closed_total",
        kind: "counter",
        help: "Forwarded client connections that ended, by cause.",
        has: tcp,
        write: |out, p, l, _| {
            for cause in CloseCause::ALL {
                sample(
                    out,
                    "lb_connections_closed_total",
                    l.of_port(),
                    &[("cause", cause.as_str())],
                    p.stats().closed.get(cause),
                );
            }
        },
    },
    Family {
        name: "lb_failovers_total",
        kind: "counter",
        help: "Client connections (TCP) and new flows (UDP) that reached an endpoint only after the dial to an earlier pick failed.",
        has: any,
        write: |out, p, l, _| {
            sample(out, "lb_failovers_total", l.of_port(), &[], read(&p.stats().failovers));
        },
    },
    Family {
        name: "lb_bytes_total",
        kind: "counter",
        help: "Bytes proxied (rx: from clients, tx: to clients).",
        has: endpoints,
        write: |out, p, l, _| {
            for e in p.endpoints() {
                let labels = l.endpoint(e.addr);
                sample(out, "lb_bytes_total", labels, &[("direction", "rx")], read(&e.stats.bytes_rx));
                sample(out, "lb_bytes_total", labels, &[("direction", "tx")], read(&e.stats.bytes_tx));
            }
        },
    },
    Family {
        name: "lb_connect_errors_total",
        kind: "counter",
        help: "Dials to endpoints that failed or timed out.",
        has: endpoints,
        write: |out, p, l, _| {
            per_endpoint(out, p, l, "lb_connect_errors_total", &[], |_, e| {
                read(&e.stats.connect_errors)
            });
        },
    },
    Family {
        name: "lb_udp_sessions",
        kind: "gauge",
        help: "UDP flows open now.",
        has: udp,
        write: |out, p, l, _| {
            sample(out, "lb_udp_sessions", l.of_port(), &[], read(&p.stats().udp_sessions));
        },
    },
    Family {
        name: "lb_udp_datagrams_total",
        kind: "counter",
        help: "UDP datagrams: forwarded to endpoints, replied to clients, or dropped (by reason).",
        has: udp,
        write: |out, p, l, _| {
            let st = p.stats();
            let name = "lb_udp_datagrams_total";
            sample(out, name, l.of_port(), &[("result", "forwarded")], read(&st.udp_forwarded));
            sample(out, name, l.of_port(), &[("result", "replied")], read(&st.udp_replied));
            for (reason, v) in [
                ("no_endpoints", &st.udp_dropped_no_endpoints),
                ("source_range", &st.rejected_source_range),
                ("flow_limit", &st.udp_dropped_flow_limit),
                ("send_error", &st.udp_dropped_send_error),
                ("self_loop", &st.udp_dropped_self_loop),
            ] {
                sample(
                    out,
                    name,
                    l.of_port(),
                    &[("result", "dropped"), ("reason", reason)],
                    read(v),
                );
            }
        },
    },
    Family {
        name: "lb_udp_flows_evicted_total",
        kind: "counter",
        help: "UDP flows evicted (idle longest first) to stay within udp_max_flows.",
        has: udp,
        write: |out, p, l, _| {
            sample(out, "lb_udp_flows_evicted_total", l.of_port(), &[], read(&p.stats().udp_evicted));
        },
    },
    Family {
        name: "lb_endpoint_ready",
        kind: "gauge",
        help: "1 when the endpoint is ready (EndpointSlice conditions).",
        has: endpoints,
        write: |out, p, l, _| {
            per_endpoint(out, p, l, "lb_endpoint_ready", &[], |_, e| u64::from(e.ready));
        },
    },
    Family {
        name: "lb_endpoint_ejected",
        kind: "gauge",
        help: "1 while outlier ejection keeps the endpoint out of new connections.",
        has: tcp_endpoints,
        write: |out, p, l, s| {
            per_endpoint(out, p, l, "lb_endpoint_ejected", &[], |i, e| {
                // One relaxed load each while the endpoint is not ejected.
                let ejected = e.health.ejection(s.now).is_some()
                    && p.ejection_in_force(false, i, s.now);
                u64::from(ejected)
            });
        },
    },
    Family {
        name: "lb_connect_duration_seconds",
        kind: "histogram",
        help: "How long successful dials to the port's endpoints took.",
        has: tcp_endpoints,
        write: |out, p, l, s| {
            let reading = p.stats().connect_duration.reading();
            histogram(
                out,
                "lb_connect_duration_seconds",
                l.of_port(),
                &s.bounds,
                &reading,
            );
        },
    },
];
