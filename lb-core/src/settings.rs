//! Typed data-plane settings (`[proxy]` of the file), shared by the source that
//! parses them (lb-config) and the data plane that obeys them (lb-proxy).

use std::time::Duration;

/// How the data plane treats connections and flows. Defaults are the contract's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// One dial per entry, each to the next endpoint.
    pub connect_timeouts: Vec<Duration>,
    /// Close a connection with no traffic either way for this long; `None` = never.
    pub tcp_idle_timeout: Option<Duration>,
    /// After one side sends FIN, the other side has this long to finish.
    pub half_close_timeout: Duration,
    /// A UDP flow with no traffic for this long is forgotten.
    pub udp_idle_timeout: Duration,
    /// How long open connections may run after a drain starts (shutdown, or
    /// their endpoint left the table).
    pub drain_timeout: Duration,
    /// Open connections per service port; 0 = unlimited.
    pub max_connections: u32,
    /// Dial failures in a row that eject an endpoint; 0 = off.
    pub outlier_consecutive_failures: u32,
    /// First ejection period.
    pub outlier_base_ejection: Duration,
    /// UDP flows, all services together.
    pub udp_max_flows: u32,
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
        }
    }
}
