//! The Prometheus text format written by hand into a byte buffer: a
//! family's `# HELP` / `# TYPE` lines, escaped label values, integers and
//! addresses without `fmt` where a scrape writes millions of them, one
//! sample line, a histogram; and the parts not read from the table: the
//! `process_*` metrics from `/proc/self` and the sources' `lb_source_*`
//! counters.
//!
//! Everything written is UTF-8: static ASCII, label values copied from
//! `&str`, and digits.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use lb_config::source::SourceStats;
use lb_core::stats::HistogramReading;

/// One family's `# HELP` and `# TYPE` lines.
pub(super) fn header(out: &mut Vec<u8>, name: &str, kind: &str, help: &str) {
    put(
        out,
        &[
            "# HELP ",
            name,
            " ",
            help,
            "\n# TYPE ",
            name,
            " ",
            kind,
            "\n",
        ],
    );
}

/// Appends `parts` in order.
pub(super) fn put(out: &mut Vec<u8>, parts: &[&str]) {
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
}

/// Appends `value` escaped as a label value must be (backslash, double
/// quote and newline), copying it whole when it has none of them (every
/// Kubernetes name).
pub(super) fn escaped(out: &mut Vec<u8>, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
}

/// Appends `n` in decimal, as `Display` writes it.
pub(super) fn uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is below 10: the cast keeps it whole.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        digits[at] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `addr` as `Display` writes it (`10.0.0.1:80`, `[fd00::1]:80`);
/// IPv4 without `fmt`, which would cost more than the rest of the line.
pub(super) fn address(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                uint(out, u64::from(octet));
            }
        }
        IpAddr::V6(_) => {
            // The scope id and brackets are `SocketAddr`'s to write.
            let _ = write!(out, "{addr}");
            return;
        }
    }
    out.push(b':');
    uint(out, u64::from(addr.port()));
}

/// One sample: `name{labels,extra...} value`, where `labels` is label text
/// already written (`a="x",b="y"`) and each `extra` pair's value needs no
/// escaping (the contract's own words).
pub(super) fn sample(
    out: &mut Vec<u8>,
    name: &str,
    labels: &[u8],
    extra: &[(&str, &str)],
    value: u64,
) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'{');
    out.extend_from_slice(labels);
    let mut first = labels.is_empty();
    for (key, v) in extra {
        if !first {
            out.push(b',');
        }
        first = false;
        put(out, &[key, "=\"", v, "\""]);
    }
    out.extend_from_slice(b"} ");
    uint(out, value);
    out.push(b'\n');
}

/// A sample with no labels: `name value`.
pub(super) fn bare(out: &mut Vec<u8>, name: &str, value: u64) {
    put(out, &[name, " "]);
    uint(out, value);
    out.push(b'\n');
}

/// The bucket bounds of `lb_connect_duration_seconds` as `le` values,
/// written once per scrape (`Display` of a float is slow).
pub(super) fn bounds() -> Vec<String> {
    lb_core::stats::CONNECT_DURATION_BUCKETS
        .iter()
        .map(f64::to_string)
        .collect()
}

/// The samples of one histogram series: cumulative buckets, `+Inf`, sum and
/// count. `bounds` are [`bounds`], in the reading's order.
pub(super) fn histogram(
    out: &mut Vec<u8>,
    name: &str,
    labels: &[u8],
    bounds: &[String],
    h: &HistogramReading,
) {
    let mut line = |suffix: &str, le: Option<&str>, value: &dyn Fn(&mut Vec<u8>)| {
        put(out, &[name, suffix, "{"]);
        out.extend_from_slice(labels);
        if let Some(le) = le {
            put(out, &[",le=\"", le, "\""]);
        }
        out.extend_from_slice(b"} ");
        value(out);
        out.push(b'\n');
    };
    for (le, (_, n)) in bounds.iter().zip(&h.buckets) {
        line("_bucket", Some(le), &|out| uint(out, *n));
    }
    line("_bucket", Some("+Inf"), &|out| uint(out, h.count));
    line("_sum", None, &|out| {
        let _ = write!(out, "{}", h.sum);
    });
    line("_count", None, &|out| uint(out, h.count));
}

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, fixed at
/// 100 by the Linux ABI on every architecture lb-proxy builds for.
const USER_HZ: f64 = 100.0;

/// The standard `process_*` metrics (as the Prometheus client libraries name
/// them) from `/proc/self`; each is skipped where it cannot be read.
pub(super) fn process_metrics(out: &mut Vec<u8>) {
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
            bare(out, "process_resident_memory_bytes", kb * 1024);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        header(out, "process_open_fds", "gauge", "Open file descriptors.");
        // The directory handle itself is one of them.
        let open = dir.count().saturating_sub(1);
        bare(
            out,
            "process_open_fds",
            u64::try_from(open).unwrap_or(u64::MAX),
        );
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
            bare(out, "process_max_fds", max);
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
pub(super) fn source_stats(out: &mut Vec<u8>, sources: &[(&str, SourceStats)]) {
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
            let mut label = Vec::new();
            put(&mut label, &["source=\""]);
            escaped(&mut label, source);
            label.push(b'"');
            sample(out, name, &label, &[], value(stats));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(text(|o| escaped(o, "a\"b\\c\nd")), "a\\\"b\\\\c\\nd");
        assert_eq!(text(|o| escaped(o, "plain-name")), "plain-name");
    }

    #[test]
    fn integers_and_addresses_read_as_display_writes_them() {
        for n in [0, 7, 10, 99, 1_754_321_234, u64::MAX] {
            assert_eq!(text(|o| uint(o, n)), n.to_string());
        }
        for a in [
            "10.244.0.1:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[fd00::1]:53",
            "[::1]:80",
        ] {
            let addr: SocketAddr = a.parse().expect("address");
            assert_eq!(text(|o| address(o, addr)), addr.to_string());
        }
    }

    #[test]
    fn process_metrics_come_from_proc_self() {
        let out = text(process_metrics);
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
        let stats = SourceStats {
            stale: true,
            resyncs: 3,
            updates: 7,
        };
        assert_eq!(
            text(|o| source_stats(o, &[("etcd", stats)])),
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
        assert!(text(|o| source_stats(o, &[])).is_empty());
    }
}
