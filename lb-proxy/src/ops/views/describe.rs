//! `lb-proxy describe service`, printed from the admin API's views as
//! kubectl prints a Service and its events (`describeService` and
//! `DescribeEvents` in kubectl's pkg/describe/describe.go).

use std::time::SystemTime;

use super::conditions::Condition;
use super::endpoints::EndpointsView;
use super::services::ServiceView;
use super::tables::{join_host_port, one_line, translate_timestamp_since, MAX_LISTED_ENDPOINTS};
use super::time::parse_rfc3339;
use crate::control::events::Event;

/// Who reports the events, kubectl's `From` column (`source.component`).
pub const EVENT_SOURCE: &str = "lb-proxy";

/// `lb-proxy describe service`: `service` laid out as `kubectl describe
/// service` lays out a Service (Name, Namespace, Labels, Annotations,
/// Selector, Type, IP Families, IP, IPs, External IPs, External Name,
/// LoadBalancer Ingress, then Port, TargetPort, NodePort and Endpoints for
/// each port, Session Affinity, External Traffic Policy, Internal Traffic
/// Policy, HealthCheck NodePort, LoadBalancer Source Ranges), then its
/// conditions (as kubectl shows a Deployment's, with the message) and its
/// `events` (`None`: not known, as with `--config`; the section is left
/// out). `endpoints` are the service's, ready ones listed per port.
pub fn describe_service(
    service: &ServiceView,
    endpoints: Option<&EndpointsView>,
    events: Option<&[&Event]>,
    now: SystemTime,
) -> String {
    let mut top: Vec<String> = Vec::new();
    let mut line = |s: String| top.push(s);
    line(format!("Name:\t{}", service.name));
    line(format!("Namespace:\t{}", service.namespace));
    // kubectl's printLabelsMultiline: one label a line, the first beside
    // the heading. lb's services carry no annotations.
    let mut labels = service.labels.iter().map(|(k, v)| format!("{k}={v}"));
    line(format!(
        "Labels:\t{}",
        labels.next().unwrap_or_else(|| "<none>".into())
    ));
    for more in labels {
        line(format!("\t{more}"));
    }
    line("Annotations:\t<none>".into());
    line(format!("Selector:\t{}", format_labels(service)));
    line(format!("Type:\t{}", service.service_type));
    let family = match service.cluster_ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => "IPv4",
        Ok(std::net::IpAddr::V6(_)) => "IPv6",
        Err(_) => "<none>",
    };
    line(format!("IP Families:\t{family}"));
    line(format!("IP:\t{}", service.cluster_ip));
    line(format!(
        "IPs:\t{}",
        if service.cluster_ip.is_empty() {
            "<none>"
        } else {
            &service.cluster_ip
        }
    ));
    if !service.external_ips.is_empty() {
        line(format!("External IPs:\t{}", service.external_ips.join(",")));
    }
    if !service.external_name.is_empty() {
        line(format!("External Name:\t{}", service.external_name));
    }
    if !service.load_balancer_ingress.is_empty() {
        line(format!(
            "LoadBalancer Ingress:\t{}",
            service.load_balancer_ingress.join(", ")
        ));
    }
    for p in &service.ports {
        let name = if p.name.is_empty() {
            "<unset>"
        } else {
            &p.name
        };
        line(format!("Port:\t{name}\t{}/{}", p.port, p.protocol));
        line(format!("TargetPort:\t{}/{}", p.target_port, p.protocol));
        if p.node_port != 0 {
            line(format!("NodePort:\t{name}\t{}/{}", p.node_port, p.protocol));
        }
        let ready: Vec<String> = endpoints
            .map(|e| {
                e.endpoints
                    .iter()
                    .filter(|e| e.ready && e.port_name == p.name && e.protocol == p.protocol)
                    .map(|e| join_host_port(&e.ip, e.port))
                    .collect()
            })
            .unwrap_or_default();
        line(format!("Endpoints:\t{}", format_endpoints(&ready)));
    }
    line(format!("Session Affinity:\t{}", service.session_affinity));
    if !service.external_traffic_policy.is_empty()
        && matches!(service.service_type.as_str(), "NodePort" | "LoadBalancer")
    {
        line(format!(
            "External Traffic Policy:\t{}",
            service.external_traffic_policy
        ));
    }
    if !service.internal_traffic_policy.is_empty() && service.service_type != "ExternalName" {
        line(format!(
            "Internal Traffic Policy:\t{}",
            service.internal_traffic_policy
        ));
    }
    if service.health_check_node_port != 0 {
        line(format!(
            "HealthCheck NodePort:\t{}",
            service.health_check_node_port
        ));
    }
    if !service.load_balancer_source_ranges.is_empty() {
        line(format!(
            "LoadBalancer Source Ranges:\t{}",
            service.load_balancer_source_ranges.join(",")
        ));
    }
    // `Events:  <none>` aligns with the lines above (one tabwriter block in
    // kubectl); the conditions come before it.
    let no_events = matches!(events, Some([]));
    if no_events {
        top.push("Events:\t<none>".into());
    }
    let mut out = tabwrite(&top);
    let events_none = if no_events {
        let at = out.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
        out.split_off(at)
    } else {
        String::new()
    };
    out.push_str(&conditions_block(&service.status.conditions));
    out.push_str(&events_none);
    if let Some(events) = events.filter(|e| !e.is_empty()) {
        out.push_str(&events_block(events, now));
    }
    out
}

/// `labels.FormatLabels`: `k=v,k=v` in key order, `<none>` when empty.
fn format_labels(service: &ServiceView) -> String {
    if service.selector.is_empty() {
        return "<none>".into();
    }
    service
        .selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// kubectl's Endpoints line: at most three, then `+ N more...`; `<none>`.
fn format_endpoints(ready: &[String]) -> String {
    if ready.is_empty() {
        return "<none>".into();
    }
    if ready.len() > MAX_LISTED_ENDPOINTS {
        return format!(
            "{} + {} more...",
            ready[..MAX_LISTED_ENDPOINTS].join(","),
            ready.len() - MAX_LISTED_ENDPOINTS
        );
    }
    ready.join(",")
}

/// `Conditions:` as kubectl prints a Deployment's (Type, Status, Reason),
/// with the message after them: it says why a condition is False.
fn conditions_block(conditions: &[Condition]) -> String {
    if conditions.is_empty() {
        return String::new();
    }
    let mut lines = vec![
        "  Type\tStatus\tReason\tMessage".to_string(),
        "  ----\t------\t------\t-------".to_string(),
    ];
    for c in conditions {
        lines.push(format!(
            "  {} \t{}\t{}\t{}",
            c.condition_type,
            c.status,
            c.reason,
            one_line(&c.message)
        ));
    }
    format!("Conditions:\n{}", tabwrite(&lines))
}

/// kubectl's `DescribeEvents`: oldest first; Age is when it first happened,
/// or `LAST (xCOUNT over FIRST)` for a repeated event.
fn events_block(events: &[&Event], now: SystemTime) -> String {
    let mut events = events.to_vec();
    events.sort_by(|a, b| a.last_seen.cmp(&b.last_seen));
    let mut lines = vec![
        "  Type\tReason\tAge\tFrom\tMessage".to_string(),
        "  ----\t------\t----\t----\t-------".to_string(),
    ];
    for e in events {
        let first = since(&e.first_seen, now);
        let interval = if e.count > 1 {
            format!("{} (x{} over {first})", since(&e.last_seen, now), e.count)
        } else {
            first
        };
        lines.push(format!(
            "  {}\t{}\t{interval}\t{EVENT_SOURCE}\t{}",
            e.event_type.as_str(),
            e.reason,
            one_line(e.message.trim())
        ));
    }
    format!("Events:\n{}", tabwrite(&lines))
}

fn since(time: &str, now: SystemTime) -> String {
    match parse_rfc3339(time) {
        Some(t) => translate_timestamp_since(t, now),
        None => "<unknown>".into(),
    }
}

/// kubectl's `tabbedString` writer (Go's tabwriter: padding 2, spaces).
fn tabwrite(lines: &[String]) -> String {
    tabwrite_with(lines, 2)
}

/// Go's `text/tabwriter` with min width 0 and `padding`: a tab ends a cell,
/// and a column's cells are padded to the widest of the run of consecutive
/// lines that have that column (the last cell of a line is not aligned).
fn tabwrite_with(lines: &[String], padding: usize) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    // widths[r][c]: the width cell c of row r is padded to.
    let mut widths: Vec<Vec<usize>> = rows.iter().map(|r| vec![0; r.len()]).collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    for c in 0..columns {
        let mut r = 0;
        while r < rows.len() {
            // A run: consecutive rows where cell c is followed by a tab.
            if rows[r].len() <= c + 1 {
                r += 1;
                continue;
            }
            let start = r;
            while r < rows.len() && rows[r].len() > c + 1 {
                r += 1;
            }
            let width = rows[start..r]
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
                + padding;
            for w in &mut widths[start..r] {
                w[c] = width;
            }
        }
    }
    let mut out = String::new();
    for (row, widths) in rows.iter().zip(&widths) {
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c + 1 < row.len() {
                out.push_str(&" ".repeat(widths[c].saturating_sub(cell.chars().count())));
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
    fn columns_align_within_runs_of_lines_that_have_them_as_go_tabwriter_does() {
        let lines: Vec<String> = ["Name:\tweb", "Port:\thttp\t80/TCP", "TargetPort:\t8080/TCP"]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            tabwrite(&lines),
            "Name:        web\nPort:        http  80/TCP\nTargetPort:  8080/TCP\n"
        );
    }
}
