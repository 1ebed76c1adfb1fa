//! The support library of lb-proxy's integration tests, one module per
//! concern (as linkerd's `app/integration`): every test file uses these
//! helpers and defines none another file needs.
//!
//! - [`wait`]: bounded waits on an event ([`eventually`], [`WAIT`]);
//! - [`addr`]: loopback addresses, fresh ones per test, free ports;
//! - [`backend`]: endpoints (echo, fixed answer, reset, capture, UDP,
//!   blackhole);
//! - [`client`]: connections, fetches, HTTP GET, `/metrics` samples,
//!   background traffic;
//! - [`plane`]: data planes started in code, services, modes, counters,
//!   pods and probes;
//! - [`process`]: the process-wide lock and lb's threads;
//! - [`tools`]: `dig`, `dnsmasq`, programs on PATH;
//! - [`config`], [`app`] (feature `admin`): files and the App in-process;
//! - [`dns`] (feature `dns`): the DNS responder and a resolver client;
//! - [`bin`], [`etcd`] (feature `cli`): the binary as a child process, and
//!   an etcd to feed it.
//!
//! Everything listens and connects on 127.0.0.0/8 (the wildcard node
//! address tests bind 0.0.0.0 and `::` but send to loopback; the network
//! namespace tests' addresses live in their namespaces), and every wait is
//! bounded.

pub mod addr;
#[cfg(feature = "admin")]
pub mod app;
pub mod backend;
#[cfg(feature = "cli")]
pub mod bin;
pub mod client;
#[cfg(feature = "admin")]
pub mod config;
#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "cli")]
pub mod etcd;
pub mod plane;
pub mod process;
pub mod tools;
pub mod wait;

pub use addr::*;
pub use backend::*;
pub use client::*;
pub use plane::*;
pub use wait::*;

/// When the services of the golden tables and views were created:
/// 2024-05-01T12:00:00Z.
pub fn created() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_714_564_800)
}

/// Test logs on the test's output when `RUST_LOG` is set (once per
/// process; later calls do nothing).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
