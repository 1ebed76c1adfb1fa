//! Typed data-plane settings (`[proxy]` of the file), shared by the source that
//! parses them (lb-config) and the data plane that obeys them (lb-proxy).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How the data plane treats connections and flows. Defaults are the contract's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// One dial per entry, each to the next endpoint.
    pub connect_timeouts: Vec<Duration>,
    /// Close a connection with no traffic either way for this long; `None` = never.
    pub tcp_idle_timeout: Option<Duration>,
    /// After one side sends FIN, the direction still open may go this long
    /// without moving a byte before both legs are reset: an inactivity
    /// timer (HAProxy's `timeout client-fin`/`server-fin`), so a download
    /// after a half-closed request runs as long as bytes keep coming.
    pub half_close_timeout: Duration,
    /// A UDP flow with no traffic for this long is forgotten.
    pub udp_idle_timeout: Duration,
    /// How long open connections may run after a drain starts (shutdown, or
    /// their endpoint left the table); those still open then are reset.
    pub drain_timeout: Duration,
    /// Open connections per service port; 0 = unlimited.
    pub max_connections: u32,
    /// Dial failures in a row that eject an endpoint; 0 = off.
    pub outlier_consecutive_failures: u32,
    /// First ejection period.
    pub outlier_base_ejection: Duration,
    /// UDP flows, all services together.
    pub udp_max_flows: u32,
    /// How TCP payload moves between client and endpoint; a change applies to
    /// connections accepted afterwards.
    pub forward_engine: ForwardEngine,
    /// How TCP frontends accept and where connections run; fixed when the
    /// data plane starts.
    pub accept_mode: AcceptMode,
    /// Worker threads of [`AcceptMode::PerCore`]; 0 = one per CPU the process
    /// may run on. Fixed when the data plane starts.
    pub workers: u32,
    /// `[log] access`: one log line per TCP connection and UDP flow when it
    /// ends (target `lb_proxy::access`). Off by default, as in nginx stream
    /// and HAProxy: a busy proxy would write a line per connection. Read
    /// once per new connection or flow, so a reload turns it on or off for
    /// those from then on.
    pub access_log: bool,
    /// `[proxy] proxy_protocol_trusted_cidrs`: the sources allowed to send
    /// a PROXY header to a service with `accept_proxy_protocol` (the load
    /// balancers in front of lb); a connection from anywhere else to such a
    /// service is reset. Empty (the default) trusts no one.
    pub proxy_protocol_trusted_cidrs: Vec<ipnet::IpNet>,
    /// `[proxy] source_address`: where endpoints are dialed from for
    /// services that do not say (`proxy`, the default, or `client`).
    pub source_address: crate::model::SourceAddress,
}

impl ProxySettings {
    /// Whether `source` may send a PROXY header
    /// (`proxy_protocol_trusted_cidrs`); a v4 client on a dual-stack socket
    /// arrives as `::ffff:a.b.c.d` and is matched as IPv4.
    pub fn trusts_proxy_header_from(&self, source: std::net::IpAddr) -> bool {
        let source = source.to_canonical();
        self.proxy_protocol_trusted_cidrs
            .iter()
            .any(|net| net.contains(&source))
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            connect_timeouts: [250, 500, 1000, 2000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            tcp_idle_timeout: Some(Duration::from_secs(3600)),
            half_close_timeout: Duration::from_secs(60),
            udp_idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_connections: 0,
            outlier_consecutive_failures: 5,
            outlier_base_ejection: Duration::from_secs(10),
            udp_max_flows: 16_384,
            forward_engine: ForwardEngine::default(),
            accept_mode: AcceptMode::default(),
            workers: 0,
            access_log: false,
            proxy_protocol_trusted_cidrs: Vec::new(),
            source_address: crate::model::SourceAddress::Proxy,
        }
    }
}

/// A setting's text that names none of its values; says which ones exist, so
/// the same message serves a config file, a command line and an environment
/// variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {setting} {value:?}: expected one of {}", .valid.join(", "))]
pub struct UnknownValue {
    /// The setting (`forward engine`, `accept mode`).
    pub setting: &'static str,
    /// What was given.
    pub value: String,
    /// Every valid value.
    pub valid: &'static [&'static str],
}

/// Defines a settings enum whose values are lower-case names: `as_str`,
/// `Display`, `FromStr` (trimmed, case-insensitive) and the list of names.
macro_rules! named_values {
    ($ty:ident, $setting:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value's name, in the order the contract lists them.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The name as written in the config file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let s = s.trim();
                $(
                    if s.eq_ignore_ascii_case($name) {
                        return Ok($ty::$variant);
                    }
                )+
                Err(UnknownValue {
                    setting: $setting,
                    value: s.to_string(),
                    valid: $ty::NAMES,
                })
            }
        }
    };
}

/// How bytes move between the two legs of a proxied TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ForwardEngine {
    /// `splice(2)` for bulk and a plain read and write for small messages
    /// (HAProxy's `splice-auto`); the copy loop where splice is unavailable.
    #[default]
    Auto,
    /// `splice(2)` socket → pipe → socket (Linux): the payload never enters
    /// user space; the copy loop where splice is unavailable or refused.
    Splice,
    /// A user-space copy loop, one buffer per direction. Works everywhere.
    Copy,
}

named_values!(ForwardEngine, "forward engine", {
    Auto => "auto",
    Splice => "splice",
    Copy => "copy",
});

/// How TCP frontends accept connections and where their tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AcceptMode {
    /// One socket and one accept loop per frontend, on the caller's runtime;
    /// connection tasks run on any of its workers.
    #[default]
    Single,
    /// One `SO_REUSEPORT` socket and accept loop per worker of the caller's
    /// runtime; connection tasks still run on any worker.
    Reuseport,
    /// One current-thread runtime per worker thread of the data plane's own
    /// ([`ProxySettings::workers`]), each with its own `SO_REUSEPORT` socket
    /// per frontend: a connection stays on the thread that accepted it.
    PerCore,
}

named_values!(AcceptMode, "accept mode", {
    Single => "single",
    Reuseport => "reuseport",
    PerCore => "percore",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_and_accept_modes_parse_by_name_and_print_back() {
        for name in ForwardEngine::NAMES {
            let engine: ForwardEngine = name.parse().unwrap();
            assert_eq!(engine.as_str(), *name);
        }
        for name in AcceptMode::NAMES {
            let mode: AcceptMode = name.parse().unwrap();
            assert_eq!(mode.to_string(), *name);
        }
        assert_eq!(" Splice ".parse(), Ok(ForwardEngine::Splice));
        assert_eq!("PERCORE".parse(), Ok(AcceptMode::PerCore));
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_valid_ones() {
        let e = "sendfile".parse::<ForwardEngine>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown forward engine \"sendfile\": expected one of auto, splice, copy"
        );
        let e = "threads".parse::<AcceptMode>().unwrap_err();
        assert_eq!(e.valid, ["single", "reuseport", "percore"]);
    }

    #[test]
    fn defaults_are_the_contracts() {
        let s = ProxySettings::default();
        assert_eq!(s.forward_engine, ForwardEngine::Auto);
        assert_eq!(s.accept_mode, AcceptMode::Single);
        assert_eq!(s.workers, 0);
    }
}
