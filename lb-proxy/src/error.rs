//! [`Error`]: what the lb-proxy library reports to its caller, as values a
//! caller can match, with their sources kept.
//!
//! Per-connection failures are not errors of the proxy as a whole: they are
//! logged at `debug` and counted. What reaches this type is what an operator
//! or an embedder needs to act on: a config that is invalid, a listener that
//! cannot be bound, a part the build lacks.

use std::net::SocketAddr;

use lb_config::ConfigErrors;

pub use crate::dataplane::BindError;

/// What can go wrong in the lb-proxy library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config is invalid; one error per line, as `lb-proxy check`
    /// prints them.
    #[error("{0}")]
    Config(#[source] ConfigErrors),
    /// A service listener could not be bound (address in use by a socket
    /// without `SO_REUSEPORT`, address not local, ...). The data plane keeps
    /// it in `bind_errors()` and retries.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The admin listener could not be bound (it never shares its port, so a
    /// clash is an error rather than a silent second listener).
    #[error("admin listener {addr}: {source}")]
    AdminBind {
        /// The configured address.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The App's ops runtime (the thread its admin API, DNS responder and
    /// followers run on, apart from the data plane's) could not start.
    #[error("the ops runtime (admin API, DNS): {0}")]
    OpsRuntime(#[source] std::io::Error),
    /// The DNS responder could not start (its port is taken, or the zone is
    /// not a valid name).
    #[cfg(feature = "dns")]
    #[error(transparent)]
    Dns(#[from] crate::ops::dns::DnsError),
    /// `vip_mode = "interface"` could not take hold of its interface.
    #[cfg(feature = "vip")]
    #[error(transparent)]
    Vip(#[from] crate::control::vip::VipError),
    /// The file (or the command line) asks for a part this build of
    /// lb-proxy was compiled without.
    #[error("{what} needs lb-proxy's `{feature}` feature, which this build does not have")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// The cargo feature that brings it.
        feature: &'static str,
    },
}

/// Results of the lb-proxy library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
