//! The TCP data plane on the wire: balancing, affinity, failover, half-close,
//! resets, limits, listener reconciliation and drain. Each test starts a
//! `DataPlane` over hand-built services on 127.0.0.0/8 and talks to it with
//! real sockets.
//!
//! The scenarios run under every forwarding engine (`copy`, `splice`, `auto`,
//! each with the default accept mode) and every accept mode (`single`,
//! `reuseport`, `percore` with two workers, each with the default engine):
//! one module per mode at the end of this file. Timers that do not depend on
//! the mode (affinity expiry, snapshots that leave connections alone) run
//! once, under `tokio::time::pause`.

use std::collections::{BTreeMap, HashSet};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::stats::{read, CloseCause};
use lb_core::{AcceptMode, ForwardEngine, Protocol, ProxySettings, SessionAffinity};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::process::{self, lb_threads};
use crate::support::*;

async fn assert_refused(addr: SocketAddr) {
    let err = TcpStream::connect(addr)
        .await
        .expect_err("connect must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

/// Connects and expects to be reset at once: either the connect itself or
/// the first read reports the reset, depending on when the RST arrives.
async fn assert_reset(addr: SocketAddr, bound: Duration) {
    match TcpStream::connect(addr).await {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(mut client) => {
            let end = read_until_closed(&mut client, bound).await;
            assert_eq!(end.expect_err("reset").kind(), ErrorKind::ConnectionReset);
        }
    }
}

fn affinity(seconds: f64) -> SessionAffinity {
    SessionAffinity::ClientIp {
        timeout: Duration::from_secs_f64(seconds),
    }
}

// === balancing ===

async fn round_robin_spreads_connections_evenly_over_three_backends(mode: Mode) {
    let a = http_backend("127.0.244.1", "111");
    let b = http_backend("127.0.244.2", "222");
    let c = http_backend("127.0.244.3", "333");
    let vip = vip();
    let plane = mode
        .start(
            settings(),
            vec![service("rr", vip, &[a.addr, b.addr, c.addr])],
        )
        .await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(fetch(vip).await);
    }
    let mut counts = BTreeMap::new();
    for answer in &answers {
        *counts.entry(answer.as_str()).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("111", 10), ("222", 10), ("333", 10)])
    );
    assert!(
        answers.windows(2).all(|w| w[0] != w[1]),
        "same backend twice in a row: {answers:?}"
    );
    let stats = port_stats(&plane, vip, Protocol::Tcp);
    assert_eq!(read(&stats.accepted), 30);
    assert_eq!(read(&endpoint_stats(&plane, vip, a.addr).connections), 10);
}

async fn weights_split_connections_in_proportion(mode: Mode) {
    let heavy = http_backend("127.0.244.4", "heavy");
    let light = http_backend("127.0.244.5", "light");
    let vip = vip();
    let _plane = mode
        .start(
            settings(),
            vec![weighted_service(
                "weighted",
                vip,
                &[(heavy.addr, 3), (light.addr, 1)],
            )],
        )
        .await;
    let mut heavy_count = 0;
    for _ in 0..400 {
        if fetch(vip).await == "heavy" {
            heavy_count += 1;
        }
    }
    assert!(
        (296..=304).contains(&heavy_count),
        "heavy got {heavy_count} of 400"
    );
    assert_eq!(heavy.accepted() + light.accepted(), 400);
}

async fn refuses_connections_when_no_endpoints_and_serves_once_one_appears(mode: Mode) {
    let vip = vip();
    let plane = mode
        .start(settings(), vec![service("empty", vip, &[])])
        .await;
    assert_refused(vip).await;
    assert!(plane.bind_errors().is_empty());

    let backend = http_backend("127.0.244.6", "111");
    plane
        .update(node(), vec![service("empty", vip, &[backend.addr])])
        .await;
    assert_eq!(fetch(vip).await, "111");

    // A not-ready endpoint takes no connection: refused again.
    let mut not_ready = service("empty", vip, &[backend.addr]);
    not_ready.ports[0].endpoints[0].serving = false;
    plane.update(node(), vec![not_ready]).await;
    assert_refused(vip).await;

    plane
        .update(node(), vec![service("empty", vip, &[backend.addr])])
        .await;
    assert_eq!(fetch(vip).await, "111");
}

#[tokio::test(start_paused = true)]
async fn client_ip_affinity_sticks_expires_and_switches_live() {
    let a = http_backend("127.0.244.7", "111");
    let b = http_backend("127.0.244.8", "222");
    let c = http_backend("127.0.244.9", "333");
    let vip = vip();
    let spec = |aff| service("sticky", vip, &[a.addr, b.addr, c.addr]).with_affinity(aff);
    let plane = start(settings(), vec![spec(affinity(1.0))]).await;

    // Every client sticks to one endpoint; clients spread over endpoints.
    let clients = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
    let mut landed = HashSet::new();
    for client in clients {
        let first = fetch_from(client, vip).await;
        for _ in 1..15 {
            assert_eq!(
                fetch_from(client, vip).await,
                first,
                "client {client} moved"
            );
        }
        landed.insert(first);
    }
    assert!(landed.len() >= 2, "3 clients all on {landed:?}");

    // The pin expires after the timeout: the next pick is the next in turn,
    // which is never the previous one with three equal endpoints.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pinned = fetch_from("127.0.0.11", vip).await;
    for _ in 0..5 {
        assert_eq!(fetch_from("127.0.0.11", vip).await, pinned);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_ne!(fetch_from("127.0.0.11", vip).await, pinned);

    // Switched off live: the same client is balanced again.
    plane
        .update(node(), vec![spec(SessionAffinity::None)])
        .await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(fetch_from("127.0.0.11", vip).await);
    }
    assert!(answers.windows(2).all(|w| w[0] != w[1]), "{answers:?}");

    // And on again.
    plane.update(node(), vec![spec(affinity(60.0))]).await;
    let first = fetch_from("127.0.0.11", vip).await;
    for _ in 0..10 {
        assert_eq!(fetch_from("127.0.0.11", vip).await, first);
    }
}

// === dials ===

async fn dials_fail_over_from_a_closed_port(mode: Mode) {
    let good = http_backend("127.0.244.10", "111");
    let closed = closed_port("127.0.244.11");
    let vip = vip();
    let plane = mode
        .start(
            settings(),
            vec![service("failover", vip, &[good.addr, closed])],
        )
        .await;
    for _ in 0..10 {
        assert_eq!(fetch(vip).await, "111");
    }
    assert_eq!(read(&endpoint_stats(&plane, vip, closed).connect_errors), 5);
    assert_eq!(
        read(&endpoint_stats(&plane, vip, good.addr).connections),
        10
    );
    // Five clients reached the good endpoint only after the closed one
    // refused: counted on the port and on the endpoint they moved away from.
    let port = port_stats(&plane, vip, Protocol::Tcp);
    assert_eq!(read(&port.failovers), 5);
    assert_eq!(read(&endpoint_stats(&plane, vip, closed).failovers), 5);
    assert_eq!(read(&endpoint_stats(&plane, vip, good.addr).failovers), 0);
}

async fn dials_fail_over_from_an_endpoint_that_never_answers(mode: Mode) {
    let good = http_backend("127.0.244.12", "111");
    let hole = blackhole("127.0.244.13").await;
    let vip = vip();
    let plane = mode
        .start(
            settings(),
            vec![service("blackhole", vip, &[good.addr, hole.addr])],
        )
        .await;
    for _ in 0..6 {
        assert_eq!(fetch(vip).await, "111");
    }
    assert_eq!(
        read(&endpoint_stats(&plane, vip, hole.addr).connect_errors),
        3
    );
}

async fn client_is_reset_when_every_dial_fails(mode: Mode) {
    let vip = vip();
    let closed = closed_port("127.0.244.14");
    let plane = mode
        .start(settings(), vec![service("dead", vip, &[closed])])
        .await;
    assert_reset(vip, WAIT).await;
    // Every dial went to the one endpoint: nothing failed over.
    let dead = endpoint_stats(&plane, vip, closed);
    assert!(eventually(WAIT, || read(&dead.connect_errors) == 3).await);
    assert_eq!(read(&dead.failovers), 0);
    assert_eq!(read(&port_stats(&plane, vip, Protocol::Tcp).failovers), 0);
}

// === the byte stream ===

async fn half_close_is_passed_on_and_the_answer_still_flows(mode: Mode) {
    let backend = read_to_eof_backend("127.0.244.15", "got:");
    let vip = vip();
    let _plane = mode
        .start(settings(), vec![service("halfclose", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    client.write_all(b"hello world").await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, client.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "got:11");
}

async fn a_half_closed_client_downloads_past_the_half_close_timeout(mode: Mode) {
    // A request, a FIN, then a slow answer: 15 chunks 200 ms apart, 3 s in
    // all, three times the half-close timeout. The timer counts silence in
    // the direction still open, not time since the FIN: every byte arrives
    // and the close is clean.
    const CHUNK: &[u8] = b"0123456789abcdef";
    let backend = drip_backend(fresh_ip(), CHUNK, Duration::from_millis(200), 15);
    let vip = vip();
    let settings = ProxySettings {
        half_close_timeout: Duration::from_secs(1),
        ..settings()
    };
    let plane = mode
        .start(settings, vec![service("download", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    client.write_all(b"GET /slow").await.unwrap();
    client.shutdown().await.unwrap();
    let mut body = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut body))
        .await
        .expect("the download ends within the bound")
        .expect("a clean close, not a reset");
    assert_eq!(body, CHUNK.repeat(15), "every byte of the download");
    let stats = port_stats(&plane, vip, Protocol::Tcp);
    assert!(eventually(WAIT, || stats.closed.get(CloseCause::Closed) == 1).await);
    assert_eq!(stats.closed.get(CloseCause::HalfCloseTimeout), 0);
}

async fn a_direction_silent_past_the_half_close_timeout_is_cut_with_a_reset(mode: Mode) {
    let (backend, mut accepted) = capture_backend("127.0.244.16");
    let vip = vip();
    let settings = ProxySettings {
        half_close_timeout: Duration::from_millis(300),
        ..settings()
    };
    let plane = mode
        .start(settings, vec![service("nofin", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    client.write_all(b"x").await.unwrap();
    client.shutdown().await.unwrap();
    let server = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .unwrap()
        .unwrap();
    let mut server = server;
    let mut request = Vec::new();
    tokio::time::timeout(WAIT, server.read_to_end(&mut request))
        .await
        .expect("the client's FIN reaches the endpoint")
        .unwrap();
    assert_eq!(request, b"x");
    // The other direction keeps flowing after the FIN...
    server.write_all(b"late").await.unwrap();
    let mut late = [0u8; 4];
    client.read_exact(&mut late).await.unwrap();
    assert_eq!(&late, b"late");
    let last_byte = Instant::now();
    // ...until it stays silent for the half-close timeout: then both legs
    // are reset, so neither side takes the cut stream for a complete one.
    let end = read_until_closed(&mut client, WAIT).await;
    assert_eq!(
        end.expect_err("a reset, not a FIN").kind(),
        ErrorKind::ConnectionReset
    );
    assert!(last_byte.elapsed() >= Duration::from_millis(250));
    // The endpoint's leg is reset too. It had the client's FIN (CLOSE_WAIT),
    // where Linux reports a reset as EPIPE; a FIN would report nothing.
    assert!(
        eventually(WAIT, || matches!(server.take_error(),
            Ok(Some(e)) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)))
        .await,
        "the endpoint's leg is reset too"
    );
    let stats = port_stats(&plane, vip, Protocol::Tcp);
    assert!(eventually(WAIT, || stats.closed.get(CloseCause::HalfCloseTimeout) == 1).await);
}

async fn fifty_concurrent_connections_echo_random_payloads_exactly(mode: Mode) {
    use rand::{Rng, RngCore, SeedableRng};
    let backend = echo_backend("127.0.244.17");
    let vip = vip();
    let plane = mode
        .start(settings(), vec![service("bulk", vip, &[backend.addr])])
        .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1b);
    let mut pool = vec![0u8; 4 << 20];
    rng.fill_bytes(&mut pool);
    let pool = Arc::new(pool);
    let mut tasks = Vec::new();
    let mut total = 0u64;
    for _ in 0..50 {
        let len = rng.random_range(0..=(4usize << 20));
        let offset = rng.random_range(0..=(pool.len() - len));
        total += len as u64;
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let payload = &pool[offset..offset + len];
            let expected = Sha256::digest(payload);
            let stream = TcpStream::connect(vip).await.unwrap();
            let (mut r, mut w) = stream.into_split();
            let writer = {
                let pool = pool.clone();
                tokio::spawn(async move {
                    w.write_all(&pool[offset..offset + len]).await.unwrap();
                    w.shutdown().await.unwrap();
                })
            };
            let mut hasher = Sha256::new();
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                got += n;
            }
            writer.await.unwrap();
            assert_eq!(got, len);
            assert_eq!(hasher.finalize(), expected);
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("all echoes within the bound");
    let stats = endpoint_stats(&plane, vip, backend.addr);
    assert!(eventually(WAIT, || read(&stats.active) == 0).await);
    assert_eq!(read(&stats.bytes_rx), total);
    assert_eq!(read(&stats.bytes_tx), total);
}

async fn bytes_are_counted_while_the_connection_runs(mode: Mode) {
    let backend = echo_backend("127.0.244.18");
    let vip = vip();
    let plane = mode
        .start(settings(), vec![service("count", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    echo(&mut client, b"12345").await;
    let stats = endpoint_stats(&plane, vip, backend.addr);
    assert!(
        eventually(WAIT, || read(&stats.bytes_rx) == 5
            && read(&stats.bytes_tx) == 5)
        .await
    );
    assert_eq!(read(&stats.active), 1);
    assert_eq!(plane.active_connections(), 1);
}

// === resets and limits ===

async fn a_reset_from_the_backend_reaches_the_client_as_a_reset(mode: Mode) {
    let backend = reset_backend("127.0.244.19");
    let vip = vip();
    let plane = mode
        .start(settings(), vec![service("rst", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let end = read_until_closed(&mut client, WAIT).await;
    assert_eq!(end.expect_err("reset").kind(), ErrorKind::ConnectionReset);
    // Counted as a reset, on the port and on its endpoint.
    let port = port_stats(&plane, vip, Protocol::Tcp);
    let endpoint = endpoint_stats(&plane, vip, backend.addr);
    assert!(eventually(WAIT, || port.closed.get(CloseCause::Reset) == 1).await);
    assert!(eventually(WAIT, || endpoint.closed.get(CloseCause::Reset) == 1).await);
    assert_eq!(port.closed.get(CloseCause::Closed), 0);
}

async fn a_reset_from_the_client_reaches_the_backend_as_a_reset(mode: Mode) {
    let (backend, mut accepted) = capture_backend("127.0.244.20");
    let vip = vip();
    let _plane = mode
        .start(settings(), vec![service("rst2", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    client.write_all(b"x").await.unwrap();
    let mut server = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .unwrap()
        .unwrap();
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte).await.unwrap();
    reset(client);
    let end = read_until_closed(&mut server, WAIT).await;
    assert_eq!(end.expect_err("reset").kind(), ErrorKind::ConnectionReset);
}

async fn connections_over_max_connections_are_reset_at_once_and_counted(mode: Mode) {
    let backend = echo_backend("127.0.244.21");
    let vip = vip();
    let settings = ProxySettings {
        max_connections: 2,
        ..settings()
    };
    let plane = mode
        .start(settings, vec![service("limited", vip, &[backend.addr])])
        .await;
    let mut first = TcpStream::connect(vip).await.unwrap();
    echo(&mut first, b"one").await;
    let mut second = TcpStream::connect(vip).await.unwrap();
    echo(&mut second, b"two").await;

    assert_reset(vip, Duration::from_secs(1)).await;
    let stats = port_stats(&plane, vip, Protocol::Tcp);
    assert_eq!(read(&stats.rejected_limit), 1);
    assert_eq!(backend.accepted(), 2);

    // The open ones are untouched, and a freed slot is taken again.
    echo(&mut first, b"still").await;
    drop(second);
    assert!(eventually(WAIT, || read(&stats.active) == 1).await);
    let mut fourth = TcpStream::connect(vip).await.unwrap();
    echo(&mut fourth, b"four").await;
}

// === listeners ===

async fn service_listeners_share_their_address_with_so_reuseport(mode: Mode) {
    let backend = http_backend("127.0.244.22", "111");
    let vip = vip();
    let _plane = mode
        .start(settings(), vec![service("reuse", vip, &[backend.addr])])
        .await;
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_address(true).unwrap();
    other.set_reuse_port(true).unwrap();
    other
        .bind(&vip.into())
        .expect("a second reuseport socket binds beside lb");
    other.listen(16).expect("and listens");
    drop(other);
    assert_eq!(fetch(vip).await, "111");
}

async fn a_blocked_frontend_is_reported_retried_and_never_stops_the_others(mode: Mode) {
    let backend = http_backend("127.0.244.23", "111");
    let free = vip();
    let blocked = vip();
    let blocker = std::net::TcpListener::bind(blocked).unwrap();
    let plane = mode
        .start(
            settings(),
            vec![
                service("free", free, &[backend.addr]),
                service("blocked", blocked, &[backend.addr]),
            ],
        )
        .await;
    assert_eq!(fetch(free).await, "111");
    let errors = plane.bind_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (key, error) = errors.iter().next().unwrap();
    assert_eq!(key.addr, blocked);
    assert_eq!(error.kind(), ErrorKind::AddrInUse, "{error}");
    assert!(error.to_string().contains("in use"), "{error}");

    drop(blocker);
    assert!(
        eventually(Duration::from_secs(3), || plane.bind_errors().is_empty()).await,
        "the frontend was bound again"
    );
    assert_eq!(fetch(blocked).await, "111");
}

#[tokio::test(start_paused = true)]
async fn an_open_connection_survives_changed_snapshots() {
    let a = echo_backend("127.0.244.24");
    let b = echo_backend("127.0.244.25");
    let c = echo_backend("127.0.244.26");
    let vip = vip();
    let other_vip = crate::support::vip();
    let settings = ProxySettings {
        drain_timeout: Duration::from_millis(300),
        ..settings()
    };
    let plane = start(settings, vec![service("stay", vip, &[a.addr])]).await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    echo(&mut client, b"before").await;

    let generation = plane.table().load().generation();
    plane
        .apply(next_snapshot(
            &plane,
            vec![service("stay", vip, &[a.addr, b.addr])],
        ))
        .await;
    echo(&mut client, b"b joined").await;
    plane
        .apply(next_snapshot(
            &plane,
            vec![
                service("stay", vip, &[a.addr, b.addr, c.addr]),
                service("other", other_vip, &[c.addr]),
            ],
        ))
        .await;
    echo(&mut client, b"c joined").await;
    plane
        .apply(next_snapshot(&plane, vec![service("stay", vip, &[a.addr])]))
        .await;
    assert!(plane.table().load().generation() > generation);
    assert_refused(other_vip).await;
    // Longer than drain_timeout: the connection was not drained.
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo(&mut client, b"b and c left").await;
}

// === drain ===

async fn shutdown_refuses_new_connections_and_waits_for_open_ones(mode: Mode) {
    let backend = echo_backend("127.0.244.27");
    let vip = vip();
    let settings = ProxySettings {
        drain_timeout: Duration::from_secs(4),
        ..settings()
    };
    let plane = mode
        .start(settings, vec![service("drain", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    echo(&mut client, b"before").await;

    let draining = tokio::spawn({
        let plane = plane.clone();
        async move { plane.shutdown().await }
    });
    assert!(
        eventually(WAIT, || listeners_at(vip) == 0).await,
        "every listener closes at once"
    );
    assert_refused(vip).await;
    echo(&mut client, b"still served").await;
    assert!(!draining.is_finished());
    assert_eq!(plane.active_connections(), 1);

    client.shutdown().await.unwrap();
    assert_eq!(read_until_closed(&mut client, WAIT).await.unwrap(), 0);
    tokio::time::timeout(Duration::from_secs(2), draining)
        .await
        .expect("shutdown returns when the last connection ends")
        .unwrap();
    assert_eq!(plane.active_connections(), 0);
    // Idempotent, and the listener stays closed.
    plane.shutdown().await;
    plane
        .update(node(), vec![service("drain", vip, &[backend.addr])])
        .await;
    assert_refused(vip).await;
}

async fn drain_timeout_bounds_the_shutdown(mode: Mode) {
    let backend = echo_backend("127.0.244.28");
    let vip = vip();
    let settings = ProxySettings {
        drain_timeout: Duration::from_millis(300),
        ..settings()
    };
    let plane = mode
        .start(settings, vec![service("bounded", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    echo(&mut client, b"hi").await;
    let stats = port_stats(&plane, vip, Protocol::Tcp);
    let started = Instant::now();
    tokio::time::timeout(WAIT, plane.shutdown())
        .await
        .expect("shutdown within the bound");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The deadline cuts what is left with a reset, not a FIN.
    let end = read_until_closed(&mut client, WAIT).await;
    assert_eq!(
        end.expect_err("a reset, not a FIN").kind(),
        ErrorKind::ConnectionReset
    );
    assert_eq!(plane.active_connections(), 0);
    assert_eq!(stats.closed.get(CloseCause::Stopped), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_its_shutdown_future_resolves() {
    let backend = http_backend("127.0.244.29", "111");
    let vip = vip();
    init_tracing();
    let snapshot = lb_core::Snapshot::build(
        node(),
        vec![service("run", vip, &[backend.addr])],
        None,
        std::time::SystemTime::now(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lb_proxy::run(settings(), snapshot, async move {
        let _ = stopped.await;
    }));
    // Bound before run awaits its shutdown future, but give the task a moment.
    assert!(
        eventually(WAIT, || std::net::TcpStream::connect(vip).is_ok()).await,
        "run binds its frontends"
    );
    assert_eq!(fetch(vip).await, "111");
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert_refused(vip).await;
}

async fn a_removed_endpoint_drains_its_open_connections(mode: Mode) {
    let a = echo_backend("127.0.244.30");
    let b = echo_backend("127.0.244.31");
    let vip = vip();
    let settings = ProxySettings {
        drain_timeout: Duration::from_millis(400),
        ..settings()
    };
    let plane = mode
        .start(settings, vec![service("removed", vip, &[a.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    echo(&mut client, b"on a").await;

    plane
        .update(node(), vec![service("removed", vip, &[b.addr])])
        .await;
    let removed = Instant::now();
    echo(&mut client, b"still on a").await;
    let mut newcomer = TcpStream::connect(vip).await.unwrap();
    echo(&mut newcomer, b"on b").await;
    assert_eq!(b.accepted(), 1);

    let end = read_until_closed(&mut client, WAIT).await;
    assert_eq!(
        end.expect_err("a drain cut is a reset, not a FIN").kind(),
        ErrorKind::ConnectionReset
    );
    assert!(removed.elapsed() >= Duration::from_millis(300));
    echo(&mut newcomer, b"b is untouched").await;
    let stats = port_stats(&plane, vip, Protocol::Tcp);
    assert!(eventually(WAIT, || stats.closed.get(CloseCause::Drained) == 1).await);
}

async fn a_drain_cut_is_seen_as_a_reset_while_the_backend_still_sends(mode: Mode) {
    // The endpoint streams for 10 s; it leaves the table with 1 s to drain.
    let streaming = drip_backend(fresh_ip(), b"tick", Duration::from_millis(50), 200);
    let other = echo_backend(fresh_ip());
    let vip = vip();
    let settings = ProxySettings {
        drain_timeout: Duration::from_secs(1),
        ..settings()
    };
    let plane = mode
        .start(settings, vec![service("stream", vip, &[streaming.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    let mut tick = [0u8; 4];
    tokio::time::timeout(WAIT, client.read_exact(&mut tick))
        .await
        .expect("the stream flows")
        .unwrap();
    plane
        .update(node(), vec![service("stream", vip, &[other.addr])])
        .await;
    let removed = Instant::now();
    // Bytes keep coming until the deadline; then the stream is cut with a
    // reset: an EOF would pass the truncated stream off as complete.
    let end = read_until_closed(&mut client, WAIT).await;
    assert_eq!(
        end.expect_err("a reset, not a FIN").kind(),
        ErrorKind::ConnectionReset
    );
    assert!(removed.elapsed() >= Duration::from_millis(900));
    let stats = port_stats(&plane, vip, Protocol::Tcp);
    assert!(eventually(WAIT, || stats.closed.get(CloseCause::Drained) == 1).await);
    assert_eq!(stats.closed.get(CloseCause::Stopped), 0);
}

#[tokio::test(start_paused = true)]
async fn weight_zero_drains_but_not_ready_leaves_connections_alone() {
    let a = echo_backend("127.0.244.32");
    let b = echo_backend("127.0.244.33");
    let vip = vip();
    let settings = ProxySettings {
        drain_timeout: Duration::from_millis(300),
        ..settings()
    };
    let both = |wa, ready_a: bool| {
        let mut s = weighted_service("w0", vip, &[(a.addr, wa), (b.addr, 1)]);
        s.ports[0].endpoints[0].serving = ready_a;
        s
    };
    let plane = start(settings, vec![service("w0", vip, &[a.addr])]).await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    echo(&mut client, b"on a").await;

    // Not ready: open connections are left alone past the drain timeout.
    plane.update(node(), vec![both(1, false)]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo(&mut client, b"not ready, still open").await;

    // Weight 0: drains like a removal, and is cut like one.
    plane.update(node(), vec![both(0, true)]).await;
    echo(&mut client, b"draining").await;
    let end = read_until_closed(&mut client, WAIT).await;
    assert_eq!(
        end.expect_err("a reset, not a FIN").kind(),
        ErrorKind::ConnectionReset
    );
}

async fn tcp_idle_timeout_closes_an_idle_connection_with_a_fin(mode: Mode) {
    let backend = echo_backend("127.0.244.34");
    let vip = vip();
    let settings = ProxySettings {
        tcp_idle_timeout: Some(Duration::from_millis(300)),
        ..settings()
    };
    let plane = mode
        .start(settings, vec![service("idle", vip, &[backend.addr])])
        .await;
    let mut client = TcpStream::connect(vip).await.unwrap();
    // Traffic every 100 ms keeps it open past the timeout...
    for i in 0..6 {
        echo(&mut client, format!("ping {i}").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...silence closes it, with a FIN: nothing was in flight.
    let quiet = Instant::now();
    let end = read_until_closed(&mut client, WAIT).await;
    assert_eq!(end.expect("a FIN, not a reset"), 0);
    assert!(quiet.elapsed() >= Duration::from_millis(150));
    let stats = port_stats(&plane, vip, Protocol::Tcp);
    assert!(eventually(WAIT, || stats.closed.get(CloseCause::IdleTimeout) == 1).await);
}

// === settings and frontends ===

async fn reloaded_settings_apply_to_new_connections(mode: Mode) {
    let backend = echo_backend("127.0.244.35");
    let vip = vip();
    let plane = mode
        .start(settings(), vec![service("reload", vip, &[backend.addr])])
        .await;
    let mut first = TcpStream::connect(vip).await.unwrap();
    echo(&mut first, b"unlimited").await;
    plane.set_settings(mode.settings(ProxySettings {
        max_connections: 1,
        ..settings()
    }));
    assert_reset(vip, Duration::from_secs(1)).await;
    echo(&mut first, b"the open one is untouched").await;
    assert_eq!(
        read(&port_stats(&plane, vip, Protocol::Tcp).rejected_limit),
        1
    );
}

async fn a_node_port_service_listens_on_its_cluster_ip_and_every_node_address(mode: Mode) {
    let backend = http_backend("127.0.244.36", "111");
    let vip = vip();
    let node_port = closed_port("127.0.1.1");
    let mut spec = service("nodeport", vip, &[backend.addr]);
    spec.service_type = lb_core::ServiceType::NodePort;
    spec.ports[0].node_port = Some(node_port.port());
    let plane = mode.start(settings(), vec![spec]).await;
    assert_eq!(fetch(vip).await, "111");
    assert_eq!(fetch(node_port).await, "111");
    assert_eq!(read(&port_stats(&plane, vip, Protocol::Tcp).accepted), 2);
}

/// Every socket of a TCP frontend (one, or one per runtime worker or
/// per-core worker) is bound before `start` returns, serves, and closes when
/// the frontend goes: clients are refused, not queued on a forgotten sibling.
async fn every_socket_of_a_frontend_serves_and_closes_with_it(mode: Mode) {
    let backend = http_backend("127.0.248.40", "hello");
    let vip = vip();
    let plane = mode
        .start(settings(), vec![service("accept", vip, &[backend.addr])])
        .await;
    assert_eq!(listeners_at(vip), mode.sockets_per_frontend(2));
    serves_then_closes_every_socket(&plane, "accept", vip, &backend, "hello").await;
}

// === lifecycle ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_data_plane_leaves_no_task_or_thread_after_shutdown() {
    // lb's threads are process-wide: no other test's run meanwhile.
    let _alone = process::alone().await;
    assert!(
        eventually(WAIT, || lb_threads().is_empty()).await,
        "threads of earlier tests: {:?}",
        lb_threads()
    );
    let tcp_backend = echo_backend("127.0.248.60");
    let udp_backend = udp_echo_backend("127.0.248.61");
    let udp_addr = udp_backend.addr;
    let metrics = tokio::runtime::Handle::current().metrics();
    for accept in [AcceptMode::PerCore, AcceptMode::Single] {
        let before = metrics.num_alive_tasks();
        let vip = vip();
        let udp_port = udp_port("dns", vip.port(), &[udp_addr]);
        let mut svc = service("life", vip, &[tcp_backend.addr]);
        svc.ports[0].name = "tcp".into();
        let svc = svc.with_port(udp_port);
        let settings = ProxySettings {
            drain_timeout: Duration::from_millis(200),
            ..settings()
        };
        let plane = Mode::accept(accept).start(settings, vec![svc]).await;
        if accept == AcceptMode::PerCore {
            // A thread names itself once it runs.
            assert!(
                eventually(WAIT, || lb_threads() == ["lb-worker-0", "lb-worker-1"]).await,
                "worker threads: {:?}",
                lb_threads()
            );
        }
        // Traffic both ways; one TCP connection stays open into the drain.
        let mut open = TcpStream::connect(vip).await.unwrap();
        echo(&mut open, b"tcp").await;
        let client = udp_client("127.0.0.1").await;
        assert_eq!(udp_ask(&client, vip, b"udp").await.0, "udp");
        tokio::time::timeout(WAIT, plane.shutdown())
            .await
            .expect("shutdown within the bound");
        assert_eq!(lb_threads(), Vec::<String>::new(), "{accept:?}");
        drop(open);
        // The backend's side of the cut connection ends too; then the
        // runtime holds what it held before the data plane started.
        assert!(
            eventually(WAIT, || metrics.num_alive_tasks() == before).await,
            "{accept:?}: {} tasks alive, {before} before the start",
            metrics.num_alive_tasks()
        );
        drop(plane);
    }
}

/// Runs every scenario named under every mode, one module per mode. Each
/// holds [`process::shared`]: per-core workers are threads, and splice
/// borrows pipes, both counted process-wide by the lifecycle tests.
macro_rules! in_every_mode {
    ($($name:ident),* $(,)?) => {
        in_every_mode!(@mode copy, Mode::engine(ForwardEngine::Copy); $($name),*);
        in_every_mode!(@mode splice, Mode::engine(ForwardEngine::Splice); $($name),*);
        in_every_mode!(@mode auto, Mode::DEFAULT; $($name),*);
        in_every_mode!(@mode reuseport, Mode::accept(AcceptMode::Reuseport); $($name),*);
        in_every_mode!(@mode percore, Mode::accept(AcceptMode::PerCore); $($name),*);
    };
    (@mode $module:ident, $mode:expr; $($name:ident),*) => {
        mod $module {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let _shared = process::shared().await;
                super::$name($mode).await;
            })*
        }
    };
}

in_every_mode! {
    round_robin_spreads_connections_evenly_over_three_backends,
    weights_split_connections_in_proportion,
    refuses_connections_when_no_endpoints_and_serves_once_one_appears,
    dials_fail_over_from_a_closed_port,
    dials_fail_over_from_an_endpoint_that_never_answers,
    client_is_reset_when_every_dial_fails,
    half_close_is_passed_on_and_the_answer_still_flows,
    a_half_closed_client_downloads_past_the_half_close_timeout,
    a_direction_silent_past_the_half_close_timeout_is_cut_with_a_reset,
    fifty_concurrent_connections_echo_random_payloads_exactly,
    bytes_are_counted_while_the_connection_runs,
    a_reset_from_the_backend_reaches_the_client_as_a_reset,
    a_reset_from_the_client_reaches_the_backend_as_a_reset,
    connections_over_max_connections_are_reset_at_once_and_counted,
    service_listeners_share_their_address_with_so_reuseport,
    a_blocked_frontend_is_reported_retried_and_never_stops_the_others,
    shutdown_refuses_new_connections_and_waits_for_open_ones,
    drain_timeout_bounds_the_shutdown,
    a_removed_endpoint_drains_its_open_connections,
    a_drain_cut_is_seen_as_a_reset_while_the_backend_still_sends,
    tcp_idle_timeout_closes_an_idle_connection_with_a_fin,
    reloaded_settings_apply_to_new_connections,
    a_node_port_service_listens_on_its_cluster_ip_and_every_node_address,
    every_socket_of_a_frontend_serves_and_closes_with_it,
}
