//! A sans-IO parser of the start of a stream: a complete header, not enough
//! bytes yet, or no header at all, as early as the bytes tell.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Addresses, Header, Parsed, ProxyProtocol, Transport, MAX_HEADER, SIGNATURE, V1_MAX};

/// Why the start of a stream is not a PROXY protocol header: the connection
/// is to be closed (the specification allows no fallback to the bytes as
/// payload: a client could otherwise claim any address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    /// Neither v1's `PROXY ` nor v2's signature.
    #[error("neither a v1 header (\"PROXY \") nor a v2 one: starts with \"{0}\"")]
    NotProxy(String),
    /// Starts like v2's signature (CR LF), then differs.
    #[error("bad v2 signature: \"{0}\"")]
    V2Signature(String),
    /// v2's version nibble is not 2.
    #[error("v2 version {0}, not 2")]
    V2Version(u8),
    /// v2's command is neither LOCAL (0) nor PROXY (1).
    #[error("v2 command {0}, neither LOCAL (0) nor PROXY (1)")]
    V2Command(u8),
    /// v2's family or transport nibble is unassigned.
    #[error("v2 family and transport {0:#04x}: unassigned")]
    V2Family(u8),
    /// v2's length would make the header longer than [`MAX_HEADER`].
    #[error("v2 length {0} over the {max}-byte bound", max = MAX_HEADER - 16)]
    V2TooLong(u16),
    /// v2's length is too short for the addresses its family carries.
    #[error("v2 length {len} too short for family {family:#04x}'s {need}-byte addresses")]
    V2Short {
        /// The family and transport byte.
        family: u8,
        /// The header's length field.
        len: u16,
        /// The family's address block.
        need: u16,
    },
    /// No CRLF within v1's 107 bytes.
    #[error("v1 header longer than {V1_MAX} bytes (no CRLF)")]
    V1TooLong,
    /// A CR or LF alone where v1's line ends.
    #[error("v1 line ends in a lone CR or LF, not CRLF")]
    V1LineEnd,
    /// v1's protocol is not `TCP4`, `TCP6` or `UNKNOWN`.
    #[error("v1 protocol \"{0}\": not TCP4, TCP6 or UNKNOWN")]
    V1Protocol(String),
    /// v1's line has other than 4 fields after `TCP4`/`TCP6`.
    #[error("v1 header has {0} fields after the protocol, not 4: \"{1}\"")]
    V1Fields(usize, String),
    /// A v1 address is not one of its protocol's family.
    #[error("v1 address not an {family} address: \"{text}\"")]
    V1Address {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The field.
        text: String,
    },
    /// A v1 port is not a decimal in 0..=65535 without leading zeros.
    #[error("v1 port not a decimal 0..=65535 without leading zeros: \"{0}\"")]
    V1Port(String),
}

/// How far the start of a stream is from a complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// A complete header.
    Complete(Parsed),
    /// A header's beginning: at least this many bytes in all are needed
    /// (exactly the header's length once a v2 header's first 16 bytes are
    /// in; never more than [`MAX_HEADER`]).
    Incomplete {
        /// The fewest bytes, from the start, worth parsing again.
        at_least: usize,
    },
}

/// Parses a header at the start of `buf`: `Ok(None)` while `buf` is a
/// header's beginning (more bytes are needed), `Ok(Some(_))` once it holds
/// a complete one (the bytes after it are the payload, left unread), `Err`
/// as soon as the bytes are no header. v1 or v2 is told from the first
/// byte.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Parsed>, ParseError> {
    Ok(match progress(buf)? {
        Progress::Complete(parsed) => Some(parsed),
        Progress::Incomplete { .. } => None,
    })
}

/// [`parse`], saying how many bytes an incomplete header needs at least
/// (what a reader sizes its buffer by).
pub(super) fn progress(buf: &[u8]) -> Result<Progress, ParseError> {
    match buf.first() {
        None => Ok(Progress::Incomplete { at_least: 15 }), // `PROXY UNKNOWN\r\n`
        Some(&b) if b == SIGNATURE[0] => v2(buf),
        Some(_) => v1(buf),
    }
}

/// Up to 16 bytes of `buf`, escaped, for an error message.
fn shown(buf: &[u8]) -> String {
    buf[..buf.len().min(16)].escape_ascii().to_string()
}

/// A v2 header, its bytes checked as they come: the signature, the
/// version and command, the family and transport, then the length.
fn v2(buf: &[u8]) -> Result<Progress, ParseError> {
    let n = buf.len().min(SIGNATURE.len());
    if buf[..n] != SIGNATURE[..n] {
        return Err(ParseError::V2Signature(shown(buf)));
    }
    if let Some(&version_command) = buf.get(12) {
        match (version_command >> 4, version_command & 0xf) {
            (2, 0 | 1) => {}
            (2, command) => return Err(ParseError::V2Command(command)),
            (version, _) => return Err(ParseError::V2Version(version)),
        }
    }
    if let Some(&family) = buf.get(13) {
        if family >> 4 > 3 || family & 0xf > 2 {
            return Err(ParseError::V2Family(family));
        }
    }
    let [_, _, _, _, _, _, _, _, _, _, _, _, version_command, family, hi, lo, ..] = *buf else {
        return Ok(Progress::Incomplete { at_least: 16 });
    };
    let len = u16::from_be_bytes([hi, lo]);
    let total = 16 + usize::from(len);
    if total > MAX_HEADER {
        return Err(ParseError::V2TooLong(len));
    }
    let proxy = version_command & 0xf == 1;
    let need = match family {
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => 0,
    };
    if proxy && len < need {
        return Err(ParseError::V2Short { family, len, need });
    }
    let Some(block) = buf.get(16..total) else {
        return Ok(Progress::Incomplete { at_least: total });
    };
    let header = if proxy {
        v2_addresses(family, block)
    } else {
        Header::Local
    };
    Ok(Progress::Complete(Parsed {
        header,
        version: ProxyProtocol::V2,
        len: total,
    }))
}

/// `N` bytes of `block` from `at` (the block's length is checked).
fn bytes<const N: usize>(block: &[u8], at: usize) -> [u8; N] {
    block[at..at + N]
        .try_into()
        .expect("the length was checked")
}

/// A PROXY command's address block (its length checked): TCP or UDP over
/// IPv4 or IPv6; anything else (UNSPEC, AF_UNIX) is served as LOCAL.
fn v2_addresses(family: u8, block: &[u8]) -> Header {
    let transport = match family & 0xf {
        0x1 => Transport::Stream,
        0x2 => Transport::Datagram,
        _ => return Header::Local,
    };
    let (source, destination, ports): (IpAddr, IpAddr, _) = match family >> 4 {
        0x1 => (
            Ipv4Addr::from(bytes::<4>(block, 0)).into(),
            Ipv4Addr::from(bytes::<4>(block, 4)).into(),
            bytes::<4>(block, 8),
        ),
        0x2 => (
            Ipv6Addr::from(bytes::<16>(block, 0)).into(),
            Ipv6Addr::from(bytes::<16>(block, 16)).into(),
            bytes::<4>(block, 32),
        ),
        _ => return Header::Local,
    };
    let port = |at: usize| u16::from_be_bytes([ports[at], ports[at + 1]]);
    Header::Proxy {
        transport,
        addresses: Addresses {
            source: SocketAddr::new(source, port(0)),
            destination: SocketAddr::new(destination, port(2)),
        },
    }
}

const V1_PREFIX: &[u8] = b"PROXY ";

/// A v1 line: `PROXY ` as it comes, then nothing more until its CRLF.
fn v1(buf: &[u8]) -> Result<Progress, ParseError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(ParseError::NotProxy(shown(buf)));
    }
    // The CR of a CRLF that ends the line within 107 bytes is at most at
    // index 105.
    let window = &buf[..buf.len().min(V1_MAX - 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if window.len() == V1_MAX - 1 {
            Err(ParseError::V1TooLong)
        } else {
            Ok(Progress::Incomplete {
                at_least: (buf.len() + 1).max(15),
            })
        };
    };
    match (buf[cr], buf.get(cr + 1)) {
        (b'\r', Some(b'\n')) => {}
        (b'\r', None) => return Ok(Progress::Incomplete { at_least: cr + 2 }),
        _ => return Err(ParseError::V1LineEnd),
    }
    let line = &buf[V1_PREFIX.len().min(cr)..cr];
    Ok(Progress::Complete(Parsed {
        header: v1_line(line)?,
        version: ProxyProtocol::V1,
        len: cr + 2,
    }))
}

/// The line between `PROXY ` and CRLF.
fn v1_line(line: &[u8]) -> Result<Header, ParseError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut fields = line.split(|&b| b == b' ');
    let protocol = fields.next().unwrap_or_default();
    let ipv4 = match protocol {
        b"UNKNOWN" => return Ok(Header::Local), // the rest is to be ignored
        b"TCP4" => true,
        b"TCP6" => false,
        other => return Err(ParseError::V1Protocol(text(other))),
    };
    let (Some(source), Some(destination), Some(source_port), Some(destination_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        let count = line.split(|&b| b == b' ').count() - 1;
        return Err(ParseError::V1Fields(count, text(line)));
    };
    let address = |field: &[u8]| {
        let parsed = std::str::from_utf8(field).ok().and_then(|s| match ipv4 {
            true => s.parse::<Ipv4Addr>().ok().map(IpAddr::from),
            false => s.parse::<Ipv6Addr>().ok().map(IpAddr::from),
        });
        parsed.ok_or_else(|| ParseError::V1Address {
            family: if ipv4 { "IPv4" } else { "IPv6" },
            text: text(field),
        })
    };
    Ok(Header::Proxy {
        transport: Transport::Stream,
        addresses: Addresses {
            source: SocketAddr::new(address(source)?, v1_port(source_port)?),
            destination: SocketAddr::new(address(destination)?, v1_port(destination_port)?),
        },
    })
}

/// A decimal port without leading zeros or sign.
fn v1_port(field: &[u8]) -> Result<u16, ParseError> {
    let digits = !field.is_empty() && field.len() <= 5 && field.iter().all(u8::is_ascii_digit);
    let canonical = digits && (field[0] != b'0' || field.len() == 1);
    let port = canonical
        .then(|| std::str::from_utf8(field).ok()?.parse::<u16>().ok())
        .flatten();
    port.ok_or_else(|| ParseError::V1Port(String::from_utf8_lossy(field).into_owned()))
}

#[cfg(test)]
mod tests;
