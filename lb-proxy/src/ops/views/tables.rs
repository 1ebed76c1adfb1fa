//! The `kubectl get`-style tables `lb-proxy get` prints, rebuilt from the
//! admin API's JSON: kubectl's columns, its `<none>` and `<pending>` cells,
//! its tabwriter alignment and its `HumanDuration` ages (ports of
//! Kubernetes behaviour, so operators read them without learning a new
//! format).

use std::time::{Duration, SystemTime};

use super::connections::ConnectionList;
use super::describe::EVENT_SOURCE;
use super::endpoints::EndpointsList;
use super::pods::PodList;
use super::services::{ServiceList, ServiceView};
use super::time::parse_rfc3339;
use crate::control::events::{Event, EventList};

/// What kubectl prints for an empty cell.
const NONE: &str = "<none>";

/// How many endpoints the ENDPOINTS column lists before `+ N more...`, as
/// kubectl.
pub(super) const MAX_LISTED_ENDPOINTS: usize = 3;

/// A table before it is printed: kubectl's columns, and for each row its
/// namespace and bare name, so one builder serves `get` in a namespace,
/// `get -A` (a NAMESPACE column first) and several kinds at once (names
/// printed `service/web`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<TableRow>,
    /// The NAME column, prefixed with the kind when several kinds are
    /// printed; `None` for a table without one (events).
    name_column: Option<usize>,
}

/// One row of a [`Table`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableRow {
    namespace: String,
    cells: Vec<String>,
}

/// How `lb-proxy get` prints a [`Table`], from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions<'a> {
    /// `-A`: a NAMESPACE column first.
    pub namespace_column: bool,
    /// Several kinds asked (`get svc,ep`): names are printed `service/web`.
    pub kind_prefix: Option<&'a str>,
    /// Print the header line (`--no-headers` turns it off).
    pub headers: bool,
}

impl Default for TableOptions<'_> {
    fn default() -> Self {
        TableOptions {
            namespace_column: false,
            kind_prefix: None,
            headers: true,
        }
    }
}

impl Table {
    fn new(header: &[&str], name_column: Option<usize>) -> Table {
        Table {
            header: row(header),
            rows: Vec::new(),
            name_column,
        }
    }

    fn push(&mut self, namespace: &str, cells: Vec<String>) {
        self.rows.push(TableRow {
            namespace: namespace.to_string(),
            cells,
        });
    }

    /// Whether it has no row (kubectl then says "No resources found").
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as kubectl prints it with `options`, final newline
    /// included; empty when there is nothing to print.
    pub fn render(&self, options: &TableOptions) -> String {
        let mut rows = Vec::with_capacity(self.rows.len() + 1);
        if options.headers {
            let mut header = self.header.clone();
            if options.namespace_column {
                header.insert(0, "NAMESPACE".to_string());
            }
            rows.push(header);
        }
        for r in &self.rows {
            let mut cells = r.cells.clone();
            if let (Some(prefix), Some(c)) = (options.kind_prefix, self.name_column) {
                if let Some(name) = cells.get_mut(c) {
                    *name = format!("{prefix}/{name}");
                }
            }
            if options.namespace_column {
                cells.insert(0, r.namespace.clone());
            }
            rows.push(cells);
        }
        tabulate(&rows)
    }
}

/// `lb-proxy get services` as kubectl's `get svc`
/// (`NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE`); `wide` adds kubectl's
/// SELECTOR, then IP-POOL, the pool each LoadBalancer address came from
/// (kubectl has no such column; MetalLB users look it up in the Service's
/// events). `now` is a parameter so output is reproducible in tests.
pub fn services_table(list: &ServiceList, now: SystemTime, wide: bool) -> Table {
    let mut header = vec![
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    if wide {
        header.extend(["SELECTOR", "IP-POOL"]);
    }
    let mut table = Table::new(&header, Some(0));
    for s in &list.items {
        let mut cells = vec![
            s.name.clone(),
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
            cells.push(or_none(
                s.selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ));
            cells.push(or_none(s.ip_pool.clone()));
        }
        table.push(&s.namespace, cells);
    }
    table
}

/// `lb-proxy get endpoints` as kubectl's `get ep` (`NAME ENDPOINTS AGE`):
/// ready endpoints only, at most three listed.
pub fn endpoints_table(list: &EndpointsList, now: SystemTime) -> Table {
    let mut table = Table::new(&["NAME", "ENDPOINTS", "AGE"], Some(0));
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
        table.push(
            &item.namespace,
            vec![item.name.clone(), or_none(column), age(&item.created, now)],
        );
    }
    table
}

/// `lb-proxy get endpoints -o wide`: one row per endpoint with its state,
/// why it is out of rotation and for how long
/// (`NAME ENDPOINT NODE STATE REASON SINCE`). kubectl's `-o wide` adds no
/// column to endpoints; lb uses it for what an operator asks next.
pub fn endpoints_wide_table(list: &EndpointsList, now: SystemTime) -> Table {
    let mut table = Table::new(
        &["NAME", "ENDPOINT", "NODE", "STATE", "REASON", "SINCE"],
        Some(0),
    );
    for item in &list.items {
        for e in &item.endpoints {
            table.push(
                &item.namespace,
                vec![
                    item.name.clone(),
                    join_host_port(&e.ip, e.port),
                    or_none(e.node.clone()),
                    or_none(e.state.clone()),
                    or_none(e.reason.clone()),
                    age(&e.since, now),
                ],
            );
        }
    }
    table
}

/// `lb-proxy get pods` as kubectl's `get po`
/// (`NAME READY STATUS RESTARTS AGE`; `wide` adds `IP NODE NOMINATED NODE
/// READINESS GATES`). READY is `1/1` when lb sends the pod traffic: its
/// readiness probe passes (or it has none and is declared ready). lb
/// restarts nothing, so RESTARTS is 0.
pub fn pods_table(list: &PodList, now: SystemTime, wide: bool) -> Table {
    let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if wide {
        header.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    }
    let mut table = Table::new(&header, Some(0));
    for p in &list.items {
        let mut cells = vec![
            p.name.clone(),
            if p.ready { "1/1" } else { "0/1" }.to_string(),
            p.status.clone(),
            "0".to_string(),
            age(&p.created, now),
        ];
        if wide {
            cells.extend([
                or_none(p.ip.clone()),
                or_none(p.node.clone()),
                NONE.to_string(),
                NONE.to_string(),
            ]);
        }
        table.push(&p.namespace, cells);
    }
    table
}

/// `lb-proxy get connections`: one row per open connection
/// (`NAME CLIENT ENDPOINT REASON RX TX AGE`, NAME the service; `-o wide`
/// adds FRONTEND, PORT and STARTED). AGE comes from the proxy's clock
/// (`age_seconds`), so a CLI on another host with a skewed clock still
/// shows it right.
pub fn connections_table(list: &ConnectionList, wide: bool) -> Table {
    let mut header = vec!["NAME", "CLIENT", "ENDPOINT", "REASON", "RX", "TX", "AGE"];
    if wide {
        header.extend(["FRONTEND", "PORT", "STARTED"]);
    }
    let mut table = Table::new(&header, Some(0));
    for c in &list.items {
        let mut r = vec![
            c.service.clone(),
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
        table.push(&c.namespace, r);
    }
    table
}

/// `lb-proxy get events` as kubectl's `get events`
/// (`LAST SEEN TYPE REASON OBJECT MESSAGE`; `wide` adds kubectl's
/// `SUBOBJECT SOURCE` before MESSAGE and `FIRST SEEN COUNT NAME` after),
/// oldest first so the newest is at the bottom. An event about a node
/// counts as namespace `default`, where Kubernetes records node events. A
/// message of several lines (a reload's errors) shows its first line and
/// how many more there are (`-o json` has them all).
pub fn events_table(list: &EventList, now: SystemTime, wide: bool) -> Table {
    let mut items: Vec<&Event> = list.items.iter().collect();
    items.sort_by(|a, b| a.last_seen.cmp(&b.last_seen));
    let header: &[&str] = if wide {
        &[
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST SEEN",
            "COUNT",
            "NAME",
        ]
    } else {
        &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    };
    let mut table = Table::new(header, None);
    for e in items {
        let message = one_line(e.message.trim());
        let mut cells = vec![
            age(&e.last_seen, now),
            e.event_type.as_str().to_string(),
            e.reason.clone(),
            e.object.display(),
        ];
        if wide {
            cells.extend([String::new(), EVENT_SOURCE.to_string(), message]);
            cells.extend([age(&e.first_seen, now), e.count.to_string(), event_name(e)]);
        } else {
            cells.push(message);
        }
        table.push(event_namespace(e), cells);
    }
    table
}

/// The namespace an event is listed in: its object's, `default` for a
/// node's (Kubernetes records node events there).
pub fn event_namespace(e: &Event) -> &str {
    if e.object.namespace.is_empty() {
        "default"
    } else {
        &e.object.namespace
    }
}

/// An event's name as Kubernetes' recorder makes it: the object's name, a
/// dot, and the first time it happened in Unix nanoseconds, in hex
/// (`web.17a8c1f2d3e4b5a6`).
pub fn event_name(e: &Event) -> String {
    let nanos = parse_rfc3339(&e.first_seen)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}.{nanos:x}", e.object.name)
}

/// The first line of `message`, and how many more it has.
pub(super) fn one_line(message: &str) -> String {
    let mut lines = message.lines();
    let first = lines.next().unwrap_or_default().to_string();
    match lines.count() {
        0 => first,
        n => format!("{first} (and {n} more lines)"),
    }
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
