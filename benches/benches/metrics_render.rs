//! What one `/metrics` render costs at scale: 10,000 services × 10
//! endpoints (100,000 TCP endpoints, every counter non-zero), built in
//! memory as `snapshot.rs` builds them.
//!
//! Besides criterion's timing of a render (every byte produced, then
//! dropped), `main` prints one summary, measured with a counting global
//! allocator: the render's wall time (median of a few), the bytes of text it
//! produced, the bytes it allocated, the most memory it held at once, and
//! what the metrics side keeps between scrapes, after a first scrape and
//! after a reload that replaced every service port.
//!
//! `cargo bench -p lb-benches --bench metrics_render`; the summary starts
//! with `metrics render:`.

// criterion_group! generates undocumented functions; a global allocator
// needs `unsafe impl` (see the SAFETY comments).
#![allow(missing_docs, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use lb_benches::{cluster_ip, node, service, services, snapshot};
use lb_core::stats::add;
use lb_core::{ServiceSpec, Snapshot};
use lb_proxy::control::ReloadCounters;
use lb_proxy::ops::metrics::{Exposition, Sources};

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

/// The system allocator, counting what passes through it.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    ALLOCATED.fetch_add(n, Ordering::Relaxed);
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the caller's arguments
// unchanged; the counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout (every
        // allocation goes through this type).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The services of the bench table, every endpoint's weight `weight`
/// (a different weight builds every service port anew).
fn table_specs(weight: u32) -> Vec<ServiceSpec> {
    if weight == 1 {
        return services(SERVICES, ENDPOINTS);
    }
    (0..SERVICES)
        .map(|i| service(i, cluster_ip(i), &[weight; ENDPOINTS], None))
        .collect()
}

/// Makes every figure of `snapshot` non-zero, so the render writes numbers
/// of realistic width.
fn traffic(snapshot: &Snapshot) {
    for (i, svc) in snapshot.services().enumerate() {
        for port in &svc.ports {
            let st = port.stats();
            add(&st.accepted, 1_000 + i as u64);
            add(&st.failovers, 3);
            for k in 0..4 {
                st.connect_duration
                    .record(Duration::from_micros(300 << (2 * k)));
            }
            for (j, e) in port.endpoints().iter().enumerate() {
                add(&e.stats.bytes_rx, 123_456 + j as u64);
                add(&e.stats.bytes_tx, 7_654_321 + j as u64);
                add(&e.stats.connect_errors, j as u64);
            }
        }
    }
}

/// One scrape: writes every chunk and drops it, as the admin API sends
/// them; returns the bytes of text.
fn render(snapshot: &Snapshot, reloads: &ReloadCounters) -> usize {
    let sources = Sources {
        reloads,
        dns: None,
        host_lookups: None,
        process: true,
        source_stats: &[],
    };
    Exposition::new(snapshot, &sources)
        .map(|chunk| black_box(chunk).len())
        .sum()
}

/// (wall time, bytes of text, bytes allocated, most held at once above
/// what was live before) of one scrape.
fn measured(snapshot: &Snapshot, reloads: &ReloadCounters) -> Measured {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    let allocated = ALLOCATED.load(Ordering::Relaxed);
    let start = Instant::now();
    let bytes = render(snapshot, reloads);
    Measured {
        time: start.elapsed(),
        bytes,
        allocated: ALLOCATED.load(Ordering::Relaxed) - allocated,
        peak: PEAK.load(Ordering::Relaxed) - live,
    }
}

struct Measured {
    time: Duration,
    bytes: usize,
    allocated: usize,
    peak: usize,
}

fn mb(n: usize) -> f64 {
    n as f64 / 1e6
}

fn summary() {
    let reloads = ReloadCounters::default();
    let first_table = snapshot(table_specs(1));
    traffic(&first_table);
    let endpoints = (SERVICES * ENDPOINTS) as f64;

    let before = LIVE.load(Ordering::Relaxed);
    let first = measured(&first_table, &reloads);
    let kept_first = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let mut steady: Vec<Measured> = (0..5).map(|_| measured(&first_table, &reloads)).collect();
    steady.sort_by_key(|m| m.time);
    let median = &steady[steady.len() / 2];

    // A reload that builds every service port anew (the counters are
    // carried by key), then the old table is gone.
    let live_tables = LIVE.load(Ordering::Relaxed);
    let second_table = Snapshot::build(
        node(),
        table_specs(2),
        Some(&first_table),
        SystemTime::now(),
    );
    let second_size = LIVE.load(Ordering::Relaxed) - live_tables;
    drop(first_table);
    let before = LIVE.load(Ordering::Relaxed);
    let after_reload = measured(&second_table, &reloads);
    let kept_reload = LIVE.load(Ordering::Relaxed).saturating_sub(before);

    println!(
        "metrics render: {SERVICES} services x {ENDPOINTS} endpoints, {:.1} MB of text",
        mb(median.bytes)
    );
    for (name, m) in [
        ("first scrape", &first),
        ("next scrapes (median)", median),
        ("first after a reload", &after_reload),
    ] {
        println!(
            "  {name:<24} {:>8.1} ms, allocated {:>8.1} MB, held at most {:>8.1} MB",
            m.time.as_secs_f64() * 1e3,
            mb(m.allocated),
            mb(m.peak),
        );
    }
    println!(
        "  kept by the metrics side between scrapes: {:.1} MB after the first ({:.0} B per endpoint), {:.1} MB after the reload ({:.0} B per endpoint); the table itself: {:.1} MB ({:.0} B per endpoint)",
        mb(kept_first),
        kept_first as f64 / endpoints,
        mb(kept_reload),
        kept_reload as f64 / endpoints,
        mb(second_size),
        second_size as f64 / endpoints,
    );
}

fn bench(c: &mut Criterion) {
    let reloads = ReloadCounters::default();
    let table = snapshot(table_specs(1));
    traffic(&table);
    let mut group = c.benchmark_group("metrics_render_10k_services_x_10_endpoints");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("render", |b| b.iter(|| render(&table, &reloads)));
    group.finish();
}

fn main() {
    summary();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
