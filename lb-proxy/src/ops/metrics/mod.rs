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
//! Three parts are rendered by hand rather than by the exporter, appended
//! to its text: `lb_connect_duration_seconds`, the `process_*` metrics, and
//! the sources' `lb_source_*` counters ([`Sources::source_stats`], in the
//! exact text the etcd source wrote before). The histogram stays in fixed-bucket atomics
//! (`lb_core::stats::DurationHistogram`): the exporter's histogram takes a
//! clock reading and a push into a growing sample buffer per sample (drained
//! only by a render or upkeep; 57 ns against 15 ns), and its generation moves only on a sample, so with the idle
//! timeout a live endpoint that had no dial between two scrapes would lose its
//! histogram (and its counts) while without it a deleted endpoint's histogram
//! would stay forever. `process_cpu_seconds_total` is a fractional counter,
//! which the exporter's integer counters cannot hold. The `metrics_overhead`
//! bench measures what scraping and recording cost.
//!
//! Three files: this one owns [`Metrics`] and what a scrape renders;
//! `series` mirrors the snapshot's atomics into the exporter's handles;
//! `text` writes the hand-rendered parts (the histogram, `process_*`, the
//! sources' counters).

mod series;
mod text;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lb_config::source::SourceStats;
use lb_core::{ServicePort, Snapshot};
use metrics::{KeyName, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

use crate::control::ReloadCounters;
use lb_core::stats::DnsCounters;
use series::State;

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
            source_stats: &[],
        },
    )
}

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
        "lb_connections_closed_total",
        Kind::Counter,
        "Forwarded client connections that ended, by cause.",
    ),
    (
        "lb_failovers_total",
        Kind::Counter,
        "Client connections (TCP) and new flows (UDP) that reached an endpoint only after the dial to an earlier pick failed.",
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
        "lb_state_file_errors_total",
        Kind::Counter,
        "Saves of allocations to the state file that failed (allocations not durable).",
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
/// (the binary's App keeps one for its admin listener) so unchanged
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
        text::connect_durations(&mut out, &state.ports, &ports);
        if sources.process {
            text::process_metrics(&mut out);
        }
        text::source_stats(&mut out, sources.source_stats);
        out
    }
}

/// Escapes a label value (backslash, double quote, newline), as the text
/// format requires.
pub(super) fn escape(value: &str) -> String {
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
            zone: None,
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
            source_stats: &[],
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
}
