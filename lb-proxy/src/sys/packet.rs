//! One raw Ethernet frame out of an `AF_PACKET` socket: how interface mode
//! announces a LoadBalancer address with a gratuitous ARP (the frame is built
//! by `control::vip::arp`). The socket comes from `socket2`; the send stays a
//! direct `sendto(2)`, because neither `socket2` nor `nix` builds a
//! link-layer address (`sockaddr_ll`) without `unsafe` of their own.

use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::ptr;

use socket2::{Domain, Protocol, Socket, Type};

/// Length of an Ethernet header (destination, source, EtherType).
const ETHERNET_HEADER: usize = 14;

/// Sends one raw Ethernet `frame` (header included) on interface `ifindex`
/// to `dst_mac`. Needs `CAP_NET_RAW`. A frame shorter than an Ethernet
/// header is refused (`InvalidInput`).
pub(crate) fn send_ethernet_frame(ifindex: u32, dst_mac: [u8; 6], frame: &[u8]) -> io::Result<()> {
    if frame.len() < ETHERNET_HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an Ethernet frame is at least 14 bytes",
        ));
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let socket = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ethertype.to_be()))),
    )?;
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&dst_mac);
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ethertype.to_be(),
        sll_ifindex: i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    };
    // SAFETY: `sendto` reads `frame.len()` bytes from a live slice and one
    // fully initialised `sockaddr_ll` passed with its own size, on a
    // descriptor `socket` owns for the whole call.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            ptr::addr_of!(addr).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
