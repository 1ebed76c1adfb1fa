//! The parts of `/metrics` rendered here rather than by the exporter,
//! appended to its text: `lb_connect_duration_seconds` from the fixed-bucket
//! atomics, the `process_*` metrics from `/proc/self`, and the sources'
//! counters (`lb_source_*`).

use std::fmt::Write;

use lb_config::source::SourceStats;
use lb_core::stats::HistogramReading;
use lb_core::{Protocol, ServicePort};

use super::escape;
use super::series::PortSeries;

/// One family's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `lb_connect_duration_seconds` of every TCP endpoint, from the atomics,
/// with the label text built when the endpoint's series were resolved.
pub(super) fn connect_durations(out: &mut String, series: &[PortSeries], ports: &[&ServicePort]) {
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
pub(super) fn process_metrics(out: &mut String) {
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at
        // field 3; utime and stime are fields 14 and 15.
        if let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            if let Some(started) = crate::ops::views::process_start_unix_seconds() {
                header(
                    out,
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                );
                let _ = writeln!(out, "process_start_time_seconds {started}");
            }
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

/// One `lb_source_*` family: name, type, help, and its figure of a
/// source's counters.
type SourceFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SourceStats) -> u64,
);

/// `lb_source_stale`, `lb_source_resyncs_total` and
/// `lb_source_updates_total`, one sample per source under each family.
pub(super) fn source_stats(out: &mut String, sources: &[(&str, SourceStats)]) {
    if sources.is_empty() {
        return;
    }
    let families: [SourceFamily; 3] = [
        (
            "lb_source_stale",
            "gauge",
            "1 while a source cannot confirm its state is current.",
            |s| u64::from(s.stale),
        ),
        (
            "lb_source_resyncs_total",
            "counter",
            "Full re-reads of a source (start, disconnect, compaction).",
            |s| s.resyncs,
        ),
        (
            "lb_source_updates_total",
            "counter",
            "Change batches applied from a source.",
            |s| s.updates,
        ),
    ];
    for (name, kind, help, value) in families {
        header(out, name, kind, help);
        for (source, stats) in sources {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\"}} {}",
                escape(source),
                value(stats)
            );
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
            "process_start_time_seconds ",
        ] {
            assert!(out.contains(name), "{name} missing from:\n{out}");
        }
    }

    #[test]
    fn source_counters_read_as_the_etcd_source_wrote_them() {
        let mut out = String::new();
        let stats = SourceStats {
            stale: true,
            resyncs: 3,
            updates: 7,
        };
        source_stats(&mut out, &[("etcd", stats)]);
        assert_eq!(
            out,
            "# HELP lb_source_stale 1 while a source cannot confirm its state is current.\n\
             # TYPE lb_source_stale gauge\n\
             lb_source_stale{source=\"etcd\"} 1\n\
             # HELP lb_source_resyncs_total Full re-reads of a source (start, disconnect, compaction).\n\
             # TYPE lb_source_resyncs_total counter\n\
             lb_source_resyncs_total{source=\"etcd\"} 3\n\
             # HELP lb_source_updates_total Change batches applied from a source.\n\
             # TYPE lb_source_updates_total counter\n\
             lb_source_updates_total{source=\"etcd\"} 7\n"
        );
        let mut none = String::new();
        source_stats(&mut none, &[]);
        assert!(none.is_empty());
    }
}
