//! The codec against the implementations lb must talk to: HAProxy writes
//! headers (`send-proxy`, `send-proxy-v2`) that `read_header` must read, and
//! nginx reads the headers `encode` writes (`listen ... proxy_protocol`).
//! Unit tests rather than integration tests because the codec is
//! crate-private. Each test says `SKIPPED` and passes without its program
//! (Debian: `haproxy`, `nginx` with `libnginx-mod-stream`).
//!
//! Addresses: 127.0.88.0/24 is these tests' alone.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::{encode, read_header, Addresses, Header, Parsed, ProxyProtocol, Transport};

/// How long a peer gets to start listening, and any one read.
const WAIT: Duration = Duration::from_secs(5);

/// The client's address, distinct from the peers' own.
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 88, 7));

/// Where `program` is: on PATH, or in the sbin directories Debian puts
/// daemons in (not on a non-root PATH).
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A port free on `ip` a moment ago, for a peer to listen on.
fn free_port(ip: IpAddr) -> SocketAddr {
    let probe = std::net::TcpListener::bind((ip, 0)).unwrap();
    probe.local_addr().unwrap()
}

/// A running peer with its files, killed and reaped when dropped, also
/// when the test panics.
struct Peer {
    child: Child,
    dir: TempDir,
}

impl Peer {
    /// Starts `program args`, its output to `output.log` in `dir`.
    fn start(program: &Path, args: &[&str], dir: TempDir) -> Peer {
        let log = File::create(dir.path().join("output.log")).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        Peer { child, dir }
    }

    /// What the peer wrote, for a failure's message.
    fn logs(&self) -> String {
        ["output.log", "error.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A connection to `to` from `from`, retried while the peer is not
    /// listening yet (for at most [`WAIT`]).
    async fn connect(&mut self, from: IpAddr, to: SocketAddr) -> TcpStream {
        let deadline = Instant::now() + WAIT;
        loop {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(from, 0)).unwrap();
            match socket.connect(to).await {
                Ok(stream) => return stream,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && Instant::now() < deadline =>
                {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        panic!("the peer exited ({status}):\n{}", self.logs());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("connecting to {to}: {e}\n{}", self.logs()),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in TCP mode on `frontend`, its one server `endpoint` with the
/// `server` options `send` (`send-proxy` or `send-proxy-v2 ...`).
fn haproxy(program: &Path, frontend: SocketAddr, endpoint: SocketAddr, send: &str) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("haproxy.cfg");
    let text = format!(
        "defaults
  mode tcp
  timeout connect 5s
  timeout client 10s
  timeout server 10s
  unique-id-format %ci:%cp_%fi:%fp_%Ts
listen pp
  bind {frontend}
  server endpoint {endpoint} {send}
"
    );
    std::fs::write(&config, text).unwrap();
    Peer::start(program, &["-db", "-f", config.to_str().unwrap()], dir)
}

/// A client of HAProxy from [`CLIENT`], HAProxy `send`ing a header to a
/// listener of the test's: what `read_header` makes of it, the client's
/// address, and HAProxy's frontend.
async fn through_haproxy(frontend_ip: [u8; 4], send: &str) -> Option<(Parsed, Addresses)> {
    let Some(program) = which("haproxy") else {
        skip("haproxy is not installed (apt-get install haproxy)");
        return None;
    };
    let endpoint = TcpListener::bind("127.0.88.1:0").await.unwrap();
    let frontend = free_port(IpAddr::from(frontend_ip));
    let mut peer = haproxy(&program, frontend, endpoint.local_addr().unwrap(), send);
    let mut client = peer.connect(CLIENT, frontend).await;
    let payload = b"hello through haproxy\r\n\0\x01";
    client.write_all(payload).await.unwrap();
    let accepted = tokio::time::timeout(WAIT, endpoint.accept()).await;
    let (mut server, _) = accepted
        .unwrap_or_else(|_| panic!("no connection from haproxy:\n{}", peer.logs()))
        .unwrap();
    let parsed = read_header(&server, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", peer.logs()));
    let mut got = [0; 25];
    tokio::time::timeout(WAIT, server.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], payload, "the payload after the header, intact");
    let addresses = Addresses {
        source: client.local_addr().unwrap(),
        destination: frontend,
    };
    assert_eq!(addresses.source.ip(), CLIENT);
    Some((parsed, addresses))
}

#[tokio::test]
async fn haproxy_send_proxy_is_read_as_v1_naming_the_client_and_the_frontend() {
    let Some((parsed, addresses)) = through_haproxy([127, 0, 88, 2], "send-proxy").await else {
        return;
    };
    let header = Header::Proxy {
        transport: Transport::Stream,
        addresses,
    };
    assert_eq!((parsed.header, parsed.version), (header, ProxyProtocol::V1));
}

#[tokio::test]
async fn haproxy_send_proxy_v2_is_read_as_v2_naming_the_client_and_the_frontend() {
    let Some((parsed, addresses)) = through_haproxy([127, 0, 88, 3], "send-proxy-v2").await else {
        return;
    };
    let header = Header::Proxy {
        transport: Transport::Stream,
        addresses,
    };
    assert_eq!((parsed.header, parsed.version), (header, ProxyProtocol::V2));
}

#[tokio::test]
async fn haproxys_v2_tlvs_are_skipped() {
    let send = "send-proxy-v2 proxy-v2-options unique-id,crc32c";
    let Some((parsed, addresses)) = through_haproxy([127, 0, 88, 4], send).await else {
        return;
    };
    let header = Header::Proxy {
        transport: Transport::Stream,
        addresses,
    };
    assert_eq!(parsed.header, header);
    assert!(
        parsed.len > 16 + 12,
        "TLVs after the addresses: {} bytes",
        parsed.len
    );
}

/// Says why a peer test does not run: `SKIPPED` on a developer's machine,
/// a failure under `CI=true`, where `.ci/run` installs every peer and a
/// missing one is a broken install step.
fn skip(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}, and CI=true: .ci/run must install it");
    }
    eprintln!("SKIPPED: {why}");
}

/// The Debian path of nginx's stream module.
const NGINX_STREAM: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// nginx with a stream server on `listen` that reads a PROXY header and
/// answers with the addresses it names, then closes.
fn nginx(listen: SocketAddr) -> Option<Peer> {
    let Some(program) = which("nginx") else {
        skip("nginx is not installed (apt-get install nginx libnginx-mod-stream)");
        return None;
    };
    if !Path::new(NGINX_STREAM).is_file() {
        skip("nginx's stream module is not installed (apt-get install libnginx-mod-stream)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = format!(
        "load_module {NGINX_STREAM};\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
         stream {{ server {{ listen {listen} proxy_protocol; proxy_protocol_timeout 5s;\n\
         return \"$proxy_protocol_addr:$proxy_protocol_port \
         $proxy_protocol_server_addr:$proxy_protocol_server_port\\n\"; }} }}\n"
    );
    let file = dir.path().join("nginx.conf");
    std::fs::write(&file, config).unwrap();
    let prefix = format!("{d}/");
    let error_log = format!("{d}/error.log");
    let args = [
        "-p",
        &prefix,
        "-c",
        file.to_str().unwrap(),
        "-e",
        &error_log,
    ];
    Some(Peer::start(&program, &args, dir))
}

/// What nginx on `listen` answers a connection that starts with `header`:
/// the two addresses, as text.
async fn nginx_reads(peer: &mut Peer, listen: SocketAddr, header: &[u8]) -> String {
    let mut stream = peer.connect(CLIENT, listen).await;
    stream.write_all(header).await.unwrap();
    let mut reply = String::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_string(&mut reply)).await;
    read.unwrap_or_else(|_| panic!("no answer from nginx:\n{}", peer.logs()))
        .unwrap();
    reply
}

/// `addr:port` as nginx writes it, IPv6 without brackets.
fn nginx_address(text: &str) -> SocketAddr {
    let (ip, port) = text.rsplit_once(':').unwrap();
    SocketAddr::new(ip.parse().unwrap(), port.parse().unwrap())
}

/// nginx reads each header `version` writes for IPv4, IPv6 and mixed
/// pairs, and names exactly its addresses (mixed ones as IPv6, mapped).
async fn nginx_reads_the_headers_of(version: ProxyProtocol, listen_ip: [u8; 4]) {
    let listen = free_port(IpAddr::from(listen_ip));
    let Some(mut peer) = nginx(listen) else {
        return;
    };
    let cases = [
        (
            "127.0.88.7:40001",
            "127.0.88.30:443",
            "127.0.88.7:40001",
            "127.0.88.30:443",
        ),
        ("[::1]:40002", "[::1]:8443", "[::1]:40002", "[::1]:8443"),
        (
            "127.0.88.7:40003",
            "[::1]:443",
            "[::ffff:127.0.88.7]:40003",
            "[::1]:443",
        ),
    ];
    for (source, destination, want_source, want_destination) in cases {
        let sent = Addresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        };
        let header = encode(version, Transport::Stream, &sent);
        let reply = nginx_reads(&mut peer, listen, header.as_bytes()).await;
        let Some((s, d)) = reply.trim_end().split_once(' ') else {
            panic!("{header:?}: nginx answered {reply:?}\n{}", peer.logs());
        };
        let named = (nginx_address(s), nginx_address(d));
        let want = (
            want_source.parse().unwrap(),
            want_destination.parse().unwrap(),
        );
        assert_eq!(named, want, "{header:?}: nginx answered {reply:?}");
    }
}

#[tokio::test]
async fn nginx_reads_the_v1_headers_lb_writes() {
    nginx_reads_the_headers_of(ProxyProtocol::V1, [127, 0, 88, 20]).await;
}

#[tokio::test]
async fn nginx_reads_the_v2_headers_lb_writes() {
    nginx_reads_the_headers_of(ProxyProtocol::V2, [127, 0, 88, 21]).await;
}
