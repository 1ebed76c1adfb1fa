//! Issue 15, descriptors: the data plane's descriptor budget keeps a reserve
//! for the admin API (clients past it are reset as `local_resources`), UDP
//! flow sockets never outnumber `udp_max_flows`, and a proxy out of
//! descriptors never blames its endpoints. Addresses: 127.0.150.0/24 (and
//! fresh cluster IPs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::support::bin::{Run, Running};
use crate::support::config::{base_toml, service_toml};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(5);

/// Runs the binary with `ulimit -n` (soft and hard) at `limit`.
fn run_limited(limit: u32, admin: SocketAddr, services: &str) -> Result<Running> {
    let wrapper = format!("ulimit -n {limit} && exec \"$0\" \"$@\"");
    Run::text(&(base_toml(admin) + services))
        .under(&["sh", "-c", &wrapper])
        .admin(admin)
        .start()
}

/// The sum of every `/metrics` sample of `name` whose labels contain `label`.
fn metric_sum(proxy: &Running, name: &str, label: &str) -> f64 {
    let Ok((_, body)) = http_get(proxy.admin(), "/metrics") else {
        return f64::NAN;
    };
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Descriptors the process `pid` has open now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether a connection to `addr` is proxied to the echo backend: a message
/// comes back. False when it is refused, reset or closed.
fn served(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    s.write_all(b"ping").ok()?;
    let mut back = [0u8; 4];
    s.read_exact(&mut back).ok()?;
    (&back == b"ping").then_some(s)
}

#[test]
fn clients_past_the_descriptor_budget_are_reset_and_the_admin_api_still_answers() -> Result<()> {
    let backend = echo_backend("127.0.150.1");
    let admin = SocketAddr::new(ip("127.0.150.2"), free_port("127.0.150.2"));
    let front = SocketAddr::new(fresh_ip(), 8080);
    let proxy = run_limited(
        256,
        admin,
        &service_toml("echo", front.ip(), front.port(), &[backend.addr], ""),
    )?;
    let (_, config) = http_get(admin, "/api/v1/config")?;
    let config: serde_json::Value = serde_json::from_str(&config)?;
    assert_eq!(config["descriptors"]["limit"], 256, "{config}");
    assert_eq!(config["descriptors"]["reserve"], 64, "{config}");

    // 256 descriptors, 64 of them reserved: the data plane holds at most
    // 192, two per client, so fewer than 96 clients are served.
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..160 {
        match served(front) {
            Some(s) => clients.push(s),
            None => refused += 1,
        }
    }
    ensure!(
        (80..96).contains(&clients.len()),
        "{} clients served",
        clients.len()
    );
    assert_eq!(refused, 160 - clients.len());
    assert_eq!(
        metric_sum(
            &proxy,
            "lb_rejected_connections_total",
            "reason=\"local_resources\""
        ),
        refused as f64
    );

    // The reserve holds the admin API: 16 connections at once.
    let mut admins = Vec::new();
    for _ in 0..16 {
        let s = TcpStream::connect_timeout(&admin, WAIT).context("admin connect")?;
        s.set_read_timeout(Some(WAIT))?;
        admins.push(s);
    }
    for s in &mut admins {
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes())?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).context("/healthz answers")?;
        assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    }
    let (status, metrics) = http_get(admin, "/metrics")?;
    assert_eq!(status, 200);
    assert!(metrics.contains("lb_rejected_connections_total"));
    drop(admins);

    // The clients leave: service resumes.
    drop(clients);
    assert!(
        eventually_blocking(WAIT, || served(front).is_some()),
        "not served again after the clients left"
    );
    Ok(())
}

#[test]
fn udp_flow_sockets_never_outnumber_udp_max_flows() -> Result<()> {
    let backend = udp_echo_backend("127.0.150.11");
    let admin = SocketAddr::new(ip("127.0.150.12"), free_port("127.0.150.12"));
    let front = SocketAddr::new(fresh_ip(), 5353);
    let services = format!(
        "\n[[services]]\nname = \"dns\"\ncluster_ip = \"{}\"\n\
         ports = [{{ name = \"udp\", port = {}, protocol = \"UDP\", target_port = {} }}]\n\
         [[endpoints]]\nname = \"dns\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"{}\" }}]\n\
         ports = [{{ name = \"udp\", port = {}, protocol = \"UDP\" }}]\n",
        front.ip(),
        front.port(),
        backend.addr.port(),
        backend.addr.ip(),
        backend.addr.port(),
    );
    let text = base_toml(admin).replace("[proxy]\n", "[proxy]\nudp_max_flows = 50\n") + &services;
    let proxy = Run::text(&text).admin(admin).start()?;
    let pid = proxy.pid();
    let baseline = open_fds(pid);

    // Watch the proxy's descriptors while 500 client sockets send.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(baseline));
    let watcher = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(open_fds(pid), Ordering::Relaxed);
            }
        })
    };
    let clients: Vec<UdpSocket> = (0..500)
        .map(|_| UdpSocket::bind("127.0.150.14:0"))
        .collect::<std::io::Result<_>>()?;
    for round in 0..2 {
        for c in &clients {
            c.send_to(format!("hello {round}").as_bytes(), front)?;
        }
    }
    let evicted = |p: &Running| metric_sum(p, "lb_udp_flows_evicted_total", "");
    assert!(
        eventually_blocking(WAIT, || evicted(&proxy) >= 900.0),
        "flows evicted: {}",
        evicted(&proxy)
    );
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let peak = peak.load(Ordering::Relaxed);
    // 50 flows, plus the few sockets a batch being sent still holds (16).
    assert!(
        peak <= baseline + 50 + 16,
        "{peak} descriptors open at the peak, {baseline} before"
    );
    assert_eq!(
        metric_sum(&proxy, "lb_udp_datagrams_total", "reason=\"flow_limit\""),
        0.0
    );
    Ok(())
}

/// Set in the child process of
/// [`local_exhaustion_is_not_blamed_on_endpoints`].
const CHILD: &str = "LB_FDS_CHILD";

#[test]
fn local_exhaustion_is_not_blamed_on_endpoints() -> Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return exhaustion_child();
    }
    // Alone in a process of its own: it lowers the open-file limit and
    // takes every descriptor left, which other tests would trip on.
    let name = concat!(
        module_path!(),
        "::local_exhaustion_is_not_blamed_on_endpoints"
    );
    let name = name.split_once("::").map_or(name, |(_, rest)| rest);
    let out = Command::new(std::env::current_exe()?)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()?;
    ensure!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
    Ok(())
}

/// Opens `/dev/null` until the process is out of descriptors, then gives
/// one back: the next `accept(2)` gets it, and the dial's `socket(2)` after
/// it finds none.
fn all_but_one() -> Vec<std::fs::File> {
    let mut held = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        held.push(f);
    }
    held.pop();
    held
}

fn exhaustion_child() -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard)?;
    let rt = tokio::runtime::Runtime::new()?;
    let backend = echo_backend("127.0.150.21");
    let front = SocketAddr::new(ip("127.0.150.22"), 8080);
    let mut settings = plane::settings();
    settings.outlier_consecutive_failures = 1;
    let plane = rt.block_on(plane::start(
        settings,
        vec![plane::service("echo", front, &[backend.addr])],
    ));
    assert_eq!(plane.descriptors().limit, Some(256.min(hard)));

    for _ in 0..3 {
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        client.set_read_timeout(Some(WAIT))?;
        let others = all_but_one();
        client.connect(&front.into())?;
        let mut client = TcpStream::from(client);
        let _ = client.write_all(b"ping");
        let mut buf = [0u8; 4];
        let got = client.read(&mut buf);
        assert!(
            matches!(got, Ok(0) | Err(_)),
            "served with no descriptor left: {got:?}"
        );
        drop(client);
        drop(others);
    }

    let port = plane::port_stats(&plane, front, lb_core::Protocol::Tcp);
    let endpoint = plane::endpoint_stats(&plane, front, backend.addr);
    assert!(
        rt.block_on(eventually(WAIT, || {
            port.rejected_local_resources.load(Ordering::Relaxed) == 3
        })),
        "rejected as local_resources: {}",
        port.rejected_local_resources.load(Ordering::Relaxed)
    );
    assert_eq!(endpoint.connect_errors.load(Ordering::Relaxed), 0);
    let snapshot = plane.table().load();
    let entry = snapshot
        .frontend(front, lb_core::Protocol::Tcp)
        .context("frontend")?;
    assert!(
        !entry
            .port
            .endpoint(0)
            .health
            .is_ejected(std::time::Instant::now()),
        "the endpoint was ejected for the proxy's own shortage"
    );

    // Descriptors free again: served.
    assert!(
        served(front).is_some(),
        "not served once descriptors are free"
    );
    rt.block_on(plane.shutdown());
    Ok(())
}
