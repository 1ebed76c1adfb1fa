//! Selection per pick: what a new connection pays to choose its endpoint
//! (target: ≤ 50 ns). Round robin and weighted are one relaxed `fetch_add`
//! and an index; affinity adds a lookup in the pin table (hit), or a lookup,
//! a pick and a pin (miss).

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use lb_benches::{cluster_ip, frontend, service, snapshot};
use lb_core::Protocol;

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let now = Instant::now();

    let rr = snapshot(vec![service(0, cluster_ip(0), &[1; 10], None)]);
    let entry = rr.frontend(frontend(0), Protocol::Tcp).expect("frontend");
    group.bench_function("round_robin_10", |b| {
        b.iter(|| black_box(entry.pick(black_box(client), now)))
    });

    let weights: Vec<u32> = (1..=10).collect();
    let weighted = snapshot(vec![service(0, cluster_ip(0), &weights, None)]);
    let entry = weighted
        .frontend(frontend(0), Protocol::Tcp)
        .expect("frontend");
    group.bench_function("weighted_1_to_10", |b| {
        b.iter(|| black_box(entry.pick(black_box(client), now)))
    });

    let timeout = Duration::from_secs(10_800);
    let sticky = snapshot(vec![service(0, cluster_ip(0), &[1; 10], Some(timeout))]);
    let entry = sticky
        .frontend(frontend(0), Protocol::Tcp)
        .expect("frontend");
    let _ = entry.pick(client, now);
    group.bench_function("affinity_hit", |b| {
        b.iter(|| black_box(entry.pick(black_box(client), now)))
    });

    // Misses: 4,096 clients in turn, the clock moving past the timeout
    // between two visits of the same client, so every lookup finds an expired
    // pin (the table stays at 4,096 entries) and re-pins.
    let short = Duration::from_secs(1);
    let sticky = snapshot(vec![service(0, cluster_ip(0), &[1; 10], Some(short))]);
    let entry = sticky
        .frontend(frontend(0), Protocol::Tcp)
        .expect("frontend");
    let mut n: u32 = 0;
    let mut t = now;
    group.bench_function("affinity_miss", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            if n & 4095 == 0 {
                t += Duration::from_secs(2);
            }
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n % 4096)));
            black_box(entry.pick(ip, t))
        })
    });
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
