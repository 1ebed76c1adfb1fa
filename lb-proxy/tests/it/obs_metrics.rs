//! `/metrics` after known traffic: the contract's names and labels, counts
//! equal to the connections made, the connect-duration histogram, process and
//! reload metrics, and series removed with their service or endpoint while the
//! others keep their values.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

use crate::support::app::TestApp;
use crate::support::config::service_toml;
use crate::support::*;

/// A selector-less UDP service `name` on `vip:port` with one endpoint.
fn udp_service_toml(name: &str, vip: IpAddr, port: u16, endpoint: IpAddr) -> String {
    format!(
        r#"
[[services]]
name = "{name}"
cluster_ip = "{vip}"
[[services.ports]]
name = "udp"
protocol = "UDP"
port = {port}

[[endpoints]]
name = "{name}"
[[endpoints.subsets]]
addresses = [{{ ip = "{endpoint}" }}]
ports = [{{ name = "udp", port = {port}, protocol = "UDP" }}]
"#
    )
}

/// Every sample line of `text` whose labels contain `needle`, as
/// (series, value).
fn samples_with<'a>(text: &'a str, needle: &str) -> Vec<(&'a str, &'a str)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(needle))
        .filter_map(|l| l.rsplit_once(' '))
        .collect()
}

/// Waits until no connection of `service` is open (closing is asynchronous).
async fn settled(proxy: &TestApp, service: &str) -> bool {
    let series =
        format!("lb_active_connections{{namespace=\"default\",service=\"{service}\",port=\"tcp\",protocol=\"TCP\"}}");
    eventually_async(WAIT, || async { proxy.metric(&series).await == Some(0.0) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_connections_made_with_the_contract_labels() {
    let a_backend = echo_backend(fresh_ip());
    let a = a_backend.addr;
    let vip = fresh_ip();
    let port = free_port(vip);
    // A UDP service beside it, so the UDP families have a series too.
    let udp_vip = fresh_ip();
    let udp = udp_service_toml("dns", udp_vip, free_port(udp_vip), fresh_ip());
    let proxy = TestApp::start(&(service_toml("web", vip, port, &[a], "") + &udp)).await;

    const N: usize = 6;
    for i in 0..N {
        let mut c = TcpStream::connect((vip, port)).await.expect("connect");
        echo(&mut c, format!("hello {i}").as_bytes()).await;
    }
    let labels = "namespace=\"default\",service=\"web\",port=\"tcp\",protocol=\"TCP\"";
    let endpoint = format!("{labels},endpoint=\"{a}\"");
    // Closing is asynchronous: wait until the gauge is back to 0.
    let settled = eventually_async(WAIT, || async {
        proxy
            .metric(&format!("lb_active_connections{{{labels}}}"))
            .await
            == Some(0.0)
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
            &format!("lb_connect_duration_seconds_count{{{labels}}}")
        ),
        Some(N as f64)
    );
    assert_eq!(
        sample(
            &text,
            &format!("lb_connect_duration_seconds_bucket{{{labels},le=\"+Inf\"}}")
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
    // Every close cause has its series from the start; each connection
    // ended for one of them.
    let causes = [
        "closed",
        "reset",
        "idle_timeout",
        "half_close_timeout",
        "drained",
        "stopped",
    ];
    let closed: Vec<Option<f64>> = causes
        .iter()
        .map(|c| {
            sample(
                &text,
                &format!("lb_connections_closed_total{{{labels},cause=\"{c}\"}}"),
            )
        })
        .collect();
    assert!(closed.iter().all(Option::is_some), "{text}");
    assert_eq!(closed.iter().flatten().sum::<f64>(), N as f64, "{text}");
    assert_eq!(
        sample(&text, &format!("lb_failovers_total{{{labels}}}")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "lb_config_reloads_total{result=\"success\"}"),
        Some(0.0)
    );
    let udp_labels = "namespace=\"default\",service=\"dns\",port=\"udp\",protocol=\"UDP\"";
    assert_eq!(
        sample(&text, &format!("lb_udp_sessions{{{udp_labels}}}")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "lb_udp_datagrams_total{{{udp_labels},result=\"dropped\",reason=\"flow_limit\"}}"
            )
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, &format!("lb_failovers_total{{{udp_labels}}}")),
        Some(0.0)
    );
    // A UDP port has no connection series: its drops, a source range's
    // included, are lb_udp_datagrams_total only.
    for family in [
        "lb_connections_total",
        "lb_active_connections",
        "lb_rejected_connections_total",
    ] {
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with(family) && l.contains(udp_labels)),
            "{family} has a UDP series:\n{text}"
        );
    }
    for family in [
        "lb_connections_total counter",
        "lb_active_connections gauge",
        "lb_bytes_total counter",
        "lb_connect_errors_total counter",
        "lb_rejected_connections_total counter",
        "lb_connections_closed_total counter",
        "lb_failovers_total counter",
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
    let dead_ip = fresh_ip();
    let dead = std::net::SocketAddr::new(dead_ip, free_port(dead_ip));
    let vip = fresh_ip();
    let port = free_port(vip);
    let proxy = TestApp::start(&service_toml("down", vip, port, &[dead], "")).await;
    let c = TcpStream::connect((vip, port)).await;
    if let Ok(mut c) = c {
        // The client is reset once every dial failed.
        let mut buf = [0u8; 1];
        let _ = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut c, &mut buf)).await;
    }
    let series = format!(
        "lb_connect_errors_total{{namespace=\"default\",service=\"down\",port=\"tcp\",protocol=\"TCP\",endpoint=\"{dead}\"}}"
    );
    let counted =
        eventually_async(WAIT, || async { proxy.metric(&series).await == Some(3.0) }).await;
    assert!(
        counted,
        "three dials (connect_timeouts_ms has three entries) failed"
    );
    proxy.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_deleted_service_and_endpoint_are_removed_and_the_others_keep_their_values() {
    let a_backend = echo_backend(fresh_ip());
    let a = a_backend.addr;
    let b_backend = echo_backend(fresh_ip());
    let b = b_backend.addr;
    // A second endpoint of "keep" where nothing listens; the reload removes it.
    let spare = SocketAddr::new(fresh_ip(), a.port());
    let (vip1, vip2) = (fresh_ip(), fresh_ip());
    let (p1, p2) = (free_port(vip1), free_port(vip2));
    let both =
        service_toml("keep", vip1, p1, &[a, spare], "") + &service_toml("gone", vip2, p2, &[b], "");
    let proxy = TestApp::start(&both).await;
    for (vip, port) in [(vip2, p2), (vip1, p1), (vip1, p1)] {
        let mut c = TcpStream::connect((vip, port)).await.expect("connect");
        echo(&mut c, b"x").await;
    }
    assert!(settled(&proxy, "keep").await && settled(&proxy, "gone").await);
    let (_, before) = proxy.get("/metrics").await;
    assert!(before.contains("service=\"gone\""));
    assert!(before.contains(&format!("endpoint=\"{b}\"")));
    assert!(before.contains(&format!("endpoint=\"{spare}\"")));

    assert!(
        proxy
            .rewrite(&service_toml("keep", vip1, p1, &[a], ""))
            .await
    );
    let (_, after) = proxy.get("/metrics").await;
    assert!(!after.contains("service=\"gone\""), "{after}");
    assert!(!after.contains(&format!("endpoint=\"{b}\"")), "{after}");
    assert!(!after.contains(&format!("endpoint=\"{spare}\"")), "{after}");
    let kept: Vec<_> = samples_with(&before, "service=\"keep\"")
        .into_iter()
        .filter(|(series, _)| !series.contains(&format!("endpoint=\"{spare}\"")))
        .collect();
    assert!(kept.len() > 10, "{before}");
    for (series, value) in kept {
        assert_eq!(
            sample(&after, series),
            value.parse().ok(),
            "{series} kept its value"
        );
    }
    assert_eq!(
        sample(
            &after,
            "lb_connections_total{namespace=\"default\",service=\"keep\",port=\"tcp\",protocol=\"TCP\"}"
        ),
        Some(2.0)
    );
    // The rewrite is applied by a forced reload and, when the file watch
    // sees the write first, also by the watch's own reload: one or two.
    let reloads = sample(&after, "lb_config_reloads_total{result=\"success\"}");
    assert!(
        matches!(reloads, Some(n) if n == 1.0 || n == 2.0),
        "{reloads:?}"
    );
    proxy.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_deleted_and_added_again_between_scrapes_counts_from_zero() {
    let a_backend = echo_backend(fresh_ip());
    let a = a_backend.addr;
    let b_backend = echo_backend(fresh_ip());
    let b = b_backend.addr;
    let (vip1, vip2) = (fresh_ip(), fresh_ip());
    let (p1, p2) = (free_port(vip1), free_port(vip2));
    let other = service_toml("other", vip1, p1, &[a], "");
    let again = service_toml("again", vip2, p2, &[b], "");
    let proxy = TestApp::start(&(other.clone() + &again)).await;
    for (vip, port) in [(vip1, p1), (vip2, p2), (vip2, p2)] {
        let mut c = TcpStream::connect((vip, port)).await.expect("connect");
        echo(&mut c, b"x").await;
    }
    assert!(settled(&proxy, "again").await && settled(&proxy, "other").await);
    let series = |svc: &str| {
        format!("lb_connections_total{{namespace=\"default\",service=\"{svc}\",port=\"tcp\",protocol=\"TCP\"}}")
    };
    let (_, before) = proxy.get("/metrics").await;
    assert_eq!(sample(&before, &series("again")), Some(2.0));

    // Gone and back with no scrape in between: new counters under the same labels.
    assert!(proxy.rewrite(&other).await);
    assert!(proxy.rewrite(&(other.clone() + &again)).await);
    let (_, after) = proxy.get("/metrics").await;
    assert_eq!(sample(&after, &series("again")), Some(0.0), "{after}");
    assert_eq!(
        sample(
            &after,
            &format!("lb_bytes_total{{namespace=\"default\",service=\"again\",port=\"tcp\",protocol=\"TCP\",endpoint=\"{b}\",direction=\"rx\"}}")
        ),
        Some(0.0)
    );
    for (series, value) in samples_with(&before, "service=\"other\"") {
        assert_eq!(sample(&after, series), value.parse().ok(), "{series}");
    }
    assert_eq!(
        sample(&after, "lb_config_reloads_total{result=\"success\"}"),
        Some(2.0)
    );
    proxy.app.shutdown().await;
}

#[tokio::test]
async fn build_info_start_time_and_the_last_reload_read_as_prometheus_exports_its_own() {
    let app = TestApp::start("").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs_f64();
    let text = app.get("/metrics").await.1;
    let build = format!(
        "lb_build_info{{version=\"{}\",revision=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        lb_proxy::BUILD_REVISION
    );
    assert_eq!(sample(&text, &build), Some(1.0), "{text}");
    let started = sample(&text, "process_start_time_seconds").expect("process_start_time_seconds");
    assert!(
        started > 1e9 && started <= now + 1.0,
        "started at {started}, now {now}"
    );
    assert_eq!(sample(&text, "lb_config_last_reload_successful"), Some(1.0));
    let first = sample(&text, "lb_config_last_reload_success_timestamp_seconds")
        .expect("the first load counts");
    assert!(first > 1e9 && first <= now + 1.0, "{first}");

    // A reload that fails: 0, and the time of the last success stays.
    assert!(!app.rewrite_file("this is not TOML = = =").await);
    let text = app.get("/metrics").await.1;
    assert_eq!(sample(&text, "lb_config_last_reload_successful"), Some(0.0));
    assert_eq!(
        sample(&text, "lb_config_last_reload_success_timestamp_seconds"),
        Some(first)
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_streamed_as_it_is_written() {
    // 200 endpoints (never dialed): about 130 kB of text, two chunks or more.
    let endpoints: Vec<SocketAddr> = (1..=200)
        .map(|i| SocketAddr::from(([127, 0, 253, i], 8080)))
        .collect();
    let vip = fresh_ip();
    let proxy = TestApp::start(&service_toml("wide", vip, free_port(vip), &endpoints, "")).await;
    let admin = proxy.admin();
    let (status, head, text) =
        tokio::task::spawn_blocking(move || http_get_with(admin, "/metrics", &[]))
            .await
            .expect("join")
            .expect("GET /metrics");
    assert_eq!(status, 200);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(text.len() > 100_000, "{} bytes", text.len());
    // Whole: every endpoint's series, the port's one histogram, and the
    // process metrics written last.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("lb_endpoint_ready{"))
            .count(),
        200
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("lb_connect_duration_seconds_count{"))
            .count(),
        1
    );
    assert!(text.contains("\nprocess_max_fds "), "{text}");
    proxy.app.shutdown().await;
}
