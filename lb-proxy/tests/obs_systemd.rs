//! `Type=notify`: the binary sends `READY=1` on `$NOTIFY_SOCKET` once it
//! serves, and `STOPPING=1` when SIGTERM starts the drain.
#![cfg(feature = "cli")]

mod obs_support;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

use obs_support::*;

#[test]
fn notifies_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(WAIT)).expect("read timeout");
    let config = dir.path().join("lb.toml");
    let ip = addr();
    let admin = std::net::SocketAddr::new(ip, free_port(ip));
    std::fs::write(&config, base_toml(admin)).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lb-proxy starts");
    let mut buf = [0u8; 256];
    let ready = socket.recv(&mut buf).map(|n| buf[..n].to_vec());
    // The admin API answers once READY=1 was sent.
    let healthz = lb_proxy::cli::get::fetch(&admin.to_string(), "/healthz");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = socket.recv(&mut buf).map(|n| buf[..n].to_vec());
    let exited = eventually_blocking(WAIT, || matches!(child.try_wait(), Ok(Some(_))));
    // Killing an exited child is a no-op; wait() then returns its status.
    let _ = child.kill();
    let status = child.wait().expect("wait for lb-proxy");
    assert_eq!(ready.expect("READY=1 within the bound"), b"READY=1");
    assert_eq!(healthz.expect("the admin API serves"), "ok");
    assert_eq!(stopping.expect("STOPPING=1 on SIGTERM"), b"STOPPING=1");
    assert!(exited && status.success(), "drained and exited 0: {status}");
}
