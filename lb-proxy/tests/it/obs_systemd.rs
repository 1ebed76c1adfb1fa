//! `Type=notify`: the binary sends `READY=1` on `$NOTIFY_SOCKET` once it
//! serves, and `STOPPING=1` when SIGTERM starts the drain.

use std::os::unix::net::UnixDatagram;

use crate::support::bin::Run;
use crate::support::config::base_toml;
use crate::support::*;

#[test]
fn notifies_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(WAIT)).expect("read timeout");
    let ip = fresh_ip();
    let admin = std::net::SocketAddr::new(ip, free_port(ip));
    let mut proxy = Run::text(&base_toml(admin))
        .env("NOTIFY_SOCKET", &socket_path)
        .admin(admin)
        .spawn()
        .expect("lb-proxy starts");
    let mut buf = [0u8; 256];
    let ready = socket.recv(&mut buf).map(|n| buf[..n].to_vec());
    // The admin API answers once READY=1 was sent.
    let healthz = http_get(admin, "/healthz");
    proxy.signal("TERM");
    let stopping = socket.recv(&mut buf).map(|n| buf[..n].to_vec());
    let exited = proxy.wait_exit(WAIT);
    assert_eq!(ready.expect("READY=1 within the bound"), b"READY=1");
    assert_eq!(
        healthz.expect("the admin API serves"),
        (200, "ok".to_string())
    );
    assert_eq!(stopping.expect("STOPPING=1 on SIGTERM"), b"STOPPING=1");
    assert_eq!(exited, Some(0), "drained and exited 0: {}", proxy.logs());
}
