//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6):
//! how a LoadBalancer address moves to this node in MetalLB's layer-2 mode.
//! Neighbours (and switches) update their caches from the unsolicited
//! announcement instead of waiting for their old entry to expire. The frames
//! are built here (pure, tested); `sys` sends them.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The Ethernet broadcast address.
pub(crate) const BROADCAST: [u8; 6] = [0xff; 6];

/// A gratuitous ARP request for `ip` from `mac`: Ethernet broadcast, ARP
/// opcode 1 with sender and target protocol address both `ip` (RFC 5227's
/// "ARP announcement"), target hardware address zero.
pub(crate) fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); // EtherType ARP
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // f[32..38]: target hardware address, zero.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// The Ethernet address of the IPv6 all-nodes group `ff02::1`.
pub(crate) const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// An unsolicited neighbour advertisement for `ip` from `mac` (RFC 4861
/// 7.2.6): to all nodes, Override set, Solicited clear, with the target
/// link-layer address option; hop limit 255 as receivers require.
pub(crate) fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 86] {
    let mut f = [0u8; 86];
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes()); // EtherType IPv6
                                                         // IPv6 header.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes()); // payload length
    f[20] = 58; // ICMPv6
    f[21] = 255; // hop limit
    f[22..38].copy_from_slice(&ip.octets());
    f[38..54].copy_from_slice(&all_nodes.octets());
    // ICMPv6 neighbour advertisement.
    f[54] = 136;
    f[58] = 0x20; // Override
    f[62..78].copy_from_slice(&ip.octets());
    f[78] = 2; // target link-layer address option
    f[79] = 1; // 8 bytes
    f[80..86].copy_from_slice(&mac);
    let sum = icmpv6_checksum(&ip, &all_nodes, &f[54..86]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum over the pseudo-header and `message` (whose checksum
/// field is zero).
fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_neighbour_advertisement_is_well_formed() {
        let mac = [2, 0, 0, 0, 0, 7];
        let ip: Ipv6Addr = "fd00:251::100".parse().unwrap();
        let f = unsolicited_na(mac, ip);
        assert_eq!(&f[..6], &ALL_NODES_MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!((f[20], f[21], f[54]), (58, 255, 136));
        assert_eq!(&f[62..78], &ip.octets());
        assert_eq!(&f[80..86], &mac);
        // Summing a message with its checksum in place gives 0 (ones' complement).
        let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
        assert_eq!(icmpv6_checksum(&ip, &all_nodes, &f[54..86]), 0);
    }

    #[test]
    fn the_announcement_names_the_address_as_sender_and_target() {
        let mac = [2, 0, 0, 0, 0, 7];
        let f = gratuitous_arp(mac, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(&f[..6], &BROADCAST);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &[10, 1, 2, 3]);
        assert_eq!(&f[38..42], &[10, 1, 2, 3]);
        assert_eq!(&f[32..38], &[0; 6]);
    }
}
