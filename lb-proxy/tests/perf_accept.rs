//! Multi-core accept: with `LB_ACCEPT=reuseport` every TCP frontend gets one
//! `SO_REUSEPORT` socket and accept loop per runtime worker; connections are
//! served whichever socket the kernel hands them to, and closing the frontend
//! closes every sibling (clients are refused, not queued on a forgotten
//! socket). This binary sets the variable for all of its tests.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuseport_accept_binds_one_socket_per_worker_serves_all_and_closes_all() {
    std::env::set_var("LB_ACCEPT", "reuseport");
    let backend = http_backend("127.0.248.40", "hello").await;
    let vip = vip();
    let plane = start(settings(), vec![service("accept", vip, &[backend.addr])]).await;
    // Every socket is bound before start returns.
    assert!(
        eventually(WAIT, || listeners_at(vip) == 2).await,
        "one listener per runtime worker, found {}",
        listeners_at(vip)
    );
    serves_then_closes_every_socket(&plane, "accept", vip, &backend, "hello").await;
}
