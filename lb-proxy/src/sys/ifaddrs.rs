//! This host's own addresses (`getifaddrs(3)`, through `nix`), for the data
//! plane's self-loop check: a destination on a wildcard-bound frontend's
//! port is lb itself when its address is one of these.

use std::io;
use std::net::IpAddr;

/// Every IPv4 and IPv6 address configured on this host's interfaces now
/// (sorted, without repeats). One `getifaddrs(3)`: a netlink dump, so the
/// caller caches the answer rather than asking per connection.
pub(crate) fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .map_err(io::Error::from)?
        .filter_map(|ifa| {
            let addr = ifa.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_address_is_one_of_this_hosts() {
        let addrs = local_addresses().expect("getifaddrs");
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])), "{addrs:?}");
    }
}
