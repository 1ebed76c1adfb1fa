//! What `lb-proxy run` promises on SIGTERM, through the binary: listeners
//! close at once, open connections get `[proxy] drain_timeout` to finish,
//! whatever is left then is reset and the process exits 0, whether the
//! connections are idle (never sent a byte) or stuck mid-transfer; a second
//! SIGTERM or SIGINT during the drain exits at once with 130.
//!
//! `cli.rs` has the single-connection cases; these pin the shapes a report
//! said wedged the process (two idle clients on two services, default
//! engine, every accept mode), so a drain that is no longer bounded fails
//! here, within a few seconds.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::support::bin::{Run, Running};
use crate::support::config::{base_toml, service_toml};
use crate::support::*;

/// The drain timeout of these tests.
const DRAIN: Duration = Duration::from_secs(1);

/// How long after the signal the process may take to exit: the drain
/// timeout, the data plane's one-second grace for cut connections, and
/// room for a loaded machine.
const EXIT_WITHIN: Duration = Duration::from_secs(8);

/// `lb-proxy run` with `drain_timeout = drain`, `accept_mode` from
/// `LB_ACCEPT`, and two echo services (`a`, `b`) on one backend; returns
/// the two frontends.
fn two_services(drain: &str, accept: &str) -> Result<(Running, [SocketAddr; 2], Backend)> {
    let backend = echo_backend("127.0.0.1");
    let ip = fresh_ip();
    let admin = SocketAddr::new(ip, free_port(ip));
    let (a, b) = (fresh_ip(), fresh_ip());
    let text = base_toml(admin).replace(
        "drain_timeout = \"2s\"",
        &format!("drain_timeout = \"{drain}\""),
    ) + &service_toml("a", a, 8080, &[backend.addr], "")
        + &service_toml("b", b, 8080, &[backend.addr], "");
    let proxy = Run::text(&text)
        .env("LB_ACCEPT", accept)
        .admin(admin)
        .start()?;
    Ok((
        proxy,
        [SocketAddr::new(a, 8080), SocketAddr::new(b, 8080)],
        backend,
    ))
}

/// Waits until the proxy lists `n` connections forwarded to an endpoint
/// (dialed, not only accepted).
fn forwarded(proxy: &Running, n: usize) -> bool {
    eventually_blocking(WAIT, || {
        http_get(proxy.admin(), "/api/v1/connections")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["items"].as_array().map(Vec::len))
            == Some(n)
    })
}

/// Sends SIGTERM and waits for the exit: its code and how long it took.
fn terminate(proxy: &mut Running) -> (Option<i32>, Duration) {
    let start = Instant::now();
    proxy.signal("TERM");
    let code = proxy.wait_exit(EXIT_WITHIN);
    (code, start.elapsed())
}

/// Whether the next read on `s` sees a reset (not a FIN, not data).
fn is_reset(s: &mut TcpStream) -> bool {
    let _ = s.set_read_timeout(Some(WAIT));
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            // Bytes the backend echoed before the cut: read past them.
            Ok(n) if n > 0 => continue,
            Ok(_) => return false,
            Err(e) => return e.kind() == ErrorKind::ConnectionReset,
        }
    }
}

/// Sends SIGTERM and checks that the process exits 0, and not before the
/// drain timeout.
fn terminate_after_the_drain(proxy: &mut Running) {
    let (code, took) = terminate(proxy);
    assert_eq!(
        code,
        Some(0),
        "still running {took:?} after SIGTERM: {}",
        proxy.logs()
    );
    assert!(took >= DRAIN - Duration::from_millis(100), "{took:?}");
}

fn idle_clients_are_cut_at_the_drain_timeout(accept: &str) -> Result<()> {
    let (mut proxy, fronts, _backend) = two_services("1s", accept)?;
    // Two clients that connect and never send a byte.
    let mut clients = fronts
        .iter()
        .map(|f| TcpStream::connect_timeout(f, WAIT))
        .collect::<std::io::Result<Vec<_>>>()?;
    assert!(forwarded(&proxy, 2), "{}", proxy.logs());
    terminate_after_the_drain(&mut proxy);
    for c in &mut clients {
        assert!(is_reset(c), "an idle client cut by the drain sees a reset");
    }
    assert!(
        proxy.logs().contains("drain timeout passed"),
        "{}",
        proxy.logs()
    );
    Ok(())
}

#[test]
fn sigterm_cuts_two_idle_clients_at_the_drain_timeout_and_exits_0() -> Result<()> {
    idle_clients_are_cut_at_the_drain_timeout("single")
}

#[test]
fn sigterm_cuts_idle_clients_of_per_core_accept_loops_at_the_drain_timeout() -> Result<()> {
    idle_clients_are_cut_at_the_drain_timeout("percore")
}

#[test]
fn sigterm_cuts_clients_stuck_mid_transfer_at_the_drain_timeout() -> Result<()> {
    let (mut proxy, fronts, _backend) = two_services("1s", "single")?;
    // Clients that send a lot and never read: the echo backs up towards
    // them, so the proxy is mid-write on both legs when SIGTERM comes.
    let mut clients = Vec::new();
    for front in fronts {
        let mut c = TcpStream::connect_timeout(&front, WAIT)?;
        c.write_all(b"first")?;
        let mut back = [0u8; 5];
        c.set_read_timeout(Some(WAIT))?;
        c.read_exact(&mut back)?;
        c.set_nonblocking(true)?;
        clients.push(c);
    }
    // Bytes in flight through the proxy when SIGTERM comes: each client
    // writes until its send buffer is full.
    let chunk = vec![b'x'; 64 * 1024];
    for c in &mut clients {
        loop {
            match c.write(&chunk) {
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    terminate_after_the_drain(&mut proxy);
    for c in &mut clients {
        c.set_nonblocking(false)?;
        assert!(is_reset(c), "a client cut mid-transfer sees a reset");
    }
    Ok(())
}

#[test]
fn a_sigint_during_the_drain_exits_at_once_with_130() -> Result<()> {
    // A longer drain than the test waits: only the second signal ends it.
    let (mut proxy, fronts, _backend) = two_services("1h", "single")?;
    let _client = TcpStream::connect_timeout(&fronts[0], WAIT)?;
    assert!(forwarded(&proxy, 1), "{}", proxy.logs());
    proxy.signal("TERM");
    assert!(proxy.logged("draining", WAIT), "{}", proxy.logs());
    let start = Instant::now();
    proxy.signal("INT");
    let code = proxy.wait_exit(EXIT_WITHIN);
    assert_eq!(
        code,
        Some(130),
        "{:?} after SIGINT: {}",
        start.elapsed(),
        proxy.logs()
    );
    assert!(
        proxy.logs().contains("second signal: exiting at once"),
        "{}",
        proxy.logs()
    );
    Ok(())
}
