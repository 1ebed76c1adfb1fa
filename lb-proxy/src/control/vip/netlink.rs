//! The netlink side of interface VIPs: find or create the VIP device, list,
//! add and delete the addresses lb-proxy owns, read a link's MAC address.
//! Everything goes through `rtnetlink` (no `ip` subprocess).
//!
//! Ownership mark: every address lb-proxy adds carries `IFA_PROTO` =
//! [`OWNER_PROTO`] (Linux 6.1+, both families) and, for IPv4, the label
//! `<ifname>:lb` (kept on older kernels too). An address with neither mark is
//! someone else's and is never deleted.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkDummy, LinkUnspec};

/// `IFA_PROTO` value marking lb-proxy's addresses (`ip -d addr` shows it as
/// `proto 76`). The kernel uses 0-3; 76 is 'L'.
pub(crate) const OWNER_PROTO: u8 = 76;

/// Netlink failed; `io::Error` carries the errno when there was one.
pub(crate) fn io_error(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// The IPv4 label lb-proxy gives its addresses on `ifname`, when it fits in
/// `IFNAMSIZ`.
pub(crate) fn owner_label(ifname: &str) -> Option<String> {
    let label = format!("{ifname}:lb");
    (label.len() <= 15).then_some(label)
}

/// A link by name: its index and hardware address.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) mac: Option<[u8; 6]>,
}

fn link_of(msg: &LinkMessage) -> Link {
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) if bytes.len() == 6 => {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(bytes);
            Some(mac)
        }
        _ => None,
    });
    Link {
        index: msg.header.index,
        mac,
    }
}

/// The link called `name`, if it exists.
pub(crate) async fn link(handle: &Handle, name: &str) -> io::Result<Option<Link>> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(link_of(&msg))),
        Ok(None) => Ok(None),
        Err(e) => {
            let e = io_error(e);
            if e.raw_os_error() == Some(libc::ENODEV) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// The link called `name`, created as a dummy device (and set up) when
/// missing. Returns the link and whether it was created.
pub(crate) async fn ensure_dummy(handle: &Handle, name: &str) -> io::Result<(Link, bool)> {
    if let Some(l) = link(handle, name).await? {
        return Ok((l, false));
    }
    handle
        .link()
        .add(LinkDummy::new(name).up().build())
        .execute()
        .await
        .map_err(io_error)?;
    let l = link(handle, name)
        .await?
        .ok_or_else(|| io::Error::other(format!("{name} vanished after being created")))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(l.index).up().build())
        .execute()
        .await
        .map_err(io_error)?;
    Ok((l, true))
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    // IPv4 point-to-point addresses have both; IFA_LOCAL is the local one.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn is_owned(msg: &AddressMessage, label: Option<&str>) -> bool {
    msg.attributes.iter().any(|a| match a {
        AddressAttribute::Protocol(p) => u8::from(*p) == OWNER_PROTO,
        AddressAttribute::Label(l) => Some(l.as_str()) == label,
        _ => false,
    })
}

/// Every address on every link of this network namespace, with whether
/// lb-proxy owns it on `vip` (the VIP link's index and name).
pub(crate) async fn addresses(
    handle: &Handle,
    vip: (u32, &str),
) -> io::Result<BTreeMap<IpAddr, Vec<(AddressMessage, bool)>>> {
    let label = owner_label(vip.1);
    let mut out: BTreeMap<IpAddr, Vec<(AddressMessage, bool)>> = BTreeMap::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(io_error)? {
        let Some(ip) = address_of(&msg) else { continue };
        let owned = msg.header.index == vip.0 && is_owned(&msg, label.as_deref());
        out.entry(ip).or_default().push((msg, owned));
    }
    Ok(out)
}

/// Adds `ip` (host prefix) to link `vip`, marked as lb-proxy's.
pub(crate) async fn add(handle: &Handle, vip: (u32, &str), ip: IpAddr) -> io::Result<()> {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    let mut req = handle.address().add(vip.0, ip, prefix);
    let msg = req.message_mut();
    msg.attributes
        .push(AddressAttribute::Protocol(AddressProtocol::from(
            OWNER_PROTO,
        )));
    if ip.is_ipv4() {
        if let Some(label) = owner_label(vip.1) {
            msg.attributes.push(AddressAttribute::Label(label));
        }
    }
    req.execute().await.map_err(io_error)
}

/// Deletes one address, as listed.
pub(crate) async fn delete(handle: &Handle, msg: AddressMessage) -> io::Result<()> {
    match handle.address().del(msg).execute().await.map_err(io_error) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other,
    }
}
