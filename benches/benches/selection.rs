//! Selection per pick: what a new connection pays to choose its endpoint
//! (target: ≤ 50 ns). Round robin and weighted are one relaxed `fetch_add`
//! and an index; affinity adds a lookup in the pin table (hit), or a lookup,
//! a pick and a pin (miss).
//!
//! Besides criterion, `LB_PICK_LOOP=<case>:<picks>` runs one case's pick
//! loop that many times and exits, for instruction and cache counts under
//! callgrind (see BENCHMARKS.md, "Selection"): `case` is `round_robin_10`,
//! `weighted_1_to_10`, `affinity_hit` or `affinity_miss`.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::Criterion;
use lb_benches::{cluster_ip, frontend, service, snapshot};
use lb_core::{FrontendEntry, Pick, PickReason, Protocol, Snapshot};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// The affinity timeout of the hit case: long enough never to expire.
const LONG: Duration = Duration::from_secs(10_800);

/// The miss case: 4,096 clients in turn, the clock moving past the timeout
/// between two visits of the same client, so every lookup finds an expired
/// pin (the table stays at 4,096 entries) and re-pins.
struct Misses {
    n: u32,
    t: Instant,
}

impl Misses {
    const TIMEOUT: Duration = Duration::from_secs(1);

    #[inline]
    fn next(&mut self) -> (IpAddr, Instant) {
        self.n = self.n.wrapping_add(1);
        if self.n & 4095 == 0 {
            self.t += Duration::from_secs(2);
        }
        (
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (self.n % 4096))),
            self.t,
        )
    }
}

fn table(weights: &[u32], affinity: Option<Duration>) -> Snapshot {
    snapshot(vec![service(0, cluster_ip(0), weights, affinity)])
}

fn entry(snapshot: &Snapshot) -> &FrontendEntry {
    snapshot
        .frontend(frontend(0), Protocol::Tcp)
        .expect("frontend")
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    let now = Instant::now();

    let rr = table(&[1; 10], None);
    let e = entry(&rr);
    group.bench_function("round_robin_10", |b| {
        b.iter(|| black_box(e.pick(black_box(CLIENT), now)))
    });

    let weights: Vec<u32> = (1..=10).collect();
    let weighted = table(&weights, None);
    let e = entry(&weighted);
    group.bench_function("weighted_1_to_10", |b| {
        b.iter(|| black_box(e.pick(black_box(CLIENT), now)))
    });

    let sticky = table(&[1; 10], Some(LONG));
    let e = entry(&sticky);
    let _ = e.pick(CLIENT, now);
    group.bench_function("affinity_hit", |b| {
        b.iter(|| black_box(e.pick(black_box(CLIENT), now)))
    });

    let sticky = table(&[1; 10], Some(Misses::TIMEOUT));
    let e = entry(&sticky);
    let mut misses = Misses { n: 0, t: now };
    group.bench_function("affinity_miss", |b| {
        b.iter(|| {
            let (ip, t) = misses.next();
            black_box(e.pick(ip, t))
        })
    });
    group.finish();
}

/// `picks` picks of one case, outside criterion. Not inlined, so that
/// `valgrind --tool=callgrind --toggle-collect='*pick_loop*'` counts exactly
/// the loop.
#[inline(never)]
fn pick_loop(e: &FrontendEntry, case: &str, picks: u32, now: Instant) -> u32 {
    let mut hits = 0;
    let mut count = |pick: Option<Pick>| {
        hits += u32::from(pick.is_some_and(|p| p.reason == PickReason::Affinity));
    };
    if case == "affinity_miss" {
        let mut misses = Misses { n: 0, t: now };
        for _ in 0..picks {
            let (ip, t) = misses.next();
            count(black_box(e.pick(ip, t)));
        }
    } else {
        for _ in 0..picks {
            count(black_box(e.pick(black_box(CLIENT), now)));
        }
    }
    hits
}

/// Runs `LB_PICK_LOOP=<case>:<picks>`. The miss case first pins all 4,096
/// clients, so the loop sees the steady state (every pick an expired pin).
fn run_pick_loop(spec: &str) {
    let (case, picks) = spec.split_once(':').unwrap_or((spec, "100000"));
    let picks: u32 = picks.parse().expect("LB_PICK_LOOP=<case>:<picks>");
    let weights: Vec<u32> = (1..=10).collect();
    let snapshot = match case {
        "round_robin_10" => table(&[1; 10], None),
        "weighted_1_to_10" => table(&weights, None),
        "affinity_hit" => table(&[1; 10], Some(LONG)),
        "affinity_miss" => table(&[1; 10], Some(Misses::TIMEOUT)),
        other => panic!("unknown case {other}"),
    };
    let e = entry(&snapshot);
    let now = Instant::now();
    let warm = if case == "affinity_miss" { 4096 } else { 1 };
    let now = now - Duration::from_secs(3);
    let mut misses = Misses { n: 0, t: now };
    for _ in 0..warm {
        let (ip, t) = misses.next();
        let ip = if case == "affinity_miss" { ip } else { CLIENT };
        black_box(e.pick(ip, t));
    }
    let start = Instant::now();
    let hits = pick_loop(e, case, picks, now + Duration::from_secs(3));
    let took = start.elapsed();
    println!(
        "{case}: {picks} picks ({hits} affinity hits), {:.1} ns/pick",
        took.as_nanos() as f64 / f64::from(picks.max(1))
    );
}

fn main() {
    if let Ok(spec) = std::env::var("LB_PICK_LOOP") {
        run_pick_loop(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    selection(&mut c);
    c.final_summary();
}
