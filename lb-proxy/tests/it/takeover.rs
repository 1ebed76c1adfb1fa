//! Hot upgrade: `lb-proxy run --takeover` receives every listening socket of
//! the running lb-proxy for its node (service frontends, admin, DNS), serves
//! on them, and the old process drains and exits 0; clients meanwhile see
//! no refused, reset or failed connection. A takeover that fails leaves one
//! process serving.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

use crate::support::backend::Backend;
use crate::support::bin::Run;
use crate::support::config::{base_toml, service_toml};
use crate::support::*;

/// An admin address of the test's own.
fn fresh_admin() -> SocketAddr {
    let ip = fresh_ip();
    SocketAddr::new(ip, free_port(ip))
}

/// A node's runtime directory and one echo service at a VIP, with a fixed
/// admin address: what every takeover test starts from. Processes started
/// through it share the directory, so they are owners of the same node.
struct Node {
    dir: tempfile::TempDir,
    backend: Backend,
    vip: IpAddr,
    admin: SocketAddr,
    services: String,
}

impl Node {
    fn new() -> Result<Node> {
        let backend = echo_backend("127.0.0.1");
        let vip = fresh_ip();
        let services = service_toml("web", vip, 8080, &[backend.addr], "");
        Ok(Node {
            dir: tempfile::tempdir()?,
            backend,
            vip,
            admin: fresh_admin(),
            services,
        })
    }

    /// The service's frontend.
    fn frontend(&self) -> SocketAddr {
        SocketAddr::new(self.vip, 8080)
    }

    /// The base config with the service.
    fn config(&self) -> String {
        base_toml(self.admin) + &self.services
    }

    /// `lb-proxy run` of this node with `config`.
    fn run(&self, config: &str) -> Run {
        Run::text(config)
            .env("LB_RUNTIME_DIR", self.dir.path())
            .admin(self.admin)
    }

    /// `lb-proxy run --takeover` of this node with `config`.
    fn takeover(&self, config: &str) -> Run {
        self.run(config).arg("--takeover")
    }
}

/// What a client loop saw: answers right, and every failure in words.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Clients that connect, send a line, read it back and close, in a loop,
/// until stopped.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<JoinHandle<()>>,
}

impl ClientLoop {
    fn start(to: SocketAddr, clients: usize) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let threads = (0..clients)
            .map(|c| {
                let (stop, tally) = (stop.clone(), tally.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let line = format!("client {c} request {i}\n");
                        match round_trip(to, line.as_bytes()) {
                            Ok(back) if back == line.as_bytes() => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(back) => tally.failures.lock().unwrap().push(format!(
                                "request {i}: answered {:?}",
                                String::from_utf8_lossy(&back)
                            )),
                            Err(e) => tally
                                .failures
                                .lock()
                                .unwrap()
                                .push(format!("request {i}: {e} ({:?})", e.kind())),
                        }
                    }
                })
            })
            .collect();
        ClientLoop {
            stop,
            tally,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.tally.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients and returns (answers right, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failures = std::mem::take(&mut *self.tally.failures.lock().unwrap());
        (self.tally.ok.load(Ordering::Relaxed), failures)
    }
}

/// One connection: send `line`, half-close, read everything back.
fn round_trip(to: SocketAddr, line: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&to, WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(line)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back)
}

/// Waits until the client loop has `more` answers beyond what it has now.
fn let_clients_run(clients: &ClientLoop, more: u64) {
    let target = clients.ok() + more;
    assert!(
        eventually_blocking(WAIT, || clients.ok() >= target),
        "clients stalled at {}",
        clients.ok()
    );
}

/// The PID `/api/v1/process` names at `admin`.
fn admin_pid(admin: SocketAddr) -> Option<u64> {
    let (_, body) = http_get(admin, "/api/v1/process").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["pid"].as_u64()
}

fn takeover_under_a_client_loop(accept: &str) -> Result<()> {
    let node = Node::new()?;
    let admin = node.admin;
    let mut old = node.run(&node.config()).env("LB_ACCEPT", accept).start()?;
    let clients = ClientLoop::start(node.frontend(), 4);
    let_clients_run(&clients, 50);

    // The new process serves a changed config: one more service.
    let added_vip = fresh_ip();
    let added = service_toml("added", added_vip, 8081, &[node.backend.addr], "");
    let mut new = node
        .takeover(&(node.config() + &added))
        .env("LB_ACCEPT", accept)
        .spawn()?;
    assert!(
        new.logged("took over from lb-proxy pid", WAIT),
        "new: {}\nold: {}",
        new.logs(),
        old.logs()
    );
    // "took over" is said once the old process no longer accepts: from
    // then on only the new one answers.
    for _ in 0..5 {
        assert_eq!(admin_pid(admin), Some(u64::from(new.pid())));
    }
    assert_eq!(
        old.wait_exit(WAIT),
        Some(0),
        "the old process drains and exits 0: {}",
        old.logs()
    );
    let_clients_run(&clients, 50);
    let (ok, failures) = clients.finish();
    assert!(
        failures.is_empty(),
        "{} failures of {}: {:?}\nnew: {}\nold: {}",
        failures.len(),
        ok + failures.len() as u64,
        &failures[..failures.len().min(10)],
        new.logs(),
        old.logs()
    );
    // Everything handed over was claimed: the control socket too.
    assert!(
        !new.logs().contains("closed a handed-over socket"),
        "{}",
        new.logs()
    );
    // The admin port was handed over with the rest: the new process answers.
    assert_eq!(admin_pid(admin), Some(u64::from(new.pid())));
    assert_eq!(new.readyz().0, 200, "{}", new.logs());
    // And the new config is in force.
    assert_eq!(
        round_trip(SocketAddr::new(added_vip, 8081), b"added\n")?,
        b"added\n"
    );
    let old_logs = old.logs();
    assert!(
        old_logs.contains(&format!(
            "handed every listening socket over to lb-proxy pid {}",
            new.pid()
        )),
        "{old_logs}"
    );
    // The next takeover works the same way (the control socket and the
    // lock were handed over too).
    let newer = node
        .takeover(&node.config())
        .env("LB_ACCEPT", accept)
        .spawn()?;
    assert!(
        newer.logged("took over from lb-proxy pid", WAIT),
        "{}",
        newer.logs()
    );
    assert_eq!(new.wait_exit(WAIT), Some(0), "{}", new.logs());
    assert_eq!(round_trip(node.frontend(), b"again\n")?, b"again\n");
    Ok(())
}

#[test]
fn a_takeover_under_a_client_loop_fails_no_request_and_the_old_process_exits_0() -> Result<()> {
    takeover_under_a_client_loop("single")
}

#[test]
fn a_takeover_with_per_core_accept_loops_fails_no_request() -> Result<()> {
    takeover_under_a_client_loop("percore")
}

#[test]
fn dns_and_health_check_ports_are_handed_over_with_the_frontends() -> Result<()> {
    let node = Node::new()?;
    let admin = node.admin;
    let dns_ip = fresh_ip();
    let dns = SocketAddr::new(dns_ip, free_udp_port(dns_ip));
    let hc = free_port("127.0.0.1");
    let pool = fresh_ip();
    let config = base_toml(admin).replace(
        "service_cidr = \"127.77.0.0/16\"",
        "service_cidr = \"127.77.0.0/16\"\nnode_port_range = \"1024-65535\"",
    ) + &format!(
        r#"
[dns]
listen = "{dns}"

[[ip_pools]]
name = "p"
addresses = ["{pool}/32"]

[[services]]
name = "web"
type = "LoadBalancer"
external_traffic_policy = "Local"
health_check_node_port = {hc}
allocate_load_balancer_node_ports = false
ports = [{{ port = 8080 }}]

[[endpoints]]
name = "web"
[[endpoints.subsets]]
addresses = [{{ ip = "127.0.0.1", node_name = "node-1" }}]
ports = [{{ port = {port} }}]
"#,
        port = node.backend.addr.port()
    );
    let health = SocketAddr::new(ip("127.0.0.1"), hc);
    let mut old = node.run(&config).start()?;
    assert!(eventually_blocking(WAIT, || http_get(health, "/").is_ok()));
    let new = node.takeover(&config).spawn()?;
    // Neither port allows a second socket while the old process holds it:
    // the new one serves them only because they were handed over.
    assert!(
        new.logged("took over from lb-proxy pid", WAIT),
        "{}",
        new.logs()
    );
    assert!(!new.logs().contains("cannot bind"), "{}", new.logs());
    assert_eq!(old.wait_exit(WAIT), Some(0), "{}", old.logs());
    let (status, body) = http_get(health, "/")?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"localEndpoints\":1"), "{body}");
    let runtime = tokio::runtime::Runtime::new()?;
    let answer = runtime.block_on(crate::support::dns::query(
        dns,
        "web.default.svc.cluster.local.",
        hickory_proto::rr::RecordType::A,
    ));
    assert_eq!(answer.answers().len(), 1, "{answer:?}");
    assert_eq!(
        round_trip(SocketAddr::new(pool, 8080), b"lb\n")?,
        b"lb\n",
        "the LoadBalancer address is served too"
    );
    Ok(())
}

#[test]
fn a_takeover_with_a_bad_config_leaves_the_old_process_serving() -> Result<()> {
    let node = Node::new()?;
    let admin = node.admin;
    let old = node.run(&node.config()).start()?;
    let clients = ClientLoop::start(node.frontend(), 2);
    let_clients_run(&clients, 20);
    let bad = node.config().replace(&node.vip.to_string(), "not-an-ip");
    let mut new = node.takeover(&bad).spawn()?;
    assert_eq!(new.wait_exit(WAIT), Some(1), "{}", new.logs());
    let said = new.logs();
    assert!(
        said.contains(&format!(
            "takeover abandoned; lb-proxy pid {} keeps serving",
            old.pid()
        )),
        "{said}"
    );
    assert!(said.contains("cluster_ip"), "the reason is given: {said}");
    assert!(
        old.logged("takeover failed", WAIT),
        "the old one says so: {}",
        old.logs()
    );
    let_clients_run(&clients, 20);
    let (ok, failures) = clients.finish();
    assert!(failures.is_empty(), "{ok} ok, failures: {failures:?}");
    assert_eq!(admin_pid(admin), Some(u64::from(old.pid())));
    assert_eq!(old.readyz().0, 200);
    Ok(())
}

#[test]
fn a_takeover_of_an_owner_that_does_not_answer_gives_up_and_the_owner_serves_on() -> Result<()> {
    let node = Node::new()?;
    let admin = node.admin;
    let old = node.run(&node.config()).start()?;
    old.signal("STOP");
    let mut new = node.takeover(&node.config()).spawn()?;
    let code = new.wait_exit(Duration::from_secs(20));
    old.signal("CONT");
    assert_eq!(code, Some(1), "{}", new.logs());
    assert!(
        new.logs().contains("receiving the sockets"),
        "{}",
        new.logs()
    );
    // The owner, woken, finds a successor that is gone and serves on.
    assert!(old.logged("takeover failed", WAIT), "{}", old.logs());
    assert_eq!(round_trip(node.frontend(), b"still\n")?, b"still\n");
    assert_eq!(admin_pid(admin), Some(u64::from(old.pid())));
    Ok(())
}

#[test]
fn the_new_process_serves_alone_when_the_old_one_dies_during_the_takeover() -> Result<()> {
    let node = Node::new()?;
    let admin = node.admin;
    let mut old = node.run(&node.config()).start()?;
    let new = node.takeover(&node.config()).spawn()?;
    assert!(
        new.logged("received the listening sockets", WAIT),
        "{}",
        new.logs()
    );
    old.kill();
    assert!(
        eventually_blocking(WAIT, || admin_pid(admin) == Some(u64::from(new.pid()))),
        "{}",
        new.logs()
    );
    assert_eq!(round_trip(node.frontend(), b"alone\n")?, b"alone\n");
    // It owns the node: a plain second start is refused, naming it.
    let mut third = Run::text(&(base_toml(fresh_admin()) + &node.services))
        .env("LB_RUNTIME_DIR", node.dir.path())
        .spawn()?;
    assert_eq!(third.wait_exit(Duration::from_secs(20)), Some(1));
    assert!(
        third
            .logs()
            .contains(&format!("already served by lb-proxy pid {}", new.pid())),
        "{}",
        third.logs()
    );
    Ok(())
}

#[test]
fn a_takeover_with_no_running_owner_is_a_plain_start() -> Result<()> {
    let node = Node::new()?;
    let new = node.takeover(&node.config()).start()?;
    assert!(
        new.logs().contains("to take over; starting anew"),
        "{}",
        new.logs()
    );
    assert_eq!(round_trip(node.frontend(), b"fresh\n")?, b"fresh\n");
    Ok(())
}

/// A UDP endpoint that answers each datagram at once with `now|payload`,
/// and once more with `late|payload` when the test says so: a reply that
/// reaches the flow after the hand-over.
struct LateUdpBackend {
    addr: SocketAddr,
    socket: UdpSocket,
    seen: Seen,
}

/// Each datagram's source and payload, as the backend received them.
type Seen = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

impl LateUdpBackend {
    fn start(ip: IpAddr) -> LateUdpBackend {
        let socket = UdpSocket::bind((ip, 0)).expect("bind");
        let addr = socket.local_addr().expect("addr");
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let (s, remember) = (socket.try_clone().expect("clone"), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                if &buf[..n] == b"quit" {
                    return;
                }
                let mut reply = b"now|".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&reply, from);
                remember.lock().unwrap().push((from, buf[..n].to_vec()));
            }
        });
        LateUdpBackend { addr, socket, seen }
    }

    /// Sends every late reply.
    fn answer_late(&self) {
        for (to, payload) in self.seen.lock().unwrap().iter() {
            let mut reply = b"late|".to_vec();
            reply.extend_from_slice(payload);
            let _ = self.socket.send_to(&reply, to);
        }
    }
}

impl Drop for LateUdpBackend {
    fn drop(&mut self) {
        let _ = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.send_to(b"quit", self.addr));
    }
}

fn udp_ask(client: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<String> {
    client.send_to(msg, to).ok()?;
    udp_read(client)
}

fn udp_read(client: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 2048];
    let (n, _) = client.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn udp_flows_of_the_old_process_answer_until_they_idle_out_and_new_flows_go_to_the_new_one(
) -> Result<()> {
    let node = Node::new()?;
    let backend = LateUdpBackend::start(ip("127.0.0.1"));
    let (vip, admin) = (node.vip, node.admin);
    let config = base_toml(admin).replace(
        "drain_timeout = \"2s\"",
        "drain_timeout = \"20s\"\nudp_idle_timeout = \"2s\"",
    ) + &format!(
        r#"
[[services]]
name = "dns"
cluster_ip = "{vip}"

[[services.ports]]
name = "udp"
port = 5300
protocol = "UDP"
target_port = {port}

[[endpoints]]
name = "dns"
[[endpoints.subsets]]
addresses = [{{ ip = "127.0.0.1" }}]
ports = [{{ name = "udp", port = {port}, protocol = "UDP" }}]
"#,
        port = backend.addr.port()
    );
    let frontend = SocketAddr::new(vip, 5300);
    let mut old = node.run(&config).start()?;
    let before = UdpSocket::bind((fresh_ip(), 0))?;
    before.set_read_timeout(Some(WAIT))?;
    assert_eq!(udp_ask(&before, frontend, b"a").as_deref(), Some("now|a"));

    let new = node.takeover(&config).spawn()?;
    assert!(
        new.logged("took over from lb-proxy pid", WAIT),
        "{}",
        new.logs()
    );
    assert!(
        old.logged("answering open flows until they idle out", WAIT),
        "{}",
        old.logs()
    );
    // The old flow's endpoint answers after the hand-over: the old process
    // still relays it.
    backend.answer_late();
    assert_eq!(
        udp_read(&before).as_deref(),
        Some("late|a"),
        "{}",
        old.logs()
    );
    // A new client is the new process's flow.
    let after = UdpSocket::bind((fresh_ip(), 0))?;
    after.set_read_timeout(Some(WAIT))?;
    assert_eq!(udp_ask(&after, frontend, b"b").as_deref(), Some("now|b"));
    assert!(
        eventually_blocking(WAIT, || {
            new.metric(
            "lb_udp_sessions{namespace=\"default\",service=\"dns\",port=\"udp\",protocol=\"UDP\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
        }),
        "{}",
        new.logs()
    );
    // Once its flow idled out (2 s), the old process is done, well before
    // its 20 s drain timeout.
    assert_eq!(old.wait_exit(WAIT), Some(0), "{}", old.logs());
    Ok(())
}

#[test]
fn under_systemd_the_new_process_names_itself_the_main_pid_and_the_old_one_never_says_stopping(
) -> Result<()> {
    let node = Node::new()?;
    let socket_path = node.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path)?;
    notify.set_read_timeout(Some(WAIT))?;
    let admin = node.admin;
    let mut buf = [0u8; 256];
    let mut next = || -> Option<String> {
        let n = notify.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let mut old = node
        .run(&base_toml(admin))
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn()?;
    assert_eq!(next().as_deref(), Some("READY=1"));
    let new = node
        .takeover(&base_toml(admin))
        .env("NOTIFY_SOCKET", &socket_path)
        .spawn()?;
    assert_eq!(
        next(),
        Some(format!("MAINPID={}\nREADY=1", new.pid())),
        "{}",
        new.logs()
    );
    assert_eq!(old.wait_exit(WAIT), Some(0), "{}", old.logs());
    notify.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut more = [0u8; 256];
    assert!(
        notify.recv(&mut more).is_err(),
        "nothing else, no STOPPING=1 from the old process: {:?}",
        String::from_utf8_lossy(&more)
    );
    Ok(())
}

#[test]
fn sigusr2_starts_the_binary_again_and_it_takes_over() -> Result<()> {
    let node = Node::new()?;
    let admin = node.admin;
    let mut old = node.run(&node.config()).start()?;
    let clients = ClientLoop::start(node.frontend(), 2);
    let_clients_run(&clients, 20);
    old.signal("USR2");
    assert_eq!(old.wait_exit(WAIT), Some(0), "{}", old.logs());
    let successor = admin_pid(admin);
    // The successor is not the test's child: stop it however the test ends.
    let _stop = successor.map(|pid| KillOnDrop(pid as i32));
    assert!(
        successor.is_some_and(|p| p != u64::from(old.pid())),
        "{}",
        old.logs()
    );
    let_clients_run(&clients, 20);
    let (ok, failures) = clients.finish();
    assert!(failures.is_empty(), "{ok} ok, failures: {failures:?}");
    assert!(
        old.logs()
            .contains("SIGUSR2: started a new lb-proxy to take over"),
        "{}",
        old.logs()
    );
    Ok(())
}

#[test]
fn the_old_process_cuts_connections_left_open_at_its_drain_timeout_after_a_takeover() -> Result<()>
{
    let node = Node::new()?;
    let one_second = node
        .config()
        .replace("drain_timeout = \"2s\"", "drain_timeout = \"1s\"");
    let mut old = node.run(&one_second).start()?;
    // Two idle clients of the old process that never close.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect_timeout(&node.frontend(), WAIT)?;
        c.write_all(b"hello\n")?;
        c.set_read_timeout(Some(WAIT))?;
        let mut back = [0u8; 6];
        c.read_exact(&mut back)?;
        idle.push(c);
    }
    let new = node.takeover(&one_second).spawn()?;
    assert!(
        new.logged("took over from lb-proxy pid", WAIT),
        "new: {}\nold: {}",
        new.logs(),
        old.logs()
    );
    let start = std::time::Instant::now();
    // The drain timeout, the one-second grace for cut connections, and
    // room for a loaded machine.
    let code = old.wait_exit(Duration::from_secs(8));
    assert_eq!(
        code,
        Some(0),
        "old process still running {:?} after the takeover: {}",
        start.elapsed(),
        old.logs()
    );
    for c in &mut idle {
        let end = c.read(&mut [0u8; 16]);
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset),
            "a connection the drain timeout cut sees a reset"
        );
    }
    // The new process serves on.
    assert_eq!(round_trip(node.frontend(), b"after\n")?, b"after\n");
    Ok(())
}

/// Sends SIGKILL to a process that is not the test's child when dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
