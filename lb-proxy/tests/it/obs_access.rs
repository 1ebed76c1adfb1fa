//! The binary's access log (`[log] access`) and its warning that clients
//! are turned away, read from its stderr: one line per connection or flow
//! when it ends, in text and in JSON, with each field right for a clean
//! close, a reset, a rejected connection and a failover; none by default;
//! a reload turns it on for new connections. The warning names the port,
//! the frontend and the reason, once per 10 s per service port with the
//! count held back. Addresses are fresh (`fresh_ip`).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Result;

use crate::support::bin::{Run, Running};
use crate::support::config::{base_toml, service_toml};
use crate::support::*;

/// Connects to `addr`, echoes `msg` and closes cleanly (FIN both ways);
/// returns the client's own address (the log's `client`).
fn echo_once(addr: SocketAddr, msg: &[u8]) -> SocketAddr {
    let mut c = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    let client = c.local_addr().expect("local address");
    c.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
    c.shutdown(Shutdown::Write).expect("FIN");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    client
}

/// Connects to `addr`, sends `msg` and reads until the connection ends
/// (by a reset or a FIN); returns the client's own address. The socket is
/// bound before it connects: a reset may come before the connect returns.
fn send_until_closed(addr: SocketAddr, msg: &[u8]) -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(fresh_ip(), 0).into())
        .expect("bind");
    let client = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local address");
    if socket.connect_timeout(&addr.into(), WAIT).is_err() {
        return client;
    }
    let mut c: TcpStream = socket.into();
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    let _ = c.write_all(msg);
    let mut buf = [0u8; 64];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    client
}

/// The access lines logged so far (text or JSON).
fn access_lines(proxy: &Running) -> Vec<String> {
    proxy
        .logs()
        .lines()
        .filter(|l| l.contains("lb_proxy::access"))
        .map(str::to_owned)
        .collect()
}

/// The access line for `client`, once logged (10 s at most).
fn line_of(proxy: &Running, client: SocketAddr) -> String {
    let needle = format!("{client} -> ");
    let mut found = None;
    eventually_blocking(WAIT, || {
        found = access_lines(proxy)
            .into_iter()
            .find(|l| l.contains(&needle));
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no access line for {client}:\n{}", proxy.logs()))
}

/// The text of the access line after its target: the fields in order.
fn fields(line: &str) -> &str {
    line.split_once("lb_proxy::access: ")
        .map_or("", |(_, rest)| rest)
}

/// Splits the text line's duration off (it varies) and checks its form.
fn without_duration(line: &str) -> String {
    let f = fields(line);
    let (head, ms) = f.rsplit_once(' ').expect("a duration");
    assert!(
        ms.ends_with("ms") && ms.trim_end_matches("ms").parse::<u64>().is_ok(),
        "duration in {line}"
    );
    head.to_owned()
}

/// `lb-proxy run` with `services` (and `extra` at the end of the file).
fn proxy(services: &str, extra: &str, args: &[&str]) -> Result<Running> {
    proxy_with(services, extra, args, "")
}

/// [`proxy`] with `settings` added to `[proxy]`.
fn proxy_with(services: &str, extra: &str, args: &[&str], settings: &str) -> Result<Running> {
    let ip = fresh_ip();
    let admin = SocketAddr::new(ip, free_port(ip));
    let head = base_toml(admin).replace(
        "drain_timeout = \"2s\"\n",
        &format!("drain_timeout = \"2s\"\n{settings}\n"),
    );
    let text = format!("{head}{services}{extra}");
    let mut run = Run::text(&text).admin(admin);
    for a in args {
        run = run.arg(a);
    }
    run.start()
}

/// A service `name` over `backends` at a fresh cluster IP; its frontend.
fn service(name: &str, backends: &[SocketAddr]) -> (String, SocketAddr) {
    let vip = fresh_ip();
    let port = free_port(vip);
    (
        service_toml(name, vip, port, backends, ""),
        SocketAddr::new(vip, port),
    )
}

/// An endpoint address on a fresh IP at `port` where nothing listens.
fn dead(port: u16) -> SocketAddr {
    SocketAddr::new(fresh_ip(), port)
}

const ACCESS_ON: &str = "\n[log]\naccess = true\n";

#[test]
fn without_the_log_table_no_access_line_is_written() -> Result<()> {
    let backend = echo_backend(fresh_ip());
    let (toml, web) = service("web", &[backend.addr]);
    let proxy = proxy(&toml, "", &[])?;
    echo_once(web, b"hello");
    let closed = r#"lb_connections_closed_total{namespace="default",service="web",port="tcp",protocol="TCP",cause="closed"}"#;
    assert!(eventually_blocking(WAIT, || proxy.metric(closed) == Some(1.0)));
    assert!(access_lines(&proxy).is_empty(), "{}", proxy.logs());
    Ok(())
}

#[test]
fn each_connection_ends_in_one_text_line_with_its_client_frontend_endpoint_reason_bytes_and_cause(
) -> Result<()> {
    let live = echo_backend(fresh_ip());
    let resetting = reset_backend(fresh_ip());
    let (web, web_at) = service("web", &[live.addr]);
    let (rst, rst_at) = service("rst", &[resetting.addr]);
    let (gone, gone_at) = service("gone", &[dead(live.addr.port())]);
    let proxy = proxy(&(web + &rst + &gone), ACCESS_ON, &[])?;

    let client = echo_once(web_at, b"hello");
    assert_eq!(
        without_duration(&line_of(&proxy, client)),
        format!(
            "{client} -> {web_at} default/web:tcp/TCP -> {} round_robin closed 5 5",
            live.addr
        )
    );

    let client = send_until_closed(rst_at, b"x");
    assert_eq!(
        without_duration(&line_of(&proxy, client)),
        format!(
            "{client} -> {rst_at} default/rst:tcp/TCP -> {} round_robin reset 1 0",
            resetting.addr
        )
    );

    let client = send_until_closed(gone_at, b"");
    assert_eq!(
        without_duration(&line_of(&proxy, client)),
        format!("{client} -> {gone_at} default/gone:tcp/TCP -> - - rejected:connect_failed 0 0")
    );
    Ok(())
}

#[test]
fn a_connection_that_failed_over_is_logged_with_the_endpoint_that_took_it() -> Result<()> {
    let live = echo_backend(fresh_ip());
    // Both endpoints are on the live one's port; the dead one never answers.
    let (toml, at) = service("fo", &[live.addr, dead(live.addr.port())]);
    let proxy = proxy(&toml, ACCESS_ON, &[])?;
    // Round robin sends one of two clients to the dead endpoint first.
    let clients = [echo_once(at, b"ab"), echo_once(at, b"ab")];
    let lines: Vec<String> = clients
        .iter()
        .map(|c| without_duration(&line_of(&proxy, *c)))
        .collect();
    let want = |client: &SocketAddr, reason: &str| {
        format!(
            "{client} -> {at} default/fo:tcp/TCP -> {} {reason} closed 2 2",
            live.addr
        )
    };
    assert!(
        lines
            == [
                want(&clients[0], "round_robin"),
                want(&clients[1], "failover")
            ]
            || lines
                == [
                    want(&clients[0], "failover"),
                    want(&clients[1], "round_robin")
                ],
        "{lines:#?}"
    );
    let failovers =
        r#"lb_failovers_total{namespace="default",service="fo",port="tcp",protocol="TCP"}"#;
    assert_eq!(proxy.metric(failovers), Some(1.0));
    Ok(())
}

#[test]
fn json_access_lines_carry_every_field_as_a_key() -> Result<()> {
    let live = echo_backend(fresh_ip());
    let (web, web_at) = service("web", &[live.addr]);
    let (gone, gone_at) = service("gone", &[dead(live.addr.port())]);
    let proxy = proxy(&(web + &gone), ACCESS_ON, &["--log-format", "json"])?;

    let json_of = |client: SocketAddr| -> serde_json::Value {
        let needle = format!("\"client\":\"{client}\"");
        let mut found = None;
        eventually_blocking(WAIT, || {
            found = access_lines(&proxy)
                .into_iter()
                .find(|l| l.contains(&needle));
            found.is_some()
        });
        let line = found.unwrap_or_else(|| panic!("no line for {client}:\n{}", proxy.logs()));
        serde_json::from_str(&line).expect("one JSON object per line")
    };

    let client = echo_once(web_at, b"hello!");
    let v = json_of(client);
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["target"], "lb_proxy::access");
    let f = &v["fields"];
    assert_eq!(f["protocol"], "TCP");
    assert_eq!(f["client"], client.to_string());
    assert_eq!(f["frontend"], web_at.to_string());
    assert_eq!(f["service"], "default/web:tcp/TCP");
    assert_eq!(f["endpoint"], live.addr.to_string());
    assert_eq!(f["reason"], "round_robin");
    assert_eq!(f["bytes_rx"], 6);
    assert_eq!(f["bytes_tx"], 6);
    assert!(f["duration_ms"].is_u64(), "{v}");
    assert_eq!(f["cause"], "closed");
    assert_eq!(f["rejected"], "-");

    let client = send_until_closed(gone_at, b"");
    let f = json_of(client)["fields"].clone();
    assert_eq!(f["service"], "default/gone:tcp/TCP");
    assert_eq!(f["endpoint"], "-");
    assert_eq!(f["reason"], "-");
    assert_eq!(f["cause"], "rejected");
    assert_eq!(f["rejected"], "connect_failed");
    assert_eq!(
        (f["bytes_rx"].as_u64(), f["bytes_tx"].as_u64()),
        (Some(0), Some(0))
    );
    Ok(())
}

#[test]
fn a_reload_that_turns_the_access_log_on_logs_the_connections_that_follow() -> Result<()> {
    let live = echo_backend(fresh_ip());
    let (toml, at) = service("web", &[live.addr]);
    let proxy = proxy(&toml, "", &[])?;
    echo_once(at, b"before");
    let closed = r#"lb_connections_closed_total{namespace="default",service="web",port="tcp",protocol="TCP",cause="closed"}"#;
    assert!(eventually_blocking(WAIT, || proxy.metric(closed) == Some(1.0)));
    assert!(access_lines(&proxy).is_empty());

    let text = std::fs::read_to_string(proxy.config())? + ACCESS_ON;
    std::fs::write(proxy.config(), text)?;
    proxy.signal("HUP");
    // The reload lands asynchronously: new connections until one is logged.
    let logged = eventually_blocking(WAIT, || {
        let client = echo_once(at, b"after");
        eventually_blocking(Duration::from_millis(500), || {
            proxy.logs().contains(&format!("{client} -> {at}"))
        })
    });
    assert!(logged, "{}", proxy.logs());
    Ok(())
}

#[test]
fn a_udp_flow_is_logged_when_it_expires_with_its_bytes_each_way() -> Result<()> {
    let backend = udp_echo_backend(fresh_ip());
    let vip = fresh_ip();
    let port = free_udp_port(vip);
    let toml = format!(
        r#"
[[services]]
name = "dns"
cluster_ip = "{vip}"
[[services.ports]]
name = "udp"
protocol = "UDP"
port = {port}
target_port = {target}

[[endpoints]]
name = "dns"
[[endpoints.subsets]]
addresses = [{{ ip = "{ip}" }}]
ports = [{{ name = "udp", port = {target}, protocol = "UDP" }}]
"#,
        target = backend.addr.port(),
        ip = backend.addr.ip(),
    );
    let proxy = proxy_with(&toml, ACCESS_ON, &[], "udp_idle_timeout = \"1s\"")?;
    let frontend = SocketAddr::new(vip, port);
    let client = std::net::UdpSocket::bind((fresh_ip(), 0))?;
    client.set_read_timeout(Some(WAIT))?;
    client.send_to(b"ping!", frontend)?;
    let mut buf = [0u8; 64];
    let (n, _) = client.recv_from(&mut buf)?;
    assert_eq!(&buf[..n], b"ping!");
    let me = client.local_addr()?;
    let line = without_duration(&line_of(&proxy, me));
    assert_eq!(
        line,
        format!(
            "{me} -> {frontend} default/dns:udp/UDP -> {} round_robin idle_timeout 5 5",
            backend.addr
        )
    );
    Ok(())
}

/// The turned-away warnings logged so far for service `name`.
fn warnings(proxy: &Running, name: &str) -> Vec<String> {
    let service = format!("service=default/{name}:tcp/TCP");
    proxy
        .logs()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("client reset") && l.contains(&service))
        .map(str::to_owned)
        .collect()
}

#[test]
fn clients_reset_because_no_endpoint_answered_are_warned_about_once_per_interval() -> Result<()> {
    let live = echo_backend(fresh_ip());
    let refused = dead(live.addr.port());
    let (gone, gone_at) = service("gone", &[refused]);
    let (web, web_at) = service("web", &[live.addr]);
    let proxy = proxy(&(gone + &web), "", &[])?;
    for _ in 0..4 {
        send_until_closed(gone_at, b"");
        echo_once(web_at, b"fine");
    }
    let accepted =
        r#"lb_connections_total{namespace="default",service="gone",port="tcp",protocol="TCP"}"#;
    assert!(eventually_blocking(WAIT, || proxy.metric(accepted) == Some(4.0)));
    assert!(eventually_blocking(WAIT, || !warnings(&proxy, "gone").is_empty()));
    let first = warnings(&proxy, "gone");
    assert_eq!(first.len(), 1, "{first:#?}");
    let line = &first[0];
    assert!(line.contains(&format!("frontend={gone_at}")), "{line}");
    assert!(
        line.contains(&format!("client reset: every dial failed: {refused} ")),
        "{line}"
    );
    assert!(line.contains("(0 more since the last warning"), "{line}");
    // Endpoints that answer are never warned about.
    assert!(warnings(&proxy, "web").is_empty(), "{}", proxy.logs());

    // The next interval's first reset says how many were held back.
    std::thread::sleep(lb_proxy::dataplane::turned_away::INTERVAL);
    send_until_closed(gone_at, b"");
    assert!(eventually_blocking(WAIT, || warnings(&proxy, "gone").len() == 2));
    let second = &warnings(&proxy, "gone")[1];
    assert!(
        second.contains("(3 more since the last warning"),
        "{second}"
    );
    assert!(warnings(&proxy, "web").is_empty());
    Ok(())
}

#[test]
fn a_port_whose_endpoints_all_left_is_warned_about_once() -> Result<()> {
    let live = echo_backend(fresh_ip());
    let (toml, at) = service("web", &[live.addr]);
    let proxy = proxy(&toml, "", &[])?;
    echo_once(at, b"up");
    // The service's endpoints go (the file's last table).
    let text = std::fs::read_to_string(proxy.config())?;
    let text = text
        .split("[[endpoints]]")
        .next()
        .unwrap_or_default()
        .to_owned();
    std::fs::write(proxy.config(), text)?;
    proxy.signal("HUP");
    let warned = format!("no endpoints: listener closed, clients get connection refused service=default/web:tcp/TCP frontend={at}");
    assert!(proxy.logged(&warned, WAIT), "{}", proxy.logs());
    // Another reload with the port still empty says nothing more: once a
    // new service listens, that reload's listeners were reconciled.
    let (other, other_at) = service("other", &[live.addr]);
    let text = std::fs::read_to_string(proxy.config())? + &other;
    std::fs::write(proxy.config(), text)?;
    proxy.signal("HUP");
    assert!(proxy.logged(&format!("listening frontend={other_at}"), WAIT));
    let count = proxy
        .logs()
        .matches("no endpoints: listener closed")
        .count();
    assert_eq!(count, 1, "{}", proxy.logs());
    Ok(())
}

#[test]
fn udp_datagrams_dropped_for_want_of_endpoints_are_warned_about_once_per_interval() -> Result<()> {
    let vip = fresh_ip();
    let port = free_udp_port(vip);
    let toml = format!(
        r#"
[[services]]
name = "dns"
cluster_ip = "{vip}"
[[services.ports]]
name = "udp"
protocol = "UDP"
port = {port}
"#
    );
    let proxy = proxy(&toml, "", &[])?;
    let frontend = SocketAddr::new(vip, port);
    let client = std::net::UdpSocket::bind((fresh_ip(), 0))?;
    let dropped = r#"lb_udp_datagrams_total{namespace="default",service="dns",port="udp",protocol="UDP",result="dropped",reason="no_endpoints"}"#;
    // The frontend is bound once the proxy is up; send until three drops.
    assert!(eventually_blocking(WAIT, || {
        let _ = client.send_to(b"q", frontend);
        proxy.metric(dropped).unwrap_or(0.0) >= 3.0
    }));
    let warned = format!(
        "datagram dropped: no endpoints (0 more since the last warning; one per 10s per service port) service=default/dns:udp/UDP frontend={frontend}"
    );
    assert!(proxy.logged(&warned, WAIT), "{}", proxy.logs());
    assert_eq!(
        proxy
            .logs()
            .matches("datagram dropped: no endpoints")
            .count(),
        1
    );
    Ok(())
}
