//! The service table at scale: building a 10,000-service × 10-endpoint
//! snapshot, publishing it, and what a swap does to picks running beside it.
//!
//! Besides criterion's timings, `main` runs one custom measurement (criterion
//! has no notion of "latency of thread A while thread B works"): a picker
//! thread times batches of 1,000 connection-path picks (`Table::load`, the
//! frontend lookup, the pick) while another thread is idle ("quiet"), rebuilds
//! and swaps the table with the same services ("unchanged": what most reloads
//! are, and what issue 8's target names), or with every service changed
//! ("all changed": every endpoint's weight flips, so every service port is
//! built anew). The phases are interleaved in rounds so that load from the
//! rest of the machine drifts into all of them alike. It prints the p50/p99 of
//! each phase and the p99 ratio to quiet (target: at most 2×).
//!
//! On a busy machine a batch's wall time mostly says whether the scheduler
//! took the picker's core away. So each batch also notes whether the picker
//! was preempted (its `nonvoluntary_ctxt_switches` in
//! `/proc/thread-self/status` rose), and the figures are printed twice: over
//! all batches, and over the batches that ran without being preempted (what
//! the table's code costs, free of the scheduler). Set
//! `LB_BENCH_SWAP_BATCHES` to change the batch count (per phase).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use lb_benches::{cluster_ip, frontend, node, percentile, service, services, snapshot};
use lb_core::{Protocol, ServiceSpec, Table};

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

/// The same services with every endpoint's weight at 2: every service port
/// differs from the one in `services(SERVICES, ENDPOINTS)`.
fn reweighted() -> Vec<ServiceSpec> {
    (0..SERVICES)
        .map(|i| service(i, cluster_ip(i), &[2; ENDPOINTS], None))
        .collect()
}

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
    let other = reweighted();
    let mut flip = false;
    group.bench_function("build_all_changed_and_swap", |b| {
        b.iter(|| {
            flip = !flip;
            let next = if flip { other.clone() } else { specs.clone() };
            table.rebuild(node(), next, SystemTime::now())
        })
    });
    group.finish();
}

/// Involuntary context switches of the calling thread so far (`None` where
/// `/proc/thread-self` does not exist).
fn preemptions() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// One batch: its duration, and whether the picker lost its core meanwhile.
#[derive(Clone, Copy)]
struct Batch {
    took: Duration,
    preempted: bool,
}

/// Times `batches` batches of 1,000 picks over frontends spread across the
/// table (a stride of 7,919 services, so picks miss the cache as a busy
/// proxy's would), continuing from position `*i`.
fn pick_batches(table: &Table, batches: usize, i: &mut usize, out: &mut Vec<Batch>) {
    let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    for _ in 0..batches {
        let before = preemptions();
        let start = Instant::now();
        for _ in 0..1_000 {
            *i = (*i + 7_919) % SERVICES;
            let snap = table.load();
            let entry = snap.frontend(frontend(*i), Protocol::Tcp);
            black_box(entry.and_then(|e| e.pick(client, Instant::now())));
        }
        let took = start.elapsed();
        let preempted = match (before, preemptions()) {
            (Some(a), Some(b)) => b > a,
            _ => false,
        };
        out.push(Batch { took, preempted });
    }
}

/// What the writer thread does.
const IDLE: u8 = 0;
const UNCHANGED: u8 = 1;
const ALL_CHANGED: u8 = 2;

/// p50 and p99 per pick in ns, over all batches and over those not preempted.
fn summary(batches: &[Batch]) -> ((f64, f64), Option<(f64, f64)>, f64) {
    let per_pick = |d: Duration| d.as_nanos() as f64 / 1000.0;
    let mut all: Vec<Duration> = batches.iter().map(|b| b.took).collect();
    let mut on_cpu: Vec<Duration> = batches
        .iter()
        .filter(|b| !b.preempted)
        .map(|b| b.took)
        .collect();
    let preempted = 1.0 - on_cpu.len() as f64 / batches.len().max(1) as f64;
    let all = (
        per_pick(percentile(&mut all, 50.0)),
        per_pick(percentile(&mut all, 99.0)),
    );
    let on_cpu = (!on_cpu.is_empty()).then(|| {
        (
            per_pick(percentile(&mut on_cpu, 50.0)),
            per_pick(percentile(&mut on_cpu, 99.0)),
        )
    });
    (all, on_cpu, preempted)
}

fn pick_latency_during_swaps() {
    let batches: usize = std::env::var("LB_BENCH_SWAP_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    const ROUNDS: usize = 10;
    let chunk = batches.div_ceil(ROUNDS);
    let specs = services(SERVICES, ENDPOINTS);
    let other = reweighted();
    let table = Arc::new(Table::new(snapshot(specs.clone())));

    let mode = Arc::new(AtomicU8::new(IDLE));
    let stop = Arc::new(AtomicBool::new(false));
    // Swaps done, and which mode the writer is in now (it finishes a rebuild
    // before it goes idle, so a quiet phase is really quiet).
    let swaps = Arc::new(AtomicU64::new(0));
    let acting = Arc::new(AtomicU8::new(IDLE));
    let writer = {
        let (table, mode, stop, swaps, acting) = (
            table.clone(),
            mode.clone(),
            stop.clone(),
            swaps.clone(),
            acting.clone(),
        );
        std::thread::spawn(move || {
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                let m = mode.load(Ordering::Acquire);
                acting.store(m, Ordering::Release);
                let next = match m {
                    UNCHANGED => specs.clone(),
                    ALL_CHANGED => {
                        flip = !flip;
                        if flip {
                            other.clone()
                        } else {
                            specs.clone()
                        }
                    }
                    _ => {
                        // Parked, not polling: a sleeper waking every
                        // millisecond would preempt the picker it should
                        // leave alone. `switch` unparks it.
                        std::thread::park_timeout(Duration::from_millis(100));
                        continue;
                    }
                };
                table.rebuild(node(), next, SystemTime::now());
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Switches the writer to `m` and waits until it works in that mode (for a
    // swapping mode: until its first swap in it has landed).
    let writer_thread = writer.thread().clone();
    let switch = |m: u8| {
        mode.store(m, Ordering::Release);
        writer_thread.unpark();
        let wait = Instant::now();
        while acting.load(Ordering::Acquire) != m && wait.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if m != IDLE {
            let first = swaps.load(Ordering::Relaxed);
            while swaps.load(Ordering::Relaxed) == first && wait.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };

    let mut i = 0usize;
    // Warm-up.
    pick_batches(&table, batches / 10, &mut i, &mut Vec::new());
    let phases = [
        ("quiet table", IDLE),
        ("swaps, unchanged", UNCHANGED),
        ("swaps, all changed", ALL_CHANGED),
    ];
    let mut results: Vec<Vec<Batch>> = vec![Vec::with_capacity(batches); phases.len()];
    let mut swaps_in = [0u64; 3];
    let mut time_in = [Duration::ZERO; 3];
    for _ in 0..ROUNDS {
        for (k, (_, m)) in phases.iter().enumerate() {
            switch(*m);
            let (s0, t0) = (swaps.load(Ordering::Relaxed), Instant::now());
            pick_batches(&table, chunk, &mut i, &mut results[k]);
            swaps_in[k] += swaps.load(Ordering::Relaxed) - s0;
            time_in[k] += t0.elapsed();
        }
    }
    switch(IDLE);
    stop.store(true, Ordering::Relaxed);
    writer_thread.unpark();
    let _ = writer.join();

    println!(
        "pick latency, batches of 1,000 picks over a {SERVICES} x {ENDPOINTS} table \
         ({} batches per phase, {ROUNDS} interleaved rounds):",
        chunk * ROUNDS
    );
    let summaries: Vec<_> = results.iter().map(|b| summary(b)).collect();
    let (quiet_all, quiet_cpu, _) = summaries[0];
    for (k, (name, _)) in phases.iter().enumerate() {
        let (all, on_cpu, preempted) = summaries[k];
        let swaps = if k == 0 {
            String::new()
        } else {
            format!(
                "  ({} swaps in {:.1} s)",
                swaps_in[k],
                time_in[k].as_secs_f64()
            )
        };
        println!(
            "  {name:<20} all batches: p50 {:>7.1} p99 {:>8.1} ns/pick, p99 ratio {:>5.2}{swaps}",
            all.0,
            all.1,
            all.1 / quiet_all.1.max(f64::MIN_POSITIVE),
        );
        if let (Some(cpu), Some(quiet)) = (on_cpu, quiet_cpu) {
            println!(
                "  {:<20} not preempted: p50 {:>7.1} p99 {:>8.1} ns/pick, p99 ratio {:>5.2}  ({:.0} % of batches were preempted)",
                "",
                cpu.0,
                cpu.1,
                cpu.1 / quiet.1.max(f64::MIN_POSITIVE),
                preempted * 100.0,
            );
        }
    }
    println!("  (target: p99 ratio <= 2.00)");
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    build_and_swap(&mut c);
    pick_latency_during_swaps();
    c.final_summary();
}
