//! What the access log (`[log] access`) costs the data path: proxied
//! connections per second, in process over loopback, with the log off and
//! on, interleaved round by round on one data plane (the setting is
//! swapped between rounds as a reload would). A subscriber like the
//! binary's (`--log-format text` at `info`, the access line's own format)
//! writes to a file, so "on" pays for the event, its formatting and the
//! `write(2)`; "off" must cost only the check of a flag.
//!
//! `cargo bench -p lb-benches --bench access_log`; the summary line
//! `access log: ...` gives the median ratio (on / off). The machine is
//! small and shared: read the ratio, not the rates.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lb_benches::node;
use lb_benches::short::{answer_backend, connections, free};
use lb_core::{EndpointSpec, PortSpec, ProxySettings, ServiceSpec, Snapshot};
use lb_proxy::DataPlane;

/// Connections per timed round.
const ROUND: u64 = 2000;
/// Interleaved rounds of (off, on) for the summary.
const ROUNDS: usize = 7;

fn access_log(c: &mut Criterion) {
    let log = std::env::temp_dir().join(format!("lb-access-bench-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .event_format(lb_proxy::cli::access_text::AccessText(
            tracing_subscriber::fmt::format(),
        ))
        .finish();
    // Global: the connections run on the runtime's worker threads.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let vip = free("127.79.0.1");
    let plane = rt.block_on(async {
        let backend = answer_backend("127.79.1.1").await;
        let port = PortSpec::tcp("", vip.port()).with_endpoint(EndpointSpec::new(backend));
        let svc = ServiceSpec::cluster_ip("bench", "access", vip.ip()).with_port(port);
        let snapshot = Snapshot::build(node(), vec![svc], None, SystemTime::now());
        DataPlane::start(ProxySettings::default(), snapshot).await
    });
    let set = |on: bool| {
        plane.set_settings(ProxySettings {
            access_log: on,
            ..ProxySettings::default()
        })
    };

    connections(&rt, vip, ROUND / 4); // warm up
    let (mut ratios, mut off, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        set(false);
        let a = ROUND as f64 / connections(&rt, vip, ROUND).as_secs_f64();
        set(true);
        let b = ROUND as f64 / connections(&rt, vip, ROUND).as_secs_f64();
        off.push(a);
        on.push(b);
        ratios.push(b / a);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let lines = std::fs::read_to_string(&log)
        .map(|t| t.matches("lb_proxy::access").count())
        .unwrap_or(0);

    let mut group = c.benchmark_group("access_log");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    set(false);
    group.bench_function("connections_access_off", |b| {
        b.iter_custom(|iters| connections(&rt, vip, iters))
    });
    set(true);
    group.bench_function("connections_access_on", |b| {
        b.iter_custom(|iters| connections(&rt, vip, iters))
    });
    group.finish();
    println!(
        "access log: median connections/s off {:.0}, on {:.0}; median ratio on/off {:.3} over {ROUNDS} interleaved rounds of {ROUND}; {lines} access lines written in the rounds",
        median(&mut off),
        median(&mut on),
        median(&mut ratios),
    );
    let _ = std::fs::remove_file(&log);
    drop(plane);
}

criterion_group!(benches, access_log);
criterion_main!(benches);
