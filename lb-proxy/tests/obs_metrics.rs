//! `/metrics` after known traffic: the contract's names and labels, counts
//! equal to the connections made, the connect-duration histogram, process and
//! reload metrics, and series removed with their service or endpoint.

mod obs_support;

use obs_support::*;
use tokio::net::TcpStream;

/// The value of the sample line that starts with `series ` (exact labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_connections_made_with_the_contract_labels() {
    let (a, _ka) = echo_backend().await;
    let vip = addr();
    let port = free_port(vip);
    let proxy = Proxy::start(&service_toml("web", vip, port, &[a], "")).await;

    const N: usize = 6;
    for i in 0..N {
        let mut c = TcpStream::connect((vip, port)).await.expect("connect");
        echo(&mut c, format!("hello {i}").as_bytes()).await;
    }
    let labels = "namespace=\"default\",service=\"web\",port=\"tcp\",protocol=\"TCP\"";
    let endpoint = format!("{labels},endpoint=\"{a}\"");
    // Closing is asynchronous: wait until the gauge is back to 0.
    let settled = eventually(WAIT, || async {
        let (_, text) = proxy.get("/metrics").await;
        sample(&text, &format!("lb_active_connections{{{labels}}}")) == Some(0.0)
    })
    .await;
    assert!(settled, "active connections return to 0");
    let (status, text) = proxy.get("/metrics").await;
    assert_eq!(status, 200);

    assert_eq!(
        sample(&text, &format!("lb_connections_total{{{labels}}}")),
        Some(N as f64),
        "{text}"
    );
    let sent: usize = (0..N).map(|i| format!("hello {i}").len()).sum();
    for dir in ["rx", "tx"] {
        assert_eq!(
            sample(
                &text,
                &format!("lb_bytes_total{{{endpoint},direction=\"{dir}\"}}")
            ),
            Some(sent as f64),
            "bytes {dir}"
        );
    }
    assert_eq!(
        sample(
            &text,
            &format!("lb_connect_duration_seconds_count{{{endpoint}}}")
        ),
        Some(N as f64)
    );
    assert_eq!(
        sample(
            &text,
            &format!("lb_connect_duration_seconds_bucket{{{endpoint},le=\"+Inf\"}}")
        ),
        Some(N as f64)
    );
    assert_eq!(
        sample(&text, &format!("lb_connect_errors_total{{{endpoint}}}")),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, &format!("lb_endpoint_ready{{{endpoint}}}")),
        Some(1.0)
    );
    for reason in ["no_endpoints", "source_range", "limit"] {
        assert_eq!(
            sample(
                &text,
                &format!("lb_rejected_connections_total{{{labels},reason=\"{reason}\"}}")
            ),
            Some(0.0)
        );
    }
    assert_eq!(
        sample(&text, "lb_config_reloads_total{result=\"success\"}"),
        Some(0.0)
    );
    for family in [
        "lb_connections_total counter",
        "lb_active_connections gauge",
        "lb_bytes_total counter",
        "lb_connect_errors_total counter",
        "lb_rejected_connections_total counter",
        "lb_udp_sessions gauge",
        "lb_udp_datagrams_total counter",
        "lb_endpoint_ready gauge",
        "lb_config_reloads_total counter",
        "lb_connect_duration_seconds histogram",
        "process_cpu_seconds_total counter",
        "process_resident_memory_bytes gauge",
        "process_open_fds gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "# TYPE {family} missing"
        );
    }
    assert!(sample(&text, "process_open_fds").unwrap_or(0.0) > 0.0);
    proxy.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dials_are_counted_per_endpoint() {
    // An address where nothing listens: every dial is refused.
    let dead_ip = addr();
    let dead = std::net::SocketAddr::new(dead_ip, free_port(dead_ip));
    let vip = addr();
    let port = free_port(vip);
    let proxy = Proxy::start(&service_toml("down", vip, port, &[dead], "")).await;
    let c = TcpStream::connect((vip, port)).await;
    if let Ok(mut c) = c {
        // The client is reset once every dial failed.
        let mut buf = [0u8; 1];
        let _ = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut c, &mut buf)).await;
    }
    let series = format!(
        "lb_connect_errors_total{{namespace=\"default\",service=\"down\",port=\"tcp\",protocol=\"TCP\",endpoint=\"{dead}\"}}"
    );
    let counted = eventually(WAIT, || async {
        let (_, text) = proxy.get("/metrics").await;
        sample(&text, &series) == Some(3.0)
    })
    .await;
    assert!(
        counted,
        "three dials (connect_timeouts_ms has three entries) failed"
    );
    proxy.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_deleted_service_and_endpoint_are_removed() {
    let (a, _ka) = echo_backend().await;
    let (b, _kb) = echo_backend().await;
    let (vip1, vip2) = (addr(), addr());
    let (p1, p2) = (free_port(vip1), free_port(vip2));
    let both = service_toml("keep", vip1, p1, &[a], "") + &service_toml("gone", vip2, p2, &[b], "");
    let proxy = Proxy::start(&both).await;
    let mut c = TcpStream::connect((vip2, p2)).await.expect("connect");
    echo(&mut c, b"x").await;
    drop(c);
    let (_, before) = proxy.get("/metrics").await;
    assert!(before.contains("service=\"gone\""));
    assert!(before.contains(&format!("endpoint=\"{b}\"")));

    assert!(
        proxy
            .rewrite(&service_toml("keep", vip1, p1, &[a], ""))
            .await
    );
    let (_, after) = proxy.get("/metrics").await;
    assert!(!after.contains("service=\"gone\""), "{after}");
    assert!(!after.contains(&format!("endpoint=\"{b}\"")), "{after}");
    assert!(after.contains("service=\"keep\""));
    assert_eq!(
        sample(&after, "lb_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    proxy.app.shutdown().await;
}
