//! What a connection's dial does besides connecting, and what lb reads
//! from a client before anything else: the PROXY protocol header sent to an
//! endpoint (`proxy_protocol`) or read from a trusted balancer in front
//! (`accept_proxy_protocol`), and the transparent dial from the client's
//! address (`source_address = "client"`). Kept out of `tcp`, which calls
//! them, so that the per-connection path reads as admission, dial, forward.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use lb_core::{ProxyProtocol, ProxySettings};
use socket2::Socket;
use tokio::net::TcpStream;

use crate::dataplane::proxy_header::{self, Addresses, Encoded, Transport};
use crate::dataplane::throttle::once_a_second;

/// What a dial does beyond connecting, the same for every endpoint a
/// failover tries: the PROXY header to send first, and the client address
/// to dial from (`source_address = "client"`).
#[derive(Clone, Copy)]
pub(super) struct Greeting<'a> {
    pub(super) header: Option<&'a Encoded>,
    pub(super) from: Option<IpAddr>,
}

/// A transparent dial that could not leave from the client's address: the
/// proxy's fault (no `CAP_NET_ADMIN`, or a client of the other address
/// family than the endpoint), never the endpoint's, and never replaced by a
/// dial from lb's own address.
#[derive(Debug, thiserror::Error)]
#[error("source_address = \"client\": cannot dial {endpoint} from {client}: {why}")]
pub(super) struct TransparentFailed {
    client: IpAddr,
    endpoint: SocketAddr,
    why: String,
}

impl TransparentFailed {
    /// Whether a dial's error is a failed transparent bind (the proxy's
    /// fault, already logged at error level).
    pub(super) fn is(e: &io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<TransparentFailed>())
    }
}

/// Binds a dial's socket to the client's address (`IP_TRANSPARENT` lets a
/// socket bind an address that is not the host's); the kernel picks the
/// port.
#[cfg(target_os = "linux")]
pub(super) fn transparent_bind(
    socket: &Socket,
    client: IpAddr,
    endpoint: SocketAddr,
) -> io::Result<()> {
    let failed = |why: String| {
        let e = TransparentFailed {
            client,
            endpoint,
            why,
        };
        transparent_failed(&e);
        io::Error::new(io::ErrorKind::PermissionDenied, e)
    };
    let client = client.to_canonical();
    let set = match (client, endpoint) {
        (IpAddr::V4(_), SocketAddr::V4(_)) => socket.set_ip_transparent_v4(true),
        (IpAddr::V6(_), SocketAddr::V6(_)) => socket.set_ip_transparent_v6(true),
        _ => {
            return Err(failed(
                "the client and the endpoint are of different address families".into(),
            ))
        }
    };
    set.map_err(|e| failed(format!("IP_TRANSPARENT: {e} (it needs CAP_NET_ADMIN)")))?;
    socket
        .bind(&SocketAddr::new(client, 0).into())
        .map_err(|e| failed(format!("bind: {e}")))
}

#[cfg(not(target_os = "linux"))]
pub(super) fn transparent_bind(_: &Socket, client: IpAddr, endpoint: SocketAddr) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        TransparentFailed {
            client,
            endpoint,
            why: "transparent dials need Linux".into(),
        },
    ))
}

/// Says at error level, at most once a second for the whole process, that a
/// client was reset because its transparent dial failed: every client of
/// that service would fail alike until the operator acts.
fn transparent_failed(e: &TransparentFailed) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if once_a_second(&LAST) {
        tracing::error!(error = %e, "client reset: its transparent dial failed");
    }
}

/// How long a client of a service with `accept_proxy_protocol` has to send
/// its PROXY header before it is reset. A load balancer sends it at once
/// (with the first segment); nginx's `proxy_protocol_timeout` waits 30 s by
/// default, lb holds a connection without its header 3 s at most.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a connection to a service with `accept_proxy_protocol` is reset
/// before anything else happens to it.
#[derive(Debug, thiserror::Error)]
pub(super) enum HeaderRefused {
    #[error("{0} is not in proxy_protocol_trusted_cidrs")]
    Untrusted(IpAddr),
    #[error(transparent)]
    Read(#[from] proxy_header::ReadError),
}

/// Reads the PROXY header a trusted load balancer sends before the client's
/// bytes (v1 or v2): the client and the address it connected to, or `None`
/// for a `LOCAL` header (the balancer's own health check), which is served
/// with the connection's own addresses.
#[inline(never)]
pub(super) async fn accept_header(
    client: &TcpStream,
    peer: SocketAddr,
    settings: &ProxySettings,
) -> Result<Option<Addresses>, HeaderRefused> {
    if !settings.trusts_proxy_header_from(peer.ip()) {
        return Err(HeaderRefused::Untrusted(peer.ip()));
    }
    let parsed = proxy_header::read_header(client, PROXY_HEADER_TIMEOUT).await?;
    Ok(match parsed.header {
        proxy_header::Header::Proxy { addresses, .. } => Some(addresses),
        proxy_header::Header::Local => None,
    })
}

/// Writes a PROXY header on a new connection. Its send buffer is empty, so
/// this is one `write(2)`; the loop is for a buffer smaller than a header.
pub(super) async fn send_header(stream: &TcpStream, mut header: &[u8]) -> io::Result<()> {
    while !header.is_empty() {
        match stream.try_write(header) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => header = &header[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.writable().await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The PROXY header of a connection from `peer` to `frontend` (the frontend,
/// or what the header lb accepted named): that address, or for a frontend
/// bound to a wildcard address (node ports) the address the client
/// connected to, which only the accepted socket knows (`getsockname(2)`,
/// for these connections only).
#[inline(never)]
pub(super) fn proxy_header_for(
    version: ProxyProtocol,
    client: &TcpStream,
    peer: SocketAddr,
    frontend: SocketAddr,
) -> Encoded {
    let destination = if frontend.ip().is_unspecified() {
        client.local_addr().unwrap_or(frontend)
    } else {
        frontend
    };
    proxy_header::encode(
        version,
        Transport::Stream,
        &Addresses {
            source: peer,
            destination,
        },
    )
}
