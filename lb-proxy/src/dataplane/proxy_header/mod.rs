//! The PROXY protocol header (haproxy.org's `proxy-protocol.txt`), versions 1
//! and 2: what lb writes at the start of a connection (or datagram) to an
//! endpoint so that it sees the client's address rather than lb's, and what
//! lb reads at the start of an accepted connection from a proxy in front of
//! it, for issue 22.
//!
//! Three parts, each usable alone: `encode` builds the header lb sends
//! (fixed inline buffer, no allocation); `parse` is a sans-IO parser of the
//! start of a stream that tells a complete header from a partial one and from
//! bytes that are no header at all, detecting the version by itself; `read`
//! takes exactly a header's bytes off an accepted TCP connection, leaving the
//! payload after it in the socket.
//!
//! The parser is strict where the specification says "must": a v1 line is
//! exactly `PROXY TCP4|TCP6 src dst sport dport\r\n` (no leading zeros, one
//! space between fields, CRLF within 107 bytes) or `PROXY UNKNOWN...\r\n`;
//! a v2 header has the signature, version 2, command LOCAL or PROXY, an
//! assigned family and transport, and an address block as long as its family
//! needs. v2 TLVs are skipped unread (bounded by the header's length).

mod encode;
mod parse;
mod read;

#[cfg(test)]
mod peers;

use std::net::SocketAddr;

pub(crate) use encode::{encode, local, Encoded};
pub(crate) use lb_core::ProxyProtocol;
// `parse` is the whole-buffer entry point (the tests' and the property
// tests'); `read_header` goes through the same parser one step at a time.
#[cfg(test)]
pub(crate) use parse::parse;
pub(crate) use read::{read_header, ReadError};

/// The most bytes a header may take, beyond which the connection is
/// rejected: a v2 header is 16 bytes and then as many as its 16-bit length
/// says (up to 65,535), and a reader has to hold all of it before it knows
/// the header is whole. The address blocks take at most 216 bytes (AF_UNIX);
/// the rest is TLVs, which real senders keep small (HAProxy's SSL and unique
/// ID TLVs, a cloud load balancer's endpoint ID: well under 1 KiB). nginx
/// reads a header into a 4096-byte buffer (`NGX_PROXY_PROTOCOL_MAX_HEADER`),
/// so every sender nginx accepts is accepted here, and a reader never holds
/// more than about 4 KiB for one connection. A v1 line is at most 107 bytes.
pub(crate) const MAX_HEADER: usize = 16 + 4096;

/// The v2 header's first 12 bytes.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 line, CRLF included (`PROXY UNKNOWN` with two full IPv6
/// addresses and two 5-digit ports).
const V1_MAX: usize = 107;

/// Whether the connection (or datagram) a header describes is a stream (TCP)
/// or a datagram (UDP): v2 says which; v1 only knows TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Transport {
    /// TCP (v2 `STREAM`, v1 `TCP4`/`TCP6`).
    Stream,
    /// UDP (v2 `DGRAM`; v2 only).
    Datagram,
}

/// A header's payload: the client's address and the one it connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Addresses {
    /// The client: who the endpoint should believe it is talking to.
    pub(crate) source: SocketAddr,
    /// The address and port the client connected to (a cluster IP, a node
    /// address, a LoadBalancer address), so that the endpoint can tell
    /// which frontend the connection came in on.
    pub(crate) destination: SocketAddr,
}

/// What a received header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Header {
    /// PROXY over TCP or UDP, IPv4 or IPv6: the original client and
    /// destination, to be used instead of the connection's own.
    Proxy {
        /// TCP or UDP (always TCP in v1).
        transport: Transport,
        /// The original client and the address it connected to. When the
        /// sender mixed families they are both IPv6, the IPv4 one mapped.
        addresses: Addresses,
    },
    /// Serve with the connection's own addresses: a v2 LOCAL (the proxy's
    /// own connection, a health check), a v1 `UNKNOWN`, a v2 `UNSPEC`, or
    /// a family lb does not serve (AF_UNIX), which the specification lets a
    /// receiver treat as `UNSPEC`.
    Local,
}

/// A complete header at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Parsed {
    /// What it says.
    pub(crate) header: Header,
    /// Which version it was written in (both are accepted, the version is
    /// told from the first bytes).
    pub(crate) version: ProxyProtocol,
    /// How many bytes it takes at the start of the buffer: the payload
    /// starts right after.
    pub(crate) len: usize,
}
