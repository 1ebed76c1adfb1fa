//! Multi-core accept: with `LB_ACCEPT=reuseport` every TCP frontend gets one
//! `SO_REUSEPORT` socket and accept loop per runtime worker; connections are
//! served whichever socket the kernel hands them to, and closing the frontend
//! closes every sibling (clients are refused, not queued on a forgotten
//! socket). This binary sets the variable for all of its tests.

mod support;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::net::TcpStream;

/// Listening sockets bound exactly at `addr` (IPv4), from /proc/net/tcp.
fn listeners_at(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else {
        return 0;
    };
    let want = format!("{:08X}:{:04X}", u32::from(*v4.ip()).swap_bytes(), v4.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuseport_accept_binds_one_socket_per_worker_serves_all_and_closes_all() {
    std::env::set_var("LB_ACCEPT", "reuseport");
    let backend = http_backend("127.0.248.40", "hello").await;
    let vip = vip();
    let plane = start(settings(), vec![service("accept", vip, &[backend.addr])]).await;
    // The first socket is bound when start returns; its siblings right after.
    assert!(
        eventually(WAIT, || listeners_at(vip) == 2).await,
        "one listener per runtime worker, found {}",
        listeners_at(vip)
    );
    for _ in 0..100 {
        assert_eq!(fetch(vip).await, "hello");
    }
    assert_eq!(backend.accepted(), 100);
    // No endpoints left: the frontend closes, every sibling with it.
    plane
        .apply(next_snapshot(&plane, vec![service("accept", vip, &[])]))
        .await;
    assert_eq!(listeners_at(vip), 0);
    let refused = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(vip))
        .await
        .expect("connect answered within the bound")
        .expect_err("connect must be refused");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}
