//! Helpers shared by lb-config's integration tests: a file's usual head, a
//! loader with allocations in memory, and readers of what a load gives back
//! (the config, a port's endpoints, the error lines). Each test file keeps
//! only the fixtures of its own subject.

// Every test binary compiles this module and uses a part of it.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};

use lb_config::source::Origin;
use lb_config::{check_str, Config, Loader};
use lb_core::alloc::MemoryStore;
use lb_core::PortSpec;

/// `[cluster]` with the loopback service CIDR the tests allocate from.
pub const CIDR: &str = "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n";

/// `[node]`: `node-1`, whose node ports listen on 127.0.1.1.
pub const NODE: &str = "[node]\nname = \"node-1\"\naddresses = [\"127.0.1.1\"]\n";

/// `body` after [`CIDR`].
pub fn with_cidr(body: &str) -> String {
    format!("{CIDR}{body}")
}

/// A loader that keeps allocations in memory, on node `node-1` unless the file
/// names another.
/// Where an object read from etcd came from: its key and revision.
pub fn etcd_origin(key: &str, mod_revision: i64) -> Origin {
    Origin::Etcd {
        key: key.into(),
        mod_revision,
    }
}

pub fn memory_loader() -> Loader {
    Loader::new(Box::<MemoryStore>::default()).with_default_node_name("node-1")
}

/// Loads `body` after [`CIDR`] with a [`memory_loader`]; panics with the
/// errors if it is refused.
pub fn load(body: &str) -> Config {
    memory_loader()
        .load_str(&with_cidr(body))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Checks a whole file that must be valid; panics with its errors if not.
pub fn config(text: &str) -> Config {
    check_str(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The error lines of a file that must be invalid.
pub fn errors(text: &str) -> Vec<String> {
    match check_str(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.lines(),
    }
}

/// Asserts that `text` is refused with exactly `expected` among its errors.
pub fn assert_error(text: &str, expected: &str) {
    let lines = errors(text);
    assert!(
        lines.iter().any(|l| l == expected),
        "expected\n  {expected}\namong\n  {}",
        lines.join("\n  ")
    );
}

/// The port `name` of service `service`; panics if there is none.
pub fn port<'a>(c: &'a Config, service: &str, name: &str) -> &'a PortSpec {
    c.services
        .iter()
        .find(|s| s.key.name == service)
        .and_then(|s| s.ports.iter().find(|p| p.name == name))
        .unwrap_or_else(|| panic!("no port {service}:{name}"))
}

/// A port's endpoint addresses, in the port's order.
pub fn addrs(p: &PortSpec) -> Vec<SocketAddr> {
    p.endpoints.iter().map(|e| e.addr).collect()
}

/// An address from text.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A socket address from text.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
