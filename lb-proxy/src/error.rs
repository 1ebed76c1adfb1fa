//! The error type of the lb-proxy library.
//!
//! Per-connection failures are not errors of the data plane as a whole: they are
//! logged at `debug` and counted. What reaches this type is what an operator or
//! an embedder needs to see, such as a frontend that could not be bound.

use std::io;

/// What can go wrong in the lb-proxy library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A service listener could not be bound (address in use by a socket
    /// without `SO_REUSEPORT`, address not local, ...). The data plane records
    /// it in `bind_errors()` and retries.
    #[error(transparent)]
    Bind(#[from] crate::dataplane::BindError),
    /// Every dial of a connection failed or timed out; the client was reset.
    #[error("no endpoint of {service} answered after {attempts} dial(s); last error: {source}")]
    Dial {
        /// The service port (`namespace/name:port/TCP`).
        service: String,
        /// How many dials were made.
        attempts: usize,
        /// The last dial's error.
        #[source]
        source: io::Error,
    },
}

/// Results of the lb-proxy library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
