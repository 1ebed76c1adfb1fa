//! Addresses on 127.0.0.0/8 for the tests of one process: parsing helpers,
//! fresh addresses no other test of the process gets ([`fresh_ip`], [`vip`]),
//! and ports free a moment ago. All tests run in one process, so a test that
//! needs an address of its own takes a fresh one; a test that writes fixed
//! addresses keeps them in a /24 no other test file uses.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Parses an IP address (test literals only).
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// Parses a socket address (test literals only).
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// An IP address written either way: a literal (`"127.0.244.1"`) or a value.
pub trait AsIp {
    /// The address.
    fn as_ip(&self) -> IpAddr;
}

impl AsIp for &str {
    fn as_ip(&self) -> IpAddr {
        ip(self)
    }
}

impl AsIp for IpAddr {
    fn as_ip(&self) -> IpAddr {
        *self
    }
}

/// Where to bind a listener: an IP (`"127.0.244.1"`, any free port), an exact
/// socket address (`"127.0.244.1:80"`, or the address of a backend that was
/// just killed, to restart it there).
pub trait BindAt {
    /// The address to bind; port 0 for any.
    fn bind_addr(&self) -> SocketAddr;
}

impl BindAt for &str {
    fn bind_addr(&self) -> SocketAddr {
        self.parse()
            .unwrap_or_else(|_| SocketAddr::new(ip(self), 0))
    }
}

impl BindAt for IpAddr {
    fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(*self, 0)
    }
}

impl BindAt for SocketAddr {
    fn bind_addr(&self) -> SocketAddr {
        *self
    }
}

/// A 127.77.x.y address no other call in this process returns (for cluster
/// IPs, backends, admin listeners, client sources). The range starts at an
/// offset taken from the process id, so two test processes on one machine
/// rarely meet; 127.77.0.0/24 is never handed out. A cluster IP that lb
/// allocates from [`base_toml`](super::config::base_toml)'s 127.77.0.0/16
/// lands anywhere above 127.77.1.0 (Kubernetes' upper band), so a test that
/// lets lb allocate serves it on a port of its own (`free_port`) or gives
/// the service a /24 of its own.
pub fn fresh_ip() -> IpAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = (std::process::id() as usize % 50) * 200 + NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 250 * 254, "out of fresh addresses");
    IpAddr::from([127, 77, (n / 250 + 1) as u8, (n % 250 + 1) as u8])
}

/// A fresh frontend address: a [`fresh_ip`] at a port that was free for
/// both TCP and UDP a moment ago.
pub fn vip() -> SocketAddr {
    let ip = fresh_ip();
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind((ip, 0)).expect("bind UDP on loopback");
        let addr = udp.local_addr().expect("local address");
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no port free for both TCP and UDP on {ip}");
}

/// A TCP port on `ip` that was free a moment ago.
pub fn free_port(ip: impl AsIp) -> u16 {
    closed_port(ip).port()
}

/// A UDP port on `ip` that was free a moment ago.
pub fn free_udp_port(ip: impl AsIp) -> u16 {
    closed_udp_port(ip).port()
}

/// An address on `ip` where no TCP listener is (connections are refused).
pub fn closed_port(ip: impl AsIp) -> SocketAddr {
    std::net::TcpListener::bind((ip.as_ip(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free TCP port on loopback")
}

/// An address on `ip` where no UDP socket is (the kernel answers ICMP port
/// unreachable).
pub fn closed_udp_port(ip: impl AsIp) -> SocketAddr {
    std::net::UdpSocket::bind((ip.as_ip(), 0))
        .and_then(|s| s.local_addr())
        .expect("a free UDP port on loopback")
}
