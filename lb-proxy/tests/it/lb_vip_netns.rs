//! `vip_mode = "interface"` in network namespaces this test creates (as root):
//! a server namespace running the lb-proxy binary with `vip_interface = "lo"`
//! and `announce_interface` on a veth, and a client namespace on the other end
//! of the veth. Checked: the interface gets and loses addresses as services
//! come and go; a client in the other namespace reaches the LoadBalancer
//! address across the veth; a capture on the client's veth, started before
//! the address is added, sees the gratuitous ARP (IPv4) and the unsolicited
//! neighbour advertisement (IPv6); addresses lb-proxy did not
//! add (127.0.0.1, a foreign one) survive its start and stop, while a stale
//! address carrying its mark is cleaned up at start.
//!
//! Every address used here lives only inside the two namespaces. Where the
//! machine forbids namespaces (not root, no `ip`), the test prints why and
//! passes without checking.
//!
//! The test binary doubles as the client and the capture inside the client
//! namespace (`ip netns exec NS <this binary> netns_helper`, told what to do by
//! environment variables), so nothing beyond iproute2 is needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::bin::Run;
use crate::support::eventually_blocking;

const SERVER_IP: &str = "10.251.0.1";
const CLIENT_IP: &str = "10.251.0.2";
const LB_WEB: &str = "10.251.0.100";
const LB_API: &str = "10.251.0.101";
const LB_V6: &str = "fd00:251::100";
const FOREIGN: &str = "10.252.0.200";
const STALE: &str = "10.252.0.250";

fn ip_cmd(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("ip").args(args).output()
}

fn must(args: &[&str]) {
    let out = ip_cmd(args).unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two namespaces; deleted (with the veth) when dropped.
struct Namespaces {
    server: String,
    client: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _ = ip_cmd(&["netns", "del", &self.server]);
        let _ = ip_cmd(&["netns", "del", &self.client]);
    }
}

/// Creates the namespaces, or says why it cannot.
fn namespaces() -> Result<Namespaces, String> {
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("no network namespaces on this system".into());
    }
    let pid = std::process::id();
    let ns = Namespaces {
        server: format!("lbvip-s{pid}"),
        client: format!("lbvip-c{pid}"),
    };
    match ip_cmd(&["netns", "add", &ns.server]) {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "`ip netns add` refused: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return Err(format!("cannot run `ip`: {e}")),
    }
    must(&["netns", "add", &ns.client]);
    let (s, c) = (ns.server.as_str(), ns.client.as_str());
    let (vs, vc) = veths();
    // The veth is created inside the server namespace and its peer moved
    // straight into the client one: nothing touches the host's namespace.
    must(&[
        "-n", s, "link", "add", &vs, "type", "veth", "peer", "name", &vc, "netns", c,
    ]);
    for (n, dev, addr) in [(s, &vs, SERVER_IP), (c, &vc, CLIENT_IP)] {
        must(&["-n", n, "link", "set", "lo", "up"]);
        must(&["-n", n, "addr", "add", &format!("{addr}/24"), "dev", dev]);
        must(&["-n", n, "link", "set", dev, "up"]);
    }
    Ok(ns)
}

fn veths() -> (String, String) {
    let pid = std::process::id() % 100_000;
    (format!("lbs{pid}"), format!("lbc{pid}"))
}

/// `ip -o addr show dev lo` in `ns`, one line per address.
fn lo_addresses(ns: &str) -> String {
    let out = ip_cmd(&["-n", ns, "-o", "addr", "show", "dev", "lo"]).unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn has(lines: &str, addr: &str) -> bool {
    lines
        .split_whitespace()
        .any(|w| w.split('/').next() == Some(addr))
}

fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(
        eventually_blocking(limit, cond),
        "timed out waiting for {what}"
    );
}

fn config(services: &str) -> String {
    let (vs, _) = veths();
    format!(
        "[node]\nname = \"node-1\"\naddresses = [\"{SERVER_IP}\"]\nvip_mode = \"interface\"\n\
         vip_interface = \"lo\"\nannounce_interface = \"{vs}\"\n\
         [cluster]\nservice_cidr = \"10.252.0.0/24\"\n\
         [admin]\nlisten = \"127.0.0.1:10249\"\n\
         [[ip_pools]]\nname = \"l2\"\naddresses = [\"10.251.0.100-10.251.0.101\", \"fd00:251::100/127\"]\n{services}"
    )
}

/// A LoadBalancer service whose endpoint is lb-proxy's own admin API in the
/// server namespace (so no other program has to run there).
fn lb_service(name: &str, lb_ip: &str, cluster_ip: &str) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\ntype = \"LoadBalancer\"\ncluster_ip = \"{cluster_ip}\"\n\
         load_balancer_ip = \"{lb_ip}\"\nallocate_load_balancer_node_ports = false\nports = [{{ port = 80 }}]\n\
         [[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.0.1\" }}]\n\
         ports = [{{ port = 10249 }}]\n"
    )
}

/// Runs this test binary's `netns_helper` inside `ns`.
fn helper(ns: &str, mode: &str, arg: &str) -> Command {
    let me = std::env::current_exe().unwrap();
    // The test's name: this module's path without the crate's name.
    let name = concat!(module_path!(), "::netns_helper");
    let name = name.split_once("::").map_or(name, |(_, rest)| rest);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(me)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("LB_NETNS_HELPER", mode)
        .env("LB_NETNS_ARG", arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// What the helper printed after `prefix`, if it did (the test harness may
/// print `test netns_helper ... ` on the same line first).
fn helper_line(out: &str, prefix: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let at = l.find(prefix)?;
        let rest = &l[at + prefix.len()..];
        Some(rest.trim().to_string())
    })
}

#[test]
fn interface_mode_adds_announces_and_removes_only_its_own_addresses() {
    let ns = match namespaces() {
        Ok(ns) => ns,
        Err(why) => {
            println!("SKIPPED: interface VIP test needs network namespaces: {why}");
            return;
        }
    };
    let (s, c) = (ns.server.clone(), ns.client.clone());
    // Addresses that are not lb-proxy's: a foreign one, and a stale one that
    // carries its mark (the leftover of a proxy that was killed).
    must(&[
        "-n",
        &s,
        "addr",
        "add",
        &format!("{FOREIGN}/32"),
        "dev",
        "lo",
    ]);
    must(&[
        "-n",
        &s,
        "addr",
        "add",
        &format!("{STALE}/32"),
        "dev",
        "lo",
        "label",
        "lo:lb",
    ]);

    // The machine must route to an address on the server's lo from across
    // the veth at all (Linux does: addresses belong to the host, not the
    // interface). Checked with a plain listener before lb-proxy is involved,
    // so a sandbox that does not is told apart from an lb-proxy failure.
    if let Err(why) = baseline_reachable(&s, &c) {
        println!(
            "SKIPPED: interface VIP test: this machine does not route across namespaces: {why}"
        );
        return;
    }

    // The capture starts on the client's veth before any address is added.
    let (_, vc) = veths();
    let mut capture = helper(&c, "capture", &format!("{LB_WEB},{LB_V6}"))
        .spawn()
        .unwrap();
    let mut capture_out = BufReader::new(capture.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        line.clear();
        if capture_out.read_line(&mut line).unwrap_or(0) == 0 || line.contains("READY") {
            break;
        }
    }
    assert!(line.contains("READY"), "capture did not start: {line:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let services =
        lb_service("web", LB_WEB, "10.252.0.10") + &lb_service("web6", LB_V6, "10.252.0.12");
    std::fs::write(&path, config(&services)).unwrap();
    let mut proxy = Run::file(&path)
        .under(&["ip", "netns", "exec", &s])
        .spawn()
        .unwrap();

    wait_for(
        "the LB and cluster IPs on lo",
        Duration::from_secs(15),
        || {
            let a = lo_addresses(&s);
            has(&a, LB_WEB) && has(&a, "10.252.0.10") && has(&a, LB_V6)
        },
    );
    let a = lo_addresses(&s);
    assert!(
        !has(&a, STALE),
        "the stale marked address is cleaned up: {a}"
    );
    assert!(has(&a, FOREIGN) && has(&a, "127.0.0.1"), "{a}");
    assert!(
        a.lines().any(|l| has(l, LB_WEB) && l.contains("lo:lb")),
        "lb-proxy marks its own: {a}"
    );

    // A client across the veth reaches the LoadBalancer address. The first
    // try can meet a neighbour entry still being resolved, so it is retried
    // (bounded); a failure shows what the client saw and what lb-proxy logged.
    let mut out = String::new();
    eventually_blocking(Duration::from_secs(15), || {
        let fetched = helper(&c, "fetch", &format!("{LB_WEB}:80"))
            .output()
            .unwrap();
        out = String::from_utf8_lossy(&fetched.stdout).to_string();
        if let Some(code) = proxy.wait_exit(Duration::ZERO) {
            out += &format!("\nlb-proxy exited: {code}");
            return true;
        }
        helper_line(&out, "BODY ").as_deref() == Some("ok")
    });
    assert_eq!(
        helper_line(&out, "BODY ").as_deref(),
        Some("ok"),
        "fetch output: {out}\nlb-proxy log:\n{}\nneighbours in {c}: {}",
        proxy.logs(),
        String::from_utf8_lossy(&ip_cmd(&["-n", &c, "neigh"]).unwrap().stdout)
    );

    // The gratuitous ARP was on the wire.
    let mut rest = String::new();
    let reader = std::thread::spawn(move || {
        let _ = capture_out.read_to_string(&mut rest);
        rest
    });
    eventually_blocking(Duration::from_secs(15), || {
        capture.try_wait().is_ok_and(|s| s.is_some())
    });
    let _ = capture.kill();
    let _ = capture.wait();
    let captured = reader.join().unwrap();
    let garp = helper_line(&captured, "GARP ")
        .unwrap_or_else(|| panic!("no gratuitous ARP for {LB_WEB} seen on {vc}: {captured}"));
    assert!(garp.starts_with(LB_WEB), "{garp}");
    let na = helper_line(&captured, "NA ").unwrap_or_else(|| {
        panic!("no unsolicited neighbour advertisement for {LB_V6} seen on {vc}: {captured}")
    });
    assert!(na.starts_with(LB_V6), "{na}");

    // Services come and go: web leaves, api arrives.
    std::fs::write(&path, config(&lb_service("api", LB_API, "10.252.0.11"))).unwrap();
    proxy.signal("HUP");
    wait_for(
        "api's addresses in, web's out",
        Duration::from_secs(15),
        || {
            let a = lo_addresses(&s);
            has(&a, LB_API)
                && has(&a, "10.252.0.11")
                && !has(&a, LB_WEB)
                && !has(&a, "10.252.0.10")
                && !has(&a, LB_V6)
        },
    );

    // Stop: lb-proxy's addresses go, the others stay.
    proxy.signal("TERM");
    let code = proxy.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "lb-proxy exits 0 after SIGTERM");
    let a = lo_addresses(&s);
    assert!(!has(&a, LB_API) && !has(&a, "10.252.0.11"), "{a}");
    assert!(has(&a, FOREIGN) && has(&a, "127.0.0.1"), "{a}");
    drop(ns);
}

/// A plain listener on an address of the server namespace's `lo` (not
/// lb-proxy's), fetched from the client namespace across the veth; the
/// address is removed again afterwards.
fn baseline_reachable(server: &str, client: &str) -> Result<(), String> {
    const PROBE: &str = "10.251.0.50";
    must(&[
        "-n",
        server,
        "addr",
        "add",
        &format!("{PROBE}/32"),
        "dev",
        "lo",
    ]);
    let mut listener = helper(server, "serve", &format!("{PROBE}:8080"))
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    eventually_blocking(Duration::from_secs(10), || {
        out = match helper(client, "fetch", &format!("{PROBE}:8080")).output() {
            Ok(fetched) => String::from_utf8_lossy(&fetched.stdout).to_string(),
            Err(e) => e.to_string(),
        };
        helper_line(&out, "BODY ").as_deref() == Some("ok")
    });
    let _ = listener.kill();
    let _ = listener.wait();
    must(&[
        "-n",
        server,
        "addr",
        "del",
        &format!("{PROBE}/32"),
        "dev",
        "lo",
    ]);
    match helper_line(&out, "BODY ").as_deref() {
        Some("ok") => Ok(()),
        _ => Err(format!(
            "a plain listener on {PROBE} was not reached: {out}"
        )),
    }
}

/// `vip_mode = "freebind"` in a namespace this test creates: the listeners of
/// an LB address and a cluster IP that are on no interface bind anyway (no
/// bind error), and serve as soon as the address appears.
#[test]
fn freebind_listeners_bind_before_their_address_exists() {
    let pid = std::process::id();
    let ns = format!("lbvip-f{pid}");
    match ip_cmd(&["netns", "add", &ns]) {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "SKIPPED: freebind test needs network namespaces: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("SKIPPED: freebind test needs `ip`: {e}");
            return;
        }
    }
    let _cleanup = Namespaces {
        server: ns.clone(),
        client: format!("lbvip-unused{pid}"),
    };
    must(&["-n", &ns, "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let text = format!(
        "[node]\nname = \"node-1\"\naddresses = [\"127.0.0.1\"]\nvip_mode = \"freebind\"\n\
         [cluster]\nservice_cidr = \"10.254.0.0/24\"\n[admin]\nlisten = \"127.0.0.1:10249\"\n\
         [[ip_pools]]\nname = \"p\"\naddresses = [\"10.253.0.100/32\"]\n{}",
        lb_service("web", "10.253.0.100", "10.254.0.10")
    );
    std::fs::write(&path, text).unwrap();
    let _proxy = Run::file(&path)
        .under(&["ip", "netns", "exec", &ns])
        .spawn()
        .unwrap();
    let get = |addr: &str, path: &str| {
        let out = helper(&ns, "fetch", addr)
            .env("LB_NETNS_PATH", path)
            .output()
            .unwrap();
        // The body may span lines (the API pretty-prints JSON).
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_once("BODY ")
            .map(|(_, body)| body.trim().trim_end_matches("ok").trim().to_string())
            .unwrap_or_default()
    };
    let mut services = String::new();
    wait_for("the admin API", Duration::from_secs(15), || {
        services = get("127.0.0.1:10249", "/api/v1/services");
        services.contains("10.253.0.100")
    });
    assert!(services.contains("\"bind_errors\": []"), "{services}");
    assert!(!has(&lo_addresses(&ns), "10.253.0.100"));
    must(&["-n", &ns, "addr", "add", "10.253.0.100/32", "dev", "lo"]);
    let mut healthz = String::new();
    eventually_blocking(Duration::from_secs(10), || {
        healthz = get("10.253.0.100:80", "/healthz");
        healthz.lines().next() == Some("ok")
    });
    assert_eq!(healthz.lines().next(), Some("ok"), "{healthz}");
}

/// Not a test on its own: the client and the capture that the test above
/// runs inside the client namespace. Does nothing unless `LB_NETNS_HELPER`
/// is set.
#[test]
fn netns_helper() {
    let Ok(mode) = std::env::var("LB_NETNS_HELPER") else {
        return;
    };
    let arg = std::env::var("LB_NETNS_ARG").unwrap_or_default();
    match mode.as_str() {
        "fetch" => {
            // Failures are printed, not panicked on: the caller retries and
            // shows this output when it gives up.
            let addr: SocketAddr = arg.parse().unwrap();
            let path = std::env::var("LB_NETNS_PATH").unwrap_or_else(|_| "/healthz".into());
            let fetch = || -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )?;
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                Ok(text)
            };
            match fetch() {
                Ok(text) => {
                    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
                    println!("BODY {}", body.trim());
                }
                Err(e) => println!("ERR {addr}: {e}"),
            }
        }
        "serve" => {
            // Answers every connection with a minimal HTTP reply, until killed.
            let listener = std::net::TcpListener::bind(arg.parse::<SocketAddr>().unwrap()).unwrap();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok");
            }
        }
        "capture" => {
            let (v4, v6) = arg.split_once(',').unwrap();
            capture_announcements(v4.parse().unwrap(), v6.parse().unwrap())
        }
        other => panic!("unknown helper mode {other}"),
    }
}

/// Prints `READY`, then waits (bounded) for a gratuitous ARP announcing
/// `v4` and an unsolicited neighbour advertisement for `v6` on any interface
/// of this namespace, printing `GARP <ip> <mac>` and `NA <ip> <mac>`.
fn capture_announcements(v4: std::net::Ipv4Addr, v6: std::net::Ipv6Addr) {
    use socket2::{Domain, Protocol, Socket, Type};
    const ETH_P_ALL: u16 = 0x0003;
    let socket = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )
    .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut buf = [0u8; 1500];
    let (mut garp, mut na) = (false, false);
    while Instant::now() < deadline && !(garp && na) {
        let n = match (&socket).read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let mac: Vec<String> = buf[6..12].iter().map(|b| format!("{b:02x}")).collect();
        let mac = mac.join(":");
        if n >= 42 && buf[12..14] == [0x08, 0x06] {
            let sender = std::net::Ipv4Addr::new(buf[28], buf[29], buf[30], buf[31]);
            let target = std::net::Ipv4Addr::new(buf[38], buf[39], buf[40], buf[41]);
            if !garp && sender == v4 && target == v4 {
                println!("GARP {v4} {mac}");
                garp = true;
            }
        } else if n >= 78 && buf[12..14] == [0x86, 0xdd] && buf[20] == 58 && buf[54] == 136 {
            let mut t = [0u8; 16];
            t.copy_from_slice(&buf[62..78]);
            if !na && std::net::Ipv6Addr::from(t) == v6 {
                println!("NA {v6} {mac}");
                na = true;
            }
        }
        std::io::stdout().flush().unwrap();
    }
    println!("DONE");
}
