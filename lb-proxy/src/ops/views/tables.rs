//! The `kubectl get`-style tables `lb-proxy get` prints, rebuilt from the
//! admin API's JSON: kubectl's columns, its `<none>` and `<pending>` cells,
//! its tabwriter alignment and its `HumanDuration` ages (ports of
//! Kubernetes behaviour, so operators read them without learning a new
//! format).

use std::time::{Duration, SystemTime};

use super::connections::ConnectionList;
use super::endpoints::EndpointsList;
use super::services::{ServiceList, ServiceView};
use super::time::parse_rfc3339;

/// What kubectl prints for an empty cell.
const NONE: &str = "<none>";

/// How many endpoints the ENDPOINTS column lists before `+ N more...`, as
/// kubectl.
pub(super) const MAX_LISTED_ENDPOINTS: usize = 3;

/// Renders `lb-proxy get services` like `kubectl get svc`
/// (`NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE`), so operators read it
/// without learning a new format. A service outside `default` is shown as
/// `namespace/name`. `now` is a parameter so output is reproducible in tests.
pub fn services_table(list: &ServiceList, now: SystemTime) -> String {
    services_rows(list, now, false)
}

/// Renders `lb-proxy get services -o wide`: the table above plus IP-POOL,
/// the pool each LoadBalancer address came from (kubectl has no such column;
/// MetalLB users look it up in the Service's events).
pub fn services_wide_table(list: &ServiceList, now: SystemTime) -> String {
    services_rows(list, now, true)
}

fn services_rows(list: &ServiceList, now: SystemTime, wide: bool) -> String {
    let mut header = vec![
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    if wide {
        header.push("IP-POOL");
    }
    let mut rows = vec![row(&header)];
    for s in &list.items {
        let mut cells = vec![
            display_name(&s.namespace, &s.name),
            s.service_type.clone(),
            or_none(s.cluster_ip.clone()),
            or_none(external_ip_column(s)),
            or_none(
                s.ports
                    .iter()
                    .map(|p| {
                        if p.node_port > 0 {
                            format!("{}:{}/{}", p.port, p.node_port, p.protocol)
                        } else {
                            format!("{}/{}", p.port, p.protocol)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            age(&s.created, now),
        ];
        if wide {
            cells.push(or_none(s.ip_pool.clone()));
        }
        rows.push(cells);
    }
    tabulate(&rows)
}

/// Renders `lb-proxy get endpoints` like `kubectl get ep`
/// (`NAME ENDPOINTS AGE`): ready endpoints only, at most three listed.
pub fn endpoints_table(list: &EndpointsList, now: SystemTime) -> String {
    let mut rows = vec![row(&["NAME", "ENDPOINTS", "AGE"])];
    for item in &list.items {
        let ready: Vec<String> = item
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| join_host_port(&e.ip, e.port))
            .collect();
        let column = if ready.len() > MAX_LISTED_ENDPOINTS {
            format!(
                "{} + {} more...",
                ready[..MAX_LISTED_ENDPOINTS].join(","),
                ready.len() - MAX_LISTED_ENDPOINTS
            )
        } else {
            ready.join(",")
        };
        rows.push(vec![
            display_name(&item.namespace, &item.name),
            or_none(column),
            age(&item.created, now),
        ]);
    }
    tabulate(&rows)
}

/// Renders `lb-proxy get endpoints -o wide`: one row per endpoint with its
/// state, why it is out of rotation and for how long
/// (`NAME ENDPOINT NODE STATE REASON SINCE`).
pub fn endpoints_wide_table(list: &EndpointsList, now: SystemTime) -> String {
    let mut rows = vec![row(&[
        "NAME", "ENDPOINT", "NODE", "STATE", "REASON", "SINCE",
    ])];
    for item in &list.items {
        for e in &item.endpoints {
            rows.push(vec![
                display_name(&item.namespace, &item.name),
                join_host_port(&e.ip, e.port),
                or_none(e.node.clone()),
                or_none(e.state.clone()),
                or_none(e.reason.clone()),
                age(&e.since, now),
            ]);
        }
    }
    tabulate(&rows)
}

/// Renders `lb-proxy get connections`: one row per open connection
/// (`NAME CLIENT ENDPOINT REASON RX TX AGE`; `-o wide` adds FRONTEND, PORT
/// and STARTED). AGE comes from the proxy's clock (`age_seconds`), so a CLI
/// on another host with a skewed clock still shows it right.
pub fn connections_table(list: &ConnectionList, wide: bool) -> String {
    let mut header = vec!["NAME", "CLIENT", "ENDPOINT", "REASON", "RX", "TX", "AGE"];
    if wide {
        header.extend(["FRONTEND", "PORT", "STARTED"]);
    }
    let mut rows = vec![row(&header)];
    for c in &list.items {
        let mut r = vec![
            display_name(&c.namespace, &c.service),
            c.client.clone(),
            c.endpoint.clone(),
            c.pick_reason.clone(),
            c.bytes_rx.to_string(),
            c.bytes_tx.to_string(),
            human_duration(Duration::from_secs(c.age_seconds)),
        ];
        if wide {
            r.push(c.frontend.clone());
            r.push(format!("{}/{}", c.port, c.protocol));
            r.push(c.started.clone());
        }
        rows.push(r);
    }
    tabulate(&rows)
}

/// kubectl's EXTERNAL-IP column (`getServiceExternalIP`): LoadBalancer
/// ingress then external IPs, `<pending>` for a LoadBalancer without either,
/// the target for ExternalName. Unlike kubectl, long LoadBalancer lists are not
/// cut at 16 characters: there is no `-o wide` here to see the rest.
fn external_ip_column(s: &ServiceView) -> String {
    match s.service_type.as_str() {
        "LoadBalancer" => {
            let mut ingress = s.load_balancer_ingress.clone();
            ingress.sort();
            ingress.dedup();
            ingress.extend(s.external_ips.iter().cloned());
            if ingress.is_empty() {
                "<pending>".to_string()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => s.external_name.clone(),
        _ => s.external_ips.join(","),
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        NONE.to_string()
    } else {
        s
    }
}

/// `name` in namespace `default`, else `namespace/name` (the contract's naming
/// of objects everywhere in the CLI).
fn display_name(namespace: &str, name: &str) -> String {
    if namespace == "default" || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

/// Go's `net.JoinHostPort`: brackets around IPv6 addresses.
pub(super) fn join_host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The AGE column from an RFC 3339 creation time; `<unknown>` when the proxy
/// did not say (kubectl prints the same for a zero timestamp).
fn age(created: &str, now: SystemTime) -> String {
    match parse_rfc3339(created) {
        Some(created) => translate_timestamp_since(created, now),
        None => "<unknown>".to_string(),
    }
}

/// kubectl's `translateTimestampSince`: a clock slightly behind is `0s`, more
/// than a second behind is `<invalid>`.
pub(super) fn translate_timestamp_since(created: SystemTime, now: SystemTime) -> String {
    match now.duration_since(created) {
        Ok(d) => human_duration(d),
        Err(e) if e.duration() < Duration::from_secs(2) => "0s".to_string(),
        Err(_) => "<invalid>".to_string(),
    }
}

/// kubectl's `duration.HumanDuration` (k8s.io/apimachinery): two or three
/// significant figures, so AGE reads the same here as in `kubectl get`.
/// `90s`, `5m30s`, `45m`, `3h10m`, `20h`, `3d4h`, `30d`, `2y45d`, `9y`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Aligns cells like kubectl's tabwriter (min width 6, padding 3, spaces): every
/// column but the last is padded to its widest cell plus three.
fn tabulate(rows: &[Vec<String>]) -> String {
    const MIN_WIDTH: usize = 6;
    const PADDING: usize = 3;
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count() + PADDING)
                .max()
                .unwrap_or(0)
                .max(MIN_WIDTH)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < r.len() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabulate_pads_every_column_but_the_last() {
        let out = tabulate(&[row(&["A", "BBBBBBB", "C"]), row(&["DD", "E", "F"])]);
        assert_eq!(out, "A     BBBBBBB   C\nDD    E         F\n");
    }
}
