//! One `lb-proxy run` per node: a second process for the same `[node] name`
//! refuses to start and names the first; other node names on the same host
//! start; a draining owner lets go at once, so a restart works.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Result;

use crate::support::bin::Run;
use crate::support::config::{base_toml, service_toml};
use crate::support::*;

/// An admin address of the test's own.
fn fresh_admin() -> SocketAddr {
    let ip = fresh_ip();
    SocketAddr::new(ip, free_port(ip))
}

#[test]
fn a_second_lb_proxy_for_the_same_node_refuses_to_start_naming_the_first() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = echo_backend("127.0.0.1");
    let services = service_toml("web", fresh_ip(), 8080, &[backend.addr], "");
    let first_admin = fresh_admin();
    let first = Run::text(&(base_toml(first_admin) + &services))
        .env("LB_RUNTIME_DIR", dir.path())
        .admin(first_admin)
        .start()?;
    let second_admin = fresh_admin();
    let mut second = Run::text(&(base_toml(second_admin) + &services))
        .env("LB_RUNTIME_DIR", dir.path())
        .admin(second_admin)
        .spawn()?;
    // It waits 5 s for an owner about to let go, then gives up.
    assert_eq!(
        second.wait_exit(Duration::from_secs(20)),
        Some(1),
        "{}",
        second.logs()
    );
    let said = second.logs();
    assert!(
        said.contains(&format!(
            "node \"node-1\" is already served by lb-proxy pid {}",
            first.pid()
        )) && said.contains("kill -TERM"),
        "{said}"
    );
    assert_eq!(first.readyz().0, 200, "the first keeps serving");

    // Another node on the same host is another owner.
    let other_admin = fresh_admin();
    let other = base_toml(other_admin).replace("name = \"node-1\"", "name = \"node-2\"")
        + &service_toml("web", fresh_ip(), 8080, &[backend.addr], "");
    let _other = Run::text(&other)
        .env("LB_RUNTIME_DIR", dir.path())
        .admin(other_admin)
        .start()?;
    Ok(())
}

#[test]
fn a_draining_owner_lets_go_of_its_node_so_the_next_one_starts_at_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = echo_backend("127.0.0.1");
    let vip = fresh_ip();
    let services = service_toml("web", vip, 8080, &[backend.addr], "");
    let first_admin = fresh_admin();
    let mut first = Run::text(&(base_toml(first_admin) + &services))
        .env("LB_RUNTIME_DIR", dir.path())
        .admin(first_admin)
        .start()?;
    // An open connection keeps the first draining (drain_timeout 2 s).
    let mut held = TcpStream::connect_timeout(&SocketAddr::new(vip, 8080), WAIT)?;
    held.set_read_timeout(Some(WAIT))?;
    held.write_all(b"x")?;
    let mut one = [0u8; 1];
    held.read_exact(&mut one)?;
    first.signal("TERM");
    let second_admin = fresh_admin();
    let _second = Run::text(&(base_toml(second_admin) + &services))
        .env("LB_RUNTIME_DIR", dir.path())
        .admin(second_admin)
        .start()?;
    assert_eq!(
        first.wait_exit(Duration::ZERO),
        None,
        "the second started while the first still drained: {}",
        first.logs()
    );
    assert_eq!(first.wait_exit(WAIT), Some(0), "{}", first.logs());
    Ok(())
}
