//! `[dns]` into [`DnsSettings`].

use std::net::{IpAddr, SocketAddr};

use super::fields::at_most;
use crate::config::DnsSettings;
use crate::error::{Errors, FieldError};
use crate::raw::{RawDns, MAX_DNS_UPSTREAMS};

/// The largest TTL RFC 2181 allows (2^31 - 1).
const MAX_TTL: i64 = i32::MAX as i64;

/// Validates `[dns]`. Errors are pushed; the returned value then holds
/// placeholders and is never served (the caller refuses the file).
pub(crate) fn dns(raw: &RawDns, errs: &mut Errors) -> DnsSettings {
    let unspecified = SocketAddr::from(([127, 0, 0, 1], 0));
    let listen = match raw.listen.as_deref() {
        None | Some("") => {
            errs.push(FieldError::required(
                "dns.listen",
                "the IP:PORT to answer on (e.g. 127.0.0.1:5353)",
            ));
            unspecified
        }
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                errs.push(FieldError::invalid(
                    "dns.listen",
                    text,
                    "must be IP:PORT (e.g. 127.0.0.1:5353)",
                ));
                unspecified
            }
        },
    };
    let ttl = match raw.ttl {
        None => DnsSettings::DEFAULT_TTL,
        Some(n) if (0..=MAX_TTL).contains(&n) => u32::try_from(n).unwrap_or(0),
        Some(n) => {
            errs.push(FieldError::invalid(
                "dns.ttl",
                n,
                format!("must be between 0 and {MAX_TTL}, inclusive"),
            ));
            DnsSettings::DEFAULT_TTL
        }
    };
    let mut listed = raw.upstreams.as_deref().unwrap_or_default();
    if !at_most("dns.upstreams", listed.len(), MAX_DNS_UPSTREAMS, errs) {
        listed = &[];
    }
    let upstreams = listed
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match upstream(text) {
            Some(a) => Some(a),
            None => {
                errs.push(FieldError::invalid(
                    format!("dns.upstreams[{i}]"),
                    text,
                    "must be IP or IP:PORT (e.g. 127.0.0.53 or [::1]:5353); port 53 when omitted",
                ));
                None
            }
        })
        .collect();
    DnsSettings {
        listen,
        ttl,
        upstreams,
    }
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`; a bare address gets port 53. Port 0 is
/// refused: nothing answers there.
pub(crate) fn upstream(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    let addr = match text.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, DnsSettings::DEFAULT_UPSTREAM_PORT),
        Err(_) => text.parse::<SocketAddr>().ok()?,
    };
    (addr.port() != 0).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_take_port_53_when_none_is_given() {
        assert_eq!(
            upstream("127.0.0.53"),
            Some("127.0.0.53:53".parse().unwrap())
        );
        assert_eq!(upstream("::1"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(upstream("[::1]:5353"), Some("[::1]:5353".parse().unwrap()));
        assert_eq!(upstream("127.0.0.1:0"), None);
        assert_eq!(upstream("dns.example"), None);
    }
}
