//! `source_address = "client"` (a transparent proxy) in three network
//! namespaces this test creates (as root): a client, lb-proxy, and a backend
//! whose route back to the client goes through lb-proxy's namespace, where
//! the two commands README's "Transparent source" gives deliver those
//! replies to lb-proxy's sockets. Checked: the backend's `getpeername` is the
//! client's own address, not lb-proxy's.
//!
//! Every address lives only inside the three namespaces. Where the machine
//! forbids namespaces (not root, no `ip`), the test prints why and passes
//! without checking. The test binary doubles as the client and the backend
//! (`ip netns exec NS <this binary> transparent_helper`), so nothing beyond
//! iproute2 is needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::bin::Run;

const CLIENT_IP: &str = "10.253.0.2";
const LB_CLIENT_SIDE: &str = "10.253.0.1";
const LB_BACKEND_SIDE: &str = "10.254.0.1";
const BACKEND_IP: &str = "10.254.0.2";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The three namespaces; deleted (with their veths) when dropped.
struct Namespaces {
    client: String,
    lb: String,
    backend: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.client, &self.lb, &self.backend] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Creates the namespaces, their veths (made inside lb's namespace, the
/// peers moved straight into the others: nothing touches the host's), the
/// routes, and lb's two commands for transparent replies. Or says why not.
fn namespaces() -> Result<Namespaces, String> {
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("no network namespaces on this system".into());
    }
    let pid = std::process::id() % 100_000;
    let ns = Namespaces {
        client: format!("lbtp-c{pid}"),
        lb: format!("lbtp-l{pid}"),
        backend: format!("lbtp-b{pid}"),
    };
    ip(&["netns", "add", &ns.lb])?;
    ip(&["netns", "add", &ns.client])?;
    ip(&["netns", "add", &ns.backend])?;
    let (c, l, b) = (ns.client.as_str(), ns.lb.as_str(), ns.backend.as_str());
    let (lc, cl, lbk, bl) = (
        format!("tpc{pid}"),
        format!("tpC{pid}"),
        format!("tpb{pid}"),
        format!("tpB{pid}"),
    );
    ip(&[
        "-n", l, "link", "add", &lc, "type", "veth", "peer", "name", &cl, "netns", c,
    ])?;
    ip(&[
        "-n", l, "link", "add", &lbk, "type", "veth", "peer", "name", &bl, "netns", b,
    ])?;
    for (n, dev, addr) in [
        (c, &cl, CLIENT_IP),
        (l, &lc, LB_CLIENT_SIDE),
        (l, &lbk, LB_BACKEND_SIDE),
        (b, &bl, BACKEND_IP),
    ] {
        ip(&["-n", n, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ip(&["-n", n, "link", "set", dev, "up"])?;
    }
    for n in [c, l, b] {
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    ip(&["-n", c, "route", "add", "default", "via", LB_CLIENT_SIDE])?;
    // The backend answers the client's address through lb's namespace...
    ip(&["-n", b, "route", "add", "default", "via", LB_BACKEND_SIDE])?;
    // ...where what arrives from the backend's side is delivered locally,
    // to the socket lb bound to the client's address (README).
    ip(&["-n", l, "rule", "add", "iif", &lbk, "lookup", "100"])?;
    ip(&[
        "-n",
        l,
        "route",
        "add",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        "100",
    ])?;
    Ok(ns)
}

/// This test binary's `transparent_helper` inside `ns`.
fn helper(ns: &str, mode: &str, arg: &str) -> Command {
    let me = std::env::current_exe().unwrap();
    let name = concat!(module_path!(), "::transparent_helper");
    let name = name.split_once("::").map_or(name, |(_, rest)| rest);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(me)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("LB_TP_HELPER", mode)
        .env("LB_TP_ARG", arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// Killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_transparent_dial_leaves_from_the_clients_own_address() {
    let ns = match namespaces() {
        Ok(ns) => ns,
        Err(why) => {
            println!("SKIPPED: transparent source test needs network namespaces: {why}");
            return;
        }
    };
    let backend = SocketAddr::new(BACKEND_IP.parse().unwrap(), 8080);
    let _backend = Killed(
        helper(&ns.backend, "serve", &backend.to_string())
            .spawn()
            .unwrap(),
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nname = \"tp\"\naddresses = [\"{LB_CLIENT_SIDE}\"]\n\
             [cluster]\nservice_cidr = \"10.253.0.0/24\"\n[admin]\nlisten = \"\"\n\
             [[services]]\nname = \"web\"\ncluster_ip = \"{LB_CLIENT_SIDE}\"\n\
             source_address = \"client\"\nports = [{{ port = 80 }}]\n\
             [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\n\
             addresses = [{{ ip = \"{BACKEND_IP}\" }}]\nports = [{{ port = 8080 }}]\n"
        ),
    )
    .unwrap();
    let mut proxy = Run::file(&path)
        .under(&["ip", "netns", "exec", &ns.lb])
        .spawn()
        .unwrap();

    // The frontend comes up once lb-proxy has loaded; until then (and while
    // neighbour entries resolve) a try may fail, so it is retried.
    let frontend = format!("{LB_CLIENT_SIDE}:80");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = helper(&ns.client, "ask", &frontend).output().unwrap();
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if last.contains("PEER ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let peer = last
        .lines()
        .find_map(|l| l.split_once("PEER ").map(|(_, p)| p.trim().to_string()))
        .unwrap_or_else(|| panic!("no answer through lb-proxy: {last}\n{}", proxy.logs()));
    let seen: SocketAddr = peer.parse().expect("the backend's getpeername");
    assert_eq!(
        seen.ip().to_string(),
        CLIENT_IP,
        "the backend sees the client's address, not lb-proxy's ({LB_BACKEND_SIDE})"
    );
    proxy.kill();
}

/// Not a test on its own: inside a namespace, the backend (`serve`: answer
/// each connection with `PEER <getpeername>`) or the client (`ask`: connect
/// and print what came back).
#[test]
fn transparent_helper() {
    let Ok(mode) = std::env::var("LB_TP_HELPER") else {
        return;
    };
    let arg = std::env::var("LB_TP_ARG").unwrap_or_default();
    let addr: SocketAddr = arg.parse().unwrap();
    match mode.as_str() {
        "serve" => {
            let listener = TcpListener::bind(addr).unwrap();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                if let Ok(peer) = conn.peer_addr() {
                    let _ = writeln!(conn, "PEER {peer}");
                }
            }
        }
        "ask" => {
            let ask = || -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            };
            match ask() {
                Ok(text) => print!("{text}"),
                Err(e) => println!("ERR {e}"),
            }
        }
        other => panic!("unknown helper mode {other}"),
    }
}
