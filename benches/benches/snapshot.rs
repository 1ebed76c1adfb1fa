//! The service table at scale: building a 10,000-service × 10-endpoint
//! snapshot, publishing it, and what a swap does to picks running beside it.
//!
//! Besides criterion's timings, `main` runs one custom measurement (criterion
//! has no notion of "latency of thread A while thread B works"): a picker
//! thread times batches of 1,000 connection-path picks (`Table::load`, the
//! frontend lookup, the pick) for a fixed number of batches, first on a quiet
//! table, then while another thread rebuilds and swaps the whole table in a
//! loop; it prints the p50/p99 of each phase and their ratio (target: the p99
//! rises by at most 2×). Set `LB_BENCH_SWAP_BATCHES` to change the count.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use lb_benches::{frontend, node, percentile, services, snapshot};
use lb_core::{Protocol, Snapshot, Table};

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

fn build_and_swap(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_10k_services_x_10_endpoints");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let specs = services(SERVICES, ENDPOINTS);
    group.bench_function("build_first", |b| {
        b.iter(|| black_box(snapshot(specs.clone())))
    });
    let table = Table::new(snapshot(specs.clone()));
    group.bench_function("build_from_previous_and_swap", |b| {
        b.iter(|| table.rebuild(node(), specs.clone(), SystemTime::now()))
    });
    group.finish();
}

/// Times `batches` batches of 1,000 picks over frontends spread across the
/// table, returning each batch's duration.
fn pick_batches(table: &Table, batches: usize) -> Vec<Duration> {
    let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let mut out = Vec::with_capacity(batches);
    let mut i = 0usize;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..1_000 {
            i = (i + 7_919) % SERVICES;
            let snap = table.load();
            let entry = snap.frontend(frontend(i), Protocol::Tcp);
            black_box(entry.and_then(|e| e.pick(client, Instant::now())));
        }
        out.push(start.elapsed());
    }
    out
}

fn pick_latency_during_swaps() {
    let batches: usize = std::env::var("LB_BENCH_SWAP_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let specs = services(SERVICES, ENDPOINTS);
    let table = Arc::new(Table::new(snapshot(specs.clone())));
    // Warm up, then the quiet phase.
    pick_batches(&table, batches / 10);
    let mut quiet = pick_batches(&table, batches);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let writer = {
        let (table, stop, swaps) = (table.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let prev = table.load();
                let next = Snapshot::build(node(), specs.clone(), Some(&prev), SystemTime::now());
                drop(prev);
                table.store(next);
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let the first swap land before measuring.
    let wait = Instant::now();
    while swaps.load(Ordering::Relaxed) == 0 && wait.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let mut swapping = pick_batches(&table, batches);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
    let swaps = swaps.load(Ordering::Relaxed);

    let (q50, q99) = (percentile(&mut quiet, 50.0), percentile(&mut quiet, 99.0));
    let (s50, s99) = (
        percentile(&mut swapping, 50.0),
        percentile(&mut swapping, 99.0),
    );
    println!(
        "pick latency, batches of 1,000 picks over a {SERVICES} x {ENDPOINTS} table ({batches} batches per phase):"
    );
    println!(
        "  quiet table:         p50 {:>8.1} ns/pick  p99 {:>8.1} ns/pick",
        q50.as_nanos() as f64 / 1000.0,
        q99.as_nanos() as f64 / 1000.0
    );
    println!(
        "  during swaps:        p50 {:>8.1} ns/pick  p99 {:>8.1} ns/pick  ({swaps} swaps in {:.1} s)",
        s50.as_nanos() as f64 / 1000.0,
        s99.as_nanos() as f64 / 1000.0,
        elapsed.as_secs_f64()
    );
    println!(
        "  p99 ratio swaps/quiet: {:.2} (target <= 2.00)",
        s99.as_secs_f64() / q99.as_secs_f64().max(f64::MIN_POSITIVE)
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    build_and_swap(&mut c);
    pick_latency_during_swaps();
    c.final_summary();
}
