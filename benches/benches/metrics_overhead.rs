//! What metrics cost the data path: proxied connections per second, in
//! process over loopback, without and with `/metrics` scraped ten times a
//! second (`lb_proxy::ops::metrics::Exposition`: the text written from the
//! snapshot's atomics), interleaved round by round (the machine is busy and
//! small, so only medians and ratios mean anything); plus the per-event
//! costs in isolation: recording one connect duration in the bucket atomics
//! (the only metric work a connection does beyond the counters the views
//! need anyway), and rendering `/metrics` for 100 services (10,000:
//! `metrics_render`).
//!
//! `cargo bench -p lb-benches --bench metrics_overhead`; the summary line
//! `metrics overhead: ...` gives the median ratio.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lb_benches::node;
use lb_benches::short::{answer_backend, connections, free};
use lb_core::stats::DurationHistogram;
use lb_core::{EndpointSpec, PortSpec, ProxySettings, ServiceSpec, Snapshot};
use lb_proxy::control::ReloadCounters;
use lb_proxy::ops::metrics::{Exposition, Sources};
use lb_proxy::DataPlane;

/// Connections per timed round.
const ROUND: u64 = 2000;
/// Interleaved rounds of (without, with) for the summary.
const ROUNDS: usize = 7;

/// A scraper thread rendering `/metrics` (with process metrics) every
/// 100 ms while `on` is set.
fn scraper(
    plane: DataPlane,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let reloads = ReloadCounters::default();
        while !stop.load(Ordering::Relaxed) {
            if on.load(Ordering::Relaxed) {
                let scrape = Exposition::new(
                    &plane.table().load(),
                    &Sources {
                        reloads: &reloads,
                        dns: None,
                        host_lookups: None,
                        process: true,
                        source_stats: &[],
                    },
                );
                for chunk in scrape {
                    std::hint::black_box(chunk);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

fn metrics_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let vip = free("127.78.0.1");
    let plane = rt.block_on(async {
        let backend = answer_backend("127.78.1.1").await;
        let port = PortSpec::tcp("", vip.port()).with_endpoint(EndpointSpec::new(backend));
        let svc = ServiceSpec::cluster_ip("bench", "metrics", vip.ip()).with_port(port);
        let snapshot = Snapshot::build(node(), vec![svc], None, SystemTime::now());
        DataPlane::start(ProxySettings::default(), snapshot).await
    });
    let on = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let scraping = scraper(plane.clone(), on.clone(), stop.clone());

    // Interleaved rounds for the summary: (without, with) each time.
    connections(&rt, vip, ROUND / 4); // warm up
    let mut ratios = Vec::new();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        on.store(false, Ordering::Relaxed);
        let a = ROUND as f64 / connections(&rt, vip, ROUND).as_secs_f64();
        on.store(true, Ordering::Relaxed);
        let b = ROUND as f64 / connections(&rt, vip, ROUND).as_secs_f64();
        without.push(a);
        with.push(b);
        ratios.push(b / a);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };

    let mut group = c.benchmark_group("metrics_overhead");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    on.store(false, Ordering::Relaxed);
    group.bench_function("connections_without_scraper", |b| {
        b.iter_custom(|iters| connections(&rt, vip, iters))
    });
    on.store(true, Ordering::Relaxed);
    group.bench_function("connections_with_scraper_10hz", |b| {
        b.iter_custom(|iters| connections(&rt, vip, iters))
    });
    on.store(false, Ordering::Relaxed);
    group.finish();

    let histogram = DurationHistogram::default();
    c.bench_function("metrics_overhead/record_connect_duration", |b| {
        b.iter(|| histogram.record(std::hint::black_box(Duration::from_micros(180))))
    });
    let big = lb_benches::snapshot(lb_benches::services(100, 3));
    let reloads = ReloadCounters::default();
    let sources = Sources::table_only(&reloads);
    c.bench_function("metrics_overhead/render_100_services", |b| {
        b.iter(|| {
            Exposition::new(&big, &sources)
                .map(|c| c.len())
                .sum::<usize>()
        })
    });

    stop.store(true, Ordering::Relaxed);
    let _ = scraping.join();
    let (w, s) = (median(&mut without), median(&mut with));
    println!(
        "metrics overhead: {ROUNDS} interleaved rounds of {ROUND} connections: median {w:.0} conn/s without scraping, {s:.0} conn/s with a 10 Hz scraper; median ratio with/without {:.3}",
        median(&mut ratios)
    );
    rt.block_on(plane.shutdown());
}

criterion_group!(benches, metrics_overhead);
criterion_main!(benches);
