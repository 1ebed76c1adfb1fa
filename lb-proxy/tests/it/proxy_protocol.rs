//! PROXY protocol headers on the wire, with nginx as the endpoint that reads
//! them (`listen ... proxy_protocol` in its stream module), so the test is
//! nginx's reading of the format, not lb's own idea of it: the backend
//! answers with the client and server addresses the header gave it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::ProxyProtocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::support::tools::{nginx_stream_required, NginxStream};
use crate::support::*;

/// An nginx endpoint on `at` that expects a PROXY header (v1 or v2, nginx
/// detects which) and answers with what it said:
/// `client-addr:client-port server-addr:server-port`.
async fn proxy_protocol_echo(at: SocketAddr) -> NginxStream {
    NginxStream::start(
        &format!(
            "server {{ listen {at} proxy_protocol; \
             return \"$proxy_protocol_addr:$proxy_protocol_port \
             $proxy_protocol_server_addr:$proxy_protocol_server_port\"; }}"
        ),
        at,
    )
    .await
}

/// lb in front of a [`proxy_protocol_echo`] nginx: the service `web` at a
/// fresh cluster IP with the nginx as its one endpoint, shaped by `shape`
/// (the header it sends, whether it accepts one).
async fn echo_behind_lb(
    settings: lb_core::ProxySettings,
    shape: impl FnOnce(lb_core::ServiceSpec) -> lb_core::ServiceSpec,
) -> (NginxStream, SocketAddr, lb_proxy::DataPlane) {
    let backend = SocketAddr::new(fresh_ip(), free_port("127.0.0.1"));
    let nginx = proxy_protocol_echo(backend).await;
    let vip = vip();
    let plane = start(settings, vec![shape(service("web", vip, &[backend]))]).await;
    (nginx, vip, plane)
}

/// Connects to `vip` from `from` (a port the kernel picks) and reads the
/// whole answer; returns the client's own address and the answer.
async fn ask_from(from: IpAddr, vip: SocketAddr) -> (SocketAddr, String) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind the client");
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(vip))
        .await
        .expect("connect in time")
        .expect("connect");
    let me = stream.local_addr().expect("local address");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("the answer in time")
        .expect("read the answer");
    let _ = stream.shutdown().await;
    (me, answer)
}

async fn endpoints_see_each_clients_own_address(version: ProxyProtocol) {
    if !nginx_stream_required() {
        return;
    }
    let (nginx, vip, plane) = echo_behind_lb(settings(), |s| s.with_proxy_protocol(version)).await;
    for from in ["127.0.88.7", "127.0.88.8", "127.0.88.9"] {
        let (me, answer) = ask_from(from.parse().unwrap(), vip).await;
        assert_eq!(
            answer,
            format!("{me} {vip}"),
            "{} through lb: nginx's log: {}",
            version.as_str(),
            nginx.error_log()
        );
    }
    plane.shutdown().await;
}

#[tokio::test]
async fn a_v1_header_gives_the_endpoint_each_clients_address_and_the_frontend() {
    endpoints_see_each_clients_own_address(ProxyProtocol::V1).await;
}

#[tokio::test]
async fn a_v2_header_gives_the_endpoint_each_clients_address_and_the_frontend() {
    endpoints_see_each_clients_own_address(ProxyProtocol::V2).await;
}

#[tokio::test]
async fn a_failover_sends_the_header_to_the_endpoint_that_answers() {
    if !nginx_stream_required() {
        return;
    }
    let backend = SocketAddr::new(fresh_ip(), free_port("127.0.0.1"));
    let nginx = proxy_protocol_echo(backend).await;
    // Refuses every connection: each client's first dial fails over.
    let refusing = closed_port(fresh_ip());
    let vip = vip();
    let plane = start(
        no_ejection(),
        vec![service("web", vip, &[refusing, backend]).with_proxy_protocol(ProxyProtocol::V2)],
    )
    .await;
    for _ in 0..4 {
        let (me, answer) = ask_from("127.0.88.10".parse().unwrap(), vip).await;
        assert_eq!(
            answer,
            format!("{me} {vip}"),
            "nginx's log: {}",
            nginx.error_log()
        );
    }
    plane.shutdown().await;
}

#[tokio::test]
async fn without_the_setting_no_header_is_sent() {
    // A plain backend: what lb sends arrives first and as it was.
    let echo = echo_backend("127.0.88.20");
    let vip = vip();
    let plane = start(settings(), vec![service("web", vip, &[echo.addr])]).await;
    let mut stream = tokio::net::TcpStream::connect(vip).await.expect("connect");
    stream.write_all(b"hello").await.expect("write");
    let mut got = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .expect("the echo in time")
        .expect("read the echo");
    assert_eq!(&got, b"hello");
    plane.shutdown().await;
}

/// What a UDP endpoint behind `proxy_protocol = "v2"` parses from each
/// datagram: the v2 header's source and destination (IPv4, as the test
/// sends), and the payload after it. `None` when the datagram does not
/// start with a v2 PROXY header for UDP over IPv4.
fn parse_v2_udp4(datagram: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    if datagram.len() < 28 || &datagram[..12] != SIGNATURE {
        return None;
    }
    // Version 2, command PROXY; AF_INET, DGRAM; 12 bytes of addresses.
    if datagram[12] != 0x21 || datagram[13] != 0x12 {
        return None;
    }
    let len = u16::from_be_bytes([datagram[14], datagram[15]]) as usize;
    let body = datagram.get(16..16 + len)?;
    let ip = |b: &[u8]| IpAddr::from([b[0], b[1], b[2], b[3]]);
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let source = SocketAddr::new(ip(&body[0..4]), port(&body[8..10]));
    let destination = SocketAddr::new(ip(&body[4..8]), port(&body[10..12]));
    Some((source, destination, &datagram[16 + len..]))
}

#[tokio::test]
async fn each_udp_datagram_to_the_endpoint_starts_with_a_v2_header() {
    // The endpoint parses the header and answers with what it read.
    let endpoint = tokio::net::UdpSocket::bind((fresh_ip(), 0))
        .await
        .expect("bind the endpoint");
    let endpoint_addr = endpoint.local_addr().expect("endpoint address");
    let answering = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = endpoint.recv_from(&mut buf).await else {
                return;
            };
            let answer = match parse_v2_udp4(&buf[..n]) {
                Some((source, destination, payload)) => format!(
                    "{source} {destination} {}",
                    String::from_utf8_lossy(payload)
                ),
                None => "no header".to_string(),
            };
            let _ = endpoint.send_to(answer.as_bytes(), from).await;
        }
    });
    let vip = vip();
    let plane = start(
        settings(),
        vec![udp_service("dns", vip, &[endpoint_addr]).with_proxy_protocol(ProxyProtocol::V2)],
    )
    .await;
    let client = tokio::net::UdpSocket::bind("127.0.88.30:0")
        .await
        .expect("bind the client");
    client.connect(vip).await.expect("connect the client");
    let me = client.local_addr().expect("client address");
    for payload in ["one", "two"] {
        client.send(payload.as_bytes()).await.expect("send");
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("an answer in time")
            .expect("receive");
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("{me} {vip} {payload}"),
            "the endpoint read the client and the frontend from the header, then the payload"
        );
    }
    plane.shutdown().await;
    answering.abort();
}

// === accepting headers from a load balancer in front ===

/// Settings trusting 127.0.90.0/24 (where the tests' "load balancers"
/// connect from) to send PROXY headers.
fn trusting_balancers() -> lb_core::ProxySettings {
    lb_core::ProxySettings {
        proxy_protocol_trusted_cidrs: vec!["127.0.90.0/24".parse().unwrap()],
        ..settings()
    }
}

/// Connects to `vip` from `from`, writes `bytes` (`chunk` bytes at a time,
/// 5 ms apart) and reads until the connection ends: the answer, or the
/// error that ended it (a reset).
async fn send_from(
    from: &str,
    vip: SocketAddr,
    bytes: &[u8],
    chunk: usize,
) -> std::io::Result<String> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    let mut stream = socket.connect(vip).await?;
    for piece in bytes.chunks(chunk.max(1)) {
        stream.write_all(piece).await?;
        if chunk < bytes.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn the_client_a_trusted_balancer_names_is_the_one_the_endpoint_hears_of() {
    if !nginx_stream_required() {
        return;
    }
    let (nginx, vip, plane) = echo_behind_lb(trusting_balancers(), |s| {
        s.accepting_proxy_protocol()
            .with_proxy_protocol(ProxyProtocol::V2)
    })
    .await;
    // A v1 header whole, and the same header one byte at a time.
    let header = b"PROXY TCP4 127.0.91.5 127.0.92.1 40001 443\r\n";
    for chunk in [header.len(), 1] {
        let answer = send_from("127.0.90.1", vip, header, chunk)
            .await
            .expect("served");
        assert_eq!(
            answer,
            "127.0.91.5:40001 127.0.92.1:443",
            "chunks of {chunk}: the header lb sends on names the balancer's client and \
             destination; nginx's log: {}",
            nginx.error_log()
        );
    }
    plane.shutdown().await;
}

#[tokio::test]
async fn a_connection_without_a_header_or_from_an_untrusted_source_is_reset_and_counted() {
    let echo = echo_backend("127.0.88.40");
    let vip = vip();
    let plane = start(
        trusting_balancers(),
        vec![service("web", vip, &[echo.addr]).accepting_proxy_protocol()],
    )
    .await;
    // Trusted, but the bytes are no header.
    let no_header = send_from("127.0.90.2", vip, b"GET / HTTP/1.1\r\n\r\n", 64).await;
    assert_eq!(
        no_header.expect_err("reset").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    // A valid header, from outside proxy_protocol_trusted_cidrs.
    let untrusted = send_from(
        "127.0.89.2",
        vip,
        b"PROXY TCP4 127.0.91.5 127.0.92.1 40001 443\r\nhello",
        64,
    )
    .await;
    assert_eq!(
        untrusted.expect_err("reset").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    let stats = port_stats(&plane, vip, lb_core::Protocol::Tcp);
    assert_eq!(lb_core::stats::read(&stats.rejected_proxy_protocol), 2);
    assert_eq!(
        lb_core::stats::read(&stats.accepted),
        0,
        "a refused header is not an accepted connection"
    );
    // A LOCAL header (a balancer's health check) is served as the
    // connection itself: the payload after it reaches the endpoint.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(b"ping");
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.90.3:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(vip).await.expect("connect");
    stream.write_all(&local).await.expect("write");
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&got, b"ping");
    plane.shutdown().await;
}

#[tokio::test]
async fn client_ip_affinity_follows_the_client_the_header_names() {
    let a = http_backend("127.0.88.51", "a");
    let b = http_backend("127.0.88.52", "b");
    let vip = vip();
    let plane = start(
        trusting_balancers(),
        vec![service("web", vip, &[a.addr, b.addr])
            .accepting_proxy_protocol()
            .with_affinity(lb_core::SessionAffinity::ClientIp {
                timeout: Duration::from_secs(600),
            })],
    )
    .await;
    // Every connection comes from the same balancer address; the headers
    // name two clients, each of which must stay on its own endpoint.
    let mut seen = std::collections::BTreeMap::<&str, std::collections::BTreeSet<String>>::new();
    for _ in 0..4 {
        for client in ["127.0.91.10", "127.0.91.11"] {
            let header = format!("PROXY TCP4 {client} 127.0.92.1 40001 80\r\n");
            let answer = send_from("127.0.90.4", vip, header.as_bytes(), 1024)
                .await
                .expect("served");
            seen.entry(client).or_default().insert(answer);
        }
    }
    let endpoints: std::collections::BTreeSet<&String> = seen.values().flatten().collect();
    assert!(
        seen.values().all(|answers| answers.len() == 1),
        "each client stays on one endpoint: {seen:?}"
    );
    assert_eq!(
        endpoints.len(),
        2,
        "two clients behind one balancer are two clients, not one: {seen:?}"
    );
    plane.shutdown().await;
}

/// HAProxy in `mode tcp` listening on `listen`, sending every connection on
/// to `to` from 127.0.90.9 with `send` (`send-proxy` or `send-proxy-v2`);
/// killed on drop.
struct Haproxy {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(listen: SocketAddr, to: SocketAddr, send: &str) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global\n  maxconn 64\ndefaults\n  mode tcp\n  timeout connect 2s\n  \
                 timeout client 10s\n  timeout server 10s\n\
                 listen front\n  bind {listen}\n  \
                 server lb {to} {send} source 127.0.90.9\n"
            ),
        )
        .expect("write haproxy.cfg");
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let up = eventually_async(Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(listen).await.is_ok()
        })
        .await;
        assert!(up, "haproxy did not listen on {listen} within 5 s");
        Haproxy { child, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn behind_haproxy_the_endpoint_hears_of_the_client_haproxy_served() {
    if !crate::support::tools::required("haproxy", "apt-get install haproxy")
        || !nginx_stream_required()
    {
        return;
    }
    let (nginx, vip, plane) = echo_behind_lb(trusting_balancers(), |s| {
        s.accepting_proxy_protocol()
            .with_proxy_protocol(ProxyProtocol::V1)
    })
    .await;
    for send in ["send-proxy", "send-proxy-v2"] {
        let front = SocketAddr::new(fresh_ip(), free_port("127.0.0.1"));
        let _haproxy = Haproxy::start(front, vip, send).await;
        let (me, answer) = ask_from("127.0.91.20".parse().unwrap(), front).await;
        assert_eq!(
            answer,
            format!("{me} {front}"),
            "HAProxy ({send}) -> lb -> nginx: nginx hears of HAProxy's client; nginx's log: {}",
            nginx.error_log()
        );
    }
    plane.shutdown().await;
}

#[tokio::test]
async fn source_ranges_judge_the_client_the_header_names() {
    let ok = http_backend("127.0.88.60", "ok");
    let vip = vip();
    let lb_address = SocketAddr::new(fresh_ip(), vip.port());
    let mut spec = service("web", vip, &[ok.addr]).accepting_proxy_protocol();
    spec.service_type = lb_core::ServiceType::LoadBalancer;
    spec.load_balancer_ips = vec![lb_address.ip()];
    spec.load_balancer_source_ranges = vec!["127.0.91.30/32".parse().unwrap()];
    let plane = start(trusting_balancers(), vec![spec]).await;
    // The balancer itself (127.0.90.5) is outside the ranges; the client it
    // names decides.
    let allowed = send_from(
        "127.0.90.5",
        lb_address,
        b"PROXY TCP4 127.0.91.30 127.0.92.1 40001 80\r\n",
        1024,
    )
    .await;
    assert_eq!(allowed.expect("inside the ranges: served"), "ok");
    let refused = send_from(
        "127.0.90.5",
        lb_address,
        b"PROXY TCP4 127.0.91.31 127.0.92.1 40001 80\r\n",
        1024,
    )
    .await;
    assert_eq!(
        refused.expect_err("outside the ranges: reset").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    let stats = port_stats(&plane, lb_address, lb_core::Protocol::Tcp);
    assert_eq!(lb_core::stats::read(&stats.rejected_source_range), 1);
    plane.shutdown().await;
}
