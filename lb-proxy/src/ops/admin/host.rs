//! The `Host` check of the admin API, against DNS rebinding.
//!
//! A web page at `evil.example` can have its name re-pointed at the admin
//! address (127.0.0.1, or a node address) after the browser loaded it; the
//! browser then lets the page read `/api/v1/...` as same-origin. What it
//! cannot change is the `Host` header: it stays `evil.example`. So the API
//! answers only requests whose host is an IP literal (no name was resolved,
//! no rebinding is possible), `localhost` (resolved by the machine itself,
//! never by a DNS server an attacker controls), or a name the operator
//! listed (`admin.allowed_hosts`).
//!
//! Any other host is answered `421 Misdirected Request` without running the
//! handler: RFC 9110 (15.5.20) defines 421 for a request this server is not
//! configured to answer for its target's authority, which is the case: the
//! client did nothing forbidden (403 would say it lacks a permission it
//! could get); it used a name this server does not serve.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The hosts the admin API answers for: IP literals and `localhost` always,
/// with or without a port, and the names listed here (compared without
/// regard to case, as DNS compares them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// IP literals, `localhost` and `names` (host names without a port, as
    /// `admin.allowed_hosts` holds them).
    pub fn new(names: impl IntoIterator<Item = impl Into<String>>) -> AllowedHosts {
        AllowedHosts {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether `host`, a `Host` header's value (`name`, `name:port`,
    /// `a.b.c.d[:port]` or `[v6][:port]`), is one the API answers for.
    pub fn admits(&self, host: &str) -> bool {
        let Some(name) = without_port(host) else {
            return false;
        };
        if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok();
        }
        name.parse::<Ipv4Addr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether `request` names a host the API answers for: its one `Host`
    /// header, and the authority of an absolute-form target when it has
    /// one. A request with no `Host` is admitted only before HTTP/1.1 (which
    /// made it mandatory; browsers always send it).
    fn admits_request(&self, request: &Request) -> bool {
        if let Some(authority) = request.uri().authority() {
            if !self.admits(authority.as_str()) {
                return false;
            }
        }
        let mut hosts = request.headers().get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(host), None) => host.to_str().is_ok_and(|h| self.admits(h)),
            (None, _) => request.version() < Version::HTTP_11,
            (Some(_), Some(_)) => false,
        }
    }
}

/// The host of a `Host` value without its port, brackets kept on an IPv6
/// literal; `None` when the port is not a port or an unbracketed colon
/// remains.
fn without_port(host: &str) -> Option<&str> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        match rest {
            "" => (name, None),
            _ => (name, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return None;
        }
    }
    (!name.is_empty()).then_some(name)
}

/// Middleware: runs the route only for a request [`AllowedHosts::admits`].
pub(crate) async fn check(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    if hosts.admits_request(&request) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    (
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "421 Misdirected Request: the admin API answers for IP addresses, localhost and admin.allowed_hosts, not for Host {host:?}\n"
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_and_localhost_pass_with_or_without_a_port() {
        let hosts = AllowedHosts::default();
        for host in [
            "127.0.0.1",
            "127.0.0.1:10249",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:10249",
            "[2001:db8::7]:1",
            "localhost",
            "LocalHost:10249",
        ] {
            assert!(hosts.admits(host), "{host}");
        }
    }

    #[test]
    fn names_pass_only_when_listed_and_malformed_hosts_never() {
        let hosts = AllowedHosts::new(["lb.node-1.example"]);
        assert!(hosts.admits("lb.node-1.example"));
        assert!(hosts.admits("LB.Node-1.example:10249"));
        for host in [
            "evil.example",
            "evil.example:10249",
            "lb.node-1.example.evil.example",
            "localhost.evil.example",
            "",
            ":10249",
            "::1",
            "[::1",
            "[::1]10249",
            "[::1]:",
            "127.0.0.1:",
            "127.0.0.1:port",
            "127.0.0.1:65536",
            "127.0.0.1:80:80",
            "[127.0.0.1]",
            "[fe80::1%25eth0]:1",
            "2130706433",
        ] {
            assert!(!hosts.admits(host), "{host:?}");
        }
    }
}
