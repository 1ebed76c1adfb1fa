//! One HTTP/1 exchange with one etcd endpoint: a tokio TcpStream (TLS for
//! `https://`), hyper's client connection on it, one POST. The connection is
//! driven inside the exchange's own futures, never by a spawned task, so
//! dropping the caller's future closes everything; a connection per request
//! (etcd's gateway answers in milliseconds on loopback or a LAN, and the
//! request rate is a ping a second plus the changes).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long a TCP connection to one endpoint may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A byte stream to etcd: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Connection = http1::Connection<TokioIo<Box<dyn Io>>, Full<Bytes>>;

/// One client URL of `[source.etcd]`, split for dialling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    https: bool,
    /// Host name or IP, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// The `Host` header: the URL's host and port as written.
    host_header: String,
    /// A path the URL carries, without its trailing slash ("" usually).
    base: String,
}

impl Endpoint {
    /// Parses `http://HOST[:PORT][/PATH]` or `https://...` (validation
    /// checked the scheme; the port defaults as in any URL).
    pub(super) fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("not an http:// or https:// URL".into()),
        };
        let authority = uri.authority().ok_or("no host in the URL")?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = match authority.port() {
            Some(p) => format!("{}:{p}", authority.host()),
            None => authority.host().to_string(),
        };
        Ok(Endpoint {
            https,
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            host_header,
            base: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// Opens the byte stream: TCP (bounded by [`CONNECT_TIMEOUT`]), then the
/// TLS handshake for `https://`.
async fn connect(ep: &Endpoint, tls: &Arc<rustls::ClientConfig>) -> Result<Box<dyn Io>, String> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((ep.host.as_str(), ep.port)),
    )
    .await
    .map_err(|_| format!("connect: no answer within {}s", CONNECT_TIMEOUT.as_secs()))?
    .map_err(|e| format!("connect: {e}"))?;
    // Requests are small and answered at once: no reason to wait for more.
    let _ = tcp.set_nodelay(true);
    if !ep.https {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
        .map_err(|e| format!("TLS: {}: not a server name: {e}", ep.host))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Box::new(stream))
}

/// Runs `work` while polling the connection, which carries its bytes. When
/// the connection ends first (closed or failed), `work` is finished alone:
/// hyper has handed it the end or the error by then.
async fn drive<F: Future>(connection: &mut Option<Pin<Box<Connection>>>, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    if let Some(conn) = connection.as_mut() {
        tokio::select! {
            out = &mut work => return out,
            _ = conn.as_mut() => {}
        }
        *connection = None;
    }
    work.await
}

/// An answer being read: its status, and its body read piece by piece with
/// the connection driven meanwhile. Dropping it closes the connection.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    body: Incoming,
    connection: Option<Pin<Box<Connection>>>,
    /// Kept so the connection is not closed under the body.
    _sender: http1::SendRequest<Full<Bytes>>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .finish()
    }
}

impl Reply {
    /// The next piece of the body; `None` at its end.
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, hyper::Error> {
        loop {
            match drive(&mut self.connection, self.body.frame()).await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing lb reads.
                }
            }
        }
    }

    /// The whole body.
    pub(super) async fn bytes(mut self) -> Result<Vec<u8>, hyper::Error> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// POSTs `body` (JSON) to `path` on `ep` and waits for the answer's head.
/// An error is a transport failure (the caller tries the next endpoint);
/// timeouts are the caller's.
pub(super) async fn post(
    ep: &Endpoint,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    body: String,
    token: Option<&str>,
) -> Result<Reply, String> {
    let io = connect(ep, tls).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let mut connection = Some(Box::pin(connection));
    let mut request = Request::post(format!("{}{path}", ep.base))
        .header(HOST, ep.host_header.as_str())
        .header(CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        request = request.header(AUTHORIZATION, t);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("HTTP request: {e}"))?;
    let response = drive(&mut connection, sender.send_request(request))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let (head, body) = response.into_parts();
    Ok(Reply {
        status: head.status,
        body,
        connection,
        _sender: sender,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_into_host_port_and_base_path() {
        let ep = Endpoint::parse("http://127.0.0.1:2379").expect("parse");
        assert_eq!(
            ep,
            Endpoint {
                https: false,
                host: "127.0.0.1".into(),
                port: 2379,
                host_header: "127.0.0.1:2379".into(),
                base: String::new(),
            }
        );
        let ep = Endpoint::parse("https://[::1]:2379/").expect("parse");
        assert_eq!((ep.https, ep.host.as_str(), ep.port), (true, "::1", 2379));
        assert_eq!(ep.host_header, "[::1]:2379");
        let ep = Endpoint::parse("https://etcd.example/gateway/").expect("parse");
        assert_eq!((ep.port, ep.base.as_str()), (443, "/gateway"));
        assert!(Endpoint::parse("ftp://127.0.0.1").is_err());
        assert!(Endpoint::parse("127.0.0.1:2379").is_err());
    }
}
